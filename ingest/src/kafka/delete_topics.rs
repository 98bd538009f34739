//! DeleteTopics: delete topics by name (v1-v5) or by name or id (v6+).
//!
//! The topic key, its heads and its index entries go in one metadata
//! transaction; the segment objects become garbage for the collector.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::model::ModelError;
use tracing::info;

use super::topic_configs::{error_parts, generic_error, AdminError};
use super::KafkaContext;

/// Lost compare-and-swaps (a concurrent change of the topic) retried.
const DELETE_ATTEMPTS_MAX: usize = 4;

/// Answer a DeleteTopics request.
pub async fn handle(
    context: &KafkaContext,
    version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // (name if given, topic id if given)
    let wanted: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, topic_id) in wanted {
        let resolved = match &name {
            Some(name) => Ok(name.clone()),
            None => context
                .view
                .topic_by_id(&topic_id.simple().to_string())
                .map(|t| t.record.name)
                .ok_or_else(|| {
                    (
                        ResponseError::UnknownTopicId.code(),
                        format!("unknown topic id {topic_id}"),
                    )
                }),
        };
        let outcome = match &resolved {
            Ok(name) => delete_one(context, name).await,
            Err(error) => Err(error.clone()),
        };
        let (code, message) = error_parts(outcome.map(|_| ()));
        let mut result = DeletableTopicResult::default()
            .with_name(
                resolved
                    .ok()
                    .or(name)
                    .map(|n| TopicName(StrBytes::from_string(n))),
            )
            .with_error_code(code);
        if version >= 5 {
            result = result.with_error_message(message.map(StrBytes::from_string));
        }
        if version >= 6 {
            result = result.with_topic_id(topic_id);
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

async fn delete_one(context: &KafkaContext, name: &str) -> Result<(), AdminError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match context.view.delete_topic(name).await {
            Ok(()) => break,
            Err(ModelError::UnknownTopic(_)) => {
                // gone already (maybe deleted through another node)
                return Err((
                    ResponseError::UnknownTopicOrPartition.code(),
                    format!("unknown topic {name:?}"),
                ));
            }
            Err(ModelError::Concurrent(_)) if attempt < DELETE_ATTEMPTS_MAX => continue,
            Err(error) => return Err(generic_error(error)),
        }
    }
    info!(topic = name, "deleted topic");
    Ok(())
}
