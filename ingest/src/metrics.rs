//! Prometheus metrics of the write path (registered in the default registry).

use std::sync::LazyLock;

use prometheus::{
    register_counter, register_histogram, register_int_counter, register_int_counter_vec,
    register_int_gauge, Counter, Histogram, IntCounter, IntCounterVec, IntGauge,
};

fn counter(name: &str, help: &str) -> IntCounter {
    // Fails only on a duplicate or malformed name: a programming error.
    register_int_counter!(name, help).expect("metric names are unique and valid")
}

/// Records accepted for produce (acknowledged or not).
pub static PRODUCE_RECORDS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_produce_records_total",
        "records acknowledged to producers",
    )
});
/// Batch bytes acknowledged.
pub static PRODUCE_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_produce_bytes_total",
        "record batch bytes acknowledged to producers",
    )
});
/// Segment flushes (sealed buffers).
pub static FLUSHES: LazyLock<IntCounter> =
    LazyLock::new(|| counter("sluice_flushes_total", "segment buffers flushed"));
/// Object PUTs issued.
pub static OBJECT_PUTS: LazyLock<IntCounter> =
    LazyLock::new(|| counter("sluice_object_puts_total", "segment object PUTs issued"));
/// Failed object PUTs.
pub static OBJECT_PUT_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_object_put_failures_total",
        "segment object PUTs that failed",
    )
});
/// Commit transactions sent to the metadata store.
pub static COMMIT_TXNS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_commit_txns_total",
        "commit transactions sent to the metadata store",
    )
});
/// Commit transactions that lost a compare-and-swap race.
pub static COMMIT_CONFLICTS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_commit_conflicts_total",
        "commit transactions that lost a compare-and-swap",
    )
});
/// Chunks not committed because they held a batch of a producer epoch
/// abandoned since (see `writer::idempotence`).
pub static FENCED_CHUNKS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_fenced_chunks_total",
        "chunks not committed: they held a batch of an abandoned producer epoch",
    )
});
/// Flushes whose upload or commit failed.
pub static FLUSH_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_flush_failures_total",
        "flushes whose upload or commit failed",
    )
});
/// Produce latency from enqueue to acknowledgement.
pub static PRODUCE_LATENCY: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "sluice_produce_latency_seconds",
        "time from accepting a batch to acknowledging it",
        vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("metric names are unique and valid")
});
/// Time Kafka requests wait before they are handled: for request budget
/// (`in_flight_bytes_max`) and for a slot of their connection
/// (`in_flight_max`). A scaling signal: it grows when the node is saturated.
pub static REQUEST_QUEUE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "sluice_request_queue_seconds",
        "time Kafka requests wait for request budget and an in-flight slot before they are handled",
        vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]
    )
    .expect("metric names are unique and valid")
});
/// Segment object sizes.
pub static SEGMENT_BYTES: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "sluice_segment_bytes",
        "size of flushed segment objects",
        prometheus::exponential_buckets(1024.0, 4.0, 10).unwrap_or_default()
    )
    .expect("metric names are unique and valid")
});
/// SASL authentications refused (wrong password, unknown user, malformed
/// exchange).
pub static AUTHENTICATION_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sluice_authentication_failures_total",
        "SASL authentications refused",
    )
});
/// Produced bytes the writer holds (accepted, not yet answered): with
/// [`WRITER_BUFFER_MAX_BYTES`], how full the buffer is. A node whose
/// buffer stays full is holding producers back: an autoscaling signal.
pub static WRITER_BUFFERED_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sluice_writer_buffered_bytes",
        "produced bytes accepted and not yet answered (flushed and committed, or refused)"
    )
    .expect("metric names are unique and valid")
});
/// The writer's buffer bound (`writer.buffer_max_bytes`).
pub static WRITER_BUFFER_MAX_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sluice_writer_buffer_max_bytes",
        "bound of the produced bytes the writer holds; appends past it wait"
    )
    .expect("metric names are unique and valid")
});
/// Thread time of the requests timed for request-time quotas (timed only
/// while the cluster has such a quota).
pub static REQUEST_BUSY_SECONDS: LazyLock<Counter> = LazyLock::new(|| {
    register_counter!(
        "sluice_request_busy_seconds_total",
        "thread time of requests timed for request_percentage quotas"
    )
    .expect("metric names are unique and valid")
});
/// Requests that left their client over a quota (its connection muted), or
/// were refused for one (HTTP 429), by quota.
pub static QUOTA_THROTTLES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_quota_throttles_total",
        "requests that left their client over a quota, or were refused for one (HTTP 429)",
        &["quota"]
    )
    .expect("metric names are unique and valid")
});

/// Register every write-path metric now, so that `/metrics` lists each one
/// (at zero) before its first event.
pub fn register() {
    for counter in [
        &PRODUCE_RECORDS,
        &PRODUCE_BYTES,
        &FLUSHES,
        &OBJECT_PUTS,
        &OBJECT_PUT_FAILURES,
        &COMMIT_TXNS,
        &COMMIT_CONFLICTS,
        &FENCED_CHUNKS,
        &FLUSH_FAILURES,
        &AUTHENTICATION_FAILURES,
    ] {
        LazyLock::force(counter);
    }
    LazyLock::force(&PRODUCE_LATENCY);
    LazyLock::force(&REQUEST_QUEUE_SECONDS);
    LazyLock::force(&REQUEST_BUSY_SECONDS);
    LazyLock::force(&WRITER_BUFFERED_BYTES);
    LazyLock::force(&WRITER_BUFFER_MAX_BYTES);
    LazyLock::force(&QUOTA_THROTTLES);
    LazyLock::force(&SEGMENT_BYTES);
}
