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
                        let (code, message) = generic_error(error).into_parts();
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use sluice_metadata::model::TOPIC_CONFIGS;

    use super::*;
    use crate::kafka::testing::{text, TestNode};
    use crate::kafka::topic_configs::{SOURCE_DEFAULT, SOURCE_TOPIC};

    /// Kafka `ConfigType` LONG, LIST and INT.
    const TYPE_LONG: i8 = 5;
    const TYPE_LIST: i8 = 7;
    const TYPE_INT: i8 = 3;

    fn resource(resource_type: i8, name: &str, keys: Option<&[&str]>) -> DescribeConfigsResource {
        DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(text(name))
            .with_configuration_keys(keys.map(|keys| keys.iter().map(|k| text(k)).collect()))
    }

    async fn describe(
        node: &TestNode,
        version: i16,
        resources: Vec<DescribeConfigsResource>,
        include_synonyms: bool,
    ) -> Vec<DescribeConfigsResult> {
        let count = resources.len();
        let request = DescribeConfigsRequest::default()
            .with_resources(resources)
            .with_include_synonyms(include_synonyms);
        let response = handle(&node.context, version, request).await;
        assert_eq!(response.results.len(), count);
        response.results
    }

    fn entry<'a>(
        result: &'a DescribeConfigsResult,
        name: &str,
    ) -> &'a DescribeConfigsResourceResult {
        result
            .configs
            .iter()
            .find(|c| c.name.as_str() == name)
            .unwrap()
    }

    /// Whether a result carries no error message (the codec's default for
    /// a result left without one is an empty string).
    fn no_message(result: &DescribeConfigsResult) -> bool {
        result.error_message.as_ref().is_none_or(|m| m.is_empty())
    }

    fn value(entry: &DescribeConfigsResourceResult) -> &str {
        entry.value.as_ref().unwrap().as_str()
    }

    #[tokio::test]
    async fn describes_every_known_config_of_a_topic_with_its_source() {
        let node = TestNode::start().await;
        node.topic_with(
            "orders",
            &[("retention.ms", "1000"), ("cleanup.policy", "compact")],
        )
        .await;
        let results = describe(
            &node,
            4,
            vec![resource(RESOURCE_TOPIC, "orders", None)],
            false,
        )
        .await;
        let result = &results[0];
        assert_eq!(result.error_code, 0);
        assert!(no_message(result));
        assert_eq!(result.resource_type, RESOURCE_TOPIC);
        assert_eq!(result.resource_name.as_str(), "orders");
        let names: Vec<&str> = result.configs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            TOPIC_CONFIGS.iter().map(|c| c.name).collect::<Vec<_>>()
        );

        let retention = entry(result, "retention.ms");
        assert_eq!(value(retention), "1000");
        assert_eq!(retention.config_source, SOURCE_TOPIC);
        assert_eq!(retention.config_type, TYPE_LONG);
        assert!(!retention.read_only);
        assert!(!retention.is_sensitive);
        assert!(retention.synonyms.is_empty());
        let cleanup = entry(result, "cleanup.policy");
        assert_eq!(value(cleanup), "compact");
        assert_eq!(cleanup.config_type, TYPE_LIST);
        let max = entry(result, "max.message.bytes");
        assert_eq!(value(max), "1048576");
        assert_eq!(max.config_source, SOURCE_DEFAULT);
        assert_eq!(max.config_type, TYPE_INT);
    }

    #[tokio::test]
    async fn configuration_keys_filter_and_synonyms_repeat_the_value() {
        let node = TestNode::start().await;
        node.topic_with("orders", &[("retention.ms", "1000")]).await;
        let keys: &[&str] = &["retention.ms", "segment.ms", "no.such.config"];
        let results = describe(
            &node,
            4,
            vec![resource(RESOURCE_TOPIC, "orders", Some(keys))],
            true,
        )
        .await;
        let result = &results[0];
        assert_eq!(result.error_code, 0);
        let names: Vec<&str> = result.configs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["retention.ms", "segment.ms"]);
        let retention = entry(result, "retention.ms");
        assert_eq!(retention.synonyms.len(), 1);
        assert_eq!(retention.synonyms[0].name.as_str(), "retention.ms");
        assert_eq!(
            retention.synonyms[0].value.as_ref().unwrap().as_str(),
            "1000"
        );
        assert_eq!(retention.synonyms[0].source, SOURCE_TOPIC);
        let segment = entry(result, "segment.ms");
        assert_eq!(segment.synonyms[0].source, SOURCE_DEFAULT);

        // no keys at all: nothing described
        let results = describe(
            &node,
            4,
            vec![resource(RESOURCE_TOPIC, "orders", Some(&[]))],
            false,
        )
        .await;
        assert_eq!(results[0].error_code, 0);
        assert!(results[0].configs.is_empty());
    }

    #[tokio::test]
    async fn config_types_come_from_version_three_on() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        let results = describe(
            &node,
            2,
            vec![resource(RESOURCE_TOPIC, "orders", None)],
            false,
        )
        .await;
        assert_eq!(results[0].error_code, 0);
        assert!(results[0].configs.iter().all(|c| c.config_type == 0));
        let results = describe(
            &node,
            3,
            vec![resource(RESOURCE_TOPIC, "orders", None)],
            false,
        )
        .await;
        assert_eq!(entry(&results[0], "segment.bytes").config_type, TYPE_LONG);
    }

    #[tokio::test]
    async fn an_unknown_topic_is_unknown_topic_or_partition() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        let results = describe(
            &node,
            4,
            vec![
                resource(RESOURCE_TOPIC, "ghost", None),
                resource(RESOURCE_TOPIC, "orders", None),
            ],
            false,
        )
        .await;
        assert_eq!(
            results[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert!(results[0].error_message.as_ref().unwrap().contains("ghost"));
        assert_eq!(results[0].resource_name.as_str(), "ghost");
        assert!(results[0].configs.is_empty());
        assert_eq!(results[1].error_code, 0);
        assert!(!results[1].configs.is_empty());
        // describing creates nothing
        assert!(node.context.view.topic("ghost").is_none());
    }

    #[tokio::test]
    async fn brokers_have_no_dynamic_configs_and_other_types_are_invalid() {
        let node = TestNode::start().await;
        let results = describe(
            &node,
            4,
            vec![
                resource(RESOURCE_BROKER, "1", None),
                resource(RESOURCE_BROKER_LOGGER, "1", None),
                resource(RESOURCE_BROKER, "", None),
                // 16 = client metrics, 32 = group, 0 = unknown
                resource(16, "metrics", None),
                resource(32, "group", None),
                resource(0, "x", None),
            ],
            false,
        )
        .await;
        for result in &results[..3] {
            assert_eq!(result.error_code, 0);
            assert!(no_message(result));
            assert!(result.configs.is_empty());
        }
        for result in &results[3..] {
            assert_eq!(
                result.error_code,
                ResponseError::InvalidRequest.code(),
                "resource type {}",
                result.resource_type
            );
            assert!(result.error_message.is_some());
            assert!(result.configs.is_empty());
        }
        assert_eq!(results[3].resource_type, 16);
    }
}
