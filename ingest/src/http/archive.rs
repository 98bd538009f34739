//! `GET /v1/topics/{topic}/archive`: the topic's published archive files,
//! as the offset index lists them (files written but not yet published, or
//! replaced and awaiting GC, are not listed).

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, HttpState};

/// `GET /v1/topics/{topic}/archive`
pub(crate) async fn list_archive(
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let topic = state.producer.topic(&name).map_err(ApiError::from)?;
    let view = state.reader.view();
    let mut files = Vec::new();
    let mut partitions = Vec::new();
    for partition in 0..topic.record.partitions {
        let entries = view.entries(&topic.record.id, partition);
        let snapshot = view.snapshot(&topic.record.id, partition);
        let archived_end = entries
            .iter()
            .filter(|e| e.archive.is_some())
            .map(|e| e.end_offset())
            .max()
            .unwrap_or(snapshot.log_start_offset);
        partitions.push(json!({
            "partition": partition,
            "log_start_offset": snapshot.log_start_offset,
            "high_watermark": snapshot.high_watermark,
            "archived_end_offset": archived_end,
            "segment_runs": entries.iter().filter(|e| e.archive.is_none()).count(),
        }));
        for entry in entries {
            let Some(archive) = &entry.archive else {
                continue;
            };
            files.push(json!({
                "partition": partition,
                "path": archive.path,
                "first_offset": entry.base_offset,
                "last_offset": entry.end_offset() - 1,
                // offsets covered; a compacted file holds fewer records
                "records": entry.offset_count,
                "compacted": archive.compacted,
                "bytes": entry.object_bytes,
                "row_groups": archive.row_groups.len(),
                "max_timestamp": entry.max_timestamp,
            }));
        }
    }
    Ok(Json(json!({
        "topic": topic.record.name,
        "partitions": partitions,
        "files": files,
    })))
}
