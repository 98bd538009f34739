//! DescribeGroups: state, protocol and members (with subscriptions and
//! assignments) of groups this node coordinates.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use sluice_metadata::acls::Operation;

use super::{authorized, KafkaContext};
use crate::access;

/// Answer a DescribeGroups request.
pub async fn handle(
    context: &KafkaContext,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        let operations = authorized::when_asked(request.include_authorized_operations, || {
            authorized::group(&group_id.0)
        });
        let described = DescribedGroup::default()
            .with_group_id(group_id.clone())
            .with_authorized_operations(operations);
        if let Err(denied) = access::group(Operation::Describe, &group_id.0) {
            groups.push(
                described
                    .with_error_code(denied.kind().kafka_error_code())
                    .with_authorized_operations(authorized::NOT_REQUESTED),
            );
            continue;
        }
        groups.push(match context.groups.describe(&group_id.0).await {
            Ok(d) => described
                .with_group_state(StrBytes::from_static_str(d.state))
                .with_protocol_type(StrBytes::from_string(d.protocol_type))
                .with_protocol_data(StrBytes::from_string(d.protocol_name))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(StrBytes::from_string(m.member_id))
                                .with_group_instance_id(m.instance_id.map(StrBytes::from_string))
                                .with_client_id(StrBytes::from_string(m.client_id))
                                .with_client_host(StrBytes::from_string(m.client_host))
                                .with_member_metadata(m.metadata.into())
                                .with_member_assignment(m.assignment.into())
                        })
                        .collect(),
                ),
            Err(error) => described.with_error_code(error.code()),
        });
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::{GroupId, JoinGroupResponse};

    use super::*;
    use crate::kafka::testing::{self, join_request, protocol, text, TestNode};
    use crate::kafka::{join_group, CLIENT_HOST};

    /// Join group `g` as a new member (v3: at once).
    async fn join(context: &KafkaContext, client: &str) -> JoinGroupResponse {
        let request = join_request("g", "").with_protocols(vec![
            protocol("range", b"sub-range"),
            protocol("roundrobin", b"sub-rr"),
        ]);
        join_group::handle(context, 3, client, request).await
    }

    fn asking(groups: &[&str]) -> DescribeGroupsRequest {
        DescribeGroupsRequest::default()
            .with_groups(groups.iter().map(|g| GroupId(text(g))).collect())
    }

    /// The one group described.
    async fn describe(context: &KafkaContext, group: &str) -> DescribedGroup {
        let mut response = handle(context, asking(&[group])).await;
        assert_eq!(response.groups.len(), 1);
        response.groups.remove(0)
    }

    #[tokio::test]
    async fn a_stable_group_is_described_with_its_members() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        let joined = join(ctx, "billing-app").await;
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        testing::sync(ctx, "g", 1, &joined.member_id).await;

        let group = describe(ctx, "g").await;
        assert_eq!(group.error_code, 0);
        assert_eq!(group.group_id.0.as_str(), "g");
        assert_eq!(group.group_state.as_str(), "Stable");
        assert_eq!(group.protocol_type.as_str(), "consumer");
        assert_eq!(group.protocol_data.as_str(), "range");
        assert_eq!(group.authorized_operations, i32::MIN);
        assert_eq!(group.members.len(), 1);
        let member = &group.members[0];
        assert_eq!(member.member_id, joined.member_id);
        assert_eq!(member.group_instance_id, None);
        assert_eq!(member.client_id.as_str(), "billing-app");
        assert_eq!(member.client_host.as_str(), CLIENT_HOST);
        // the subscription of the chosen protocol, and the leader's assignment
        assert_eq!(member.member_metadata.as_ref(), b"sub-range");
        assert_eq!(member.member_assignment.as_ref(), b"p0");
    }

    #[tokio::test]
    async fn the_state_follows_the_group_through_its_life() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        // never joined: Dead, without an error
        let unknown = describe(ctx, "g").await;
        assert_eq!(unknown.error_code, 0);
        assert_eq!(unknown.group_state.as_str(), "Dead");
        assert!(unknown.members.is_empty());
        assert_eq!(unknown.protocol_type.as_str(), "");

        let joined = join(ctx, "a").await;
        let group = describe(ctx, "g").await;
        assert_eq!(group.group_state.as_str(), "CompletingRebalance");
        assert_eq!(group.members.len(), 1);
        assert!(group.members[0].member_assignment.is_empty());
        testing::sync(ctx, "g", 1, &joined.member_id).await;
        assert_eq!(describe(ctx, "g").await.group_state.as_str(), "Stable");

        // a second member starts a rebalance
        let context = node.context.clone();
        let _second = tokio::spawn(async move { join(&context, "b").await });
        let state = testing::eventually(
            || async { describe(ctx, "g").await.group_state.to_string() },
            |state| state != "Stable",
        )
        .await;
        assert_eq!(state, "PreparingRebalance");
        assert_eq!(describe(ctx, "g").await.members.len(), 2);

        // everyone leaves
        let everyone: Vec<(String, Option<String>)> = describe(ctx, "g")
            .await
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), None))
            .collect();
        let left = ctx.groups.leave("g", everyone).await.unwrap();
        assert_eq!(left, vec![Ok(()), Ok(())]);
        let group = testing::eventually(
            || describe(ctx, "g"),
            |group| group.group_state.as_str() == "Empty",
        )
        .await;
        assert_eq!(group.group_state.as_str(), "Empty");
        assert!(group.members.is_empty());
        assert_eq!(group.protocol_type.as_str(), "consumer");
    }

    #[tokio::test]
    async fn invalid_and_foreign_groups_fail_alone_in_request_order() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        testing::claim_for(ctx, "theirs", 2).await;
        let response = handle(ctx, asking(&["", "theirs", "a/b", "mine"])).await;
        let answers: Vec<(&str, i16, &str)> = response
            .groups
            .iter()
            .map(|g| (g.group_id.0.as_str(), g.error_code, g.group_state.as_str()))
            .collect();
        assert_eq!(
            answers,
            vec![
                ("", ResponseError::InvalidGroupId.code(), ""),
                ("theirs", ResponseError::NotCoordinator.code(), ""),
                ("a/b", ResponseError::InvalidGroupId.code(), ""),
                ("mine", 0, "Dead"),
            ]
        );
        assert!(response
            .groups
            .iter()
            .all(|g| g.authorized_operations == i32::MIN && g.members.is_empty()));
    }
}
