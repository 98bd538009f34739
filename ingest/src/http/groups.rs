//! Consumer groups for operators (what `kafka-consumer-groups` shows and
//! does): list, describe with members and assignments, lag per partition,
//! delete an empty group, reset an inactive group's offsets.
//!
//! Any node answers the reads, from its own memory for the groups it
//! coordinates and from the stored group state for the others. A delete
//! or a reset must run on the group's coordinator: another node answers
//! 409 naming the coordinator's URL (`sluice group` follows it).

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::DateTime;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_metadata::groups::OffsetRecord;

use super::{base_url, check_cluster, read_body, ApiError, HttpState};
use crate::group::{assigned_partitions, GroupError, GroupOverview, GroupResult};
use crate::kafka::list_offsets;

/// `result`, its group error as an HTTP answer.
async fn checked<T>(state: &HttpState, group: &str, result: GroupResult<T>) -> Result<T, ApiError> {
    match result {
        Ok(value) => Ok(value),
        Err(error) => Err(group_error(state, group, error).await),
    }
}

/// A group error as an HTTP answer; NOT_COORDINATOR names the node to ask.
async fn group_error(state: &HttpState, group: &str, error: GroupError) -> ApiError {
    match error {
        GroupError::NotCoordinator => {
            let node = state.catalog.coordinator(group).await.ok().flatten();
            let url = node_url(state, node);
            ApiError::new(
                409,
                format!(
                    "another node coordinates group {group:?}{}",
                    url["url"]
                        .as_str()
                        .map(|u| format!(": ask {u}"))
                        .unwrap_or_default()
                ),
            )
        }
        GroupError::GroupIdNotFound => ApiError::new(404, format!("no group {group:?}")),
        GroupError::NonEmptyGroup => ApiError::new(
            409,
            format!("group {group:?} has active members: stop its consumers first"),
        ),
        GroupError::InvalidGroupId => ApiError::bad_request(format!("invalid group id {group:?}")),
        other => ApiError::new(503, format!("group {group:?}: {other:?}, retry")),
    }
}

fn node_url(state: &HttpState, node_id: Option<i32>) -> Value {
    node_id
        .and_then(|id| {
            state
                .reader
                .view()
                .nodes()
                .into_iter()
                .find(|n| n.node_id == id)
        })
        .map_or(
            Value::Null,
            |n| json!({"node_id": n.node_id, "url": n.http_url}),
        )
}

fn group_json(state: &HttpState, base: &str, group: &GroupOverview) -> Value {
    let id = &state.cluster_id;
    json!({
        "kind": "KafkaConsumerGroup",
        "metadata": {"self": format!("{base}/v3/clusters/{id}/consumer-groups/{}", group.group_id)},
        "cluster_id": id,
        "consumer_group_id": group.group_id,
        "is_simple": group.protocol_type.is_empty(),
        "partition_assignor": group.protocol_name,
        "state": group.state.to_uppercase(),
        "coordinator": node_url(state, group.coordinator),
        "members": group.members.len(),
    })
}

