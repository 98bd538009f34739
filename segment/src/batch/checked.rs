//! Record decoding that hostile bytes cannot turn into an unbounded
//! allocation. `kafka-protocol`'s decoder reserves room for as many records
//! as the batch header declares and for as many headers as a record
//! declares, and its decompressors grow their output as far as the data
//! expands: a batch of a few bytes (crc32c included) could make it ask for
//! tens of gigabytes, and a failed allocation aborts the process. So every
//! batch goes through here: decompressed with a bound on the output, then
//! its records walked once to check that each count fits the bytes behind
//! it, and only then handed to the codec.

use std::io::Read;

use anyhow::{bail, ensure, Context};
use bytes::{Buf, Bytes};
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordSet};

use super::{BatchError, FIRST_TIMESTAMP_AT, RECORD_COUNT_AT};

/// Largest record area one batch may decompress to.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = 64 << 20;

/// The magic of Kafka's (xerial) snappy framing, with its version fields.
const XERIAL_SNAPPY_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// What the records of a batch are checked against from its header.
#[derive(Debug, Clone, Copy)]
struct Header {
    base_offset: i64,
    first_timestamp: i64,
    count: i32,
}

impl Header {
    fn of(batch: &[u8]) -> Option<Self> {
        let i64_at = |at: usize| -> Option<i64> {
            Some(i64::from_be_bytes(batch.get(at..at + 8)?.try_into().ok()?))
        };
        Some(Self {
            base_offset: i64_at(0)?,
            first_timestamp: i64_at(FIRST_TIMESTAMP_AT)?,
            count: i32::from_be_bytes(
                batch
                    .get(RECORD_COUNT_AT..RECORD_COUNT_AT + 4)?
                    .try_into()
                    .ok()?,
            ),
        })
    }
}

/// Decode one batch (`batch` holds exactly one).
pub(super) fn decode_one(batch: &mut Bytes) -> Result<RecordSet, BatchError> {
    let header = Header::of(batch)
        .ok_or_else(|| BatchError::Codec("batch shorter than its header".into()))?;
    let records = |area: &mut Bytes, compression: Compression| -> anyhow::Result<Bytes> {
        let area = decompress(area.split_to(area.len()), compression)?;
        check_records(&area, header)?;
        Ok(area)
    };
    RecordBatchDecoder::decode_with_custom_compression(batch, Some(records))
        .map_err(|e| BatchError::Codec(e.to_string()))
}

fn decompress(area: Bytes, compression: Compression) -> anyhow::Result<Bytes> {
    match compression {
        Compression::None => Ok(area),
        Compression::Gzip => bounded(flate2::read::GzDecoder::new(&area[..]), "gzip"),
        Compression::Zstd => bounded(zstd::stream::read::Decoder::new(&area[..])?, "zstd"),
        Compression::Lz4 => bounded(lz4::Decoder::new(&area[..])?, "lz4"),
        Compression::Snappy => snappy(area),
    }
}

/// Everything `reader` yields, refused past the bound.
fn bounded(reader: impl Read, codec: &str) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    reader
        .take(DECOMPRESSED_BATCH_BYTES_MAX as u64 + 1)
        .read_to_end(&mut out)
        .with_context(|| format!("{codec} records do not decompress"))?;
    ensure!(
        out.len() <= DECOMPRESSED_BATCH_BYTES_MAX,
        "{codec} records decompress to more than {DECOMPRESSED_BATCH_BYTES_MAX} bytes"
    );
    Ok(out.into())
}

/// Snappy as Kafka clients write it: xerial framing (blocks of raw
/// snappy, each with its length) or, without the magic, one raw block.
/// Each block's declared length is checked before room is made for it.
fn snappy(mut area: Bytes) -> anyhow::Result<Bytes> {
    let mut blocks = Vec::new();
    if area.starts_with(XERIAL_SNAPPY_MAGIC) {
        area.advance(XERIAL_SNAPPY_MAGIC.len());
        while area.has_remaining() {
            ensure!(area.remaining() >= 4, "snappy block length cut short");
            let len = area.get_u32() as usize;
            ensure!(len <= area.remaining(), "snappy block cut short");
            blocks.push(area.split_to(len));
        }
    } else {
        blocks.push(area);
    }
    let mut out = Vec::new();
    for block in blocks {
        let len = snap::raw::decompress_len(&block).context("snappy block header")?;
        ensure!(
            out.len() + len <= DECOMPRESSED_BATCH_BYTES_MAX,
            "snappy records decompress to more than {DECOMPRESSED_BATCH_BYTES_MAX} bytes"
        );
        let at = out.len();
        out.resize(at + len, 0);
        snap::raw::Decoder::new()
            .decompress(&block, &mut out[at..])
            .context("snappy block does not decompress")?;
    }
    Ok(out.into())
}

/// A zigzag varint (Kafka's VARINT / VARLONG).
fn varint(bytes: &mut &[u8]) -> anyhow::Result<i64> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let Some((&byte, rest)) = bytes.split_first() else {
            bail!("varint cut short");
        };
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift.min(63);
        if byte & 0x80 == 0 {
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    bail!("varint longer than ten bytes")
}

/// A zigzag varint of a 32-bit field (Kafka's VARINT). The codec reads
/// such a field from at most five bytes and keeps 32 bits of them; one
/// written longer or wider would be read differently here and there, so it
/// is refused.
fn varint32(bytes: &mut &[u8]) -> anyhow::Result<i64> {
    let before = *bytes;
    let value = varint(bytes)?;
    let used = before.len() - bytes.len();
    ensure!(
        used < 5 || (used == 5 && before[4] <= 0x0f),
        "32-bit varint longer than five bytes or wider than 32 bits"
    );
    Ok(value)
}

