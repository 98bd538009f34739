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
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use sluice_metadata::producers::ProducerBatch;
use sluice_segment::batch;

use super::KafkaContext;
use crate::error::{IngestError, IngestResult};
use crate::writer::Pending;

/// Answer a Produce request; `None` for acks=0, which gets no response.
pub async fn handle(context: &KafkaContext, request: ProduceRequest) -> Option<ProduceResponse> {
    let acks = request.acks;
    let valid_acks = (-1..=1).contains(&acks);
    // (topic response, pending appends of its partitions in order)
    let mut submitted: Vec<(TopicProduceResponse, Vec<IngestResult<Pending>>)> = Vec::new();
    for topic_data in request.topic_data {
        let name = topic_data.name.0.to_string();
        // like Kafka's auto.create.topics.enable, a produce to an unknown
        // topic creates it (with the default partition count)
        let topic = context
            .topic(&name, context.config.auto_create_topics)
            .await;
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        let mut pending = Vec::with_capacity(topic_data.partition_data.len());
        for data in topic_data.partition_data {
            let index = data.index;
            partitions.push(PartitionProduceResponse::default().with_index(index));
            if !valid_acks {
                pending.push(Err(IngestError::Invalid(format!("acks {acks}"))));
                continue;
            }
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
                let summary = batch::validate(&records)
                    .map_err(|error| IngestError::CorruptBatch(error.to_string()))?;
                let producer = producer_batch(&records)?;
                context
                    .producer
                    .writer()
                    .submit_idempotent(&topic, index, records, summary, producer)
                    .await
            };
            pending.push(append.await);
        }
        let response = TopicProduceResponse::default()
            .with_name(topic_data.name)
            .with_partition_responses(partitions);
        submitted.push((response, pending));
    }
    if acks == 0 {
        // fire and forget: the appends still commit, nobody waits
        return None;
    }
    let mut responses = Vec::with_capacity(submitted.len());
    for (mut topic_response, pending) in submitted {
        let topic = context.view.topic(&topic_response.name.0.to_string());
        for (partition, pending) in topic_response.partition_responses.iter_mut().zip(pending) {
            let result = match pending {
                Ok(pending) => pending.wait().await,
                Err(error) => Err(error),
            };
            match result {
                Ok(base_offset) => {
                    partition.base_offset = base_offset;
                    partition.log_start_offset = topic.as_ref().map_or(0, |t| {
                        context
                            .view
                            .snapshot(&t.record.id, partition.index)
                            .log_start_offset
                    });
                }
                Err(error) => {
                    partition.error_code = if valid_acks {
                        error.kind().kafka_error_code()
                    } else {
                        ResponseError::InvalidRequiredAcks.code()
                    };
                    partition.error_message = Some(error.to_string().into());
                    partition.base_offset = -1;
                }
            }
        }
        responses.push(topic_response);
    }
    Some(ProduceResponse::default().with_responses(responses))
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
