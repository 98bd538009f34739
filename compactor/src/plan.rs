//! The controller's decisions, as pure functions of a partition's index.

use sluice_metadata::model::{IndexEntry, SegmentRef};

use crate::jobs::JobKind;
use crate::CompactorConfig;

/// The next job for a partition whose index is `entries` (offset order),
/// as (kind, first offset, end offset), or `None` when nothing is due.
///
/// Rolls come first: the segment runs from the first one on, once the
/// oldest was committed half of `archive_max_lag` ago (so that every record
/// is archived within the lag), or once they reach a job's size; a job
/// takes at most `roll_bytes_max` bytes and `entries_per_job_max` runs.
/// Otherwise, the first stretch of at least `merge_min_files` adjacent
/// archive files below half the target size is merged, up to the target.
pub fn next_job(
    entries: &[IndexEntry],
    now_ms: i64,
    config: &CompactorConfig,
) -> Option<(JobKind, i64, i64)> {
    let max_entries = config.entries_per_job_max();
    if let Some(start) = entries.iter().position(|e| e.archive.is_none()) {
        let segments: Vec<&IndexEntry> = entries[start..]
            .iter()
            .take_while(|e| e.archive.is_none())
            .collect();
        let half_lag = (config.archive_max_lag.as_millis() / 2) as i64;
        let oldest = segments
            .iter()
            .map(|e| e.committed_ms)
            .min()
            .unwrap_or(now_ms);
        let bytes: u64 = segments.iter().map(|e| u64::from(e.len)).sum();
        if now_ms - oldest >= half_lag
            || segments.len() >= max_entries
            || bytes >= config.roll_bytes_max
        {
            let mut taken = 0u64;
            let mut end = segments[0].base_offset;
            for (i, entry) in segments.iter().enumerate() {
                if i > 0
                    && (i >= max_entries || taken + u64::from(entry.len) > config.roll_bytes_max)
                {
                    break;
                }
                taken += u64::from(entry.len);
                end = entry.end_offset();
            }
            return Some((JobKind::Roll, segments[0].base_offset, end));
        }
    }
    let small = config.archive_target_bytes / 2;
    let mut run: Vec<&IndexEntry> = Vec::new();
    for entry in entries.iter().chain(std::iter::once(&sentinel())) {
        let fits = entry.archive.is_some()
            && entry.object_bytes < small
            && run
                .last()
                .is_none_or(|last| last.end_offset() == entry.base_offset);
        if fits {
            run.push(entry);
            continue;
        }
        if run.len() >= config.merge_min_files.max(2) {
            let mut total = 0u64;
            let mut end = run[0].base_offset;
            for (count, file) in run.iter().enumerate() {
                if count >= 2
                    && (total + file.object_bytes > config.archive_target_bytes
                        || count >= max_entries)
                {
                    break;
                }
                total += file.object_bytes;
                end = file.end_offset();
            }
            return Some((JobKind::Merge, run[0].base_offset, end));
        }
        run.clear();
        if entry.archive.is_some() && entry.object_bytes < small {
            run.push(entry);
        }
    }
    None
}

/// The settings of a key-compacted topic that decide when its partitions
/// are compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionLags {
    /// `min.compaction.lag.ms`: a run stays uncompacted at least this long
    /// after its commit.
    pub min_ms: i64,
    /// `max.compaction.lag.ms`: a run is compacted at the latest this long
    /// after its commit.
    pub max_ms: i64,
}

/// The next job for a partition of a key-compacted topic, as
/// (`Compact`, first offset, end offset), or `None` when nothing is due.
///
/// A compaction rewrites the partition's archive files (already compacted)
/// and the segment runs after them that are at least `min_ms` old into one
/// file that keeps the latest record of each key, so the archive is always
/// the compacted log. It is due when the oldest such run was committed
/// half of `archive_max_lag` ago or `max_ms` ago (whichever comes first),
/// when those runs reach a job's size, when a tombstone kept in an archive
/// file may now be dropped, or when the archive is more than one file or
/// holds a file that is not compacted (the topic became compacted later).
pub fn next_compaction(
    entries: &[IndexEntry],
    now_ms: i64,
    lags: CompactionLags,
    config: &CompactorConfig,
) -> Option<(JobKind, i64, i64)> {
    let first = entries.first()?;
    let max_entries = config.entries_per_job_max();
    let archived = entries
        .iter()
        .take(max_entries)
        .take_while(|e| e.archive.is_some())
        .count();
    let settled = now_ms.saturating_sub(lags.min_ms.max(0));
    let mut taken = 0u64;
    let dirty: Vec<&IndexEntry> = entries[archived..]
        .iter()
        .take(max_entries.saturating_sub(archived))
        .take_while(|e| e.archive.is_none() && e.committed_ms <= settled)
        .take_while(|e| {
            let fits = taken == 0 || taken + u64::from(e.len) <= config.roll_bytes_max;
            taken += u64::from(e.len);
            fits
        })
        .collect();
    let dirty_bytes: u64 = dirty.iter().map(|e| u64::from(e.len)).sum();
    let half_lag = (config.archive_max_lag.as_millis() / 2) as i64;
    let due_dirty = dirty.first().is_some_and(|oldest| {
        now_ms - oldest.committed_ms >= half_lag.min(lags.max_ms.max(0))
            || dirty_bytes >= config.roll_bytes_max
            || archived + dirty.len() >= max_entries
    });
    let archives = &entries[..archived];
    let due_archive = archives.len() > 1
        || archives.iter().any(|e| {
            e.archive.as_ref().is_some_and(|a| {
                !a.compacted || a.tombstones_expire_ms.is_some_and(|t| t <= now_ms)
            })
        });
    if !(due_dirty || due_archive) {
        return None;
    }
    let end = match dirty.last() {
        Some(last) => last.end_offset(),
        None => archives.last()?.end_offset(),
    };
    Some((JobKind::Compact, first.base_offset, end))
}

