//! Kafka RecordBatch v2 helpers: encoding HTTP records into a batch through
//! the `kafka-protocol` codec, validating produced batches, patching base
//! offsets on read and decoding records for the HTTP read endpoint.

mod checked;

pub use checked::DECOMPRESSED_BATCH_BYTES_MAX;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};

/// Size of the RecordBatch v2 header, up to and including the record count.
pub const BATCH_HEADER_BYTES: usize = 61;
const LENGTH_FIELD_END: usize = 12;
const PARTITION_LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const FIRST_TIMESTAMP_AT: usize = 27;
const LAST_OFFSET_DELTA_AT: usize = 23;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;
/// Attributes bit of a transactional batch.
const TRANSACTIONAL_BIT: i16 = 0x10;
/// Attribute bit of a batch whose timestamps are the broker's append time.
const LOG_APPEND_TIME_BIT: i16 = 0x08;

/// Why bytes are not a valid sequence of RecordBatch v2.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than a header or than the declared length.
    #[error("truncated record batch at byte {at}")]
    Truncated {
        /// Where the truncated batch starts.
        at: usize,
    },
    /// Magic other than 2.
    #[error("unsupported record batch magic {magic} at byte {at}")]
    Magic {
        /// The magic found.
        magic: i8,
        /// Where the batch starts.
        at: usize,
    },
    /// The CRC does not match the content.
    #[error("record batch crc mismatch at byte {at}")]
    Crc {
        /// Where the batch starts.
        at: usize,
    },
    /// Header fields that make no sense (negative counts…).
    #[error("invalid record batch at byte {at}: {reason}")]
    Invalid {
        /// Where the batch starts.
        at: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// No batch at all.
    #[error("empty record set")]
    Empty,
    /// The codec refused to encode or decode.
    #[error("record codec: {0}")]
    Codec(String),
}

/// A record to be encoded (from the HTTP front door).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Key, or none.
    pub key: Option<Bytes>,
    /// Value, or none (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in order. Header keys are unique (the codec keys them by name).
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Creation time, ms since the epoch.
    pub timestamp_ms: i64,
}

/// A record read back from a stored batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Absolute offset.
    pub offset: i64,
    /// Timestamp, ms since the epoch.
    pub timestamp_ms: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// What a run of batches holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchSummary {
    /// Number of batches.
    pub batch_count: u32,
    /// Offsets the batches take (sum of last offset delta + 1).
    pub offset_count: u32,
    /// Largest max timestamp of any batch.
    pub max_timestamp: i64,
}

fn read_i32(bytes: &[u8], at: usize) -> i32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    i32::from_be_bytes(raw)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(raw)
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(raw)
}

/// One batch's framing: where it starts and how long it is.
#[derive(Debug, Clone, Copy)]
struct Frame {
    start: usize,
    offset_count: u32,
    max_timestamp: i64,
}

/// What a batch's header says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Bytes of the whole batch, its length field included.
    pub len: usize,
    /// Offsets it takes (last offset delta + 1).
    pub offset_count: u32,
    /// Its max timestamp.
    pub max_timestamp: i64,
}

/// Read the header of the batch at `at` from its first
/// [`BATCH_HEADER_BYTES`] bytes (`header`), `remaining` bytes being left
/// from `at` on: its length (which must fit), magic 2 and counts checked,
/// not its CRC. For readers that walk batches without holding them whole.
pub fn read_header(header: &[u8], at: usize, remaining: usize) -> Result<BatchHeader, BatchError> {
    if remaining < BATCH_HEADER_BYTES || header.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated { at });
    }
    let declared = read_i32(header, 8);
    if declared < (BATCH_HEADER_BYTES - LENGTH_FIELD_END) as i32 {
        return Err(BatchError::Invalid {
            at,
            reason: "batch length too small",
        });
    }
    let len = LENGTH_FIELD_END + declared as usize;
    if len > remaining {
        return Err(BatchError::Truncated { at });
    }
    let magic = header[MAGIC_AT] as i8;
    if magic != 2 {
        return Err(BatchError::Magic { magic, at });
    }
    let last_offset_delta = read_i32(header, LAST_OFFSET_DELTA_AT);
    let record_count = read_i32(header, RECORD_COUNT_AT);
    if last_offset_delta < 0 || record_count < 0 {
        return Err(BatchError::Invalid {
            at,
            reason: "negative record count",
        });
    }
    Ok(BatchHeader {
        len,
        offset_count: last_offset_delta as u32 + 1,
        max_timestamp: read_i64(header, MAX_TIMESTAMP_AT),
    })
}

