//! Produce: validate every partition's batches, append them all to the
//! node's segment buffer, then wait for their commit. Batches are stored as
//! sent, so compressed batches (gzip, snappy, lz4, zstd) pass through.
//!
//! Batches of an idempotent producer (producer id set) carry their producer
//! id, epoch and sequences to the writer, which answers a retried batch with
//! its original base offset; as in Kafka, such a partition must hold exactly
//! one batch. Transactional batches are refused: transactions are not
//! supported.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use sluice_metadata::producers::ProducerBatch;
use sluice_segment::batch;

use sluice_metadata::acls::Operation;

use super::order::Turn;
use super::KafkaContext;
use crate::access;
use crate::error::{IngestError, IngestResult};
use crate::rules::TopicRules;
use crate::writer::Pending;

/// Answer a Produce request; `None` for acks=0, which gets no response.
pub async fn handle(context: &KafkaContext, request: ProduceRequest) -> Option<ProduceResponse> {
    handle_in_turn(context, 9, request, Turn::free()).await
}

/// Record bytes a produce request carries (what a producer quota counts).
pub fn request_bytes(request: &ProduceRequest) -> u64 {
    request
        .topic_data
        .iter()
        .flat_map(|topic| &topic.partition_data)
        .map(|data| data.records.as_ref().map_or(0, |r| r.len() as u64))
        .sum()
}

/// [`handle`] holding the request's `turn` on its connection until every
/// batch is appended to the segment buffer: the next request's batches go
/// after these in the log, while the wait for the commit overlaps it.
pub async fn handle_in_turn(
    context: &KafkaContext,
    version: i16,
    request: ProduceRequest,
    mut turn: Turn,
) -> Option<ProduceResponse> {
    turn.wait().await;
    let acks = request.acks;
    if !(-1..=1).contains(&acks) {
        // refused whole, before any topic is looked up (and auto-created)
        return Some(refuse_all(request, ResponseError::InvalidRequiredAcks));
    }
    let now_ms = context.view.catalog().clock().now_ms();
    // (topic response, pending appends of its partitions in order, each
    // with the log append time it was stamped with)
    let mut submitted: Vec<(TopicProduceResponse, Vec<IngestResult<Stamped>>)> = Vec::new();
    for topic_data in request.topic_data {
        let name = topic_data.name.0.to_string();
        // like Kafka's auto.create.topics.enable, a produce to an unknown
        // topic creates it (with the default partition count)
        // refused before the topic is looked up (or created): WRITE on it
        let topic = match access::topic(Operation::Write, &name) {
            Ok(()) => {
                context
                    .topic(&name, context.config.auto_create_topics)
                    .await
            }
            Err(denied) => Err(denied),
        };
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        let mut pending = Vec::with_capacity(topic_data.partition_data.len());
        for data in topic_data.partition_data {
            let index = data.index;
            partitions.push(PartitionProduceResponse::default().with_index(index));
            let append = async {
                let topic = topic.clone()?;
                if !(0..topic.record.partitions).contains(&index) {
                    return Err(IngestError::UnknownPartition {
                        topic: name.clone(),
                        partition: index,
                    });
                }
                let records = data
                    .records
                    .ok_or_else(|| IngestError::CorruptBatch("no records".to_string()))?;
                let max_bytes = topic.record.max_message_bytes();
                if records.len() > max_bytes {
                    return Err(IngestError::TooLarge(format!(
                        "{} bytes exceed max.message.bytes {max_bytes}",
                        records.len()
                    )));
                }
                let mut summary = batch::validate(&records)
                    .map_err(|error| IngestError::CorruptBatch(error.to_string()))?;
                let producer = producer_batch(&records)?;
                let ruled = TopicRules::of(&topic).apply(records, now_ms)?;
                if let Some(stamp) = ruled.log_append_time_ms {
                    summary.max_timestamp = stamp;
                }
                let pending = context
                    .producer
                    .writer()
                    .submit_idempotent(&topic, index, ruled.batches, summary, producer)
                    .await?;
                Ok((pending, ruled.log_append_time_ms))
            };
            pending.push(append.await);
        }
        let response = TopicProduceResponse::default()
            .with_name(topic_data.name)
            .with_partition_responses(partitions);
        submitted.push((response, pending));
    }
    // every batch is in the buffer: their place in the log is fixed
    drop(turn);
    if acks == 0 {
        // fire and forget: the appends still commit, nobody waits
        return None;
    }
    let mut responses = Vec::with_capacity(submitted.len());
    for (mut topic_response, pending) in submitted {
        let topic = context.view.topic(&topic_response.name.0.to_string());
        for (partition, pending) in topic_response.partition_responses.iter_mut().zip(pending) {
            let result = match pending {
                Ok((pending, stamp)) => pending.wait().await.map(|base| (base, stamp)),
                Err(error) => Err(error),
            };
            match result {
                Ok((base_offset, stamp)) => {
                    partition.base_offset = base_offset;
                    partition.log_append_time_ms = stamp.unwrap_or(-1);
                    partition.log_start_offset = topic.as_ref().map_or(0, |t| {
                        context
                            .view
                            .snapshot(&t.record.id, partition.index)
                            .log_start_offset
                    });
                }
                Err(error) => {
                    if let (IngestError::RecordsRefused { records, .. }, true) =
                        (&error, version >= 8)
                    {
                        // KIP-467: which records of the batch, and why
                        partition.record_errors = records
                            .iter()
                            .map(|(index, reason)| {
                                BatchIndexAndErrorMessage::default()
                                    .with_batch_index(*index)
                                    .with_batch_index_error_message(Some(reason.clone().into()))
                            })
                            .collect();
                    }
                    partition.error_code = error.kind().kafka_error_code();
                    partition.error_message = Some(error.to_string().into());
                    partition.base_offset = -1;
                }
            }
        }
        responses.push(topic_response);
    }
    Some(ProduceResponse::default().with_responses(responses))
}

