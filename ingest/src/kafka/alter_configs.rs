//! AlterConfigs: replace a topic's whole config set (configs left out go
//! back to their defaults, as in Kafka). Broker configs are not alterable.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::model::validate_topic_configs;
use tracing::info;

use super::topic_configs::{config_error, error_parts, AdminError, RESOURCE_TOPIC};
use super::KafkaContext;

/// Answer an AlterConfigs request.
pub async fn handle(context: &KafkaContext, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let outcome = if resource.resource_type == RESOURCE_TOPIC {
            let mut configs = BTreeMap::new();
            for config in &resource.configs {
                // a null value leaves the config at its default
                if let Some(value) = &config.value {
                    configs.insert(config.name.to_string(), value.to_string());
                }
            }
            replace(
                context,
                resource.resource_name.as_str(),
                configs,
                request.validate_only,
            )
            .await
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
    (
        ResponseError::UnknownTopicOrPartition.code(),
        format!("unknown topic {name:?}"),
    )
}

/// The error for a resource type whose configs cannot be changed.
pub fn not_alterable(resource_type: i8) -> AdminError {
    (
        ResponseError::InvalidRequest.code(),
        format!(
            "configs of resource type {resource_type} cannot be altered; only topic configs can"
        ),
    )
}
