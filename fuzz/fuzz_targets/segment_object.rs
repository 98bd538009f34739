//! A segment object read back from object storage: footer and chunk
//! verification, then the batches of every chunk validated, offsets
//! patched and records decoded. Must return errors, never panic or abort.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sluice_segment::batch;
use sluice_segment::format::decode_segment;

/// The node's allocator (see sluice-alloc).
#[global_allocator]
static ALLOCATOR: sluice_alloc::ReservingAllocator = sluice_alloc::ReservingAllocator;

fuzz_target!(|data: &[u8]| {
    if let Ok(footer) = decode_segment(data) {
        for chunk in footer.chunks {
            let bytes = &data[chunk.start as usize..(chunk.start + u64::from(chunk.len)) as usize];
            if batch::validate(bytes).is_ok() {
                let mut patched = BytesMut::from(bytes);
                if batch::patch_base_offsets(&mut patched, 0).is_ok() {
                    let _ = batch::decode(patched.freeze());
                }
            }
        }
    }
    // the same bytes as a produced record set
    if batch::validate(data).is_ok() {
        let _ = batch::decode(Bytes::copy_from_slice(data));
    }
});
