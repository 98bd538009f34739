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
use sluice_fetch::Reader;
use sluice_metadata::compaction::StoredEntry;
use sluice_metadata::model::{ArchiveRef, Catalog, IndexEntry, SegmentRef};
use sluice_metadata::{LeaseId, Revision};
use sluice_segment::archive::{self, ArchiveWriteOptions, ArchiveWriter};
use sluice_segment::batch::{self, StoredRecord};
use sluice_segment::paths::ArchiveFile;
use tracing::{debug, info, warn};

use crate::CompactorError;
use crate::{keyed, metrics};

pub use sluice_metadata::compaction::{Claim, Job, JobKind, StoredJob};

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

/// Try to claim `job` on `lease`; the claim's create revision when this
/// worker got it.
pub async fn claim(
    ctx: &JobContext,
    job: &StoredJob,
    lease: LeaseId,
) -> Result<Option<Revision>, CompactorError> {
    Ok(ctx
        .catalog
        .claim_compaction_job(job, ctx.node_id, lease)
        .await?)
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
    stored: &StoredJob,
    claim_revision: Revision,
) -> Result<JobOutcome, CompactorError> {
    let job = &stored.job;
    let result = run_claimed(ctx, stored, claim_revision).await;
    let outcome_label = match &result {
        Ok(JobOutcome::Published(_)) => "published",
        Ok(JobOutcome::Abandoned(_)) => "abandoned",
        Err(_) => "failed",
    };
    metrics::JOBS
        .with_label_values(&[job.kind.label(), outcome_label])
        .inc();
    if !matches!(result, Ok(JobOutcome::Published(_))) {
        let obsolete = matches!(result, Ok(JobOutcome::Abandoned(_)));
        if let Err(error) = ctx
            .catalog
            .release_compaction_claim(stored, claim_revision, obsolete)
            .await
        {
            warn!(%error, "releasing a compaction claim failed; it expires with the lease");
        }
    }
    result
}