/// `GET /v3/clusters/{cluster_id}/consumer-groups`
pub(crate) async fn list_groups(
    State(state): State<HttpState>,
    Path(cluster_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_cluster(&state, &cluster_id)?;
    let base = base_url(&headers);
    let groups = checked(&state, "*", coordinator(&state)?.overview_all().await).await?;
    Ok(Json(json!({
        "kind": "KafkaConsumerGroupList",
        "data": groups.iter().map(|g| group_json(&state, &base, g)).collect::<Vec<_>>(),
    })))
}

/// The node's group coordinator (absent on the Lambda front door, which
/// routes no group endpoint).
fn coordinator(state: &HttpState) -> Result<&crate::group::GroupCoordinator, ApiError> {
    state
        .groups
        .as_deref()
        .ok_or_else(|| ApiError::new(404, "consumer groups are not served here"))
}

async fn overview(state: &HttpState, group: &str) -> Result<GroupOverview, ApiError> {
    let overview = checked(state, group, coordinator(state)?.overview(group).await).await?;
    if overview.state == "Dead" {
        return Err(ApiError::new(404, format!("no group {group:?}")));
    }
    Ok(overview)
}

/// `GET /v3/clusters/{cluster_id}/consumer-groups/{group}`
pub(crate) async fn get_group(
    State(state): State<HttpState>,
    Path((cluster_id, group)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_cluster(&state, &cluster_id)?;
    let overview = overview(&state, &group).await?;
    let mut body = group_json(&state, &base_url(&headers), &overview);
    body["consumers"] = overview
        .members
        .iter()
        .map(|m| {
            let assignments: Vec<Value> = assigned_partitions(&m.assignment)
                .into_iter()
                .map(|(topic, partition)| json!({"topic_name": topic, "partition_id": partition}))
                .collect();
            json!({
                "consumer_id": m.member_id,
                "instance_id": m.instance_id,
                "client_id": m.client_id,
                "host": m.client_host,
                "assignments": assignments,
            })
        })
        .collect();
    Ok(Json(body))
}

/// `GET /v3/clusters/{cluster_id}/consumer-groups/{group}/lags`: every
/// partition the group committed or is assigned, with its committed offset,
/// log start, log end and lag.
pub(crate) async fn group_lags(
    State(state): State<HttpState>,
    Path((cluster_id, group)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_cluster(&state, &cluster_id)?;
    let overview = overview(&state, &group).await?;
    let committed = checked(
        &state,
        &group,
        coordinator(&state)?.fetch_offsets(&group).await,
    )
    .await?;
    let mut owners: BTreeMap<(String, i32), &crate::group::DescribedMember> = BTreeMap::new();
    for member in &overview.members {
        for assigned in assigned_partitions(&member.assignment) {
            owners.insert(assigned, member);
        }
    }
    let mut partitions: BTreeSet<(String, i32)> = owners.keys().cloned().collect();
    for (topic, offsets) in &committed {
        partitions.extend(offsets.keys().map(|p| (topic.clone(), *p)));
    }
    let view = state.reader.view();
    let mut data = Vec::with_capacity(partitions.len());
    for (topic, partition) in partitions {
        let current = committed
            .get(&topic)
            .and_then(|offsets| offsets.get(&partition))
            .map(|r| r.offset);
        let snapshot = view
            .topic(&topic)
            .map(|t| view.snapshot(&t.record.id, partition));
        let owner = owners.get(&(topic.clone(), partition));
        data.push(json!({
            "consumer_group_id": group,
            "topic_name": topic,
            "partition_id": partition,
            "current_offset": current,
            "log_start_offset": snapshot.map(|s| s.log_start_offset),
            "log_end_offset": snapshot.map(|s| s.high_watermark),
            "lag": match (current, snapshot) {
                (Some(current), Some(s)) => Some((s.high_watermark - current).max(0)),
                _ => None,
            },
            "consumer_id": owner.map(|m| m.member_id.clone()),
            "instance_id": owner.and_then(|m| m.instance_id.clone()),
            "client_id": owner.map(|m| m.client_id.clone()),
            "host": owner.map(|m| m.client_host.clone()),
        }));
    }
    Ok(Json(json!({"kind": "KafkaConsumerLagList", "data": data})))
}

/// `DELETE /v3/clusters/{cluster_id}/consumer-groups/{group}`: only a group
/// without members, on its coordinator.
pub(crate) async fn delete_group(
    State(state): State<HttpState>,
    Path((cluster_id, group)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_cluster(&state, &cluster_id)?;
    checked(&state, &group, coordinator(&state)?.delete(&group).await).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Where a reset moves each partition.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", tag = "to")]
enum ResetTo {
    /// The log start.
    Earliest,
    /// The high watermark.
    Latest,
    /// An offset (clamped to the partition's range).
    Offset { offset: i64 },
    /// The first record at or after a time (RFC 3339), else the end.
    Datetime { datetime: String },
    /// The committed offset moved by `shift_by` (clamped).
    Shift { shift_by: i64 },
}

/// The body of a reset.
#[derive(Debug, Deserialize)]
struct ResetRequest {
    /// Only this topic (default: every topic the group committed).
    topic: Option<String>,
    /// Only these partitions of `topic`.
    partitions: Option<Vec<i32>>,
    #[serde(flatten)]
    to: ResetTo,
    /// Commit the new offsets (default: only show them, as
    /// kafka-consumer-groups' dry run).
    #[serde(default)]
    execute: bool,
}

/// `POST /v3/clusters/{cluster_id}/consumer-groups/{group}/offsets:reset`
pub(crate) async fn reset_offsets(
    State(state): State<HttpState>,
    Path((cluster_id, group)): Path<(String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    check_cluster(&state, &cluster_id)?;
    let body = read_body(body, &state.requests).await?;
    let request: ResetRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed reset request: {e}")))?;
    let overview = checked(&state, &group, coordinator(&state)?.overview(&group).await).await?;
    if !overview.members.is_empty() {
        return Err(ApiError::new(
            409,
            format!(
                "offsets can only be reset while group {group:?} is inactive; it is {}",
                overview.state
            ),
        ));
    }
    let committed = checked(
        &state,
        &group,
        coordinator(&state)?.fetch_offsets(&group).await,
    )
    .await?;
    let view = state.reader.view();
    let mut targets: Vec<(String, i32)> = Vec::new();
    match &request.topic {
        Some(topic) => {
            let found = view
                .topic(topic)
                .ok_or_else(|| ApiError::new(404, format!("unknown topic {topic:?}")))?;
            let all: Vec<i32> = (0..found.record.partitions).collect();
            for partition in request.partitions.clone().unwrap_or(all) {
                if !(0..found.record.partitions).contains(&partition) {
                    return Err(ApiError::new(
                        404,
                        format!("topic {topic:?} has no partition {partition}"),
                    ));
                }
                targets.push((topic.clone(), partition));
            }
        }
        None => {
            for (topic, offsets) in &committed {
                targets.extend(offsets.keys().map(|p| (topic.clone(), *p)));
            }
        }
    }
    let datetime = match &request.to {
        ResetTo::Datetime { datetime } => Some(
            DateTime::parse_from_rfc3339(datetime)
                .map_err(|e| ApiError::bad_request(format!("datetime {datetime:?}: {e}")))?
                .timestamp_millis(),
        ),
        _ => None,
    };
    let mut data = Vec::with_capacity(targets.len());
    let mut commits = Vec::with_capacity(targets.len());
    for (topic, partition) in targets {
        let Some(found) = view.topic(&topic) else {
            continue;
        };
        let snapshot = view.snapshot(&found.record.id, partition);
        let current = committed
            .get(&topic)
            .and_then(|offsets| offsets.get(&partition))
            .map(|r| r.offset);
        let clamp = |o: i64| o.clamp(snapshot.log_start_offset, snapshot.high_watermark);
        let new = match &request.to {
            ResetTo::Earliest => snapshot.log_start_offset,
            ResetTo::Latest => snapshot.high_watermark,
            ResetTo::Offset { offset } => clamp(*offset),
            ResetTo::Shift { shift_by } => {
                clamp(current.unwrap_or(snapshot.log_start_offset) + shift_by)
            }
            ResetTo::Datetime { .. } => {
                let at = datetime.unwrap_or_default();
                list_offsets::first_at(&state.reader, &found.record.id, partition, at)
                    .await
                    .map_err(ApiError::from)?
                    .map_or(snapshot.high_watermark, |(offset, _)| offset)
            }
        };
        data.push(json!({
            "topic_name": topic,
            "partition_id": partition,
            "current_offset": current,
            "new_offset": new,
        }));
        commits.push((
            topic,
            partition,
            OffsetRecord {
                offset: new,
                leader_epoch: -1,
                metadata: None,
                commit_timestamp_ms: state.catalog.clock().now_ms(),
            },
        ));
    }
    if request.execute && !commits.is_empty() {
        let committed = coordinator(&state)?
            .commit_offsets(&group, -1, "", None, commits)
            .await;
        checked(&state, &group, committed).await?;
    }
    Ok(Json(json!({
        "consumer_group_id": group,
        "executed": request.execute,
        "data": data,
    })))
}
