//! The controller loop (election, planning, retention, metrics, GC) and the
//! worker loop (claiming and running jobs).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice_fetch::Reader;
use sluice_metadata::model::{Catalog, IndexEntry, Topic};
use sluice_metadata::view::ClusterView;
use sluice_metadata::LeaseId;
use sluice_segment::archive::ArchiveWriteOptions;
use sluice_segment::paths::{run_object_path, OBJECT_PREFIXES};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::jobs::{self, Job, JobContext, JobOutcome};
use crate::plan;
use crate::{metrics, CompactorConfig, CompactorError};

/// Which compactor duties this node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duties {
    /// Stand for controller (plan, retention, GC).
    pub controller: bool,
    /// Run compaction jobs.
    pub worker: bool,
}

/// The running compactor duties of a node; dropping it does not stop them,
/// [`CompactorHandle::stop`] does.
#[derive(Debug)]
pub struct CompactorHandle {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl CompactorHandle {
    /// Stop planning and claiming; jobs in progress are abandoned (their
    /// claims expire with the node lease, which the caller revokes).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// What the compactor duties run on: the node's own parts.
#[derive(Clone)]
pub struct NodeParts {
    /// The catalog.
    pub catalog: Catalog,
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    /// The node's cluster view.
    pub view: Arc<ClusterView>,
    /// The node's reader (through its cache).
    pub reader: Reader,
    /// This node's id.
    pub node_id: i32,
    /// The node's registration lease (claims and the controller key live on it).
    pub lease: watch::Receiver<LeaseId>,
}

/// Start this node's compactor duties.
pub fn start(config: CompactorConfig, roles: Duties, parts: NodeParts) -> CompactorHandle {
    let NodeParts {
        catalog,
        store,
        view,
        reader,
        node_id,
        lease,
    } = parts;
    metrics::register();
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let config = Arc::new(config);
    if roles.controller {
        let controller = Controller {
            config: config.clone(),
            catalog: catalog.clone(),
            store: store.clone(),
            view: view.clone(),
            node_id,
        };
        tasks.spawn(controller.run(lease.clone(), stopped.clone()));
    }
    if roles.worker {
        let ctx = JobContext {
            catalog,
            store,
            reader,
            node_id,
            write: ArchiveWriteOptions {
                row_group_bytes: config.row_group_bytes,
                ..ArchiveWriteOptions::default()
            },
        };
        tasks.spawn(worker(ctx, config, lease, stopped));
    }
    CompactorHandle { stop, tasks }
}

async fn sleep_or_stop(duration: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stopped.wait_for(|s| *s) => true,
        () = tokio::time::sleep(duration) => false,
    }
}

/// Longest pause before a worker retries a job that failed on it.
const JOB_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A job this worker runs, or one that failed here and waits out a backoff
/// (doubling per failure, up to [`JOB_RETRY_BACKOFF_MAX`]).
#[derive(Debug, Clone, Copy)]
enum Held {
    Running {
        failures: u32,
    },
    Backoff {
        failures: u32,
        until: tokio::time::Instant,
    },
}

/// Claim and run jobs, at most `job_concurrency` at once.
async fn worker(
    ctx: JobContext,
    config: Arc<CompactorConfig>,
    lease: watch::Receiver<LeaseId>,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(config.job_concurrency.max(1)));
    let mut running: JoinSet<()> = JoinSet::new();
    let mut held: HashMap<String, Held> = HashMap::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(String, bool)>();
    loop {
        while let Ok((key, failed)) = done_rx.try_recv() {
            let failures = match held.get(&key) {
                Some(Held::Running { failures } | Held::Backoff { failures, .. }) => *failures,
                None => 0,
            };
            if failed {
                let pause = (Duration::from_secs(1) * 2u32.saturating_pow(failures.min(6)))
                    .min(JOB_RETRY_BACKOFF_MAX);
                held.insert(
                    key,
                    Held::Backoff {
                        failures: failures + 1,
                        until: tokio::time::Instant::now() + pause,
                    },
                );
            } else {
                held.remove(&key);
            }
        }
        while running.try_join_next().is_some() {}
        let lease_id = *lease.borrow();
        if let Err(error) =
            claim_jobs(&ctx, &slots, &mut running, &mut held, &done_tx, lease_id).await
        {
            warn!(%error, "looking for compaction jobs failed");
        }
        if sleep_or_stop(config.job_poll, &mut stopped).await {
            running.abort_all();
            return;
        }
    }
}

