//! The body of an HTTP produce request: a stream of record objects
//! (`records`) or an `entries` array (`records-batch`), each decoded as the
//! front door decodes it (key, value and header encodings, partition,
//! timestamp) and encoded into a record batch. Must return errors, never
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice_ingest::http::records::{decode_record, split_stream};
use sluice_segment::batch;

/// The node's allocator (see sluice-alloc).
#[global_allocator]
static ALLOCATOR: sluice_alloc::ReservingAllocator = sluice_alloc::ReservingAllocator;

fn decode_and_encode(value: &Value) {
    if let Ok(decoded) = decode_record(value, 1_700_000_000_000) {
        let _ = batch::encode(&[decoded.record]);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(values) = split_stream(data) {
        for value in values.iter().flatten() {
            decode_and_encode(value);
        }
    }
    if let Ok(body) = serde_json::from_slice::<Value>(data) {
        for entry in body
            .get("entries")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            decode_and_encode(entry);
        }
    }
});
