//! CreatePartitions: grow a topic's partition count (never shrink it).
//!
//! New partitions start empty (no head until their first commit). Replica
//! assignments are accepted and ignored: every node can serve every
//! partition.

use sluice_metadata::acls::Operation;

use crate::access;
use std::collections::HashMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::model::{ModelError, PARTITIONS_MAX};
use tracing::info;

use super::topic_configs::{error_parts, generic_error, AdminError};
use super::KafkaContext;

/// Lost compare-and-swaps (a concurrent change of the topic) retried.
const GROW_ATTEMPTS_MAX: usize = 4;

/// Answer a CreatePartitions request.
pub async fn handle(
    context: &KafkaContext,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for topic in &request.topics {
        *seen.entry(topic.name.0.to_string()).or_default() += 1;
    }
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let outcome = if seen.get(&name).copied().unwrap_or(0) > 1 {
            Err(AdminError::new(
                ResponseError::InvalidRequest,
                format!("topic {name:?} appears more than once in the request"),
            ))
        } else {
            grow(context, &name, topic.count, request.validate_only).await
        };
        let (code, message) = error_parts(outcome);
        results.push(
            CreatePartitionsTopicResult::default()
                .with_name(topic.name)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string)),
        );
    }
    CreatePartitionsResponse::default().with_results(results)
}

async fn grow(
    context: &KafkaContext,
    name: &str,
    count: i32,
    validate_only: bool,
) -> Result<(), AdminError> {
    access::topic(Operation::Alter, name)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let topic = match context.catalog.get_topic(name).await {
            Ok(Some(topic)) => topic,
            Ok(None) => {
                return Err(AdminError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("unknown topic {name:?}"),
                ))
            }
            Err(error) => return Err(generic_error(error)),
        };
        let current = topic.record.partitions;
        if count <= current {
            let message = if count == current {
                format!("topic {name:?} already has {current} partitions")
            } else {
                format!(
                    "topic {name:?} has {current} partitions; the count can only grow, not to {count}"
                )
            };
            return Err(AdminError::new(ResponseError::InvalidPartitions, message));
        }
        if count > PARTITIONS_MAX {
            return Err(AdminError::new(
                ResponseError::InvalidPartitions,
                format!("a topic may have at most {PARTITIONS_MAX} partitions, asked for {count}"),
            ));
        }
        if validate_only {
            return Ok(());
        }
        match context.view.add_partitions(name, count).await {
            Ok(_) => {
                info!(topic = name, from = current, to = count, "added partitions");
                return Ok(());
            }
            Err(ModelError::Concurrent(_)) if attempt < GROW_ATTEMPTS_MAX => continue,
            Err(ModelError::UnknownTopic(_)) => {
                return Err(AdminError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("unknown topic {name:?}"),
                ))
            }
            Err(ModelError::Invalid(reason)) => {
                return Err(AdminError::new(ResponseError::InvalidPartitions, reason))
            }
            Err(error) => return Err(generic_error(error)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::TopicName;

    use super::*;
    use crate::kafka::testing::{text, TestNode};

    fn grow_to(name: &str, count: i32) -> CreatePartitionsTopic {
        CreatePartitionsTopic::default()
            .with_name(TopicName(text(name)))
            .with_count(count)
    }

    async fn create(
        node: &TestNode,
        topics: Vec<CreatePartitionsTopic>,
        validate_only: bool,
    ) -> Vec<CreatePartitionsTopicResult> {
        let count = topics.len();
        let request = CreatePartitionsRequest::default()
            .with_topics(topics)
            .with_timeout_ms(5_000)
            .with_validate_only(validate_only);
        let response = handle(&node.context, request).await;
        assert_eq!(response.results.len(), count);
        response.results
    }

    async fn partitions(node: &TestNode, name: &str) -> (i32, i32) {
        let seen = node.context.view.topic(name).unwrap().record.partitions;
        let stored = node
            .context
            .catalog
            .get_topic(name)
            .await
            .unwrap()
            .unwrap()
            .record
            .partitions;
        (seen, stored)
    }

    #[tokio::test]
    async fn grows_a_topic_and_keeps_its_id() {
        let node = TestNode::start().await;
        let before = node.topic("orders", 1).await;
        let results = create(&node, vec![grow_to("orders", 4)], false).await;
        assert_eq!(results[0].name.0.as_str(), "orders");
        assert_eq!(results[0].error_code, 0);
        assert_eq!(results[0].error_message, None);
        assert_eq!(partitions(&node, "orders").await, (4, 4));
        let after = node.context.view.topic("orders").unwrap();
        assert_eq!(after.record.id, before.record.id);
        // new partitions start empty
        let snapshot = node.context.view.snapshot(&after.record.id, 3);
        assert_eq!((snapshot.log_start_offset, snapshot.high_watermark), (0, 0));

        // and may grow again, up to the maximum
        let results = create(&node, vec![grow_to("orders", PARTITIONS_MAX)], false).await;
        assert_eq!(results[0].error_code, 0);
        assert_eq!(
            partitions(&node, "orders").await,
            (PARTITIONS_MAX, PARTITIONS_MAX)
        );
    }

    #[tokio::test]
    async fn the_count_can_only_grow_up_to_the_maximum() {
        let node = TestNode::start().await;
        node.topic("orders", 3).await;
        for count in [3, 2, 0, -1, PARTITIONS_MAX + 1] {
            let results = create(&node, vec![grow_to("orders", count)], false).await;
            assert_eq!(
                results[0].error_code,
                ResponseError::InvalidPartitions.code(),
                "count {count}"
            );
            assert!(results[0].error_message.is_some());
        }
        assert_eq!(partitions(&node, "orders").await, (3, 3));
    }

    #[tokio::test]
    async fn an_unknown_topic_is_unknown_topic_or_partition() {
        let node = TestNode::start().await;
        let results = create(&node, vec![grow_to("ghost", 2)], false).await;
        assert_eq!(
            results[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert!(results[0].error_message.as_ref().unwrap().contains("ghost"));
        // nothing is created on the way
        assert!(node.context.view.topic("ghost").is_none());
        assert!(node
            .context
            .catalog
            .get_topic("ghost")
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_topic_twice_in_one_request_is_invalid_and_others_still_grow() {
        let node = TestNode::start().await;
        node.topic("twice", 1).await;
        node.topic("once", 1).await;
        let results = create(
            &node,
            vec![grow_to("twice", 2), grow_to("once", 2), grow_to("twice", 3)],
            false,
        )
        .await;
        assert_eq!(results[0].error_code, ResponseError::InvalidRequest.code());
        assert_eq!(results[1].error_code, 0);
        assert_eq!(results[2].error_code, ResponseError::InvalidRequest.code());
        assert_eq!(partitions(&node, "twice").await, (1, 1));
        assert_eq!(partitions(&node, "once").await, (2, 2));
    }

    #[tokio::test]
    async fn validate_only_checks_and_changes_nothing() {
        let node = TestNode::start().await;
        node.topic("orders", 2).await;
        let results = create(&node, vec![grow_to("orders", 5), grow_to("ghost", 5)], true).await;
        assert_eq!(results[0].error_code, 0);
        assert_eq!(
            results[1].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert_eq!(partitions(&node, "orders").await, (2, 2));

        let results = create(&node, vec![grow_to("orders", 1)], true).await;
        assert_eq!(
            results[0].error_code,
            ResponseError::InvalidPartitions.code()
        );
    }
}