async fn claim_jobs(
    ctx: &JobContext,
    slots: &Arc<Semaphore>,
    running: &mut JoinSet<()>,
    held: &mut HashMap<String, Held>,
    done: &tokio::sync::mpsc::UnboundedSender<(String, bool)>,
    lease: LeaseId,
) -> Result<(), CompactorError> {
    let jobs = ctx.catalog.compaction_jobs().await?;
    // forget backoffs of jobs that are gone (the map stays as small as the jobs)
    let present: HashSet<&str> = jobs.iter().map(|job| job.key.as_str()).collect();
    held.retain(|key, h| matches!(h, Held::Running { .. }) || present.contains(key.as_str()));
    if slots.available_permits() == 0 {
        return Ok(());
    }
    let claimed: HashSet<(String, i32)> =
        ctx.catalog.compaction_claims().await?.into_iter().collect();
    let now = tokio::time::Instant::now();
    for stored in jobs {
        let failures = match held.get(&stored.key) {
            Some(Held::Running { .. }) => continue,
            Some(Held::Backoff { until, .. }) if *until > now => continue,
            Some(Held::Backoff { failures, .. }) => *failures,
            None => 0,
        };
        if claimed.contains(&(stored.job.topic_id.clone(), stored.job.partition)) {
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            break;
        };
        let Some(claim_revision) = jobs::claim(ctx, &stored, lease).await? else {
            continue;
        };
        let job = &stored.job;
        info!(
            topic = job.topic,
            partition = job.partition,
            kind = job.kind.label(),
            first = job.first,
            end = job.end,
            "compaction job claimed"
        );
        held.insert(stored.key.clone(), Held::Running { failures });
        let ctx = ctx.clone();
        let done = done.clone();
        running.spawn(async move {
            let _permit = permit;
            let job = &stored.job;
            let failed = match jobs::run(&ctx, &stored, claim_revision).await {
                Ok(JobOutcome::Published(_)) => false,
                Ok(JobOutcome::Abandoned(reason)) => {
                    info!(topic = job.topic, partition = job.partition, reason, "compaction job abandoned");
                    false
                }
                Err(error) => {
                    warn!(topic = job.topic, partition = job.partition, %error, "compaction job failed");
                    true
                }
            };
            let _ = done.send((stored.key, failed));
        });
    }
    Ok(())
}

/// The controller's value under `controller`.
struct Controller {
    config: Arc<CompactorConfig>,
    catalog: Catalog,
    store: Arc<dyn ObjectStore>,
    view: Arc<ClusterView>,
    node_id: i32,
}

impl Controller {
    async fn run(self, lease: watch::Receiver<LeaseId>, mut stopped: watch::Receiver<bool>) {
        let mut last_gc = tokio::time::Instant::now();
        let mut was_controller = false;
        loop {
            let lease_id = *lease.borrow();
            let is_controller = match self.elect(lease_id).await {
                Ok(held) => held,
                Err(error) => {
                    warn!(%error, "controller election failed");
                    false
                }
            };
            if is_controller != was_controller {
                info!(
                    node_id = self.node_id,
                    is_controller, "controller role changed"
                );
                metrics::CONTROLLER.set(i64::from(is_controller));
                was_controller = is_controller;
            }
            if is_controller {
                if let Err(error) = self.tick().await {
                    warn!(%error, "controller tick failed");
                }
                if last_gc.elapsed() >= self.config.gc_interval {
                    last_gc = tokio::time::Instant::now();
                    match self.gc().await {
                        Ok(deleted) if deleted > 0 => {
                            info!(deleted, "GC deleted unreferenced objects")
                        }
                        Ok(_) => {}
                        Err(error) => warn!(%error, "GC failed"),
                    }
                }
            }
            if sleep_or_stop(self.config.tick(), &mut stopped).await {
                return;
            }
        }
    }