/// An entry that ends every stretch.
fn sentinel() -> IndexEntry {
    IndexEntry {
        base_offset: -1,
        offset_count: 0,
        batch_count: 0,
        segment: SegmentRef::default(),
        start: 0,
        len: 0,
        crc: 0,
        max_timestamp: 0,
        object_bytes: 0,
        committed_ms: 0,
        archive: None,
    }
}

/// How many runs at the start of `entries` retention drops: every run
/// wholly below the partition's `log_start` (moved by DeleteRecords), every
/// run whose newest record is older than `retention_ms` (when set), then
/// the oldest runs while the partition holds more than `retention_bytes`
/// (when set). Runs are dropped whole, as Kafka drops whole segments.
pub fn retention_cut(
    entries: &[IndexEntry],
    now_ms: i64,
    retention_ms: Option<i64>,
    retention_bytes: Option<i64>,
    log_start: i64,
) -> usize {
    let below = entries
        .iter()
        .take_while(|e| e.end_offset() <= log_start)
        .count();
    let mut cut = 0;
    if let Some(ms) = retention_ms.filter(|ms| *ms >= 0) {
        cut = entries
            .iter()
            .take_while(|e| e.max_timestamp < now_ms.saturating_sub(ms))
            .count();
    }
    if let Some(limit) = retention_bytes.filter(|b| *b >= 0) {
        let mut total: u64 = entries[cut..].iter().map(IndexEntry::stored_bytes).sum();
        while cut < entries.len() && total > limit as u64 {
            total -= entries[cut].stored_bytes();
            cut += 1;
        }
    }
    cut.max(below)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use sluice_metadata::model::ArchiveRef;

    use super::*;

    fn segment(base: i64, count: u32, committed_ms: i64) -> IndexEntry {
        IndexEntry {
            base_offset: base,
            offset_count: count,
            batch_count: 1,
            segment: SegmentRef::of(ulid::Ulid::nil()),
            start: 0,
            len: 1000,
            crc: 0,
            max_timestamp: committed_ms,
            object_bytes: 5000,
            committed_ms,
            archive: None,
        }
    }

    fn archived(base: i64, count: u32, bytes: u64) -> IndexEntry {
        IndexEntry {
            object_bytes: bytes,
            archive: Some(ArchiveRef {
                path: format!("a/{base}"),
                id: "x".into(),
                row_groups: vec![base],
                compacted: false,
                tombstones_expire_ms: None,
            }),
            ..segment(base, count, 0)
        }
    }

    fn config() -> CompactorConfig {
        CompactorConfig {
            archive_max_lag: Duration::from_secs(60),
            archive_target_bytes: 1000,
            roll_bytes_max: 2500,
            merge_min_files: 3,
            txn_ops_max: 128,
            ..CompactorConfig::default()
        }
    }

    #[test]
    fn segments_roll_once_half_the_lag_has_passed_and_within_a_job_size() {
        let now = 100_000;
        let young = vec![
            archived(0, 10, 900),
            segment(10, 5, now - 10_000),
            segment(15, 5, now),
        ];
        assert_eq!(next_job(&young, now, &config()), None);
        let old = vec![
            archived(0, 10, 900),
            segment(10, 5, now - 30_000),
            segment(15, 5, now),
            segment(20, 5, now),
            segment(25, 5, now),
        ];
        // 2,500 bytes per roll: the first two runs and a half do not fit
        assert_eq!(
            next_job(&old, now, &config()),
            Some((JobKind::Roll, 10, 20))
        );
    }

    #[test]
    fn small_adjacent_files_merge_up_to_the_target() {
        let files = vec![
            archived(0, 10, 900),
            archived(10, 10, 200),
            archived(20, 10, 200),
            archived(30, 10, 200),
            archived(40, 10, 200),
            archived(50, 10, 200),
            archived(60, 10, 200),
        ];
        assert_eq!(
            next_job(&files, 0, &config()),
            Some((JobKind::Merge, 10, 60))
        );
        assert_eq!(next_job(&files[..3], 0, &config()), None);
    }

    #[test]
    fn retention_drops_whole_old_runs_and_runs_beyond_the_byte_limit() {
        let entries = vec![
            segment(0, 10, 1_000),
            segment(10, 10, 2_000),
            segment(20, 10, 3_000),
        ];
        assert_eq!(retention_cut(&entries, 10_000, Some(-1), None, 0), 0);
        assert_eq!(retention_cut(&entries, 10_000, Some(8_500), None, 0), 1);
        assert_eq!(retention_cut(&entries, 10_000, Some(7_000), None, 0), 2);
        assert_eq!(retention_cut(&entries, 10_000, Some(1), None, 0), 3);
        assert_eq!(retention_cut(&entries, 10_000, None, Some(2_000), 0), 1);
        assert_eq!(retention_cut(&entries, 10_000, None, Some(999), 0), 3);
        assert_eq!(retention_cut(&entries, 10_000, None, Some(-1), 0), 0);
    }

    #[test]
    fn runs_wholly_below_the_log_start_are_dropped() {
        let entries = vec![
            segment(0, 10, 1_000),
            segment(10, 10, 2_000),
            segment(20, 10, 3_000),
        ];
        // DeleteRecords to 15: the first run is gone, the second still
        // holds readable offsets
        assert_eq!(retention_cut(&entries, 10_000, None, None, 15), 1);
        assert_eq!(retention_cut(&entries, 10_000, None, None, 20), 2);
        assert_eq!(retention_cut(&entries, 10_000, Some(8_500), None, 20), 2);
        assert_eq!(retention_cut(&entries, 10_000, None, None, 30), 3);
    }

    fn compacted_file(base: i64, count: u32, tombstones_expire_ms: Option<i64>) -> IndexEntry {
        let mut entry = archived(base, count, 1_000);
        if let Some(a) = entry.archive.as_mut() {
            a.compacted = true;
            a.tombstones_expire_ms = tombstones_expire_ms;
        }
        entry
    }

    const LAGS: CompactionLags = CompactionLags {
        min_ms: 0,
        max_ms: i64::MAX,
    };

    #[test]
    fn a_compaction_covers_the_archive_and_the_settled_runs_once_due() {
        let config = config();
        let half_lag = config.archive_max_lag.as_millis() as i64 / 2;
        let entries = vec![
            compacted_file(0, 100, None),
            segment(100, 10, 1_000),
            segment(110, 10, 2_000),
        ];
        assert_eq!(next_compaction(&entries, 1_000, LAGS, &config), None);
        assert_eq!(
            next_compaction(&entries, 1_000 + half_lag, LAGS, &config),
            Some((JobKind::Compact, 0, 120))
        );
        // min lag: only runs old enough are compacted
        let lags = CompactionLags {
            min_ms: half_lag,
            max_ms: i64::MAX,
        };
        assert_eq!(
            next_compaction(&entries, 1_500 + half_lag, lags, &config),
            Some((JobKind::Compact, 0, 110))
        );
        assert_eq!(
            next_compaction(&entries, 999 + half_lag, lags, &config),
            None
        );
        // max lag: due sooner than the archive lag
        let lags = CompactionLags {
            min_ms: 0,
            max_ms: 500,
        };
        assert_eq!(next_compaction(&entries, 1_400, lags, &config), None);
        assert_eq!(
            next_compaction(&entries, 2_000, lags, &config),
            Some((JobKind::Compact, 0, 120))
        );
    }

    #[test]
    fn expiring_tombstones_and_uncompacted_files_make_the_archive_due() {
        let config = config();
        let quiet = vec![compacted_file(0, 100, Some(5_000))];
        assert_eq!(next_compaction(&quiet, 4_999, LAGS, &config), None);
        assert_eq!(
            next_compaction(&quiet, 5_000, LAGS, &config),
            Some((JobKind::Compact, 0, 100))
        );
        let two = vec![compacted_file(0, 100, None), compacted_file(100, 50, None)];
        assert_eq!(
            next_compaction(&two, 0, LAGS, &config),
            Some((JobKind::Compact, 0, 150))
        );
        let plain = vec![archived(0, 100, 1_000)];
        assert_eq!(
            next_compaction(&plain, 0, LAGS, &config),
            Some((JobKind::Compact, 0, 100))
        );
        assert_eq!(next_compaction(&[], 0, LAGS, &config), None);
    }
}
