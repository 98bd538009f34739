//! Archive rows back to record batches, as the read path serves them, on
//! three paths chosen by the first input byte:
//!
//! * most inputs: records built from the input (offsets with gaps, as a
//!   compacted run has; keys, values and headers present or null) become
//!   one archive Arrow batch, are read back with `records_of`, re-encoded
//!   into record batches (the last one stretched to the run's end) and
//!   decoded. What comes back must be what went in.
//! * one input in 256 (by checksum): the same records through a real Parquet file
//!   (`ArchiveWriter`, small row groups) and back row group by row group.
//! * 24 in 256: a hostile batch: the archive's column names with
//!   arbitrary types, nulls and header shapes, as a damaged or foreign
//!   file would decode to. `records_of` must refuse it or read it, never
//!   panic.
//!
//! (Parquet footers themselves are the parquet crate's to fuzz: a hostile
//! footer can make its metadata parser spin, see the decisions.) The
//! Parquet path costs about a millisecond an input (zstd contexts, writer
//! setup), the others microseconds; the split keeps the target fast
//! enough to run ten million inputs.
#![no_main]

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, Int32Array, Int64Array, ListArray, StringArray, StructArray,
    TimestampMillisecondArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{Field, Fields, Schema};
use arrow::record_batch::RecordBatch;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice_segment::archive::{self, ArchiveWriteOptions, ArchiveWriter};
use sluice_segment::batch::{self, StoredRecord};

/// The node's allocator (see sluice-alloc).
#[global_allocator]
static ALLOCATOR: sluice_alloc::ReservingAllocator = sluice_alloc::ReservingAllocator;

/// Bytes taken from the front of the input.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }

    /// Null (a zero length byte) or up to 255 bytes.
    fn field(&mut self) -> Option<Option<Bytes>> {
        let len = self.byte()?;
        if len == 0 {
            return Some(None);
        }
        let len = usize::from(len - 1).min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(Some(Bytes::copy_from_slice(taken)))
    }
}

fn records(input: &mut Input) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    let mut offset = 0i64;
    while out.len() < 2_000 {
        let Some(gap) = input.byte() else { break };
        offset += i64::from(gap % 8);
        let (Some(key), Some(value), Some(headers)) = (input.field(), input.field(), input.byte())
        else {
            break;
        };
        let mut list = Vec::new();
        for i in 0..headers % 4 {
            let Some(value) = input.field() else { break };
            list.push((format!("h{i}"), value));
        }
        out.push(StoredRecord {
            offset,
            timestamp_ms: 1_700_000_000_000 + offset,
            key,
            value,
            headers: list,
        });
        offset += 1;
    }
    out
}

/// Serve `rows` as the read path does and decode what a consumer gets.
fn served(rows: &[StoredRecord], end: i64) -> Vec<StoredRecord> {
    let served = archive::encode_served(rows).unwrap();
    let mut served = BytesMut::from(&served[..]);
    batch::cover_to(&mut served, end).unwrap();
    batch::decode(served.freeze()).unwrap()
}

fn through_arrow(written: &[StoredRecord], end: i64) {
    let arrow_batch = archive::batch_of(written, 0).unwrap();
    let rows = archive::records_of(&arrow_batch).unwrap();
    assert_eq!(rows, written, "records come back from Arrow as written");
    assert_eq!(served(&rows, end), written, "records are served as written");
}

fn through_parquet(written: &[StoredRecord], end: i64) {
    let options = ArchiveWriteOptions {
        row_group_bytes: 1024,
        zstd_level: 1,
    };
    let mut writer = ArchiveWriter::new("t", 0, options).unwrap().compacted();
    writer.write_records(written).unwrap();
    let file = writer.finish().unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file.bytes)
        .unwrap()
        .with_batch_size(64)
        .build()
        .unwrap();
    let mut read = Vec::new();
    for arrow_batch in reader {
        let rows = archive::records_of(&arrow_batch.unwrap()).unwrap();
        read.extend(served(&rows, end));
    }
    assert_eq!(read, written, "records come back from Parquet as written");
}

