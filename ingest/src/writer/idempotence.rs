//! Idempotent appends on this node, checked when a batch is accepted: a
//! batch already stored is answered with its original base offset without
//! being written again; a batch equal to one still in flight on this node
//! waits for that one's answer; a batch that does not follow the committed
//! state plus the batches in flight is refused. The commit re-checks every
//! batch against the head it compares (see `commit_group`), which covers
//! what this node cannot see: batches stored through other nodes and
//! batches in flight here that then failed.
//!
//! A batch of a newer producer epoch fences the older-epoch batches of the
//! same producer and partition still in flight here: librdkafka bumps the
//! epoch after abandoning a request whose messages timed out and sends the
//! other messages again under the new epoch, so an abandoned batch that
//! commits after all stores them twice. A fenced batch's chunk is not
//! committed (`commit_segment`); it was never acknowledged.
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
    /// A batch of a newer epoch of the producer arrived since.
    fenced: bool,
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
    ///
    /// A gap (OUT_OF_ORDER_SEQUENCE_NUMBER, which clients take as fatal)
    /// may only be this node's view lagging behind a commit another node
    /// made: when `committed` came from the view, set `may_lag`, and a gap
    /// is handed back as [`Admission::Recheck`] with the reply, to be
    /// decided again against the stored head.
    pub(super) fn admit(
        self: &Arc<Self>,
        committed: Option<&ProducerState>,
        may_lag: bool,
        topic_id: &str,
        partition: i32,
        batch: ProducerBatch,
        reply: Reply,
    ) -> Admission {
        if let Ok(Sequenced::Duplicate { base_offset }) = producers::check(committed, &batch) {
            debug!(
                producer_id = batch.producer_id,
                first_seq = batch.first_seq,
                base_offset,
                "duplicate batch answered with its original offset"
            );
            let _ = reply.send(Ok(base_offset));
            return Admission::Answered;
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
            return Admission::Answered;
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
                for older in in_flight.iter_mut() {
                    if older.batch.epoch < batch.epoch {
                        older.fenced = true;
                    }
                }
                in_flight.push(Entry {
                    id,
                    batch,
                    followers: Vec::new(),
                    fenced: false,
                });
                let ticket = Ticket {
                    registry: self.clone(),
                    key,
                    id,
                    released: false,
                };
                Admission::Admitted(ticket, reply)
            }
            Err(producers::SequenceError::OutOfOrder { .. }) if may_lag => {
                if in_flight.is_empty() {
                    entries.remove(&key);
                }
                Admission::Recheck(reply)
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
                Admission::Answered
            }
        }
    }
}

/// What [`InFlight::admit`] decided.
pub(super) enum Admission {
    /// To be stored: its ticket and reply.
    Admitted(Ticket, Reply),
    /// Answered (a duplicate or a refusal), or attached to the same batch
    /// in flight.
    Answered,
    /// A gap against a view that may lag: decide again against the stored
    /// head.
    Recheck(Reply),
}

impl Ticket {
    /// Whether a batch of a newer epoch of the same producer and partition
    /// was accepted since this one: it must not be committed.
    pub(super) fn fenced(&self) -> bool {
        let entries = self.registry.lock();
        entries
            .get(&self.key)
            .and_then(|in_flight| in_flight.iter().find(|e| e.id == self.id))
            .is_some_and(|e| e.fenced)
    }

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reply() -> (Reply, oneshot::Receiver<IngestResult<i64>>) {
        oneshot::channel()
    }

    #[test]
    fn a_gap_seen_through_a_lagging_view_is_checked_again_not_refused() {
        let registry = Arc::new(InFlight::default());
        // the view knows sequences 0..=4; the batch starts at 10
        let mut known = BTreeMap::new();
        producers::record(&mut known, &ProducerBatch::new(7, 0, 0, 4), 0, 0);
        let state = known.get(&7).cloned();
        let gap = ProducerBatch::new(7, 0, 10, 0);

        let (tx, mut rx) = reply();
        let Admission::Recheck(tx) = registry.admit(state.as_ref(), true, "t", 0, gap, tx) else {
            panic!("a gap through the view must be checked again")
        };
        assert!(rx.try_recv().is_err(), "not answered yet");
        assert!(registry.lock().is_empty(), "nothing kept for it");

        // the stored head has the same gap: refused for good
        let Admission::Answered = registry.admit(state.as_ref(), false, "t", 0, gap, tx) else {
            panic!("refused")
        };
        assert!(matches!(
            rx.try_recv().unwrap(),
            Err(IngestError::Sequence(
                producers::SequenceError::OutOfOrder { .. }
            ))
        ));

        // the stored head knows sequences up to 9: the batch follows
        let mut stored = known.clone();
        producers::record(&mut stored, &ProducerBatch::new(7, 0, 5, 4), 5, 0);
        let (tx, _rx) = reply();
        assert!(matches!(
            registry.admit(stored.get(&7), false, "t", 0, gap, tx),
            Admission::Admitted(..)
        ));
    }
    /// librdkafka abandoned the request holding epoch 3's batch (a message
    /// timed out in flight), bumped the epoch and sent the other messages
    /// again as epoch 4, sequence 0: the epoch 3 batch still in flight here
    /// is fenced, the new one is not.
    #[test]
    fn a_newer_epoch_fences_the_older_batches_in_flight() {
        let registry = Arc::new(InFlight::default());
        let (tx, _rx) = reply();
        let Admission::Admitted(old, _) =
            registry.admit(None, false, "t", 0, ProducerBatch::new(7, 3, 0, 4), tx)
        else {
            panic!("admitted")
        };
        let (tx, _rx) = reply();
        let Admission::Admitted(other, _) =
            registry.admit(None, false, "t", 1, ProducerBatch::new(7, 3, 0, 4), tx)
        else {
            panic!("admitted")
        };
        assert!(!old.fenced());
        let (tx, _rx) = reply();
        let Admission::Admitted(new, _) =
            registry.admit(None, false, "t", 0, ProducerBatch::new(7, 4, 0, 4), tx)
        else {
            panic!("a new epoch starts at sequence 0")
        };
        assert!(old.fenced(), "the abandoned epoch's batch");
        assert!(!new.fenced());
        assert!(!other.fenced(), "another partition is not fenced");
    }
}
