//! sluice's compactor: rolls committed segment runs into Parquet archive
//! files, merges small archive files into larger ones, applies retention
//! and garbage-collects unreferenced objects.
//!
//! Duties are split in two. The node elected **controller** (the
//! `controller` key, created on its node lease) plans: each tick it looks at
//! every partition in the cluster view and writes at most one job per
//! partition (roll the segment runs once the oldest is half of
//! `archive_max_lag` old, or merge a run of small files), applies
//! `retention.ms` / `retention.bytes`, publishes lag and index metrics, and
//! now and then runs GC. **Workers** (nodes with the `compactor` role) claim
//! jobs on their lease and run them; see [`jobs`]. Any number of workers
//! share the jobs; a worker that dies loses its claims with its lease.

pub mod controller;
pub mod jobs;
pub mod keyed;
pub mod metrics;
pub mod plan;

use std::time::Duration;

use sluice_metadata::model::ModelError;
use sluice_metadata::MetaError;
use sluice_segment::archive::ArchiveError;

pub use controller::{start, CompactorHandle, Duties, NodeParts};

/// Why a compaction step failed.
#[derive(Debug, thiserror::Error)]
pub enum CompactorError {
    /// The metadata store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The model layer failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Reading a segment run failed.
    #[error(transparent)]
    Fetch(#[from] sluice_fetch::FetchError),
    /// Writing or reading Parquet failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// Reading Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Stored data does not add up.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Encoding a value failed.
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
}

/// Compaction, retention and GC settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactorConfig {
    /// Every record older than this is in an archive file (`archive.max.lag`).
    #[serde(with = "humantime_serde")]
    pub archive_max_lag: Duration,
    /// Size an archive file is merged up to.
    #[serde(with = "sluice_metadata::units::bytes")]
    pub archive_target_bytes: u64,
    /// Uncompressed bytes of one Parquet row group.
    #[serde(with = "sluice_metadata::units::bytes")]
    pub row_group_bytes: usize,
    /// Segment bytes one roll job reads at most.
    #[serde(with = "sluice_metadata::units::bytes")]
    pub roll_bytes_max: u64,
    /// Small adjacent files that trigger a merge.
    pub merge_min_files: usize,
    /// Jobs one worker runs at once.
    pub job_concurrency: usize,
    /// How often a worker looks for jobs.
    #[serde(with = "humantime_serde")]
    pub job_poll: Duration,
    /// How often GC runs (on the controller).
    #[serde(with = "humantime_serde")]
    pub gc_interval: Duration,
    /// How long an object stays after it is first seen unreferenced.
    #[serde(with = "humantime_serde")]
    pub gc_grace: Duration,
    /// Operations one metadata transaction may hold (etcd --max-txn-ops).
    pub txn_ops_max: usize,
}

impl Default for CompactorConfig {
    fn default() -> Self {
        Self {
            archive_max_lag: Duration::from_secs(60),
            archive_target_bytes: 128 * 1024 * 1024,
            row_group_bytes: 8 * 1024 * 1024,
            roll_bytes_max: 64 * 1024 * 1024,
            merge_min_files: 8,
            job_concurrency: 2,
            job_poll: Duration::from_millis(500),
            gc_interval: Duration::from_secs(60),
            gc_grace: Duration::from_secs(600),
            txn_ops_max: 128,
        }
    }
}

impl CompactorConfig {
    /// How often the controller plans.
    pub fn tick(&self) -> Duration {
        (self.archive_max_lag / 8).clamp(Duration::from_millis(200), Duration::from_secs(5))
    }

    /// Index entries one job may replace: its publish compares each plus
    /// the claim, the job and the topic.
    pub fn entries_per_job_max(&self) -> usize {
        self.txn_ops_max.saturating_sub(4).clamp(2, 1000)
    }
}