/// One column of `rows` rows of a type the input picks, with nulls where
/// it says.
fn hostile_column(input: &mut Input, rows: usize) -> Option<ArrayRef> {
    let kind = input.byte()?;
    let nulls: Vec<bool> = (0..rows).map(|i| (kind >> (i % 8)) & 1 == 1).collect();
    let null = |i: usize| nulls.get(i).copied().unwrap_or(i % 4 == 0);
    let ints = || (0..rows).map(|i| (!null(i)).then_some(i as i64 * 7 - 3));
    let bytes = |i: usize| (!null(i)).then(|| vec![i as u8; i % 5]);
    Some(match kind % 7 {
        0 => Arc::new(Int64Array::from_iter(ints())),
        1 => Arc::new(TimestampMillisecondArray::from_iter(ints())),
        2 => Arc::new(BinaryArray::from_iter((0..rows).map(bytes))),
        3 => Arc::new(StringArray::from_iter(
            (0..rows).map(|i| (!null(i)).then(|| format!("s{i}"))),
        )),
        4 => Arc::new(Int32Array::from_iter((0..rows).map(|i| Some(i as i32)))),
        _ => {
            // a list of structs whose fields the input picks
            let shape = input.byte()?;
            let per_row = usize::from(shape % 3);
            let entries = rows * per_row;
            let mut fields = Vec::new();
            let mut columns: Vec<ArrayRef> = Vec::new();
            for (name, bit) in [("key", 1u8), ("value", 2), ("other", 4)] {
                if shape & (bit << 2) == 0 {
                    continue;
                }
                let text = shape & (bit << 5) != 0;
                let column: ArrayRef = if text {
                    Arc::new(StringArray::from_iter(
                        (0..entries).map(|i| (i % 3 != 0).then(|| format!("k{i}"))),
                    ))
                } else {
                    Arc::new(BinaryArray::from_iter((0..entries).map(bytes)))
                };
                fields.push(Field::new(name, column.data_type().clone(), true));
                columns.push(column);
            }
            let values: ArrayRef = if fields.is_empty() {
                Arc::new(StructArray::new_empty_fields(entries, None))
            } else {
                Arc::new(StructArray::try_new(Fields::from(fields), columns, None).ok()?)
            };
            let item = Arc::new(Field::new("item", values.data_type().clone(), true));
            let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(per_row, rows));
            Arc::new(ListArray::try_new(item, offsets, values, None).ok()?)
        }
    })
}

fn hostile(input: &mut Input) {
    let Some(rows) = input.byte() else { return };
    let rows = usize::from(rows % 9);
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for name in [
        "offset",
        "timestamp",
        "key",
        "value",
        "headers",
        "partition",
    ] {
        let Some(pick) = input.byte() else { return };
        if pick % 5 == 0 {
            continue; // the column is missing
        }
        let Some(column) = hostile_column(input, rows) else {
            return;
        };
        fields.push(Field::new(name, column.data_type().clone(), true));
        columns.push(column);
    }
    let Ok(batch) = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns) else {
        return;
    };
    if let Ok(rows) = archive::records_of(&batch) {
        assert_eq!(rows.len(), batch.num_rows());
    }
}

/// The inputs whose crc32c ends in this byte take the Parquet path: one in
/// 256 of all executions (a first-byte switch would let the fuzzer keep
/// mutating Parquet inputs, and that path costs a hundred times the others).
const PARQUET_PATH: u8 = 0xA5;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(path) = input.byte() else { return };
    match path {
        1..=24 => hostile(&mut input),
        _ => {
            let written = records(&mut input);
            let Some(last) = written.last() else { return };
            let end = last.offset + 5;
            if crc32c::crc32c(data).to_le_bytes()[0] == PARQUET_PATH {
                through_parquet(&written, end);
            } else {
                through_arrow(&written, end);
            }
        }
    }
});