    /// Hold or take the `controller` key (on this node's lease).
    async fn elect(&self, lease: LeaseId) -> Result<bool, CompactorError> {
        Ok(self.catalog.elect_controller(self.node_id, lease).await?)
    }

    /// Plan jobs, apply retention, publish metrics.
    async fn tick(&self) -> Result<(), CompactorError> {
        let now = self.catalog.clock().now_ms();
        let jobs = self.catalog.compaction_jobs().await?;
        let pending: HashSet<(&str, i32)> = jobs
            .iter()
            .map(|stored| (stored.job.topic_id.as_str(), stored.job.partition))
            .collect();
        let mut archive_files = 0i64;
        let mut max_entries = 0usize;
        let topics = self.view.topics();
        let ids: HashSet<&str> = topics.iter().map(|t| t.record.id.as_str()).collect();
        // jobs of deleted topics
        for stored in &jobs {
            if !ids.contains(stored.job.topic_id.as_str()) {
                self.catalog.drop_compaction_job(stored).await?;
            }
        }
        for topic in &topics {
            for partition in 0..topic.record.partitions {
                let mut entries = self.view.entries(&topic.record.id, partition);
                let dropped = self.retain(topic, partition, &entries, now).await?;
                entries.drain(..dropped);
                archive_files += entries.iter().filter(|e| e.archive.is_some()).count() as i64;
                max_entries = max_entries.max(entries.len());
                let lag = entries
                    .iter()
                    .filter(|e| e.archive.is_none())
                    .map(|e| e.committed_ms)
                    .min()
                    .map_or(0.0, |oldest| (now - oldest).max(0) as f64 / 1000.0);
                metrics::COMPACTION_LAG
                    .with_label_values(&[&topic.record.name, &partition.to_string()])
                    .set(lag);
                if pending.contains(&(topic.record.id.as_str(), partition)) {
                    continue;
                }
                let settings = topic.record.settings();
                let next = if settings.compacted() {
                    let lags = plan::CompactionLags {
                        min_ms: settings.long("min.compaction.lag.ms").unwrap_or(0),
                        max_ms: settings.long("max.compaction.lag.ms").unwrap_or(i64::MAX),
                    };
                    plan::next_compaction(&entries, now, lags, &self.config)
                } else {
                    plan::next_job(&entries, now, &self.config)
                };
                if let Some((kind, first, end)) = next {
                    let job = Job {
                        kind,
                        topic: topic.record.name.clone(),
                        topic_id: topic.record.id.clone(),
                        topic_create_revision: topic.create_revision,
                        partition,
                        first,
                        end,
                        created_ms: now,
                    };
                    self.catalog.plan_compaction_job(&job).await?;
                    debug!(
                        topic = job.topic,
                        partition,
                        kind = kind.label(),
                        first,
                        end,
                        "compaction job planned"
                    );
                }
            }
        }
        metrics::ARCHIVE_FILES.set(archive_files);
        metrics::INDEX_ENTRIES.set(self.view.index_entry_count() as i64);
        metrics::INDEX_ENTRIES_MAX.set(max_entries as i64);
        Ok(())
    }

