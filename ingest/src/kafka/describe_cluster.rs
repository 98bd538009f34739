//! DescribeCluster: the cluster id, the live nodes as brokers and the
//! lowest live node id as controller (this node alone while no node is
//! registered yet).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::KafkaContext;

/// `endpoint_type` of broker endpoints.
const ENDPOINT_BROKERS: i8 = 1;

/// (id, host, port, rack) of one broker.
type Broker = (i32, String, i32, Option<String>);

/// The live brokers by id; this node when none is registered.
pub fn brokers(context: &KafkaContext) -> Vec<Broker> {
    let mut brokers: Vec<Broker> = context
        .view
        .brokers()
        .into_iter()
        .map(|node| (node.node_id, node.kafka_host, node.kafka_port, node.zone))
        .collect();
    if brokers.is_empty() {
        brokers.push((
            context.node_id,
            context.advertised_host.clone(),
            context.advertised_port,
            None,
        ));
    }
    brokers.sort_by_key(|broker| broker.0);
    brokers
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
}