/// Check each batch's CRC (and framing) in `bytes`.
pub fn check_crcs(bytes: &[u8]) -> Result<(), BatchError> {
    frames(bytes, true).map(drop)
}

/// Walk the batches of `bytes`, checking framing, magic and (when `check_crc`)
/// each CRC.
fn frames(bytes: &[u8], check_crc: bool) -> Result<Vec<Frame>, BatchError> {
    let mut frames = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let batch = &bytes[at..];
        let header = read_header(batch, at, batch.len())?;
        if check_crc && crc32c::crc32c(&batch[ATTRIBUTES_AT..header.len]) != read_u32(batch, CRC_AT)
        {
            return Err(BatchError::Crc { at });
        }
        frames.push(Frame {
            start: at,
            offset_count: header.offset_count,
            max_timestamp: header.max_timestamp,
        });
        at += header.len;
    }
    Ok(frames)
}

/// Smallest encoding of one record inside a batch (length, attributes,
/// timestamp delta, offset delta, key length, value length, header count:
/// one byte each).
const RECORD_BYTES_MIN: usize = 7;
/// Bits of the batch attributes that name the compression codec.
const COMPRESSION_MASK: i16 = 0x07;

/// Validate produced batches (framing, magic 2, CRC, record counts) and
/// summarize them. As Kafka's broker does, a batch must hold exactly
/// `last offset delta + 1` records: uncompressed batches must be large
/// enough for their count, compressed ones are decompressed and counted, so
/// that a batch cannot claim offsets (or make readers reserve memory) for
/// records it does not hold.
pub fn validate(bytes: &[u8]) -> Result<BatchSummary, BatchError> {
    let frames = frames(bytes, true)?;
    if frames.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut offsets: u64 = 0;
    for (i, frame) in frames.iter().enumerate() {
        let at = frame.start;
        let end = frames.get(i + 1).map_or(bytes.len(), |next| next.start);
        let batch = &bytes[at..end];
        let record_count = read_i32(batch, RECORD_COUNT_AT);
        if record_count < 1 || record_count as u32 != frame.offset_count {
            return Err(BatchError::Invalid {
                at,
                reason: "record count does not match the last offset delta",
            });
        }
        let attributes = i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]]);
        if attributes & COMPRESSION_MASK == 0 {
            let room = (batch.len() - BATCH_HEADER_BYTES) / RECORD_BYTES_MIN;
            if record_count as usize > room {
                return Err(BatchError::Invalid {
                    at,
                    reason: "more records declared than the batch can hold",
                });
            }
        } else {
            let mut one = Bytes::copy_from_slice(batch);
            let set = checked::decode_one(&mut one)?;
            if set.records.len() != record_count as usize {
                return Err(BatchError::Invalid {
                    at,
                    reason: "compressed batch holds a different number of records than declared",
                });
            }
        }
        offsets += u64::from(frame.offset_count);
    }
    if offsets > u64::from(u32::MAX) {
        return Err(BatchError::Invalid {
            at: 0,
            reason: "too many records in one request",
        });
    }
    Ok(summarize_frames(&frames))
}

/// The idempotence fields of one RecordBatch v2 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    /// Producer id; negative for a producer that is not idempotent.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence of the first record.
    pub base_sequence: i32,
    /// Offsets in the batch minus one.
    pub last_offset_delta: i32,
    /// Whether the batch belongs to a transaction.
    pub transactional: bool,
}

/// The idempotence fields of each batch of `bytes` (framing is checked,
/// CRCs are not: call [`validate`] first).
pub fn producer_fields(bytes: &[u8]) -> Result<Vec<ProducerFields>, BatchError> {
    Ok(frames(bytes, false)?
        .iter()
        .map(|frame| {
            let batch = &bytes[frame.start..];
            let attributes = i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]]);
            ProducerFields {
                producer_id: read_i64(batch, PRODUCER_ID_AT),
                producer_epoch: i16::from_be_bytes([
                    batch[PRODUCER_EPOCH_AT],
                    batch[PRODUCER_EPOCH_AT + 1],
                ]),
                base_sequence: read_i32(batch, BASE_SEQUENCE_AT),
                last_offset_delta: read_i32(batch, LAST_OFFSET_DELTA_AT),
                transactional: attributes & TRANSACTIONAL_BIT != 0,
            }
        })
        .collect())
}

