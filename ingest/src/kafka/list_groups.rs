//! ListGroups: the groups this node coordinates (clients ask every broker
//! and merge), plus, on the lowest-numbered live node, groups that no node
//! coordinates right now.

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
    let listed = groups
        .into_iter()
        .filter(|(_, _, state)| filter.is_empty() || filter.contains(&state.to_lowercase()))
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
