//! ListOffsets (v1-v6): earliest (-2) is the log-start offset, latest (-1)
//! the high watermark, a timestamp the first offset whose record timestamp
//! is at least it (found through the index entries' max timestamps, then
//! the batches of that entry).

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use sluice_fetch::reader::ENTRIES_PER_READ_MAX;

use super::KafkaContext;
use crate::error::{IngestError, IngestResult};

/// Ask for the earliest offset.
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// Ask for the latest offset.
pub const LATEST_TIMESTAMP: i64 = -1;

/// Answer a ListOffsets request.
pub async fn handle(
    context: &KafkaContext,
    _version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let answer = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_leader_epoch(-1);
            let answer = match lookup(context, &name, p.partition_index, p.timestamp).await {
                Ok((timestamp, offset)) => answer.with_timestamp(timestamp).with_offset(offset),
                Err(error) => answer
                    .with_error_code(error.kind().kafka_error_code())
                    .with_timestamp(-1)
                    .with_offset(-1),
            };
            partitions.push(answer);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// (timestamp, offset) for one partition; (-1, -1) when no record is at or
/// after a timestamp asked for.
async fn lookup(
    context: &KafkaContext,
    name: &str,
    partition: i32,
    timestamp: i64,
) -> IngestResult<(i64, i64)> {
    let topic = context.producer.topic(name)?;
    if !(0..topic.record.partitions).contains(&partition) {
        return Err(IngestError::UnknownPartition {
            topic: name.to_string(),
            partition,
        });
    }
    let topic_id = &topic.record.id;
    let view = &context.view;
    let snapshot = view.snapshot(topic_id, partition);
    match timestamp {
        EARLIEST_TIMESTAMP => return Ok((-1, snapshot.log_start_offset)),
        LATEST_TIMESTAMP => return Ok((-1, snapshot.high_watermark)),
        t if t < 0 => {
            return Err(IngestError::Invalid(format!(
                "unsupported timestamp query {t}"
            )))
        }
        _ => {}
    }
    let mut from = snapshot.log_start_offset;
    while from < snapshot.high_watermark {
        let entries = view.entries_from(topic_id, partition, from, ENTRIES_PER_READ_MAX);
        let Some(last) = entries.last() else {
            break;
        };
        let next = last.end_offset();
        for entry in entries.iter().filter(|e| e.max_timestamp >= timestamp) {
            let found = context
                .reader
                .offset_for_timestamp(topic_id, partition, entry, timestamp)
                .await?;
            if let Some((offset, found_timestamp)) = found {
                return Ok((found_timestamp, offset.max(from)));
            }
        }
        if next <= from {
            break;
        }
        from = next;
    }
    Ok((-1, -1))
}
