//! `GET /v1/topics/{topic}/partitions/{p}/records` (NDJSON, long-poll) and
//! `GET /v1/topics/{topic}/partitions/{p}/offsets`.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use sluice_metadata::model::Topic;
use sluice_segment::batch;

use super::{ApiError, HttpState};
use crate::error::IngestError;

/// Records one read returns by default.
pub const MAX_RECORDS_DEFAULT: usize = 500;
/// Most records one read may ask for.
pub const MAX_RECORDS_LIMIT: usize = 10_000;
/// Longest long-poll.
pub const TIMEOUT_MS_LIMIT: u64 = 60_000;
/// Bytes of NDJSON one read returns by default (at least one record).
pub const MAX_BYTES_DEFAULT: usize = 4 * 1024 * 1024;
/// Most bytes one read may ask for (a node also caps it at half its
/// response budget, `kafka.fetch_bytes_max`, as it caps a Kafka Fetch).
pub const MAX_BYTES_LIMIT: usize = 64 * 1024 * 1024;
/// Bytes of batches fetched per round of a read.
const READ_BYTES_PER_ROUND: usize = 4 * 1024 * 1024;

/// A read's content type. NDJSON is UTF-8, and saying so keeps clients from
/// guessing: Python's `requests` guessed UTF-16 for one read of base64 lines.
const NDJSON: &str = "application/x-ndjson; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Binary,
    String,
    Json,
}

fn resolve(state: &HttpState, name: &str, partition: &str) -> Result<(Topic, i32), ApiError> {
    let topic = state.producer.topic(name).map_err(ApiError::from)?;
    let partition: i32 = partition.parse().map_err(|_| {
        ApiError::bad_request(format!("partition must be an integer, got {partition:?}"))
    })?;
    if !(0..topic.record.partitions).contains(&partition) {
        return Err(IngestError::UnknownPartition {
            topic: name.to_string(),
            partition,
        }
        .into());
    }
    Ok((topic, partition))
}

fn param<T: std::str::FromStr>(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    match params.get(name) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("{name} must be a number, got {text:?}"))),
    }
}

fn encode(format: Format, offset: i64, bytes: &Option<Bytes>) -> Result<Value, ApiError> {
    let Some(bytes) = bytes else {
        return Ok(Value::Null);
    };
    Ok(match format {
        Format::Binary => Value::String(BASE64.encode(bytes)),
        Format::String => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        Format::Json => serde_json::from_slice(bytes).map_err(|e| {
            ApiError::new(
                422,
                format!("record at offset {offset} is not valid JSON: {e}"),
            )
        })?,
    })
}

/// The format named by query parameter `name`, if given.
fn format_param(params: &HashMap<String, String>, name: &str) -> Result<Option<Format>, ApiError> {
    match params.get(name).map(String::as_str) {
        None => Ok(None),
        Some("binary") => Ok(Some(Format::Binary)),
        Some("string") => Ok(Some(Format::String)),
        Some("json") => Ok(Some(Format::Json)),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name} must be binary, string or json, got {other:?}"
        ))),
    }
}

