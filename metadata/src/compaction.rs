//! The compactor's state in the metadata store, and every transaction that
//! acts on it: the controller election, compaction jobs and the workers'
//! claims of them (on their leases), publishing an archive file in place
//! of the runs it replaces, retention, and GC marks. Each transaction
//! checks, inside itself, the claim, job, topic and index entries it acts
//! on, so a worker or controller that lost its lease (or whose job went
//! stale) changes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::keys::Key;
use crate::model::{encode_json, Catalog, Head, IndexEntry, ModelError, ModelResult, Topic};
use crate::store::{CmpOp, Compare, KeyValue, LeaseId, Revision, Txn, TxnOp};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Segment runs into one new archive file.
    Roll,
    /// Adjacent small archive files into one.
    Merge,
    /// A key-compacted topic's archive files and the segment runs after
    /// them into one file keeping the latest record of each key.
    Compact,
}

impl JobKind {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            JobKind::Roll => "roll",
            JobKind::Merge => "merge",
            JobKind::Compact => "compact",
        }
    }
}

/// A job as stored under `compaction/jobs/<topic-id>/<p>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Roll or merge.
    pub kind: JobKind,
    /// Topic name (names the archive directory).
    pub topic: String,
    /// Topic id.
    pub topic_id: String,
    /// Create revision of the topic key the job was planned against.
    pub topic_create_revision: Revision,
    /// Partition.
    pub partition: i32,
    /// First offset of the runs to replace.
    pub first: i64,
    /// One past the last offset of the runs to replace.
    pub end: i64,
    /// When the controller planned the job.
    pub created_ms: i64,
}

/// A job with the revision it was read at (claims and publishes compare it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredJob {
    /// The job.
    pub job: Job,
    /// Its key.
    pub key: String,
    /// Mod revision of its key.
    pub mod_revision: Revision,
}

/// A worker's claim on a job, under `compaction/claims/<topic-id>/<p>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The claiming node.
    pub node_id: i32,
    /// Mod revision of the job claimed.
    pub job_revision: Revision,
}

#[derive(Debug, Serialize, Deserialize)]
struct ControllerRecord {
    node_id: i32,
}

#[derive(Debug, Serialize, Deserialize)]
struct GcMarkRecord {
    first_seen_ms: i64,
}

/// An index entry with the revision it was read at.
pub type StoredEntry = (KeyValue, IndexEntry);

impl Catalog {
    /// Hold or take the `controller` key for `node_id` on `lease`; whether
    /// this node is the controller.
    pub async fn elect_controller(&self, node_id: i32, lease: LeaseId) -> ModelResult<bool> {
        let key = self.keys().controller();
        if let Some(kv) = self.store().get(&key).await? {
            return Ok(kv.lease == lease
                && serde_json::from_slice::<ControllerRecord>(&kv.value)
                    .is_ok_and(|r| r.node_id == node_id));
        }
        let value = encode_json(&ControllerRecord { node_id });
        let response = self
            .store()
            .txn(
                Txn::new()
                    .when([Compare::absent(key.clone())])
                    .and_then([TxnOp::put_with_lease(key, value, lease)]),
            )
            .await?;
        Ok(response.succeeded)
    }

    /// Every planned compaction job (undecodable ones are skipped with a warning).
    pub async fn compaction_jobs(&self) -> ModelResult<Vec<StoredJob>> {
        let range = self.store().range(&self.keys().compaction_jobs()).await?;
        Ok(range
            .kvs
            .into_iter()
            .filter_map(|kv| match serde_json::from_slice::<Job>(&kv.value) {
                Ok(job) => Some(StoredJob {
                    job,
                    key: kv.key,
                    mod_revision: kv.mod_revision,
                }),
                Err(error) => {
                    warn!(key = kv.key, %error, "ignoring undecodable job");
                    None
                }
            })
            .collect())
    }

    /// The (topic id, partition) of every claimed job.
    pub async fn compaction_claims(&self) -> ModelResult<Vec<(String, i32)>> {
        let range = self.store().range(&self.keys().compaction_claims()).await?;
        Ok(range
            .kvs
            .iter()
            .filter_map(|kv| match self.keys().parse(&kv.key) {
                Some(Key::CompactionClaim {
                    topic_id,
                    partition,
                }) => Some((topic_id.to_string(), partition)),
                _ => None,
            })
            .collect())
    }

