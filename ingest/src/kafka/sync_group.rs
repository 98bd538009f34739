//! SyncGroup: the leader hands out assignments; every member gets its own.

use sluice_metadata::acls::Operation;

use crate::access;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::KafkaContext;

/// Answer a SyncGroup request (followers wait for the leader's assignment).
pub async fn handle(context: &KafkaContext, request: SyncGroupRequest) -> SyncGroupResponse {
    if let Err(denied) = access::group(Operation::Read, &request.group_id.0) {
        return SyncGroupResponse::default().with_error_code(denied.kind().kafka_error_code());
    }
    let assignments = request
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
        .collect();
    let instance_id = request.group_instance_id.as_ref().map(|id| id.to_string());
    let synced = context
        .groups
        .sync(
            &request.group_id.0,
            request.generation_id,
            &request.member_id,
            instance_id.as_deref(),
            assignments,
        )
        .await;
    SyncGroupResponse::default()
        .with_error_code(synced.error.map_or(0, |e| e.code()))
        .with_protocol_type(synced.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(synced.protocol_name.map(StrBytes::from_string))
        .with_assignment(synced.assignment.into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::{GroupId, JoinGroupResponse};

    use super::*;
    use crate::kafka::join_group;
    use crate::kafka::testing::{self, heartbeat, join_request, text, TestNode};

    /// Join group `g` (v3: a new member joins at once).
    async fn join(context: &KafkaContext, member_id: &str) -> JoinGroupResponse {
        testing::join(context, join_request("g", member_id)).await
    }

    fn sync_request(generation: i32, member_id: &str, given: &[(&str, &[u8])]) -> SyncGroupRequest {
        SyncGroupRequest::default()
            .with_group_id(GroupId(text("g")))
            .with_generation_id(generation)
            .with_member_id(text(member_id))
            .with_assignments(
                given
                    .iter()
                    .map(|(member, assignment)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(text(member))
                            .with_assignment(Bytes::copy_from_slice(assignment))
                    })
                    .collect(),
            )
    }

    /// Join group `g` as a new member in a spawned task (it waits for the
    /// rebalance), and wait until `member` is told of the rebalance.
    async fn another_joins(
        node: &TestNode,
        member: &str,
    ) -> tokio::task::JoinHandle<JoinGroupResponse> {
        let context = node.context.clone();
        let joining = tokio::spawn(async move { join(&context, "").await });
        for _ in 0..400 {
            let code = heartbeat(&node.context, "g", 1, member).await;
            if code == ResponseError::RebalanceInProgress.code() {
                return joining;
            }
            assert_eq!(code, 0);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the rebalance did not start");
    }

    /// Members of group `g` in generation 2, both joined and awaiting their
    /// assignments: (leader, follower).
    async fn two_members(node: &TestNode) -> (String, String) {
        let first = join(&node.context, "").await;
        assert_eq!((first.error_code, first.generation_id), (0, 1));
        let leader = first.member_id.to_string();
        let alone = handle(&node.context, sync_request(1, &leader, &[])).await;
        assert_eq!(alone.error_code, 0);
        let joining = another_joins(node, &leader).await;
        let rejoined = join(&node.context, &leader).await;
        let follower = joining.await.unwrap();
        assert_eq!(
            (rejoined.generation_id, follower.generation_id),
            (2, 2),
            "{rejoined:?} {follower:?}"
        );
        assert_eq!(follower.leader.as_str(), leader);
        (leader, follower.member_id.to_string())
    }

    #[tokio::test]
    async fn the_leader_hands_out_assignments_and_each_member_gets_its_own() {
        let node = TestNode::start().await;
        let (leader, follower) = two_members(&node).await;
        // the follower waits for the leader's assignment
        let context = node.context.clone();
        let waiting = {
            let follower = follower.clone();
            tokio::spawn(async move { handle(&context, sync_request(2, &follower, &[])).await })
        };
        let given: [(&str, &[u8]); 2] = [(&leader, b"p0"), (&follower, b"p1")];
        let led = handle(&node.context, sync_request(2, &leader, &given)).await;
        let followed = waiting.await.unwrap();
        assert_eq!((led.error_code, followed.error_code), (0, 0));
        assert_eq!(led.assignment.as_ref(), b"p0");
        assert_eq!(followed.assignment.as_ref(), b"p1");
        for synced in [&led, &followed] {
            assert_eq!(synced.protocol_type.as_deref(), Some("consumer"));
            assert_eq!(synced.protocol_name.as_deref(), Some("range"));
        }
        // once stable, a repeated SyncGroup answers the same assignment at once
        let again = handle(&node.context, sync_request(2, &follower, &[])).await;
        assert_eq!(
            (again.error_code, again.assignment.as_ref()),
            (0, &b"p1"[..])
        );
    }

    #[tokio::test]
    async fn unknown_members_stale_generations_and_bad_groups_are_refused() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        // nobody is in a group that was never joined
        let empty = handle(ctx, sync_request(0, "ghost", &[])).await;
        assert_eq!(empty.error_code, ResponseError::UnknownMemberId.code());

        let joined = join(ctx, "").await;
        let member = joined.member_id.to_string();
        let unknown = handle(ctx, sync_request(1, "ghost", &[])).await;
        assert_eq!(unknown.error_code, ResponseError::UnknownMemberId.code());
        assert!(unknown.assignment.is_empty());
        for stale in [0, 2] {
            let r = handle(ctx, sync_request(stale, &member, &[(&member, b"p0")])).await;
            assert_eq!(
                r.error_code,
                ResponseError::IllegalGeneration.code(),
                "{stale}"
            );
        }
        for group in ["", "a/b"] {
            let r = sync_request(1, &member, &[]).with_group_id(GroupId(text(group)));
            assert_eq!(
                handle(ctx, r).await.error_code,
                ResponseError::InvalidGroupId.code()
            );
        }
        testing::claim_for(ctx, "theirs", 2).await;
        let r = sync_request(1, &member, &[]).with_group_id(GroupId(text("theirs")));
        assert_eq!(
            handle(ctx, r).await.error_code,
            ResponseError::NotCoordinator.code()
        );
        // the refusals left the generation to sync
        let synced = handle(ctx, sync_request(1, &member, &[(&member, b"p0")])).await;
        assert_eq!(
            (synced.error_code, synced.assignment.as_ref()),
            (0, &b"p0"[..])
        );
    }

    #[tokio::test]
    async fn a_static_member_id_is_fenced_by_another_instance_claim() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        let r = join_request("g", "").with_group_instance_id(Some(text("instance-1")));
        let joined = join_group::handle(ctx, 3, "client", r).await;
        assert_eq!(joined.error_code, 0);
        let impostor =
            sync_request(1, "someone-else", &[]).with_group_instance_id(Some(text("instance-1")));
        assert_eq!(
            handle(ctx, impostor).await.error_code,
            ResponseError::FencedInstanceId.code()
        );
        let owner = sync_request(1, &joined.member_id, &[(&joined.member_id, b"p0")])
            .with_group_instance_id(Some(text("instance-1")));
        assert_eq!(handle(ctx, owner).await.error_code, 0);
    }

    #[tokio::test]
    async fn syncing_during_a_rebalance_is_told_to_rejoin() {
        let node = TestNode::start().await;
        let (leader, follower) = two_members(&node).await;
        // the follower waits for an assignment when a third member joins
        let context = node.context.clone();
        let waiting = {
            let follower = follower.clone();
            tokio::spawn(async move { handle(&context, sync_request(2, &follower, &[])).await })
        };
        let context = node.context.clone();
        let _third = tokio::spawn(async move { join(&context, "").await });
        let told = waiting.await.unwrap();
        assert_eq!(told.error_code, ResponseError::RebalanceInProgress.code());
        assert!(told.assignment.is_empty());
        // the leader's assignment of generation 2 comes too late
        let late = handle(&node.context, sync_request(2, &leader, &[(&leader, b"p0")])).await;
        assert_eq!(late.error_code, ResponseError::RebalanceInProgress.code());
    }
}
