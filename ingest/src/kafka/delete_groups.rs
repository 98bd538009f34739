//! DeleteGroups: remove empty groups with their committed offsets.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::KafkaContext;

/// Answer a DeleteGroups request.
pub async fn handle(context: &KafkaContext, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let error = context.groups.delete(&group_id.0).await.err();
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(error.map_or(0, |e| e.code())),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