/// One record of produced batches as a topic's rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordFacts {
    /// Index of the batch in the run.
    pub batch: usize,
    /// Index of the record in its batch (KIP-467's `batch_index`).
    pub index: usize,
    /// Whether the record has a key.
    pub has_key: bool,
    /// Whether the record has a value (not a tombstone).
    pub has_value: bool,
    /// Its timestamp (ms since the epoch).
    pub timestamp_ms: i64,
}

/// The facts of every record of `bytes` (validated batches), decompressing
/// as needed.
pub fn record_facts(bytes: &[u8]) -> Result<Vec<RecordFacts>, BatchError> {
    let frames = frames(bytes, false)?;
    let mut facts = Vec::new();
    for (batch, frame) in frames.iter().enumerate() {
        let end = frames.get(batch + 1).map_or(bytes.len(), |next| next.start);
        let mut one = Bytes::copy_from_slice(&bytes[frame.start..end]);
        let set = checked::decode_one(&mut one)?;
        facts.extend(
            set.records
                .iter()
                .enumerate()
                .map(|(index, record)| RecordFacts {
                    batch,
                    index,
                    has_key: record.key.is_some(),
                    has_value: record.value.is_some(),
                    timestamp_ms: record.timestamp,
                }),
        );
    }
    Ok(facts)
}

/// Mark every batch of `bytes` as stamped with the log append time `now_ms`
/// (Kafka's LogAppendTime: the timestamp-type attribute bit and the max
/// timestamp, which readers take as every record's timestamp), recomputing
/// each CRC.
pub fn set_log_append_time(bytes: &mut [u8], now_ms: i64) -> Result<(), BatchError> {
    let frames = frames(bytes, false)?;
    for (i, frame) in frames.iter().enumerate() {
        let end = frames.get(i + 1).map_or(bytes.len(), |next| next.start);
        let batch = &mut bytes[frame.start..end];
        let attributes = i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]])
            | LOG_APPEND_TIME_BIT;
        batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
    Ok(())
}

fn summarize_frames(frames: &[Frame]) -> BatchSummary {
    BatchSummary {
        batch_count: frames.len() as u32,
        offset_count: frames.iter().map(|f| f.offset_count).sum(),
        max_timestamp: frames.iter().map(|f| f.max_timestamp).max().unwrap_or(-1),
    }
}

/// Encode records into one uncompressed RecordBatch v2 with base offset 0.
pub fn encode(records: &[NewRecord]) -> Result<Bytes, BatchError> {
    encode_with(records, Compression::None)
}

/// Encode records into one RecordBatch v2 with base offset 0, compressed
/// with `compression`.
pub fn encode_with(records: &[NewRecord], compression: Compression) -> Result<Bytes, BatchError> {
    encode_as(records, compression, NO_PRODUCER_ID, NO_PRODUCER_EPOCH, -1)
}

