//! AlterConfigs: replace a topic's whole config set (configs left out go
//! back to their defaults, as in Kafka). Broker configs are not alterable.

use sluice_metadata::acls::Operation;

use crate::access;
use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::model::validate_topic_configs;
use tracing::info;

use super::topic_configs::{
    config_error, duplicate_resource, duplicated, error_parts, AdminError, RESOURCE_TOPIC,
};
use super::KafkaContext;

/// Answer an AlterConfigs request.
pub async fn handle(context: &KafkaContext, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    let twice = duplicated(
        request
            .resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    for resource in request.resources {
        let name = resource.resource_name.as_str();
        let outcome = if twice.contains(&(resource.resource_type, name.to_string())) {
            Err(duplicate_resource(name))
        } else if let (RESOURCE_TOPIC, Err(denied)) = (
            resource.resource_type,
            access::topic(Operation::AlterConfigs, name),
        ) {
            Err(denied.into())
        } else if resource.resource_type == RESOURCE_TOPIC {
            let mut configs = BTreeMap::new();
            let mut repeated = None;
            for config in &resource.configs {
                // a null value leaves the config at its default
                if let Some(value) = &config.value {
                    if configs
                        .insert(config.name.to_string(), value.to_string())
                        .is_some()
                    {
                        repeated = Some(config.name.to_string());
                    }
                }
            }
            match repeated {
                Some(config) => Err(AdminError::new(
                    ResponseError::InvalidRequest,
                    format!("config {config:?} appears more than once"),
                )),
                None => replace(context, name, configs, request.validate_only).await,
            }
        } else {
            Err(not_alterable(resource.resource_type))
        };
        let (code, message) = error_parts(outcome);
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string)),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

async fn replace(
    context: &KafkaContext,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), AdminError> {
    validate_topic_configs(&configs).map_err(config_error)?;
    if validate_only {
        return match context.catalog.get_topic(name).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(unknown_topic(name)),
            Err(error) => Err(config_error(error)),
        };
    }
    let topic = context
        .view
        .alter_topic_configs(name, configs)
        .await
        .map_err(config_error)?;
    info!(topic = name, configs = ?topic.record.configs, "replaced topic configs");
    Ok(())
}

/// UNKNOWN_TOPIC_OR_PARTITION for `name`.
pub fn unknown_topic(name: &str) -> AdminError {
    AdminError::new(
        ResponseError::UnknownTopicOrPartition,
        format!("unknown topic {name:?}"),
    )
}

