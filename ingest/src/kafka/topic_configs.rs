//! What the admin APIs share about topic configs: the default of every
//! config sluice knows, its Kafka type, how a topic's effective configs are
//! described, and how model errors map to admin error codes.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use sluice_metadata::model::{topic_config, ModelError, TopicConfigType, TOPIC_CONFIGS};

use crate::error::IngestError;

/// Kafka `ConfigResource.Type` of a topic.
pub const RESOURCE_TOPIC: i8 = 2;
/// Kafka `ConfigResource.Type` of a broker.
pub const RESOURCE_BROKER: i8 = 4;
/// Kafka `ConfigResource.Type` of a broker's loggers.
pub const RESOURCE_BROKER_LOGGER: i8 = 8;
/// Kafka `ConfigResource.Type` of a consumer group (KIP-848).
pub const RESOURCE_GROUP: i8 = 32;

/// `ConfigSource` of a value set on the topic.
pub const SOURCE_TOPIC: i8 = 1;
/// `ConfigSource` of a value from the node's own configuration.
pub const SOURCE_STATIC_BROKER: i8 = 4;
/// `ConfigSource` of a default value.
pub const SOURCE_DEFAULT: i8 = 5;
/// `ConfigSource` of a value set on a group.
pub const SOURCE_GROUP: i8 = 8;

/// `ConfigType` values of DescribeConfigs v3+.
pub const TYPE_BOOLEAN: i8 = 1;
/// `ConfigType` STRING.
pub const TYPE_STRING: i8 = 2;
/// `ConfigType` INT.
pub const TYPE_INT: i8 = 3;
/// `ConfigType` LONG.
pub const TYPE_LONG: i8 = 5;
/// `ConfigType` DOUBLE.
pub const TYPE_DOUBLE: i8 = 6;
/// `ConfigType` LIST.
pub const TYPE_LIST: i8 = 7;

/// The value sluice applies when a topic does not set `name` (see
/// [`TOPIC_CONFIGS`]).
pub fn default_value(name: &str) -> Option<String> {
    topic_config(name).map(|config| config.default.to_string())
}

fn type_code(config_type: TopicConfigType) -> i8 {
    match config_type {
        TopicConfigType::Boolean => TYPE_BOOLEAN,
        TopicConfigType::String => TYPE_STRING,
        TopicConfigType::Int => TYPE_INT,
        TopicConfigType::Long => TYPE_LONG,
        TopicConfigType::Double => TYPE_DOUBLE,
        TopicConfigType::List => TYPE_LIST,
    }
}

/// Kafka's `ConfigType` of a known config.
pub fn config_type(name: &str) -> i8 {
    topic_config(name).map_or(TYPE_STRING, |config| type_code(config.config_type))
}

/// Whether `name` holds a comma-separated list (IncrementalAlterConfigs
/// APPEND and SUBTRACT apply only to those).
pub fn is_list(name: &str) -> bool {
    config_type(name) == TYPE_LIST
}

/// One source a described value could come from, in precedence order
/// (DescribeConfigs synonyms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synonym {
    /// The config's name at that source (a broker-wide name for defaults).
    pub name: String,
    /// Its value there.
    pub value: String,
    /// `ConfigSource`.
    pub source: i8,
}

/// One described config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Config name.
    pub name: String,
    /// Effective value.
    pub value: String,
    /// Where the value comes from (`ConfigSource`).
    pub source: i8,
    /// Kafka `ConfigType`.
    pub config_type: i8,
    /// Whether AlterConfigs may change it.
    pub read_only: bool,
    /// Every source of a value, the effective one first.
    pub synonyms: Vec<Synonym>,
    /// What it does in sluice.
    pub documentation: &'static str,
}

impl ConfigEntry {
    /// Whether the value is sluice's default.
    pub fn is_default(&self) -> bool {
        self.source == SOURCE_DEFAULT
    }

    /// A fixed value of a broker or group: `source`, read-only, its own
    /// only synonym.
    fn fixed(
        name: &str,
        value: String,
        source: i8,
        config_type: i8,
        documentation: &'static str,
    ) -> Self {
        Self {
            name: name.to_string(),
            synonyms: vec![Synonym {
                name: name.to_string(),
                value: value.clone(),
                source,
            }],
            value,
            source,
            config_type,
            read_only: true,
            documentation,
        }
    }
}

