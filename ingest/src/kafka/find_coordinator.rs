//! FindCoordinator: the node coordinating a consumer group, claimed for
//! this node through the metadata store when no live node holds it.

use sluice_metadata::acls::Operation;

use crate::access;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::KafkaContext;

/// `key_type` of a consumer group (1 is a transactional id).
const KEY_TYPE_GROUP: i8 = 0;

async fn find(context: &KafkaContext, key: &str, key_type: i8) -> Coordinator {
    let coordinator = Coordinator::default().with_key(StrBytes::from_string(key.to_string()));
    if key_type != KEY_TYPE_GROUP {
        return coordinator
            .with_error_code(ResponseError::CoordinatorNotAvailable.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "transactions are not supported",
            )))
            .with_node_id(BrokerId(-1));
    }
    if let Err(denied) = access::group(Operation::Describe, key) {
        return coordinator
            .with_error_code(denied.kind().kafka_error_code())
            .with_node_id(BrokerId(-1));
    }
    let error = match context.groups.find_coordinator(key).await {
        Ok(node_id) => match context.broker(node_id) {
            Some(node) => {
                return coordinator
                    .with_node_id(BrokerId(node.node_id))
                    .with_host(StrBytes::from_string(node.kafka_host))
                    .with_port(node.kafka_port)
            }
            // claimed by a node this one does not see yet
            None => ResponseError::CoordinatorNotAvailable.code(),
        },
        Err(error) => error.code(),
    };
    coordinator
        .with_error_code(error)
        .with_node_id(BrokerId(-1))
}

/// Answer a FindCoordinator request (one key before v4, a batch from v4).
pub async fn handle(
    context: &KafkaContext,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let mut coordinators = Vec::with_capacity(request.coordinator_keys.len());
        for key in &request.coordinator_keys {
            coordinators.push(find(context, key, request.key_type).await);
        }
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let found = find(context, &request.key, request.key_type).await;
    FindCoordinatorResponse::default()
        .with_error_code(found.error_code)
        .with_error_message(found.error_message)
        .with_node_id(found.node_id)
        .with_host(found.host)
        .with_port(found.port)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use sluice_metadata::membership::{NodeInfo, Role};

    use super::*;
    use crate::kafka::testing::{claim_for, text, TestNode, NODE_ID};

    /// Transactional id, the other key type.
    const KEY_TYPE_TRANSACTION: i8 = 1;

    fn key(name: &str) -> StrBytes {
        text(name)
    }

    fn one(name: &str) -> FindCoordinatorRequest {
        FindCoordinatorRequest::default().with_key(key(name))
    }

    fn batch(names: &[&str]) -> FindCoordinatorRequest {
        FindCoordinatorRequest::default()
            .with_coordinator_keys(names.iter().map(|n| key(n)).collect())
    }

    /// Claim `group` for node `node_id`, on a lease of that node's own.
    async fn claimed_by(node: &TestNode, group: &str, node_id: i32) {
        let holder = claim_for(&node.context, group, node_id).await;
        assert_eq!(holder, node_id);
    }

    #[tokio::test]
    async fn a_free_group_is_claimed_by_this_node_one_key_or_a_batch() {
        let node = TestNode::start().await;
        let response = handle(&node.context, 3, one("orders-app")).await;
        assert_eq!(response.error_code, 0);
        assert_eq!(
            response.error_message.as_ref().map_or("", |m| m.as_str()),
            ""
        );
        assert_eq!(response.node_id.0, NODE_ID);
        assert_eq!(response.host.as_str(), "127.0.0.1");
        assert_eq!(response.port, 9092);
        // the claim holds: the coordinator now answers for the group
        assert_eq!(
            node.context
                .catalog
                .coordinator("orders-app")
                .await
                .unwrap(),
            Some(NODE_ID)
        );

        let response = handle(&node.context, 4, batch(&["orders-app", "audit"])).await;
        assert_eq!(response.coordinators.len(), 2);
        for (coordinator, name) in response.coordinators.iter().zip(["orders-app", "audit"]) {
            assert_eq!(coordinator.key.as_str(), name);
            assert_eq!(coordinator.error_code, 0);
            assert_eq!(coordinator.node_id.0, NODE_ID);
            assert_eq!(coordinator.host.as_str(), "127.0.0.1");
            assert_eq!(coordinator.port, 9092);
        }
    }

    #[tokio::test]
    async fn a_group_held_by_another_node_is_answered_with_that_node_once_it_is_seen() {
        let node = TestNode::start().await;
        claimed_by(&node, "elsewhere", 2).await;
        // node 2 holds the group but this node does not know where it listens
        let response = handle(&node.context, 3, one("elsewhere")).await;
        assert_eq!(
            response.error_code,
            ResponseError::CoordinatorNotAvailable.code()
        );
        assert_eq!(response.node_id.0, -1);

        node.context.view.upsert_node(NodeInfo {
            node_id: 2,
            kafka_host: "10.0.0.2".into(),
            kafka_port: 9093,
            http_url: "http://10.0.0.2:8080".into(),
            roles: vec![Role::Ingest, Role::Fetch],
            zone: None,
            listeners: Default::default(),
        });
        let response = handle(&node.context, 4, batch(&["elsewhere", "here"])).await;
        let [elsewhere, here] = &response.coordinators[..] else {
            panic!("two coordinators expected: {response:?}");
        };
        assert_eq!(
            (elsewhere.error_code, elsewhere.node_id.0),
            (0, 2),
            "{elsewhere:?}"
        );
        assert_eq!(
            (elsewhere.host.as_str(), elsewhere.port),
            ("10.0.0.2", 9093)
        );
        assert_eq!((here.error_code, here.node_id.0), (0, NODE_ID));
    }

    #[tokio::test]
    async fn transactional_ids_are_not_coordinated() {
        let node = TestNode::start().await;
        let response = handle(
            &node.context,
            3,
            one("tx-1").with_key_type(KEY_TYPE_TRANSACTION),
        )
        .await;
        assert_eq!(
            response.error_code,
            ResponseError::CoordinatorNotAvailable.code()
        );
        assert!(response.error_message.is_some());
        assert_eq!(response.node_id.0, -1);
        // nothing was claimed under that name
        assert_eq!(
            node.context.catalog.coordinator("tx-1").await.unwrap(),
            None
        );

        let response = handle(
            &node.context,
            4,
            batch(&["tx-1", "tx-2"]).with_key_type(KEY_TYPE_TRANSACTION),
        )
        .await;
        assert_eq!(response.coordinators.len(), 2);
        assert!(response.coordinators.iter().all(|c| c.error_code
            == ResponseError::CoordinatorNotAvailable.code()
            && c.node_id.0 == -1));
    }

    #[tokio::test]
    async fn invalid_group_ids_fail_alone() {
        let node = TestNode::start().await;
        for invalid in ["", "a/b"] {
            let response = handle(&node.context, 3, one(invalid)).await;
            assert_eq!(
                response.error_code,
                ResponseError::InvalidGroupId.code(),
                "{invalid:?}"
            );
            assert_eq!(response.node_id.0, -1);
        }
        let too_long = "g".repeat(256);
        let response = handle(&node.context, 4, batch(&["ok", &too_long, "a/b"])).await;
        let codes: Vec<i16> = response.coordinators.iter().map(|c| c.error_code).collect();
        assert_eq!(
            codes,
            vec![
                0,
                ResponseError::InvalidGroupId.code(),
                ResponseError::InvalidGroupId.code()
            ]
        );
        assert_eq!(response.coordinators[0].node_id.0, NODE_ID);
        assert_eq!(response.coordinators[2].key.as_str(), "a/b");
    }
}
