//! v3 cluster and topic administration.

use sluice_metadata::acls::{Operation, ResourceType};

use crate::access;
use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sluice_metadata::model::{Topic, TOPIC_CONFIGS};

use super::{base_url, check_cluster, read_body, ApiError, HttpState};
use crate::error::IngestError;

fn cluster_json(state: &HttpState, base: &str) -> Value {
    let id = &state.cluster_id;
    json!({
        "kind": "KafkaCluster",
        "metadata": {"self": format!("{base}/v3/clusters/{id}"), "resource_name": format!("crn:///kafka={id}")},
        "cluster_id": id,
        "topics": {"related": format!("{base}/v3/clusters/{id}/topics")},
    })
}

/// The v3 shape of a topic.
pub(crate) fn topic_json(state: &HttpState, base: &str, topic: &Topic) -> Value {
    let id = &state.cluster_id;
    let name = &topic.record.name;
    let this = format!("{base}/v3/clusters/{id}/topics/{name}");
    json!({
        "kind": "KafkaTopic",
        "metadata": {"self": this, "resource_name": format!("crn:///kafka={id}/topic={name}")},
        "cluster_id": id,
        "topic_name": name,
        "topic_id": topic.record.id,
        "is_internal": false,
        "replication_factor": 1,
        "partitions_count": topic.record.partitions,
        "partitions": {"related": format!("{this}/partitions")},
        "configs": {"related": format!("{this}/configs")},
        "partition_reassignments": {"related": format!("{this}/partitions/-/reassignment")},
        "authorized_operations": [],
    })
}

/// `GET /v3/clusters`
pub(crate) async fn list_clusters(
    State(state): State<HttpState>,
    headers: HeaderMap,
) -> Json<Value> {
    let base = base_url(&headers);
    Json(json!({
        "kind": "KafkaClusterList",
        "metadata": {"self": format!("{base}/v3/clusters"), "next": null},
        "data": [cluster_json(&state, &base)],
    }))
}

/// `GET /v3/clusters/{cluster_id}`
pub(crate) async fn get_cluster(
    State(state): State<HttpState>,
    Path(cluster_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_cluster(&state, &cluster_id)?;
    Ok(Json(cluster_json(&state, &base_url(&headers))))
}

/// `GET /v3/clusters/{cluster_id}/topics`
pub(crate) async fn list_topics(
    State(state): State<HttpState>,
    Path(cluster_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_cluster(&state, &cluster_id)?;
    let base = base_url(&headers);
    let topics = state
        .catalog
        .list_topics()
        .await
        .map_err(IngestError::from)?;
    // topics the principal may not DESCRIBE are not listed
    let data: Vec<Value> = topics
        .iter()
        .filter(|t| access::allowed(Operation::Describe, ResourceType::Topic, &t.record.name))
        .map(|t| topic_json(&state, &base, t))
        .collect();
    Ok(Json(json!({
        "kind": "KafkaTopicList",
        "metadata": {"self": format!("{base}/v3/clusters/{cluster_id}/topics"), "next": null},
        "data": data,
    })))
}

fn parse_create(body: &[u8]) -> Result<(String, i32, BTreeMap<String, String>), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("request body must be a JSON object"))?;
    let name = object
        .get("topic_name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("topic_name must be a string"))?
        .to_string();
    let partitions = match object.get("partitions_count") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| ApiError::bad_request("partitions_count must be an integer"))?,
    };
    if let Some(rf) = object.get("replication_factor") {
        if !rf.is_null() && !rf.is_i64() {
            return Err(ApiError::bad_request(
                "replication_factor must be an integer",
            ));
        }
    }
    let mut configs = BTreeMap::new();
    match object.get("configs") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let name = item.get("name").and_then(Value::as_str);
                let value = item.get("value").and_then(Value::as_str);
                match (name, value) {
                    (Some(name), Some(value)) => {
                        configs.insert(name.to_string(), value.to_string());
                    }
                    _ => {
                        return Err(ApiError::bad_request(
                            "each config needs a string name and value",
                        ))
                    }
                }
            }
        }
        Some(_) => return Err(ApiError::bad_request("configs must be an array")),
    }
    Ok((name, partitions, configs))
}

/// `POST /v3/clusters/{cluster_id}/topics`
pub(crate) async fn create_topic(
    State(state): State<HttpState>,
    Path(cluster_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_cluster(&state, &cluster_id)?;
    let (name, partitions, configs) = parse_create(&read_body(body, &state.requests).await?)?;
    if !access::may_create_topic(&name) {
        access::topic(Operation::Create, &name)?;
    }
    let topic = state
        .producer
        .view()
        .create_topic(&name, partitions, configs)
        .await
        .map_err(IngestError::from)?;
    let body = topic_json(&state, &base_url(&headers), &topic);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn load_topic(state: &HttpState, name: &str) -> Result<Topic, ApiError> {
    state
        .catalog
        .get_topic(name)
        .await
        .map_err(IngestError::from)?
        .ok_or_else(|| IngestError::UnknownTopic(name.to_string()).into())
}

/// `GET /v3/clusters/{cluster_id}/topics/{topic}`
pub(crate) async fn get_topic(
    State(state): State<HttpState>,
    Path((cluster_id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_cluster(&state, &cluster_id)?;
    let topic = load_topic(&state, &name).await?;
    Ok(Json(topic_json(&state, &base_url(&headers), &topic)))
}

/// `DELETE /v3/clusters/{cluster_id}/topics/{topic}`
pub(crate) async fn delete_topic(
    State(state): State<HttpState>,
    Path((cluster_id, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    check_cluster(&state, &cluster_id)?;
    state
        .producer
        .view()
        .delete_topic(&name)
        .await
        .map_err(IngestError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v3/clusters/{cluster_id}/topics/{topic}/configs`: the configs set
/// on the topic, plus the defaults sluice applies.
pub(crate) async fn list_topic_configs(
    State(state): State<HttpState>,
    Path((cluster_id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_cluster(&state, &cluster_id)?;
    let topic = load_topic(&state, &name).await?;
    let base = base_url(&headers);
    // every config sluice knows, with the topic's value or the default
    let configs: BTreeMap<String, (String, bool)> = TOPIC_CONFIGS
        .iter()
        .map(|config| {
            let value = match topic.record.configs.get(config.name) {
                Some(value) => (value.clone(), false),
                None => (config.default.to_string(), true),
            };
            (config.name.to_string(), value)
        })
        .collect();
    let data: Vec<Value> = configs
        .into_iter()
        .map(|(config, (value, is_default))| {
            json!({
                "kind": "KafkaTopicConfig",
                "cluster_id": state.cluster_id,
                "topic_name": name,
                "name": config,
                "value": value,
                "is_default": is_default,
                "is_read_only": false,
                "is_sensitive": false,
                "source": if is_default { "DEFAULT_CONFIG" } else { "DYNAMIC_TOPIC_CONFIG" },
            })
        })
        .collect();
    Ok(Json(json!({
        "kind": "KafkaTopicConfigList",
        "metadata": {"self": format!("{base}/v3/clusters/{cluster_id}/topics/{name}/configs"), "next": null},
        "data": data,
    })))
}
