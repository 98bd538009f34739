//! Prometheus metrics of the read path (registered in the default registry).

use std::sync::LazyLock;

use prometheus::{register_int_counter, IntCounter};

fn counter(name: &str, help: &str) -> IntCounter {
    // Fails only on a duplicate or malformed name: a programming error.
    register_int_counter!(name, help).expect("metric names are unique and valid")
}

/// Object-store range GETs issued by reads.
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
/// Watch restarts of the cluster view.
pub static VIEW_RELOADS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_view_reloads_total",
        "full reloads of the in-memory cluster view",
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
        &VIEW_RELOADS,
    ] {
        LazyLock::force(counter);
    }
}
