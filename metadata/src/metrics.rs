//! Prometheus metrics of the control plane (registered in the default registry).

use std::sync::LazyLock;

use prometheus::{register_int_counter, IntCounter};

fn counter(name: &str, help: &str) -> IntCounter {
    // Fails only on a duplicate or malformed name: a programming error.
    register_int_counter!(name, help).expect("metric names are unique and valid")
}

/// Watch restarts of the cluster view.
pub static VIEW_RELOADS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_view_reloads_total",
        "full reloads of the in-memory cluster view",
    )
});

/// Register every metric now, so that /metrics lists them from the start.
pub fn register() {
    LazyLock::force(&VIEW_RELOADS);
}
