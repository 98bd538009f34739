//! OffsetDelete: remove a group's committed offsets, except those of topics
//! its members subscribe to (see `GroupCoordinator::delete_offsets`).

use sluice_metadata::acls::Operation;

use crate::access;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::KafkaContext;

/// Answer an OffsetDelete request.
pub async fn handle(context: &KafkaContext, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    if let Err(denied) = access::group(Operation::Delete, &request.group_id.0) {
        return OffsetDeleteResponse::default().with_error_code(denied.kind().kafka_error_code());
    }
    // topics the principal may not READ keep their offsets
    let denied = |topic: &str| access::topic(Operation::Read, topic).is_err();
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .filter(|t| !denied(&t.name.0))
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let results = match context
        .groups
        .delete_offsets(&request.group_id.0, &partitions)
        .await
    {
        Ok(results) => results,
        Err(error) => return OffsetDeleteResponse::default().with_error_code(error.code()),
    };
    let mut results = results.into_iter();
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic_denied = denied(&t.name.0);
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let code = if topic_denied {
                                kafka_protocol::ResponseError::TopicAuthorizationFailed.code()
                            } else {
                                results.next().and_then(Result::err).map_or(0, |e| e.code())
                            };
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
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

    /// A consumer subscription (version 0) to `topics`.
    fn subscription(topics: &[&str]) -> Vec<u8> {
        let mut out = 0i16.to_be_bytes().to_vec();
        out.extend((topics.len() as i32).to_be_bytes());
        for topic in topics {
            out.extend((topic.len() as i16).to_be_bytes());
            out.extend(topic.as_bytes());
        }
        out.extend((-1i32).to_be_bytes()); // no user data
        out
    }

    #[tokio::test]
    async fn a_consumer_group_keeps_the_offsets_of_topics_it_subscribes_to() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        committed(&node, "g").await;
        // a member subscribed to orders joins
        let metadata: &'static [u8] = Box::leak(subscription(&["orders"]).into_boxed_slice());
        let request = join_request("g", "").with_protocols(vec![protocol("range", metadata)]);
        let joined = join(ctx, request).await;
        assert_eq!(joined.error_code, 0);

        let response = handle(ctx, deleting("g", &[("orders", &[0]), ("audit", &[0])])).await;
        assert_eq!(response.error_code, 0);
        let subscribed = ResponseError::GroupSubscribedToTopic.code();
        assert_eq!(
            codes(&response),
            vec![
                ("orders".to_string(), vec![(0, subscribed)]),
                ("audit".to_string(), vec![(0, 0)]),
            ]
        );
        assert_eq!(stored(ctx, "g").await.len(), 2);

        // once it left, the offsets can go
        let left = ctx
            .groups
            .leave("g", vec![(joined.member_id.to_string(), None)])
            .await
            .unwrap();
        assert_eq!(left, vec![Ok(())]);
        let response = handle(ctx, deleting("g", &[("orders", &[0])])).await;
        assert_eq!(response.error_code, 0);
        assert_eq!(codes(&response), vec![("orders".to_string(), vec![(0, 0)])]);
        assert_eq!(stored(ctx, "g").await.len(), 1);
    }

    #[tokio::test]
    async fn other_protocols_with_members_refuse_and_unknown_groups_are_not_found() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        committed(&node, "g").await;
        let request = join_request("g", "")
            .with_protocol_type(text("connect"))
            .with_protocols(vec![protocol("v1", b"x")]);
        assert_eq!(join(ctx, request).await.error_code, 0);
        let response = handle(ctx, deleting("g", &[("orders", &[0])])).await;
        assert_eq!(response.error_code, ResponseError::NonEmptyGroup.code());
        assert_eq!(stored(ctx, "g").await.len(), 3);
        let response = handle(ctx, deleting("nobody", &[("orders", &[0])])).await;
        assert_eq!(response.error_code, ResponseError::GroupIdNotFound.code());
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
