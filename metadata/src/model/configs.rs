//! Topic configs: every config a Kafka 3.x topic has, its default, type,
//! allowed values, broker-wide synonym, and what sluice does with it. The
//! one table the admin APIs, validation, DescribeConfigs and the HTTP
//! configs endpoint read.
//!
//! sluice accepts every Kafka topic config so that tools which set them
//! (Terraform providers, Kafka's own `kafka-topics`, Strimzi) work
//! unchanged. Some act on the log here ([`Effect::Applied`]); the rest
//! describe a broker's local disks, replication or recompression, which
//! sluice does not have, and are stored and shown but change nothing
//! ([`Effect::Stored`]); each entry's `doc` says which and why.

use std::collections::BTreeMap;

use super::{ModelError, ModelResult};

/// Default `max.message.bytes` of a topic.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_576;

/// The type of a topic config's value (Kafka's `ConfigType` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicConfigType {
    /// `true` or `false`.
    Boolean,
    /// Text.
    String,
    /// A 32-bit integer.
    Int,
    /// A 64-bit integer.
    Long,
    /// A floating-point number.
    Double,
    /// A comma-separated list.
    List,
}

/// The values a config accepts beyond its type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Allowed {
    /// Any value of the type.
    Any,
    /// A number at least this.
    AtLeast(i64),
    /// A number in this closed range.
    Between(i64, i64),
    /// A fraction in 0..=1.
    Fraction,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A non-empty list of these words.
    ListOf(&'static [&'static str]),
}

/// Whether sluice acts on a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// It changes how sluice stores, serves or retains the topic.
    Applied,
    /// It is validated, stored and described, and changes nothing: it
    /// concerns a Kafka broker's disks, replicas or recompression.
    Stored,
}

/// A topic config: Kafka's name, the value a topic that does not set it
/// gets, its type and allowed values, the broker config that sets its
/// cluster-wide default in Kafka, and what sluice does with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopicConfigDef {
    /// Kafka's name.
    pub name: &'static str,
    /// The default.
    pub default: &'static str,
    /// The type.
    pub config_type: TopicConfigType,
    /// Allowed values.
    pub allowed: Allowed,
    /// The broker config of the same meaning (DescribeConfigs synonyms).
    pub broker_synonym: Option<&'static str>,
    /// Whether sluice acts on it.
    pub effect: Effect,
    /// What it does in sluice (DescribeConfigs documentation).
    pub doc: &'static str,
}

const LONG_MAX: &str = "9223372036854775807";

#[allow(clippy::too_many_arguments)]
const fn config(
    name: &'static str,
    default: &'static str,
    config_type: TopicConfigType,
    allowed: Allowed,
    broker_synonym: Option<&'static str>,
    effect: Effect,
    doc: &'static str,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        default,
        config_type,
        allowed,
        broker_synonym,
        effect,
        doc,
    }
}

use Allowed::*;
use Effect::*;
use TopicConfigType as T;

const NO_DISKS: &str = "Stored only: sluice nodes keep no log on local disks.";
const NO_REPLICAS: &str =
    "Stored only: partitions have no replicas; the object store holds every acknowledged record.";
const NO_RECOMPRESSION: &str =
    "Stored only: batches are stored as the producer compressed them, never recompressed.";