/// The error for a resource type whose configs cannot be changed.
pub fn not_alterable(resource_type: i8) -> AdminError {
    AdminError::new(
        ResponseError::InvalidRequest,
        format!(
            "configs of resource type {resource_type} cannot be altered; only topic configs can"
        ),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};

    use super::*;
    use crate::kafka::testing::{text, TestNode};
    use crate::kafka::topic_configs::{RESOURCE_BROKER, RESOURCE_BROKER_LOGGER};

    fn resource(
        resource_type: i8,
        name: &str,
        configs: &[(&str, Option<&str>)],
    ) -> AlterConfigsResource {
        AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(text(name))
            .with_configs(
                configs
                    .iter()
                    .map(|(name, value)| {
                        AlterableConfig::default()
                            .with_name(text(name))
                            .with_value(value.map(text))
                    })
                    .collect(),
            )
    }

    fn topic(name: &str, configs: &[(&str, Option<&str>)]) -> AlterConfigsResource {
        resource(RESOURCE_TOPIC, name, configs)
    }

    async fn alter(
        node: &TestNode,
        resources: Vec<AlterConfigsResource>,
        validate_only: bool,
    ) -> Vec<AlterConfigsResourceResponse> {
        let count = resources.len();
        let request = AlterConfigsRequest::default()
            .with_resources(resources)
            .with_validate_only(validate_only);
        let response = handle(&node.context, request).await;
        assert_eq!(response.responses.len(), count);
        response.responses
    }

    fn map(configs: &[(&str, &str)]) -> BTreeMap<String, String> {
        configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The topic's configs as this node sees them and as stored; both must agree.
    async fn configs(node: &TestNode, name: &str) -> BTreeMap<String, String> {
        let seen = node.context.view.topic(name).unwrap().record.configs;
        let stored = node
            .context
            .catalog
            .get_topic(name)
            .await
            .unwrap()
            .unwrap()
            .record
            .configs;
        assert_eq!(seen, stored);
        seen
    }

    #[tokio::test]
    async fn replaces_the_whole_config_set() {
        let node = TestNode::start().await;
        node.topic_with(
            "orders",
            &[("retention.ms", "1000"), ("segment.ms", "5000")],
        )
        .await;
        let responses = alter(
            &node,
            vec![topic(
                "orders",
                &[
                    ("max.message.bytes", Some("2048")),
                    ("segment.ms", Some("6000")),
                ],
            )],
            false,
        )
        .await;
        assert_eq!(responses[0].error_code, 0);
        assert_eq!(responses[0].error_message, None);
        assert_eq!(responses[0].resource_type, RESOURCE_TOPIC);
        assert_eq!(responses[0].resource_name.as_str(), "orders");
        // retention.ms was left out: back to its default
        assert_eq!(
            configs(&node, "orders").await,
            map(&[("max.message.bytes", "2048"), ("segment.ms", "6000")])
        );
        // the write path sees the new limit at once
        let seen = node.context.view.topic("orders").unwrap();
        assert_eq!(seen.record.max_message_bytes(), 2048);

        // null values and an empty set: everything back to defaults
        let responses = alter(
            &node,
            vec![topic("orders", &[("retention.ms", None)])],
            false,
        )
        .await;
        assert_eq!(responses[0].error_code, 0);
        assert!(configs(&node, "orders").await.is_empty());
    }

    #[tokio::test]
    async fn unknown_or_malformed_configs_are_invalid_config_and_change_nothing() {
        let node = TestNode::start().await;
        node.topic_with("orders", &[("retention.ms", "1000")]).await;
        for (name, value) in [
            ("no.such.config", "1"),
            ("retention.ms", "forever"),
            ("max.message.bytes", "0"),
        ] {
            for validate_only in [false, true] {
                let responses = alter(
                    &node,
                    vec![topic("orders", &[(name, Some(value))])],
                    validate_only,
                )
                .await;
                assert_eq!(
                    responses[0].error_code,
                    ResponseError::InvalidConfig.code(),
                    "{name}={value} validate_only={validate_only}"
                );
                assert!(responses[0].error_message.is_some());
            }
        }
        assert_eq!(
            configs(&node, "orders").await,
            map(&[("retention.ms", "1000")])
        );
    }

    #[tokio::test]
    async fn an_unknown_topic_is_unknown_topic_or_partition() {
        let node = TestNode::start().await;
        for validate_only in [false, true] {
            let responses = alter(
                &node,
                vec![topic("ghost", &[("retention.ms", Some("1000"))])],
                validate_only,
            )
            .await;
            assert_eq!(
                responses[0].error_code,
                ResponseError::UnknownTopicOrPartition.code(),
                "validate_only={validate_only}"
            );
            assert!(responses[0]
                .error_message
                .as_ref()
                .unwrap()
                .contains("ghost"));
        }
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
    async fn validate_only_checks_and_changes_nothing() {
        let node = TestNode::start().await;
        node.topic_with("orders", &[("retention.ms", "1000")]).await;
        let responses = alter(
            &node,
            vec![topic("orders", &[("segment.ms", Some("6000"))])],
            true,
        )
        .await;
        assert_eq!(responses[0].error_code, 0);
        assert_eq!(
            configs(&node, "orders").await,
            map(&[("retention.ms", "1000")])
        );
    }

    #[tokio::test]
    async fn only_topic_configs_can_be_altered() {
        let node = TestNode::start().await;
        node.topic_with("orders", &[]).await;
        let responses = alter(
            &node,
            vec![
                resource(RESOURCE_BROKER, "1", &[("log.retention.ms", Some("1"))]),
                resource(RESOURCE_BROKER_LOGGER, "1", &[]),
                topic("orders", &[("retention.ms", Some("5"))]),
                resource(32, "group", &[]),
            ],
            false,
        )
        .await;
        for i in [0, 1, 3] {
            assert_eq!(
                responses[i].error_code,
                ResponseError::InvalidRequest.code(),
                "resource {i}"
            );
            assert!(responses[i].error_message.is_some());
        }
        assert_eq!(responses[0].resource_type, RESOURCE_BROKER);
        assert_eq!(responses[0].resource_name.as_str(), "1");
        // the topic next to them is altered all the same
        assert_eq!(responses[2].error_code, 0);
        assert_eq!(
            configs(&node, "orders").await,
            map(&[("retention.ms", "5")])
        );
    }

    #[tokio::test]
    async fn a_resource_or_a_config_named_twice_is_refused_and_nothing_changes() {
        let node = TestNode::start().await;
        node.topic_with("orders", &[("retention.ms", "1000")]).await;
        node.topic_with("audit", &[("retention.ms", "1000")]).await;
        let responses = alter(
            &node,
            vec![
                topic("orders", &[("retention.ms", Some("5"))]),
                topic("orders", &[("retention.ms", Some("6"))]),
                topic(
                    "audit",
                    &[("retention.ms", Some("5")), ("retention.ms", Some("6"))],
                ),
            ],
            false,
        )
        .await;
        let invalid = ResponseError::InvalidRequest.code();
        assert!(responses.iter().all(|r| r.error_code == invalid));
        assert!(responses[0]
            .error_message
            .as_ref()
            .unwrap()
            .contains("more than once"));
        assert_eq!(
            configs(&node, "orders").await,
            map(&[("retention.ms", "1000")])
        );
        assert_eq!(
            configs(&node, "audit").await,
            map(&[("retention.ms", "1000")])
        );
    }
}
