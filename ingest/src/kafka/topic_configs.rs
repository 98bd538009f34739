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

/// `ConfigSource` of a value set on the topic.
pub const SOURCE_TOPIC: i8 = 1;
/// `ConfigSource` of a default value.
pub const SOURCE_DEFAULT: i8 = 5;

/// `ConfigType` values of DescribeConfigs v3+.
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

/// The value sluice applies when a topic does not set `name` (see
/// [`TOPIC_CONFIGS`]).
pub fn default_value(name: &str) -> Option<String> {
    topic_config(name).map(|config| config.default.to_string())
}

/// Kafka's `ConfigType` of a known config.
pub fn config_type(name: &str) -> i8 {
    match topic_config(name).map(|config| config.config_type) {
        Some(TopicConfigType::List) => TYPE_LIST,
        Some(TopicConfigType::Int) => TYPE_INT,
        Some(TopicConfigType::Long) => TYPE_LONG,
        Some(TopicConfigType::String) | None => TYPE_STRING,
    }
}

/// Whether `name` holds a comma-separated list (IncrementalAlterConfigs
/// APPEND and SUBTRACT apply only to those).
pub fn is_list(name: &str) -> bool {
    config_type(name) == TYPE_LIST
}

/// One described config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Config name.
    pub name: String,
    /// Effective value.
    pub value: String,
    /// [`SOURCE_TOPIC`] or [`SOURCE_DEFAULT`].
    pub source: i8,
    /// Kafka `ConfigType`.
    pub config_type: i8,
}

impl ConfigEntry {
    /// Whether the value is sluice's default.
    pub fn is_default(&self) -> bool {
        self.source == SOURCE_DEFAULT
    }
}

/// Every known config of a topic with its effective value, by name; the
/// configs the topic sets first win over the defaults.
pub fn describe(configs: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
    TOPIC_CONFIGS
        .iter()
        .map(|config| config.name)
        .filter_map(|name| {
            let (value, source) = match configs.get(name) {
                Some(value) => (value.clone(), SOURCE_TOPIC),
                None => (default_value(name)?, SOURCE_DEFAULT),
            };
            Some(ConfigEntry {
                name: name.to_string(),
                value,
                source,
                config_type: config_type(name),
            })
        })
        .collect()
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
