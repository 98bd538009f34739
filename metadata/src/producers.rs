//! Idempotent producers: producer id allocation, the per-(producer,
//! partition) sequence state kept in each partition head
//! (`heads/<topic-id>/<p>`), and the rules a produced batch is checked
//! against. The rules are Kafka's:
//!
//! - a producer this partition has no state for must start at sequence 0;
//! - a newer epoch must start at sequence 0 (and replaces the old state);
//! - an older epoch is fenced;
//! - a batch equal (first and last sequence) to one of the last
//!   [`BATCHES_KEPT`] batches is a duplicate, answered with its original
//!   base offset and never stored again;
//! - otherwise the batch must start right after the last one (sequences
//!   wrap from `i32::MAX` to 0), else it is out of order.
//!
//! The state is bounded: at most [`BATCHES_KEPT`] batches per producer and
//! [`PRODUCERS_PER_PARTITION_MAX`] producers per partition; producers idle
//! for [`PRODUCER_IDLE_MS`] are forgotten first, then the least recently
//! used. The pure functions here are used twice by the writer: when a batch
//! is accepted (against the committed head plus the node's batches in
//! flight) and when its chunk is committed (against the head the commit
//! transaction compares, so a concurrent change re-runs the check).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Catalog, Head, ModelResult};

/// Batches remembered per producer for duplicate detection (Kafka's
/// `max.in.flight.requests.per.connection` limit for idempotence).
pub const BATCHES_KEPT: usize = 5;
/// Producers remembered per partition; the least recently used goes first.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 64;
/// A producer idle this long is forgotten (Kafka's
/// `transactional.id.expiration.ms` default, 7 days).
pub const PRODUCER_IDLE_MS: i64 = 7 * 24 * 3600 * 1000;

/// One stored batch of a producer, remembered for duplicate detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBatch {
    /// First sequence of the batch.
    #[serde(rename = "first")]
    pub first_seq: i32,
    /// Last sequence of the batch.
    #[serde(rename = "last")]
    pub last_seq: i32,
    /// Offset the batch was stored at.
    #[serde(rename = "offset")]
    pub base_offset: i64,
}

/// What a partition remembers of one producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    /// The producer's current epoch.
    pub epoch: i16,
    /// The last batches stored, oldest first; never empty, at most
    /// [`BATCHES_KEPT`].
    pub batches: Vec<StoredBatch>,
    /// When the producer last wrote (ms since the epoch, writer's clock).
    pub last_ms: i64,
}

impl ProducerState {
    /// The sequence the next batch must start at.
    pub fn next_seq(&self) -> i32 {
        self.batches
            .last()
            .map_or(0, |batch| increment(batch.last_seq, 1))
    }
}

/// The idempotence fields of one produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    /// Producer id (from InitProducerId).
    pub producer_id: i64,
    /// Producer epoch.
    pub epoch: i16,
    /// Sequence of the first record.
    pub first_seq: i32,
    /// Sequence of the last record.
    pub last_seq: i32,
}

impl ProducerBatch {
    /// The batch of a RecordBatch header: base sequence and last offset
    /// delta give the last sequence (wrapping as Kafka does).
    pub fn new(producer_id: i64, epoch: i16, base_sequence: i32, last_offset_delta: i32) -> Self {
        Self {
            producer_id,
            epoch,
            first_seq: base_sequence,
            last_seq: increment(base_sequence, last_offset_delta),
        }
    }
}

/// `seq + by`, wrapping from `i32::MAX` to 0 (Kafka's sequence arithmetic;
/// `by` is not negative).
pub fn increment(seq: i32, by: i32) -> i32 {
    debug_assert!(seq >= 0 && by >= 0);
    if seq > i32::MAX - by {
        by - (i32::MAX - seq) - 1
    } else {
        seq + by
    }
}

/// A batch that passed the sequence check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequenced {
    /// The next batch of its producer: store it.
    New,
    /// Already stored at this base offset: answer it, do not store it.
    Duplicate {
        /// The original base offset.
        base_offset: i64,
    },
}

/// Why a batch fails the sequence check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The producer has been fenced by a newer epoch.
    #[error("producer {producer_id} epoch {epoch} is older than its current epoch {current}")]
    StaleEpoch {
        /// Producer id.
        producer_id: i64,
        /// Epoch of the batch.
        epoch: i16,
        /// Epoch the partition knows.
        current: i16,
    },
    /// The batch does not follow the producer's last batch.
    #[error(
        "out of order sequence number for producer {producer_id}: expected {expected}, got {got}"
    )]
    OutOfOrder {
        /// Producer id.
        producer_id: i64,
        /// The sequence the batch had to start at.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// The batch is already stored (found when committing a batch that
    /// was uploaded again).
    #[error("batch {first_seq}..={last_seq} of producer {producer_id} is already stored")]
    Duplicate {
        /// Producer id.
        producer_id: i64,
        /// First sequence.
        first_seq: i32,
        /// Last sequence.
        last_seq: i32,
    },
}