    /// Apply the topic's retention to one partition: advance its log start
    /// past the runs retention drops and delete their index entries, in one
    /// transaction guarded by the head and the entries. Returns how many
    /// runs were dropped.
    async fn retain(
        &self,
        topic: &Topic,
        partition: i32,
        entries: &[IndexEntry],
        now: i64,
    ) -> Result<usize, CompactorError> {
        // a topic compacted without the delete policy keeps every key's
        // latest record whatever its age
        let settings = topic.record.settings();
        let (retention_ms, retention_bytes) = if settings.deletes() {
            (
                settings.long("retention.ms"),
                settings.long("retention.bytes"),
            )
        } else {
            (None, None)
        };
        let log_start = self
            .view
            .snapshot(&topic.record.id, partition)
            .log_start_offset;
        if plan::retention_cut(entries, now, retention_ms, retention_bytes, log_start) == 0 {
            return Ok(0);
        }
        // decide again on the index as stored, guarding each entry by its
        // revision (a compaction may have replaced a run meanwhile)
        let stored = self
            .catalog
            .partition_entries(&topic.record.id, partition)
            .await?;
        let entries: Vec<IndexEntry> = stored.iter().map(|(_, e)| e.clone()).collect();
        let cut = plan::retention_cut(&entries, now, retention_ms, retention_bytes, log_start);
        if cut == 0 {
            return Ok(0);
        }
        // too many for one transaction: drop what fits, the rest next tick
        let Some((log_start_offset, dropped)) = self
            .catalog
            .drop_oldest_runs(
                topic,
                partition,
                &stored[..cut],
                self.config.entries_per_job_max(),
            )
            .await?
        else {
            return Ok(0);
        };
        metrics::RETENTION_DROPPED.inc_by(dropped as u64);
        info!(
            topic = topic.record.name,
            partition, log_start_offset, dropped, "retention advanced the log start"
        );
        Ok(dropped)
    }

    /// Delete objects under `segments/` and `archive/` that no index entry
    /// references and that were first seen unreferenced at least
    /// `gc_grace` ago (a reader that looked an entry up just before it was
    /// replaced has that long to finish). Returns how many were deleted.
    pub async fn gc(&self) -> Result<usize, CompactorError> {
        // marks first: an object referenced now stays referenced or becomes
        // garbage later, so reading the index after listing is safe
        let marked = self.catalog.gc_marks().await?;
        let mut objects = Vec::new();
        for prefix in OBJECT_PREFIXES {
            let mut listing = self.store.list(Some(&Path::from(prefix)));
            while let Some(meta) = listing.next().await {
                objects.push(meta?.location.to_string());
            }
        }
        let mut referenced = HashSet::new();
        for entry in self.catalog.all_index_entries().await? {
            let archive_path = entry.archive.as_ref().map(|a| a.path.as_str());
            // an entry that names no segment references no object
            if let Some(path) = run_object_path(entry.segment.id(), archive_path) {
                referenced.insert(path);
            }
        }
        let now = self.catalog.clock().now_ms();
        let grace = self.config.gc_grace.as_millis() as i64;
        let mut deleted = 0;
        let existing: HashSet<&str> = objects.iter().map(String::as_str).collect();
        for object in &objects {
            if referenced.contains(object) {
                continue;
            }
            match marked.get(object) {
                None => self.catalog.mark_garbage(object, now).await?,
                Some(first_seen) if now - first_seen >= grace => {
                    match self.store.delete(&Path::from(object.as_str())).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(error) => return Err(error.into()),
                    }
                    self.catalog.unmark_garbage(object).await?;
                    metrics::GC_DELETED.inc();
                    deleted += 1;
                }
                Some(_) => {}
            }
        }
        // marks of objects that are referenced again or gone
        for path in marked.keys() {
            if referenced.contains(path) || !existing.contains(path.as_str()) {
                self.catalog.unmark_garbage(path).await?;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use object_store::memory::InMemory;
    use sluice_metadata::clock::ManualClock;
    use sluice_metadata::embedded::EmbeddedStore;
    use sluice_metadata::model::{ChunkCommit, CommitOutcome, HeadState};

    use crate::jobs::JobKind;

    use super::*;

    const T0: i64 = 1_800_000_000_000;

    /// A controller over one partition holding one segment run committed
    /// at `T0` by a manual clock (the run's object is never read here).
    async fn controller(configs: BTreeMap<String, String>) -> (Controller, Arc<ManualClock>) {
        let clock = ManualClock::at(T0);
        let catalog = Catalog::with_clock(Arc::new(EmbeddedStore::in_memory()), "t", clock.clone());
        let topic = catalog.create_topic("orders", 1, configs).await.unwrap();
        let commit = ChunkCommit {
            topic_name: "orders".into(),
            topic_create_revision: topic.create_revision,
            topic_id: topic.record.id.clone(),
            partition: 0,
            segment: ulid::Ulid::new(),
            start: 0,
            len: 100,
            crc: 0,
            offset_count: 10,
            batch_count: 1,
            max_timestamp: T0,
            object_bytes: 100,
        };
        let outcome = catalog
            .try_commit(&[commit], &[HeadState::default()])
            .await
            .unwrap();
        assert!(matches!(outcome, CommitOutcome::Committed { .. }));
        let view = ClusterView::start(catalog.clone()).await.unwrap();
        let controller = Controller {
            config: Arc::new(CompactorConfig::default()),
            catalog,
            store: Arc::new(InMemory::new()),
            view,
            node_id: 1,
        };
        (controller, clock)
    }

    #[tokio::test]
    async fn a_roll_is_planned_once_the_oldest_run_is_half_the_lag_old() {
        let (controller, clock) = controller(BTreeMap::new()).await;
        let half_lag = controller.config.archive_max_lag.as_millis() as i64 / 2;
        controller.tick().await.unwrap();
        assert!(controller
            .catalog
            .compaction_jobs()
            .await
            .unwrap()
            .is_empty());
        clock.advance(half_lag - 1_000);
        controller.tick().await.unwrap();
        assert!(controller
            .catalog
            .compaction_jobs()
            .await
            .unwrap()
            .is_empty());
        clock.advance(2_000);
        controller.tick().await.unwrap();
        let jobs = controller.catalog.compaction_jobs().await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].job.kind, JobKind::Roll);
        assert_eq!((jobs[0].job.first, jobs[0].job.end), (0, 10));
        assert_eq!(jobs[0].job.created_ms, T0 + half_lag + 1_000);
    }

