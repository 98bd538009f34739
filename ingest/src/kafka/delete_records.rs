//! DeleteRecords: move partitions' log start forward ("delete every record
//! before this offset"; -1 = the high watermark). The new start holds at
//! once on every node; the compactor later drops the runs that lie wholly
//! below it. As Kafka, a topic compacted without the delete policy refuses
//! it (POLICY_VIOLATION), an offset past the high watermark is
//! OFFSET_OUT_OF_RANGE, and each partition answers its new low watermark.

use sluice_metadata::acls::Operation;

use crate::access;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use tracing::info;

use super::KafkaContext;
use crate::error::IngestError;

/// Answer a DeleteRecords request.
pub async fn handle(
    context: &KafkaContext,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for wanted in request.topics {
        let name = wanted.name.0.to_string();
        let topic = context.view.topic(&name);
        let mut partitions = Vec::with_capacity(wanted.partitions.len());
        for partition in wanted.partitions {
            let index = partition.partition_index;
            let answer = DeleteRecordsPartitionResult::default().with_partition_index(index);
            let outcome = match &topic {
                _ if access::topic(Operation::Delete, &name).is_err() => {
                    Err(ResponseError::TopicAuthorizationFailed)
                }
                None => Err(ResponseError::UnknownTopicOrPartition),
                Some(t) if !(0..t.record.partitions).contains(&index) => {
                    Err(ResponseError::UnknownTopicOrPartition)
                }
                Some(t) if !t.record.settings().deletes() => Err(ResponseError::PolicyViolation),
                Some(_) if partition.offset < -1 => Err(ResponseError::OffsetOutOfRange),
                Some(t) => context
                    .view
                    .advance_log_start(t, index, partition.offset)
                    .await
                    .map(|head| head.head.log_start_offset)
                    .map_err(|error| IngestError::from(error).kind().kafka_error()),
            };
            partitions.push(match outcome {
                Ok(low_watermark) => {
                    info!(
                        topic = name,
                        partition = index,
                        low_watermark,
                        "records deleted"
                    );
                    answer.with_low_watermark(low_watermark)
                }
                Err(error) => answer.with_low_watermark(-1).with_error_code(error.code()),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(wanted.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{FetchRequest, ProduceRequest, TopicName};
    use sluice_segment::{batch, NewRecord};

    use super::*;
    use crate::kafka::testing::{text, TestNode};
    use crate::kafka::{fetch, produce};

    async fn produce_n(node: &TestNode, topic: &str, n: usize) {
        let records: Vec<NewRecord> = (0..n)
            .map(|i| NewRecord {
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("v{i}"))),
                headers: Vec::new(),
                timestamp_ms: 1_700_000_000_000,
            })
            .collect();
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(text(topic)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch::encode(&records).unwrap()))])]);
        let response = produce::handle(&node.context, request).await.unwrap();
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    }

    async fn delete(node: &TestNode, topic: &str, partition: i32, offset: i64) -> (i16, i64) {
        let request = DeleteRecordsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(partition)
                    .with_offset(offset)])]);
        let response = handle(&node.context, request).await;
        let answer = &response.topics[0].partitions[0];
        (answer.error_code, answer.low_watermark)
    }

    async fn fetch_at(node: &TestNode, topic: &str, offset: i64) -> (i16, i64) {
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(text(topic)))
                .with_partitions(vec![FetchPartition::default()
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]);
        let response = fetch::handle(&node.context, request).await;
        let data = &response.responses[0].partitions[0];
        (data.error_code, data.log_start_offset)
    }

    #[tokio::test]
    async fn moves_the_log_start_and_older_offsets_are_out_of_range() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        produce_n(&node, "orders", 10).await;
        assert_eq!(delete(&node, "orders", 0, 4).await, (0, 4));
        assert_eq!(
            fetch_at(&node, "orders", 2).await,
            (ResponseError::OffsetOutOfRange.code(), 4)
        );
        assert_eq!(fetch_at(&node, "orders", 4).await, (0, 4));
        // never backwards; -1 means the high watermark
        assert_eq!(delete(&node, "orders", 0, 2).await, (0, 4));
        assert_eq!(delete(&node, "orders", 0, -1).await, (0, 10));
        // the stored head agrees
        let topic = node.context.view.topic("orders").unwrap();
        let head = node
            .context
            .catalog
            .head(&topic.record.id, 0)
            .await
            .unwrap();
        assert_eq!(head.head.log_start_offset, 10);
    }

    #[tokio::test]
    async fn refuses_what_kafka_refuses() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        produce_n(&node, "orders", 3).await;
        node.topic_with("accounts", &[("cleanup.policy", "compact")])
            .await;
        let out_of_range = ResponseError::OffsetOutOfRange.code();
        assert_eq!(delete(&node, "orders", 0, 4).await, (out_of_range, -1));
        assert_eq!(delete(&node, "orders", 0, -2).await, (out_of_range, -1));
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(delete(&node, "orders", 1, 0).await, (unknown, -1));
        assert_eq!(delete(&node, "ghost", 0, 0).await, (unknown, -1));
        assert_eq!(
            delete(&node, "accounts", 0, 0).await,
            (ResponseError::PolicyViolation.code(), -1)
        );
        assert_eq!(fetch_at(&node, "orders", 0).await, (0, 0), "nothing moved");
    }
}
