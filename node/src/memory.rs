//! The memory budget in /metrics: the budget, each share's size and what
//! it holds now, and the process's resident memory, refreshed four times a
//! second; and the heap's free memory given back when the process nears
//! its budget.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{register_int_gauge, register_int_gauge_vec, IntGauge, IntGaugeVec};
use sluice_fetch::BlockCache;
use sluice_ingest::budget::ByteBudget;

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

static TRIMS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "sluice_memory_trims_total",
        "times the heap gave its free memory back because the process neared its budget"
    )
    .expect("metric names are unique and valid")
});

/// How often what the shares hold and the resident memory are read.
const TICK: Duration = Duration::from_millis(250);
/// Resident memory (a fraction of the budget) above which the heap's free
/// memory is given back to the system.
const TRIM_ABOVE: f64 = 0.75;

/// What the shares hold, read where it is kept.
pub struct Holders {
    /// The read cache (its memory tier).
    pub cache: BlockCache,
    /// Request bytes in flight (Kafka frames, HTTP bodies).
    pub requests: ByteBudget,
    /// Response bytes being read (Kafka Fetches, HTTP reads).
    pub fetch: ByteBudget,
    /// The node's reader (its index entries being read).
    pub reader: sluice_fetch::Reader,
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
    let trim_above = (memory.max as f64 * TRIM_ABOVE) as u64;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tick.tick().await;
            let used = [
                ("cache", holders.cache.memory_used_bytes()),
                (
                    "writer",
                    usize::try_from(sluice_ingest::metrics::WRITER_BUFFERED_BYTES.get())
                        .unwrap_or(0),
                ),
                ("requests", holders.requests.held()),
                (
                    "fetch",
                    holders.fetch.held() + holders.reader.read_bytes_held(),
                ),
                (
                    "compaction",
                    usize::try_from(sluice_compactor::metrics::HELD_BYTES.get()).unwrap_or(0),
                ),
            ];
            for (name, bytes) in used {
                USED.with_label_values(&[name]).set(bytes as i64);
            }
            if let Some((resident, peak)) = resident() {
                RESIDENT.set(resident as i64);
                RESIDENT_PEAK.set(peak as i64);
                // the heap keeps freed buffers for reuse; near the budget
                // it gives them back
                if resident > trim_above {
                    sluice_alloc::release_free_memory();
                    TRIMS.inc();
                }
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
