//! Prometheus metrics of compaction, retention and GC (default registry).

use std::sync::LazyLock;

use prometheus::{
    register_gauge_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    GaugeVec, IntCounter, IntCounterVec, IntGauge,
};

fn counter(name: &str, help: &str) -> IntCounter {
    // Fails only on a duplicate or malformed name: a programming error.
    register_int_counter!(name, help).expect("metric names are unique and valid")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    register_int_gauge!(name, help).expect("metric names are unique and valid")
}

/// Age of the oldest record not yet archived, per partition (set by the
/// controller).
pub static COMPACTION_LAG: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "sluice_compaction_lag_seconds",
        "seconds since the oldest not yet archived run of a partition was committed",
        &["topic", "partition"]
    )
    .expect("metric names are unique and valid")
});
/// Segment bytes rolled into Parquet by this node.
pub static COMPACTED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_compacted_segment_bytes_total",
        "segment bytes rolled into archive files by this node",
    )
});
/// Records compaction of key-compacted topics dropped on this node.
pub static COMPACTED_AWAY: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_compacted_away_records_total",
        "records of key-compacted topics dropped by compaction on this node (superseded, \
         keyless, expired tombstones)",
    )
});
/// Parquet bytes written by this node (rolls and merges).
pub static ARCHIVE_BYTES_WRITTEN: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_archive_bytes_written_total",
        "archive (Parquet) bytes written by this node",
    )
});
/// Jobs finished by this node, by kind and outcome.
pub static JOBS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_compaction_jobs_total",
        "compaction jobs run by this node, by kind (roll, merge) and outcome",
        &["kind", "outcome"]
    )
    .expect("metric names are unique and valid")
});
/// Archive files referenced by the index (set by the controller).
pub static ARCHIVE_FILES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "sluice_archive_files",
        "archive files referenced by the offset index",
    )
});
/// Index entries (etcd keys) held, all partitions (set by the controller).
pub static INDEX_ENTRIES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "sluice_index_entries",
        "offset index entries (etcd keys) of all partitions",
    )
});
/// Index entries of the partition holding the most (set by the controller).
pub static INDEX_ENTRIES_MAX: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "sluice_index_entries_partition_max",
        "offset index entries of the partition holding the most",
    )
});
/// Whether this node is the controller.
pub static CONTROLLER: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "sluice_controller",
        "1 while this node is the elected controller",
    )
});
/// Objects deleted by GC.
pub static GC_DELETED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_gc_deleted_objects_total",
        "unreferenced objects deleted by garbage collection",
    )
});
/// Index entries dropped by retention.
pub static RETENTION_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_retention_dropped_entries_total",
        "index entries dropped by retention",
    )
});

/// Bytes this node's compaction jobs hold now (the compaction share of
/// the memory budget in use).
pub static HELD_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "sluice_compaction_held_bytes",
        "bytes this node's compaction jobs hold now: runs being read, records collected and \
         the archive file being built",
    )
});

/// What one job holds, counted in [`HELD_BYTES`] until it is dropped.
#[derive(Debug, Default)]
pub struct Held(i64);

impl Held {
    /// The job holds `bytes` now.
    pub fn set(&mut self, bytes: usize) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        HELD_BYTES.add(bytes - self.0);
        self.0 = bytes;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD_BYTES.sub(self.0);
    }
}

/// Register every compactor metric now (so `/metrics` lists them at zero).
pub fn register() {
    for counter in [
        &COMPACTED_BYTES,
        &ARCHIVE_BYTES_WRITTEN,
        &GC_DELETED,
        &RETENTION_DROPPED,
    ] {
        LazyLock::force(counter);
    }
    for gauge in [
        &ARCHIVE_FILES,
        &INDEX_ENTRIES,
        &INDEX_ENTRIES_MAX,
        &CONTROLLER,
        &HELD_BYTES,
    ] {
        LazyLock::force(gauge);
    }
    for kind in ["roll", "merge"] {
        for outcome in ["published", "abandoned", "failed"] {
            JOBS.with_label_values(&[kind, outcome]);
        }
    }
    LazyLock::force(&COMPACTION_LAG);
}
