//! CreatePartitions: grow a topic's partition count (never shrink it).
//!
//! New partitions start empty (no head until their first commit). Replica
//! assignments are accepted and ignored: every node can serve every
//! partition.

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
            Err((
                ResponseError::InvalidRequest.code(),
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
    let mut attempt = 0;
    loop {
        attempt += 1;
        let topic = match context.catalog.get_topic(name).await {
            Ok(Some(topic)) => topic,
            Ok(None) => {
                return Err((
                    ResponseError::UnknownTopicOrPartition.code(),
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
            return Err((ResponseError::InvalidPartitions.code(), message));
        }
        if count > PARTITIONS_MAX {
            return Err((
                ResponseError::InvalidPartitions.code(),
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
                return Err((
                    ResponseError::UnknownTopicOrPartition.code(),
                    format!("unknown topic {name:?}"),
                ))
            }
            Err(ModelError::Invalid(reason)) => {
                return Err((ResponseError::InvalidPartitions.code(), reason))
            }
            Err(error) => return Err(generic_error(error)),
        }
    }
}
