//! Compaction jobs: what they are, how a worker claims one, runs it and
//! publishes the result.
//!
//! The controller writes a job under `compaction/jobs/<topic-id>/<p>` (one
//! per partition at a time). A worker claims it by creating
//! `compaction/claims/<topic-id>/<p>` on its node lease, so a dead worker's
//! claim vanishes with its lease and another worker takes the job over. The
//! worker writes the Parquet file with `PutMode::Create` and publishes it in
//! one transaction that checks its claim, the job and every index entry it
//! replaces, and then swaps those entries for one archive entry and deletes
//! the job and the claim. A file whose publish fails is never referenced;
//! GC removes it. Paths are never overwritten (see [`put_create`]).

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use serde::{Deserialize, Serialize};
use sluice_fetch::Reader;
use sluice_metadata::model::{now_ms, ArchiveRef, Catalog, IndexEntry};
use sluice_metadata::{CmpOp, Compare, KeyValue, LeaseId, Revision, Txn, TxnOp};
use sluice_segment::archive::{ArchiveWriteOptions, ArchiveWriter};
use sluice_segment::batch;
use tracing::{debug, info, warn};

use crate::metrics;
use crate::CompactorError;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Segment runs into one new archive file.
    Roll,
    /// Adjacent small archive files into one.
    Merge,
}

impl JobKind {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            JobKind::Roll => "roll",
            JobKind::Merge => "merge",
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

/// A worker's claim on a job, under `compaction/claims/<topic-id>/<p>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The claiming node.
    pub node_id: i32,
    /// Mod revision of the job claimed.
    pub job_revision: Revision,
}

/// Key helpers for compaction state.
pub trait CompactionKeys {
    /// Prefix of every job.
    fn jobs_prefix(&self) -> String;
    /// A partition's job key.
    fn job_key(&self, topic_id: &str, partition: i32) -> String;
    /// Prefix of every claim.
    fn claims_prefix(&self) -> String;
    /// A partition's claim key.
    fn claim_key(&self, topic_id: &str, partition: i32) -> String;
    /// The controller election key.
    fn controller_key(&self) -> String;
    /// Prefix of GC marks (objects first seen unreferenced).
    fn gc_prefix(&self) -> String;
}

impl CompactionKeys for Catalog {
    fn jobs_prefix(&self) -> String {
        format!("{}compaction/jobs/", self.root())
    }
    fn job_key(&self, topic_id: &str, partition: i32) -> String {
        format!("{}{topic_id}/{partition}", self.jobs_prefix())
    }
    fn claims_prefix(&self) -> String {
        format!("{}compaction/claims/", self.root())
    }
    fn claim_key(&self, topic_id: &str, partition: i32) -> String {
        format!("{}{topic_id}/{partition}", self.claims_prefix())
    }
    fn controller_key(&self) -> String {
        format!("{}controller", self.root())
    }
    fn gc_prefix(&self) -> String {
        format!("{}gc/", self.root())
    }
}

/// The object path of an archive file: `archive/<topic>/partition=<p>/<first>-<last>.parquet`.
pub fn archive_path(topic: &str, partition: i32, first: i64, end: i64) -> String {
    format!(
        "archive/{topic}/partition={partition}/{first}-{}.parquet",
        end - 1
    )
}

/// Decode a job key-value.
pub fn decode_job(kv: &KeyValue) -> Option<Job> {
    serde_json::from_slice(&kv.value)
        .inspect_err(|error| warn!(key = kv.key, %error, "ignoring undecodable job"))
        .ok()
}