/// Every topic config Kafka 3.x has, by name. Unknown names are refused
/// (INVALID_CONFIG), as Kafka refuses them. `retention.ms` defaults to -1
/// (keep forever) where Kafka's is 7 days: the archive keeps every offset
/// readable unless a topic asks otherwise; `max.message.bytes` defaults to
/// 1 MiB.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    config(
        "cleanup.policy",
        "delete",
        T::List,
        ListOf(&["compact", "delete"]),
        Some("log.cleanup.policy"),
        Applied,
        "delete: retention.ms and retention.bytes drop the oldest runs; compact: the compactor \
         keeps the latest record of each key.",
    ),
    config(
        "compression.gzip.level",
        "-1",
        T::Int,
        Between(-1, 9),
        Some("compression.gzip.level"),
        Stored,
        NO_RECOMPRESSION,
    ),
    config(
        "compression.lz4.level",
        "9",
        T::Int,
        Between(1, 17),
        Some("compression.lz4.level"),
        Stored,
        NO_RECOMPRESSION,
    ),
    config(
        "compression.type",
        "producer",
        T::String,
        OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        Some("compression.type"),
        Stored,
        NO_RECOMPRESSION,
    ),
    config(
        "compression.zstd.level",
        "3",
        T::Int,
        Between(-131_072, 22),
        Some("compression.zstd.level"),
        Stored,
        NO_RECOMPRESSION,
    ),
    config(
        "delete.retention.ms",
        "86400000",
        T::Long,
        AtLeast(0),
        Some("log.cleaner.delete.retention.ms"),
        Applied,
        "How long a tombstone of a compacted topic stays readable after compaction reaches it.",
    ),
    config(
        "file.delete.delay.ms",
        "60000",
        T::Long,
        AtLeast(0),
        Some("log.segment.delete.delay.ms"),
        Stored,
        NO_DISKS,
    ),
    config(
        "flush.messages",
        LONG_MAX,
        T::Long,
        AtLeast(1),
        Some("log.flush.interval.messages"),
        Stored,
        "Stored only: a record is acknowledged once its segment object is stored.",
    ),
    config(
        "flush.ms",
        LONG_MAX,
        T::Long,
        AtLeast(0),
        Some("log.flush.interval.ms"),
        Stored,
        "Stored only: a record is acknowledged once its segment object is stored.",
    ),
    config(
        "follower.replication.throttled.replicas",
        "",
        T::List,
        Any,
        Some("follower.replication.throttled.replicas"),
        Stored,
        NO_REPLICAS,
    ),
    config(
        "index.interval.bytes",
        "4096",
        T::Int,
        AtLeast(0),
        Some("log.index.interval.bytes"),
        Stored,
        "Stored only: the offset index lives in the metadata store, one entry per stored run.",
    ),
    config(
        "leader.replication.throttled.replicas",
        "",
        T::List,
        Any,
        Some("leader.replication.throttled.replicas"),
        Stored,
        NO_REPLICAS,
    ),
    config(
        "local.retention.bytes",
        "-2",
        T::Long,
        AtLeast(-2),
        Some("log.local.retention.bytes"),
        Stored,
        NO_DISKS,
    ),
    config(
        "local.retention.ms",
        "-2",
        T::Long,
        AtLeast(-2),
        Some("log.local.retention.ms"),
        Stored,
        NO_DISKS,
    ),
    config(
        "max.compaction.lag.ms",
        LONG_MAX,
        T::Long,
        AtLeast(1),
        Some("log.cleaner.max.compaction.lag.ms"),
        Applied,
        "A record of a compacted topic is compacted at the latest this long after it is written.",
    ),
    config(
        "max.message.bytes",
        "1048576",
        T::Int,
        AtLeast(1),
        Some("message.max.bytes"),
        Applied,
        "The largest record batch (Kafka) or record (HTTP) a producer may send.",
    ),
    config(
        "message.downconversion.enable",
        "true",
        T::Boolean,
        Any,
        Some("log.message.downconversion.enable"),
        Stored,
        "Stored only: consumers fetch record batches v2 (Fetch v4+) and nothing is down-converted.",
    ),
    config(
        "message.format.version",
        "3.0-IV1",
        T::String,
        Any,
        Some("log.message.format.version"),
        Stored,
        "Deprecated in Kafka 3.0 and ignored, as Kafka 3.x ignores it: batches are v2.",
    ),
    config(
        "message.timestamp.after.max.ms",
        LONG_MAX,
        T::Long,
        AtLeast(0),
        Some("log.message.timestamp.after.max.ms"),
        Applied,
        "A CreateTime batch whose timestamp is further ahead of the node's clock is refused.",
    ),
    config(
        "message.timestamp.before.max.ms",
        LONG_MAX,
        T::Long,
        AtLeast(0),
        Some("log.message.timestamp.before.max.ms"),
        Applied,
        "A CreateTime batch whose timestamp is further behind the node's clock is refused.",
    ),
    config(
        "message.timestamp.difference.max.ms",
        LONG_MAX,
        T::Long,
        AtLeast(0),
        Some("log.message.timestamp.difference.max.ms"),
        Applied,
        "Deprecated: the default of message.timestamp.before.max.ms and \
         message.timestamp.after.max.ms where those are not set.",
    ),
    config(
        "message.timestamp.type",
        "CreateTime",
        T::String,
        OneOf(&["CreateTime", "LogAppendTime"]),
        Some("log.message.timestamp.type"),
        Applied,
        "LogAppendTime: records carry the time the node appended them.",
    ),
    config(
        "min.cleanable.dirty.ratio",
        "0.5",
        T::Double,
        Fraction,
        Some("log.cleaner.min.cleanable.ratio"),
        Stored,
        "Stored only: a compacted topic is compacted whenever records older than \
         min.compaction.lag.ms have not been compacted yet.",
    ),
    config(
        "min.compaction.lag.ms",
        "0",
        T::Long,
        AtLeast(0),
        Some("log.cleaner.min.compaction.lag.ms"),
        Applied,
        "A record of a compacted topic stays uncompacted at least this long after it is written.",
    ),
    config(
        "min.insync.replicas",
        "1",
        T::Int,
        AtLeast(1),
        Some("min.insync.replicas"),
        Stored,
        NO_REPLICAS,
    ),
    config(
        "preallocate",
        "false",
        T::Boolean,
        Any,
        Some("log.preallocate"),
        Stored,
        NO_DISKS,
    ),
    config(
        "remote.log.copy.disable",
        "false",
        T::Boolean,
        Any,
        None,
        Stored,
        "Stored only: every segment is in the object store from the start.",
    ),
    config(
        "remote.log.delete.on.disable",
        "false",
        T::Boolean,
        Any,
        None,
        Stored,
        "Stored only: every segment is in the object store from the start.",
    ),
    config(
        "remote.storage.enable",
        "false",
        T::Boolean,
        Any,
        None,
        Stored,
        "Stored only: every segment is in the object store from the start.",
    ),
    config(
        "retention.bytes",
        "-1",
        T::Long,
        AtLeast(-1),
        Some("log.retention.bytes"),
        Applied,
        "The most bytes a partition keeps (delete policy); -1 keeps everything.",
    ),
    config(
        "retention.ms",
        "-1",
        T::Long,
        AtLeast(-1),
        Some("log.retention.ms"),
        Applied,
        "How long a partition keeps records (delete policy); -1 keeps them forever.",
    ),
    config(
        "segment.bytes",
        "1073741824",
        T::Int,
        AtLeast(14),
        Some("log.segment.bytes"),
        Stored,
        "Stored only: a node's segment objects are sized by its own flush settings.",
    ),
    config(
        "segment.index.bytes",
        "10485760",
        T::Int,
        AtLeast(4),
        Some("log.index.size.max.bytes"),
        Stored,
        NO_DISKS,
    ),
    config(
        "segment.jitter.ms",
        "0",
        T::Long,
        AtLeast(0),
        Some("log.roll.jitter.ms"),
        Stored,
        NO_DISKS,
    ),
    config(
        "segment.ms",
        "604800000",
        T::Long,
        AtLeast(1),
        Some("log.roll.ms"),
        Stored,
        "Stored only: a node's segment objects are sealed by its own flush settings.",
    ),
    config(
        "unclean.leader.election.enable",
        "false",
        T::Boolean,
        Any,
        Some("unclean.leader.election.enable"),
        Stored,
        NO_REPLICAS,
    ),
];