/// Check `batch` against what the partition knows of its producer.
pub fn check(
    state: Option<&ProducerState>,
    batch: &ProducerBatch,
) -> Result<Sequenced, SequenceError> {
    let out_of_order = |expected| SequenceError::OutOfOrder {
        producer_id: batch.producer_id,
        expected,
        got: batch.first_seq,
    };
    let Some(state) = state else {
        return if batch.first_seq == 0 {
            Ok(Sequenced::New)
        } else {
            Err(out_of_order(0))
        };
    };
    if batch.epoch < state.epoch {
        return Err(SequenceError::StaleEpoch {
            producer_id: batch.producer_id,
            epoch: batch.epoch,
            current: state.epoch,
        });
    }
    if batch.epoch > state.epoch {
        return if batch.first_seq == 0 {
            Ok(Sequenced::New)
        } else {
            Err(out_of_order(0))
        };
    }
    if let Some(stored) = state
        .batches
        .iter()
        .find(|b| b.first_seq == batch.first_seq && b.last_seq == batch.last_seq)
    {
        return Ok(Sequenced::Duplicate {
            base_offset: stored.base_offset,
        });
    }
    let expected = state.next_seq();
    if batch.first_seq == expected {
        Ok(Sequenced::New)
    } else {
        Err(out_of_order(expected))
    }
}

/// Record `batch` (checked [`Sequenced::New`]) as stored at `base_offset`,
/// then enforce the bounds (idle producers first, then the least recently
/// used; never `batch`'s own producer).
pub fn record(
    producers: &mut BTreeMap<i64, ProducerState>,
    batch: &ProducerBatch,
    base_offset: i64,
    now_ms: i64,
) {
    let state = producers
        .entry(batch.producer_id)
        .or_insert_with(|| ProducerState {
            epoch: batch.epoch,
            batches: Vec::with_capacity(BATCHES_KEPT),
            last_ms: now_ms,
        });
    if state.epoch != batch.epoch {
        state.epoch = batch.epoch;
        state.batches.clear();
    }
    state.batches.push(StoredBatch {
        first_seq: batch.first_seq,
        last_seq: batch.last_seq,
        base_offset,
    });
    if state.batches.len() > BATCHES_KEPT {
        state.batches.remove(0);
    }
    state.last_ms = state.last_ms.max(now_ms);
    let keep = batch.producer_id;
    producers.retain(|&id, state| id == keep || now_ms - state.last_ms <= PRODUCER_IDLE_MS);
    while producers.len() > PRODUCERS_PER_PARTITION_MAX {
        let oldest = producers
            .iter()
            .filter(|(&id, _)| id != keep)
            .min_by_key(|(_, state)| state.last_ms)
            .map(|(&id, _)| id);
        match oldest {
            Some(id) => producers.remove(&id),
            None => break,
        };
    }
}

/// The head after appending a chunk of `offset_count` offsets to `current`,
/// holding `batches` (each with its offset delta inside the chunk, in
/// order). Fails if any batch fails the check or is a duplicate: such a
/// chunk must not be committed.
pub fn advance(
    current: &Head,
    offset_count: u32,
    batches: &[(ProducerBatch, u32)],
    now_ms: i64,
) -> Result<Head, SequenceError> {
    let base = current.next_offset;
    let mut head = current.clone();
    head.next_offset = base + i64::from(offset_count);
    for (batch, delta) in batches {
        debug_assert!(*delta < offset_count);
        match check(head.producers.get(&batch.producer_id), batch)? {
            Sequenced::New => record(&mut head.producers, batch, base + i64::from(*delta), now_ms),
            Sequenced::Duplicate { .. } => {
                return Err(SequenceError::Duplicate {
                    producer_id: batch.producer_id,
                    first_seq: batch.first_seq,
                    last_seq: batch.last_seq,
                })
            }
        }
    }
    Ok(head)
}

