//! Heartbeat: keeps a member's session alive and tells it to rejoin when a
//! rebalance started.

use sluice_metadata::acls::Operation;

use crate::access;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::KafkaContext;

/// Answer a Heartbeat request.
pub async fn handle(context: &KafkaContext, request: HeartbeatRequest) -> HeartbeatResponse {
    if let Err(denied) = access::group(Operation::Read, &request.group_id.0) {
        return HeartbeatResponse::default().with_error_code(denied.kind().kafka_error_code());
    }
    let instance_id = request.group_instance_id.as_ref().map(|id| id.to_string());
    let result = context
        .groups
        .heartbeat(
            &request.group_id.0,
            request.generation_id,
            &request.member_id,
            instance_id.as_deref(),
        )
        .await;
    HeartbeatResponse::default().with_error_code(result.err().map_or(0, |e| e.code()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::JoinGroupResponse;

    use super::*;
    use crate::kafka::testing::{
        self, heartbeat_request as beat, join_request, sync, text, TestNode,
    };

    /// Join group `g` (v3: a new member joins at once).
    async fn join(
        context: &KafkaContext,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> JoinGroupResponse {
        let request = join_request("g", member_id).with_group_instance_id(instance_id.map(text));
        testing::join(context, request).await
    }

    async fn code(context: &KafkaContext, request: HeartbeatRequest) -> i16 {
        handle(context, request).await.error_code
    }

    #[tokio::test]
    async fn a_member_heartbeats_in_its_generation_before_and_after_sync() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        let joined = join(ctx, "", None).await;
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        let member = joined.member_id.to_string();
        // joined, assignment not yet handed out
        assert_eq!(code(ctx, beat("g", 1, &member)).await, 0);
        sync(ctx, "g", 1, &member).await;
        for _ in 0..3 {
            assert_eq!(code(ctx, beat("g", 1, &member)).await, 0);
        }
    }

    #[tokio::test]
    async fn unknown_members_stale_generations_and_bad_groups_are_refused() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        let joined = join(ctx, "", None).await;
        let member = joined.member_id.to_string();
        sync(ctx, "g", 1, &member).await;

        assert_eq!(
            code(ctx, beat("g", 1, "ghost")).await,
            ResponseError::UnknownMemberId.code()
        );
        for stale in [0, 2] {
            assert_eq!(
                code(ctx, beat("g", stale, &member)).await,
                ResponseError::IllegalGeneration.code(),
                "{stale}"
            );
        }
        // a group nobody joined has no members
        assert_eq!(
            code(ctx, beat("quiet", 0, &member)).await,
            ResponseError::UnknownMemberId.code()
        );
        for group in ["", "a/b"] {
            assert_eq!(
                code(ctx, beat(group, 1, &member)).await,
                ResponseError::InvalidGroupId.code(),
                "{group:?}"
            );
        }
        testing::claim_for(ctx, "theirs", 2).await;
        assert_eq!(
            code(ctx, beat("theirs", 1, &member)).await,
            ResponseError::NotCoordinator.code()
        );
        assert_eq!(code(ctx, beat("g", 1, &member)).await, 0);
    }

    #[tokio::test]
    async fn another_member_id_claiming_a_static_instance_is_fenced() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        let joined = join(ctx, "", Some("instance-1")).await;
        assert_eq!(joined.error_code, 0);
        let member = joined.member_id.to_string();
        sync(ctx, "g", 1, &member).await;
        let with_instance =
            |member: &str| beat("g", 1, member).with_group_instance_id(Some(text("instance-1")));
        assert_eq!(
            code(ctx, with_instance("someone-else")).await,
            ResponseError::FencedInstanceId.code()
        );
        assert_eq!(code(ctx, with_instance(&member)).await, 0);
    }

    #[tokio::test]
    async fn a_rebalance_is_announced_until_the_member_rejoins_the_next_generation() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        let first = join(ctx, "", None).await;
        let a = first.member_id.to_string();
        sync(ctx, "g", 1, &a).await;

        let context = node.context.clone();
        let second = tokio::spawn(async move { join(&context, "", None).await });
        let answer = testing::eventually(|| code(ctx, beat("g", 1, &a)), |c| *c != 0).await;
        assert_eq!(answer, ResponseError::RebalanceInProgress.code());

        let rejoined = join(ctx, &a, None).await;
        let second = second.await.unwrap();
        assert_eq!((rejoined.generation_id, second.generation_id), (2, 2));
        let b = second.member_id.to_string();
        // the old generation is over; the new one heartbeats (before its sync too)
        assert_eq!(
            code(ctx, beat("g", 1, &a)).await,
            ResponseError::IllegalGeneration.code()
        );
        assert_eq!(code(ctx, beat("g", 2, &a)).await, 0);
        assert_eq!(code(ctx, beat("g", 2, &b)).await, 0);
    }
}
