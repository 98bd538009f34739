//! Serving part of a stored run of batches: its batches are found by
//! walking their headers across the pieces (cache blocks) that hold the
//! run, without joining them, and only the batches a read returns are
//! copied out, checked against their own CRCs and given their offsets. A
//! consumer reading a run of many megabytes a megabyte at a time so costs
//! a megabyte per read, not the run.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use crate::batch::{self, BATCH_HEADER_BYTES};

/// A run's bytes as slices of the pieces that hold them, in order.
#[derive(Debug, Clone)]
pub struct Spans {
    parts: Vec<Bytes>,
    /// Where each part starts in the entry.
    starts: Vec<usize>,
    len: usize,
}

impl Spans {
    /// The run made of `parts`, in order.
    pub fn new(parts: Vec<Bytes>) -> Self {
        let mut starts = Vec::with_capacity(parts.len());
        let mut len = 0;
        for part in &parts {
            starts.push(len);
            len += part.len();
        }
        Self { parts, starts, len }
    }

    /// Bytes of the run.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the run holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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

/// What [`serve`] returns: the served batches and their offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Whole batches, CRCs checked, base offsets set.
    pub batches: Bytes,
    /// First offset of the first batch.
    pub first_offset: i64,
    /// One past the last offset of the last batch.
    pub end_offset: i64,
}

/// The batches of the run in `spans`, whose offsets are `offsets`, from
/// the one holding `offset` on: whole batches within `max_bytes` (at least
/// one when `at_least_one`), copied out with their CRCs checked and base
/// offsets set. Every batch header of the run is read, so a run whose
/// batches do not add up to its bytes and offsets is refused even where no
/// batch of it is served. The error is why the run cannot be served.
pub fn serve(
    spans: &Spans,
    offsets: Range<i64>,
    offset: i64,
    max_bytes: usize,
    at_least_one: bool,
) -> Result<Served, String> {
    // every batch: where it starts, its length, and its offsets
    let mut batches: Vec<(Range<usize>, Range<i64>)> = Vec::new();
    let mut at = 0usize;
    let mut next = offsets.start;
    while at < spans.len() {
        let header = batch::read_header(&spans.header(at), at, spans.len() - at)
            .map_err(|error| error.to_string())?;
        let end = next.saturating_add(i64::from(header.offset_count));
        batches.push((at..at + header.len, next..end));
        next = end;
        at += header.len;
    }
    if next != offsets.end {
        return Err("batches do not match their index entry".into());
    }
    let nothing = |at: i64| Served {
        batches: Bytes::new(),
        first_offset: at,
        end_offset: at,
    };
    let Some(first) = batches.iter().position(|(_, run)| run.end > offset) else {
        return Ok(nothing(next));
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
        return Ok(nothing(first_offset));
    }
    let mut out = BytesMut::with_capacity(end - start);
    spans.each_piece(start..end, |piece| out.extend_from_slice(piece));
    batch::check_crcs(&out).map_err(|error| error.to_string())?;
    let end_offset =
        batch::patch_base_offsets(&mut out, first_offset).map_err(|error| error.to_string())?;
    Ok(Served {
        batches: out.freeze(),
        first_offset,
        end_offset,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::NewRecord;

    /// A run of `batches` batches of `per_batch` records each, stored as
    /// a producer sent them (base offset 0), at offsets from 100.
    fn entry_of(batches: usize, per_batch: usize) -> (Range<i64>, Bytes) {
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
        let entry = 100..100 + (batches * per_batch) as i64;
        (entry, bytes.freeze())
    }

    /// `bytes` cut every `every` bytes (a header will straddle a cut).
    fn cut(bytes: &Bytes, every: usize) -> Spans {
        Spans::new(bytes.chunks(every).map(|c| bytes.slice_ref(c)).collect())
    }

    /// What serving the whole entry, patched, then selecting gives.
    fn expected(entry: &Range<i64>, bytes: &Bytes, offset: i64, max_bytes: usize) -> Bytes {
        let mut patched = BytesMut::from(bytes.as_ref());
        batch::patch_base_offsets(&mut patched, entry.start).unwrap();
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
                    let Served {
                        batches: served,
                        first_offset: first,
                        end_offset: end,
                    } = serve(&spans, entry.clone(), offset, max_bytes, true).unwrap();
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
        let served = serve(&cut(&bytes, 50), entry, 100, 10, false).unwrap();
        assert!(served.batches.is_empty());
        assert_eq!((served.first_offset, served.end_offset), (100, 100));
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
        assert!(serve(&spans, entry.clone(), 100, batch_len, true).is_ok());
        let error = serve(&spans, entry.clone(), 130, batch_len, true).unwrap_err();
        assert!(error.contains("crc"), "{error}");
        // a damaged length in a header nobody is served from
        let mut damaged = bytes.to_vec();
        damaged[2 * batch_len + 11] ^= 0x01;
        let error = serve(&cut(&Bytes::from(damaged), 64), entry, 100, 1, true).unwrap_err();
        assert!(!error.is_empty());
    }

    #[test]
    fn a_run_that_does_not_add_up_is_refused() {
        let (entry, bytes) = entry_of(2, 10);
        let shorter = bytes.slice(..bytes.len() - 1);
        assert!(serve(&cut(&shorter, 100), entry.clone(), 100, 1, true).is_err());
        assert!(serve(&cut(&bytes, 100), 100..121, 100, 1, true)
            .unwrap_err()
            .contains("do not match"));
    }
}
