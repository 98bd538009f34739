//! DescribeConfigs: every Kafka topic config for a topic, with its
//! effective value, source, synonyms, type and (v3+, when asked) what it
//! does in sluice; a broker's settings as this node runs them; a group's
//! configs with Kafka's defaults.

use sluice_metadata::acls::Operation;

use crate::access;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::topic_configs::{
    self, generic_error, AdminError, ConfigEntry, RESOURCE_BROKER, RESOURCE_BROKER_LOGGER,
    RESOURCE_GROUP, RESOURCE_TOPIC,
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
        // null, as Kafka sends it, unless there is an error
        let result = DescribeConfigsResult::default()
            .with_error_message(None)
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let keys: Option<Vec<String>> = resource
            .configuration_keys
            .as_ref()
            .map(|keys| keys.iter().map(|k| k.to_string()).collect());
        let name = resource.resource_name.as_str();
        let described = match resource.resource_type {
            RESOURCE_TOPIC => match access::topic(Operation::DescribeConfigs, name) {
                Ok(()) => describe_topic(context, name).await,
                Err(denied) => Err(denied.into()),
            },
            RESOURCE_BROKER => match access::cluster(Operation::DescribeConfigs) {
                Ok(()) => describe_broker(context, name),
                Err(denied) => Err(denied.into()),
            },
            // no loggers to describe: an empty list, no error
            RESOURCE_BROKER_LOGGER => Ok(Vec::new()),
            RESOURCE_GROUP if name.is_empty() => Err(AdminError::new(
                ResponseError::InvalidGroupId,
                "a group's configs need its id",
            )),
            RESOURCE_GROUP => Ok(topic_configs::describe_group()),
            other => Err(AdminError::new(
                ResponseError::InvalidRequest,
                format!("resource type {other} is not supported"),
            )),
        };
        results.push(match described {
            Ok(entries) => result.with_configs(
                entries
                    .into_iter()
                    .filter(|entry| keys.as_ref().is_none_or(|keys| keys.contains(&entry.name)))
                    .map(|entry| {
                        config_result(
                            entry,
                            version,
                            request.include_synonyms,
                            request.include_documentation,
                        )
                    })
                    .collect(),
            ),
            Err(error) => {
                let (code, message) = error.into_parts();
                result
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(message)))
            }
        });
    }
    DescribeConfigsResponse::default().with_results(results)
}

async fn describe_topic(
    context: &KafkaContext,
    name: &str,
) -> Result<Vec<ConfigEntry>, AdminError> {
    match context.catalog.get_topic(name).await {
        Ok(Some(topic)) => Ok(topic_configs::describe(&topic.record.configs)),
        Ok(None) => Err(AdminError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("unknown topic {name:?}"),
        )),
        Err(error) => Err(generic_error(error)),
    }
}

/// This node's settings; the cluster-wide default resource ("") holds
/// nothing, as sluice has no dynamic broker configs. Another broker's id is
/// refused, as Kafka refuses it: clients ask each broker for its own.
fn describe_broker(context: &KafkaContext, name: &str) -> Result<Vec<ConfigEntry>, AdminError> {
    if name.is_empty() {
        return Ok(Vec::new());
    }
    if name.parse::<i32>().ok() != Some(context.node_id) {
        return Err(AdminError::new(
            ResponseError::InvalidRequest,
            format!(
                "broker {name:?} is not this node ({}): ask that broker",
                context.node_id
            ),
        ));
    }
    let advertised = format!("{}:{}", context.advertised_host, context.advertised_port);
    Ok(topic_configs::describe_broker(
        context.node_id,
        &context.config,
        &advertised,
        context.groups.config(),
    ))
}

