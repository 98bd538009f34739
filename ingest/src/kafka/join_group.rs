//! JoinGroup: enter (or re-enter) a consumer group's rebalance.

use sluice_metadata::acls::Operation;

use crate::access;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::KafkaContext;
use crate::group::JoinRequest;

/// Answer a JoinGroup request (waits for the rebalance to complete).
pub async fn handle(
    context: &KafkaContext,
    version: i16,
    client_id: &str,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    if let Err(denied) = access::group(Operation::Read, &request.group_id.0) {
        return JoinGroupResponse::default()
            .with_error_code(denied.kind().kafka_error_code())
            .with_generation_id(-1);
    }
    let join = JoinRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|id| id.to_string()),
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.to_vec()))
            .collect(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: the session timeout serves as both
        rebalance_timeout_ms: if version == 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        },
        client_id: client_id.to_string(),
        client_host: super::CLIENT_HOST.to_string(),
        require_known_member_id: version >= 4,
    };
    let mut joined = context.groups.join(join).await;
    if joined.skip_assignment && version < 9 {
        // a static leader came back to a stable group, and the client
        // cannot be told not to assign: as Kafka, it is answered as a
        // follower (its old id as leader, no members), and SyncGroup hands
        // it the assignment it had
        joined.skip_assignment = false;
        joined.members.clear();
        joined.leader = joined.replaced_member_id.take().unwrap_or_default();
    }
    let error_code = joined.error.map_or(0, |e| e.code());
    let members = joined
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(m.member_id))
                .with_group_instance_id(m.instance_id.map(StrBytes::from_string))
                .with_metadata(m.metadata.into())
        })
        .collect();
    // before v7 the protocol name is a non-nullable string
    let protocol_name = joined
        .protocol_name
        .or_else(|| (version < 7).then(String::new))
        .map(StrBytes::from_string);
    JoinGroupResponse::default()
        .with_error_code(error_code)
        .with_generation_id(joined.generation)
        .with_protocol_type(joined.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(protocol_name)
        .with_leader(StrBytes::from_string(joined.leader))
        .with_member_id(StrBytes::from_string(joined.member_id))
        .with_skip_assignment(joined.skip_assignment)
        .with_members(members)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::error::ResponseError;

    use super::*;
    use crate::kafka::testing::{self, heartbeat, join_request, protocol, sync, text, TestNode};

    /// A consumer's JoinGroup: `range` preferred over `roundrobin`, 10 s timeouts.
    fn request(group: &str, member_id: &str) -> JoinGroupRequest {
        join_request(group, member_id).with_protocols(vec![
            protocol("range", b"sub-range"),
            protocol("roundrobin", b"sub-rr"),
        ])
    }

    /// Join `group` as a new member at v3 (no MEMBER_ID_REQUIRED round trip).
    async fn join_v3(context: &KafkaContext, group: &str, client: &str) -> JoinGroupResponse {
        handle(context, 3, client, request(group, "")).await
    }

    #[tokio::test]
    async fn a_new_member_is_handed_an_id_then_leads_generation_one() {
        let node = TestNode::start().await;
        let first = handle(&node.context, 9, "client", request("g", "")).await;
        assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
        assert_eq!(first.generation_id, -1);
        assert!(first.member_id.starts_with("client-"), "{first:?}");
        assert!(first.members.is_empty());

        let joined = handle(&node.context, 9, "client", request("g", &first.member_id)).await;
        assert_eq!(joined.error_code, 0, "{joined:?}");
        assert_eq!(joined.generation_id, 1);
        assert_eq!(joined.member_id, first.member_id);
        assert_eq!(joined.leader, first.member_id);
        assert_eq!(joined.protocol_type.as_deref(), Some("consumer"));
        assert_eq!(joined.protocol_name.as_deref(), Some("range"));
        assert_eq!(joined.members.len(), 1);
        assert_eq!(joined.members[0].member_id, first.member_id);
        assert_eq!(joined.members[0].group_instance_id, None);
        assert_eq!(joined.members[0].metadata.as_ref(), b"sub-range");
    }

    #[tokio::test]
    async fn before_v4_a_new_member_joins_without_a_round_trip() {
        let node = TestNode::start().await;
        let joined = join_v3(&node.context, "g", "legacy").await;
        assert_eq!(joined.error_code, 0, "{joined:?}");
        assert_eq!(joined.generation_id, 1);
        assert!(joined.member_id.starts_with("legacy-"));
        assert_eq!(joined.leader, joined.member_id);
        assert_eq!(joined.protocol_name.as_deref(), Some("range"));

        // v0 has no rebalance timeout: the session timeout stands in for it
        let v0 = request("g0", "").with_rebalance_timeout_ms(-1);
        let joined = handle(&node.context, 0, "ancient", v0).await;
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        assert_eq!(joined.leader, joined.member_id);
    }

    #[tokio::test]
    async fn a_second_member_rebalances_the_group_into_the_next_generation() {
        let node = TestNode::start().await;
        let first = join_v3(&node.context, "g", "a").await;
        assert_eq!((first.error_code, first.generation_id), (0, 1));
        let a = first.member_id.to_string();
        sync(&node.context, "g", 1, &a).await;

        let context = node.context.clone();
        let second = tokio::spawn(async move {
            let metadata = request("g", "").with_protocols(vec![protocol("range", b"sub-b")]);
            handle(&context, 3, "b", metadata).await
        });
        // the leader learns of the rebalance through its heartbeat
        let code = testing::eventually(|| heartbeat(&node.context, "g", 1, &a), |c| *c != 0).await;
        assert_eq!(code, ResponseError::RebalanceInProgress.code());

        let rejoined = handle(&node.context, 3, "a", request("g", &a)).await;
        let second = second.await.unwrap();
        assert_eq!((rejoined.error_code, second.error_code), (0, 0));
        assert_eq!((rejoined.generation_id, second.generation_id), (2, 2));
        assert_eq!(rejoined.leader.as_str(), a);
        assert_eq!(second.leader.as_str(), a);
        assert_ne!(second.member_id.as_str(), a);
        // only the leader sees the members, in join order, with the metadata
        // of the chosen protocol
        let members: Vec<(String, Vec<u8>)> = rejoined
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), m.metadata.to_vec()))
            .collect();
        assert_eq!(
            members,
            vec![
                (a.clone(), b"sub-range".to_vec()),
                (second.member_id.to_string(), b"sub-b".to_vec())
            ]
        );
        assert!(second.members.is_empty());
        assert_eq!(second.protocol_name.as_deref(), Some("range"));
    }

    #[tokio::test]
    async fn bad_requests_are_refused_with_their_error_codes() {
        let node = TestNode::start().await;
        let code = |r: &JoinGroupResponse| (r.error_code, r.generation_id);
        let ctx = &node.context;

        let unknown = handle(ctx, 9, "c", request("g", "ghost")).await;
        assert_eq!(code(&unknown), (ResponseError::UnknownMemberId.code(), -1));
        assert_eq!(unknown.member_id.as_str(), "ghost");
        for session_timeout_ms in [500, 3_600_000] {
            let r = request("g", "").with_session_timeout_ms(session_timeout_ms);
            assert_eq!(
                code(&handle(ctx, 9, "c", r).await),
                (ResponseError::InvalidSessionTimeout.code(), -1),
                "{session_timeout_ms}"
            );
        }
        let no_protocols = request("g", "").with_protocols(vec![]);
        let no_type = request("g", "").with_protocol_type(text(""));
        for r in [no_protocols, no_type] {
            assert_eq!(
                code(&handle(ctx, 9, "c", r).await),
                (ResponseError::InconsistentGroupProtocol.code(), -1)
            );
        }
        for group in ["", "a/b"] {
            assert_eq!(
                code(&handle(ctx, 9, "c", request(group, "")).await),
                (ResponseError::InvalidGroupId.code(), -1),
                "{group:?}"
            );
        }
        // a group coordinated by another node
        testing::claim_for(ctx, "theirs", 2).await;
        assert_eq!(
            code(&handle(ctx, 9, "c", request("theirs", "")).await),
            (ResponseError::NotCoordinator.code(), -1)
        );
        // a failed answer still has a protocol name before v7, none from v7
        let old = handle(ctx, 6, "c", request("g", "ghost")).await;
        assert_eq!(old.protocol_name.as_deref(), Some(""));
        assert_eq!(unknown.protocol_name, None);
    }

    #[tokio::test]
    async fn joiners_must_match_the_group_protocols_and_static_identity() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        let r = request("g", "").with_group_instance_id(Some(text("instance-1")));
        let joined = handle(ctx, 3, "a", r).await;
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        assert_eq!(
            joined.members[0].group_instance_id.as_deref(),
            Some("instance-1")
        );

        let other_type = request("g", "").with_protocol_type(text("connect"));
        let nothing_shared =
            request("g", "").with_protocols(vec![protocol("sticky", b"sub-sticky")]);
        for r in [other_type, nothing_shared] {
            let refused = handle(ctx, 3, "b", r).await;
            assert_eq!(
                refused.error_code,
                ResponseError::InconsistentGroupProtocol.code()
            );
        }
        // the member id is bound to its instance id
        let impostor =
            request("g", &joined.member_id).with_group_instance_id(Some(text("instance-2")));
        let fenced = handle(ctx, 3, "a", impostor).await;
        assert_eq!(fenced.error_code, ResponseError::FencedInstanceId.code());
        // none of that disturbed the generation
        assert_eq!(heartbeat(ctx, "g", 1, &joined.member_id).await, 0);
    }

    #[tokio::test]
    async fn a_static_leader_back_before_version_nine_is_answered_as_a_follower() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        let r = request("g", "").with_group_instance_id(Some(text("instance-1")));
        let joined = handle(ctx, 5, "a", r.clone()).await;
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        assert_eq!(joined.leader, joined.member_id);
        sync(ctx, "g", 1, &joined.member_id).await;
        for version in [5, 9] {
            let back = handle(ctx, version, "a", r.clone()).await;
            assert_eq!((back.error_code, back.generation_id), (0, 1));
            assert_ne!(back.member_id, joined.member_id);
            // it encodes at the version asked
            crate::kafka::encode_response(
                kafka_protocol::messages::ApiKey::JoinGroup,
                version,
                1,
                &back,
            )
            .unwrap();
            if version < 9 {
                assert_ne!(
                    back.leader, back.member_id,
                    "told it leads but not to assign"
                );
                assert!(back.members.is_empty());
            } else {
                assert_eq!(back.leader, back.member_id);
                assert!(back.skip_assignment);
                assert_eq!(back.members.len(), 1);
            }
            // its old assignment comes back without a rebalance
            assert_eq!(heartbeat(ctx, "g", 1, &back.member_id).await, 0);
        }
    }
}