impl Catalog {
    /// Allocate a fresh producer id (ids start at 0) by a compare-and-swap
    /// increment of the cluster's counter.
    pub async fn allocate_producer_id(&self) -> ModelResult<i64> {
        self.increment_counter(&self.keys().producer_id_counter(), 0)
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::embedded::EmbeddedStore;

    fn batch(epoch: i16, first: i32, count: i32) -> ProducerBatch {
        ProducerBatch::new(7, epoch, first, count - 1)
    }

    fn head_with(batches: &[(ProducerBatch, i64)]) -> Head {
        let mut head = Head::default();
        for (b, offset) in batches {
            record(&mut head.producers, b, *offset, 1_000);
        }
        head
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(increment(5, 3), 8);
        assert_eq!(increment(i32::MAX, 1), 0);
        assert_eq!(increment(i32::MAX - 1, 3), 1);
        assert_eq!(batch(0, i32::MAX - 1, 4).last_seq, 1);
    }

    #[test]
    fn a_new_producer_or_epoch_starts_at_zero() {
        assert_eq!(check(None, &batch(0, 0, 3)), Ok(Sequenced::New));
        assert!(matches!(
            check(None, &batch(0, 5, 3)),
            Err(SequenceError::OutOfOrder {
                expected: 0,
                got: 5,
                ..
            })
        ));
        let head = head_with(&[(batch(0, 0, 3), 10)]);
        let state = head.producers.get(&7);
        assert_eq!(check(state, &batch(1, 0, 2)), Ok(Sequenced::New));
        assert!(matches!(
            check(state, &batch(1, 3, 2)),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
    }

    #[test]
    fn the_next_batch_follows_and_gaps_are_out_of_order() {
        let head = head_with(&[(batch(0, 0, 3), 10)]);
        let state = head.producers.get(&7);
        assert_eq!(check(state, &batch(0, 3, 2)), Ok(Sequenced::New));
        assert!(matches!(
            check(state, &batch(0, 4, 2)),
            Err(SequenceError::OutOfOrder {
                expected: 3,
                got: 4,
                ..
            })
        ));
        // an overlapping batch that is not one of the stored ones
        assert!(matches!(
            check(state, &batch(0, 1, 2)),
            Err(SequenceError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn sequences_continue_across_the_wrap() {
        let head = head_with(&[(batch(0, 0, 1), 0)]);
        let mut state = head.producers.get(&7).cloned().unwrap();
        state.batches[0].last_seq = i32::MAX;
        assert_eq!(check(Some(&state), &batch(0, 0, 2)), Ok(Sequenced::New));
    }

    #[test]
    fn stale_epochs_are_fenced() {
        let head = head_with(&[(batch(3, 0, 1), 0)]);
        assert!(matches!(
            check(head.producers.get(&7), &batch(2, 1, 1)),
            Err(SequenceError::StaleEpoch {
                epoch: 2,
                current: 3,
                ..
            })
        ));
    }

    #[test]
    fn the_last_five_batches_are_duplicates_with_their_offsets() {
        let batches: Vec<_> = (0..7)
            .map(|i| (batch(0, i * 2, 2), 100 + i64::from(i) * 2))
            .collect();
        let head = head_with(&batches);
        let state = head.producers.get(&7).unwrap();
        assert_eq!(state.batches.len(), BATCHES_KEPT);
        for (b, offset) in &batches[2..] {
            assert_eq!(
                check(Some(state), b),
                Ok(Sequenced::Duplicate {
                    base_offset: *offset
                })
            );
        }
        // older than the window: no longer recognized
        assert!(matches!(
            check(Some(state), &batches[0].0),
            Err(SequenceError::OutOfOrder { expected: 14, .. })
        ));
    }

    #[test]
    fn idle_and_surplus_producers_are_evicted() {
        let mut producers = BTreeMap::new();
        record(&mut producers, &ProducerBatch::new(1, 0, 0, 0), 0, 0);
        record(
            &mut producers,
            &ProducerBatch::new(2, 0, 0, 0),
            1,
            PRODUCER_IDLE_MS + 1,
        );
        assert!(!producers.contains_key(&1), "idle producer kept");
        for id in 10..(10 + PRODUCERS_PER_PARTITION_MAX as i64 + 5) {
            record(
                &mut producers,
                &ProducerBatch::new(id, 0, 0, 0),
                id,
                PRODUCER_IDLE_MS + id,
            );
        }
        assert_eq!(producers.len(), PRODUCERS_PER_PARTITION_MAX);
        assert!(!producers.contains_key(&2), "least recently used kept");
        assert!(producers.contains_key(&(10 + PRODUCERS_PER_PARTITION_MAX as i64 + 4)));
    }

    #[test]
    fn advance_assigns_offsets_and_refuses_duplicates_and_gaps() {
        let head = Head {
            next_offset: 50,
            ..Head::default()
        };
        let next = advance(&head, 5, &[(batch(0, 0, 2), 0), (batch(0, 2, 3), 2)], 1).unwrap();
        assert_eq!(next.next_offset, 55);
        let state = next.producers.get(&7).unwrap();
        assert_eq!(state.batches[1].base_offset, 52);
        assert!(matches!(
            advance(&next, 2, &[(batch(0, 0, 2), 0)], 2),
            Err(SequenceError::Duplicate { .. })
        ));
        assert!(matches!(
            advance(&next, 2, &[(batch(0, 6, 2), 0)], 2),
            Err(SequenceError::OutOfOrder { expected: 5, .. })
        ));
        // the head round-trips through its JSON form
        let json = serde_json::to_string(&next).unwrap();
        assert_eq!(serde_json::from_str::<Head>(&json).unwrap(), next);
        // heads written before producer state existed still decode
        let old: Head = serde_json::from_str(r#"{"next_offset":3,"log_start_offset":0}"#).unwrap();
        assert!(old.producers.is_empty());
    }

    #[tokio::test]
    async fn producer_ids_are_unique() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "p");
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(catalog.allocate_producer_id().await.unwrap());
        }
        assert_eq!(ids, vec![0, 1, 2]);
    }
}
