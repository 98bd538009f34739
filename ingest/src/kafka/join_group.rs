//! JoinGroup: enter (or re-enter) a consumer group's rebalance.

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
    let joined = context.groups.join(join).await;
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
        .with_members(members)
}
