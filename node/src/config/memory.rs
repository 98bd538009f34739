//! `[memory]`: the node's one memory budget and the component sizes its
//! shares set (see [`MemorySection`]).

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sluice_compactor::CompactorConfig;
use sluice_fetch::CacheConfig;

use super::set;

/// `[memory]`: one budget, `max`, from which the large buffers take their
/// shares (fractions of `max`). A component size set on its own (in the
/// file, a variable or a flag) wins over its share.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemorySection {
    /// The node's memory budget.
    #[serde(with = "sluice_metadata::units::bytes")]
    pub max: usize,
    /// Read cache: the memory tier, the readahead GETs in flight and the
    /// disk tier's write buffers (`cache.memory_bytes` is this less
    /// `CacheConfig::overhead_bytes`).
    pub cache: f64,
    /// Produced bytes accepted and not yet answered (`writer.buffer_max_bytes`).
    pub writer: f64,
    /// Kafka requests read and not yet answered (`kafka.in_flight_bytes_max`).
    pub requests: f64,
    /// Reads: half for the record bytes of Fetch responses being read
    /// (`kafka.fetch_bytes_max`), half for the index entries being read
    /// from the cache, verified and patched (`cache.read_bytes_max`).
    pub fetch: f64,
    /// Segment bytes compaction jobs read at once: each of
    /// `compactor.job_concurrency` jobs rolls at most
    /// `share / job_concurrency / 2` (`compactor.roll_bytes_max`), the other
    /// half being its rows on their way into Parquet.
    pub compaction: f64,
}

impl Default for MemorySection {
    fn default() -> Self {
        Self {
            max: 256 * 1024 * 1024,
            cache: 0.35,
            writer: 0.20,
            requests: 0.10,
            fetch: 0.15,
            compaction: 0.10,
        }
    }
}

impl MemorySection {
    /// The shares in order, with their names.
    pub fn shares(&self) -> [(&'static str, f64); 5] {
        [
            ("cache", self.cache),
            ("writer", self.writer),
            ("requests", self.requests),
            ("fetch", self.fetch),
            ("compaction", self.compaction),
        ]
    }

    /// Bytes of the share `fraction` (whole KiB).
    pub fn bytes(&self, fraction: f64) -> usize {
        (self.max as f64 * fraction) as usize / 1024 * 1024
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.max < 16 * 1024 * 1024 {
            bail!("memory.max must be at least 16MiB");
        }
        for (name, share) in self.shares() {
            if !(share > 0.0 && share < 1.0) {
                bail!("memory.{name} must be a fraction between 0 and 1, not {share}");
            }
        }
        let sum: f64 = self.shares().iter().map(|(_, share)| share).sum();
        if sum > 0.95 {
            bail!("the memory shares add up to {sum:.2}: leave at least 0.05 of memory.max for the rest of the process");
        }
        Ok(())
    }

    /// Fill in the component sizes the budget decides: every one of
    /// `table` (the merged settings) that was not set on its own.
    pub(super) fn derive(table: &mut toml::Table) -> anyhow::Result<()> {
        fn section<T: for<'de> Deserialize<'de> + Default>(
            table: &toml::Table,
            name: &str,
        ) -> anyhow::Result<T> {
            match table.get(name) {
                Some(value) => Ok(T::deserialize(value.clone())?),
                None => Ok(T::default()),
            }
        }
        let memory: MemorySection = section(table, "memory").context("[memory]")?;
        memory.check()?;
        let cache: CacheConfig = section(table, "cache").context("[cache]")?;
        let compactor: CompactorConfig = section(table, "compactor").context("[compactor]")?;
        let cache_share = memory.bytes(memory.cache);
        let tier = cache_share.saturating_sub(cache.overhead_bytes());
        if tier < 4 * cache.block_bytes as usize && !is_set(table, "cache.memory_bytes") {
            bail!(
                "memory.cache ({}) leaves the memory tier less than four cache blocks after the readahead and disk tier buffers ({}): raise memory.max or memory.cache, or lower cache.block_bytes",
                sluice_metadata::units::bytes::format(cache_share as u64),
                sluice_metadata::units::bytes::format(cache.overhead_bytes() as u64)
            );
        }
        let jobs = compactor.job_concurrency.max(1);
        let derived = [
            ("cache.memory_bytes", tier),
            ("writer.buffer_max_bytes", memory.bytes(memory.writer)),
            ("kafka.in_flight_bytes_max", memory.bytes(memory.requests)),
            ("kafka.fetch_bytes_max", memory.bytes(memory.fetch) / 2),
            ("cache.read_bytes_max", memory.bytes(memory.fetch) / 2),
            (
                "compactor.roll_bytes_max",
                (memory.bytes(memory.compaction) / jobs / 2 / 1024 * 1024).max(1024 * 1024),
            ),
        ];
        for (key, bytes) in derived {
            if !is_set(table, key) {
                set(table, key, toml::Value::Integer(bytes as i64));
            }
        }
        Ok(())
    }
}

fn is_set(table: &toml::Table, key: &str) -> bool {
    let (section, field) = key.split_once('.').unwrap_or(("", key));
    table
        .get(section)
        .and_then(toml::Value::as_table)
        .is_some_and(|section| section.contains_key(field))
}
