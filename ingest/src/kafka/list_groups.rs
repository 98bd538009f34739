//! ListGroups: the groups this node coordinates (clients ask every broker
//! and merge), plus, on the lowest-numbered live node, groups that no node
//! coordinates right now.

use sluice_metadata::acls::Operation;

use crate::access;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::KafkaContext;

/// Answer a ListGroups request (`states_filter` from v4).
pub async fn handle(context: &KafkaContext, request: ListGroupsRequest) -> ListGroupsResponse {
    let lowest = context
        .brokers()
        .iter()
        .map(|n| n.node_id)
        .min()
        .unwrap_or(context.node_id);
    let groups = match context.groups.list(lowest == context.node_id).await {
        Ok(groups) => groups,
        Err(error) => return ListGroupsResponse::default().with_error_code(error.code()),
    };
    let filter: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    // DESCRIBE on the cluster lists every group; else those the principal
    // may DESCRIBE
    let every_group = access::cluster(Operation::Describe).is_ok();
    let listed = groups
        .into_iter()
        .filter(|(_, _, state)| filter.is_empty() || filter.contains(&state.to_lowercase()))
        .filter(|(group, _, _)| every_group || access::group(Operation::Describe, group).is_ok())
        .map(|(group, protocol_type, state)| {
            ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(group)))
                .with_protocol_type(StrBytes::from_string(protocol_type))
                .with_group_state(StrBytes::from_static_str(state))
                .with_group_type(StrBytes::from_static_str("classic"))
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use sluice_metadata::groups::OffsetRecord;
    use sluice_metadata::membership::{NodeInfo, Role};

    use super::*;
    use crate::kafka::testing::{self, join_request, record, stable_member, text, TestNode};
    use crate::kafka::KafkaContext;

    fn offsets() -> Vec<(String, i32, OffsetRecord)> {
        vec![("orders".to_string(), 0, record(5))]
    }

    /// Group `alive`: one member, stable in generation 1; group `idle`: no
    /// members, committed offsets only.
    async fn two_groups(context: &KafkaContext) {
        stable_member(context, join_request("alive", "")).await;
        context
            .groups
            .commit_offsets("idle", -1, "", None, offsets())
            .await
            .unwrap();
    }

    /// (group, protocol type, state) of each listed group.
    fn listed(response: &ListGroupsResponse) -> Vec<(String, String, String)> {
        assert_eq!(response.error_code, 0);
        response
            .groups
            .iter()
            .map(|g| {
                assert_eq!(g.group_type.as_str(), "classic");
                (
                    g.group_id.0.to_string(),
                    g.protocol_type.to_string(),
                    g.group_state.to_string(),
                )
            })
            .collect()
    }

    fn group(id: &str, protocol_type: &str, state: &str) -> (String, String, String) {
        (id.to_string(), protocol_type.to_string(), state.to_string())
    }

    fn filtered(states: &[&str]) -> ListGroupsRequest {
        ListGroupsRequest::default().with_states_filter(states.iter().map(|s| text(s)).collect())
    }

    #[tokio::test]
    async fn the_groups_coordinated_here_are_listed_with_their_state() {
        let node = TestNode::start().await;
        let response = handle(&node.context, ListGroupsRequest::default()).await;
        assert_eq!(listed(&response), vec![]);

        two_groups(&node.context).await;
        let response = handle(&node.context, ListGroupsRequest::default()).await;
        assert_eq!(
            listed(&response),
            vec![
                group("alive", "consumer", "Stable"),
                group("idle", "", "Empty"),
            ]
        );
    }

    #[tokio::test]
    async fn the_states_filter_ignores_case() {
        let node = TestNode::start().await;
        two_groups(&node.context).await;
        let cases: [(&[&str], Vec<&str>); 4] = [
            (&["stable"], vec!["alive"]),
            (&["Empty"], vec!["idle"]),
            (&["STABLE", "empty"], vec!["alive", "idle"]),
            (&["Dead", "PreparingRebalance"], vec![]),
        ];
        for (states, expected) in cases {
            let response = handle(&node.context, filtered(states)).await;
            let ids: Vec<String> = listed(&response).into_iter().map(|g| g.0).collect();
            assert_eq!(ids, expected, "{states:?}");
        }
    }

    #[tokio::test]
    async fn other_nodes_groups_are_theirs_and_orphans_go_to_the_lowest_node() {
        let node = TestNode::start().await;
        let ctx = &node.context;
        two_groups(ctx).await;
        // a group node 2 coordinates, and one nobody coordinates
        testing::claim_for(ctx, "theirs", 2).await;
        ctx.catalog
            .commit_offsets("theirs", None, &offsets(), 16)
            .await
            .unwrap();
        ctx.catalog
            .commit_offsets("orphan", None, &offsets(), 16)
            .await
            .unwrap();
        let response = handle(ctx, ListGroupsRequest::default()).await;
        assert_eq!(
            listed(&response),
            vec![
                group("alive", "consumer", "Stable"),
                group("idle", "", "Empty"),
                group("orphan", "", "Empty"),
            ]
        );
        // a lower-numbered broker appears: it lists the orphans
        ctx.view.upsert_node(NodeInfo {
            node_id: 0,
            kafka_host: "10.0.0.1".into(),
            kafka_port: 9092,
            http_url: "http://10.0.0.1:8080".into(),
            roles: vec![Role::Ingest, Role::Fetch],
            zone: None,
            listeners: Default::default(),
        });
        let response = handle(ctx, ListGroupsRequest::default()).await;
        assert_eq!(
            listed(&response),
            vec![
                group("alive", "consumer", "Stable"),
                group("idle", "", "Empty"),
            ]
        );
    }

    #[tokio::test]
    async fn a_group_in_its_first_rebalance_is_listed_and_a_looked_at_one_is_not() {
        let node = TestNode::start().await;
        let ctx = node.context.clone();
        // a member joins and waits for the group's first rebalance to end
        let joining = tokio::spawn({
            let ctx = ctx.clone();
            async move { testing::join(&ctx, join_request("fresh", "")).await }
        });
        // a group only described: it does not exist
        let _ = ctx.groups.describe("ghost").await;
        let response = testing::eventually(
            || handle(&ctx, ListGroupsRequest::default()),
            |response| !response.groups.is_empty(),
        )
        .await;
        let listed = listed(&response);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].0, "fresh");
        assert_eq!(listed[0].1, "consumer");
        joining.await.unwrap();
    }
}