/// Everything a worker needs to run jobs.
#[derive(Clone)]
pub struct JobContext {
    /// The catalog.
    pub catalog: Catalog,
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    /// Reads segment runs (through the node's cache).
    pub reader: Reader,
    /// This node.
    pub node_id: i32,
    /// Parquet settings.
    pub write: ArchiveWriteOptions,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// Try to claim the job `job_kv` on `lease`; the claim's create revision
/// when this worker got it.
pub async fn claim(
    ctx: &JobContext,
    job: &Job,
    job_kv: &KeyValue,
    lease: LeaseId,
) -> Result<Option<Revision>, CompactorError> {
    let claim_key = ctx.catalog.claim_key(&job.topic_id, job.partition);
    let value = serde_json::to_vec(&Claim {
        node_id: ctx.node_id,
        job_revision: job_kv.mod_revision,
    })?;
    let txn = Txn::new()
        .when([
            Compare::absent(claim_key.clone()),
            Compare::mod_revision(job_kv.key.clone(), CmpOp::Equal, job_kv.mod_revision),
        ])
        .and_then([TxnOp::put_with_lease(claim_key, value, lease)]);
    let response = ctx.catalog.store().txn(txn).await?;
    Ok(response.succeeded.then_some(response.revision))
}

/// The outcome of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The archive entry was published.
    Published(IndexEntry),
    /// The job no longer matched the index (or lost its claim): nothing
    /// published; any file written is garbage.
    Abandoned(String),
}

/// Run a claimed job to its end: build the file, store it, publish it.
/// The claim is released in every case.
pub async fn run(
    ctx: &JobContext,
    job: &Job,
    job_kv: &KeyValue,
    claim_revision: Revision,
) -> Result<JobOutcome, CompactorError> {
    let result = run_claimed(ctx, job, job_kv, claim_revision).await;
    let outcome_label = match &result {
        Ok(JobOutcome::Published(_)) => "published",
        Ok(JobOutcome::Abandoned(_)) => "abandoned",
        Err(_) => "failed",
    };
    metrics::JOBS
        .with_label_values(&[job.kind.label(), outcome_label])
        .inc();
    if !matches!(result, Ok(JobOutcome::Published(_))) {
        release(
            ctx,
            job,
            job_kv,
            claim_revision,
            matches!(result, Ok(JobOutcome::Abandoned(_))),
        )
        .await;
    }
    result
}

/// Drop this worker's claim (and the job too when it is obsolete).
async fn release(
    ctx: &JobContext,
    job: &Job,
    job_kv: &KeyValue,
    claim_revision: Revision,
    drop_job: bool,
) {
    let claim_key = ctx.catalog.claim_key(&job.topic_id, job.partition);
    let mut txn = Txn::new()
        .when([Compare::create_revision(
            claim_key.clone(),
            CmpOp::Equal,
            claim_revision,
        )])
        .and_then([TxnOp::delete(claim_key)]);
    if drop_job {
        txn = txn.and_then([TxnOp::delete(job_kv.key.clone())]);
    }
    if let Err(error) = ctx.catalog.store().txn(txn).await {
        warn!(%error, "releasing a compaction claim failed; it expires with the lease");
    }
}

/// The index entries `[job.first, job.end)` of the job's partition with
/// their key-values, if they cover exactly that range and are of the kind
/// the job replaces.
async fn job_entries(
    ctx: &JobContext,
    job: &Job,
) -> Result<Result<Vec<(KeyValue, IndexEntry)>, String>, CompactorError> {
    let prefix = format!(
        "{}{}/{}/",
        ctx.catalog.index_prefix(),
        job.topic_id,
        job.partition
    );
    let range = ctx.catalog.store().range(&prefix).await?;
    let mut entries = Vec::new();
    for kv in range.kvs {
        let entry = ctx.catalog.decode_index_entry(&kv)?;
        if entry.base_offset >= job.first && entry.base_offset < job.end {
            entries.push((kv, entry));
        }
    }
    entries.sort_by_key(|(_, e)| e.base_offset);
    let mut next = job.first;
    for (_, entry) in &entries {
        if entry.base_offset != next {
            return Ok(Err(format!("the index has no run at offset {next}")));
        }
        let archived = entry.archive.is_some();
        if archived != (job.kind == JobKind::Merge) {
            return Ok(Err(format!(
                "the run at offset {next} is already {}",
                if archived { "archived" } else { "a segment" }
            )));
        }
        next = entry.end_offset();
    }
    if next != job.end || entries.is_empty() {
        return Ok(Err(format!(
            "the index does not cover {}..{}",
            job.first, job.end
        )));
    }
    Ok(Ok(entries))
}

