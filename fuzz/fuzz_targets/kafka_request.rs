//! A Kafka request frame, as the listener sees it after the size prefix:
//! header parsing and version checks (`parse_frame`), then the body decoded
//! for its API. Must return errors, never panic or abort.
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::RequestKind;
use libfuzzer_sys::fuzz_target;
use sluice_ingest::kafka::{parse_frame, Parsed};

/// The node's allocator: huge reservations from bogus array counts are
/// mapped lazily instead of aborting (see sluice-alloc).
#[global_allocator]
static ALLOCATOR: sluice_alloc::ReservingAllocator = sluice_alloc::ReservingAllocator;

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Request(mut framed)) = parse_frame(Bytes::copy_from_slice(data)) {
        let _ = RequestKind::decode(framed.api_key, &mut framed.body, framed.version);
    }
});