/// Skip a field of `len` bytes (-1 = null when `nullable`).
fn skip(bytes: &mut &[u8], len: i64, nullable: bool, what: &str) -> anyhow::Result<()> {
    if len == -1 && nullable {
        return Ok(());
    }
    let len = usize::try_from(len).map_err(|_| anyhow::anyhow!("negative {what} length"))?;
    ensure!(len <= bytes.len(), "{what} longer than its record");
    *bytes = &bytes[len..];
    Ok(())
}

/// Walk the header's count of records of `area`: each must fit its
/// bytes, its offset and timestamp deltas must add to the batch's base
/// without overflow, and its header count must fit what is left of it (a
/// header takes at least two bytes).
fn check_records(area: &[u8], header: Header) -> anyhow::Result<()> {
    ensure!(header.count >= 0, "negative record count");
    let mut rest = area;
    for _ in 0..header.count {
        let len = varint32(&mut rest)?;
        let len = usize::try_from(len).map_err(|_| anyhow::anyhow!("negative record length"))?;
        ensure!(len <= rest.len(), "record longer than its batch");
        let (mut record, after) = rest.split_at(len);
        rest = after;
        ensure!(!record.is_empty(), "empty record");
        record = &record[1..]; // attributes
        let timestamp_delta = varint(&mut record)?;
        ensure!(
            header
                .first_timestamp
                .checked_add(timestamp_delta)
                .is_some(),
            "record timestamp overflows"
        );
        let offset_delta = varint32(&mut record)?;
        ensure!(
            i32::try_from(offset_delta).is_ok()
                && header.base_offset.checked_add(offset_delta).is_some(),
            "record offset overflows"
        );
        let key = varint32(&mut record)?;
        skip(&mut record, key, true, "key")?;
        let value = varint32(&mut record)?;
        skip(&mut record, value, true, "value")?;
        let headers = varint32(&mut record)?;
        ensure!(
            headers >= 0 && headers as u64 <= record.len() as u64 / 2,
            "record declares {headers} headers in {} bytes",
            record.len()
        );
        for _ in 0..headers {
            let key = varint32(&mut record)?;
            skip(&mut record, key, false, "header key")?;
            let value = varint32(&mut record)?;
            skip(&mut record, value, true, "header value")?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn zigzag(value: i64) -> Vec<u8> {
        let mut v = ((value << 1) ^ (value >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn record(headers: i64, header_bytes: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8];
        body.extend(zigzag(0));
        body.extend(zigzag(0));
        body.extend(zigzag(-1));
        body.extend(zigzag(1));
        body.push(b'v');
        body.extend(zigzag(headers));
        body.extend_from_slice(header_bytes);
        let mut out = zigzag(body.len() as i64);
        out.extend(body);
        out
    }

    #[test]
    fn counts_must_fit_the_bytes_behind_them() {
        let mut header = zigzag(1);
        header.push(b'k');
        header.extend(zigzag(-1));
        let batch = |count| Header {
            base_offset: 0,
            first_timestamp: 0,
            count,
        };
        let one = record(1, &header);
        check_records(&one, batch(1)).unwrap();
        assert!(
            check_records(&one, batch(2)).is_err(),
            "two records declared, one there"
        );
        assert!(check_records(&record(1 << 40, &header), batch(1)).is_err());
        assert!(check_records(&record(-1, &[]), batch(1)).is_err());
        assert!(check_records(&one, batch(-1)).is_err());
        let at_the_end = Header {
            base_offset: i64::MAX,
            first_timestamp: 0,
            count: 1,
        };
        check_records(&one, at_the_end).unwrap();
        let mut late = vec![0u8];
        late.extend(zigzag(1));
        late.extend(zigzag(1));
        late.extend([1, 1, 0]);
        let mut one_late = zigzag(late.len() as i64);
        one_late.extend(late);
        assert!(
            check_records(&one_late, at_the_end).is_err(),
            "offset past i64::MAX"
        );
        let last_ms = Header {
            first_timestamp: i64::MAX,
            ..batch(1)
        };
        assert!(
            check_records(&one_late, last_ms).is_err(),
            "timestamp past i64::MAX"
        );
        for (v, bytes) in [
            (0i64, vec![0u8]),
            (-1, vec![1]),
            (1, vec![2]),
            (300, zigzag(300)),
        ] {
            assert_eq!(varint(&mut &bytes[..]).unwrap(), v);
        }
        assert!(varint(&mut &[0xffu8; 11][..]).is_err());
        let widest: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(varint32(&mut &widest[..]).unwrap(), i64::from(i32::MIN));
        assert!(varint32(&mut &[0xff, 0xff, 0xff, 0xff, 0x1f][..]).is_err());
        assert!(varint32(&mut &[0x80, 0x80, 0x80, 0x80, 0x80, 0][..]).is_err());
    }

    #[test]
    fn decompression_stops_at_the_bound() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(DECOMPRESSED_BATCH_BYTES_MAX >> 20) + 1 {
            gz.write_all(&zeros).unwrap();
        }
        let bomb = Bytes::from(gz.finish().unwrap());
        assert!(bomb.len() < 1 << 20, "a small input");
        let error = decompress(bomb, Compression::Gzip).unwrap_err();
        assert!(error.to_string().contains("more than"), "{error}");
        let raw = snap::raw::Encoder::new().compress_vec(b"hello").unwrap();
        assert_eq!(
            &decompress(raw.into(), Compression::Snappy).unwrap()[..],
            b"hello"
        );
    }
}