/// Every topic config with a topic's effective value, by name: what the
/// topic sets wins over the default, which Kafka would take from the broker
/// config named as the synonym.
pub fn describe(configs: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
    TOPIC_CONFIGS
        .iter()
        .map(|config| {
            let default = Synonym {
                name: config.broker_synonym.unwrap_or(config.name).to_string(),
                value: config.default.to_string(),
                source: SOURCE_DEFAULT,
            };
            let mut synonyms = Vec::with_capacity(2);
            if let Some(value) = configs.get(config.name) {
                synonyms.push(Synonym {
                    name: config.name.to_string(),
                    value: value.clone(),
                    source: SOURCE_TOPIC,
                });
            }
            synonyms.push(default);
            ConfigEntry {
                name: config.name.to_string(),
                value: synonyms[0].value.clone(),
                source: synonyms[0].source,
                config_type: type_code(config.config_type),
                read_only: false,
                synonyms,
                documentation: config.doc,
            }
        })
        .collect()
}

/// What a node's broker resource shows: the node's settings that Kafka
/// clients and tools look for, as the node runs them (read-only: they come
/// from its configuration), and the broker-wide name of every topic
/// config's default.
pub fn describe_broker(
    node_id: i32,
    kafka: &super::KafkaConfig,
    advertised: &str,
    groups: &crate::group::GroupConfig,
) -> Vec<ConfigEntry> {
    let from_node = "Set by the node's configuration (sluice config show).";
    let ms = |d: std::time::Duration| d.as_millis().to_string();
    let mut entries = vec![
        ConfigEntry::fixed(
            "advertised.listeners",
            format!("PLAINTEXT://{advertised}"),
            SOURCE_STATIC_BROKER,
            TYPE_STRING,
            from_node,
        ),
        ConfigEntry::fixed(
            "auto.create.topics.enable",
            kafka.auto_create_topics.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_BOOLEAN,
            from_node,
        ),
        ConfigEntry::fixed(
            "broker.id",
            node_id.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_INT,
            from_node,
        ),
        ConfigEntry::fixed(
            "default.replication.factor",
            "1".to_string(),
            SOURCE_DEFAULT,
            TYPE_INT,
            "Partitions have no replicas: the object store holds every acknowledged record.",
        ),
        ConfigEntry::fixed(
            "group.initial.rebalance.delay.ms",
            ms(groups.initial_rebalance_delay),
            SOURCE_STATIC_BROKER,
            TYPE_INT,
            from_node,
        ),
        ConfigEntry::fixed(
            "group.max.session.timeout.ms",
            ms(groups.session_timeout_max),
            SOURCE_STATIC_BROKER,
            TYPE_INT,
            from_node,
        ),
        ConfigEntry::fixed(
            "group.min.session.timeout.ms",
            ms(groups.session_timeout_min),
            SOURCE_STATIC_BROKER,
            TYPE_INT,
            from_node,
        ),
        ConfigEntry::fixed(
            "node.id",
            node_id.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_INT,
            from_node,
        ),
        ConfigEntry::fixed(
            "num.partitions",
            kafka.default_partitions.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_INT,
            from_node,
        ),
        ConfigEntry::fixed(
            "socket.request.max.bytes",
            kafka.request_max_bytes.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_INT,
            from_node,
        ),
    ];
    for config in TOPIC_CONFIGS {
        let Some(name) = config.broker_synonym else {
            continue;
        };
        if entries.iter().any(|e| e.name == name) {
            continue;
        }
        entries.push(ConfigEntry::fixed(
            name,
            config.default.to_string(),
            SOURCE_DEFAULT,
            type_code(config.config_type),
            config.doc,
        ));
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}

/// Every config of a group resource (KIP-848 and KIP-932 names) with
/// Kafka's defaults. They govern the new group protocols, which sluice does
/// not serve; classic groups take their timeouts from each member's
/// JoinGroup.
pub fn describe_group() -> Vec<ConfigEntry> {
    let doc = "Kafka's default, shown for tools: it governs the consumer and share group                protocols, which sluice does not serve; classic groups use the timeouts each                member sends.";
    [
        ("consumer.heartbeat.interval.ms", "5000", TYPE_INT),
        ("consumer.session.timeout.ms", "45000", TYPE_INT),
        ("share.auto.offset.reset", "latest", TYPE_STRING),
        ("share.heartbeat.interval.ms", "5000", TYPE_INT),
        ("share.record.lock.duration.ms", "30000", TYPE_INT),
        ("share.session.timeout.ms", "45000", TYPE_INT),
    ]
    .into_iter()
    .map(|(name, value, config_type)| {
        ConfigEntry::fixed(name, value.to_string(), SOURCE_DEFAULT, config_type, doc)
    })
    .collect()
}

/// The resources (type, name) named more than once in one request: Kafka
/// refuses each such resource with INVALID_REQUEST rather than apply one.
pub fn duplicated<'a>(
    resources: impl IntoIterator<Item = (i8, &'a str)>,
) -> std::collections::HashSet<(i8, String)> {
    let mut seen = std::collections::HashSet::new();
    let mut twice = std::collections::HashSet::new();
    for (kind, name) in resources {
        if !seen.insert((kind, name)) {
            twice.insert((kind, name.to_string()));
        }
    }
    twice
}

/// The refusal of a resource named more than once.
pub fn duplicate_resource(name: &str) -> AdminError {
    AdminError::new(
        ResponseError::InvalidRequest,
        format!("resource {name:?} appears more than once in the request"),
    )
}

/// Why an admin operation on one resource (a topic, its partitions, its
/// configs) failed: the Kafka error it is answered with, and a message for
/// the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    /// The Kafka error.
    pub error: ResponseError,
    /// What went wrong, for the client.
    pub message: String,
}