/// `GET /v1/topics/{topic}/partitions/{p}/records?offset=&max_records=&max_bytes=&timeout_ms=&format=&key_format=`
pub(crate) async fn read_records(
    State(state): State<HttpState>,
    Path((name, partition)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (topic, partition) = resolve(&state, &name, &partition)?;
    let offset: i64 = param(&params, "offset")?.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::bad_request(format!(
            "offset must not be negative, got {offset}"
        )));
    }
    let max_records: usize = param(&params, "max_records")?.unwrap_or(MAX_RECORDS_DEFAULT);
    if !(1..=MAX_RECORDS_LIMIT).contains(&max_records) {
        return Err(ApiError::bad_request(format!(
            "max_records must be between 1 and {MAX_RECORDS_LIMIT}"
        )));
    }
    let max_bytes: usize = param(&params, "max_bytes")?.unwrap_or(MAX_BYTES_DEFAULT);
    if !(1..=MAX_BYTES_LIMIT).contains(&max_bytes) {
        return Err(ApiError::bad_request(format!(
            "max_bytes must be between 1 and {MAX_BYTES_LIMIT}"
        )));
    }
    let max_bytes = max_bytes.min(state.responses.one_read_max());
    let timeout_ms: u64 = param(&params, "timeout_ms")?.unwrap_or(0);
    if timeout_ms > TIMEOUT_MS_LIMIT {
        return Err(ApiError::bad_request(format!(
            "timeout_ms must be at most {TIMEOUT_MS_LIMIT}"
        )));
    }
    let format = format_param(&params, "format")?.unwrap_or(Format::Binary);
    // keys are often plain strings beside JSON values: `key_format` reads
    // them apart (default: `format`)
    let key_format = format_param(&params, "key_format")?.unwrap_or(format);
    let topic_id = &topic.record.id;
    let reader = &state.reader;
    let snapshot = reader.view().snapshot(topic_id, partition);
    let past_the_end = reader
        .past_the_end(topic_id, partition, offset, snapshot)
        .await
        .map_err(IngestError::from)?;
    if offset < snapshot.log_start_offset || past_the_end {
        return Err(ApiError::new(
            416,
            format!(
                "offset {offset} is out of range [{}, {}]",
                snapshot.log_start_offset, snapshot.high_watermark
            ),
        ));
    }
    // an offset past this node's view (not past the stored end) waits like
    // one at the end
    let mut high_watermark = snapshot.high_watermark;
    if offset >= high_watermark && timeout_ms > 0 {
        high_watermark = reader
            .wait_for_data(
                topic_id,
                partition,
                offset,
                Duration::from_millis(timeout_ms),
            )
            .await;
    }
    // the response's bytes, taken after any long-poll: a waiting reader
    // holds none
    let _budget = state
        .responses
        .take(max_bytes)
        .await
        .ok_or_else(|| ApiError::new(503, "the node is shutting down"))?;
    let mut out = String::new();
    let mut count = 0usize;
    let mut cursor = offset;
    let mut full = false;
    while count < max_records && cursor < high_watermark && !full {
        let chunks = reader
            .read(topic_id, partition, cursor, READ_BYTES_PER_ROUND)
            .await
            .map_err(|e| ApiError::from(IngestError::from(e)))?;
        if chunks.is_empty() {
            break;
        }
        for chunk in chunks {
            let corrupt = |e: batch::BatchError| {
                ApiError::from(IngestError::Corrupt(format!("corrupt record batch: {e}")))
            };
            // only the batches from the cursor on, within a round's bytes
            // (a chunk may be a whole archive row group)
            let Some(range) = batch::batch_range_from(&chunk.batches, cursor, READ_BYTES_PER_ROUND)
                .map_err(corrupt)?
            else {
                cursor = cursor.max(chunk.end_offset);
                continue;
            };
            let to_the_end = range.end == chunk.batches.len();
            let records = batch::decode(chunk.batches.slice(range)).map_err(corrupt)?;
            for record in records {
                if record.offset < cursor || count >= max_records {
                    continue;
                }
                let headers: Vec<Value> = record
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        let value = match v {
                            None => Value::Null,
                            Some(v) if format == Format::Binary => Value::String(BASE64.encode(v)),
                            Some(v) => Value::String(String::from_utf8_lossy(v).into_owned()),
                        };
                        json!({"name": k, "value": value})
                    })
                    .collect();
                let line = json!({
                    "offset": record.offset,
                    "timestamp": record.timestamp_ms,
                    "key": encode(key_format, record.offset, &record.key)?,
                    "value": encode(format, record.offset, &record.value)?,
                    "headers": headers,
                });
                let line = line.to_string();
                // always one record, as Kafka's fetch returns one batch
                // larger than its limit
                if count > 0 && out.len() + line.len() + 1 > max_bytes {
                    full = true;
                    break;
                }
                out.push_str(&line);
                out.push('\n');
                count += 1;
                cursor = record.offset + 1;
            }
            if full || count >= max_records || !to_the_end {
                break;
            }
            cursor = cursor.max(chunk.end_offset);
        }
    }
    Ok((
        [
            (header::CONTENT_TYPE, NDJSON.to_string()),
            (
                header::HeaderName::from_static("x-sluice-next-offset"),
                cursor.to_string(),
            ),
            (
                header::HeaderName::from_static("x-sluice-high-watermark"),
                high_watermark.to_string(),
            ),
        ],
        out,
    )
        .into_response())
}

/// `GET /v1/topics/{topic}/partitions/{p}/offsets`
pub(crate) async fn offsets(
    State(state): State<HttpState>,
    Path((name, partition)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (topic, partition) = resolve(&state, &name, &partition)?;
    let snapshot = state.reader.view().snapshot(&topic.record.id, partition);
    Ok(Json(json!({
        "topic": name,
        "partition": partition,
        "log_start_offset": snapshot.log_start_offset,
        "high_watermark": snapshot.high_watermark,
    })))
}
