//! Serving part of an index entry: its batches are found by walking their
//! headers across the blocks that hold the entry (no copy of the entry),
//! and only the batches a read returns are copied out, checked against
//! their own CRCs and given their offsets. A consumer reading a run of
//! many megabytes a megabyte at a time so costs a megabyte per read, not
//! the run.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use sluice_metadata::model::IndexEntry;
use sluice_segment::batch::{self, BATCH_HEADER_BYTES};

/// An entry's bytes as slices of the blocks that hold them, in order.
pub(crate) struct Spans {
    parts: Vec<Bytes>,
    /// Where each part starts in the entry.
    starts: Vec<usize>,
    len: usize,
}

impl Spans {
    pub(crate) fn new(parts: Vec<Bytes>) -> Self {
        let mut starts = Vec::with_capacity(parts.len());
        let mut len = 0;
        for part in &parts {
            starts.push(len);
            len += part.len();
        }
        Self { parts, starts, len }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The bytes `range`, piece by piece, in order.
    fn each_piece(&self, range: Range<usize>, mut f: impl FnMut(&[u8])) {
        debug_assert!(range.end <= self.len);
        let first = self
            .starts
            .partition_point(|start| *start <= range.start)
            .saturating_sub(1);
        for (part, start) in self.parts.iter().zip(&self.starts).skip(first) {
            if *start >= range.end {
                break;
            }
            let from = range.start.saturating_sub(*start);
            let to = (range.end - start).min(part.len());
            if from < to {
                f(&part[from..to]);
            }
        }
    }

    /// The first [`BATCH_HEADER_BYTES`] from `at` (zeros past the end).
    fn header(&self, at: usize) -> [u8; BATCH_HEADER_BYTES] {
        let mut header = [0u8; BATCH_HEADER_BYTES];
        let mut filled = 0;
        self.each_piece(at..(at + BATCH_HEADER_BYTES).min(self.len), |piece| {
            header[filled..filled + piece.len()].copy_from_slice(piece);
            filled += piece.len();
        });
        header
    }
}

/// Why part of an entry cannot be served.
pub(crate) type Unservable = String;

/// The batches of `entry` (held in `spans`) from the one holding `offset`
/// on, whole batches within `max_bytes` (at least one when `at_least_one`),
/// copied out with their CRCs checked and base offsets set: the served
/// bytes and their offsets `[first, end)`. Every batch header of the entry
/// is read, so an entry whose batches do not add up to its length and
/// offsets is refused even where no batch of it is served.
pub(crate) fn serve(
    entry: &IndexEntry,
    spans: &Spans,
    offset: i64,
    max_bytes: usize,
    at_least_one: bool,
) -> Result<(Bytes, i64, i64), Unservable> {
    if spans.len() != entry.len as usize {
        return Err("segment object shorter than its index entry".into());
    }
    // every batch: where it starts, its length, and its offsets
    let mut batches: Vec<(Range<usize>, Range<i64>)> = Vec::new();
    let mut at = 0usize;
    let mut next = entry.base_offset;
    while at < spans.len() {
        let header = batch::read_header(&spans.header(at), at, spans.len() - at)
            .map_err(|error| error.to_string())?;
        let end = next.saturating_add(i64::from(header.offset_count));
        batches.push((at..at + header.len, next..end));
        next = end;
        at += header.len;
    }
    if next != entry.end_offset() {
        return Err("batches do not match their index entry".into());
    }
    let Some(first) = batches.iter().position(|(_, offsets)| offsets.end > offset) else {
        return Ok((Bytes::new(), next, next));
    };
    let start = batches[first].0.start;
    let mut end = start;
    for (bytes, _) in &batches[first..] {
        if bytes.end - start > max_bytes && (end > start || !at_least_one) {
            break;
        }
        end = bytes.end;
    }
    let first_offset = batches[first].1.start;
    if end == start {
        return Ok((Bytes::new(), first_offset, first_offset));
    }
    let mut out = BytesMut::with_capacity(end - start);
    spans.each_piece(start..end, |piece| out.extend_from_slice(piece));
    batch::check_crcs(&out).map_err(|error| error.to_string())?;
    let end_offset =
        batch::patch_base_offsets(&mut out, first_offset).map_err(|error| error.to_string())?;
    Ok((out.freeze(), first_offset, end_offset))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use sluice_segment::NewRecord;

    use super::*;

    /// An entry of `batches` batches of `per_batch` records each, stored as
    /// a producer sent them (base offset 0), at offset 100.
    fn entry_of(batches: usize, per_batch: usize) -> (IndexEntry, Bytes) {
        let mut bytes = BytesMut::new();
        for b in 0..batches {
            let records: Vec<NewRecord> = (0..per_batch)
                .map(|r| NewRecord {
                    key: None,
                    value: Some(Bytes::from(format!("batch {b} record {r} ").repeat(3))),
                    headers: Vec::new(),
                    timestamp_ms: 1_700_000_000_000,
                })
                .collect();
            bytes.extend_from_slice(&batch::encode(&records).unwrap());
        }
        let entry = IndexEntry {
            base_offset: 100,
            offset_count: (batches * per_batch) as u32,
            batch_count: batches as u32,
            segment: Default::default(),
            start: 0,
            len: bytes.len() as u32,
            crc: 0,
            max_timestamp: 1_700_000_000_000,
            object_bytes: bytes.len() as u64,
            committed_ms: 0,
            archive: None,
        };
        (entry, bytes.freeze())
    }

    /// `bytes` cut every `every` bytes (a header will straddle a cut).
    fn cut(bytes: &Bytes, every: usize) -> Spans {
        Spans::new(bytes.chunks(every).map(|c| bytes.slice_ref(c)).collect())
    }

    /// What serving the whole entry, patched, then selecting gives.
    fn expected(entry: &IndexEntry, bytes: &Bytes, offset: i64, max_bytes: usize) -> Bytes {
        let mut patched = BytesMut::from(bytes.as_ref());
        batch::patch_base_offsets(&mut patched, entry.base_offset).unwrap();
        batch::batches_from(&patched.freeze(), offset, max_bytes).unwrap()
    }

    #[test]
    fn serves_the_batches_from_an_offset_across_block_cuts() {
        let (entry, bytes) = entry_of(6, 10);
        let batch_len = bytes.len() / 6;
        for every in [7, 61, 100, 1000, bytes.len()] {
            let spans = cut(&bytes, every);
            for offset in [100, 105, 110, 131, 159] {
                for max_bytes in [1, batch_len, 2 * batch_len + 1, bytes.len()] {
                    let (served, first, end) =
                        serve(&entry, &spans, offset, max_bytes, true).unwrap();
                    assert_eq!(served, expected(&entry, &bytes, offset, max_bytes));
                    let batches = served.len().div_ceil(batch_len) as i64;
                    assert_eq!(first, 100 + (offset - 100) / 10 * 10);
                    assert_eq!(end, first + 10 * batches);
                    assert_eq!(batch::end_offset(&served).unwrap(), Some(end));
                }
            }
        }
    }

    #[test]
    fn without_at_least_one_an_oversized_first_batch_is_not_served() {
        let (entry, bytes) = entry_of(3, 10);
        let (served, first, end) = serve(&entry, &cut(&bytes, 50), 100, 10, false).unwrap();
        assert!(served.is_empty());
        assert_eq!((first, end), (100, 100));
    }

    #[test]
    fn only_served_batches_are_checksummed_but_every_header_is_read() {
        let (entry, bytes) = entry_of(4, 10);
        let batch_len = bytes.len() / 4;
        // a flipped byte in the body of the last batch
        let mut damaged = bytes.to_vec();
        damaged[3 * batch_len + 70] ^= 0x40;
        let damaged = Bytes::from(damaged);
        let spans = cut(&damaged, 64);
        assert!(serve(&entry, &spans, 100, batch_len, true).is_ok());
        let error = serve(&entry, &spans, 130, batch_len, true).unwrap_err();
        assert!(error.contains("crc"), "{error}");
        // a damaged length in a header nobody is served from
        let mut damaged = bytes.to_vec();
        damaged[2 * batch_len + 11] ^= 0x01;
        let error = serve(&entry, &cut(&Bytes::from(damaged), 64), 100, 1, true).unwrap_err();
        assert!(!error.is_empty());
    }

    #[test]
    fn an_entry_that_does_not_add_up_is_refused() {
        let (entry, bytes) = entry_of(2, 10);
        let mut longer = entry.clone();
        longer.len += 1;
        assert!(serve(&longer, &cut(&bytes, 100), 100, 1, true)
            .unwrap_err()
            .contains("shorter"));
        let mut more = entry.clone();
        more.offset_count += 1;
        assert!(serve(&more, &cut(&bytes, 100), 100, 1, true)
            .unwrap_err()
            .contains("do not match"));
    }
}
