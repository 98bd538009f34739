//! FindCoordinator: the node coordinating a consumer group, claimed for
//! this node through the metadata store when no live node holds it.

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
