//! OffsetCommit: a group's consumed positions, stored in the metadata store.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use sluice_metadata::groups::OffsetRecord;

use super::KafkaContext;

/// Answer an OffsetCommit request: unknown topics or partitions fail alone;
/// a member or generation check failure fails every partition.
pub async fn handle(
    context: &KafkaContext,
    version: i16,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let view = &context.view;
    let mut offsets = Vec::new();
    // per topic, per partition: an error found before committing
    let mut errors: Vec<Vec<i16>> = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let known = view.topic(&topic.name.0);
        let mut topic_errors = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            let in_range = known
                .as_ref()
                .is_some_and(|t| (0..t.record.partitions).contains(&partition.partition_index));
            if !in_range {
                topic_errors.push(ResponseError::UnknownTopicOrPartition.code());
                continue;
            }
            topic_errors.push(0);
            offsets.push((
                topic.name.0.to_string(),
                partition.partition_index,
                OffsetRecord {
                    offset: partition.committed_offset,
                    leader_epoch: if version >= 6 {
                        partition.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: partition.committed_metadata.as_ref().map(|m| m.to_string()),
                    commit_timestamp_ms: now_ms,
                },
            ));
        }
        errors.push(topic_errors);
    }
    let instance_id = request.group_instance_id.as_ref().map(|id| id.to_string());
    let group_error = context
        .groups
        .commit_offsets(
            &request.group_id.0,
            request.generation_id_or_member_epoch,
            &request.member_id,
            instance_id.as_deref(),
            offsets,
        )
        .await
        .err()
        .map_or(0, |e| e.code());
    let topics = request
        .topics
        .into_iter()
        .zip(errors)
        .map(|(topic, topic_errors)| {
            let partitions = topic
                .partitions
                .iter()
                .zip(topic_errors)
                .map(|(p, error)| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(if error != 0 { error } else { group_error })
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
