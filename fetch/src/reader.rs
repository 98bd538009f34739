//! Reading records: index lookup, byte-range read (through the block cache
//! when the node has one, else one range GET), verification, base-offset
//! patching, and long-poll at the high watermark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use sluice_metadata::model::IndexEntry;
use sluice_metadata::view::PartitionSnapshot;
use sluice_segment::format::verify_range;
use sluice_segment::served::{self, Served, Spans};
use sluice_segment::{batch, SegmentId};
use tokio::sync::Semaphore;

use crate::archive;
use crate::cache::{join_parts, BlockCache};
use crate::error::{FetchError, FetchResult};
use crate::metrics;
use sluice_metadata::view::ClusterView;
use tracing::warn;

/// Most index entries one read looks at.
pub const ENTRIES_PER_READ_MAX: usize = 64;
/// Range GETs one read keeps in flight.
pub const GETS_IN_FLIGHT_MAX: usize = 4;
/// Most rounds a read moves on past runs that hold nothing at or after the
/// offset asked for (gaps of compacted runs).
pub const GAP_SKIPS_MAX: usize = 64;

/// What reading one archive row group holds, for the read budget: its
/// columns decoded and its records encoded again, twice the rows the
/// compactor cuts row groups at (8 MiB by default). A Parquet file's size
/// says nothing of this (a compressible run shrinks a hundredfold).
const ROW_GROUP_READ_BYTES: usize = 16 << 20;

/// One stored run of batches with absolute offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadChunk {
    /// First offset of the run.
    pub base_offset: i64,
    /// One past the last offset of the run.
    pub end_offset: i64,
    /// RecordBatch v2 bytes, base offsets patched, checksums verified.
    pub batches: Bytes,
}

/// A part of a read: the batches of a segment range within a number of
/// bytes (at least one when it is the first part), or one archive row
/// group.
enum Piece {
    Segment(IndexEntry, usize, bool),
    RowGroup(Arc<IndexEntry>, usize),
}

/// Serves reads of partitions; see the crate docs.
#[derive(Debug, Clone)]
pub struct Reader {
    store: Arc<dyn ObjectStore>,
    view: Arc<ClusterView>,
    cache: Option<BlockCache>,
    /// Bytes of index entries being read at once, with their size.
    budget: Option<(Arc<Semaphore>, usize)>,
}

impl Reader {
    /// A reader over `store`, looking offsets up in `view`, without a cache.
    pub fn new(store: Arc<dyn ObjectStore>, view: Arc<ClusterView>) -> Self {
        Self {
            store,
            view,
            cache: None,
            budget: None,
        }
    }

    /// This reader, holding at most `bytes` of index entries being read at
    /// once, with every clone of it (a whole entry read and patched counts
    /// twice its size; a Fetch's part of an entry, the entry's blocks plus
    /// the part copied out); a read waits for room.
    pub fn with_read_budget(mut self, bytes: usize) -> Self {
        let bytes = bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        self.budget = Some((Arc::new(Semaphore::new(bytes)), bytes));
        self
    }

    /// Room for `bytes` in the read budget, held until dropped; a read
    /// larger than the budget takes all of it. `None` without a budget.
    async fn hold(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let (budget, size) = self.budget.as_ref()?;
        let wanted = bytes.clamp(1, *size);
        budget
            .clone()
            .acquire_many_owned(u32::try_from(wanted).unwrap_or(u32::MAX))
            .await
            .ok()
    }

    /// Bytes the read budget has lent out now (0 without a budget).
    pub fn read_bytes_held(&self) -> usize {
        self.budget.as_ref().map_or(0, |(budget, size)| {
            size.saturating_sub(budget.available_permits())
        })
    }