impl AdminError {
    /// `error`, explained by `message`.
    pub fn new(error: ResponseError, message: impl Into<String>) -> Self {
        Self {
            error,
            message: message.into(),
        }
    }

    /// The Kafka error code.
    pub fn code(&self) -> i16 {
        self.error.code()
    }

    /// The (code, message) a response carries.
    pub fn into_parts(self) -> (i16, String) {
        (self.code(), self.message)
    }
}

impl From<IngestError> for AdminError {
    fn from(error: IngestError) -> Self {
        AdminError::new(error.kind().kafka_error(), error.to_string())
    }
}

/// Map a model error of a config change: invalid input is INVALID_CONFIG.
pub fn config_error(error: ModelError) -> AdminError {
    match error {
        ModelError::Invalid(reason) => AdminError::new(ResponseError::InvalidConfig, reason),
        other => generic_error(other),
    }
}

/// Map any other model error through the listener's one mapping
/// ([`crate::error::ErrorKind::kafka_error`]).
pub fn generic_error(error: ModelError) -> AdminError {
    let message = error.to_string();
    let error = IngestError::from(error);
    AdminError::new(error.kind().kafka_error(), message)
}

/// Split an optional error into the (code, message) pair of a response.
pub fn error_parts(result: Result<(), AdminError>) -> (i16, Option<String>) {
    match result {
        Ok(()) => (0, None),
        Err(error) => (error.code(), Some(error.message)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_known_config_has_a_default_and_set_values_win() {
        for name in TOPIC_CONFIGS.iter().map(|c| c.name) {
            assert!(default_value(name).is_some(), "{name}");
        }
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "1000".to_string());
        let entries = describe(&configs);
        assert_eq!(entries.len(), TOPIC_CONFIGS.len());
        let retention = entries.iter().find(|e| e.name == "retention.ms").unwrap();
        assert_eq!(retention.value, "1000");
        assert_eq!(retention.source, SOURCE_TOPIC);
        assert!(!retention.is_default());
        let max = entries
            .iter()
            .find(|e| e.name == "max.message.bytes")
            .unwrap();
        assert_eq!(max.value, "1048576");
        assert!(max.is_default());
        assert!(is_list("cleanup.policy"));
        assert!(!is_list("retention.ms"));
    }
}
