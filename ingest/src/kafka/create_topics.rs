//! CreateTopics: create topics with a partition count and configs.
//!
//! The replication factor is accepted whatever it is (-1 or any count):
//! durability comes from object storage, so every topic reports 1. A
//! partition count of -1 takes the node's default; explicit replica
//! assignments only give the partition count. `validate_only` runs every
//! check, including the existence check, and creates nothing.

use sluice_metadata::acls::Operation;

use crate::access;
use std::collections::{BTreeMap, HashMap};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::model::{
    validate_topic_configs, validate_topic_name, ModelError, Topic, PARTITIONS_MAX,
};
use tracing::info;

use super::topic_configs::{self, config_error, error_parts, generic_error, AdminError};
use super::KafkaContext;

/// Answer a CreateTopics request.
pub async fn handle(
    context: &KafkaContext,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for topic in &request.topics {
        *seen.entry(topic.name.0.to_string()).or_default() += 1;
    }
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.clone();
        let outcome = if seen.get(name.0.as_str()).copied().unwrap_or(0) > 1 {
            Err(AdminError::new(
                ResponseError::InvalidRequest,
                format!("topic {:?} appears more than once in the request", name.0),
            ))
        } else {
            create_one(context, &topic, request.validate_only).await
        };
        // null, as Kafka sends it, unless there is an error
        let mut result = CreatableTopicResult::default()
            .with_name(name)
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_error_message(None);
        match outcome {
            Ok(created) => {
                if version >= 5 {
                    result = result
                        .with_num_partitions(created.partitions)
                        .with_replication_factor(1)
                        .with_configs(Some(describe_configs(&created.configs)));
                }
                // topic ids exist from v7 on; the codec refuses them earlier
                if let (Some(id), true) = (created.id, version >= 7) {
                    result = result.with_topic_id(id);
                }
            }
            Err(error) => {
                let (code, message) = error_parts(Err(error));
                result = result
                    .with_error_code(code)
                    .with_error_message(message.map(StrBytes::from_string));
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// What a successful (or validated) creation reports.
struct Created {
    partitions: i32,
    configs: BTreeMap<String, String>,
    id: Option<uuid::Uuid>,
}

async fn create_one(
    context: &KafkaContext,
    topic: &CreatableTopic,
    validate_only: bool,
) -> Result<Created, AdminError> {
    let name = topic.name.0.as_str();
    // CREATE on the cluster, or on the topic
    if !access::may_create_topic(name) {
        access::topic(Operation::Create, name)?;
    }
    validate_topic_name(name)
        .map_err(|e| AdminError::new(ResponseError::InvalidTopicException, e.to_string()))?;
    let partitions = match (topic.num_partitions, topic.assignments.len()) {
        (-1, 0) => context.config.default_partitions,
        (-1, assigned) => i32::try_from(assigned).unwrap_or(i32::MAX),
        (count, 0) => count,
        (_, _) => {
            return Err(AdminError::new(
                ResponseError::InvalidRequest,
                "give either num_partitions or replica assignments, not both".to_string(),
            ))
        }
    };
    if !(1..=PARTITIONS_MAX).contains(&partitions) {
        return Err(AdminError::new(
            ResponseError::InvalidPartitions,
            format!("partitions must be between 1 and {PARTITIONS_MAX}, got {partitions}"),
        ));
    }
    let mut configs = BTreeMap::new();
    for config in &topic.configs {
        // a null value leaves the config at its default
        if let Some(value) = &config.value {
            configs.insert(config.name.to_string(), value.to_string());
        }
    }
    validate_topic_configs(&configs).map_err(config_error)?;
    if validate_only {
        return match context.catalog.get_topic(name).await {
            Ok(Some(_)) => Err(exists(name)),
            Ok(None) => Ok(Created {
                partitions,
                configs,
                id: None,
            }),
            Err(error) => Err(generic_error(error)),
        };
    }
    let created: Topic = match context.view.create_topic(name, partitions, configs).await {
        Ok(topic) => topic,
        Err(ModelError::TopicExists(_)) => return Err(exists(name)),
        Err(ModelError::Invalid(reason)) => {
            return Err(AdminError::new(ResponseError::InvalidRequest, reason))
        }
        Err(error) => return Err(generic_error(error)),
    };
    info!(
        topic = name,
        partitions = created.record.partitions,
        "created topic"
    );
    Ok(Created {
        partitions: created.record.partitions,
        configs: created.record.configs,
        id: uuid::Uuid::parse_str(&created.record.id).ok(),
    })
}

fn exists(name: &str) -> AdminError {
    AdminError::new(
        ResponseError::TopicAlreadyExists,
        format!("topic {name:?} already exists"),
    )
}

fn describe_configs(configs: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
    topic_configs::describe(configs)
        .into_iter()
        .map(|entry| {
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_string(entry.name))
                .with_value(Some(StrBytes::from_string(entry.value)))
                .with_read_only(false)
                .with_config_source(entry.source)
                .with_is_sensitive(false)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopicConfig,
    };
    use kafka_protocol::messages::{BrokerId, TopicName};

    use super::*;
    use crate::kafka::testing::{text, TestNode, NODE_ID};
    use crate::kafka::topic_configs::{SOURCE_DEFAULT, SOURCE_TOPIC};
    use crate::kafka::KafkaConfig;

    fn topic(name: &str, partitions: i32) -> CreatableTopic {
        CreatableTopic::default()
            .with_name(TopicName(text(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)
    }

    fn config(name: &str, value: Option<&str>) -> CreatableTopicConfig {
        CreatableTopicConfig::default()
            .with_name(text(name))
            .with_value(value.map(text))
    }

    async fn create(
        node: &TestNode,
        version: i16,
        topics: Vec<CreatableTopic>,
        validate_only: bool,
    ) -> Vec<CreatableTopicResult> {
        let count = topics.len();
        let request = CreateTopicsRequest::default()
            .with_topics(topics)
            .with_timeout_ms(5_000)
            .with_validate_only(validate_only);
        let response = handle(&node.context, version, request).await;
        assert_eq!(response.topics.len(), count);
        response.topics
    }

    /// Whether a result carries no error message (null, as Kafka sends it).
    fn no_message(result: &CreatableTopicResult) -> bool {
        result.error_message.is_none()
    }

    /// Create one topic at v7 and return its result.
    async fn create_one(node: &TestNode, topic: CreatableTopic) -> CreatableTopicResult {
        create(node, 7, vec![topic], false).await.remove(0)
    }

    #[tokio::test]
    async fn creates_a_topic_with_its_partitions_and_configs() {
        let node = TestNode::start().await;
        let result = create_one(
            &node,
            topic("orders", 3)
                .with_replication_factor(3)
                .with_configs(vec![config("retention.ms", Some("1000"))]),
        )
        .await;
        assert_eq!(result.name.0.as_str(), "orders");
        assert_eq!(result.error_code, 0);
        assert!(no_message(&result));
        assert_eq!(result.num_partitions, 3);
        // durability is object storage's: every topic reports one replica
        assert_eq!(result.replication_factor, 1);

        let created = node.context.view.topic("orders").unwrap();
        assert_eq!(created.record.partitions, 3);
        assert_eq!(
            created.record.configs,
            BTreeMap::from([("retention.ms".to_string(), "1000".to_string())])
        );
        assert_eq!(
            result.topic_id,
            uuid::Uuid::parse_str(&created.record.id).unwrap()
        );
        assert!(!result.topic_id.is_nil());
        let stored = node.context.catalog.get_topic("orders").await.unwrap();
        assert_eq!(stored.unwrap().record.id, created.record.id);

        // every known config, the one set by the topic, the rest defaults
        let configs = result.configs.unwrap();
        assert_eq!(configs.len(), sluice_metadata::model::TOPIC_CONFIGS.len());
        let retention = configs
            .iter()
            .find(|c| c.name.as_str() == "retention.ms")
            .unwrap();
        assert_eq!(retention.value.as_ref().unwrap().as_str(), "1000");
        assert_eq!(retention.config_source, SOURCE_TOPIC);
        let max = configs
            .iter()
            .find(|c| c.name.as_str() == "max.message.bytes")
            .unwrap();
        assert_eq!(max.value.as_ref().unwrap().as_str(), "1048576");
        assert_eq!(max.config_source, SOURCE_DEFAULT);
    }

    #[tokio::test]
    async fn older_versions_report_only_what_they_carry() {
        let node = TestNode::start().await;
        // before v5: no partition count, replication factor or configs
        let result = create(&node, 4, vec![topic("v4", 2)], false)
            .await
            .remove(0);
        assert_eq!(result.error_code, 0);
        assert_eq!(result.num_partitions, -1);
        assert_eq!(result.replication_factor, -1);
        assert!(result.configs.as_ref().is_none_or(|c| c.is_empty()));
        assert!(result.topic_id.is_nil());
        assert_eq!(node.context.view.topic("v4").unwrap().record.partitions, 2);

        // v5 and v6: partitions and configs, no topic id yet
        let result = create(&node, 6, vec![topic("v6", 2)], false)
            .await
            .remove(0);
        assert_eq!(result.error_code, 0);
        assert_eq!(result.num_partitions, 2);
        assert_eq!(result.replication_factor, 1);
        assert!(result.configs.is_some());
        assert!(result.topic_id.is_nil());
    }

    #[tokio::test]
    async fn the_partition_count_comes_from_the_default_or_the_assignments() {
        let node = TestNode::start_with(KafkaConfig {
            default_partitions: 4,
            ..KafkaConfig::default()
        })
        .await;
        let result = create_one(&node, topic("defaulted", -1)).await;
        assert_eq!((result.error_code, result.num_partitions), (0, 4));
        assert_eq!(
            node.context
                .view
                .topic("defaulted")
                .unwrap()
                .record
                .partitions,
            4
        );

        let assignments: Vec<CreatableReplicaAssignment> = (0..2)
            .map(|i| {
                CreatableReplicaAssignment::default()
                    .with_partition_index(i)
                    .with_broker_ids(vec![BrokerId(NODE_ID)])
            })
            .collect();
        let result = create_one(
            &node,
            topic("assigned", -1).with_assignments(assignments.clone()),
        )
        .await;
        assert_eq!((result.error_code, result.num_partitions), (0, 2));
        assert_eq!(
            node.context
                .view
                .topic("assigned")
                .unwrap()
                .record
                .partitions,
            2
        );

        // both a count and assignments
        let result = create_one(&node, topic("both", 2).with_assignments(assignments)).await;
        assert_eq!(result.error_code, ResponseError::InvalidRequest.code());
        assert!(result.error_message.is_some());
        assert!(node.context.view.topic("both").is_none());
    }

    #[tokio::test]
    async fn partition_counts_outside_one_to_the_maximum_are_invalid_partitions() {
        let node = TestNode::start().await;
        for count in [0, -2, PARTITIONS_MAX + 1, i32::MAX] {
            let result = create_one(&node, topic("orders", count)).await;
            assert_eq!(
                result.error_code,
                ResponseError::InvalidPartitions.code(),
                "count {count}"
            );
            assert_eq!(result.num_partitions, -1);
            assert!(result.error_message.is_some());
        }
        assert!(node.context.view.topic("orders").is_none());
        assert!(node
            .context
            .catalog
            .get_topic("orders")
            .await
            .unwrap()
            .is_none());
        // the largest count is fine
        let result = create_one(&node, topic("wide", PARTITIONS_MAX)).await;
        assert_eq!(
            (result.error_code, result.num_partitions),
            (0, PARTITIONS_MAX)
        );
    }

    #[tokio::test]
    async fn invalid_names_are_invalid_topic_exception() {
        let node = TestNode::start().await;
        let too_long = "a".repeat(250);
        for name in [
            "",
            ".",
            "..",
            "has space",
            "slash/ed",
            "ümlaut",
            too_long.as_str(),
        ] {
            let result = create_one(&node, topic(name, 1)).await;
            assert_eq!(
                result.error_code,
                ResponseError::InvalidTopicException.code(),
                "name {name:?}"
            );
            assert!(node.context.view.topic(name).is_none());
        }
        let longest = "a".repeat(249);
        assert_eq!(create_one(&node, topic(&longest, 1)).await.error_code, 0);
    }

    #[tokio::test]
    async fn an_existing_topic_is_topic_already_exists_and_stays_as_it_was() {
        let node = TestNode::start().await;
        let existing = node.topic("orders", 2).await;
        let result = create_one(&node, topic("orders", 5)).await;
        assert_eq!(result.error_code, ResponseError::TopicAlreadyExists.code());
        assert!(result.error_message.unwrap().as_str().contains("orders"));
        assert_eq!(result.num_partitions, -1);
        let now = node.context.view.topic("orders").unwrap();
        assert_eq!(now.record.partitions, 2);
        assert_eq!(now.record.id, existing.record.id);
    }

    #[tokio::test]
    async fn a_name_twice_in_one_request_is_invalid_for_both() {
        let node = TestNode::start().await;
        let results = create(
            &node,
            7,
            vec![topic("twice", 1), topic("once", 1), topic("twice", 2)],
            false,
        )
        .await;
        assert_eq!(results[0].error_code, ResponseError::InvalidRequest.code());
        assert_eq!(results[1].error_code, 0);
        assert_eq!(results[2].error_code, ResponseError::InvalidRequest.code());
        assert!(node.context.view.topic("twice").is_none());
        assert!(node.context.view.topic("once").is_some());
    }

    #[tokio::test]
    async fn unknown_or_malformed_configs_are_invalid_config() {
        let node = TestNode::start().await;
        for (name, value) in [
            ("no.such.config", "1"),
            ("retention.ms", "soon"),
            ("max.message.bytes", "0"),
            ("max.message.bytes", "-5"),
            ("segment.bytes", "1.5"),
        ] {
            let result = create_one(
                &node,
                topic("orders", 1).with_configs(vec![config(name, Some(value))]),
            )
            .await;
            assert_eq!(
                result.error_code,
                ResponseError::InvalidConfig.code(),
                "{name}={value}"
            );
            assert!(result.error_message.is_some());
        }
        assert!(node.context.view.topic("orders").is_none());

        // a null value leaves the config at its default
        let result = create_one(
            &node,
            topic("orders", 1).with_configs(vec![config("retention.ms", None)]),
        )
        .await;
        assert_eq!(result.error_code, 0);
        assert!(node
            .context
            .view
            .topic("orders")
            .unwrap()
            .record
            .configs
            .is_empty());
        let retention = result
            .configs
            .unwrap()
            .into_iter()
            .find(|c| c.name.as_str() == "retention.ms")
            .unwrap();
        assert_eq!(retention.value.unwrap().as_str(), "-1");
        assert_eq!(retention.config_source, SOURCE_DEFAULT);
    }

    #[tokio::test]
    async fn validate_only_runs_every_check_and_creates_nothing() {
        let node = TestNode::start().await;
        node.topic("existing", 1).await;
        let results = create(
            &node,
            7,
            vec![
                topic("fresh", 3).with_configs(vec![config("retention.ms", Some("1000"))]),
                topic("existing", 1),
                topic("bad-config", 1).with_configs(vec![config("no.such.config", Some("1"))]),
                topic("no partitions", 0),
            ],
            true,
        )
        .await;
        // what would be created is reported, without an id
        assert_eq!(results[0].error_code, 0);
        assert_eq!(results[0].num_partitions, 3);
        assert!(results[0].topic_id.is_nil());
        let retention = results[0]
            .configs
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.name.as_str() == "retention.ms")
            .unwrap();
        assert_eq!(retention.value.as_ref().unwrap().as_str(), "1000");
        assert_eq!(
            results[1].error_code,
            ResponseError::TopicAlreadyExists.code()
        );
        assert_eq!(results[2].error_code, ResponseError::InvalidConfig.code());
        assert_eq!(
            results[3].error_code,
            ResponseError::InvalidTopicException.code()
        );
        assert!(node.context.view.topic("fresh").is_none());
        assert!(node
            .context
            .catalog
            .get_topic("fresh")
            .await
            .unwrap()
            .is_none());
        assert!(node.context.view.topic("bad-config").is_none());

        // and the real request then creates it
        let result = create_one(&node, topic("fresh", 3)).await;
        assert_eq!((result.error_code, result.num_partitions), (0, 3));
    }
}
