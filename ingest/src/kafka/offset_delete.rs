//! OffsetDelete: remove committed offsets of a group that has no members.

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::KafkaContext;

/// Answer an OffsetDelete request.
pub async fn handle(context: &KafkaContext, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    if let Err(error) = context
        .groups
        .delete_offsets(&request.group_id.0, &partitions)
        .await
    {
        return OffsetDeleteResponse::default().with_error_code(error.code());
    }
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, TopicName};

    use super::*;
    use crate::kafka::testing::{
        self, join, join_request, protocol, record, stored, text, TestNode,
    };

    /// Group `group` committed orders/0 = 10, orders/1 = 20 and audit/0 = 7,
    /// as a consumer outside the group.
    async fn committed(node: &TestNode, group: &str) {
        let offsets = vec![
            ("orders".to_string(), 0, record(10)),
            ("orders".to_string(), 1, record(20)),
            ("audit".to_string(), 0, record(7)),
        ];
        node.context
            .groups
            .commit_offsets(group, -1, "", None, offsets)
            .await
            .unwrap();
    }

    fn deleting(group: &str, topics: &[(&str, &[i32])]) -> OffsetDeleteRequest {
        OffsetDeleteRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_topics(
                topics
                    .iter()
                    .map(|(name, partitions)| {
                        OffsetDeleteRequestTopic::default()
                            .with_name(TopicName(text(name)))
                            .with_partitions(
                                partitions
                                    .iter()
                                    .map(|p| {
                                        OffsetDeleteRequestPartition::default()
                                            .with_partition_index(*p)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
    }

    /// Per topic, the partitions' error codes.
    fn codes(response: &OffsetDeleteResponse) -> Vec<(String, Vec<(i32, i16)>)> {
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
    async fn an_empty_groups_offsets_are_deleted_partition_by_partition() {
        let node = TestNode::start().await;
        committed(&node, "g").await;
        let request = deleting(
            "g",
            &[("orders", &[0, 5]), ("audit", &[0]), ("missing", &[0])],
        );
        let response = handle(&node.context, request).await;
        assert_eq!(response.error_code, 0);
        assert_eq!(
            codes(&response),
            vec![
                ("orders".to_string(), vec![(0, 0), (5, 0)]),
                ("audit".to_string(), vec![(0, 0)]),
                ("missing".to_string(), vec![(0, 0)]),
            ]
        );
        assert_eq!(
            stored(&node.context, "g").await,
            vec![("orders".into(), 1, 20)]
        );
    }

    #[tokio::test]
    async fn a_group_with_a_member_keeps_its_offsets() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        committed(&node, "g").await;
        // a member subscribed to orders joins
        let request = join_request("g", "").with_protocols(vec![protocol("range", b"orders")]);
        let joined = join(ctx, request).await;
        assert_eq!(joined.error_code, 0);

        let response = handle(ctx, deleting("g", &[("orders", &[0])])).await;
        assert_eq!(response.error_code, ResponseError::NonEmptyGroup.code());
        assert!(response.topics.is_empty());
        assert_eq!(stored(ctx, "g").await.len(), 3);

        // once it left, the offsets can go
        let left = ctx
            .groups
            .leave("g", vec![(joined.member_id.to_string(), None)])
            .await
            .unwrap();
        assert_eq!(left, vec![Ok(())]);
        let response = handle(ctx, deleting("g", &[("orders", &[0])])).await;
        assert_eq!(response.error_code, 0);
        assert_eq!(stored(ctx, "g").await.len(), 2);
    }

    #[tokio::test]
    async fn invalid_and_foreign_groups_are_refused() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        for group in ["", "a/b"] {
            let response = handle(ctx, deleting(group, &[("orders", &[0])])).await;
            assert_eq!(
                response.error_code,
                ResponseError::InvalidGroupId.code(),
                "{group:?}"
            );
            assert!(response.topics.is_empty());
        }
        testing::claim_for(ctx, "theirs", 2).await;
        let response = handle(ctx, deleting("theirs", &[("orders", &[0])])).await;
        assert_eq!(response.error_code, ResponseError::NotCoordinator.code());
        assert!(response.topics.is_empty());
    }
}
