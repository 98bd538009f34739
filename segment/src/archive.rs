//! The archive format: one partition's records as a Parquet file with the
//! columns `offset int64, timestamp timestamp[ms], key binary, value binary,
//! headers list<struct<key utf8, value binary>>, partition int32`, zstd,
//! row groups cut by size, statistics on offset and timestamp so that range
//! filters prune. Records go in as decoded RecordBatch v2 and come back out
//! re-encoded as RecordBatch v2 with their original offsets.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, Int32Array, Int64Array, Int64Builder, ListArray,
    ListBuilder, RecordBatch, StringArray, StringBuilder, StructArray, StructBuilder,
    TimestampMillisecondArray, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use bytes::{Bytes, BytesMut};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::batch::{self, BatchError, NewRecord, StoredRecord};

/// Records per re-encoded RecordBatch v2 at most.
pub const SERVED_BATCH_RECORDS_MAX: usize = 1000;
/// Bytes of keys and values per re-encoded RecordBatch v2 at most (a
/// larger single record still gets its own batch).
pub const SERVED_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Rows the writer buffers before it checks the row group size.
const WRITE_CHUNK_ROWS: usize = 4096;

/// Why archive data could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Arrow refused the data.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet refused the data.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The record batches could not be decoded or encoded.
    #[error("record batch: {0}")]
    Batch(#[from] BatchError),
    /// The file does not have the archive's shape.
    #[error("not an archive file: {0}")]
    Shape(String),
}

/// The fields of one header entry.
fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ])
}

fn header_item() -> Field {
    Field::new("item", DataType::Struct(header_fields()), false)
}

/// The archive schema.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("headers", DataType::List(Arc::new(header_item())), false),
        Field::new("partition", DataType::Int32, false),
    ]))
}

/// Settings of the Parquet writer.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveWriteOptions {
    /// Uncompressed bytes buffered before a row group is closed.
    pub row_group_bytes: usize,
    /// zstd level.
    pub zstd_level: i32,
}

impl Default for ArchiveWriteOptions {
    fn default() -> Self {
        Self {
            row_group_bytes: 8 * 1024 * 1024,
            zstd_level: 3,
        }
    }
}

/// A written archive file.
#[derive(Debug, Clone)]
pub struct ArchiveFile {
    /// The Parquet bytes.
    pub bytes: Bytes,
    /// First offset of each row group, in order.
    pub row_groups: Vec<i64>,
    /// Rows written.
    pub rows: u64,
    /// First offset.
    pub first_offset: i64,
    /// One past the last offset.
    pub end_offset: i64,
    /// Largest timestamp.
    pub max_timestamp: i64,
}

/// Builds one archive file from records given in offset order.
pub struct ArchiveWriter {
    partition: i32,
    writer: ArrowWriter<Vec<u8>>,
    rows: RowBuilder,
    options: ArchiveWriteOptions,
    row_groups: Vec<i64>,
    group_open: bool,
    total_rows: u64,
    first_offset: Option<i64>,
    next_offset: i64,
    max_timestamp: i64,
    gaps: bool,
}

impl std::fmt::Debug for ArchiveWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("partition", &self.partition)
            .field("rows", &self.total_rows)
            .finish()
    }
}

