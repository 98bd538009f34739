//! DescribeCluster: the cluster id, the live nodes as brokers and the
//! lowest live node id as controller (this node alone while no node is
//! registered yet).

use sluice_metadata::acls::Operation;

use crate::access;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::{authorized, KafkaContext};

/// `endpoint_type` of broker endpoints.
const ENDPOINT_BROKERS: i8 = 1;

/// (id, host, port, rack) of one broker.
type Broker = (i32, String, i32, Option<String>);

/// The live brokers by id, this node always among them (the same list
/// Metadata answers, [`KafkaContext::brokers`]).
pub fn brokers(context: &KafkaContext) -> Vec<Broker> {
    context
        .brokers()
        .into_iter()
        .map(|node| (node.node_id, node.kafka_host, node.kafka_port, node.zone))
        .collect()
}

/// Answer a DescribeCluster request.
pub fn handle(context: &KafkaContext, request: DescribeClusterRequest) -> DescribeClusterResponse {
    // v1+ may ask for the controllers' endpoints (KRaft); sluice has no
    // separate controller endpoints, so only brokers (1) are served
    if request.endpoint_type != ENDPOINT_BROKERS {
        return DescribeClusterResponse::default()
            .with_endpoint_type(request.endpoint_type)
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "only the brokers endpoint type (1) is served",
            )));
    }
    if let Err(denied) = access::cluster(Operation::Describe) {
        return DescribeClusterResponse::default()
            .with_endpoint_type(request.endpoint_type)
            .with_error_code(denied.kind().kafka_error_code())
            .with_error_message(Some(StrBytes::from_string(denied.to_string())));
    }
    let brokers = brokers(context);
    let controller = brokers.first().map_or(context.node_id, |broker| broker.0);
    let brokers = brokers
        .into_iter()
        .map(|(id, host, port, rack)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
                .with_rack(rack.map(StrBytes::from_string))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(StrBytes::from_string(context.cluster_id.clone()))
        .with_controller_id(BrokerId(controller))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(authorized::when_asked(
            request.include_cluster_authorized_operations,
            authorized::cluster,
        ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use sluice_metadata::membership::{NodeInfo, Role};

    use super::*;
    use crate::kafka::testing::{TestNode, NODE_ID};

    fn info(node_id: i32, port: i32, roles: Vec<Role>, zone: Option<&str>) -> NodeInfo {
        NodeInfo {
            node_id,
            kafka_host: format!("node-{node_id}"),
            kafka_port: port,
            http_url: format!("http://node-{node_id}:8080"),
            roles,
            zone: zone.map(str::to_string),
            listeners: Default::default(),
        }
    }

    #[tokio::test]
    async fn answers_the_cluster_id_and_this_node_as_broker_and_controller() {
        let node = TestNode::start().await;
        let response = handle(&node.context, DescribeClusterRequest::default());
        assert_eq!(response.error_code, 0);
        assert_eq!(response.error_message, None);
        assert_eq!(response.endpoint_type, ENDPOINT_BROKERS);
        assert!(!node.context.cluster_id.is_empty());
        assert_eq!(response.cluster_id.as_str(), node.context.cluster_id);
        assert_eq!(response.controller_id.0, NODE_ID);
        assert_eq!(response.brokers.len(), 1);
        let broker = &response.brokers[0];
        assert_eq!(broker.broker_id.0, NODE_ID);
        assert_eq!(broker.host.as_str(), "127.0.0.1");
        assert_eq!(broker.port, 9092);
        assert_eq!(broker.rack, None);
    }

    #[tokio::test]
    async fn brokers_are_the_client_serving_nodes_by_id_and_the_lowest_controls() {
        let node = TestNode::start().await;
        let view = &node.context.view;
        view.upsert_node(info(5, 19095, vec![Role::Fetch], Some("zone-b")));
        view.upsert_node(info(0, 19090, vec![Role::Ingest], Some("zone-a")));
        // a compactor serves no clients: not a broker, not a controller
        view.upsert_node(info(-3, 19093, vec![Role::Compactor], None));

        let response = handle(&node.context, DescribeClusterRequest::default());
        assert_eq!(response.error_code, 0);
        let ids: Vec<i32> = response.brokers.iter().map(|b| b.broker_id.0).collect();
        assert_eq!(ids, vec![0, NODE_ID, 5]);
        assert_eq!(response.controller_id.0, 0);
        let first = &response.brokers[0];
        assert_eq!(first.host.as_str(), "node-0");
        assert_eq!(first.port, 19090);
        assert_eq!(first.rack.as_ref().map(|r| r.as_str()), Some("zone-a"));
        assert_eq!(
            response.brokers[2].rack.as_ref().map(|r| r.as_str()),
            Some("zone-b")
        );
    }

    #[tokio::test]
    async fn only_the_brokers_endpoint_type_is_served() {
        let node = TestNode::start().await;
        for endpoint_type in [0, 2, -1] {
            let response = handle(
                &node.context,
                DescribeClusterRequest::default().with_endpoint_type(endpoint_type),
            );
            assert_eq!(
                response.error_code,
                ResponseError::UnsupportedEndpointType.code(),
                "endpoint type {endpoint_type}"
            );
            assert!(response.error_message.is_some());
            assert_eq!(response.endpoint_type, endpoint_type);
            assert!(response.brokers.is_empty());
        }
    }
}
