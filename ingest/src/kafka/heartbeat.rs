//! Heartbeat: keeps a member's session alive and tells it to rejoin when a
//! rebalance started.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::KafkaContext;

/// Answer a Heartbeat request.
pub async fn handle(context: &KafkaContext, request: HeartbeatRequest) -> HeartbeatResponse {
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
