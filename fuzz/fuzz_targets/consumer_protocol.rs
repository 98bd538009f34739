//! A group member's subscription and assignment bytes, as the coordinator
//! reads them (OffsetDelete, the groups endpoints). Must return nothing
//! rather than panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_ingest::group::consumer_protocol::{assigned_partitions, subscribed_topics};

/// The node's allocator (see sluice-alloc).
#[global_allocator]
static ALLOCATOR: sluice_alloc::ReservingAllocator = sluice_alloc::ReservingAllocator;

fuzz_target!(|data: &[u8]| {
    let _ = subscribed_topics(data);
    let _ = assigned_partitions(data);
});
