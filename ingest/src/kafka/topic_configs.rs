//! What the admin APIs share about topic configs: the default of every
//! config sluice knows, its Kafka type, how a topic's effective configs are
//! described, and how model errors map to admin error codes.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use sluice_metadata::model::{ModelError, DEFAULT_MAX_MESSAGE_BYTES, KNOWN_TOPIC_CONFIGS};

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

/// The value sluice applies when a topic does not set `name`.
///
/// `retention.ms` and `retention.bytes` default to -1 (keep forever): the
/// archive keeps every offset readable unless a topic asks otherwise.
pub fn default_value(name: &str) -> Option<String> {
    let value = match name {
        "cleanup.policy" => "delete".to_string(),
        "compression.type" => "producer".to_string(),
        "max.message.bytes" => DEFAULT_MAX_MESSAGE_BYTES.to_string(),
        "message.timestamp.type" => "CreateTime".to_string(),
        "min.insync.replicas" => "1".to_string(),
        "retention.bytes" => "-1".to_string(),
        "retention.ms" => "-1".to_string(),
        "segment.bytes" => "1073741824".to_string(),
        "segment.ms" => "604800000".to_string(),
        _ => return None,
    };
    Some(value)
}

/// Kafka's `ConfigType` of a known config.
pub fn config_type(name: &str) -> i8 {
    match name {
        "cleanup.policy" => TYPE_LIST,
        "max.message.bytes" | "min.insync.replicas" => TYPE_INT,
        "retention.bytes" | "retention.ms" | "segment.bytes" | "segment.ms" => TYPE_LONG,
        _ => TYPE_STRING,
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
    KNOWN_TOPIC_CONFIGS
        .iter()
        .filter_map(|&name| {
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

/// An admin error: Kafka code and message.
pub type AdminError = (i16, String);

/// Map a model error of a config change: invalid input is INVALID_CONFIG.
pub fn config_error(error: ModelError) -> AdminError {
    match error {
        ModelError::Invalid(reason) => (ResponseError::InvalidConfig.code(), reason),
        other => generic_error(other),
    }
}

/// Map any other model error through the listener's one mapping.
pub fn generic_error(error: ModelError) -> AdminError {
    let message = error.to_string();
    let error = IngestError::from(error);
    (error.kind().kafka_error_code(), message)
}

/// Split an optional error into the (code, message) pair of a response.
pub fn error_parts(result: Result<(), AdminError>) -> (i16, Option<String>) {
    match result {
        Ok(()) => (0, None),
        Err((code, message)) => (code, Some(message)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_known_config_has_a_default_and_set_values_win() {
        for name in KNOWN_TOPIC_CONFIGS {
            assert!(default_value(name).is_some(), "{name}");
        }
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "1000".to_string());
        let entries = describe(&configs);
        assert_eq!(entries.len(), KNOWN_TOPIC_CONFIGS.len());
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
