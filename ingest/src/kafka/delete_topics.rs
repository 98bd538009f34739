//! DeleteTopics: delete topics by name (v1-v5) or by name or id (v6+).
//!
//! The topic key, its heads and its index entries go in one metadata
//! transaction; the segment objects become garbage for the collector.

use sluice_metadata::acls::Operation;

use crate::access;
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
                    AdminError::new(
                        ResponseError::UnknownTopicId,
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
    access::topic(Operation::Delete, name)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match context.view.delete_topic(name).await {
            Ok(()) => break,
            Err(ModelError::UnknownTopic(_)) => {
                // gone already (maybe deleted through another node)
                return Err(AdminError::new(
                    ResponseError::UnknownTopicOrPartition,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;

    use super::*;
    use crate::kafka::testing::{text, TestNode};

    fn name(name: &str) -> TopicName {
        TopicName(text(name))
    }

    /// Delete by name the way v1-v5 ask.
    async fn delete_by_names(
        node: &TestNode,
        version: i16,
        names: &[&str],
    ) -> Vec<DeletableTopicResult> {
        let request = DeleteTopicsRequest::default()
            .with_topic_names(names.iter().map(|n| name(n)).collect())
            .with_timeout_ms(5_000);
        let response = handle(&node.context, version, request).await;
        assert_eq!(response.responses.len(), names.len());
        response.responses
    }

    /// Delete the way v6+ ask: a name or a topic id each.
    async fn delete_v6(
        node: &TestNode,
        topics: Vec<DeleteTopicState>,
    ) -> Vec<DeletableTopicResult> {
        let count = topics.len();
        let request = DeleteTopicsRequest::default()
            .with_topics(topics)
            .with_timeout_ms(5_000);
        let response = handle(&node.context, 6, request).await;
        assert_eq!(response.responses.len(), count);
        response.responses
    }

    fn result_name(result: &DeletableTopicResult) -> Option<&str> {
        result.name.as_ref().map(|n| n.0.as_str())
    }

    #[tokio::test]
    async fn deletes_topics_by_name() {
        let node = TestNode::start().await;
        let orders = node.topic("orders", 2).await;
        node.topic("kept", 1).await;

        let results = delete_by_names(&node, 4, &["orders"]).await;
        assert_eq!(result_name(&results[0]), Some("orders"));
        assert_eq!(results[0].error_code, 0);
        // no error messages before v5, no ids before v6
        assert_eq!(results[0].error_message, None);
        assert!(results[0].topic_id.is_nil());

        assert!(node.context.view.topic("orders").is_none());
        assert!(node
            .context
            .catalog
            .get_topic("orders")
            .await
            .unwrap()
            .is_none());
        assert!(node.context.view.topic("kept").is_some());

        // the name is free again, for a new topic with a new id
        let again = node.topic("orders", 1).await;
        assert_ne!(again.record.id, orders.record.id);
    }

    #[tokio::test]
    async fn unknown_names_are_unknown_topic_or_partition() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        let results = delete_by_names(&node, 5, &["ghost", "orders"]).await;
        assert_eq!(result_name(&results[0]), Some("ghost"));
        assert_eq!(
            results[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert!(results[0].error_message.as_ref().unwrap().contains("ghost"));
        assert_eq!(results[1].error_code, 0);
        assert_eq!(results[1].error_message, None);

        // deleted twice: the second finds nothing
        let results = delete_by_names(&node, 5, &["orders"]).await;
        assert_eq!(
            results[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        // before v5 the code comes without its message
        let results = delete_by_names(&node, 3, &["ghost"]).await;
        assert_eq!(
            results[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert_eq!(results[0].error_message, None);
    }

    #[tokio::test]
    async fn v6_deletes_by_id_or_name_and_unknown_ids_are_unknown_topic_id() {
        let node = TestNode::start().await;
        let by_id = node.topic("by-id", 1).await;
        node.topic("by-name", 1).await;
        let id = uuid::Uuid::parse_str(&by_id.record.id).unwrap();
        let stranger = uuid::Uuid::new_v4();

        let results = delete_v6(
            &node,
            vec![
                DeleteTopicState::default().with_topic_id(id),
                DeleteTopicState::default().with_name(Some(name("by-name"))),
                DeleteTopicState::default().with_topic_id(stranger),
            ],
        )
        .await;
        // by id: the name it resolved to, the id asked for
        assert_eq!(results[0].error_code, 0);
        assert_eq!(result_name(&results[0]), Some("by-id"));
        assert_eq!(results[0].topic_id, id);
        assert_eq!(results[1].error_code, 0);
        assert_eq!(result_name(&results[1]), Some("by-name"));
        assert!(results[1].topic_id.is_nil());
        assert_eq!(results[2].error_code, ResponseError::UnknownTopicId.code());
        assert_eq!(result_name(&results[2]), None);
        assert_eq!(results[2].topic_id, stranger);
        assert!(results[2].error_message.is_some());

        assert!(node.context.view.topic("by-id").is_none());
        assert!(node.context.view.topic("by-name").is_none());

        // the id of a deleted topic is unknown from then on
        let results = delete_v6(&node, vec![DeleteTopicState::default().with_topic_id(id)]).await;
        assert_eq!(results[0].error_code, ResponseError::UnknownTopicId.code());
        // and a v6 name that does not exist is still an unknown topic
        let results = delete_v6(
            &node,
            vec![DeleteTopicState::default().with_name(Some(name("ghost")))],
        )
        .await;
        assert_eq!(
            results[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
    }
}
