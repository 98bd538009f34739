//! Producing records that arrive as values rather than Kafka batches (the
//! HTTP front door): partition choice like Kafka's default partitioner,
//! size checks against `max.message.bytes`, encoding into RecordBatch v2 and
//! appending to the node's segment buffer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use sluice_metadata::model::Topic;
use sluice_metadata::view::ClusterView;
use sluice_segment::batch::{self, NewRecord};
use sluice_segment::BatchSummary;

use crate::error::{IngestError, IngestResult};
use crate::rules::TopicRules;
use crate::writer::{Pending, Writer};

/// Bytes a record adds to a batch beyond its key, value and headers (an
/// upper bound of the varint fields).
const RECORD_OVERHEAD_BYTES: usize = 32;
/// Bytes of a batch header.
const BATCH_OVERHEAD_BYTES: usize = batch::BATCH_HEADER_BYTES;
/// Most records encoded into one batch.
pub const RECORDS_PER_BATCH_MAX: usize = 10_000;

/// One encoded run of records handed to the writer: (record index,
/// timestamp) per record, its partition, and the pending append.
type SubmittedRun = (Vec<(usize, i64)>, i32, IngestResult<Pending>);

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp stored, ms since the epoch.
    pub timestamp_ms: i64,
}

/// Kafka's murmur2 hash (the Java client's `Utils.murmur2`), used by the
/// default partitioner so that keyed records land where Kafka puts them.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's default partition for a key.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// The size a record takes in a batch, bounded from above.
pub fn record_size(record: &NewRecord) -> usize {
    RECORD_OVERHEAD_BYTES
        + record.key.as_ref().map_or(0, |k| k.len())
        + record.value.as_ref().map_or(0, |v| v.len())
        + record
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + 10)
            .sum::<usize>()
}

/// Produces value records into topics; shared by the front doors.
#[derive(Debug)]
pub struct Producer {
    view: Arc<ClusterView>,
    writer: Writer,
    round_robin: AtomicU32,
    /// Seal the segment once a call's records are appended (instead of
    /// waiting for the writer's interval).
    seal_each_call: bool,
}

impl Producer {
    /// A producer appending through `writer`, resolving topics in `view`.
    pub fn new(view: Arc<ClusterView>, writer: Writer) -> Self {
        Self {
            view,
            writer,
            round_robin: AtomicU32::new(0),
            seal_each_call: false,
        }
    }

    /// This producer, sealing the writer's segment as soon as a call's
    /// records are appended: each [`Producer::produce`] call becomes one
    /// object and one commit (unless it exceeds `segment_max_bytes`). For
    /// a front door with one request at a time, the Lambda function.
    pub fn sealing_each_call(mut self) -> Self {
        self.seal_each_call = true;
        self
    }

    /// The cluster view.
    pub fn view(&self) -> &Arc<ClusterView> {
        &self.view
    }

    /// The writer.
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Resolve a topic by name.
    pub fn topic(&self, name: &str) -> IngestResult<Topic> {
        self.view
            .topic(name)
            .ok_or_else(|| IngestError::UnknownTopic(name.to_string()))
    }

    /// The partition a record goes to: the one asked for (checked), else by
    /// key hash, else round-robin.
    pub fn choose_partition(
        &self,
        topic: &Topic,
        partition: Option<i32>,
        key: Option<&[u8]>,
    ) -> IngestResult<i32> {
        let count = topic.record.partitions;
        match (partition, key) {
            (Some(p), _) if (0..count).contains(&p) => Ok(p),
            (Some(p), _) => Err(IngestError::UnknownPartition {
                topic: topic.record.name.clone(),
                partition: p,
            }),
            (None, Some(key)) => Ok(partition_for_key(key, count)),
            (None, None) => {
                Ok((self.round_robin.fetch_add(1, Ordering::Relaxed) % count.max(1) as u32) as i32)
            }
        }
    }