impl ArchiveWriter {
    /// A writer of partition `partition`'s records of topic `topic`.
    pub fn new(
        topic: &str,
        partition: i32,
        options: ArchiveWriteOptions,
    ) -> Result<Self, ArchiveError> {
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(options.zstd_level)?))
            // row groups are cut by size (see `write_records`), not by count
            .set_max_row_group_row_count(None)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_column_statistics_enabled(ColumnPath::from("value"), EnabledStatistics::None)
            .set_column_statistics_enabled(
                ColumnPath::new(vec![
                    "headers".into(),
                    "list".into(),
                    "item".into(),
                    "value".into(),
                ]),
                EnabledStatistics::None,
            )
            .set_statistics_truncate_length(Some(64))
            .set_sorting_columns(Some(vec![SortingColumn {
                column_idx: 0,
                descending: false,
                nulls_first: false,
            }]))
            .set_key_value_metadata(Some(vec![
                KeyValue::new("sluice.topic".to_string(), topic.to_string()),
                KeyValue::new("sluice.partition".to_string(), partition.to_string()),
            ]))
            .build();
        let writer = ArrowWriter::try_new(Vec::new(), schema(), Some(properties))?;
        Ok(Self {
            partition,
            writer,
            rows: RowBuilder::new(),
            options,
            row_groups: Vec::new(),
            group_open: false,
            total_rows: 0,
            first_offset: None,
            next_offset: 0,
            max_timestamp: -1,
            gaps: false,
        })
    }

    /// A writer of a key-compacted run: offsets only increase, with gaps
    /// where records were compacted away, and the file may hold no record.
    pub fn compacted(mut self) -> Self {
        self.gaps = true;
        self
    }

    /// Append records; their offsets must continue the file without gaps
    /// (or only increase, for [`ArchiveWriter::compacted`]).
    pub fn write_records(&mut self, records: &[StoredRecord]) -> Result<(), ArchiveError> {
        for record in records {
            if let Some(first) = self.first_offset {
                let follows = if self.gaps {
                    record.offset >= self.next_offset
                } else {
                    record.offset == self.next_offset
                };
                if !follows {
                    return Err(ArchiveError::Shape(format!(
                        "offset {} follows {} (first {first})",
                        record.offset,
                        self.next_offset - 1
                    )));
                }
            } else {
                self.first_offset = Some(record.offset);
            }
            if !self.group_open {
                self.row_groups.push(record.offset);
                self.group_open = true;
            }
            self.next_offset = record.offset + 1;
            self.max_timestamp = self.max_timestamp.max(record.timestamp_ms);
            self.rows.push(record, self.partition);
            if self.rows.len() >= WRITE_CHUNK_ROWS
                || self.rows.bytes >= self.options.row_group_bytes / 4
            {
                self.write_chunk()?;
            }
        }
        Ok(())
    }

    fn write_chunk(&mut self) -> Result<(), ArchiveError> {
        if self.rows.len() == 0 {
            return Ok(());
        }
        let batch = self.rows.finish()?;
        self.total_rows += batch.num_rows() as u64;
        self.writer.write(&batch)?;
        if self.writer.in_progress_size() >= self.options.row_group_bytes {
            self.writer.flush()?;
            self.group_open = false;
        }
        Ok(())
    }

    /// Append rows read back from another archive file (for merges).
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), ArchiveError> {
        let records = records_of(batch)?;
        self.write_records(&records)
    }

    /// Rows appended so far.
    pub fn rows(&self) -> u64 {
        self.total_rows + self.rows.len() as u64
    }

    /// Uncompressed bytes buffered plus bytes already encoded (an estimate
    /// of the file's size before it is closed).
    pub fn estimated_bytes(&self) -> usize {
        self.writer.bytes_written() + self.writer.in_progress_size() + self.rows.bytes
    }

    /// Close the file.
    pub fn finish(mut self) -> Result<ArchiveFile, ArchiveError> {
        self.write_chunk()?;
        let first_offset = match self.first_offset {
            Some(first) => first,
            None if self.gaps => self.next_offset,
            None => return Err(ArchiveError::Shape("no records".into())),
        };
        let rows = self.total_rows;
        let bytes = self.writer.into_inner()?;
        Ok(ArchiveFile {
            bytes: Bytes::from(bytes),
            row_groups: self.row_groups,
            rows,
            first_offset,
            end_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
        })
    }
}

/// Column builders for one chunk of rows.
struct RowBuilder {
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
    key: BinaryBuilder,
    value: BinaryBuilder,
    headers: ListBuilder<StructBuilder>,
    partition: Vec<i32>,
    bytes: usize,
}

impl RowBuilder {
    fn new() -> Self {
        let headers = ListBuilder::new(StructBuilder::new(
            header_fields(),
            vec![
                Box::new(StringBuilder::new()) as Box<dyn arrow::array::ArrayBuilder>,
                Box::new(BinaryBuilder::new()),
            ],
        ))
        .with_field(Arc::new(header_item()));
        Self {
            offset: Int64Builder::new(),
            timestamp: TimestampMillisecondBuilder::new(),
            key: BinaryBuilder::new(),
            value: BinaryBuilder::new(),
            headers,
            partition: Vec::new(),
            bytes: 0,
        }
    }

    fn len(&self) -> usize {
        self.partition.len()
    }

