//! Key compaction: of a run of records in offset order, keep the latest
//! record of each key, as Kafka's log cleaner does. A tombstone (a record
//! with a key and no value) is kept, so that readers learn the key is gone,
//! until `delete.retention.ms` after its timestamp; a record without a key
//! cannot be compacted and is dropped, as Kafka's cleaner drops it.
//! Offsets are kept: the compacted run has gaps where records were dropped.

use std::collections::HashMap;

use bytes::Bytes;
use sluice_segment::batch::StoredRecord;

/// What compaction kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// The records kept, in offset order.
    pub records: Vec<StoredRecord>,
    /// When the first tombstone kept may be dropped.
    pub tombstones_expire_ms: Option<i64>,
    /// Records dropped.
    pub dropped: usize,
}

/// Compact `records` (offset order) at `now_ms`.
pub fn compact(records: Vec<StoredRecord>, now_ms: i64, delete_retention_ms: i64) -> Compacted {
    let mut latest: HashMap<Bytes, i64> = HashMap::with_capacity(records.len());
    for record in &records {
        if let Some(key) = &record.key {
            latest.insert(key.clone(), record.offset);
        }
    }
    let total = records.len();
    let mut tombstones_expire_ms: Option<i64> = None;
    let kept: Vec<StoredRecord> = records
        .into_iter()
        .filter(|record| {
            let Some(key) = &record.key else {
                return false;
            };
            if latest.get(key) != Some(&record.offset) {
                return false;
            }
            if record.value.is_none() {
                let expires = record
                    .timestamp_ms
                    .saturating_add(delete_retention_ms.max(0));
                if expires <= now_ms {
                    return false;
                }
                tombstones_expire_ms =
                    Some(tombstones_expire_ms.map_or(expires, |t| t.min(expires)));
            }
            true
        })
        .collect();
    Compacted {
        dropped: total - kept.len(),
        records: kept,
        tombstones_expire_ms,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(
        offset: i64,
        key: Option<&str>,
        value: Option<&str>,
        timestamp_ms: i64,
    ) -> StoredRecord {
        StoredRecord {
            offset,
            timestamp_ms,
            key: key.map(|k| Bytes::from(k.to_string())),
            value: value.map(|v| Bytes::from(v.to_string())),
            headers: Vec::new(),
        }
    }

    fn kept(compacted: &Compacted) -> Vec<(i64, Option<&str>)> {
        compacted
            .records
            .iter()
            .map(|r| {
                let value = r.value.as_ref().map(|v| std::str::from_utf8(v).unwrap());
                (r.offset, value)
            })
            .collect()
    }

    #[test]
    fn keeps_the_latest_record_of_each_key_at_its_offset() {
        let records = vec![
            record(0, Some("a"), Some("a1"), 0),
            record(1, Some("b"), Some("b1"), 0),
            record(2, Some("a"), Some("a2"), 0),
            record(3, None, Some("keyless"), 0),
            record(4, Some("c"), Some("c1"), 0),
            record(5, Some("b"), Some("b2"), 0),
        ];
        let compacted = compact(records, 0, 1_000);
        assert_eq!(
            kept(&compacted),
            vec![(2, Some("a2")), (4, Some("c1")), (5, Some("b2"))]
        );
        assert_eq!(compacted.dropped, 3);
        assert_eq!(compacted.tombstones_expire_ms, None);
    }

    #[test]
    fn tombstones_stay_until_delete_retention_after_their_timestamp() {
        let records = vec![
            record(0, Some("a"), Some("a1"), 100),
            record(1, Some("a"), None, 200),
            record(2, Some("b"), None, 300),
        ];
        // young: both tombstones kept, the older one expires first
        let young = compact(records.clone(), 1_000, 1_000);
        assert_eq!(kept(&young), vec![(1, None), (2, None)]);
        assert_eq!(young.tombstones_expire_ms, Some(1_200));
        // one has expired
        let later = compact(records.clone(), 1_250, 1_000);
        assert_eq!(kept(&later), vec![(2, None)]);
        assert_eq!(later.tombstones_expire_ms, Some(1_300));
        // all gone; the superseded value went with the first compaction
        let old = compact(records, 5_000, 1_000);
        assert!(old.records.is_empty());
        assert_eq!(old.dropped, 3);
    }
}
