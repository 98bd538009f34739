//! Reads of archived offsets: one Parquet row group at a time, re-encoded as
//! RecordBatch v2 with the original offsets and kept in the block cache
//! under the file's id, so a row group is decoded once per node.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStore;
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use sluice_metadata::model::{ArchiveRef, IndexEntry};
use sluice_segment::archive;

use crate::cache::BlockCache;
use crate::counting::CountingStore;
use crate::error::{FetchError, FetchResult};
use crate::metrics;
use crate::reader::ReadChunk;

/// Rows decoded per Arrow batch while reading a row group.
const DECODE_BATCH_ROWS: usize = 4096;
/// Most bytes reserved up front for a row group's served form (its
/// uncompressed size, as its metadata says; the buffer grows past this
/// only for a row group that big).
const ROW_GROUP_RESERVE_MAX: usize = 64 << 20;

/// The row group of `entry` holding `offset` (the first one when `offset`
/// is before the file).
pub fn row_group_of(archive: &ArchiveRef, offset: i64) -> usize {
    archive
        .row_groups
        .partition_point(|first| *first <= offset)
        .saturating_sub(1)
}

/// Offsets `[first, end)` of row group `group` of `entry`.
fn row_group_range(entry: &IndexEntry, archive: &ArchiveRef, group: usize) -> (i64, i64) {
    let first = archive
        .row_groups
        .get(group)
        .copied()
        .unwrap_or(entry.base_offset);
    let end = archive
        .row_groups
        .get(group + 1)
        .copied()
        .unwrap_or(entry.end_offset());
    (first, end)
}

/// Row group `group` of the archived run `entry`, as record batches with
/// the offsets they cover.
pub async fn read_row_group(
    store: &Arc<dyn ObjectStore>,
    cache: Option<&BlockCache>,
    entry: &IndexEntry,
    group: usize,
) -> FetchResult<ReadChunk> {
    let Some(archive) = &entry.archive else {
        return Err(FetchError::corrupt(entry.segment, "not an archive entry"));
    };
    let (first, end) = row_group_range(entry, archive, group);
    if archive.row_groups.is_empty() {
        // a compacted run that kept no record: one empty batch over its
        // offsets, so that a consumer moves past them
        return Ok(ReadChunk {
            base_offset: first,
            end_offset: end,
            batches: if end > first {
                sluice_segment::batch::empty_batch(first, end)
            } else {
                Bytes::new()
            },
        });
    }
    let dense = !archive.compacted;
    let path = Path::from(archive.path.as_str());
    let size = entry.object_bytes;
    let compute = {
        let store = store.clone();
        let path = path.clone();
        move || async move { decode_row_group(store, path, size, group, first, end, dense).await }
    };
    let on_error = |error: &RowGroupError| read_error(&archive.path, error);
    let bytes = match (cache, ulid::Ulid::from_string(&archive.id)) {
        (Some(cache), Ok(id)) => {
            cache
                .get_or_compute(id.0, group as u64, compute, on_error)
                .await?
        }
        _ => compute().await.map_err(|error| on_error(&error))?,
    };
    metrics::FETCH_BYTES.inc_by(bytes.len() as u64);
    Ok(ReadChunk {
        base_offset: first,
        end_offset: end,
        batches: bytes,
    })
}

/// Why decoding a row group failed: the store, or the data itself.
#[derive(Debug, thiserror::Error)]
pub enum RowGroupError {
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] object_store::Error),
    /// The file does not hold what the index says: never served.
    #[error("{0}")]
    Corrupt(String),
}

/// A failed row-group read of the file at `path`, as the read path reports it.
fn read_error(path: &str, error: &RowGroupError) -> FetchError {
    match error {
        RowGroupError::Store(object_store::Error::NotFound { .. }) => {
            FetchError::corrupt(path, "archive file is missing")
        }
        RowGroupError::Corrupt(reason) => FetchError::corrupt(path, reason),
        RowGroupError::Store(other) => FetchError::Unavailable(other.to_string()),
    }
}

fn corrupt(reason: impl std::fmt::Display) -> RowGroupError {
    RowGroupError::Corrupt(reason.to_string())
}

/// Read and re-encode one row group, checking it holds exactly `[first,
/// end)` (when `dense`), or increasing offsets in that range starting at
/// `first` (a compacted run). Decoded a few thousand rows at a time and
/// encoded straight into one buffer reserved at the row group's
/// uncompressed size: what it holds at once is the row group's column
/// chunks, one Arrow batch and the served bytes.
async fn decode_row_group(
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    group: usize,
    first: i64,
    end: i64,
    dense: bool,
) -> Result<Bytes, RowGroupError> {
    metrics::ARCHIVE_ROW_GROUP_READS.inc();
    // its GETs count in the read path's metrics like segment reads'
    let store: Arc<dyn ObjectStore> = Arc::new(CountingStore::metered(store));
    let reader = ParquetObjectReader::new(store, path.clone()).with_file_size(size);
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| parquet_error(&path, e))?;
    let Some(metadata) = builder.metadata().row_groups().get(group) else {
        return Err(corrupt(format!("{path} has no row group {group}")));
    };
    let reserve = usize::try_from(metadata.total_byte_size().max(0)).unwrap_or(0);
    let mut stream = builder
        .with_row_groups(vec![group])
        .with_batch_size(DECODE_BATCH_ROWS)
        .build()
        .map_err(|e| parquet_error(&path, e))?;
    let mut served = BytesMut::with_capacity(reserve.min(ROW_GROUP_RESERVE_MAX));
    // the offset the next row must have (dense), or must exceed (compacted)
    let mut next = first;
    let mut rows = 0usize;
    let misfit = || {
        corrupt(format!(
            "row group {group} of {path} does not hold offsets {first}..{end}"
        ))
    };
    while let Some(batch) = stream
        .try_next()
        .await
        .map_err(|e| parquet_error(&path, e))?
    {
        let records = archive::records_of(&batch).map_err(corrupt)?;
        for record in &records {
            let fits = if dense || rows == 0 {
                record.offset == next
            } else {
                record.offset >= next
            };
            if !fits || record.offset >= end {
                return Err(misfit());
            }
            next = record.offset + 1;
            rows += 1;
        }
        archive::encode_served_into(&mut served, &records).map_err(corrupt)?;
    }
    if rows == 0 || (dense && next != end) {
        return Err(misfit());
    }
    if !dense {
        // compaction may have removed the offsets after the group's last
        // record: its last batch covers them, as in a Kafka compacted log
        sluice_segment::batch::cover_to(&mut served, end).map_err(corrupt)?;
    }
    Ok(served.freeze())
}

/// A Parquet failure: the store's error when it is one, else corruption.
fn parquet_error(path: &Path, error: parquet::errors::ParquetError) -> RowGroupError {
    match error {
        parquet::errors::ParquetError::External(inner) => {
            match inner.downcast::<object_store::Error>() {
                Ok(store_error) => RowGroupError::Store(*store_error),
                Err(other) => corrupt(format!("{path}: {other}")),
            }
        }
        other => corrupt(format!("{path}: {other}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn row_groups_are_found_by_offset() {
        let archive = ArchiveRef {
            path: "p".into(),
            id: "i".into(),
            row_groups: vec![10, 20, 35],
            compacted: false,
            tombstones_expire_ms: None,
        };
        assert_eq!(row_group_of(&archive, 5), 0);
        assert_eq!(row_group_of(&archive, 10), 0);
        assert_eq!(row_group_of(&archive, 19), 0);
        assert_eq!(row_group_of(&archive, 20), 1);
        assert_eq!(row_group_of(&archive, 99), 2);
    }
}