    fn push(&mut self, record: &StoredRecord, partition: i32) {
        self.offset.append_value(record.offset);
        self.timestamp.append_value(record.timestamp_ms);
        self.key.append_option(record.key.as_deref());
        self.value.append_option(record.value.as_deref());
        let entries = self.headers.values();
        for (key, value) in &record.headers {
            if let Some(b) = entries.field_builder::<StringBuilder>(0) {
                b.append_value(key);
            }
            if let Some(b) = entries.field_builder::<BinaryBuilder>(1) {
                b.append_option(value.as_deref());
            }
            entries.append(true);
            self.bytes += key.len() + value.as_ref().map_or(0, Bytes::len);
        }
        self.headers.append(true);
        self.partition.push(partition);
        self.bytes += 24
            + record.key.as_ref().map_or(0, Bytes::len)
            + record.value.as_ref().map_or(0, Bytes::len);
    }

    fn finish(&mut self) -> Result<RecordBatch, ArchiveError> {
        let partition = Int32Array::from(std::mem::take(&mut self.partition));
        self.bytes = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.offset.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.headers.finish()),
            Arc::new(partition),
        ];
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, ArchiveError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| ArchiveError::Shape(format!("column {name} is missing or mistyped")))
}

fn binary(array: &BinaryArray, row: usize) -> Option<Bytes> {
    (!array.is_null(row)).then(|| Bytes::copy_from_slice(array.value(row)))
}

/// Records as one archive Arrow batch of `partition` (the rows a writer
/// buffers before a row group; offsets as given, gaps allowed).
pub fn batch_of(records: &[StoredRecord], partition: i32) -> Result<RecordBatch, ArchiveError> {
    let mut rows = RowBuilder::new();
    for record in records {
        rows.push(record, partition);
    }
    rows.finish()
}

/// The records of an archive Arrow batch. A batch of another shape (a
/// file sluice did not write, or damaged) is refused with
/// [`ArchiveError::Shape`], never a panic.
pub fn records_of(batch: &RecordBatch) -> Result<Vec<StoredRecord>, ArchiveError> {
    let offsets = column::<Int64Array>(batch, "offset")?;
    let timestamps = column::<TimestampMillisecondArray>(batch, "timestamp")?;
    let keys = column::<BinaryArray>(batch, "key")?;
    let values = column::<BinaryArray>(batch, "value")?;
    let headers = column::<ListArray>(batch, "headers")?;
    let entries = headers
        .values()
        .as_any()
        .downcast_ref::<StructArray>()
        .ok_or_else(|| ArchiveError::Shape("headers are not structs".into()))?;
    let header_keys = entries
        .column_by_name("key")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| ArchiveError::Shape("header keys are missing or not utf8".into()))?;
    let header_values = entries
        .column_by_name("value")
        .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
        .ok_or_else(|| ArchiveError::Shape("header values are missing or not binary".into()))?;
    let list_offsets = headers.value_offsets();
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let from = list_offsets[row] as usize;
        let to = list_offsets[row + 1] as usize;
        if to > entries.len() {
            return Err(ArchiveError::Shape(format!(
                "row {row} names header entries up to {to} of {}",
                entries.len()
            )));
        }
        out.push(StoredRecord {
            offset: offsets.value(row),
            timestamp_ms: timestamps.value(row),
            key: binary(keys, row),
            value: binary(values, row),
            headers: (from..to)
                .map(|i| (header_keys.value(i).to_string(), binary(header_values, i)))
                .collect(),
        });
    }
    Ok(out)
}

/// Re-encode records (consecutive offsets) as RecordBatch v2 with their
/// original offsets, a batch per `SERVED_BATCH_RECORDS_MAX` records or
/// `SERVED_BATCH_BYTES_MAX` bytes. A gap in the offsets starts a new batch.
pub fn encode_served(records: &[StoredRecord]) -> Result<Bytes, ArchiveError> {
    let mut out = BytesMut::new();
    encode_served_into(&mut out, records)?;
    Ok(out.freeze())
}

/// [`encode_served`], appending to `out` (batches are encoded in place
/// and their base offsets patched there: no copy of their own).
pub fn encode_served_into(
    out: &mut BytesMut,
    records: &[StoredRecord],
) -> Result<(), ArchiveError> {
    let mut start = 0;
    while start < records.len() {
        let mut end = start + 1;
        let mut bytes = record_bytes(&records[start]);
        while end < records.len()
            && end - start < SERVED_BATCH_RECORDS_MAX
            && records[end - 1].offset.checked_add(1) == Some(records[end].offset)
            && bytes + record_bytes(&records[end]) <= SERVED_BATCH_BYTES_MAX
        {
            bytes += record_bytes(&records[end]);
            end += 1;
        }
        let run: Vec<NewRecord> = records[start..end]
            .iter()
            .map(|r| NewRecord {
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
                timestamp_ms: r.timestamp_ms,
            })
            .collect();
        let at = out.len();
        batch::encode_into(out, &run)?;
        batch::patch_base_offsets(&mut out[at..], records[start].offset)?;
        start = end;
    }
    Ok(())
}

