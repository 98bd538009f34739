//! Metadata: every live node as a broker, each partition's leader chosen by
//! rendezvous hashing over the live node ids (any node accepts any write;
//! the leader only steers a partition's traffic to one node); topics
//! auto-created when the client and the node allow it.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::membership::partition_leader;
use sluice_metadata::model::Topic;

use sluice_metadata::acls::{Operation, ResourceType};

use super::{authorized, KafkaContext};
use crate::access;

/// Answer a Metadata request.
pub async fn handle(
    context: &KafkaContext,
    version: i16,
    request: MetadataRequest,
) -> MetadataResponse {
    // v0-v3 have no flag: Kafka auto-creates for them
    let client_allows = version < 4 || request.allow_auto_topic_creation;
    let create = client_allows && context.config.auto_create_topics;
    let view = &context.view;
    let live = context.brokers();
    let live_ids: Vec<i32> = live.iter().map(|n| n.node_id).collect();
    let requested = match request.topics {
        // v0 asks for every topic with an empty list, v1+ with null
        None => None,
        Some(topics) if version == 0 && topics.is_empty() => None,
        Some(topics) => Some(topics),
    };
    let mut topics = Vec::new();
    match requested {
        None => {
            // topics the principal may not DESCRIBE are not listed
            let mut all: Vec<_> = view
                .topics()
                .into_iter()
                .filter(|t| {
                    access::allowed(Operation::Describe, ResourceType::Topic, &t.record.name)
                })
                .collect();
            all.sort_by(|a, b| a.record.name.cmp(&b.record.name));
            topics.extend(all.iter().map(|topic| describe(&live_ids, topic)));
        }
        Some(requested) => {
            for wanted in requested {
                let name = match wanted.name {
                    Some(name) => name.0.to_string(),
                    None => {
                        let id = wanted.topic_id.simple().to_string();
                        match view.topic_by_id(&id) {
                            Some(topic) => topic.record.name,
                            None => {
                                topics.push(
                                    MetadataResponseTopic::default()
                                        .with_error_code(ResponseError::UnknownTopicId.code())
                                        .with_topic_id(wanted.topic_id),
                                );
                                continue;
                            }
                        }
                    }
                };
                if let Err(denied) = access::topic(Operation::Describe, &name) {
                    topics.push(
                        MetadataResponseTopic::default()
                            .with_error_code(denied.kind().kafka_error_code())
                            .with_name(Some(TopicName(StrBytes::from_string(name)))),
                    );
                    continue;
                }
                match context.topic(&name, create).await {
                    Ok(topic) => topics.push(describe(&live_ids, &topic)),
                    Err(error) => topics.push(
                        MetadataResponseTopic::default()
                            .with_error_code(error.kind().kafka_error_code())
                            .with_name(Some(TopicName(StrBytes::from_string(name)))),
                    ),
                }
            }
        }
    }
    let brokers: Vec<MetadataResponseBroker> = live
        .iter()
        .map(|node| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(node.node_id))
                .with_host(StrBytes::from_string(node.kafka_host.clone()))
                .with_port(node.kafka_port)
                .with_rack(node.zone.clone().map(StrBytes::from_string))
        })
        .collect();
    let controller = live
        .iter()
        .map(|n| n.node_id)
        .min()
        .unwrap_or(context.node_id);
    // asked for from v8 (the cluster's only up to v10)
    let asked_topic_operations = version >= 8 && request.include_topic_authorized_operations;
    for topic in &mut topics {
        if topic.error_code == 0 {
            let name = topic
                .name
                .as_ref()
                .map(|n| n.0.to_string())
                .unwrap_or_default();
            topic.topic_authorized_operations =
                authorized::when_asked(asked_topic_operations, || authorized::topic(&name));
        }
    }
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(context.cluster_id.clone())))
        .with_controller_id(BrokerId(controller))
        .with_topics(topics)
        .with_cluster_authorized_operations(authorized::when_asked(
            (8..=10).contains(&version) && request.include_cluster_authorized_operations,
            authorized::cluster,
        ))
}

fn describe(live_ids: &[i32], topic: &Topic) -> MetadataResponseTopic {
    let partitions = (0..topic.record.partitions)
        .map(|index| {
            let leader = partition_leader(live_ids, &topic.record.name, index).unwrap_or(-1);
            let node = BrokerId(leader);
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(node)
                // no leader epochs: clients skip epoch validation
                .with_leader_epoch(-1)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(
            topic.record.name.clone(),
        ))))
        .with_topic_id(uuid::Uuid::parse_str(&topic.record.id).unwrap_or_default())
        .with_partitions(partitions)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;

    use super::*;
    use crate::kafka::testing::{text, TestNode, NODE_ID};
    use crate::kafka::KafkaConfig;

    fn asking_for(names: &[&str], allow_create: bool) -> MetadataRequest {
        MetadataRequest::default()
            .with_allow_auto_topic_creation(allow_create)
            .with_topics(Some(
                names
                    .iter()
                    .map(|n| MetadataRequestTopic::default().with_name(Some(TopicName(text(n)))))
                    .collect(),
            ))
    }

    #[tokio::test]
    async fn lists_this_broker_and_every_partition_led_by_it() {
        let node = TestNode::start().await;
        node.topic("orders", 3).await;
        let everything = MetadataRequest::default().with_topics(None);
        let response = handle(&node.context, 12, everything).await;
        assert_eq!(response.brokers.len(), 1);
        assert_eq!(response.brokers[0].node_id.0, NODE_ID);
        assert_eq!(response.topics.len(), 1);
        let topic = &response.topics[0];
        assert_eq!(topic.error_code, 0);
        assert_eq!(topic.partitions.len(), 3);
        assert!(topic.partitions.iter().all(|p| p.leader_id.0 == NODE_ID));
    }

    #[tokio::test]
    async fn authorized_operations_are_answered_only_when_asked() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        let asked = asking_for(&["orders", "bad name!"], false)
            .with_include_topic_authorized_operations(true)
            .with_include_cluster_authorized_operations(true);
        let response = handle(&node.context, 10, asked.clone()).await;
        assert_eq!(
            response.topics[0].topic_authorized_operations,
            authorized::topic("orders")
        );
        assert_eq!(
            response.cluster_authorized_operations,
            authorized::cluster()
        );
        // an error carries none; v11+ has no cluster field
        assert_eq!(
            response.topics[1].error_code,
            ResponseError::InvalidTopicException.code()
        );
        assert_eq!(response.topics[1].topic_authorized_operations, i32::MIN);
        let response = handle(&node.context, 12, asked).await;
        assert_eq!(
            response.topics[0].topic_authorized_operations,
            authorized::topic("orders")
        );
        assert_eq!(response.cluster_authorized_operations, i32::MIN);
        let response = handle(&node.context, 12, asking_for(&["orders"], false)).await;
        assert_eq!(response.topics[0].topic_authorized_operations, i32::MIN);
    }

    #[tokio::test]
    async fn unknown_topics_are_created_only_when_both_sides_allow() {
        let node = TestNode::start().await;
        let response = handle(&node.context, 12, asking_for(&["fresh"], false)).await;
        assert_eq!(
            response.topics[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        let response = handle(&node.context, 12, asking_for(&["fresh"], true)).await;
        assert_eq!(response.topics[0].error_code, 0);
        assert_eq!(response.topics[0].partitions.len(), 1);

        let node = TestNode::start_with(KafkaConfig {
            auto_create_topics: false,
            ..KafkaConfig::default()
        })
        .await;
        let response = handle(&node.context, 12, asking_for(&["fresh"], true)).await;
        assert_eq!(
            response.topics[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
    }
}
