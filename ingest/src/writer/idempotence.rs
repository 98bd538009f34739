//! Idempotent appends on this node, checked when a batch is accepted: a
//! batch already stored is answered with its original base offset without
//! being written again; a batch equal to one still in flight on this node
//! waits for that one's answer; a batch that does not follow the committed
//! state plus the batches in flight is refused. The commit re-checks every
//! batch against the head it compares (see `commit_group`), which covers
//! what this node cannot see: batches stored through other nodes and
//! batches in flight here that then failed.
//!
//! The registry holds at most one entry per batch in the writer's pipeline,
//! so it is bounded by the writer's byte budget.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_metadata::producers::{self, ProducerBatch, ProducerState, Sequenced};
use tokio::sync::oneshot;
use tracing::debug;

use crate::error::{IngestError, IngestResult};

/// (topic id, partition, producer id).
type Key = (String, i32, i64);

type Reply = oneshot::Sender<IngestResult<i64>>;

struct Entry {
    id: u64,
    batch: ProducerBatch,
    /// Appends of the same batch that arrived while it was in flight.
    followers: Vec<Reply>,
}

/// The idempotent batches this node has accepted and not yet answered, in
/// acceptance order per (partition, producer).
#[derive(Default)]
pub(super) struct InFlight {
    entries: Mutex<HashMap<Key, Vec<Entry>>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("keys", &self.lock().len())
            .finish()
    }
}

/// Keeps an accepted batch in the registry until it is answered (or
/// dropped, which answers its followers with "shutting down").
pub(super) struct Ticket {
    registry: Arc<InFlight>,
    key: Key,
    id: u64,
    released: bool,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Vec<Entry>>> {
        // a panic while holding the lock leaves plain data behind
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decide about `batch` for `partition` of `topic_id`, given the
    /// committed state of its producer. Returns the ticket and the reply
    /// when the batch is to be stored; otherwise `reply` has been answered
    /// (duplicate or refusal) or attached to the same batch in flight.
    pub(super) fn admit(
        self: &Arc<Self>,
        committed: Option<&ProducerState>,
        topic_id: &str,
        partition: i32,
        batch: ProducerBatch,
        reply: Reply,
    ) -> Option<(Ticket, Reply)> {
        if let Ok(Sequenced::Duplicate { base_offset }) = producers::check(committed, &batch) {
            debug!(
                producer_id = batch.producer_id,
                first_seq = batch.first_seq,
                base_offset,
                "duplicate batch answered with its original offset"
            );
            let _ = reply.send(Ok(base_offset));
            return None;
        }
        let key = (topic_id.to_string(), partition, batch.producer_id);
        let mut entries = self.lock();
        let in_flight = entries.entry(key.clone()).or_default();
        if let Some(same) = in_flight.iter_mut().find(|e| e.batch == batch) {
            debug!(
                producer_id = batch.producer_id,
                first_seq = batch.first_seq,
                "duplicate batch waits for the same batch in flight"
            );
            same.followers.push(reply);
            return None;
        }
        // the producer's state once the batches in flight are stored (those
        // that would fail their own check are skipped: they will fail)
        let mut expected: BTreeMap<i64, ProducerState> = BTreeMap::new();
        if let Some(state) = committed {
            expected.insert(batch.producer_id, state.clone());
        }
        for entry in in_flight.iter() {
            if producers::check(expected.get(&batch.producer_id), &entry.batch)
                == Ok(Sequenced::New)
            {
                producers::record(&mut expected, &entry.batch, -1, 0);
            }
        }
        match producers::check(expected.get(&batch.producer_id), &batch) {
            Ok(Sequenced::New) => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                in_flight.push(Entry {
                    id,
                    batch,
                    followers: Vec::new(),
                });
                let ticket = Ticket {
                    registry: self.clone(),
                    key,
                    id,
                    released: false,
                };
                Some((ticket, reply))
            }
            outcome => {
                let error = match outcome {
                    Err(error) => IngestError::Sequence(error),
                    // equal batches in flight were matched above
                    Ok(_) => IngestError::SequenceRecheck("batch is in flight".to_string()),
                };
                if in_flight.is_empty() {
                    entries.remove(&key);
                }
                let _ = reply.send(Err(error));
                None
            }
        }
    }
}

impl Ticket {
    /// Leave the registry and give `result` to the appends that followed.
    pub(super) fn finish(mut self, result: &IngestResult<i64>) {
        for follower in self.release() {
            let _ = follower.send(result.clone());
        }
    }

    fn release(&mut self) -> Vec<Reply> {
        self.released = true;
        let mut entries = self.registry.lock();
        let Some(in_flight) = entries.get_mut(&self.key) else {
            return Vec::new();
        };
        let followers = match in_flight.iter().position(|e| e.id == self.id) {
            Some(at) => in_flight.remove(at).followers,
            None => Vec::new(),
        };
        if in_flight.is_empty() {
            entries.remove(&self.key);
        }
        followers
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.released {
            // followers see their channel close: "shutting down", retriable
            self.release();
        }
    }
}
