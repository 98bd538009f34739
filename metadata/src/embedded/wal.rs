//! The embedded store's durability: the write-ahead log (framed, checksummed
//! records of each committed change), its reader that cuts a torn tail, and
//! the snapshot format.

use super::*;

pub(super) struct Writer {
    pub(super) wal: Option<Wal>,
}

/// The append-only log of a persistent store.
pub(super) struct Wal {
    pub(super) dir: PathBuf,
    pub(super) file: File,
    pub(super) len: u64,
    pub(super) next_seq: u64,
    pub(super) records_since_snapshot: u64,
    /// Set when a failed append could not be undone; later writes fail.
    pub(super) poisoned: Option<String>,
}

impl Wal {
    pub(super) fn append(&mut self, payload: &[u8]) -> MetaResult<()> {
        if let Some(reason) = &self.poisoned {
            return Err(MetaError::Io(io::Error::other(format!(
                "log unusable after an earlier failure: {reason}"
            ))));
        }
        let len = u32::try_from(payload.len()).map_err(|_| {
            MetaError::Invalid(format!(
                "log record of {} bytes is too large",
                payload.len()
            ))
        })?;
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        if let Err(e) = self
            .file
            .write_all(&frame)
            .and_then(|()| self.file.sync_data())
        {
            // Cut off whatever part of the record reached the file, so the
            // next record does not follow garbage.
            if let Err(undo) = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data())
            {
                self.poisoned = Some(format!("{e}; truncating the log failed too: {undo}"));
            }
            return Err(e.into());
        }
        self.len += frame.len() as u64;
        self.next_seq += 1;
        self.records_since_snapshot += 1;
        Ok(())
    }

    pub(super) fn snapshot(&mut self, image: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join(SNAPSHOT_TMP_FILE);
        let mut file = File::create(&tmp)?;
        file.write_all(image)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, self.dir.join(SNAPSHOT_FILE))?;
        sync_dir(&self.dir)?;
        // Records up to the snapshot's sequence are skipped on replay, so a
        // crash before this truncation loses nothing.
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.len = 0;
        self.records_since_snapshot = 0;
        debug!(dir = %self.dir.display(), bytes = image.len(), "embedded store snapshot written");
        Ok(())
    }
}

/// Reads every intact record of the log, cutting off a torn tail.
pub(super) fn read_wal(path: &Path) -> MetaResult<Vec<Record>> {
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        match parse_frame(&data[pos..]) {
            Ok((record, frame_len)) => {
                records.push(record);
                pos += frame_len;
            }
            Err(FrameError { reason, frame_end }) => {
                // Appends are fsync'd one at a time, so only the last record
                // can be torn: a bad record followed by more data (other than
                // zeros a crash may leave behind) is real damage.
                let rest = &data[pos..];
                let torn =
                    frame_end.is_none_or(|end| end >= rest.len()) || rest.iter().all(|b| *b == 0);
                if !torn {
                    return Err(MetaError::Corrupt {
                        key: path.display().to_string(),
                        reason: format!("log record at byte {pos}: {reason}"),
                    });
                }
                warn!(
                    path = %path.display(),
                    offset = pos,
                    discarded_bytes = rest.len(),
                    reason,
                    "truncating torn tail of the metadata log"
                );
                let file = OpenOptions::new().write(true).open(path)?;
                file.set_len(pos as u64)?;
                file.sync_all()?;
                break;
            }
        }
    }
    Ok(records)
}

pub(super) struct FrameError {
    pub(super) reason: String,
    /// Where the bad frame ends, when its header could be read.
    pub(super) frame_end: Option<usize>,
}

pub(super) fn parse_frame(data: &[u8]) -> Result<(Record, usize), FrameError> {
    let header = |reason: &str| FrameError {
        reason: reason.to_string(),
        frame_end: None,
    };
    let Some(head) = data.get(..8) else {
        return Err(header("incomplete record header"));
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_RECORD_BYTES {
        return Err(header("record length out of bounds"));
    }
    let frame_end = 8 + len;
    let bad = |reason: String| FrameError {
        reason,
        frame_end: Some(frame_end),
    };
    let Some(payload) = data.get(8..frame_end) else {
        return Err(bad("incomplete record".into()));
    };
    if crc32c::crc32c(payload) != crc {
        return Err(bad("checksum mismatch".into()));
    }
    let record = decode_record(payload).map_err(bad)?;
    Ok((record, frame_end))
}

// ---------------------------------------------------------------------------
// State

/// One committed write as logged.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Record {
    pub(super) seq: u64,
    /// The revision the key changes happened at, 0 when there are none.
    pub(super) revision: Revision,
    pub(super) ops: Vec<LogOp>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum LogOp {
    Put {
        key: String,
        value: Bytes,
        lease: LeaseId,
    },
    Delete {
        key: String,
    },
    LeaseGrant {
        id: LeaseId,
        ttl_secs: i64,
    },
    LeaseRevoke {
        id: LeaseId,
    },
}

impl LogOp {
    pub(super) fn is_kv(&self) -> bool {
        matches!(self, LogOp::Put { .. } | LogOp::Delete { .. })
    }
}

pub(super) const OP_PUT: u8 = 1;
pub(super) const OP_DELETE: u8 = 2;
pub(super) const OP_LEASE_GRANT: u8 = 3;
pub(super) const OP_LEASE_REVOKE: u8 = 4;

pub(super) struct Encoder(Vec<u8>);

impl Encoder {
    pub(super) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.0.extend_from_slice(v);
    }
}

