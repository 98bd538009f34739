//! A topic's rules for the records produced to it, shared by both front
//! doors and applied before anything is appended:
//!
//! - a compacted topic (`cleanup.policy` with `compact`) refuses a record
//!   without a key: compaction keeps the latest record per key, and a
//!   keyless record has none (Kafka: INVALID_RECORD);
//! - a CreateTime topic refuses a record whose timestamp is further behind
//!   or ahead of the node's clock than `message.timestamp.before.max.ms` /
//!   `message.timestamp.after.max.ms` allow (Kafka: INVALID_TIMESTAMP);
//! - a LogAppendTime topic stamps its batches with the time of append.
//!
//! A refusal names every offending record by its index in its batch
//! (KIP-467) and refuses the whole batch run, as Kafka does.

use bytes::{Bytes, BytesMut};
use sluice_metadata::model::Topic;
use sluice_segment::batch;

use crate::error::{IngestError, IngestResult};

/// Why a record is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRefusal {
    /// Refused for its timestamp (else for its content).
    pub timestamp: bool,
    /// What is wrong, for the client.
    pub reason: String,
}

/// The record rules of one topic.
#[derive(Debug, Clone)]
pub struct TopicRules {
    name: String,
    compacted: bool,
    log_append_time: bool,
    before_max_ms: i64,
    after_max_ms: i64,
}

/// Produced batches after the rules: the bytes to store and, for a
/// LogAppendTime topic, the time they were stamped with.
#[derive(Debug, Clone)]
pub struct Ruled {
    /// What to append.
    pub batches: Bytes,
    /// The log append time stamped, if the topic uses it.
    pub log_append_time_ms: Option<i64>,
}

impl TopicRules {
    /// The rules of `topic`.
    pub fn of(topic: &Topic) -> Self {
        let settings = topic.record.settings();
        let (before_max_ms, after_max_ms) = settings.timestamp_bounds();
        Self {
            name: topic.record.name.clone(),
            compacted: settings.compacted(),
            log_append_time: settings.log_append_time(),
            before_max_ms,
            after_max_ms,
        }
    }

    /// Whether records are stamped with the time of append.
    pub fn log_append_time(&self) -> bool {
        self.log_append_time
    }

    fn checks_timestamps(&self) -> bool {
        !self.log_append_time && (self.before_max_ms != i64::MAX || self.after_max_ms != i64::MAX)
    }

    /// Whether a record must be looked at one by one.
    fn checks_records(&self) -> bool {
        self.compacted || self.checks_timestamps()
    }

    /// Check one record: its key's presence and its timestamp at `now_ms`.
    pub fn check_record(
        &self,
        has_key: bool,
        timestamp_ms: i64,
        now_ms: i64,
    ) -> Result<(), RecordRefusal> {
        if self.compacted && !has_key {
            return Err(RecordRefusal {
                timestamp: false,
                reason: format!(
                    "compacted topic {:?} cannot accept a record without a key",
                    self.name
                ),
            });
        }
        if self.checks_timestamps() {
            let earliest = now_ms.saturating_sub(self.before_max_ms);
            let latest = now_ms.saturating_add(self.after_max_ms);
            if !(earliest..=latest).contains(&timestamp_ms) {
                return Err(RecordRefusal {
                    timestamp: true,
                    reason: format!(
                        "timestamp {timestamp_ms} is out of range: topic {:?} accepts \
                         [{earliest}, {latest}] at {now_ms}",
                        self.name
                    ),
                });
            }
        }
        Ok(())
    }