/// A pending append and the log append time its batches were stamped with.
type Stamped = (Pending, Option<i64>);

/// Every partition of `request` answered with `error`.
fn refuse_all(request: ProduceRequest, error: ResponseError) -> ProduceResponse {
    let message = format!("acks must be -1, 0 or 1, not {}", request.acks);
    let responses = request
        .topic_data
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partition_data
                .iter()
                .map(|data| {
                    PartitionProduceResponse::default()
                        .with_index(data.index)
                        .with_error_code(error.code())
                        .with_error_message(Some(message.clone().into()))
                        .with_base_offset(-1)
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions)
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}

/// The idempotence fields of a partition's validated batches; `None` for a
/// producer that is not idempotent.
fn producer_batch(records: &[u8]) -> IngestResult<Option<ProducerBatch>> {
    let fields = batch::producer_fields(records)
        .map_err(|error| IngestError::CorruptBatch(error.to_string()))?;
    if fields.iter().any(|f| f.transactional) {
        return Err(IngestError::Invalid(
            "transactional batches are not supported".to_string(),
        ));
    }
    let mut idempotent = fields.iter().filter(|f| f.producer_id >= 0);
    let Some(first) = idempotent.next() else {
        return Ok(None);
    };
    if fields.len() != 1 {
        return Err(IngestError::Invalid(
            "an idempotent producer must send exactly one record batch per partition".to_string(),
        ));
    }
    if first.producer_epoch < 0 || first.base_sequence < 0 {
        return Err(IngestError::Invalid(format!(
            "idempotent batch of producer {} has epoch {} and base sequence {}",
            first.producer_id, first.producer_epoch, first.base_sequence
        )));
    }
    Ok(Some(ProducerBatch::new(
        first.producer_id,
        first.producer_epoch,
        first.base_sequence,
        first.last_offset_delta,
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::produce_response::PartitionProduceResponse;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use sluice_segment::NewRecord;

    use super::*;
    use crate::kafka::testing::{text, TestNode};
    use crate::kafka::KafkaConfig;

    fn record(value: &str) -> NewRecord {
        NewRecord {
            key: Some(Bytes::from(format!("key-{value}"))),
            value: Some(Bytes::from(value.to_string())),
            headers: Vec::new(),
            timestamp_ms: 1_700_000_000_000,
        }
    }

    fn records(values: &[&str]) -> Vec<NewRecord> {
        values.iter().map(|v| record(v)).collect()
    }

    /// One plain (not idempotent) batch of `values`.
    fn plain(values: &[&str]) -> Bytes {
        batch::encode(&records(values)).unwrap()
    }

    fn partition(index: i32, records: Option<Bytes>) -> PartitionProduceData {
        PartitionProduceData::default()
            .with_index(index)
            .with_records(records)
    }

    fn request(acks: i16, topic: &str, partitions: Vec<PartitionProduceData>) -> ProduceRequest {
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(text(topic)))
                .with_partition_data(partitions)])
    }

    /// Produce `records` to one partition with acks=-1 and return its answer.
    async fn produce_one(
        node: &TestNode,
        topic: &str,
        index: i32,
        records: Option<Bytes>,
    ) -> PartitionProduceResponse {
        let response = handle(
            &node.context,
            request(-1, topic, vec![partition(index, records)]),
        )
        .await
        .unwrap();
        assert_eq!(response.responses.len(), 1);
        assert_eq!(response.responses[0].name.0.as_str(), topic);
        assert_eq!(response.responses[0].partition_responses.len(), 1);
        response.responses[0].partition_responses[0].clone()
    }

    fn high_watermark(node: &TestNode, topic: &str, partition: i32) -> i64 {
        let topic = node.context.view.topic(topic).unwrap();
        node.context
            .view
            .snapshot(&topic.record.id, partition)
            .high_watermark
    }

    #[tokio::test]
    async fn appends_batches_and_answers_their_base_offsets() {
        let node = TestNode::start().await;
        node.topic("orders", 2).await;

        let first = produce_one(&node, "orders", 0, Some(plain(&["a", "b", "c"]))).await;
        assert_eq!(first.index, 0);
        assert_eq!(first.error_code, 0);
        assert_eq!(first.error_message, None);
        assert_eq!(first.base_offset, 0);
        assert_eq!(first.log_start_offset, 0);

        let second = produce_one(&node, "orders", 0, Some(plain(&["d", "e"]))).await;
        assert_eq!(second.error_code, 0);
        assert_eq!(second.base_offset, 3);
        assert_eq!(high_watermark(&node, "orders", 0), 5);

        // both partitions in one request: answered in request order, each
        // with offsets of its own
        let response = handle(
            &node.context,
            request(
                1,
                "orders",
                vec![
                    partition(1, Some(plain(&["x"]))),
                    partition(0, Some(plain(&["f"]))),
                ],
            ),
        )
        .await
        .unwrap();
        let answers = &response.responses[0].partition_responses;
        assert_eq!(answers.len(), 2);
        assert_eq!((answers[0].index, answers[0].error_code), (1, 0));
        assert_eq!(answers[0].base_offset, 0);
        assert_eq!((answers[1].index, answers[1].error_code), (0, 0));
        assert_eq!(answers[1].base_offset, 5);
        assert_eq!(high_watermark(&node, "orders", 0), 6);
        assert_eq!(high_watermark(&node, "orders", 1), 1);
    }

    #[tokio::test]
    async fn unknown_topics_are_created_only_when_auto_creation_is_on() {
        let node = TestNode::start_with(KafkaConfig {
            default_partitions: 3,
            ..KafkaConfig::default()
        })
        .await;
        let answer = produce_one(&node, "fresh", 2, Some(plain(&["a"]))).await;
        assert_eq!(answer.error_code, 0);
        assert_eq!(answer.base_offset, 0);
        let created = node.context.view.topic("fresh").unwrap();
        assert_eq!(created.record.partitions, 3);
        assert_eq!(high_watermark(&node, "fresh", 2), 1);

        let node = TestNode::start_with(KafkaConfig {
            auto_create_topics: false,
            ..KafkaConfig::default()
        })
        .await;
        let answer = produce_one(&node, "fresh", 0, Some(plain(&["a"]))).await;
        assert_eq!(
            answer.error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert_eq!(answer.base_offset, -1);
        assert!(answer.error_message.is_some());
        assert!(node.context.view.topic("fresh").is_none());
    }

    #[tokio::test]
    async fn partitions_outside_the_topic_are_unknown() {
        let node = TestNode::start().await;
        node.topic("orders", 2).await;
        for index in [2, -1, i32::MAX] {
            let answer = produce_one(&node, "orders", index, Some(plain(&["a"]))).await;
            assert_eq!(answer.index, index);
            assert_eq!(
                answer.error_code,
                ResponseError::UnknownTopicOrPartition.code(),
                "partition {index}"
            );
            assert_eq!(answer.base_offset, -1);
        }
        assert_eq!(high_watermark(&node, "orders", 0), 0);
        assert_eq!(high_watermark(&node, "orders", 1), 0);
    }

    #[tokio::test]
    async fn corrupt_or_missing_batches_are_refused_and_others_still_commit() {
        let node = TestNode::start().await;
        node.topic("orders", 2).await;

        // a flipped byte in the records breaks the CRC
        let mut damaged = BytesMut::from(&plain(&["a", "b"])[..]);
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        let response = handle(
            &node.context,
            request(
                -1,
                "orders",
                vec![
                    partition(0, Some(damaged.freeze())),
                    partition(1, Some(plain(&["ok"]))),
                ],
            ),
        )
        .await
        .unwrap();
        let answers = &response.responses[0].partition_responses;
        assert_eq!(answers[0].error_code, ResponseError::CorruptMessage.code());
        assert_eq!(answers[0].base_offset, -1);
        assert_eq!(answers[1].error_code, 0);
        assert_eq!(answers[1].base_offset, 0);

        // no records at all, bytes that are no batch, a truncated batch
        let whole = plain(&["a"]);
        for records in [
            None,
            Some(Bytes::new()),
            Some(Bytes::from_static(b"not a record batch")),
            Some(whole.slice(..whole.len() - 3)),
        ] {
            let answer = produce_one(&node, "orders", 0, records.clone()).await;
            assert_eq!(
                answer.error_code,
                ResponseError::CorruptMessage.code(),
                "{records:?}"
            );
            assert_eq!(answer.base_offset, -1);
        }
        assert_eq!(high_watermark(&node, "orders", 0), 0);
        assert_eq!(high_watermark(&node, "orders", 1), 1);
    }

    #[tokio::test]
    async fn batches_over_max_message_bytes_are_too_large() {
        let node = TestNode::start().await;
        let configs = BTreeMap::from([("max.message.bytes".to_string(), "200".to_string())]);
        node.context
            .view
            .create_topic("small", 1, configs)
            .await
            .unwrap();

        let big = plain(&[&"x".repeat(300)]);
        assert!(big.len() > 200);
        let answer = produce_one(&node, "small", 0, Some(big)).await;
        assert_eq!(answer.error_code, ResponseError::MessageTooLarge.code());
        assert_eq!(answer.base_offset, -1);
        assert_eq!(high_watermark(&node, "small", 0), 0);

        let fits = plain(&["x"]);
        assert!(fits.len() <= 200);
        let answer = produce_one(&node, "small", 0, Some(fits)).await;
        assert_eq!(answer.error_code, 0);
        assert_eq!(answer.base_offset, 0);
    }

    #[tokio::test]
    async fn acks_outside_minus_one_to_one_are_invalid_required_acks() {
        let node = TestNode::start().await;
        node.topic("orders", 2).await;
        for acks in [2, -2, 100] {
            let response = handle(
                &node.context,
                request(
                    acks,
                    "orders",
                    vec![
                        partition(0, Some(plain(&["a"]))),
                        partition(1, Some(plain(&["b"]))),
                    ],
                ),
            )
            .await
            .unwrap();
            for answer in &response.responses[0].partition_responses {
                assert_eq!(
                    answer.error_code,
                    ResponseError::InvalidRequiredAcks.code(),
                    "acks {acks}"
                );
                assert_eq!(answer.base_offset, -1);
            }
        }
        assert_eq!(high_watermark(&node, "orders", 0), 0);
        assert_eq!(high_watermark(&node, "orders", 1), 0);
    }

    #[tokio::test]
    async fn acks_zero_gets_no_response_and_still_commits() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        let response = handle(
            &node.context,
            request(0, "orders", vec![partition(0, Some(plain(&["a", "b"])))]),
        )
        .await;
        assert!(response.is_none());
        // nobody waits for the commit: poll for it (the writer flushes every 5 ms)
        let mut committed = false;
        for _ in 0..500 {
            if high_watermark(&node, "orders", 0) == 2 {
                committed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(committed, "the acks=0 batch was never committed");
    }

    #[tokio::test]
    async fn idempotent_retries_get_their_offsets_and_sequence_breaks_are_refused() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        let idempotent = |epoch: i16, sequence: i32, values: &[&str]| {
            Some(batch::encode_idempotent(&records(values), 7, epoch, sequence).unwrap())
        };

        let answer = produce_one(&node, "orders", 0, idempotent(0, 0, &["a", "b"])).await;
        assert_eq!((answer.error_code, answer.base_offset), (0, 0));
        // a retry of a stored batch: its original offset, stored once
        let answer = produce_one(&node, "orders", 0, idempotent(0, 0, &["a", "b"])).await;
        assert_eq!((answer.error_code, answer.base_offset), (0, 0));
        assert_eq!(high_watermark(&node, "orders", 0), 2);

        let answer = produce_one(&node, "orders", 0, idempotent(0, 2, &["c"])).await;
        assert_eq!((answer.error_code, answer.base_offset), (0, 2));

        // a gap in the sequence
        let answer = produce_one(&node, "orders", 0, idempotent(0, 10, &["d"])).await;
        assert_eq!(
            answer.error_code,
            ResponseError::OutOfOrderSequenceNumber.code()
        );
        assert_eq!(answer.base_offset, -1);

        // a newer epoch starts over at sequence 0 and fences the old one
        let answer = produce_one(&node, "orders", 0, idempotent(1, 0, &["e"])).await;
        assert_eq!((answer.error_code, answer.base_offset), (0, 3));
        let answer = produce_one(&node, "orders", 0, idempotent(0, 3, &["f"])).await;
        assert_eq!(
            answer.error_code,
            ResponseError::InvalidProducerEpoch.code()
        );
        assert_eq!(answer.base_offset, -1);
        assert_eq!(high_watermark(&node, "orders", 0), 4);
    }

    #[tokio::test]
    async fn idempotent_partitions_must_hold_one_well_formed_batch() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;

        let mut two = BytesMut::new();
        two.extend_from_slice(&batch::encode_idempotent(&records(&["a"]), 7, 0, 0).unwrap());
        two.extend_from_slice(&batch::encode_idempotent(&records(&["b"]), 7, 0, 1).unwrap());
        let answer = produce_one(&node, "orders", 0, Some(two.freeze())).await;
        assert_eq!(answer.error_code, ResponseError::InvalidRequest.code());
        assert_eq!(answer.base_offset, -1);

        let no_epoch = batch::encode_idempotent(&records(&["a"]), 7, -1, 0).unwrap();
        let answer = produce_one(&node, "orders", 0, Some(no_epoch)).await;
        assert_eq!(answer.error_code, ResponseError::InvalidRequest.code());

        let no_sequence = batch::encode_idempotent(&records(&["a"]), 7, 0, -1).unwrap();
        let answer = produce_one(&node, "orders", 0, Some(no_sequence)).await;
        assert_eq!(answer.error_code, ResponseError::InvalidRequest.code());

        // several plain batches in one partition are fine
        let mut plain_two = BytesMut::new();
        plain_two.extend_from_slice(&plain(&["a"]));
        plain_two.extend_from_slice(&plain(&["b", "c"]));
        let answer = produce_one(&node, "orders", 0, Some(plain_two.freeze())).await;
        assert_eq!((answer.error_code, answer.base_offset), (0, 0));
        assert_eq!(high_watermark(&node, "orders", 0), 3);
    }

    #[tokio::test]
    async fn transactional_batches_are_refused() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        let record = Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: 7,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: 0,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from_static(b"in a transaction")),
            headers: IndexMap::new(),
        };
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, [record].iter(), &options).unwrap();
        let answer = produce_one(&node, "orders", 0, Some(buf.freeze())).await;
        assert_eq!(answer.error_code, ResponseError::InvalidRequest.code());
        assert_eq!(answer.base_offset, -1);
        assert!(answer
            .error_message
            .unwrap()
            .as_str()
            .contains("transactional"));
        assert_eq!(high_watermark(&node, "orders", 0), 0);
    }

    fn keyless(value: &str) -> NewRecord {
        NewRecord {
            key: None,
            ..record(value)
        }
    }

    #[tokio::test]
    async fn a_compacted_topic_refuses_keyless_records_naming_each() {
        let node = TestNode::start().await;
        node.topic_with("accounts", &[("cleanup.policy", "compact")])
            .await;
        let batch = batch::encode(&[record("a"), keyless("b"), keyless("c")]).unwrap();
        let answer = produce_one(&node, "accounts", 0, Some(batch)).await;
        assert_eq!(answer.error_code, ResponseError::InvalidRecord.code());
        assert_eq!(answer.base_offset, -1);
        let indexes: Vec<i32> = answer.record_errors.iter().map(|e| e.batch_index).collect();
        assert_eq!(indexes, vec![1, 2]);
        let message = answer.error_message.unwrap();
        assert!(message.contains("without a key"), "{message}");
        assert!(answer.record_errors[0]
            .batch_index_error_message
            .as_ref()
            .unwrap()
            .contains("without a key"));
        assert_eq!(high_watermark(&node, "accounts", 0), 0, "nothing stored");
        // keyed records pass
        let answer = produce_one(&node, "accounts", 0, Some(plain(&["a", "b"]))).await;
        assert_eq!((answer.error_code, answer.base_offset), (0, 0));
    }

    #[tokio::test]
    async fn record_errors_are_left_out_before_version_eight() {
        let node = TestNode::start().await;
        node.topic_with("accounts", &[("cleanup.policy", "compact")])
            .await;
        let batch = batch::encode(&[keyless("b")]).unwrap();
        let response = handle_in_turn(
            &node.context,
            7,
            request(-1, "accounts", vec![partition(0, Some(batch))]),
            Turn::free(),
        )
        .await
        .unwrap();
        let answer = &response.responses[0].partition_responses[0];
        assert_eq!(answer.error_code, ResponseError::InvalidRecord.code());
        assert!(answer.record_errors.is_empty());
    }

    #[tokio::test]
    async fn timestamps_outside_the_topic_bounds_are_invalid_timestamp() {
        let node = TestNode::start().await;
        node.topic_with(
            "clicks",
            &[
                ("message.timestamp.before.max.ms", "60000"),
                ("message.timestamp.after.max.ms", "60000"),
            ],
        )
        .await;
        let now = node.context.view.catalog().clock().now_ms();
        let mut old = record("old");
        old.timestamp_ms = now - 3_600_000;
        let mut fresh = record("fresh");
        fresh.timestamp_ms = now;
        let batch = batch::encode(&[fresh.clone(), old]).unwrap();
        let answer = produce_one(&node, "clicks", 0, Some(batch)).await;
        assert_eq!(answer.error_code, ResponseError::InvalidTimestamp.code());
        assert_eq!(answer.record_errors.len(), 1);
        assert_eq!(answer.record_errors[0].batch_index, 1);
        let answer = produce_one(&node, "clicks", 0, Some(batch::encode(&[fresh]).unwrap())).await;
        assert_eq!((answer.error_code, answer.base_offset), (0, 0));
    }

    #[tokio::test]
    async fn a_log_append_time_topic_stamps_batches_and_answers_the_time() {
        let node = TestNode::start().await;
        node.topic_with("audit", &[("message.timestamp.type", "LogAppendTime")])
            .await;
        let before = node.context.view.catalog().clock().now_ms();
        let answer = produce_one(&node, "audit", 0, Some(plain(&["a", "b"]))).await;
        assert_eq!(answer.error_code, 0);
        let stamp = answer.log_append_time_ms;
        assert!(stamp >= before, "{stamp} < {before}");
        let plain_answer = {
            node.topic("plain", 1).await;
            produce_one(&node, "plain", 0, Some(plain(&["a"]))).await
        };
        assert_eq!(plain_answer.log_append_time_ms, -1);
        // what is stored carries the append time for every record
        let topic = node.context.view.topic("audit").unwrap();
        let chunks = node
            .context
            .reader
            .read(&topic.record.id, 0, 0, 1 << 20)
            .await
            .unwrap();
        let records = batch::decode(chunks[0].batches.clone()).unwrap();
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.timestamp_ms == stamp));
    }

    #[tokio::test]
    async fn an_invalid_topic_name_is_refused_and_not_created() {
        let node = TestNode::start().await;
        for name in ["bad name!", ""] {
            let answer = produce_one(&node, name, 0, Some(plain(&["a"]))).await;
            assert_eq!(
                answer.error_code,
                ResponseError::InvalidTopicException.code(),
                "{name:?}"
            );
            assert_eq!(answer.base_offset, -1);
            assert!(node.context.view.topic(name).is_none());
        }
    }

    // the acks are checked before any topic is looked up and so created
    #[tokio::test]
    async fn a_request_refused_for_its_acks_creates_nothing() {
        let node = TestNode::start().await;
        let response = handle(
            &node.context,
            request(2, "fresh", vec![partition(0, Some(plain(&["a"])))]),
        )
        .await
        .unwrap();
        assert_eq!(
            response.responses[0].partition_responses[0].error_code,
            ResponseError::InvalidRequiredAcks.code()
        );
        assert!(node.context.view.topic("fresh").is_none());
    }
}
