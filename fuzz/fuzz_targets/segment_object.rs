//! A segment object read back from object storage: footer and chunk
//! verification, then the batches of every chunk validated, offsets
//! patched and records decoded; and every chunk served in part the way a
//! Fetch reads it (`served::serve`, its batch headers walked across
//! blocks), which must give the same answer however the chunk is cut into
//! blocks. Must return errors, never panic or abort.
//!
//! Random bytes rarely get past the magic and the footer's crc32c, so the
//! input is read twice: as a whole object, and framed as one (a valid
//! header, the input's tail as the footer with its checksum computed, the
//! rest as the chunk area), which puts the footer parser itself under the
//! fuzzer.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sluice_segment::batch;
use sluice_segment::format::{
    decode_segment, FORMAT_VERSION, HEADER_BYTES, HEADER_MAGIC, TRAILER_MAGIC,
};
use sluice_segment::served::{self, Spans};

/// The node's allocator (see sluice-alloc).
#[global_allocator]
static ALLOCATOR: sluice_alloc::ReservingAllocator = sluice_alloc::ReservingAllocator;

/// `data` as a segment object: the first byte says how much of the rest
/// (in 1/255ths) is chunk area; what follows it is the footer.
fn framed(data: &[u8]) -> Vec<u8> {
    let Some((&split, rest)) = data.split_first() else {
        return Vec::new();
    };
    let body = rest.len() * usize::from(split) / 255;
    let (chunks, footer) = rest.split_at(body);
    let mut object = Vec::with_capacity(HEADER_BYTES + rest.len() + 16);
    object.extend_from_slice(HEADER_MAGIC);
    object.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    object.resize(HEADER_BYTES, 0);
    object.extend_from_slice(chunks);
    object.extend_from_slice(footer);
    object.extend_from_slice(&(footer.len() as u32).to_be_bytes());
    object.extend_from_slice(&crc32c::crc32c(footer).to_be_bytes());
    object.extend_from_slice(TRAILER_MAGIC);
    object
}

/// Serve `bytes` (a run of `offset_count` offsets from 0) in part, whole
/// and cut into blocks of a few sizes: the answers must agree.
fn serve_in_part(bytes: &[u8], offset_count: i64, seed: u8) {
    let whole = Bytes::copy_from_slice(bytes);
    let offset = i64::from(seed) % offset_count.max(1);
    let max_bytes = usize::from(seed) * 97;
    let at_least_one = seed % 2 == 0;
    let answer = served::serve(
        &Spans::new(vec![whole.clone()]),
        0..offset_count,
        offset,
        max_bytes,
        at_least_one,
    );
    for block in [1, 7, 61, 4096] {
        let parts = whole.chunks(block).map(|c| whole.slice_ref(c)).collect();
        let cut = served::serve(&Spans::new(parts), 0..offset_count, offset, max_bytes, at_least_one);
        assert_eq!(cut, answer, "blocks of {block} bytes");
    }
}

fn read_object(data: &[u8]) {
    if let Ok(footer) = decode_segment(data) {
        for chunk in footer.chunks {
            let bytes = &data[chunk.start as usize..(chunk.start + u64::from(chunk.len)) as usize];
            serve_in_part(bytes, i64::from(chunk.offset_count), data.len() as u8);
            if batch::validate(bytes).is_ok() {
                let mut patched = BytesMut::from(bytes);
                if batch::patch_base_offsets(&mut patched, 0).is_ok() {
                    let _ = batch::decode(patched.freeze());
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    read_object(data);
    read_object(&framed(data));
    // the same bytes as a produced record set
    if let Ok(summary) = batch::validate(data) {
        let _ = batch::decode(Bytes::copy_from_slice(data));
        serve_in_part(data, i64::from(summary.offset_count), data.len() as u8);
    }
    // and as a stored run that may not add up
    if data.len() <= 1 << 16 {
        serve_in_part(data, data.first().map_or(1, |b| i64::from(*b)), data.len() as u8);
    }
});
