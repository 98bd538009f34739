//! v3 produce: `records` (one record, or a stream of concatenated record
//! objects answered one delivery report each) and `records-batch`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use sluice_metadata::model::Topic;
use sluice_segment::batch::NewRecord;

use super::{check_cluster, read_body, ApiError, HttpState};
use crate::produce::Delivery;

/// Most entries one `records-batch` request may hold.
pub const BATCH_ENTRIES_MAX: usize = 10_000;
/// Most records one `records` stream may hold.
pub const STREAM_RECORDS_MAX: usize = 100_000;

/// What a key or value was sent as, for the delivery report.
#[derive(Debug, Clone)]
struct DataInfo {
    kind: &'static str,
    size: usize,
}

/// One parsed record with its chosen partition.
#[derive(Debug)]
struct Parsed {
    partition: i32,
    record: NewRecord,
    key: Option<DataInfo>,
    value: Option<DataInfo>,
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Decode a `{"type": ..., "data": ...}` key or value.
fn parse_data(
    field: &str,
    value: Option<&Value>,
) -> Result<(Option<Bytes>, Option<DataInfo>), ApiError> {
    let object = match value {
        None | Some(Value::Null) => return Ok((None, None)),
        Some(Value::Object(object)) => object,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "{field} must be an object with type and data"
            )))
        }
    };
    for name in object.keys() {
        if !matches!(name.as_str(), "type" | "data") {
            return Err(ApiError::bad_request(format!(
                "{field}.{name} is not supported (schemas are not supported; use type and data)"
            )));
        }
    }
    let kind = match object.get("type") {
        None | Some(Value::Null) => "JSON",
        Some(Value::String(t)) => match t.as_str() {
            "BINARY" => "BINARY",
            "STRING" => "STRING",
            "JSON" => "JSON",
            other => {
                return Err(ApiError::bad_request(format!(
                    "{field}.type {other:?} is not supported (use BINARY, STRING or JSON)"
                )))
            }
        },
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "{field}.type must be a string"
            )))
        }
    };
    let data = match object.get("data") {
        None | Some(Value::Null) => return Ok((None, Some(DataInfo { kind, size: 0 }))),
        Some(data) => data,
    };
    let bytes = match kind {
        "BINARY" => {
            let text = data.as_str().ok_or_else(|| {
                ApiError::bad_request(format!("{field}.data must be a base64 string for BINARY"))
            })?;
            BASE64.decode(text).map_err(|e| {
                ApiError::bad_request(format!("{field}.data is not valid base64: {e}"))
            })?
        }
        "STRING" => data
            .as_str()
            .ok_or_else(|| {
                ApiError::bad_request(format!("{field}.data must be a string for STRING"))
            })?
            .as_bytes()
            .to_vec(),
        _ => serde_json::to_vec(data)
            .map_err(|e| ApiError::bad_request(format!("{field}.data: {e}")))?,
    };
    let size = bytes.len();
    Ok((Some(Bytes::from(bytes)), Some(DataInfo { kind, size })))
}

fn parse_headers(value: Option<&Value>) -> Result<Vec<(String, Option<Bytes>)>, ApiError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::bad_request("headers must be an array")),
    };
    let mut headers: Vec<(String, Option<Bytes>)> = Vec::with_capacity(items.len());
    for item in items {
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("each header needs a string name"))?;
        let value = match item.get("value") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(Bytes::from(BASE64.decode(text).map_err(|e| {
                ApiError::bad_request(format!("header {name:?} value is not valid base64: {e}"))
            })?)),
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "header {name:?} value must be a base64 string"
                )))
            }
        };
        if headers.iter().any(|(n, _)| n == name) {
            return Err(ApiError::bad_request(format!(
                "duplicate header name {name:?}"
            )));
        }
        headers.push((name.to_string(), value));
    }
    Ok(headers)
}

/// A record object decoded, before its partition is chosen.
#[derive(Debug)]
pub struct Decoded {
    /// The partition asked for, if any.
    pub partition: Option<i32>,
    /// The record.
    pub record: NewRecord,
    key: Option<DataInfo>,
    value: Option<DataInfo>,
}

