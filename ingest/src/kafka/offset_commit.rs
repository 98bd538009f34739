//! OffsetCommit: a group's consumed positions, stored in the metadata store.

use sluice_metadata::acls::Operation;

use crate::access;
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
    let now_ms = context.view.catalog().clock().now_ms();
    let view = &context.view;
    let mut offsets = Vec::new();
    // per topic, per partition: an error found before committing
    let mut errors: Vec<Vec<i16>> = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let known = view.topic(&topic.name.0);
        let mut topic_errors = Vec::with_capacity(topic.partitions.len());
        if let Err(denied) = access::topic(Operation::Read, &topic.name.0) {
            let code = denied.kind().kafka_error_code();
            errors.push(vec![code; topic.partitions.len()]);
            continue;
        }
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
    let group_error = match access::group(Operation::Read, &request.group_id.0) {
        Err(denied) => denied.kind().kafka_error_code(),
        Ok(()) => context
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
            .map_or(0, |e| e.code()),
    };
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, TopicName};

    use super::*;
    use crate::kafka::testing::{self, join, join_request, stable_member, stored, text, TestNode};

    /// Commit `offsets` (topic, partition, offset) with metadata "m" and
    /// leader epoch 3.
    fn commit(
        group: &str,
        generation: i32,
        member: &str,
        offsets: &[(&str, i32, i64)],
    ) -> OffsetCommitRequest {
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for (topic, partition, offset) in offsets {
            let entry = OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(3)
                .with_committed_metadata(Some(text("m")));
            match topics.iter_mut().find(|t| t.name.0.as_str() == *topic) {
                Some(t) => t.partitions.push(entry),
                None => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(text(topic)))
                        .with_partitions(vec![entry]),
                ),
            }
        }
        OffsetCommitRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(text(member))
            .with_topics(topics)
    }

    /// Per topic, the partitions' error codes.
    fn codes(response: &OffsetCommitResponse) -> Vec<(String, Vec<(i32, i16)>)> {
        response
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.0.to_string(),
                    t.partitions
                        .iter()
                        .map(|p| (p.partition_index, p.error_code))
                        .collect(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_member_commits_in_its_generation_and_the_offsets_are_stored() {
        let node = TestNode::start().await;
        node.topic("orders", 2).await;
        let ctx = &node.context;
        let member = stable_member(ctx, join_request("g", "")).await;
        let request = commit("g", 1, &member, &[("orders", 0, 10), ("orders", 1, 20)]);
        let response = handle(ctx, 9, request).await;
        assert_eq!(
            codes(&response),
            vec![("orders".to_string(), vec![(0, 0), (1, 0)])]
        );
        let committed = ctx.groups.fetch_offsets("g").await.unwrap();
        let record = &committed["orders"][&0];
        assert_eq!(record.offset, 10);
        assert_eq!(record.leader_epoch, 3);
        assert_eq!(record.metadata.as_deref(), Some("m"));
        assert!(record.commit_timestamp_ms > 0);
        assert_eq!(committed["orders"][&1].offset, 20);

        // before v6 there is no leader epoch to keep
        let request = commit("g", 1, &member, &[("orders", 0, 11)]);
        assert_eq!(codes(&handle(ctx, 5, request).await)[0].1, vec![(0, 0)]);
        let committed = ctx.groups.fetch_offsets("g").await.unwrap();
        assert_eq!(committed["orders"][&0].offset, 11);
        assert_eq!(committed["orders"][&0].leader_epoch, -1);
    }

    #[tokio::test]
    async fn a_consumer_outside_any_group_commits_only_while_the_group_is_empty() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        let ctx = &node.context;
        // assign(): generation -1 and no member id
        let response = handle(ctx, 8, commit("solo", -1, "", &[("orders", 0, 5)])).await;
        assert_eq!(codes(&response)[0].1, vec![(0, 0)]);
        assert_eq!(stored(ctx, "solo").await, vec![("orders".into(), 0, 5)]);

        stable_member(ctx, join_request("solo", "")).await;
        let response = handle(ctx, 8, commit("solo", -1, "", &[("orders", 0, 6)])).await;
        assert_eq!(
            codes(&response)[0].1,
            vec![(0, ResponseError::UnknownMemberId.code())]
        );
        assert_eq!(stored(ctx, "solo").await, vec![("orders".into(), 0, 5)]);
    }

    #[tokio::test]
    async fn unknown_topics_and_partitions_fail_alone() {
        let node = TestNode::start().await;
        node.topic("orders", 2).await;
        let ctx = &node.context;
        let member = stable_member(ctx, join_request("g", "")).await;
        let request = commit(
            "g",
            1,
            &member,
            &[
                ("orders", 0, 10),
                ("orders", 2, 10),
                ("orders", -1, 10),
                ("missing", 0, 10),
            ],
        );
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(
            codes(&handle(ctx, 9, request).await),
            vec![
                (
                    "orders".to_string(),
                    vec![(0, 0), (2, unknown), (-1, unknown)]
                ),
                ("missing".to_string(), vec![(0, unknown)]),
            ]
        );
        assert_eq!(stored(ctx, "g").await, vec![("orders".into(), 0, 10)]);
    }

    #[tokio::test]
    async fn member_and_generation_failures_fail_every_partition() {
        let node = TestNode::start().await;
        node.topic("orders", 2).await;
        let ctx = &node.context;
        let member = stable_member(ctx, join_request("g", "")).await;
        let offsets = [("orders", 0, 10), ("orders", 1, 20), ("missing", 0, 1)];
        let all = |code: i16| {
            vec![
                ("orders".to_string(), vec![(0, code), (1, code)]),
                (
                    "missing".to_string(),
                    vec![(0, ResponseError::UnknownTopicOrPartition.code())],
                ),
            ]
        };
        let response = handle(ctx, 9, commit("g", 1, "ghost", &offsets)).await;
        assert_eq!(codes(&response), all(ResponseError::UnknownMemberId.code()));
        for stale in [0, 2] {
            let response = handle(ctx, 9, commit("g", stale, &member, &offsets)).await;
            assert_eq!(
                codes(&response),
                all(ResponseError::IllegalGeneration.code())
            );
        }
        // joined but not yet given its assignment
        let joined = join(ctx, join_request("h", "")).await;
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        let joining = joined.member_id.to_string();
        let response = handle(ctx, 9, commit("h", 1, &joining, &offsets)).await;
        assert_eq!(
            codes(&response),
            all(ResponseError::RebalanceInProgress.code())
        );
        let response = handle(ctx, 9, commit("a/b", 1, &member, &offsets)).await;
        assert_eq!(codes(&response), all(ResponseError::InvalidGroupId.code()));
        testing::claim_for(ctx, "theirs", 2).await;
        let response = handle(ctx, 9, commit("theirs", 1, &member, &offsets)).await;
        assert_eq!(codes(&response), all(ResponseError::NotCoordinator.code()));
        // nothing was committed anywhere
        for group in ["g", "h", "theirs"] {
            assert_eq!(stored(ctx, group).await, vec![], "{group}");
        }
    }
}