/// Encode records into one uncompressed RecordBatch v2 of an idempotent
/// producer, as a Kafka client does (used by tests of the write path).
pub fn encode_idempotent(
    records: &[NewRecord],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<Bytes, BatchError> {
    encode_as(
        records,
        Compression::None,
        producer_id,
        producer_epoch,
        base_sequence,
    )
}

fn encode_as(
    records: &[NewRecord],
    compression: Compression,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<Bytes, BatchError> {
    let mut buf = BytesMut::new();
    encode_as_into(
        &mut buf,
        records,
        compression,
        producer_id,
        producer_epoch,
        base_sequence,
    )?;
    Ok(buf.freeze())
}

/// Append records to `buf` as one uncompressed RecordBatch v2 with base
/// offset 0 (no buffer of its own: for callers that join many batches).
pub fn encode_into(buf: &mut BytesMut, records: &[NewRecord]) -> Result<(), BatchError> {
    encode_as_into(
        buf,
        records,
        Compression::None,
        NO_PRODUCER_ID,
        NO_PRODUCER_EPOCH,
        -1,
    )
}

fn encode_as_into(
    buf: &mut BytesMut,
    records: &[NewRecord],
    compression: Compression,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<(), BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The codec starts a new batch whenever `offset - sequence`
            // changes; keeping the difference constant yields one batch
            // (base sequence -1 = no sequence, as a plain producer's is).
            sequence: base_sequence.wrapping_add(i as i32),
            timestamp: r.timestamp_ms,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(buf, records.iter(), &options)
        .map_err(|e| BatchError::Codec(e.to_string()))
}

/// Set each batch's base offset, the first to `base`, each next one after
/// the offsets of the previous; returns the offset after the last batch.
/// Each batch's partition leader epoch is set to -1 too: sluice has no
/// leader epochs (Metadata reports -1), and a client that saw a producer's
/// epoch in a batch would otherwise take later Metadata as stale and stop
/// following leader changes. Both fields lie outside the batch CRC, so
/// batches stay valid.
pub fn patch_base_offsets(bytes: &mut [u8], base: i64) -> Result<i64, BatchError> {
    let frames = frames(bytes, false)?;
    let mut next = base;
    for frame in frames {
        bytes[frame.start..frame.start + 8].copy_from_slice(&next.to_be_bytes());
        bytes[frame.start + PARTITION_LEADER_EPOCH_AT..frame.start + PARTITION_LEADER_EPOCH_AT + 4]
            .copy_from_slice(&NO_PARTITION_LEADER_EPOCH.to_be_bytes());
        next += i64::from(frame.offset_count);
    }
    Ok(next)
}

/// Decode every record of `bytes` (batches with absolute base offsets),
/// decompressing as needed and checking each CRC. Records of a batch
/// stamped with the log append time carry that time (the batch's max
/// timestamp), as Kafka's consumers read them.
pub fn decode(bytes: Bytes) -> Result<Vec<StoredRecord>, BatchError> {
    let frames = frames(&bytes, false)?;
    let mut out = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let end = frames.get(i + 1).map_or(bytes.len(), |next| next.start);
        let mut one = bytes.slice(frame.start..end);
        let set = checked::decode_one(&mut one)?;
        for record in set.records {
            if record.control {
                continue;
            }
            let timestamp_ms = match record.timestamp_type {
                TimestampType::LogAppend => frame.max_timestamp,
                TimestampType::Creation => record.timestamp,
            };
            out.push(StoredRecord {
                offset: record.offset,
                timestamp_ms,
                key: record.key,
                value: record.value,
                headers: record
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            });
        }
    }
    Ok(out)
}

/// Stretch the last batch of `bytes` so that it covers the offsets up to
/// `end` (exclusive), as a Kafka compacted log's last batch covers the
/// records compaction removed after it: a consumer then moves on to `end`
/// instead of asking for the removed offsets again. The CRC is recomputed.
pub fn cover_to(bytes: &mut [u8], end: i64) -> Result<(), BatchError> {
    let frames = frames(bytes, false)?;
    let Some(last) = frames.last() else {
        return Ok(());
    };
    let base = read_i64(bytes, last.start);
    let span = end.checked_sub(base).ok_or(BatchError::Invalid {
        at: last.start,
        reason: "batch cannot cover that many offsets",
    })?;
    if span <= i64::from(last.offset_count) {
        return Ok(());
    }
    let delta = i32::try_from(span - 1).map_err(|_| BatchError::Invalid {
        at: last.start,
        reason: "batch cannot cover that many offsets",
    })?;
    let batch = &mut bytes[last.start..];
    batch[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&delta.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// A batch holding no record that covers offsets `[first, end)`: what a
/// compacted run serves where compaction removed every record.
pub fn empty_batch(first: i64, end: i64) -> Bytes {
    let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES);
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&((BATCH_HEADER_BYTES - LENGTH_FIELD_END) as i32).to_be_bytes());
    out.extend_from_slice(&NO_PARTITION_LEADER_EPOCH.to_be_bytes());
    out.extend_from_slice(&[2]); // magic
    out.extend_from_slice(&[0; 4]); // crc, below
    out.extend_from_slice(&0i16.to_be_bytes()); // attributes
    let span = end.saturating_sub(first).saturating_sub(1).max(0);
    let delta = i32::try_from(span).unwrap_or(i32::MAX);
    out.extend_from_slice(&delta.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes()); // base timestamp
    out.extend_from_slice(&(-1i64).to_be_bytes()); // max timestamp
    out.extend_from_slice(&NO_PRODUCER_ID.to_be_bytes());
    out.extend_from_slice(&NO_PRODUCER_EPOCH.to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    out.extend_from_slice(&0i32.to_be_bytes()); // no records
    let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

/// The offset after the last batch of `bytes` (absolute base offsets), or
/// `None` when there is no batch.
pub fn end_offset(bytes: &[u8]) -> Result<Option<i64>, BatchError> {
    Ok(frames(bytes, false)?
        .iter()
        .map(|frame| read_i64(bytes, frame.start).saturating_add(i64::from(frame.offset_count)))
        .max())
}

/// The batches of `bytes` (absolute base offsets) from the one holding
/// `offset` on, whole batches only, as many as fit in `max_bytes` but always
/// at least one (so a reader makes progress past a batch larger than its
/// limit, as Kafka's fetch does). Empty when no batch reaches `offset`.
pub fn batches_from(bytes: &Bytes, offset: i64, max_bytes: usize) -> Result<Bytes, BatchError> {
    Ok(batch_range_from(bytes, offset, max_bytes)?
        .map_or_else(Bytes::new, |range| bytes.slice(range)))
}

/// Where in `bytes` the batches [`batches_from`] selects lie, if any.
pub fn batch_range_from(
    bytes: &[u8],
    offset: i64,
    max_bytes: usize,
) -> Result<Option<std::ops::Range<usize>>, BatchError> {
    let frames = frames(bytes, false)?;
    let mut start = None;
    let mut end = bytes.len();
    for (i, frame) in frames.iter().enumerate() {
        let frame_end = frames.get(i + 1).map_or(bytes.len(), |next| next.start);
        match start {
            None => {
                let base = read_i64(bytes, frame.start);
                if base.saturating_add(i64::from(frame.offset_count)) > offset {
                    start = Some(frame.start);
                }
            }
            Some(first) => {
                if frame_end - first > max_bytes {
                    end = frame.start;
                    break;
                }
            }
        }
    }
    Ok(start.map(|first| first..end))
}

/// The first record in `bytes` (batches with absolute base offsets) whose
/// timestamp is at least `timestamp`, as (offset, timestamp), or `None`.
/// Batches whose max timestamp is lower are skipped without decoding;
/// compressed batches are decompressed.
pub fn offset_for_timestamp(
    bytes: &Bytes,
    timestamp: i64,
) -> Result<Option<(i64, i64)>, BatchError> {
    let frames = frames(bytes, false)?;
    for (i, frame) in frames.iter().enumerate() {
        if frame.max_timestamp < timestamp {
            continue;
        }
        let end = frames.get(i + 1).map_or(bytes.len(), |next| next.start);
        let mut batch = bytes.slice(frame.start..end);
        let set = checked::decode_one(&mut batch)?;
        if let Some(first) = set
            .records
            .first()
            .filter(|r| r.timestamp_type == TimestampType::LogAppend)
        {
            // every record of the batch carries its max timestamp
            return Ok(Some((first.offset, frame.max_timestamp)));
        }
        if let Some(record) = set.records.iter().find(|r| r.timestamp >= timestamp) {
            return Ok(Some((record.offset, record.timestamp)));
        }
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(i: i64) -> NewRecord {
        NewRecord {
            key: Some(Bytes::from(format!("k{i}"))),
            value: if i % 3 == 0 {
                None
            } else {
                Some(Bytes::from(vec![i as u8; i as usize]))
            },
            headers: vec![
                ("h".to_string(), Some(Bytes::from_static(b"v"))),
                ("n".to_string(), None),
            ],
            timestamp_ms: 1_700_000_000_000 + i,
        }
    }

    #[test]
    fn record_facts_see_keys_values_and_timestamps_of_every_batch() {
        let mut keyless = record(1);
        keyless.key = None;
        let mut run = BytesMut::new();
        run.extend_from_slice(&encode(&[record(0), keyless]).unwrap());
        run.extend_from_slice(&encode_with(&[record(2)], Compression::Zstd).unwrap());
        let facts = record_facts(&run).unwrap();
        let seen: Vec<(usize, usize, bool, bool, i64)> = facts
            .iter()
            .map(|f| (f.batch, f.index, f.has_key, f.has_value, f.timestamp_ms))
            .collect();
        assert_eq!(
            seen,
            vec![
                (0, 0, true, false, 1_700_000_000_000),
                (0, 1, false, true, 1_700_000_000_001),
                (1, 0, true, true, 1_700_000_000_002),
            ]
        );
    }

    #[test]
    fn a_stretched_last_batch_and_an_empty_batch_cover_removed_offsets() {
        let mut run = BytesMut::new();
        run.extend_from_slice(&encode(&[record(1), record(2)]).unwrap());
        patch_base_offsets(&mut run, 10).unwrap();
        cover_to(&mut run, 20).unwrap();
        let bytes = run.freeze();
        assert_eq!(end_offset(&bytes).unwrap(), Some(20));
        let decoded = decode(bytes.clone()).unwrap();
        assert_eq!(
            decoded.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![10, 11]
        );
        // a read from inside the removed offsets still gets the batch
        assert_eq!(batches_from(&bytes, 15, 1 << 20).unwrap(), bytes);
        let empty = empty_batch(20, 25);
        assert_eq!(end_offset(&empty).unwrap(), Some(25));
        assert!(decode(empty.clone()).unwrap().is_empty());
        assert_eq!(batches_from(&empty, 22, 1 << 20).unwrap(), empty);
        let mut checked = empty.to_vec();
        assert_eq!(
            crc32c::crc32c(&checked[ATTRIBUTES_AT..]),
            read_u32(&checked, CRC_AT)
        );
        cover_to(&mut checked, 25).unwrap();
        assert_eq!(checked, empty.to_vec(), "already covered: unchanged");
    }

    #[test]
    fn log_append_time_stamps_every_batch_and_keeps_it_valid() {
        let mut run = BytesMut::new();
        run.extend_from_slice(&encode(&[record(1), record(2)]).unwrap());
        run.extend_from_slice(&encode_with(&[record(4)], Compression::Lz4).unwrap());
        set_log_append_time(&mut run, 1_800_000_000_000).unwrap();
        let summary = validate(&run).unwrap();
        assert_eq!(summary.max_timestamp, 1_800_000_000_000);
        let mut bytes = run.freeze();
        let decoded = decode(bytes.clone()).unwrap();
        assert_eq!(decoded.len(), 3);
        assert!(decoded.iter().all(|r| r.timestamp_ms == 1_800_000_000_000));
        assert_eq!(
            offset_for_timestamp(&bytes, 1_750_000_000_000).unwrap(),
            Some((0, 1_800_000_000_000))
        );
        let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes).unwrap();
        for set in sets {
            for record in set.records {
                assert_eq!(record.timestamp_type, TimestampType::LogAppend);
            }
        }
    }

    #[test]
    fn producer_fields_are_read_from_the_header() {
        let records: Vec<_> = (0..4).map(record).collect();
        let plain = encode(&records).unwrap();
        let fields = producer_fields(&plain).unwrap();
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].producer_id, -1);
        assert_eq!(fields[0].base_sequence, -1);
        let idempotent = encode_idempotent(&records, 42, 3, 17).unwrap();
        validate(&idempotent).unwrap();
        assert_eq!(
            producer_fields(&idempotent).unwrap(),
            vec![ProducerFields {
                producer_id: 42,
                producer_epoch: 3,
                base_sequence: 17,
                last_offset_delta: 3,
                transactional: false,
            }]
        );
    }

    #[test]
    fn encode_makes_one_valid_batch() {
        let records: Vec<_> = (0..10).map(record).collect();
        let bytes = encode(&records).unwrap();
        let summary = validate(&bytes).unwrap();
        assert_eq!(
            summary,
            BatchSummary {
                batch_count: 1,
                offset_count: 10,
                max_timestamp: 1_700_000_000_009
            }
        );
        // no producer id, no sequence
        assert_eq!(read_i64(&bytes, 43), -1);
        assert_eq!(read_i32(&bytes, 53), -1);
    }

    #[test]
    fn patched_batches_decode_with_absolute_offsets() {
        let a = encode(&(0..3).map(record).collect::<Vec<_>>()).unwrap();
        let b = encode(&(3..8).map(record).collect::<Vec<_>>()).unwrap();
        let mut both = BytesMut::new();
        both.extend_from_slice(&a);
        both.extend_from_slice(&b);
        // a producer's leader epoch is replaced by "none"
        both[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
            .copy_from_slice(&7i32.to_be_bytes());
        let next = patch_base_offsets(&mut both, 100).unwrap();
        assert_eq!(next, 108);
        assert_eq!(read_i32(&both, PARTITION_LEADER_EPOCH_AT), -1);
        assert_eq!(read_i32(&both, a.len() + PARTITION_LEADER_EPOCH_AT), -1);
        validate(&both).unwrap();
        let decoded = decode(both.freeze()).unwrap();
        assert_eq!(decoded.len(), 8);
        for (i, r) in decoded.iter().enumerate() {
            let want = record(i as i64);
            assert_eq!(r.offset, 100 + i as i64);
            assert_eq!(r.key, want.key);
            assert_eq!(r.value, want.value);
            assert_eq!(r.headers, want.headers);
            assert_eq!(r.timestamp_ms, want.timestamp_ms);
        }
    }

    /// One batch (crc32c and all right) around the record `area`,
    /// gzip'd when `gzip`, with the first timestamp `first_timestamp`.
    fn batch_around(record: &[u8], gzip: bool, first_timestamp: i64) -> Vec<u8> {
        use std::io::Write;
        let area = if gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(record).unwrap();
            e.finish().unwrap()
        } else {
            record.to_vec()
        };
        let mut batch = vec![0u8; BATCH_HEADER_BYTES];
        batch[8..12]
            .copy_from_slice(&((BATCH_HEADER_BYTES - 12 + area.len()) as i32).to_be_bytes());
        batch[MAGIC_AT] = 2;
        batch[ATTRIBUTES_AT + 1] = u8::from(gzip);
        batch[FIRST_TIMESTAMP_AT..FIRST_TIMESTAMP_AT + 8]
            .copy_from_slice(&first_timestamp.to_be_bytes());
        batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&(-1i64).to_be_bytes());
        batch[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&1i32.to_be_bytes());
        batch.extend_from_slice(&area);
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    /// Refused with a codec error by every reader of batches.
    fn refused_everywhere(batch: Vec<u8>, compressed: bool) {
        if compressed {
            assert!(matches!(validate(&batch), Err(BatchError::Codec(_))));
        }
        assert!(matches!(record_facts(&batch), Err(BatchError::Codec(_))));
        assert!(matches!(
            decode(Bytes::from(batch)),
            Err(BatchError::Codec(_))
        ));
    }

    /// A batch whose one record declares 2^31 - 1 headers (crc32c and all
    /// right), plain and gzip'd: refused with an error. kafka-protocol's
    /// decoder alone reserves room for every declared header first, and
    /// the failed allocation aborts the process (found by the
    /// produced_batches fuzz target once it computed checksums).
    #[test]
    fn a_record_that_declares_more_headers_than_bytes_is_refused() {
        // length 10: attributes, timestamp and offset deltas, null key,
        // null value, then the header count as a 5-byte varint
        let record: &[u8] = &[0x14, 0, 0, 0, 1, 1, 0xfe, 0xff, 0xff, 0xff, 0x0f];
        for gzip in [false, true] {
            refused_everywhere(batch_around(record, gzip, 0), gzip);
        }
    }

    /// A record length written as a 6-byte varint. kafka-protocol reads a
    /// 32-bit varint as at most 5 bytes, so it would take the sixth for
    /// the attributes and every field after it one byte early: here the
    /// attributes byte becomes a timestamp delta of 1 past a first
    /// timestamp of i64::MAX, an overflow (a panic in a debug build; found
    /// by the segment_object fuzz target in CI). Such varints are refused.
    #[test]
    fn a_32_bit_varint_longer_than_five_bytes_is_refused() {
        // length 6 (zigzag 12) in six bytes; attributes 2, timestamp and
        // offset deltas 0, null key, null value, no headers
        let record: &[u8] = &[0x8c, 0x80, 0x80, 0x80, 0x80, 0x00, 2, 0, 0, 1, 1, 0];
        for gzip in [false, true] {
            refused_everywhere(batch_around(record, gzip, i64::MAX), gzip);
        }
        // the same record with its length in one byte is read
        let canonical: &[u8] = &[0x0c, 2, 0, 0, 1, 1, 0];
        let read = decode(Bytes::from(batch_around(canonical, false, i64::MAX))).unwrap();
        assert_eq!(read.len(), 1);
    }

    #[test]
    fn corrupt_and_truncated_batches_are_rejected() {
        let bytes = encode(&[record(1)]).unwrap();
        let mut flipped = bytes.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(matches!(validate(&flipped), Err(BatchError::Crc { at: 0 })));
        assert!(matches!(
            validate(&bytes[..bytes.len() - 1]),
            Err(BatchError::Truncated { at: 0 })
        ));
        assert!(matches!(
            validate(&bytes[..10]),
            Err(BatchError::Truncated { at: 0 })
        ));
        let mut magic = bytes.to_vec();
        magic[MAGIC_AT] = 1;
        assert!(matches!(
            validate(&magic),
            Err(BatchError::Magic { magic: 1, at: 0 })
        ));
        assert_eq!(validate(&[]), Err(BatchError::Empty));
    }

    fn patched(batches: &[Vec<NewRecord>]) -> Bytes {
        let mut all = BytesMut::new();
        for records in batches {
            all.extend_from_slice(&encode(records).unwrap());
        }
        patch_base_offsets(&mut all, 100).unwrap();
        all.freeze()
    }

    #[test]
    fn batches_from_skips_earlier_batches_and_keeps_at_least_one() {
        let a: Vec<_> = (0..3).map(record).collect();
        let b: Vec<_> = (3..6).map(record).collect();
        let c: Vec<_> = (6..9).map(record).collect();
        let bytes = patched(&[a, b, c]);
        // offsets 100..103, 103..106, 106..109
        let all = batches_from(&bytes, 100, usize::MAX).unwrap();
        assert_eq!(all, bytes);
        let from_b = batches_from(&bytes, 104, usize::MAX).unwrap();
        assert_eq!(decode(from_b.clone()).unwrap()[0].offset, 103);
        let one = batches_from(&bytes, 104, 1).unwrap();
        assert_eq!(decode(one).unwrap().len(), 3);
        assert!(batches_from(&bytes, 109, usize::MAX).unwrap().is_empty());
    }

    #[test]
    fn offset_for_timestamp_finds_the_first_record_at_or_after() {
        let a: Vec<_> = (0..3).map(record).collect();
        let b: Vec<_> = (3..6).map(record).collect();
        let bytes = patched(&[a, b]);
        let t0 = 1_700_000_000_000;
        assert_eq!(offset_for_timestamp(&bytes, 0).unwrap(), Some((100, t0)));
        assert_eq!(
            offset_for_timestamp(&bytes, t0 + 4).unwrap(),
            Some((104, t0 + 4))
        );
        assert_eq!(offset_for_timestamp(&bytes, t0 + 6).unwrap(), None);
    }

    /// Rewrite a batch's last offset delta and record count, with a valid CRC.
    fn with_counts(bytes: &Bytes, last_offset_delta: i32, record_count: i32) -> Vec<u8> {
        let mut out = bytes.to_vec();
        out[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&last_offset_delta.to_be_bytes());
        out[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&record_count.to_be_bytes());
        let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
        out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        out
    }

    #[test]
    fn batches_cannot_claim_records_they_do_not_hold() {
        let records: Vec<_> = (0..3).map(record).collect();
        let plain = encode(&records).unwrap();
        assert_eq!(
            validate(&with_counts(&plain, 2, 3)).unwrap().offset_count,
            3
        );
        // count and last offset delta disagree
        assert!(validate(&with_counts(&plain, 9, 3)).is_err());
        // a count far beyond what the bytes can hold (it would claim 2^31 offsets)
        assert!(validate(&with_counts(&plain, i32::MAX - 1, i32::MAX)).is_err());
        // a compressed batch is decompressed and counted
        let zipped = encode_with(&records, Compression::Gzip).unwrap();
        assert_eq!(validate(&zipped).unwrap().offset_count, 3);
        assert!(validate(&with_counts(&zipped, 4, 5)).is_err());
    }

    #[test]
    fn compressed_batches_are_decoded() {
        let records: Vec<_> = (0..6).map(record).collect();
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = encode_with(&records, compression).unwrap();
            assert_eq!(validate(&bytes).unwrap().offset_count, 6);
            let mut patched = BytesMut::from(bytes.as_ref());
            patch_base_offsets(&mut patched, 10).unwrap();
            let patched = patched.freeze();
            let decoded = decode(patched.clone()).unwrap();
            assert_eq!(decoded.len(), 6, "{compression:?}");
            assert_eq!(decoded[5].value, records[5].value);
            assert_eq!(
                offset_for_timestamp(&patched, 1_700_000_000_004).unwrap(),
                Some((14, 1_700_000_000_004))
            );
        }
    }
}