pub(super) struct Decoder<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Decoder<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or("truncated")?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    pub(super) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u64(&mut self) -> Result<u64, String> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(buf))
    }
    pub(super) fn i64(&mut self) -> Result<i64, String> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(buf))
    }
    pub(super) fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = usize::try_from(self.u64()?).map_err(|_| "length out of range".to_string())?;
        self.take(len)
    }
    pub(super) fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "key is not utf-8".to_string())
    }
    pub(super) fn count(&mut self) -> Result<usize, String> {
        // Every counted item takes at least one byte, which bounds the count.
        let n = usize::try_from(self.u64()?).map_err(|_| "count out of range".to_string())?;
        if n > self.data.len() - self.pos {
            return Err("count exceeds the data".into());
        }
        Ok(n)
    }
    pub(super) fn finish(&self) -> Result<(), String> {
        if self.pos == self.data.len() {
            Ok(())
        } else {
            Err("trailing bytes".into())
        }
    }
}

pub(super) fn encode_record(record: &Record) -> Vec<u8> {
    let mut e = Encoder(Vec::new());
    e.u64(record.seq);
    e.i64(record.revision);
    e.u64(record.ops.len() as u64);
    for op in &record.ops {
        match op {
            LogOp::Put { key, value, lease } => {
                e.u8(OP_PUT);
                e.bytes(key.as_bytes());
                e.bytes(value);
                e.i64(*lease);
            }
            LogOp::Delete { key } => {
                e.u8(OP_DELETE);
                e.bytes(key.as_bytes());
            }
            LogOp::LeaseGrant { id, ttl_secs } => {
                e.u8(OP_LEASE_GRANT);
                e.i64(*id);
                e.i64(*ttl_secs);
            }
            LogOp::LeaseRevoke { id } => {
                e.u8(OP_LEASE_REVOKE);
                e.i64(*id);
            }
        }
    }
    e.0
}

pub(super) fn decode_record(payload: &[u8]) -> Result<Record, String> {
    let mut d = Decoder::new(payload);
    let seq = d.u64()?;
    let revision = d.i64()?;
    let n = d.count()?;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let op = match d.u8()? {
            OP_PUT => LogOp::Put {
                key: d.string()?,
                value: Bytes::copy_from_slice(d.bytes()?),
                lease: d.i64()?,
            },
            OP_DELETE => LogOp::Delete { key: d.string()? },
            OP_LEASE_GRANT => LogOp::LeaseGrant {
                id: d.i64()?,
                ttl_secs: d.i64()?,
            },
            OP_LEASE_REVOKE => LogOp::LeaseRevoke { id: d.i64()? },
            other => return Err(format!("unknown operation {other}")),
        };
        ops.push(op);
    }
    d.finish()?;
    if revision < 0 || (revision == 0 && ops.iter().any(LogOp::is_kv)) {
        return Err(format!("bad revision {revision}"));
    }
    Ok(Record { seq, revision, ops })
}

/// `magic | crc32c(body) u32 | body`, body = last log sequence, revision,
/// next lease id, leases, keys.
pub(super) fn encode_snapshot(st: &State, last_seq: u64) -> Vec<u8> {
    let mut e = Encoder(Vec::new());
    e.u64(last_seq);
    e.i64(st.revision);
    e.i64(st.next_lease_id);
    e.u64(st.leases.len() as u64);
    for (id, lease) in &st.leases {
        e.i64(*id);
        e.i64(lease.ttl_secs);
    }
    e.u64(st.kvs.len() as u64);
    for kv in st.kvs.values() {
        e.bytes(kv.key.as_bytes());
        e.bytes(&kv.value);
        e.i64(kv.create_revision);
        e.i64(kv.mod_revision);
        e.i64(kv.version);
        e.i64(kv.lease);
    }
    let body = e.0;
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

pub(super) fn decode_snapshot(data: &[u8], now: Instant) -> Result<(State, u64), String> {
    if data.len() < 12 || &data[..8] != SNAPSHOT_MAGIC {
        return Err("not a snapshot".into());
    }
    let crc = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    let body = &data[12..];
    if crc32c::crc32c(body) != crc {
        return Err("snapshot checksum mismatch".into());
    }
    let mut d = Decoder::new(body);
    let last_seq = d.u64()?;
    let mut st = State::new(d.i64()?);
    st.next_lease_id = d.i64()?;
    for _ in 0..d.count()? {
        let id = d.i64()?;
        let ttl_secs = d.i64()?;
        let deadline = now + Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(0));
        st.leases.insert(
            id,
            Lease {
                ttl_secs,
                deadline,
                keys: BTreeSet::new(),
            },
        );
    }
    for _ in 0..d.count()? {
        let kv = KeyValue {
            key: d.string()?,
            value: Bytes::copy_from_slice(d.bytes()?),
            create_revision: d.i64()?,
            mod_revision: d.i64()?,
            version: d.i64()?,
            lease: d.i64()?,
        };
        if let Some(lease) = st.leases.get_mut(&kv.lease) {
            lease.keys.insert(kv.key.clone());
        }
        st.kvs.insert(kv.key.clone(), kv);
    }
    d.finish()?;
    Ok((st, last_seq))
}
