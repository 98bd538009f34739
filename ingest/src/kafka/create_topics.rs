//! CreateTopics: create topics with a partition count and configs.
//!
//! The replication factor is accepted whatever it is (-1 or any count):
//! durability comes from object storage, so every topic reports 1. A
//! partition count of -1 takes the node's default; explicit replica
//! assignments only give the partition count. `validate_only` runs every
//! check, including the existence check, and creates nothing.

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
            Err((
                ResponseError::InvalidRequest.code(),
                format!("topic {:?} appears more than once in the request", name.0),
            ))
        } else {
            create_one(context, &topic, request.validate_only).await
        };
        let mut result = CreatableTopicResult::default()
            .with_name(name)
            .with_num_partitions(-1)
            .with_replication_factor(-1);
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
    validate_topic_name(name)
        .map_err(|e| (ResponseError::InvalidTopicException.code(), e.to_string()))?;
    let partitions = match (topic.num_partitions, topic.assignments.len()) {
        (-1, 0) => context.config.default_partitions,
        (-1, assigned) => i32::try_from(assigned).unwrap_or(i32::MAX),
        (count, 0) => count,
        (_, _) => {
            return Err((
                ResponseError::InvalidRequest.code(),
                "give either num_partitions or replica assignments, not both".to_string(),
            ))
        }
    };
    if !(1..=PARTITIONS_MAX).contains(&partitions) {
        return Err((
            ResponseError::InvalidPartitions.code(),
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
            return Err((ResponseError::InvalidRequest.code(), reason))
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
    (
        ResponseError::TopicAlreadyExists.code(),
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
