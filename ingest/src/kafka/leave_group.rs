//! LeaveGroup: members leave at once instead of waiting for their session
//! to time out (one member before v3, a batch by id or instance id from v3).

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::KafkaContext;

/// Answer a LeaveGroup request.
pub async fn handle(
    context: &KafkaContext,
    version: i16,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
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