/// The known topic config `name`.
pub fn topic_config(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|config| config.name == name)
}

impl TopicConfigDef {
    /// Check `value` against this config's type and allowed values.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let name = self.name;
        let number = || {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("config {name:?} must be an integer, got {value:?}"))
        };
        match self.config_type {
            T::Boolean => {
                if !value.eq_ignore_ascii_case("true") && !value.eq_ignore_ascii_case("false") {
                    return Err(format!(
                        "config {name:?} must be true or false, got {value:?}"
                    ));
                }
            }
            T::Int => {
                i32::try_from(number()?)
                    .map_err(|_| format!("config {name:?} must fit 32 bits, got {value:?}"))?;
            }
            T::Long => {
                number()?;
            }
            T::Double => {
                value
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("config {name:?} must be a number, got {value:?}"))?;
            }
            T::String | T::List => {}
        }
        match self.allowed {
            Any => Ok(()),
            AtLeast(min) if number()? < min => Err(format!(
                "config {name:?} must be at least {min}, got {value:?}"
            )),
            Between(min, max) if !(min..=max).contains(&number()?) => Err(format!(
                "config {name:?} must be between {min} and {max}, got {value:?}"
            )),
            AtLeast(_) | Between(..) => Ok(()),
            Fraction => match value.trim().parse::<f64>() {
                Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
                _ => Err(format!(
                    "config {name:?} must be between 0 and 1, got {value:?}"
                )),
            },
            OneOf(words) if !words.contains(&value) => Err(format!(
                "config {name:?} must be one of {}, got {value:?}",
                words.join(", ")
            )),
            OneOf(_) => Ok(()),
            ListOf(words) => {
                let items: Vec<&str> = value.split(',').map(str::trim).collect();
                if value.trim().is_empty() || items.iter().any(|item| !words.contains(item)) {
                    return Err(format!(
                        "config {name:?} must be a list of {}, got {value:?}",
                        words.join(", ")
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Check topic configs: known names, values of the right type and range.
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> ModelResult<()> {
    for (name, value) in configs {
        let Some(known) = topic_config(name) else {
            return Err(ModelError::Invalid(format!(
                "unknown topic config {name:?}"
            )));
        };
        known.check(value).map_err(ModelError::Invalid)?;
    }
    Ok(())
}

/// A topic's configs, typed: the value it sets, else the default.
#[derive(Debug, Clone, Copy)]
pub struct TopicSettings<'a> {
    configs: &'a BTreeMap<String, String>,
}

impl<'a> TopicSettings<'a> {
    /// The settings of a topic with `configs`.
    pub fn new(configs: &'a BTreeMap<String, String>) -> Self {
        Self { configs }
    }

    /// The effective value of `name` (set, else default; "" when unknown).
    pub fn value(&self, name: &str) -> &'a str {
        match self.configs.get(name) {
            Some(value) => value.as_str(),
            None => topic_config(name).map_or("", |c| c.default),
        }
    }

    /// The effective value of a numeric config.
    pub fn long(&self, name: &str) -> Option<i64> {
        self.value(name).trim().parse().ok()
    }

    /// Whether `cleanup.policy` includes `compact`.
    pub fn compacted(&self) -> bool {
        self.value("cleanup.policy")
            .split(',')
            .any(|p| p.trim() == "compact")
    }

    /// Whether `cleanup.policy` includes `delete` (retention applies).
    pub fn deletes(&self) -> bool {
        self.value("cleanup.policy")
            .split(',')
            .any(|p| p.trim() == "delete")
    }

    /// Whether records are stamped with the time they were appended.
    pub fn log_append_time(&self) -> bool {
        self.value("message.timestamp.type") == "LogAppendTime"
    }

    /// How far behind and ahead of the node's clock a CreateTime batch's
    /// timestamp may be (ms): the explicit bounds, else the deprecated
    /// `message.timestamp.difference.max.ms`.
    pub fn timestamp_bounds(&self) -> (i64, i64) {
        let difference = self
            .long("message.timestamp.difference.max.ms")
            .unwrap_or(i64::MAX);
        let bound = |name: &str| match self.configs.get(name) {
            Some(value) => value.trim().parse().unwrap_or(i64::MAX),
            None => difference,
        };
        (
            bound("message.timestamp.before.max.ms"),
            bound("message.timestamp.after.max.ms"),
        )
    }

    /// `max.message.bytes`.
    pub fn max_message_bytes(&self) -> usize {
        self.long("max.message.bytes")
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_table_is_sorted_by_name_and_every_default_is_valid() {
        let names: Vec<&str> = TOPIC_CONFIGS.iter().map(|c| c.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted, "kept by name, once each");
        for config in TOPIC_CONFIGS {
            if config.default.is_empty() && config.config_type == T::List {
                continue;
            }
            assert_eq!(config.check(config.default), Ok(()), "{}", config.name);
        }
        let max = topic_config("max.message.bytes").unwrap();
        assert_eq!(max.default, DEFAULT_MAX_MESSAGE_BYTES.to_string());
    }

    #[test]
    fn every_kafka_topic_config_is_known() {
        for name in [
            "cleanup.policy",
            "compression.type",
            "delete.retention.ms",
            "file.delete.delay.ms",
            "flush.messages",
            "flush.ms",
            "index.interval.bytes",
            "max.compaction.lag.ms",
            "max.message.bytes",
            "message.downconversion.enable",
            "message.format.version",
            "message.timestamp.type",
            "min.cleanable.dirty.ratio",
            "min.compaction.lag.ms",
            "min.insync.replicas",
            "preallocate",
            "retention.bytes",
            "retention.ms",
            "segment.bytes",
            "segment.index.bytes",
            "segment.jitter.ms",
            "segment.ms",
            "unclean.leader.election.enable",
        ] {
            assert!(topic_config(name).is_some(), "{name}");
        }
    }

    #[test]
    fn values_are_checked_by_type_and_range() {
        let ok = [
            ("cleanup.policy", "compact,delete"),
            ("cleanup.policy", "compact"),
            ("compression.type", "zstd"),
            ("min.cleanable.dirty.ratio", "0.1"),
            ("preallocate", "TRUE"),
            ("retention.ms", "-1"),
            ("message.timestamp.type", "LogAppendTime"),
            ("message.format.version", "2.8"),
            ("leader.replication.throttled.replicas", ""),
        ];
        for (name, value) in ok {
            assert_eq!(
                validate_topic_configs(&configs(&[(name, value)])).ok(),
                Some(()),
                "{name}={value}"
            );
        }
        let bad = [
            ("cleanup.policy", "shred"),
            ("cleanup.policy", ""),
            ("compression.type", "brotli"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("preallocate", "yes"),
            ("retention.ms", "-2"),
            ("retention.ms", "soon"),
            ("max.message.bytes", "0"),
            ("segment.bytes", "9999999999"),
            ("message.timestamp.type", "Now"),
            ("no.such.config", "1"),
        ];
        for (name, value) in bad {
            assert!(
                matches!(
                    validate_topic_configs(&configs(&[(name, value)])),
                    Err(ModelError::Invalid(_))
                ),
                "{name}={value} accepted"
            );
        }
    }

    #[test]
    fn settings_read_set_values_then_defaults() {
        let set = configs(&[
            ("cleanup.policy", "compact, delete"),
            ("message.timestamp.type", "LogAppendTime"),
            ("message.timestamp.difference.max.ms", "5000"),
            ("message.timestamp.after.max.ms", "100"),
        ]);
        let settings = TopicSettings::new(&set);
        assert!(settings.compacted() && settings.deletes() && settings.log_append_time());
        assert_eq!(settings.timestamp_bounds(), (5000, 100));
        assert_eq!(settings.max_message_bytes(), DEFAULT_MAX_MESSAGE_BYTES);
        let none = BTreeMap::new();
        let defaults = TopicSettings::new(&none);
        assert!(!defaults.compacted() && defaults.deletes() && !defaults.log_append_time());
        assert_eq!(defaults.timestamp_bounds(), (i64::MAX, i64::MAX));
        assert_eq!(defaults.long("delete.retention.ms"), Some(86_400_000));
    }
}