    /// This reader, reading ranges through `cache`.
    pub fn with_cache(mut self, cache: BlockCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The block cache reads go through, if any.
    pub fn cache(&self) -> Option<&BlockCache> {
        self.cache.as_ref()
    }

    /// The view this reader uses.
    pub fn view(&self) -> &Arc<ClusterView> {
        &self.view
    }

    /// Read the runs from the one holding `offset` on, until about
    /// `max_bytes` (always at least one run when `offset` is below the high
    /// watermark, so a reader always makes progress).
    pub async fn read(
        &self,
        topic_id: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> FetchResult<Vec<ReadChunk>> {
        let started = Instant::now();
        let result = self
            .read_past_gaps(topic_id, partition, offset, max_bytes)
            .await;
        metrics::FETCH_LATENCY.observe(started.elapsed().as_secs_f64());
        result
    }

    /// [`Reader::read_runs`], moving on while what was read holds no record
    /// at or after `offset`: in a compacted run `offset` may fall in a gap
    /// left by compaction, and the reader must not answer "nothing" while
    /// later runs hold records (a consumer would ask for the same offset
    /// forever). Bounded by [`GAP_SKIPS_MAX`] rounds.
    async fn read_past_gaps(
        &self,
        topic_id: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> FetchResult<Vec<ReadChunk>> {
        let mut from = offset;
        let mut chunks = Vec::new();
        for _ in 0..GAP_SKIPS_MAX {
            chunks = self.read_runs(topic_id, partition, from, max_bytes).await?;
            let reached = chunks.iter().any(|chunk| {
                sluice_segment::batch::end_offset(&chunk.batches)
                    .ok()
                    .flatten()
                    .is_some_and(|end| end > offset)
            });
            let Some(next) = chunks.last().map(|chunk| chunk.end_offset) else {
                break;
            };
            let high_watermark = self.view.snapshot(topic_id, partition).high_watermark;
            if reached || next <= from || next >= high_watermark {
                break;
            }
            from = next;
        }
        Ok(chunks)
    }

    /// Whether `offset` lies past the end of the partition. This node's
    /// view may lag another node's commit by a moment (a node that just
    /// started, a watch event in flight): an offset past the view's high
    /// watermark is checked against the stored head before anyone is told
    /// it is out of range, because a consumer told so resets its position
    /// (librdkafka to `auto.offset.reset`: a group read everything again
    /// from offset 0 in the chaos campaign, kill -9 with seed 21). One
    /// metadata read, only for offsets past the view's end.
    pub async fn past_the_end(
        &self,
        topic_id: &str,
        partition: i32,
        offset: i64,
        snapshot: PartitionSnapshot,
    ) -> FetchResult<bool> {
        if offset <= snapshot.high_watermark {
            return Ok(false);
        }
        let stored = self.view.catalog().head(topic_id, partition).await?;
        Ok(offset > stored.head.next_offset)
    }

    /// The runs from the one holding `offset` on, within `max_bytes`.
    async fn read_runs(
        &self,
        topic_id: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> FetchResult<Vec<ReadChunk>> {
        let snapshot = self.view.snapshot(topic_id, partition);
        if offset < snapshot.log_start_offset
            || self
                .past_the_end(topic_id, partition, offset, snapshot)
                .await?
        {
            return Err(FetchError::OffsetOutOfRange {
                offset,
                log_start: snapshot.log_start_offset,
                high_watermark: snapshot.high_watermark,
            });
        }
        if offset >= snapshot.high_watermark {
            return Ok(Vec::new());
        }
        let entries = self
            .view
            .entries_from(topic_id, partition, offset, ENTRIES_PER_READ_MAX);
        // an archived run is read a row group at a time; a segment range
        // only as far as the read has room for, from `offset` on
        let mut pieces = Vec::new();
        let mut total = 0usize;
        for entry in entries {
            if total >= max_bytes && !pieces.is_empty() {
                break;
            }
            match &entry.archive {
                None => {
                    let first = pieces.is_empty();
                    let room = max_bytes.saturating_sub(total);
                    total += if first {
                        // the part of the first entry from `offset` on
                        let count = (entry.end_offset() - entry.base_offset).max(1) as u128;
                        let after = (entry.end_offset() - offset).clamp(0, count as i64) as u128;
                        (u128::from(entry.len) * after / count) as usize
                    } else {
                        entry.len as usize
                    };
                    pieces.push(Piece::Segment(entry, room, first));
                }
                Some(archive) => {
                    let groups = archive.row_groups.len().max(1);
                    let each = (entry.len as usize / groups).max(1);
                    let entry = Arc::new(entry.clone());
                    for group in archive::row_group_of(archive, offset)..groups {
                        if total >= max_bytes && !pieces.is_empty() {
                            break;
                        }
                        total += each;
                        pieces.push(Piece::RowGroup(entry.clone(), group));
                    }
                }
            }
        }
        // a row group's decoded size is not known before it is read (the
        // file's size says nothing of it: a compressible run shrinks a
        // hundredfold), so row groups are read one at a time and the read
        // stops once `max_bytes` are in hand
        let in_flight = if pieces
            .iter()
            .any(|piece| matches!(piece, Piece::RowGroup(..)))
        {
            1
        } else {
            GETS_IN_FLIGHT_MAX
        };
        let mut reads = futures::stream::iter(pieces)
            .map(|piece| async move {
                match piece {
                    Piece::Segment(entry, room, first) => {
                        self.read_part(topic_id, partition, &entry, offset, room, first)
                            .await
                    }
                    Piece::RowGroup(entry, group) => {
                        let _held = self.hold(ROW_GROUP_READ_BYTES).await;
                        archive::read_row_group(&self.store, self.cache.as_ref(), &entry, group)
                            .await
                    }
                }
            })
            .buffered(in_flight);
        let mut chunks = Vec::new();
        let mut read = 0usize;
        while let Some(chunk) = reads.try_next().await? {
            read += chunk.batches.len();
            chunks.push(chunk);
            if read >= max_bytes {
                break;
            }
        }
        Ok(chunks)
    }

    /// The first record of the run `entry` whose timestamp is at least
    /// `timestamp`, as (offset, timestamp).
    pub async fn offset_for_timestamp(
        &self,
        topic_id: &str,
        partition: i32,
        entry: &IndexEntry,
        timestamp: i64,
    ) -> FetchResult<Option<(i64, i64)>> {
        let Some(archived) = &entry.archive else {
            let bytes = self.read_entry(topic_id, partition, entry).await?;
            return batch::offset_for_timestamp(&bytes, timestamp)
                .map_err(|error| FetchError::corrupt(entry.segment, error));
        };
        for group in 0..archived.row_groups.len() {
            let chunk =
                archive::read_row_group(&self.store, self.cache.as_ref(), entry, group).await?;
            let found = batch::offset_for_timestamp(&chunk.batches, timestamp)
                .map_err(|error| FetchError::corrupt(&archived.path, error))?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// The batches of one index entry from the one holding `offset` on,
    /// within `max_bytes` (at least one when `at_least_one`), checked and
    /// with their offsets set: only what is returned is copied and checked
    /// (see [`sluice_segment::served`]); bad bytes as in
    /// [`Reader::read_checked`].
    pub(crate) async fn read_part(
        &self,
        topic_id: &str,
        partition: i32,
        entry: &IndexEntry,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> FetchResult<ReadChunk> {
        // the entry's blocks, and the part of it copied out
        let _held = self
            .hold(entry.len as usize + max_bytes.min(entry.len as usize))
            .await;
        let Served {
            batches,
            first_offset,
            end_offset,
        } = self
            .read_checked(topic_id, partition, entry, |parts| {
                let spans = Spans::new(parts);
                if spans.len() != entry.len as usize {
                    return Err(FetchError::corrupt(
                        entry.segment,
                        "segment object shorter than its index entry",
                    ));
                }
                let offsets = entry.base_offset..entry.end_offset();
                served::serve(&spans, offsets, offset, max_bytes, at_least_one)
                    .map_err(|reason| FetchError::corrupt(entry.segment, reason))
            })
            .await?;
        metrics::FETCH_BYTES.inc_by(batches.len() as u64);
        Ok(ReadChunk {
            base_offset: first_offset,
            end_offset,
            batches,
        })
    }

    /// Fetch one index entry's bytes, verify them (length and the entry's
    /// crc32c; bad bytes as in [`Reader::read_checked`]) and patch base
    /// offsets.
    pub async fn read_entry(
        &self,
        topic_id: &str,
        partition: i32,
        entry: &IndexEntry,
    ) -> FetchResult<Bytes> {
        // the entry as read and its patched copy
        let _held = self.hold(2 * entry.len as usize).await;
        let bytes = self
            .read_checked(topic_id, partition, entry, |parts| {
                verified(topic_id, partition, entry, join_parts(parts))
            })
            .await?;
        let mut patched = BytesMut::from(bytes.as_ref());
        let end = batch::patch_base_offsets(&mut patched, entry.base_offset)
            .map_err(|error| FetchError::corrupt(entry.segment, error))?;
        if end != entry.end_offset() {
            metrics::CORRUPT_RANGES.inc();
            return Err(FetchError::corrupt(
                entry.segment,
                "batches do not match their index entry",
            ));
        }
        metrics::FETCH_BYTES.inc_by(patched.len() as u64);
        Ok(patched.freeze())
    }

    /// The entry's stored bytes (as the cache's blocks hold them, or one
    /// range GET without a cache), passed to `check`. With a cache, bytes
    /// that `check` finds corrupt may be a damaged cache entry: their
    /// blocks are read again from the object store once (replacing the
    /// cached copies) and checked again; bytes that fail twice are
    /// evicted, never left in the cache, and the range reported corrupt.
    async fn read_checked<T>(
        &self,
        topic_id: &str,
        partition: i32,
        entry: &IndexEntry,
        check: impl Fn(Vec<Bytes>) -> FetchResult<T>,
    ) -> FetchResult<T> {
        let (segment, range) = stored_at(entry)?;
        match &self.cache {
            // entries written before `object_bytes` was recorded cannot be
            // split into blocks
            Some(cache) if entry.object_bytes > 0 => {
                let parts = cache
                    .read_parts(segment, range.clone(), entry.object_bytes)
                    .await?;
                match check(parts) {
                    Err(FetchError::Corrupt { reason, .. }) => {
                        warn!(%segment, topic_id, partition, reason, "cached range failed verification; refetching");
                        metrics::CACHE_REFETCHES.inc();
                        let again = cache
                            .refetch_parts(segment, range.clone(), entry.object_bytes)
                            .await?;
                        check(again).inspect_err(|_| {
                            // never leave bytes known to be bad in the cache
                            cache.evict(segment, range);
                            metrics::CORRUPT_RANGES.inc();
                        })
                    }
                    other => other,
                }
            }
            _ => {
                let bytes = self.get_range(segment, entry, range).await?;
                check(vec![bytes]).inspect_err(|_| {
                    metrics::CORRUPT_RANGES.inc();
                })
            }
        }
    }

    /// One range GET of exactly the entry's bytes (no cache).
    async fn get_range(
        &self,
        segment: SegmentId,
        entry: &IndexEntry,
        range: std::ops::Range<u64>,
    ) -> FetchResult<Bytes> {
        metrics::OBJECT_GETS.inc();
        let bytes =
            self.store
                .get_range(&segment.path(), range)
                .await
                .map_err(|error| match error {
                    object_store::Error::NotFound { .. } => {
                        FetchError::corrupt(entry.segment, "segment object is missing")
                    }
                    other => FetchError::Store(other),
                })?;
        metrics::OBJECT_GET_BYTES.inc_by(bytes.len() as u64);
        Ok(bytes)
    }

    /// Wait until the partition's high watermark passes `offset` or
    /// `timeout` elapses; returns the high watermark then.
    pub async fn wait_for_data(
        &self,
        topic_id: &str,
        partition: i32,
        offset: i64,
        timeout: Duration,
    ) -> i64 {
        let mut receiver = self.view.subscribe(topic_id, partition);
        let wait = async { receiver.wait_for(|hw| *hw > offset).await.map(|hw| *hw) };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(hw)) => hw,
            _ => self.view.snapshot(topic_id, partition).high_watermark,
        }
    }
}

/// The segment and byte range an index entry's run is stored at.
fn stored_at(entry: &IndexEntry) -> FetchResult<(SegmentId, std::ops::Range<u64>)> {
    let segment = entry
        .segment
        .id()
        .map(SegmentId)
        .ok_or_else(|| FetchError::corrupt(entry.segment, "index entry names no segment"))?;
    Ok((segment, entry.start..entry.start + u64::from(entry.len)))
}

/// `bytes` if they are the entry's range: right length, right crc32c.
fn verified(
    topic_id: &str,
    partition: i32,
    entry: &IndexEntry,
    bytes: Bytes,
) -> FetchResult<Bytes> {
    if bytes.len() != entry.len as usize {
        return Err(FetchError::corrupt(
            entry.segment,
            "segment object shorter than its index entry",
        ));
    }
    verify_range(topic_id, partition, entry.crc, &bytes)
        .map_err(|error| FetchError::corrupt(entry.segment, error))?;
    Ok(bytes)
}
