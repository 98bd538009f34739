//! Prometheus metrics of the read path (registered in the default registry).

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, Histogram, IntCounter,
    IntCounterVec,
};

fn counter(name: &str, help: &str) -> IntCounter {
    // Fails only on a duplicate or malformed name: a programming error.
    register_int_counter!(name, help).expect("metric names are unique and valid")
}

/// Object-store range GETs issued by reads (foreground misses, readahead
/// and reads of entries the cache cannot serve); cache hits issue none.
pub static OBJECT_GETS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_object_gets_total",
        "object store GET requests issued by reads",
    )
});
/// Bytes read from the object store.
pub static OBJECT_GET_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_object_get_bytes_total",
        "bytes read from the object store",
    )
});
/// Record-batch bytes served to readers.
pub static FETCH_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_fetch_bytes_total",
        "record batch bytes served to readers",
    )
});
/// Ranges that failed checksum verification.
pub static CORRUPT_RANGES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_corrupt_ranges_total",
        "segment ranges that failed verification",
    )
});

/// Block lookups served by a cache tier, by `tier` (`memory`, `disk`).
pub static CACHE_HITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_cache_hits_total",
        "read-cache block lookups served by a tier",
        &["tier"]
    )
    .expect("metric names are unique and valid")
});
/// Block lookups a cache tier could not serve, by `tier`: a memory miss
/// went on to the disk tier, a disk miss to the object store.
pub static CACHE_MISSES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_cache_misses_total",
        "read-cache block lookups a tier could not serve",
        &["tier"]
    )
    .expect("metric names are unique and valid")
});
/// Blocks fetched ahead of the reader (also counted in `sluice_object_gets_total`).
pub static READAHEAD_GETS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_readahead_gets_total",
        "object store GETs of blocks fetched ahead of sequential reads",
    )
});
/// Readaheads skipped because the node-wide limit was reached.
pub static READAHEAD_SKIPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_readahead_skipped_total",
        "readaheads not started because the node-wide in-flight limit was reached",
    )
});
/// Cached ranges that failed verification and were evicted and refetched.
pub static CACHE_REFETCHES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_cache_refetches_total",
        "cached ranges that failed verification, evicted and refetched from the object store",
    )
});
/// Blocks the write path put into the cache after an upload.
pub static CACHE_WRITE_THROUGH_BLOCKS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_cache_write_through_blocks_total",
        "blocks inserted into the read cache by the node's own uploads",
    )
});
/// Block fetches from the block's owner, by `result`: `hit` (the owner
/// answered) or `fallback` (the node read the object store instead).
pub static PEER_FETCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_peer_fetches_total",
        "blocks asked of their owner node, by result (hit, fallback to the object store)",
        &["result"]
    )
    .expect("metric names are unique and valid")
});
/// Blocks this node served to peers over the internal endpoint.
pub static PEER_SERVED_BLOCKS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_peer_served_blocks_total",
        "blocks served to other nodes over the internal block endpoint",
    )
});
/// Time to serve one read (index lookup, cache or object store,
/// verification), without the long-poll wait.
pub static FETCH_LATENCY: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "sluice_fetch_latency_seconds",
        "time to serve one partition read, long-poll wait excluded",
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
    )
    .expect("metric names are unique and valid")
});

/// Archive row groups read and re-encoded (cache misses of archived offsets).
pub static ARCHIVE_ROW_GROUP_READS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_archive_row_group_reads_total",
        "archive row groups read from Parquet and re-encoded as record batches",
    )
});

/// Register every read-path metric now, so that `/metrics` lists each one
/// (at zero) before its first event.
pub fn register() {
    for counter in [
        &OBJECT_GETS,
        &OBJECT_GET_BYTES,
        &FETCH_BYTES,
        &CORRUPT_RANGES,
        &READAHEAD_GETS,
        &READAHEAD_SKIPPED,
        &CACHE_REFETCHES,
        &CACHE_WRITE_THROUGH_BLOCKS,
        &PEER_SERVED_BLOCKS,
        &ARCHIVE_ROW_GROUP_READS,
    ] {
        LazyLock::force(counter);
    }
    for tier in ["memory", "disk"] {
        CACHE_HITS.with_label_values(&[tier]);
        CACHE_MISSES.with_label_values(&[tier]);
    }
    for result in ["hit", "fallback"] {
        PEER_FETCHES.with_label_values(&[result]);
    }
    LazyLock::force(&FETCH_LATENCY);
}