async fn run_claimed(
    ctx: &JobContext,
    job: &Job,
    job_kv: &KeyValue,
    claim_revision: Revision,
) -> Result<JobOutcome, CompactorError> {
    let entries = match job_entries(ctx, job).await? {
        Ok(entries) => entries,
        Err(reason) => return Ok(JobOutcome::Abandoned(reason)),
    };
    let started = std::time::Instant::now();
    let mut writer = ArchiveWriter::new(&job.topic, job.partition, ctx.write)?;
    let mut input_bytes = 0u64;
    for (_, entry) in &entries {
        match &entry.archive {
            None => {
                let bytes = ctx
                    .reader
                    .read_entry(&job.topic_id, job.partition, entry)
                    .await?;
                input_bytes += bytes.len() as u64;
                let records = batch::decode(bytes)
                    .map_err(|e| CompactorError::Corrupt(format!("{}: {e}", entry.segment)))?;
                writer.write_records(&records)?;
            }
            Some(archive) => {
                input_bytes += entry.object_bytes;
                let reader =
                    ParquetObjectReader::new(ctx.store.clone(), Path::from(archive.path.as_str()))
                        .with_file_size(entry.object_bytes);
                let mut stream = ParquetRecordBatchStreamBuilder::new(reader)
                    .await?
                    .with_batch_size(8192)
                    .build()?;
                while let Some(batch) = stream.try_next().await? {
                    writer.write_batch(&batch)?;
                }
            }
        }
    }
    if writer.rows() != (job.end - job.first) as u64 {
        return Err(CompactorError::Corrupt(format!(
            "runs {}..{} of {}/{} hold {} records",
            job.first,
            job.end,
            job.topic,
            job.partition,
            writer.rows()
        )));
    }
    let file = writer.finish()?;
    let path = put_create(
        &ctx.store,
        &archive_path(&job.topic, job.partition, job.first, job.end),
        file.bytes.clone(),
    )
    .await?;
    if job.kind == JobKind::Roll {
        metrics::COMPACTED_BYTES.inc_by(input_bytes);
    }
    metrics::ARCHIVE_BYTES_WRITTEN.inc_by(file.bytes.len() as u64);
    let entry = IndexEntry {
        base_offset: job.first,
        offset_count: u32::try_from(job.end - job.first)
            .map_err(|_| CompactorError::Corrupt("job too large".into()))?,
        batch_count: file.row_groups.len() as u32,
        segment: String::new(),
        start: 0,
        len: u32::try_from(file.bytes.len()).unwrap_or(u32::MAX),
        crc: 0,
        max_timestamp: file.max_timestamp,
        object_bytes: file.bytes.len() as u64,
        committed_ms: entries
            .iter()
            .map(|(_, e)| e.committed_ms)
            .max()
            .unwrap_or_else(now_ms),
        archive: Some(ArchiveRef {
            path: path.clone(),
            id: ulid::Ulid::new().to_string(),
            row_groups: file.row_groups.clone(),
        }),
    };
    let published = publish(ctx, job, job_kv, claim_revision, &entries, &entry).await?;
    if !published {
        return Ok(JobOutcome::Abandoned(
            "the claim, the job or the index changed before publishing".into(),
        ));
    }
    info!(
        kind = job.kind.label(),
        topic = job.topic,
        partition = job.partition,
        first = job.first,
        end = job.end,
        runs = entries.len(),
        input_bytes,
        file_bytes = file.bytes.len(),
        row_groups = file.row_groups.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        path,
        "archive file published"
    );
    Ok(JobOutcome::Published(entry))
}