/// Parse and place one record object.
fn parse_record(state: &HttpState, topic: &Topic, value: &Value) -> Result<Parsed, ApiError> {
    let now_ms = state.producer.view().catalog().clock().now_ms();
    let decoded = decode_record(value, now_ms)?;
    let partition = state
        .producer
        .choose_partition(topic, decoded.partition, decoded.record.key.as_deref())
        .map_err(ApiError::from)?;
    Ok(Parsed {
        partition,
        record: decoded.record,
        key: decoded.key,
        value: decoded.value,
    })
}

/// Decode one record object (`partition_id`, `key`, `value`, `headers`,
/// `timestamp`; a record without a timestamp gets `now_ms`).
pub fn decode_record(value: &Value, now_ms: i64) -> Result<Decoded, ApiError> {
    let object: &Map<String, Value> = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("each record must be a JSON object"))?;
    let partition = match object.get("partition_id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .ok_or_else(|| ApiError::bad_request("partition_id must be an integer"))?,
        ),
    };
    let (key, key_info) = parse_data("key", object.get("key"))?;
    let (value, value_info) = parse_data("value", object.get("value"))?;
    let headers = parse_headers(object.get("headers"))?;
    let timestamp_ms = match object.get("timestamp") {
        None | Some(Value::Null) => now_ms,
        Some(Value::String(text)) => DateTime::parse_from_rfc3339(text)
            .map_err(|e| ApiError::bad_request(format!("timestamp is not RFC 3339: {e}")))?
            .timestamp_millis(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "timestamp must be an RFC 3339 string",
            ))
        }
    };
    Ok(Decoded {
        partition,
        record: NewRecord {
            key,
            value,
            headers,
            timestamp_ms,
        },
        key: key_info,
        value: value_info,
    })
}

fn data_json(info: &Option<DataInfo>) -> Value {
    match info {
        Some(info) => json!({"type": info.kind, "size": info.size}),
        None => Value::Null,
    }
}

fn report(
    state: &HttpState,
    topic: &Topic,
    parsed: &Parsed,
    delivery: &Delivery,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("error_code".into(), json!(200));
    out.insert("cluster_id".into(), json!(state.cluster_id));
    out.insert("topic_name".into(), json!(topic.record.name));
    out.insert("partition_id".into(), json!(delivery.partition));
    out.insert("offset".into(), json!(delivery.offset));
    out.insert("timestamp".into(), json!(rfc3339(delivery.timestamp_ms)));
    out.insert("key".into(), data_json(&parsed.key));
    out.insert("value".into(), data_json(&parsed.value));
    out
}

/// Parse every record, produce the valid ones together, and return one
/// outcome per input in order.
async fn produce_values(
    state: &HttpState,
    topic: &Topic,
    values: Vec<Result<Value, ApiError>>,
) -> Vec<Result<Map<String, Value>, ApiError>> {
    let mut parsed: Vec<Result<Parsed, ApiError>> = values
        .into_iter()
        .map(|v| v.and_then(|v| parse_record(state, topic, &v)))
        .collect();
    let mut to_produce = Vec::new();
    let mut positions = Vec::new();
    for (i, p) in parsed.iter_mut().enumerate() {
        if let Ok(p) = p {
            to_produce.push((p.partition, p.record.clone()));
            positions.push(i);
        }
    }
    let results = state.producer.produce(topic, to_produce).await;
    let mut outcomes: Vec<Result<Map<String, Value>, ApiError>> = Vec::with_capacity(parsed.len());
    let mut produced = positions.into_iter().zip(results).peekable();
    for (i, p) in parsed.into_iter().enumerate() {
        let outcome = match p {
            Err(error) => Err(error),
            Ok(p) => match produced.next_if(|(pos, _)| *pos == i) {
                Some((_, Ok(delivery))) => Ok(report(state, topic, &p, &delivery)),
                Some((_, Err(error))) => Err(ApiError::from(error)),
                None => Err(ApiError::new(500, "record was not produced")),
            },
        };
        outcomes.push(outcome);
    }
    outcomes
}