fn config_result(
    entry: ConfigEntry,
    version: i16,
    include_synonyms: bool,
    include_documentation: bool,
) -> DescribeConfigsResourceResult {
    let text = |s: &str| Some(StrBytes::from_string(s.to_string()));
    let mut result = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(entry.name.clone()))
        .with_value(text(&entry.value))
        .with_read_only(entry.read_only)
        .with_config_source(entry.source)
        .with_is_sensitive(false);
    if include_synonyms {
        result = result.with_synonyms(
            entry
                .synonyms
                .iter()
                .map(|synonym| {
                    DescribeConfigsSynonym::default()
                        .with_name(StrBytes::from_string(synonym.name.clone()))
                        .with_value(text(&synonym.value))
                        .with_source(synonym.source)
                })
                .collect(),
        );
    }
    if version >= 3 {
        result = result.with_config_type(entry.config_type);
        if include_documentation {
            result = result.with_documentation(text(entry.documentation));
        }
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
    use crate::kafka::topic_configs::{SOURCE_DEFAULT, SOURCE_STATIC_BROKER, SOURCE_TOPIC};

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

    /// Whether a result carries no error message (null, as Kafka sends it).
    fn no_message(result: &DescribeConfigsResult) -> bool {
        result.error_message.is_none()
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
        let synonyms = |entry: &DescribeConfigsResourceResult| -> Vec<(String, String, i8)> {
            entry
                .synonyms
                .iter()
                .map(|s| {
                    let value = s.value.as_ref().unwrap().to_string();
                    (s.name.to_string(), value, s.source)
                })
                .collect()
        };
        // the topic's own value first, then the default under the broker's name
        assert_eq!(
            synonyms(entry(result, "retention.ms")),
            vec![
                ("retention.ms".to_string(), "1000".to_string(), SOURCE_TOPIC),
                (
                    "log.retention.ms".to_string(),
                    "-1".to_string(),
                    SOURCE_DEFAULT
                ),
            ]
        );
        assert_eq!(
            synonyms(entry(result, "segment.ms")),
            vec![(
                "log.roll.ms".to_string(),
                "604800000".to_string(),
                SOURCE_DEFAULT
            )]
        );

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
        assert_eq!(entry(&results[0], "segment.bytes").config_type, TYPE_INT);
        assert_eq!(entry(&results[0], "segment.ms").config_type, TYPE_LONG);
        assert_eq!(entry(&results[0], "preallocate").config_type, 1);
        assert_eq!(
            entry(&results[0], "min.cleanable.dirty.ratio").config_type,
            6
        );
        // documentation only when asked, from v3
        let undocumented = entry(&results[0], "retention.ms").documentation.clone();
        assert!(undocumented.is_none_or(|d| d.is_empty()));
        let request = DescribeConfigsRequest::default()
            .with_resources(vec![resource(RESOURCE_TOPIC, "orders", None)])
            .with_include_documentation(true);
        let response = handle(&node.context, 3, request).await;
        let doc = entry(&response.results[0], "segment.ms")
            .documentation
            .clone();
        assert!(doc.unwrap().contains("Stored only"));
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
    async fn a_broker_shows_its_settings_and_a_group_kafkas_defaults() {
        let node = TestNode::start().await;
        let results = describe(
            &node,
            4,
            vec![
                resource(RESOURCE_BROKER, "1", None),
                resource(RESOURCE_BROKER_LOGGER, "1", None),
                resource(RESOURCE_BROKER, "", None),
                resource(RESOURCE_GROUP, "orders-readers", None),
                resource(RESOURCE_BROKER, "2", None),
                resource(RESOURCE_GROUP, "", None),
                // 16 = client metrics, 0 = unknown
                resource(16, "metrics", None),
                resource(0, "x", None),
            ],
            true,
        )
        .await;
        let broker = &results[0];
        assert_eq!(broker.error_code, 0);
        assert!(no_message(broker));
        assert_eq!(value(entry(broker, "broker.id")), "1");
        assert_eq!(value(entry(broker, "num.partitions")), "1");
        assert_eq!(value(entry(broker, "auto.create.topics.enable")), "true");
        assert_eq!(
            value(entry(broker, "advertised.listeners")),
            "PLAINTEXT://127.0.0.1:9092"
        );
        let retention = entry(broker, "log.retention.ms");
        assert_eq!(value(retention), "-1");
        assert_eq!(retention.config_source, SOURCE_DEFAULT);
        assert!(broker.configs.iter().all(|c| c.read_only));
        assert!(entry(broker, "num.partitions").config_source == SOURCE_STATIC_BROKER);
        // loggers and the cluster-wide dynamic defaults: nothing set
        for result in &results[1..3] {
            assert_eq!(result.error_code, 0);
            assert!(result.configs.is_empty());
        }
        let group = &results[3];
        assert_eq!(group.error_code, 0);
        assert_eq!(value(entry(group, "consumer.session.timeout.ms")), "45000");
        assert_eq!(
            value(entry(group, "consumer.heartbeat.interval.ms")),
            "5000"
        );
        // another broker is asked directly; a group needs an id
        assert_eq!(results[4].error_code, ResponseError::InvalidRequest.code());
        assert_eq!(results[5].error_code, ResponseError::InvalidGroupId.code());
        for result in &results[6..] {
            assert_eq!(
                result.error_code,
                ResponseError::InvalidRequest.code(),
                "resource type {}",
                result.resource_type
            );
            assert!(result.error_message.is_some());
            assert!(result.configs.is_empty());
        }
    }
}