/// Store `bytes` at `path` with `PutMode::Create`, and return where it
/// went. A file already there is unreferenced (a worker died between its
/// PUT and its publish, or a deleted topic of the same name left it for
/// GC): it is never overwritten, since GC may be about to delete it, and
/// the new file goes to `<first>-<last>.<ulid>.parquet` beside it instead.
async fn put_create(
    store: &Arc<dyn ObjectStore>,
    path: &str,
    bytes: Bytes,
) -> Result<String, CompactorError> {
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store
        .put_opts(
            &Path::from(path),
            PutPayload::from_bytes(bytes.clone()),
            options.clone(),
        )
        .await
    {
        Ok(_) => Ok(path.to_string()),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let stem = path.strip_suffix(".parquet").unwrap_or(path);
            let unique = format!("{stem}.{}.parquet", ulid::Ulid::new());
            debug!(
                path,
                unique, "an unpublished file holds the path; writing beside it"
            );
            store
                .put_opts(
                    &Path::from(unique.as_str()),
                    PutPayload::from_bytes(bytes),
                    options,
                )
                .await?;
            Ok(unique)
        }
        Err(error) => Err(error.into()),
    }
}

/// The transaction that makes the file visible: replaces the job's index
/// entries with `entry` if the claim, the job, the topic and every entry
/// are as they were read.
async fn publish(
    ctx: &JobContext,
    job: &Job,
    job_kv: &KeyValue,
    claim_revision: Revision,
    entries: &[(KeyValue, IndexEntry)],
    entry: &IndexEntry,
) -> Result<bool, CompactorError> {
    let claim_key = ctx.catalog.claim_key(&job.topic_id, job.partition);
    let first_key = ctx
        .catalog
        .index_key(&job.topic_id, job.partition, job.first);
    let mut compares = vec![
        Compare::create_revision(claim_key.clone(), CmpOp::Equal, claim_revision),
        Compare::mod_revision(job_kv.key.clone(), CmpOp::Equal, job_kv.mod_revision),
        Compare::create_revision(
            ctx.catalog.topic_key(&job.topic),
            CmpOp::Equal,
            job.topic_create_revision,
        ),
        // GC has not seen the new file unreferenced: a publish that comes
        // later than GC's grace (a stalled worker) fails instead of
        // referencing a file GC may delete
        Compare::absent(format!(
            "{}{}",
            ctx.catalog.gc_prefix(),
            entry.object_path()
        )),
    ];
    let mut ops = vec![
        TxnOp::put(first_key.clone(), serde_json::to_vec(entry)?),
        TxnOp::delete(job_kv.key.clone()),
        TxnOp::delete(claim_key),
    ];
    for (kv, _) in entries {
        compares.push(Compare::mod_revision(
            kv.key.clone(),
            CmpOp::Equal,
            kv.mod_revision,
        ));
        if kv.key != first_key {
            ops.push(TxnOp::delete(kv.key.clone()));
        }
    }
    let response = ctx
        .catalog
        .store()
        .txn(Txn::new().when(compares).and_then(ops))
        .await?;
    Ok(response.succeeded)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;
    use sluice_fetch::ClusterView;
    use sluice_metadata::embedded::EmbeddedStore;
    use sluice_metadata::model::{ChunkCommit, CommitOutcome, HeadState};
    use sluice_metadata::MetaStore;
    use sluice_segment::batch::{NewRecord, StoredRecord};
    use sluice_segment::{SegmentBuilder, SegmentId};

    use super::*;

    struct Fixture {
        catalog: Catalog,
        store: Arc<dyn ObjectStore>,
        view: Arc<ClusterView>,
        records: Vec<StoredRecord>,
        topic_create_revision: Revision,
        topic_id: String,
    }

    /// A topic whose partition 0 holds `runs` segment runs of 10 records.
    async fn fixture(runs: usize) -> Fixture {
        let meta: Arc<dyn MetaStore> = Arc::new(EmbeddedStore::in_memory());
        let catalog = Catalog::new(meta, "t");
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let topic = catalog
            .create_topic("orders", 1, BTreeMap::new())
            .await
            .unwrap();
        let mut head = HeadState::default();
        let mut records = Vec::new();
        for run in 0..runs {
            let new: Vec<NewRecord> = (0..10)
                .map(|i| NewRecord {
                    key: Some(Bytes::from(format!("k{run}-{i}"))),
                    value: (i != 3).then(|| Bytes::from(vec![run as u8, i as u8, 0xff])),
                    headers: vec![("h".into(), Some(Bytes::from_static(b"x")))],
                    timestamp_ms: 1_000 + (run * 10 + i) as i64,
                })
                .collect();
            for (i, r) in new.iter().enumerate() {
                records.push(StoredRecord {
                    offset: (run * 10 + i) as i64,
                    timestamp_ms: r.timestamp_ms,
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r.headers.clone(),
                });
            }
            let bytes = batch::encode(&new).unwrap();
            let summary = batch::validate(&bytes).unwrap();
            let mut builder = SegmentBuilder::new();
            builder.add(&topic.record.id, 0, bytes, summary);
            let (object, footer) = builder.finish();
            let id = SegmentId::generate();
            store.put(&id.path(), object.clone().into()).await.unwrap();
            let chunk = &footer.chunks[0];
            let commit = ChunkCommit {
                topic_name: "orders".into(),
                topic_create_revision: topic.create_revision,
                topic_id: topic.record.id.clone(),
                partition: 0,
                segment: id.to_string(),
                start: chunk.start,
                len: chunk.len,
                crc: chunk.crc,
                offset_count: chunk.offset_count,
                batch_count: chunk.batch_count,
                max_timestamp: chunk.max_timestamp,
                object_bytes: object.len() as u64,
            };
            match catalog.try_commit(&[commit], &[head]).await.unwrap() {
                CommitOutcome::Committed { heads, .. } => head = heads[0].clone(),
                other => panic!("{other:?}"),
            }
        }
        let view = ClusterView::start(catalog.clone()).await.unwrap();
        Fixture {
            catalog,
            store,
            view,
            records,
            topic_create_revision: topic.create_revision,
            topic_id: topic.record.id,
        }
    }

    impl Fixture {
        fn ctx(&self, node_id: i32) -> JobContext {
            JobContext {
                catalog: self.catalog.clone(),
                store: self.store.clone(),
                reader: Reader::new(self.store.clone(), self.view.clone()),
                node_id,
                write: ArchiveWriteOptions {
                    row_group_bytes: 200,
                    zstd_level: 1,
                },
            }
        }

        async fn job(&self, kind: JobKind, first: i64, end: i64) -> (Job, KeyValue) {
            let job = Job {
                kind,
                topic: "orders".into(),
                topic_id: self.topic_id.clone(),
                topic_create_revision: self.topic_create_revision,
                partition: 0,
                first,
                end,
                created_ms: 0,
            };
            let key = self.catalog.job_key(&self.topic_id, 0);
            let store = self.catalog.store();
            store
                .put(&key, serde_json::to_vec(&job).unwrap().into(), None)
                .await
                .unwrap();
            let kv = store.get(&key).await.unwrap().unwrap();
            (job, kv)
        }

        async fn index(&self) -> Vec<IndexEntry> {
            let prefix = format!("{}{}/0/", self.catalog.index_prefix(), self.topic_id);
            let mut entries: Vec<IndexEntry> = self
                .catalog
                .store()
                .range(&prefix)
                .await
                .unwrap()
                .kvs
                .iter()
                .map(|kv| self.catalog.decode_index_entry(kv).unwrap())
                .collect();
            entries.sort_by_key(|e| e.base_offset);
            entries
        }

        async fn read_all(&self) -> Vec<StoredRecord> {
            let reader = Reader::new(self.store.clone(), self.view.clone());
            let mut out = Vec::new();
            let mut offset = 0;
            while offset < self.records.len() as i64 {
                let chunks = reader.read(&self.topic_id, 0, offset, 64).await.unwrap();
                for chunk in chunks {
                    for record in batch::decode(chunk.batches).unwrap() {
                        if record.offset >= offset {
                            offset = record.offset + 1;
                            out.push(record);
                        }
                    }
                }
            }
            out
        }
    }

    async fn settle(fixture: &Fixture, entries: usize) {
        for _ in 0..200 {
            let all = fixture.view.entries(&fixture.topic_id, 0);
            if all.len() == entries {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the view did not settle at {entries} entries");
    }

    #[tokio::test]
    async fn one_claim_wins_and_the_published_file_serves_every_record() {
        let f = fixture(4).await;
        let (job, kv) = f.job(JobKind::Roll, 0, 30).await;
        let lease = f.catalog.store().lease_grant(30).await.unwrap();
        let a = f.ctx(1);
        let claim_a = claim(&a, &job, &kv, lease).await.unwrap().unwrap();
        assert_eq!(claim(&f.ctx(2), &job, &kv, lease).await.unwrap(), None);

        let outcome = run(&a, &job, &kv, claim_a).await.unwrap();
        let JobOutcome::Published(entry) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!((entry.base_offset, entry.end_offset()), (0, 30));
        let archive = entry.archive.clone().unwrap();
        assert_eq!(archive.path, "archive/orders/partition=0/0-29.parquet");
        assert!(archive.row_groups.len() > 1, "{:?}", archive.row_groups);
        let index = f.index().await;
        assert_eq!(index.len(), 2, "one archive entry and the last segment run");
        assert!(index[0].archive.is_some() && index[1].archive.is_none());
        let store = f.catalog.store();
        assert!(store.get(&kv.key).await.unwrap().is_none(), "job removed");
        assert!(store
            .get(&f.catalog.claim_key(&f.topic_id, 0))
            .await
            .unwrap()
            .is_none());

        settle(&f, 2).await;
        assert_eq!(f.read_all().await, f.records);
    }

    #[tokio::test]
    async fn a_job_whose_runs_changed_is_abandoned_and_publishes_nothing() {
        let f = fixture(3).await;
        let (job, kv) = f.job(JobKind::Roll, 0, 30).await;
        let lease = f.catalog.store().lease_grant(30).await.unwrap();
        let ctx = f.ctx(1);
        let claimed = claim(&ctx, &job, &kv, lease).await.unwrap().unwrap();
        // the runs as the worker read them; then one is rewritten (as
        // retention or another publish would) before the worker publishes
        let stale = job_entries(&ctx, &job).await.unwrap().unwrap();
        let second = f.catalog.index_key(&f.topic_id, 0, 10);
        let value = f.catalog.store().get(&second).await.unwrap().unwrap().value;
        f.catalog.store().put(&second, value, None).await.unwrap();
        let before = f.index().await;
        let entry = IndexEntry {
            archive: Some(ArchiveRef {
                path: "archive/orders/partition=0/0-29.parquet".into(),
                id: "x".into(),
                row_groups: vec![0],
            }),
            ..stale[0].1.clone()
        };
        assert!(!publish(&ctx, &job, &kv, claimed, &stale, &entry)
            .await
            .unwrap());
        assert_eq!(f.index().await, before, "nothing published");

        // a job over a range the index does not hold is abandoned
        let (job, kv) = f.job(JobKind::Merge, 0, 30).await;
        release(&ctx, &job, &kv, claimed, false).await;
        let claimed = claim(&ctx, &job, &kv, lease).await.unwrap().unwrap();
        let outcome = run(&ctx, &job, &kv, claimed).await.unwrap();
        assert!(matches!(outcome, JobOutcome::Abandoned(_)), "{outcome:?}");
        assert_eq!(f.index().await, before);
        assert!(
            f.catalog.store().get(&kv.key).await.unwrap().is_none(),
            "obsolete job dropped"
        );
    }
}
