//! LeaveGroup: members leave at once instead of waiting for their session
//! to time out (one member before v3, a batch by id or instance id from v3).

use sluice_metadata::acls::Operation;

use crate::access;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::KafkaContext;

/// Answer a LeaveGroup request.
pub async fn handle(
    context: &KafkaContext,
    version: i16,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    if let Err(denied) = access::group(Operation::Read, &request.group_id.0) {
        return LeaveGroupResponse::default().with_error_code(denied.kind().kafka_error_code());
    }
    let members: Vec<(String, Option<String>)> = if version < 3 {
        vec![(request.member_id.to_string(), None)]
    } else {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|id| id.to_string()),
                )
            })
            .collect()
    };
    match context.groups.leave(&request.group_id.0, members).await {
        Ok(results) if version < 3 => LeaveGroupResponse::default().with_error_code(
            results
                .first()
                .and_then(|r| r.err())
                .map_or(0, |e| e.code()),
        ),
        Ok(results) => {
            let responses = request
                .members
                .into_iter()
                .zip(results)
                .map(|(m, result)| {
                    MemberResponse::default()
                        .with_member_id(m.member_id)
                        .with_group_instance_id(m.group_instance_id)
                        .with_error_code(result.err().map_or(0, |e| e.code()))
                })
                .collect();
            LeaveGroupResponse::default().with_members(responses)
        }
        Err(error) => LeaveGroupResponse::default().with_error_code(error.code()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::GroupId;

    use super::*;
    use crate::kafka::testing::{self, join, join_request, text, TestNode};

    /// A member alone in a stable group `g`, generation 1.
    async fn stable_member(context: &KafkaContext, instance_id: Option<&str>) -> String {
        let request = join_request("g", "").with_group_instance_id(instance_id.map(text));
        testing::stable_member(context, request).await
    }

    async fn heartbeat(context: &KafkaContext, generation: i32, member: &str) -> i16 {
        testing::heartbeat(context, "g", generation, member).await
    }

    fn one(group: &str, member: &str) -> LeaveGroupRequest {
        LeaveGroupRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_member_id(text(member))
    }

    fn batch(group: &str, members: &[(&str, Option<&str>)]) -> LeaveGroupRequest {
        LeaveGroupRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_members(
                members
                    .iter()
                    .map(|(member, instance)| {
                        MemberIdentity::default()
                            .with_member_id(text(member))
                            .with_group_instance_id(instance.map(text))
                    })
                    .collect(),
            )
    }

    #[tokio::test]
    async fn before_v3_one_member_leaves_by_id() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        let member = stable_member(ctx, None).await;
        let left = handle(ctx, 2, one("g", &member)).await;
        assert_eq!(left.error_code, 0);
        assert!(left.members.is_empty());
        // gone: the group is empty and the member unknown
        assert_eq!(ctx.groups.describe("g").await.unwrap().state, "Empty");
        assert_eq!(
            heartbeat(ctx, 1, &member).await,
            ResponseError::UnknownMemberId.code()
        );
        let again = handle(ctx, 0, one("g", &member)).await;
        assert_eq!(again.error_code, ResponseError::UnknownMemberId.code());
    }

    #[tokio::test]
    async fn from_v3_a_batch_is_answered_member_by_member() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        let member = stable_member(ctx, Some("instance-1")).await;
        let request = batch(
            "g",
            &[
                ("ghost", None),
                ("", Some("instance-2")),
                ("", None),
                ("", Some("instance-1")),
            ],
        );
        let left = handle(ctx, 3, request).await;
        assert_eq!(left.error_code, 0);
        let answers: Vec<(&str, Option<&str>, i16)> = left
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.as_str(),
                    m.group_instance_id.as_deref(),
                    m.error_code,
                )
            })
            .collect();
        let unknown = ResponseError::UnknownMemberId.code();
        assert_eq!(
            answers,
            vec![
                ("ghost", None, unknown),
                ("", Some("instance-2"), unknown),
                ("", None, unknown),
                ("", Some("instance-1"), 0),
            ]
        );
        assert_eq!(
            heartbeat(ctx, 1, &member).await,
            ResponseError::UnknownMemberId.code()
        );
        assert_eq!(ctx.groups.describe("g").await.unwrap().state, "Empty");
    }

    #[tokio::test]
    async fn the_rest_of_the_group_rebalances_without_the_member_that_left() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        let a = stable_member(ctx, None).await;
        let context = node.context.clone();
        let second = tokio::spawn(async move { join(&context, join_request("g", "")).await });
        let code = testing::eventually(|| heartbeat(ctx, 1, &a), |c| *c != 0).await;
        assert_eq!(code, ResponseError::RebalanceInProgress.code());
        // the leader leaves instead of rejoining: the newcomer leads alone
        let left = handle(ctx, 5, batch("g", &[(&a, None)])).await;
        assert_eq!(left.members[0].error_code, 0);
        let second = second.await.unwrap();
        assert_eq!((second.error_code, second.generation_id), (0, 2));
        assert_eq!(second.leader, second.member_id);
        let members: Vec<&str> = second
            .members
            .iter()
            .map(|m| m.member_id.as_str())
            .collect();
        assert_eq!(members, vec![second.member_id.as_str()]);
    }

    #[tokio::test]
    async fn a_bad_group_fails_the_whole_request() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        for group in ["", "a/b"] {
            let left = handle(ctx, 0, one(group, "m")).await;
            assert_eq!(left.error_code, ResponseError::InvalidGroupId.code());
            let left = handle(ctx, 3, batch(group, &[("m", None)])).await;
            assert_eq!(left.error_code, ResponseError::InvalidGroupId.code());
            assert!(left.members.is_empty());
        }
        testing::claim_for(ctx, "theirs", 2).await;
        let left = handle(ctx, 4, batch("theirs", &[("m", None)])).await;
        assert_eq!(left.error_code, ResponseError::NotCoordinator.code());
        assert!(left.members.is_empty());
    }
}