    /// Produce `records` (each with its chosen partition) in order. Records
    /// of one partition are encoded into as few batches as
    /// `max.message.bytes` allows, appended in order, and answered together
    /// after their commit. Returns one result per record, in input order.
    pub async fn produce(
        &self,
        topic: &Topic,
        records: Vec<(i32, NewRecord)>,
    ) -> Vec<IngestResult<Delivery>> {
        let max_bytes = topic.record.max_message_bytes();
        let rules = TopicRules::of(topic);
        let now_ms = self.view.catalog().clock().now_ms();
        let mut results: Vec<IngestResult<Delivery>> = Vec::with_capacity(records.len());
        // partition -> batches, each a list of (record index, record)
        let mut batches: BTreeMap<i32, Vec<Vec<(usize, NewRecord)>>> = BTreeMap::new();
        let mut batch_bytes: BTreeMap<i32, usize> = BTreeMap::new();
        for (index, (partition, record)) in records.into_iter().enumerate() {
            let size = record_size(&record);
            results.push(Err(IngestError::ShuttingDown));
            if size + BATCH_OVERHEAD_BYTES > max_bytes {
                results[index] = Err(IngestError::TooLarge(format!(
                    "record of about {size} bytes exceeds max.message.bytes {max_bytes} of topic {:?}",
                    topic.record.name
                )));
                continue;
            }
            // the topic's rules, record by record: only the records that
            // break them are refused
            if let Err(refusal) =
                rules.check_record(record.key.is_some(), record.timestamp_ms, now_ms)
            {
                results[index] = Err(IngestError::RecordsRefused {
                    timestamp: refusal.timestamp,
                    records: vec![(0, refusal.reason.clone())],
                    message: refusal.reason,
                });
                continue;
            }
            let runs = batches.entry(partition).or_default();
            let used = batch_bytes.entry(partition).or_insert(0);
            let fits = runs.last().is_some_and(|run| {
                run.len() < RECORDS_PER_BATCH_MAX
                    && *used + size + BATCH_OVERHEAD_BYTES <= max_bytes
            });
            if !fits {
                runs.push(Vec::new());
                *used = 0;
            }
            *used += size;
            if let Some(run) = runs.last_mut() {
                run.push((index, record));
            }
        }
        // append everything first (in order), then wait for the commits
        let mut pending: Vec<SubmittedRun> = Vec::new();
        for (partition, runs) in batches {
            for run in runs {
                let append_time = rules.log_append_time().then_some(now_ms);
                let stamps: Vec<(usize, i64)> = run
                    .iter()
                    .map(|(i, r)| (*i, append_time.unwrap_or(r.timestamp_ms)))
                    .collect();
                let records: Vec<NewRecord> = run.into_iter().map(|(_, r)| r).collect();
                let encoded = batch::encode(&records)
                    .map_err(|error| IngestError::Invalid(error.to_string()))
                    .and_then(|bytes| rules.apply(bytes, now_ms));
                let submitted = match encoded {
                    Ok(ruled) => {
                        let summary = BatchSummary {
                            batch_count: 1,
                            offset_count: records.len() as u32,
                            max_timestamp: stamps.iter().map(|(_, t)| *t).max().unwrap_or(-1),
                        };
                        self.writer
                            .submit(topic, partition, ruled.batches, summary)
                            .await
                    }
                    Err(error) => Err(error),
                };
                pending.push((stamps, partition, submitted));
            }
        }
        if self.seal_each_call && pending.iter().any(|(_, _, s)| s.is_ok()) {
            if let Err(error) = self.writer.seal().await {
                tracing::warn!(%error, "sealing the segment of a produce call failed");
            }
        }
        for (stamps, partition, submitted) in pending {
            let outcome = match submitted {
                Ok(pending) => pending.wait().await,
                Err(error) => Err(error),
            };
            for (delta, (index, timestamp_ms)) in stamps.into_iter().enumerate() {
                results[index] = match &outcome {
                    Ok(base) => Ok(Delivery {
                        partition,
                        offset: base + delta as i64,
                        timestamp_ms,
                    }),
                    Err(error) => Err(error.clone()),
                };
            }
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from the Java client's own tests of `Utils.murmur2`.
    #[test]
    fn murmur2_matches_kafka() {
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn keyed_partitions_are_stable_and_in_range() {
        for n in 1..20 {
            let p = partition_for_key(b"customer-42", n);
            assert!((0..n).contains(&p));
            assert_eq!(p, partition_for_key(b"customer-42", n));
        }
    }
}
