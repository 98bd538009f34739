//! ListOffsets (v1-v6): earliest (-2) is the log-start offset, latest (-1)
//! the high watermark, a timestamp the first offset whose record timestamp
//! is at least it (found through the index entries' max timestamps, then
//! the batches of that entry).

use sluice_metadata::acls::Operation;

use crate::access;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use sluice_fetch::reader::ENTRIES_PER_READ_MAX;
use sluice_fetch::Reader;

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
    access::topic(Operation::Describe, name)?;
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
    Ok(first_at(&context.reader, topic_id, partition, timestamp)
        .await?
        .map_or((-1, -1), |(offset, found)| (found, offset)))
}

/// The first offset of a partition whose record timestamp is at least
/// `timestamp`, with that timestamp; `None` when every record is older.
pub async fn first_at(
    reader: &Reader,
    topic_id: &str,
    partition: i32,
    timestamp: i64,
) -> IngestResult<Option<(i64, i64)>> {
    let view = reader.view();
    let snapshot = view.snapshot(topic_id, partition);
    let mut from = snapshot.log_start_offset;
    while from < snapshot.high_watermark {
        let entries = view.entries_from(topic_id, partition, from, ENTRIES_PER_READ_MAX);
        let Some(last) = entries.last() else {
            break;
        };
        let next = last.end_offset();
        for entry in entries.iter().filter(|e| e.max_timestamp >= timestamp) {
            let found = reader
                .offset_for_timestamp(topic_id, partition, entry, timestamp)
                .await?;
            if let Some((offset, found_timestamp)) = found {
                return Ok(Some((offset.max(from), found_timestamp)));
            }
        }
        if next <= from {
            break;
        }
        from = next;
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use sluice_segment::{batch, NewRecord};

    use super::*;
    use crate::kafka::produce;
    use crate::kafka::testing::{text, TestNode};

    fn topic_name(name: &str) -> TopicName {
        TopicName(text(name))
    }

    /// Produce one batch with a record at each of `timestamps`.
    async fn produce_at(node: &TestNode, topic: &str, partition: i32, timestamps: &[i64]) {
        let records: Vec<NewRecord> = timestamps
            .iter()
            .map(|&timestamp_ms| NewRecord {
                key: None,
                value: Some(Bytes::from(timestamp_ms.to_string())),
                headers: Vec::new(),
                timestamp_ms,
            })
            .collect();
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch::encode(&records).unwrap()))])]);
        let response = produce::handle(&node.context, request).await.unwrap();
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    }

    fn request(topic: &str, queries: &[(i32, i64)]) -> ListOffsetsRequest {
        ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                queries
                    .iter()
                    .map(|&(partition, timestamp)| {
                        ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )])
    }

    /// The answer for one (partition, timestamp) query.
    async fn list_one(
        node: &TestNode,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> ListOffsetsPartitionResponse {
        let response = handle(&node.context, 6, request(topic, &[(partition, timestamp)])).await;
        assert_eq!(response.topics.len(), 1);
        assert_eq!(response.topics[0].name.0.as_str(), topic);
        assert_eq!(response.topics[0].partitions.len(), 1);
        let answer = response.topics[0].partitions[0].clone();
        assert_eq!(answer.partition_index, partition);
        assert_eq!(answer.leader_epoch, -1);
        answer
    }

    /// (error code, timestamp, offset) of one answer.
    async fn lookup_one(
        node: &TestNode,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> (i16, i64, i64) {
        let answer = list_one(node, topic, partition, timestamp).await;
        (answer.error_code, answer.timestamp, answer.offset)
    }

    #[tokio::test]
    async fn earliest_is_the_log_start_and_latest_the_high_watermark() {
        let node = TestNode::start().await;
        node.topic("orders", 2).await;
        assert_eq!(
            lookup_one(&node, "orders", 0, EARLIEST_TIMESTAMP).await,
            (0, -1, 0)
        );
        assert_eq!(
            lookup_one(&node, "orders", 0, LATEST_TIMESTAMP).await,
            (0, -1, 0)
        );

        produce_at(&node, "orders", 0, &[1_000, 2_000, 3_000]).await;
        produce_at(&node, "orders", 0, &[4_000, 5_000]).await;
        assert_eq!(
            lookup_one(&node, "orders", 0, EARLIEST_TIMESTAMP).await,
            (0, -1, 0)
        );
        assert_eq!(
            lookup_one(&node, "orders", 0, LATEST_TIMESTAMP).await,
            (0, -1, 5)
        );
        // the other partition is untouched
        assert_eq!(
            lookup_one(&node, "orders", 1, LATEST_TIMESTAMP).await,
            (0, -1, 0)
        );

        // several partitions in one request, answered in order
        let response = handle(
            &node.context,
            6,
            request("orders", &[(1, LATEST_TIMESTAMP), (0, LATEST_TIMESTAMP)]),
        )
        .await;
        let answers = &response.topics[0].partitions;
        assert_eq!((answers[0].partition_index, answers[0].offset), (1, 0));
        assert_eq!((answers[1].partition_index, answers[1].offset), (0, 5));
    }

    #[tokio::test]
    async fn a_timestamp_finds_the_first_record_at_or_after_it() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        produce_at(&node, "orders", 0, &[1_000, 2_000, 3_000]).await;
        produce_at(&node, "orders", 0, &[4_000, 5_000]).await;

        assert_eq!(lookup_one(&node, "orders", 0, 0).await, (0, 1_000, 0));
        assert_eq!(lookup_one(&node, "orders", 0, 1_000).await, (0, 1_000, 0));
        assert_eq!(lookup_one(&node, "orders", 0, 1_001).await, (0, 2_000, 1));
        assert_eq!(lookup_one(&node, "orders", 0, 2_500).await, (0, 3_000, 2));
        // the first record of the second batch
        assert_eq!(lookup_one(&node, "orders", 0, 3_001).await, (0, 4_000, 3));
        assert_eq!(lookup_one(&node, "orders", 0, 5_000).await, (0, 5_000, 4));
        // nothing that late: no offset, no error
        assert_eq!(lookup_one(&node, "orders", 0, 5_001).await, (0, -1, -1));
    }

    #[tokio::test]
    async fn a_timestamp_on_an_empty_partition_finds_nothing() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        assert_eq!(lookup_one(&node, "orders", 0, 0).await, (0, -1, -1));
        assert_eq!(lookup_one(&node, "orders", 0, 1_000).await, (0, -1, -1));
    }

    #[tokio::test]
    async fn unknown_topics_and_partitions_are_unknown_topic_or_partition() {
        let node = TestNode::start().await;
        node.topic("orders", 2).await;
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        for timestamp in [EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, 1_000] {
            assert_eq!(
                lookup_one(&node, "ghost", 0, timestamp).await,
                (unknown, -1, -1)
            );
            assert_eq!(
                lookup_one(&node, "orders", 2, timestamp).await,
                (unknown, -1, -1)
            );
            assert_eq!(
                lookup_one(&node, "orders", -1, timestamp).await,
                (unknown, -1, -1)
            );
        }
        // a lookup creates nothing
        assert!(node.context.view.topic("ghost").is_none());
    }

    #[tokio::test]
    async fn other_negative_timestamps_are_invalid_requests() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        produce_at(&node, "orders", 0, &[1_000]).await;
        let invalid = ResponseError::InvalidRequest.code();
        // -3 is Kafka's max-timestamp query (v7+), not served here
        for timestamp in [-3, -4, i64::MIN] {
            let answer = list_one(&node, "orders", 0, timestamp).await;
            assert_eq!(answer.error_code, invalid, "timestamp {timestamp}");
            assert_eq!((answer.timestamp, answer.offset), (-1, -1));
        }
    }
}
