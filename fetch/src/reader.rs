//! Reading records: index lookup, byte-range GET, verification, base-offset
//! patching, and long-poll at the high watermark.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use sluice_metadata::model::IndexEntry;
use sluice_segment::format::verify_range;
use sluice_segment::{batch, SegmentId};

use crate::error::{FetchError, FetchResult};
use crate::metrics;
use crate::view::ClusterView;

/// Most index entries one read looks at.
pub const ENTRIES_PER_READ_MAX: usize = 64;
/// Range GETs one read keeps in flight.
pub const GETS_IN_FLIGHT_MAX: usize = 4;

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

/// Serves reads of partitions; see the crate docs.
#[derive(Debug, Clone)]
pub struct Reader {
    store: Arc<dyn ObjectStore>,
    view: Arc<ClusterView>,
}

impl Reader {
    /// A reader over `store`, looking offsets up in `view`.
    pub fn new(store: Arc<dyn ObjectStore>, view: Arc<ClusterView>) -> Self {
        Self { store, view }
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
        let snapshot = self.view.snapshot(topic_id, partition);
        if offset < snapshot.log_start_offset || offset > snapshot.high_watermark {
            return Err(FetchError::OffsetOutOfRange {
                offset,
                log_start: snapshot.log_start_offset,
                high_watermark: snapshot.high_watermark,
            });
        }
        let mut entries = self
            .view
            .entries_from(topic_id, partition, offset, ENTRIES_PER_READ_MAX);
        let mut total = 0usize;
        let keep = entries
            .iter()
            .take_while(|e| {
                let take = total == 0 || total + e.len as usize <= max_bytes;
                total += e.len as usize;
                take
            })
            .count();
        entries.truncate(keep);
        futures::stream::iter(entries)
            .map(|entry| async move {
                let batches = self.read_entry(topic_id, partition, &entry).await?;
                Ok::<_, FetchError>(ReadChunk {
                    base_offset: entry.base_offset,
                    end_offset: entry.end_offset(),
                    batches,
                })
            })
            .buffered(GETS_IN_FLIGHT_MAX)
            .try_collect()
            .await
    }

    /// Fetch one index entry's bytes, verify them and patch base offsets.
    pub async fn read_entry(
        &self,
        topic_id: &str,
        partition: i32,
        entry: &IndexEntry,
    ) -> FetchResult<Bytes> {
        let segment = SegmentId::parse(&entry.segment).ok_or_else(|| {
            FetchError::corrupt(&entry.segment, "index entry names no valid segment id")
        })?;
        let range = entry.start..entry.start + u64::from(entry.len);
        metrics::OBJECT_GETS.inc();
        let bytes =
            self.store
                .get_range(&segment.path(), range)
                .await
                .map_err(|error| match error {
                    object_store::Error::NotFound { .. } => {
                        FetchError::corrupt(&entry.segment, "segment object is missing")
                    }
                    other => FetchError::Store(other),
                })?;
        metrics::OBJECT_GET_BYTES.inc_by(bytes.len() as u64);
        if bytes.len() != entry.len as usize {
            metrics::CORRUPT_RANGES.inc();
            return Err(FetchError::corrupt(
                &entry.segment,
                "segment object shorter than its index entry",
            ));
        }
        if let Err(error) = verify_range(topic_id, partition, entry.crc, &bytes) {
            metrics::CORRUPT_RANGES.inc();
            return Err(FetchError::corrupt(&entry.segment, error));
        }
        let mut patched = BytesMut::from(bytes.as_ref());
        let end = batch::patch_base_offsets(&mut patched, entry.base_offset)
            .map_err(|error| FetchError::corrupt(&entry.segment, error))?;
        if end != entry.end_offset() {
            metrics::CORRUPT_RANGES.inc();
            return Err(FetchError::corrupt(
                &entry.segment,
                "batches do not match their index entry",
            ));
        }
        metrics::FETCH_BYTES.inc_by(patched.len() as u64);
        Ok(patched.freeze())
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