    /// Plan `job` unless its partition has one already; whether it was written.
    pub async fn plan_compaction_job(&self, job: &Job) -> ModelResult<bool> {
        let key = self.keys().compaction_job(&job.topic_id, job.partition);
        let response = self
            .store()
            .txn(
                Txn::new()
                    .when([Compare::absent(key.clone())])
                    .and_then([TxnOp::put(key, encode_json(job))]),
            )
            .await?;
        Ok(response.succeeded)
    }

    /// Drop a job (its topic is gone).
    pub async fn drop_compaction_job(&self, job: &StoredJob) -> ModelResult<()> {
        self.store().delete(&job.key).await?;
        Ok(())
    }

    /// Claim `job` for `node_id` on `lease` if nobody holds it and it is
    /// unchanged; the claim's create revision when this node got it.
    pub async fn claim_compaction_job(
        &self,
        job: &StoredJob,
        node_id: i32,
        lease: LeaseId,
    ) -> ModelResult<Option<Revision>> {
        let claim_key = self
            .keys()
            .compaction_claim(&job.job.topic_id, job.job.partition);
        let value = encode_json(&Claim {
            node_id,
            job_revision: job.mod_revision,
        });
        let txn = Txn::new()
            .when([
                Compare::absent(claim_key.clone()),
                Compare::mod_revision(job.key.clone(), CmpOp::Equal, job.mod_revision),
            ])
            .and_then([TxnOp::put_with_lease(claim_key, value, lease)]);
        let response = self.store().txn(txn).await?;
        Ok(response.succeeded.then_some(response.revision))
    }

    /// Drop this worker's claim (the one created at `claim_revision`), and
    /// the job too when it is obsolete.
    pub async fn release_compaction_claim(
        &self,
        job: &StoredJob,
        claim_revision: Revision,
        drop_job: bool,
    ) -> ModelResult<()> {
        let claim_key = self
            .keys()
            .compaction_claim(&job.job.topic_id, job.job.partition);
        let mut txn = Txn::new()
            .when([Compare::create_revision(
                claim_key.clone(),
                CmpOp::Equal,
                claim_revision,
            )])
            .and_then([TxnOp::delete(claim_key)]);
        if drop_job {
            txn = txn.and_then([TxnOp::delete(job.key.clone())]);
        }
        self.store().txn(txn).await?;
        Ok(())
    }

    /// A partition's index entries as stored, with their revisions, in
    /// offset order.
    pub async fn partition_entries(
        &self,
        topic_id: &str,
        partition: i32,
    ) -> ModelResult<Vec<StoredEntry>> {
        let prefix = self.keys().partition_index(topic_id, partition);
        let mut entries = Vec::new();
        for kv in self.store().range(&prefix).await?.kvs {
            let entry = self.decode_index_entry(&kv)?;
            entries.push((kv, entry));
        }
        entries.sort_by_key(|(_, e)| e.base_offset);
        Ok(entries)
    }

    /// Every index entry of the cluster (what GC keeps).
    pub async fn all_index_entries(&self) -> ModelResult<Vec<IndexEntry>> {
        let range = self.store().range(&self.keys().index()).await?;
        range
            .kvs
            .iter()
            .map(|kv| self.decode_index_entry(kv))
            .collect()
    }

