//! DescribeConfigs: every config sluice knows for a topic, with its
//! effective value and whether that is the default; brokers have no
//! dynamic configs and answer an empty list.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::topic_configs::{
    self, generic_error, ConfigEntry, RESOURCE_BROKER, RESOURCE_BROKER_LOGGER, RESOURCE_TOPIC,
};
use super::KafkaContext;

/// Answer a DescribeConfigs request.
pub async fn handle(
    context: &KafkaContext,
    version: i16,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut results = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let keys: Option<Vec<String>> = resource
            .configuration_keys
            .as_ref()
            .map(|keys| keys.iter().map(|k| k.to_string()).collect());
        match resource.resource_type {
            RESOURCE_TOPIC => {
                let name = resource.resource_name.as_str();
                match context.catalog.get_topic(name).await {
                    Ok(Some(topic)) => {
                        let configs = topic_configs::describe(&topic.record.configs)
                            .into_iter()
                            .filter(|entry| {
                                keys.as_ref().is_none_or(|keys| keys.contains(&entry.name))
                            })
                            .map(|entry| config_result(entry, version, request.include_synonyms))
                            .collect();
                        result = result.with_configs(configs);
                    }
                    Ok(None) => {
                        result = result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "unknown topic {name:?}"
                            ))));
                    }
                    Err(error) => {
                        let (code, message) = generic_error(error);
                        result = result
                            .with_error_code(code)
                            .with_error_message(Some(StrBytes::from_string(message)));
                    }
                }
            }
            // no dynamic broker configs: an empty list, no error
            RESOURCE_BROKER | RESOURCE_BROKER_LOGGER => {}
            other => {
                result = result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_string(format!(
                        "resource type {other} is not supported"
                    ))));
            }
        }
        results.push(result);
    }
    DescribeConfigsResponse::default().with_results(results)
}

fn config_result(
    entry: ConfigEntry,
    version: i16,
    include_synonyms: bool,
) -> DescribeConfigsResourceResult {
    let value = Some(StrBytes::from_string(entry.value.clone()));
    let mut result = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(entry.name.clone()))
        .with_value(value.clone())
        .with_read_only(false)
        .with_config_source(entry.source)
        .with_is_sensitive(false);
    if include_synonyms {
        result = result.with_synonyms(vec![DescribeConfigsSynonym::default()
            .with_name(StrBytes::from_string(entry.name.clone()))
            .with_value(value)
            .with_source(entry.source)]);
    }
    if version >= 3 {
        result = result.with_config_type(entry.config_type);
    }
    result
}
