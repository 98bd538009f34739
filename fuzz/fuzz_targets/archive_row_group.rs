//! Records through the Parquet archive and back, as the compactor writes
//! them and the read path serves them: records built from the input
//! (offsets with gaps, as a compacted run has; keys, values and headers
//! present or null), written by `ArchiveWriter` in row groups, read back
//! row group by row group, re-encoded into record batches (the last one
//! stretched to the run's end) and decoded. What comes back must be what
//! went in. (Parquet footers themselves are the parquet crate's to fuzz:
//! a hostile footer can make its metadata parser spin, see the decisions.)
#![no_main]

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

fn records(data: &[u8]) -> Vec<StoredRecord> {
    let mut input = Input(data);
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

fuzz_target!(|data: &[u8]| {
    let written = records(data);
    if written.is_empty() {
        return;
    }
    let options = ArchiveWriteOptions {
        row_group_bytes: 256,
        zstd_level: 1,
    };
    let mut writer = ArchiveWriter::new("t", 0, options).unwrap().compacted();
    writer.write_records(&written).unwrap();
    let file = writer.finish().unwrap();
    let end = written.last().map_or(0, |r| r.offset + 5);
    let reader = ParquetRecordBatchReaderBuilder::try_new(file.bytes)
        .unwrap()
        .with_batch_size(64)
        .build()
        .unwrap();
    let mut read = Vec::new();
    for arrow_batch in reader {
        let rows = archive::records_of(&arrow_batch.unwrap()).unwrap();
        let served = archive::encode_served(&rows).unwrap();
        let mut served = BytesMut::from(&served[..]);
        batch::cover_to(&mut served, end).unwrap();
        read.extend(batch::decode(served.freeze()).unwrap());
    }
    assert_eq!(read, written, "records come back as written");
});