    /// Make an archive file visible: replace the job's index entries
    /// `replaced` with `entry`, if the claim (created at `claim_revision`),
    /// the job, the topic and every replaced entry are as they were read and
    /// GC has not marked the file, and drop the job and the claim. Whether
    /// it was published.
    pub async fn publish_archive(
        &self,
        job: &StoredJob,
        claim_revision: Revision,
        replaced: &[StoredEntry],
        entry: &IndexEntry,
    ) -> ModelResult<bool> {
        let Some(archive) = &entry.archive else {
            return Err(ModelError::Invalid(
                "a published entry must be an archive file".into(),
            ));
        };
        let Job {
            topic,
            topic_id,
            topic_create_revision,
            partition,
            first,
            ..
        } = &job.job;
        let claim_key = self.keys().compaction_claim(topic_id, *partition);
        let first_key = self.keys().index_entry(topic_id, *partition, *first);
        let mut compares = vec![
            Compare::create_revision(claim_key.clone(), CmpOp::Equal, claim_revision),
            Compare::mod_revision(job.key.clone(), CmpOp::Equal, job.mod_revision),
            Compare::create_revision(
                self.keys().topic(topic),
                CmpOp::Equal,
                *topic_create_revision,
            ),
            // GC has not seen the new file unreferenced: a publish that comes
            // later than GC's grace (a stalled worker) fails instead of
            // referencing a file GC may delete
            Compare::absent(self.keys().gc_mark(&archive.path)),
        ];
        let mut ops = vec![
            TxnOp::put(first_key.clone(), encode_json(entry)),
            TxnOp::delete(job.key.clone()),
            TxnOp::delete(claim_key),
        ];
        for (kv, _) in replaced {
            compares.push(Compare::mod_revision(
                kv.key.clone(),
                CmpOp::Equal,
                kv.mod_revision,
            ));
            if kv.key != first_key {
                ops.push(TxnOp::delete(kv.key.clone()));
            }
        }
        let response = self
            .store()
            .txn(Txn::new().when(compares).and_then(ops))
            .await?;
        Ok(response.succeeded)
    }

    /// Retention: drop the first `stored` entries (at most `entries_max` of
    /// them) and advance the partition's log start past them, if the head
    /// and every dropped entry are as they were read. The new log start
    /// when it moved.
    pub async fn drop_oldest_runs(
        &self,
        topic: &Topic,
        partition: i32,
        stored: &[StoredEntry],
        entries_max: usize,
    ) -> ModelResult<Option<(i64, usize)>> {
        let topic_id = &topic.record.id;
        let head_key = self.keys().head(topic_id, partition);
        let Some(head_kv) = self.store().get(&head_key).await? else {
            return Ok(None);
        };
        let dropped = &stored[..stored.len().min(entries_max.max(1))];
        let Some((_, last)) = dropped.last() else {
            return Ok(None);
        };
        let mut head: Head = self.decode_head(&head_kv)?.head;
        // runs below a start DeleteRecords set are dropped without moving it
        let new_start = last.end_offset().max(head.log_start_offset);
        let moved = new_start > head.log_start_offset;
        head.log_start_offset = new_start;
        let compares_head =
            Compare::mod_revision(head_key.clone(), CmpOp::Equal, head_kv.mod_revision);
        let mut compares = vec![compares_head];
        let mut ops = Vec::new();
        if moved {
            ops.push(TxnOp::put(head_key, encode_json(&head)));
        }
        for (kv, _) in dropped {
            compares.push(Compare::mod_revision(
                kv.key.clone(),
                CmpOp::Equal,
                kv.mod_revision,
            ));
            ops.push(TxnOp::delete(kv.key.clone()));
        }
        let response = self
            .store()
            .txn(Txn::new().when(compares).and_then(ops))
            .await?;
        Ok(response.succeeded.then_some((new_start, dropped.len())))
    }

    /// Every GC mark: object path -> when GC first saw it unreferenced (ms).
    pub async fn gc_marks(&self) -> ModelResult<BTreeMap<String, i64>> {
        let range = self.store().range(&self.keys().gc_marks()).await?;
        let mut marks = BTreeMap::new();
        for kv in &range.kvs {
            if let (Some(Key::GcMark { object }), Ok(mark)) = (
                self.keys().parse(&kv.key),
                serde_json::from_slice::<GcMarkRecord>(&kv.value),
            ) {
                marks.insert(object.to_string(), mark.first_seen_ms);
            }
        }
        Ok(marks)
    }

    /// Record that GC first saw `object` unreferenced at `now_ms`.
    pub async fn mark_garbage(&self, object: &str, now_ms: i64) -> ModelResult<()> {
        let mark = encode_json(&GcMarkRecord {
            first_seen_ms: now_ms,
        });
        self.store()
            .put(&self.keys().gc_mark(object), mark, None)
            .await?;
        Ok(())
    }

    /// Forget `object`'s GC mark (deleted, or referenced again).
    pub async fn unmark_garbage(&self, object: &str) -> ModelResult<()> {
        self.store().delete(&self.keys().gc_mark(object)).await?;
        Ok(())
    }
}