    #[tokio::test]
    async fn retention_drops_a_run_once_it_is_older_than_retention_ms() {
        let configs = BTreeMap::from([("retention.ms".to_string(), "10000".to_string())]);
        let (controller, clock) = controller(configs).await;
        let topic = controller.view.topic("orders").unwrap();
        clock.advance(9_000);
        controller.tick().await.unwrap();
        assert_eq!(
            controller
                .catalog
                .head(&topic.record.id, 0)
                .await
                .unwrap()
                .head
                .log_start_offset,
            0
        );
        clock.advance(2_000);
        controller.tick().await.unwrap();
        let head = controller
            .catalog
            .head(&topic.record.id, 0)
            .await
            .unwrap()
            .head;
        assert_eq!((head.log_start_offset, head.next_offset), (10, 10));
        assert!(controller
            .catalog
            .partition_entries(&topic.record.id, 0)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn runs_below_a_deleted_records_start_are_dropped_and_the_start_kept() {
        let (controller, _clock) = controller(BTreeMap::new()).await;
        let topic = controller.view.topic("orders").unwrap();
        let entries = || async {
            controller
                .catalog
                .partition_entries(&topic.record.id, 0)
                .await
                .unwrap()
                .len()
        };
        // DeleteRecords inside the run: it still holds readable offsets
        controller
            .view
            .advance_log_start(&topic, 0, 7)
            .await
            .unwrap();
        controller.tick().await.unwrap();
        assert_eq!(entries().await, 1);
        // to the high watermark: the run is wholly below and goes
        controller
            .view
            .advance_log_start(&topic, 0, -1)
            .await
            .unwrap();
        controller.tick().await.unwrap();
        assert_eq!(entries().await, 0);
        let head = controller
            .catalog
            .head(&topic.record.id, 0)
            .await
            .unwrap()
            .head;
        assert_eq!((head.log_start_offset, head.next_offset), (10, 10));
    }

    #[tokio::test]
    async fn a_compacted_topic_without_delete_ignores_retention() {
        let configs = BTreeMap::from([
            ("retention.ms".to_string(), "1000".to_string()),
            ("cleanup.policy".to_string(), "compact".to_string()),
        ]);
        let (controller, clock) = controller(configs).await;
        let topic = controller.view.topic("orders").unwrap();
        clock.advance(60_000);
        controller.tick().await.unwrap();
        let head = controller
            .catalog
            .head(&topic.record.id, 0)
            .await
            .unwrap()
            .head;
        assert_eq!(head.log_start_offset, 0);
    }
}