    /// Apply the rules to produced batches (already validated) at
    /// `now_ms`: refuse them whole if any record breaks a rule, naming each
    /// such record; stamp them when the topic uses LogAppendTime.
    pub fn apply(&self, batches: Bytes, now_ms: i64) -> IngestResult<Ruled> {
        if self.checks_records() {
            let facts = batch::record_facts(&batches)
                .map_err(|error| IngestError::CorruptBatch(error.to_string()))?;
            let mut refused = Vec::new();
            let mut timestamp = false;
            for fact in facts {
                if let Err(refusal) = self.check_record(fact.has_key, fact.timestamp_ms, now_ms) {
                    timestamp |= refusal.timestamp;
                    refused.push((fact.index as i32, refusal.reason));
                }
            }
            if let Some((_, first)) = refused.first() {
                let message = if refused.len() == 1 {
                    first.clone()
                } else {
                    format!("{first} (and {} more records)", refused.len() - 1)
                };
                return Err(IngestError::RecordsRefused {
                    timestamp,
                    records: refused,
                    message,
                });
            }
        }
        if !self.log_append_time {
            return Ok(Ruled {
                batches,
                log_append_time_ms: None,
            });
        }
        let mut stamped = BytesMut::from(&batches[..]);
        batch::set_log_append_time(&mut stamped, now_ms)
            .map_err(|error| IngestError::CorruptBatch(error.to_string()))?;
        Ok(Ruled {
            batches: stamped.freeze(),
            log_append_time_ms: Some(now_ms),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use sluice_metadata::model::TopicRecord;
    use sluice_segment::NewRecord;

    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn topic(configs: &[(&str, &str)]) -> Topic {
        Topic {
            record: TopicRecord {
                id: "t".into(),
                name: "orders".into(),
                partitions: 1,
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
                created_ms: 0,
            },
            create_revision: 1,
            mod_revision: 1,
        }
    }

    fn record(key: Option<&str>, timestamp_ms: i64) -> NewRecord {
        NewRecord {
            key: key.map(|k| Bytes::from(k.to_string())),
            value: Some(Bytes::from_static(b"v")),
            headers: Vec::new(),
            timestamp_ms,
        }
    }

    #[test]
    fn a_plain_topic_passes_batches_through_untouched() {
        let batches = batch::encode(&[record(None, 0)]).unwrap();
        let ruled = TopicRules::of(&topic(&[]))
            .apply(batches.clone(), NOW)
            .unwrap();
        assert_eq!(ruled.batches, batches);
        assert_eq!(ruled.log_append_time_ms, None);
    }

    #[test]
    fn a_compacted_topic_refuses_keyless_records_by_index() {
        let rules = TopicRules::of(&topic(&[("cleanup.policy", "compact,delete")]));
        let batches =
            batch::encode(&[record(Some("a"), NOW), record(None, NOW), record(None, NOW)]).unwrap();
        let Err(IngestError::RecordsRefused {
            timestamp,
            records,
            message,
        }) = rules.apply(batches, NOW)
        else {
            panic!("accepted")
        };
        assert!(!timestamp);
        assert_eq!(
            records.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(message.contains("without a key"), "{message}");
        let keyed = batch::encode(&[record(Some("a"), NOW)]).unwrap();
        assert!(rules.apply(keyed, NOW).is_ok());
    }

    #[test]
    fn create_time_bounds_refuse_records_too_old_or_too_new() {
        let rules = TopicRules::of(&topic(&[
            ("message.timestamp.before.max.ms", "1000"),
            ("message.timestamp.after.max.ms", "10"),
        ]));
        for (timestamp, ok) in [
            (NOW, true),
            (NOW - 1000, true),
            (NOW - 1001, false),
            (NOW + 10, true),
            (NOW + 11, false),
        ] {
            let batches = batch::encode(&[record(Some("a"), timestamp)]).unwrap();
            match rules.apply(batches, NOW) {
                Ok(_) => assert!(ok, "{timestamp} accepted"),
                Err(IngestError::RecordsRefused {
                    timestamp: true,
                    records,
                    ..
                }) => {
                    assert!(!ok, "{timestamp} refused");
                    assert_eq!(records[0].0, 0);
                }
                Err(other) => panic!("{other}"),
            }
        }
    }

    #[test]
    fn log_append_time_stamps_the_batches_and_ignores_the_bounds() {
        let rules = TopicRules::of(&topic(&[
            ("message.timestamp.type", "LogAppendTime"),
            ("message.timestamp.difference.max.ms", "1"),
        ]));
        let batches = batch::encode(&[record(Some("a"), 5)]).unwrap();
        let ruled = rules.apply(batches, NOW).unwrap();
        assert_eq!(ruled.log_append_time_ms, Some(NOW));
        assert_eq!(batch::validate(&ruled.batches).unwrap().max_timestamp, NOW);
        let decoded = batch::decode(ruled.batches).unwrap();
        assert_eq!(decoded[0].timestamp_ms, NOW);
    }
}