/// Check the cluster, resolve the topic (404 before reading anything), then
/// read the body.
async fn topic_and_body(
    state: &HttpState,
    cluster_id: &str,
    name: &str,
    body: Body,
) -> Result<(Topic, super::Body), ApiError> {
    check_cluster(state, cluster_id)?;
    let topic = state.producer.topic(name).map_err(ApiError::from)?;
    Ok((topic, read_body(body, &state.requests).await?))
}

/// `POST /v3/clusters/{cluster_id}/topics/{topic}/records`
pub(crate) async fn produce_records(
    State(state): State<HttpState>,
    Path((cluster_id, name)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let (topic, body) = topic_and_body(&state, &cluster_id, &name, body).await?;
    let values = split_stream(&body)?;
    let single = values.len() == 1;
    let outcomes = produce_values(&state, &topic, values).await;
    let lines: Vec<(u16, Value)> = outcomes
        .into_iter()
        .map(|o| match o {
            Ok(report) => (200, Value::Object(report)),
            Err(error) => (error.status(), error.body()),
        })
        .collect();
    if single {
        let (status, body) = lines.into_iter().next().unwrap_or((500, Value::Null));
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Ok((status, Json(body)).into_response());
    }
    let mut out = String::new();
    for (_, line) in lines {
        out.push_str(&line.to_string());
        out.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

/// The JSON values of a `records` body (one object, or concatenated
/// objects): each value, or the syntax error that ends the stream (it
/// cannot be resynchronised after one). At most [`STREAM_RECORDS_MAX`]
/// values (413 beyond); an empty body is a 400.
pub fn split_stream(body: &[u8]) -> Result<Vec<Result<Value, ApiError>>, ApiError> {
    let mut values: Vec<Result<Value, ApiError>> = Vec::new();
    for value in serde_json::Deserializer::from_slice(body).into_iter::<Value>() {
        if values.len() >= STREAM_RECORDS_MAX {
            return Err(ApiError::new(
                413,
                format!("a records stream may hold at most {STREAM_RECORDS_MAX} records"),
            ));
        }
        match value {
            Ok(value) => values.push(Ok(value)),
            Err(error) => {
                values.push(Err(ApiError::bad_request(format!(
                    "malformed JSON: {error}"
                ))));
                break;
            }
        }
    }
    if values.is_empty() {
        return Err(ApiError::bad_request("request body holds no record"));
    }
    Ok(values)
}

/// `POST /v3/clusters/{cluster_id}/topics/{topic}/records-batch` with
/// `{"entries": [{"id": ..., record fields...}]}`: 200 when every entry
/// succeeded, 207 otherwise, with `successes` and `failures`.
pub(crate) async fn produce_batch(
    State(state): State<HttpState>,
    Path((cluster_id, name)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let (topic, body) = topic_and_body(&state, &cluster_id, &name, body).await?;
    let request: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    let entries = request
        .get("entries")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_request("body must be an object with an entries array"))?;
    if entries.is_empty() {
        return Err(ApiError::bad_request("entries is empty"));
    }
    if entries.len() > BATCH_ENTRIES_MAX {
        return Err(ApiError::new(
            413,
            format!("at most {BATCH_ENTRIES_MAX} entries per batch"),
        ));
    }
    let ids: Vec<Value> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| match e.get("id") {
            Some(Value::String(s)) => json!(s),
            Some(Value::Number(n)) => json!(n.to_string()),
            _ => json!(i.to_string()),
        })
        .collect();
    let values = entries
        .iter()
        .map(|e| match e {
            Value::Object(object) => {
                let mut object = object.clone();
                object.remove("id");
                Ok(Value::Object(object))
            }
            _ => Err(ApiError::bad_request("each entry must be a JSON object")),
        })
        .collect();
    let outcomes = produce_values(&state, &topic, values).await;
    let mut successes = Vec::new();
    let mut failures = Vec::new();
    for (id, outcome) in ids.into_iter().zip(outcomes) {
        match outcome {
            Ok(mut report) => {
                report.remove("error_code");
                report.insert("id".into(), id);
                successes.push(Value::Object(report));
            }
            Err(error) => {
                let mut body = error.body();
                body["id"] = id;
                failures.push(body);
            }
        }
    }
    let status = if failures.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok((
        status,
        Json(json!({"successes": successes, "failures": failures})),
    )
        .into_response())
}
