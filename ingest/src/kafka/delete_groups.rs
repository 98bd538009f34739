//! DeleteGroups: remove empty groups with their committed offsets.

use sluice_metadata::acls::Operation;

use crate::access;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::KafkaContext;

/// Answer a DeleteGroups request.
pub async fn handle(context: &KafkaContext, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let code = match access::group(Operation::Delete, &group_id.0) {
            Err(denied) => denied.kind().kafka_error_code(),
            Ok(()) => context
                .groups
                .delete(&group_id.0)
                .await
                .err()
                .map_or(0, |e| e.code()),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::GroupId;

    use super::*;
    use crate::kafka::testing::{self, join_request, record, stable_member, text, TestNode};
    use crate::kafka::KafkaContext;

    /// Commit orders/0 = 5 to `group` as a consumer outside the group.
    async fn commit(context: &KafkaContext, group: &str) {
        context
            .groups
            .commit_offsets(group, -1, "", None, vec![("orders".into(), 0, record(5))])
            .await
            .unwrap();
    }

    /// A member alone in `group`, stable in generation 1.
    async fn member(context: &KafkaContext, group: &str) -> String {
        stable_member(context, join_request(group, "")).await
    }

    fn deleting(groups: &[&str]) -> DeleteGroupsRequest {
        DeleteGroupsRequest::default()
            .with_groups_names(groups.iter().map(|g| GroupId(text(g))).collect())
    }

    /// (group, error code) per result.
    fn results(response: &DeleteGroupsResponse) -> Vec<(String, i16)> {
        response
            .results
            .iter()
            .map(|r| (r.group_id.0.to_string(), r.error_code))
            .collect()
    }

    #[tokio::test]
    async fn an_empty_group_goes_with_its_offsets() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        commit(ctx, "idle").await;
        let response = handle(ctx, deleting(&["idle"])).await;
        assert_eq!(results(&response), vec![("idle".to_string(), 0)]);
        assert!(ctx.groups.fetch_offsets("idle").await.unwrap().is_empty());
        assert!(ctx.catalog.list_groups().await.unwrap().is_empty());
        // it is gone: deleting it again finds nothing
        let response = handle(ctx, deleting(&["idle"])).await;
        assert_eq!(
            results(&response),
            vec![("idle".to_string(), ResponseError::GroupIdNotFound.code())]
        );
    }

    #[tokio::test]
    async fn a_group_whose_members_left_can_be_deleted() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        commit(ctx, "g").await;
        let member = member(ctx, "g").await;
        let left = ctx.groups.leave("g", vec![(member, None)]).await.unwrap();
        assert_eq!(left, vec![Ok(())]);
        let response = handle(ctx, deleting(&["g"])).await;
        assert_eq!(results(&response), vec![("g".to_string(), 0)]);
        assert_eq!(ctx.catalog.load_group("g").await.unwrap(), None);
        assert!(ctx.groups.fetch_offsets("g").await.unwrap().is_empty());
        // what is left is a group never seen
        assert_eq!(ctx.groups.describe("g").await.unwrap().state, "Dead");
    }

    #[tokio::test]
    async fn busy_unknown_invalid_and_foreign_groups_fail_alone() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        let member = member(ctx, "busy").await;
        commit(ctx, "idle").await;
        testing::claim_for(ctx, "theirs", 2).await;
        let response = handle(
            ctx,
            deleting(&["busy", "never", "", "theirs", "a/b", "idle"]),
        )
        .await;
        assert_eq!(
            results(&response),
            vec![
                ("busy".to_string(), ResponseError::NonEmptyGroup.code()),
                ("never".to_string(), ResponseError::GroupIdNotFound.code()),
                (String::new(), ResponseError::InvalidGroupId.code()),
                ("theirs".to_string(), ResponseError::NotCoordinator.code()),
                ("a/b".to_string(), ResponseError::InvalidGroupId.code()),
                ("idle".to_string(), 0),
            ]
        );
        // the busy group is untouched
        let busy = ctx.groups.describe("busy").await.unwrap();
        assert_eq!(busy.state, "Stable");
        assert_eq!(busy.members[0].member_id, member);
        assert!(ctx.catalog.load_group("busy").await.unwrap().is_some());
    }
}
