//! The memory budget in /metrics: the budget, each share's size and what
//! it holds now, and the process's resident memory, refreshed every second.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::{register_int_gauge, register_int_gauge_vec, IntGauge, IntGaugeVec};
use sluice_fetch::BlockCache;
use tokio::sync::Semaphore;

use crate::config::Config;

fn gauge(name: &str, help: &str) -> IntGauge {
    // fails only on a duplicate or malformed name: a programming error
    register_int_gauge!(name, help).expect("metric names are unique and valid")
}

fn gauges(name: &str, help: &str) -> IntGaugeVec {
    register_int_gauge_vec!(name, help, &["share"]).expect("metric names are unique and valid")
}

static MAX: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "sluice_memory_max_bytes",
        "the node's memory budget (--memory-max)",
    )
});
static SHARE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauges(
        "sluice_memory_share_bytes",
        "bytes each share of the memory budget may hold",
    )
});
static USED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauges(
        "sluice_memory_used_bytes",
        "bytes each share of the memory budget holds now",
    )
});
static RESIDENT: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "sluice_process_resident_bytes",
        "the process's resident memory (VmRSS)",
    )
});
static RESIDENT_PEAK: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "sluice_process_resident_peak_bytes",
        "the process's largest resident memory so far (VmHWM)",
    )
});

/// What the shares hold, read where it is kept.
pub struct Holders {
    /// The read cache (its memory tier).
    pub cache: BlockCache,
    /// Kafka request bytes in flight.
    pub requests: Arc<Semaphore>,
    /// Fetch response bytes being read.
    pub fetch: Arc<Semaphore>,
}

/// Publish the budget and its shares, then refresh what they hold every
/// second for as long as the process runs.
pub fn report(config: &Config, holders: Holders) {
    let memory = &config.memory;
    MAX.set(memory.max as i64);
    for (name, fraction) in memory.shares() {
        SHARE
            .with_label_values(&[name])
            .set(memory.bytes(fraction) as i64);
    }
    let requests_max = config.kafka.in_flight_bytes_max;
    let fetch_max = config.kafka.fetch_bytes_max;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let used = [
                ("cache", holders.cache.memory_used_bytes()),
                (
                    "writer",
                    usize::try_from(sluice_ingest::metrics::WRITER_BUFFERED_BYTES.get())
                        .unwrap_or(0),
                ),
                (
                    "requests",
                    requests_max.saturating_sub(holders.requests.available_permits()),
                ),
                (
                    "fetch",
                    fetch_max.saturating_sub(holders.fetch.available_permits()),
                ),
            ];
            for (name, bytes) in used {
                USED.with_label_values(&[name]).set(bytes as i64);
            }
            if let Some((resident, peak)) = resident() {
                RESIDENT.set(resident as i64);
                RESIDENT_PEAK.set(peak as i64);
            }
        }
    });
}

/// VmRSS and VmHWM in bytes (Linux).
fn resident() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