fn record_bytes(record: &StoredRecord) -> usize {
    record.key.as_ref().map_or(0, Bytes::len)
        + record.value.as_ref().map_or(0, Bytes::len)
        + record
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len))
            .sum::<usize>()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::statistics::Statistics;

    fn record(offset: i64) -> StoredRecord {
        StoredRecord {
            offset,
            timestamp_ms: 1_700_000_000_000 + offset,
            key: (offset % 3 != 0).then(|| Bytes::from(format!("k{offset}"))),
            value: match offset % 5 {
                0 => None,
                1 => Some(Bytes::new()),
                _ => Some(Bytes::from(vec![(offset % 256) as u8, 0xff, 0, 0x80])),
            },
            headers: (0..offset % 3)
                .map(|i| {
                    (
                        format!("h{i}"),
                        (i != 1).then(|| Bytes::from(vec![i as u8; 3])),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn records_round_trip_through_parquet_with_pruning_statistics() {
        let records: Vec<StoredRecord> = (100..5100).map(record).collect();
        let mut writer = ArchiveWriter::new(
            "t",
            4,
            ArchiveWriteOptions {
                row_group_bytes: 16 * 1024,
                zstd_level: 3,
            },
        )
        .unwrap();
        writer.write_records(&records[..2000]).unwrap();
        writer.write_records(&records[2000..]).unwrap();
        let file = writer.finish().unwrap();
        assert_eq!(file.rows, 5000);
        assert_eq!((file.first_offset, file.end_offset), (100, 5100));
        assert!(file.row_groups.len() > 1, "{:?}", file.row_groups);

        let reader = ParquetRecordBatchReaderBuilder::try_new(file.bytes.clone()).unwrap();
        let metadata = reader.metadata().clone();
        assert_eq!(metadata.num_row_groups(), file.row_groups.len());
        for (i, group) in metadata.row_groups().iter().enumerate() {
            match group.column(0).statistics() {
                Some(Statistics::Int64(s)) => {
                    assert_eq!(*s.min_opt().unwrap(), file.row_groups[i]);
                }
                other => panic!("offset statistics missing: {other:?}"),
            }
            assert!(group.column(1).statistics().is_some(), "timestamp stats");
        }
        let mut back = Vec::new();
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            let partitions = column::<Int32Array>(&batch, "partition").unwrap();
            assert!(partitions.iter().all(|p| p == Some(4)));
            back.extend(records_of(&batch).unwrap());
        }
        assert_eq!(back, records);
    }

    #[test]
    fn gaps_are_refused_and_served_batches_keep_offsets() {
        let mut writer = ArchiveWriter::new("t", 0, ArchiveWriteOptions::default()).unwrap();
        writer.write_records(&[record(1), record(2)]).unwrap();
        assert!(writer.write_records(&[record(4)]).is_err());

        let records: Vec<StoredRecord> = (7..2600).map(record).collect();
        let served = encode_served(&records).unwrap();
        let decoded = batch::decode(served).unwrap();
        assert_eq!(decoded, records);
    }
    /// A file of another shape (damaged, or not written by sluice) is
    /// refused, not a panic: here a headers column whose entries have no
    /// `key` field, which indexing the struct's first column would have
    /// turned into a panic.
    #[test]
    fn batches_of_another_shape_are_refused() {
        let good = batch_of(&[record(1), record(2)], 0).unwrap();
        assert_eq!(records_of(&good).unwrap(), vec![record(1), record(2)]);
        let entries = StructArray::new_empty_fields(0, None);
        let item = Arc::new(Field::new("item", entries.data_type().clone(), true));
        let offsets = arrow::buffer::OffsetBuffer::from_lengths([0, 0]);
        let headers = ListArray::try_new(item, offsets, Arc::new(entries), None).unwrap();
        let index = good.schema().index_of("headers").unwrap();
        let mut columns = good.columns().to_vec();
        columns[index] = Arc::new(headers);
        let mut fields: Vec<Field> = good
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[index] = Field::new("headers", columns[index].data_type().clone(), false);
        let odd = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        assert!(matches!(records_of(&odd), Err(ArchiveError::Shape(_))));
        let missing = good.project(&[0, 1, 2, 3, 5]).unwrap();
        assert!(matches!(records_of(&missing), Err(ArchiveError::Shape(_))));
    }
}