/// The index entries `[job.first, job.end)` of the job's partition with
/// their key-values, if they cover exactly that range and are of the kind
/// the job replaces.
async fn job_entries(
    ctx: &JobContext,
    job: &Job,
) -> Result<Result<Vec<StoredEntry>, String>, CompactorError> {
    let mut entries = ctx
        .catalog
        .partition_entries(&job.topic_id, job.partition)
        .await?;
    entries.retain(|(_, entry)| entry.base_offset >= job.first && entry.base_offset < job.end);
    let mut next = job.first;
    for (_, entry) in &entries {
        if entry.base_offset != next {
            return Ok(Err(format!("the index has no run at offset {next}")));
        }
        let archived = entry.archive.is_some();
        if job.kind != JobKind::Compact && archived != (job.kind == JobKind::Merge) {
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
    stored: &StoredJob,
    claim_revision: Revision,
) -> Result<JobOutcome, CompactorError> {
    let job = &stored.job;
    let entries = match job_entries(ctx, job).await? {
        Ok(entries) => entries,
        Err(reason) => return Ok(JobOutcome::Abandoned(reason)),
    };
    let started = std::time::Instant::now();
    let compact = job.kind == JobKind::Compact;
    let delete_retention_ms = if compact {
        match ctx.catalog.get_topic(&job.topic).await? {
            Some(topic) if topic.create_revision == job.topic_create_revision => topic
                .record
                .settings()
                .long("delete.retention.ms")
                .unwrap_or(0),
            _ => return Ok(JobOutcome::Abandoned("the topic is gone".into())),
        }
    } else {
        0
    };
    let mut writer = ArchiveWriter::new(&job.topic, job.partition, ctx.write)?;
    if compact {
        writer = writer.compacted();
    }
    // a compaction sees every record of the job before it keeps any
    let mut collected: Vec<StoredRecord> = Vec::new();
    let mut collected_bytes = 0usize;
    let mut input_bytes = 0u64;
    let mut held = metrics::Held::default();
    for (_, entry) in &entries {
        match &entry.archive {
            None => {
                let bytes = ctx
                    .reader
                    .read_entry(&job.topic_id, job.partition, entry)
                    .await?;
                input_bytes += bytes.len() as u64;
                // the run as read and as records
                held.set(collected_bytes + 2 * bytes.len() + writer.estimated_bytes());
                let run_bytes = bytes.len();
                let records = batch::decode(bytes)
                    .map_err(|e| CompactorError::Corrupt(format!("{}: {e}", entry.segment)))?;
                if compact {
                    collected.extend(records);
                    collected_bytes += run_bytes;
                } else {
                    writer.write_records(&records)?;
                }
                held.set(collected_bytes + writer.estimated_bytes());
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
                    if compact {
                        collected.extend(archive::records_of(&batch)?);
                        collected_bytes += batch.get_array_memory_size();
                    } else {
                        writer.write_batch(&batch)?;
                    }
                    held.set(collected_bytes + writer.estimated_bytes());
                }
            }
        }
    }
    let mut tombstones_expire_ms = None;
    if compact {
        let now_ms = ctx.catalog.clock().now_ms();
        let compacted = keyed::compact(collected, now_ms, delete_retention_ms);
        writer.write_records(&compacted.records)?;
        tombstones_expire_ms = compacted.tombstones_expire_ms;
        metrics::COMPACTED_AWAY.inc_by(compacted.dropped as u64);
    } else if writer.rows() != (job.end - job.first) as u64 {
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
    held.set(file.bytes.len());
    let path = put_create(
        &ctx.store,
        &ArchiveFile::new(&job.topic, job.partition, job.first, job.end),
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
        segment: SegmentRef::default(),
        start: 0,
        len: u32::try_from(file.bytes.len()).unwrap_or(u32::MAX),
        crc: 0,
        max_timestamp: file.max_timestamp,
        object_bytes: file.bytes.len() as u64,
        committed_ms: entries
            .iter()
            .map(|(_, e)| e.committed_ms)
            .max()
            .unwrap_or_else(|| ctx.catalog.clock().now_ms()),
        archive: Some(ArchiveRef {
            path: path.clone(),
            id: ulid::Ulid::new().to_string(),
            row_groups: file.row_groups.clone(),
            compacted: compact,
            tombstones_expire_ms,
        }),
    };
    let published = ctx
        .catalog
        .publish_archive(stored, claim_revision, &entries, &entry)
        .await?;
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
    file: &ArchiveFile,
    bytes: Bytes,
) -> Result<String, CompactorError> {
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let path = file.path();
    match store
        .put_opts(
            &Path::from(path.as_str()),
            PutPayload::from_bytes(bytes.clone()),
            options.clone(),
        )
        .await
    {
        Ok(_) => Ok(path),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let unique = file.beside().path();
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;
    use sluice_metadata::embedded::EmbeddedStore;
    use sluice_metadata::model::{ChunkCommit, CommitOutcome, HeadState};
    use sluice_metadata::view::ClusterView;
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

    /// A topic whose partition 0 holds `runs` segment runs of 10 records,
    /// each with a key of its own; the fourth of each run is a tombstone.
    async fn fixture(runs: usize) -> Fixture {
        fixture_of(runs, &[], |run, i| format!("k{run}-{i}")).await
    }

    /// [`fixture`] of a topic with `configs`, keys named by `key(run, i)`.
    async fn fixture_of(
        runs: usize,
        configs: &[(&str, &str)],
        key: fn(usize, usize) -> String,
    ) -> Fixture {
        let meta: Arc<dyn MetaStore> = Arc::new(EmbeddedStore::in_memory());
        let catalog = Catalog::new(meta, "t");
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let configs = configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let topic = catalog.create_topic("orders", 1, configs).await.unwrap();
        let mut head = HeadState::default();
        let mut records = Vec::new();
        for run in 0..runs {
            let new: Vec<NewRecord> = (0..10)
                .map(|i| NewRecord {
                    key: Some(Bytes::from(key(run, i))),
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
                segment: id.0,
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

        async fn job(&self, kind: JobKind, first: i64, end: i64) -> StoredJob {
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
            let key = self.catalog.keys().compaction_job(&self.topic_id, 0);
            let store = self.catalog.store();
            store
                .put(&key, serde_json::to_vec(&job).unwrap().into(), None)
                .await
                .unwrap();
            let kv = store.get(&key).await.unwrap().unwrap();
            StoredJob {
                job,
                key,
                mod_revision: kv.mod_revision,
            }
        }

        async fn index(&self) -> Vec<IndexEntry> {
            let prefix = self.catalog.keys().partition_index(&self.topic_id, 0);
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
        let job = f.job(JobKind::Roll, 0, 30).await;
        let lease = f.catalog.store().lease_grant(30).await.unwrap();
        let a = f.ctx(1);
        let claim_a = claim(&a, &job, lease).await.unwrap().unwrap();
        assert_eq!(claim(&f.ctx(2), &job, lease).await.unwrap(), None);

        let outcome = run(&a, &job, claim_a).await.unwrap();
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
        assert!(store.get(&job.key).await.unwrap().is_none(), "job removed");
        assert!(store
            .get(&f.catalog.keys().compaction_claim(&f.topic_id, 0))
            .await
            .unwrap()
            .is_none());

        settle(&f, 2).await;
        assert_eq!(f.read_all().await, f.records);
    }

    #[tokio::test]
    async fn a_job_whose_runs_changed_is_abandoned_and_publishes_nothing() {
        let f = fixture(3).await;
        let job = f.job(JobKind::Roll, 0, 30).await;
        let lease = f.catalog.store().lease_grant(30).await.unwrap();
        let ctx = f.ctx(1);
        let claimed = claim(&ctx, &job, lease).await.unwrap().unwrap();
        // the runs as the worker read them; then one is rewritten (as
        // retention or another publish would) before the worker publishes
        let stale = job_entries(&ctx, &job.job).await.unwrap().unwrap();
        let second = f.catalog.keys().index_entry(&f.topic_id, 0, 10);
        let value = f.catalog.store().get(&second).await.unwrap().unwrap().value;
        f.catalog.store().put(&second, value, None).await.unwrap();
        let before = f.index().await;
        let entry = IndexEntry {
            archive: Some(ArchiveRef {
                path: "archive/orders/partition=0/0-29.parquet".into(),
                id: "x".into(),
                row_groups: vec![0],
                compacted: false,
                tombstones_expire_ms: None,
            }),
            ..stale[0].1.clone()
        };
        assert!(!ctx
            .catalog
            .publish_archive(&job, claimed, &stale, &entry)
            .await
            .unwrap());
        assert_eq!(f.index().await, before, "nothing published");

        // a job over a range the index does not hold is abandoned
        let job = f.job(JobKind::Merge, 0, 30).await;
        ctx.catalog
            .release_compaction_claim(&job, claimed, false)
            .await
            .unwrap();
        let claimed = claim(&ctx, &job, lease).await.unwrap().unwrap();
        let outcome = run(&ctx, &job, claimed).await.unwrap();
        assert!(matches!(outcome, JobOutcome::Abandoned(_)), "{outcome:?}");
        assert_eq!(f.index().await, before);
        assert!(
            f.catalog.store().get(&job.key).await.unwrap().is_none(),
            "obsolete job dropped"
        );
    }

    /// The last record of each key of `records`, in offset order.
    fn latest_per_key(records: &[StoredRecord]) -> Vec<StoredRecord> {
        let mut last: BTreeMap<Bytes, StoredRecord> = BTreeMap::new();
        for record in records {
            last.insert(record.key.clone().unwrap(), record.clone());
        }
        let mut kept: Vec<StoredRecord> = last.into_values().collect();
        kept.sort_by_key(|r| r.offset);
        kept
    }

    #[tokio::test]
    async fn a_compaction_keeps_the_latest_record_per_key_and_later_drops_tombstones() {
        // 40 records over 7 keys; offsets 3, 13, 23 and 33 are tombstones
        let f = fixture_of(
            4,
            &[
                ("cleanup.policy", "compact"),
                ("delete.retention.ms", "9223372036854775807"),
            ],
            |run, i| format!("k{}", (run * 10 + i) % 7),
        )
        .await;
        let job = f.job(JobKind::Compact, 0, 40).await;
        let lease = f.catalog.store().lease_grant(30).await.unwrap();
        let ctx = f.ctx(1);
        let claimed = claim(&ctx, &job, lease).await.unwrap().unwrap();
        let JobOutcome::Published(entry) = run(&ctx, &job, claimed).await.unwrap() else {
            panic!("not published")
        };
        let expected = latest_per_key(&f.records);
        assert_eq!(expected.len(), 7);
        assert!(
            expected.iter().any(|r| r.value.is_none()),
            "a tombstone is the latest of its key"
        );
        let archive = entry.archive.clone().unwrap();
        assert!(archive.compacted);
        assert!(archive.tombstones_expire_ms.is_some());
        assert_eq!((entry.base_offset, entry.end_offset()), (0, 40));
        settle(&f, 1).await;
        // read back through the reader: only the latest records, at their offsets
        assert_eq!(f.read_all().await, expected);

        // tombstones may go now: the next compaction drops them
        f.catalog
            .update_topic_configs("orders", |configs| {
                let mut configs = configs.clone();
                configs.insert("delete.retention.ms".into(), "0".into());
                Ok(configs)
            })
            .await
            .unwrap();
        let job = f.job(JobKind::Compact, 0, 40).await;
        let claimed = claim(&ctx, &job, lease).await.unwrap().unwrap();
        let JobOutcome::Published(entry) = run(&ctx, &job, claimed).await.unwrap() else {
            panic!("not published")
        };
        assert_eq!(entry.archive.as_ref().unwrap().tombstones_expire_ms, None);
        for _ in 0..200 {
            if f.view.entries(&f.topic_id, 0)[0].archive == entry.archive {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let live: Vec<StoredRecord> = expected.into_iter().filter(|r| r.value.is_some()).collect();
        let reader = Reader::new(f.store.clone(), f.view.clone());
        let mut seen = Vec::new();
        for chunk in reader.read(&f.topic_id, 0, 0, 1 << 20).await.unwrap() {
            seen.extend(batch::decode(chunk.batches).unwrap());
        }
        assert_eq!(seen, live);
        // a read from inside a gap moves on to the next record kept
        let after_gap = reader.read(&f.topic_id, 0, 1, 1 << 20).await.unwrap();
        let first = batch::decode(after_gap[0].batches.clone()).unwrap();
        assert_eq!(first[0].offset, live[0].offset);
    }
}
