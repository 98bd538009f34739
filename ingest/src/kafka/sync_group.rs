//! SyncGroup: the leader hands out assignments; every member gets its own.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::KafkaContext;

/// Answer a SyncGroup request (followers wait for the leader's assignment).
pub async fn handle(context: &KafkaContext, request: SyncGroupRequest) -> SyncGroupResponse {
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
