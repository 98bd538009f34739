//! Record batches as a producer sends them, through what the produce path
//! does with them: validation, the idempotence fields, a topic's record
//! rules (keys of a compacted topic, timestamp bounds, LogAppendTime
//! stamping), then the read path's helpers over the stored bytes. Must
//! return errors, never panic; a batch the rules accept must stay valid.
//! Inputs whose first byte is odd get their batch checksums computed
//! first, so that the fuzzer reaches the fields behind the crc32c.
#![no_main]

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sluice_ingest::rules::TopicRules;
use sluice_metadata::model::{Topic, TopicRecord};
use sluice_segment::batch;

/// The node's allocator (see sluice-alloc).
#[global_allocator]
static ALLOCATOR: sluice_alloc::ReservingAllocator = sluice_alloc::ReservingAllocator;

fn topic(configs: &[(&str, &str)]) -> Topic {
    Topic {
        record: TopicRecord {
            id: "t".into(),
            name: "t".into(),
            partitions: 1,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            created_ms: 0,
        },
        create_revision: 1,
        mod_revision: 1,
    }
}

/// `data` with every batch's crc32c computed, so that mutations get past
/// the checksum into the fields behind it (as a client that computes its
/// checksums over wrong fields would send them). Walks batches by their
/// length fields; stops at the first that does not fit.
fn with_crcs(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut at = 0usize;
    while at + 61 <= out.len() {
        let length = i32::from_be_bytes([out[at + 8], out[at + 9], out[at + 10], out[at + 11]]);
        let Some(end) = usize::try_from(length)
            .ok()
            .and_then(|length| (at + 12).checked_add(length))
            .filter(|&end| end <= out.len() && end >= at + 21)
        else {
            break;
        };
        let crc = crc32c::crc32c(&out[at + 21..end]);
        out[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
    out
}

fuzz_target!(|input: &[u8]| {
    // half the inputs as sent, half with their checksums made to hold
    let fixed;
    let data = match input.split_first() {
        Some((&flag, rest)) if flag & 1 == 1 => {
            fixed = with_crcs(rest);
            &fixed[..]
        }
        _ => input,
    };
    if batch::validate(data).is_err() {
        return;
    }
    let _ = batch::producer_fields(data);
    let rules = [
        TopicRules::of(&topic(&[("cleanup.policy", "compact")])),
        TopicRules::of(&topic(&[
            ("message.timestamp.before.max.ms", "1000"),
            ("message.timestamp.after.max.ms", "1000"),
        ])),
        TopicRules::of(&topic(&[("message.timestamp.type", "LogAppendTime")])),
    ];
    let bytes = Bytes::copy_from_slice(data);
    for rules in &rules {
        if let Ok(ruled) = rules.apply(bytes.clone(), 1_700_000_000_000) {
            assert!(
                batch::validate(&ruled.batches).is_ok(),
                "ruled batches stay valid"
            );
        }
    }
    // stored: offsets patched, then read back as the fetch path does
    let mut stored = BytesMut::from(data);
    if let Ok(end) = batch::patch_base_offsets(&mut stored, 100) {
        let _ = batch::cover_to(&mut stored, end + 5);
        let stored = stored.freeze();
        let _ = batch::end_offset(&stored);
        for offset in [100, 101, end - 1, end + 2] {
            let _ = batch::batches_from(&stored, offset, 64);
        }
        let _ = batch::offset_for_timestamp(&stored, 1_700_000_000_000);
        let _ = batch::decode(stored);
    }
});
