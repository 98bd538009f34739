//! The embedded metadata store: etcd's semantics (revisions, compare-and-swap
//! transactions, leases, prefix watches) in process, so that a single
//! `sluice serve` runs without an etcd cluster.
//!
//! # Durability
//! [`EmbeddedStore::open`] keeps its state under a directory:
//! - `wal`: an append-only log with one record per committed write (a
//!   revision, a lease grant or a lease revoke), each framed as
//!   `[len u32][crc32c u32][payload]` and fsync'd before the call returns;
//! - `snapshot`: the whole state, written to `snapshot.tmp`, fsync'd and
//!   renamed over the previous one once the log grows past a bound; the log
//!   is then truncated (records the snapshot already covers are skipped by
//!   sequence number, so a crash between the rename and the truncation is
//!   harmless);
//! - `LOCK`: an advisory lock so two processes never share the directory.
//!
//! A torn last record (a crash in the middle of an append) is detected by
//! its checksum and cut off on open; damage anywhere else is reported as
//! [`MetaError::Corrupt`]. Leases come back with their full TTL on reopen,
//! as they do when etcd elects a new leader.
//!
//! # Concurrency
//! Writers are serialized by one async mutex; each plans its change against
//! the current state, appends it to the log, then applies it under a short
//! exclusive lock, so readers never wait for an fsync. Nothing between
//! planning and applying awaits, so dropping a write's future never leaves
//! the log and the memory state apart.
//!
//! Time comes from `tokio::time`, so lease expiry is testable with a paused
//! clock.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::store::{
    CmpOp, CmpTarget, Compare, KeyValue, LeaseId, MetaError, MetaResult, MetaStore, RangeResponse,
    Revision, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchEvent, WatchStream,
};

/// The largest lease TTL etcd accepts, in seconds.
const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;
/// Upper bound of one encoded log record; a larger transaction is refused.
const MAX_RECORD_BYTES: usize = 64 << 20;

const WAL_FILE: &str = "wal";
const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_TMP_FILE: &str = "snapshot.tmp";
const LOCK_FILE: &str = "LOCK";
const SNAPSHOT_MAGIC: &[u8; 8] = b"SLCSNAP1";

/// Tunables of the embedded store. Every structure it keeps in memory has
/// its bound here.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Watch events retained for replay; a watch from an older revision
    /// fails with [`MetaError::Compacted`].
    pub history_max_events: usize,
    /// Event batches buffered per watcher; a watcher that falls this far
    /// behind gets its stream ended with an error.
    pub watch_channel_capacity: usize,
    /// Live watchers at once.
    pub watchers_max: usize,
    /// Live leases at once.
    pub leases_max: usize,
    /// How often expired leases are looked for.
    pub lease_check_interval: Duration,
    /// Operations per transaction branch (etcd's `--max-txn-ops`).
    pub max_txn_ops: usize,
    /// Bytes of keys and values in one request (etcd's `--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Log records after which a snapshot is taken.
    pub snapshot_after_records: u64,
    /// Log bytes after which a snapshot is taken.
    pub snapshot_after_log_bytes: u64,
    /// How long `open` waits for another owner of the directory (say, a
    /// store being dropped in this process) to release it.
    pub lock_wait: Duration,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            history_max_events: 100_000,
            watch_channel_capacity: 1024,
            watchers_max: 10_000,
            leases_max: 100_000,
            lease_check_interval: Duration::from_millis(100),
            max_txn_ops: 128,
            max_request_bytes: 1536 * 1024,
            snapshot_after_records: 10_000,
            snapshot_after_log_bytes: 64 << 20,
            lock_wait: Duration::from_secs(2),
        }
    }
}

/// An in-process [`MetaStore`] with etcd semantics, in memory or persisted
/// under a directory. Dropping it stops its lease reaper and releases the
/// directory; every acknowledged write is already on disk.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.read_state();
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.shared.dir)
            .field("revision", &st.revision)
            .field("keys", &st.kvs.len())
            .field("leases", &st.leases.len())
            .finish()
    }
}

impl EmbeddedStore {
    /// A store that lives only in memory (tests, throwaway nodes).
    pub fn in_memory() -> Self {
        Self::in_memory_with(EmbeddedOptions::default())
    }

    /// An in-memory store with the given options.
    pub fn in_memory_with(options: EmbeddedOptions) -> Self {
        Self::from_parts(options, State::new(1), None, None, None)
    }

    /// Open (or create) a persistent store under `dir`.
    pub fn open(dir: impl AsRef<Path>) -> MetaResult<Self> {
        Self::open_with(dir, EmbeddedOptions::default())
    }

    /// Open (or create) a persistent store under `dir` with the given options.
    pub fn open_with(dir: impl AsRef<Path>, options: EmbeddedOptions) -> MetaResult<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let lock = lock_dir(&dir, options.lock_wait)?;
        let now = Instant::now();

        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let (mut state, last_snapshot_seq) = match fs::read(&snapshot_path) {
            Ok(bytes) => {
                let (mut state, last_seq) =
                    decode_snapshot(&bytes, now).map_err(|reason| MetaError::Corrupt {
                        key: snapshot_path.display().to_string(),
                        reason,
                    })?;
                // Revisions after the snapshot are replayed from the log, so
                // they are watchable again; older ones are gone.
                state.history_start = state.revision + 1;
                (state, last_seq)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (State::new(1), 0),
            Err(e) => return Err(e.into()),
        };

        let wal_path = dir.join(WAL_FILE);
        let records = read_wal(&wal_path)?;
        let mut next_seq = last_snapshot_seq + 1;
        let mut records_after_snapshot = 0;
        for record in &records {
            if record.seq < next_seq {
                continue; // already in the snapshot
            }
            if record.seq != next_seq {
                return Err(MetaError::Corrupt {
                    key: wal_path.display().to_string(),
                    reason: format!(
                        "log record {} follows {}: records are missing",
                        record.seq,
                        next_seq - 1
                    ),
                });
            }
            let events = state.apply(record, now);
            state.push_history(record.revision, events, options.history_max_events);
            next_seq += 1;
            records_after_snapshot += 1;
        }

        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&wal_path)?;
        let len = file.metadata()?.len();
        sync_dir(&dir)?;
        debug!(dir = %dir.display(), revision = state.revision, records = records_after_snapshot, "embedded store opened");
        let wal = Wal {
            dir: dir.clone(),
            file,
            len,
            next_seq,
            records_since_snapshot: records_after_snapshot,
            poisoned: None,
        };
        Ok(Self::from_parts(
            options,
            state,
            Some(wal),
            Some(dir),
            Some(lock),
        ))
    }

    fn from_parts(
        options: EmbeddedOptions,
        state: State,
        wal: Option<Wal>,
        dir: Option<PathBuf>,
        lock: Option<File>,
    ) -> Self {
        let shared = Arc::new(Shared {
            options,
            dir,
            state: RwLock::new(state),
            writer: tokio::sync::Mutex::new(Writer { wal }),
            reaper: Mutex::new(None),
            _lock: lock,
        });
        Self { shared }
    }

    /// The current store revision.
    pub fn revision(&self) -> Revision {
        self.shared.read_state().revision
    }

    /// The oldest revision a watch can still start from.
    pub fn oldest_watchable_revision(&self) -> Revision {
        self.shared.read_state().history_start
    }

    /// Revoke every lease whose TTL has run out now, instead of waiting for
    /// the background reaper (which runs every `lease_check_interval`).
    pub async fn expire_leases(&self) -> MetaResult<()> {
        self.shared.expire_leases().await
    }
}

/// Takes the directory's advisory lock, waiting a little for an owner that
/// is shutting down in this process.
fn lock_dir(dir: &Path, wait: Duration) -> MetaResult<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if started.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(MetaError::Io(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is in use by another embedded store", dir.display()),
                )))
            }
            Err(fs::TryLockError::Error(e)) => return Err(e.into()),
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Runs blocking file I/O: on a multi-threaded runtime the worker hands its
/// other tasks away first; elsewhere it simply runs.
fn blocking_io<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

struct Shared {
    options: EmbeddedOptions,
    dir: Option<PathBuf>,
    state: RwLock<State>,
    /// Serializes writers and owns the log.
    writer: tokio::sync::Mutex<Writer>,
    reaper: Mutex<Option<JoinHandle<()>>>,
    /// Held for the directory lock.
    _lock: Option<File>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(handle) = lock_mutex(&self.reaper).take() {
            handle.abort();
        }
    }
}

fn lock_mutex<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a write intends: the log operations and what to answer.
struct Planned<R> {
    ops: Vec<LogOp>,
    output: R,
}

impl Shared {
    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts (or restarts, if its runtime went away) the lease reaper.
    fn ensure_reaper(self: &Arc<Self>) {
        let mut reaper = lock_mutex(&self.reaper);
        if reaper.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        let interval = self
            .options
            .lease_check_interval
            .max(Duration::from_millis(1));
        *reaper = Some(runtime.spawn(reap_leases(weak, interval)));
    }

    /// Plans a write against the current state, logs it and applies it.
    async fn write<R>(&self, plan: impl FnOnce(&State) -> MetaResult<Planned<R>>) -> MetaResult<R> {
        let mut writer = self.writer.lock().await;
        // From here on nothing awaits: the write either happens entirely or
        // not at all, even if the caller stops polling.
        let (planned, revision) = {
            let st = self.read_state();
            let planned = plan(&st)?;
            let writes_keys = planned.ops.iter().any(LogOp::is_kv);
            (planned, if writes_keys { st.revision + 1 } else { 0 })
        };
        if planned.ops.is_empty() {
            return Ok(planned.output);
        }
        let mut record = Record {
            seq: 0,
            revision,
            ops: planned.ops,
        };
        if let Some(wal) = writer.wal.as_mut() {
            record.seq = wal.next_seq;
            let payload = encode_record(&record);
            if payload.len() > MAX_RECORD_BYTES {
                return Err(MetaError::Invalid(format!(
                    "write of {} bytes exceeds the log record limit of {MAX_RECORD_BYTES}",
                    payload.len()
                )));
            }
            blocking_io(|| wal.append(&payload))?;
        }
        {
            let mut st = self.write_state();
            let events = st.apply(&record, Instant::now());
            st.publish(record.revision, events, self.options.history_max_events);
        }
        if let Some(wal) = writer.wal.as_mut() {
            if wal.records_since_snapshot >= self.options.snapshot_after_records
                || wal.len >= self.options.snapshot_after_log_bytes
            {
                let image = encode_snapshot(&self.read_state(), wal.next_seq - 1);
                if let Err(e) = blocking_io(|| wal.snapshot(&image)) {
                    // The write itself is durable; try again after more records.
                    warn!(error = %e, "embedded store snapshot failed");
                    wal.records_since_snapshot = 0;
                }
            }
        }
        Ok(planned.output)
    }

    /// Revokes every lease past its deadline, one write per lease as etcd does.
    async fn expire_leases(&self) -> MetaResult<()> {
        let now = Instant::now();
        let expired: Vec<LeaseId> = {
            let st = self.read_state();
            st.leases
                .iter()
                .filter(|(_, l)| l.deadline <= now)
                .map(|(id, _)| *id)
                .collect()
        };
        for id in expired {
            self.write(|st| {
                // A keep-alive cannot revive a lease past its deadline, so the
                // lease is either still expired or already gone.
                let ops = match st.leases.get(&id) {
                    Some(lease) if lease.deadline <= now => revoke_ops(id, lease),
                    _ => Vec::new(),
                };
                Ok(Planned { ops, output: () })
            })
            .await?;
            debug!(lease = id, "lease expired");
        }
        Ok(())
    }

    fn check_key(&self, key: &str) -> MetaResult<()> {
        if key.is_empty() {
            return Err(MetaError::Invalid("key is not provided".into()));
        }
        Ok(())
    }
}

async fn reap_leases(shared: Weak<Shared>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(e) = shared.expire_leases().await {
            warn!(error = %e, "lease expiry failed");
        }
    }
}

fn revoke_ops(id: LeaseId, lease: &Lease) -> Vec<LogOp> {
    let mut ops: Vec<LogOp> = lease
        .keys
        .iter()
        .map(|key| LogOp::Delete { key: key.clone() })
        .collect();
    ops.push(LogOp::LeaseRevoke { id });
    ops
}

struct Writer {
    wal: Option<Wal>,
}

/// The append-only log of a persistent store.
struct Wal {
    dir: PathBuf,
    file: File,
    len: u64,
    next_seq: u64,
    records_since_snapshot: u64,
    /// Set when a failed append could not be undone; later writes fail.
    poisoned: Option<String>,
}

impl Wal {
    fn append(&mut self, payload: &[u8]) -> MetaResult<()> {
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

    fn snapshot(&mut self, image: &[u8]) -> io::Result<()> {
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
fn read_wal(path: &Path) -> MetaResult<Vec<Record>> {
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

struct FrameError {
    reason: String,
    /// Where the bad frame ends, when its header could be read.
    frame_end: Option<usize>,
}

fn parse_frame(data: &[u8]) -> Result<(Record, usize), FrameError> {
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

struct Lease {
    ttl_secs: i64,
    deadline: Instant,
    keys: BTreeSet<String>,
}

struct HistoryEntry {
    revision: Revision,
    events: Vec<WatchEvent>,
}

struct Watcher {
    prefix: String,
    start_revision: Revision,
    tx: mpsc::Sender<Vec<WatchEvent>>,
    lagged: Arc<AtomicBool>,
}

/// The store's contents; changed only through [`State::apply`].
struct State {
    kvs: BTreeMap<String, KeyValue>,
    revision: Revision,
    leases: HashMap<LeaseId, Lease>,
    next_lease_id: LeaseId,
    history: VecDeque<HistoryEntry>,
    history_events: usize,
    /// The oldest revision a watch may start from.
    history_start: Revision,
    watchers: Vec<Watcher>,
}

impl State {
    fn new(revision: Revision) -> Self {
        Self {
            kvs: BTreeMap::new(),
            revision,
            leases: HashMap::new(),
            next_lease_id: 1,
            history: VecDeque::new(),
            history_events: 0,
            history_start: 1,
            watchers: Vec::new(),
        }
    }

    fn prefix_range<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a KeyValue)> + 'a {
        self.kvs
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    fn compare(&self, cmp: &Compare) -> bool {
        let kv = self.kvs.get(&cmp.key);
        let ordering = match (&cmp.target, kv) {
            // etcd: a value compare against a missing key is always false.
            (CmpTarget::Value(_), None) => return false,
            (CmpTarget::Value(v), Some(kv)) => kv.value.as_ref().cmp(v.as_ref()),
            (CmpTarget::ModRevision(r), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(r),
            (CmpTarget::CreateRevision(r), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(r),
            (CmpTarget::Version(v), kv) => kv.map_or(0, |kv| kv.version).cmp(v),
        };
        match cmp.op {
            CmpOp::Equal => ordering.is_eq(),
            CmpOp::NotEqual => ordering.is_ne(),
            CmpOp::Less => ordering.is_lt(),
            CmpOp::Greater => ordering.is_gt(),
        }
    }

    /// Applies one logged record (live or on replay) and returns its watch events.
    fn apply(&mut self, record: &Record, now: Instant) -> Vec<WatchEvent> {
        let rev = record.revision;
        let mut events = Vec::new();
        for op in &record.ops {
            match op {
                LogOp::Put { key, value, lease } => {
                    let (create_revision, version, old_lease) = match self.kvs.get(key) {
                        Some(kv) => (kv.create_revision, kv.version + 1, kv.lease),
                        None => (rev, 1, 0),
                    };
                    if old_lease != 0 && old_lease != *lease {
                        if let Some(l) = self.leases.get_mut(&old_lease) {
                            l.keys.remove(key);
                        }
                    }
                    let lease = match self.leases.get_mut(lease) {
                        Some(l) => {
                            l.keys.insert(key.clone());
                            *lease
                        }
                        None => 0,
                    };
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: rev,
                        version,
                        lease,
                    };
                    self.kvs.insert(key.clone(), kv.clone());
                    events.push(WatchEvent::Put(kv));
                }
                LogOp::Delete { key } => {
                    if let Some(old) = self.kvs.remove(key) {
                        if let Some(l) = self.leases.get_mut(&old.lease) {
                            l.keys.remove(key);
                        }
                        events.push(WatchEvent::Delete(KeyValue {
                            key: key.clone(),
                            value: Bytes::new(),
                            create_revision: 0,
                            mod_revision: rev,
                            version: 0,
                            lease: 0,
                        }));
                    }
                }
                LogOp::LeaseGrant { id, ttl_secs } => {
                    let deadline = now + Duration::from_secs(u64::try_from(*ttl_secs).unwrap_or(0));
                    self.leases.insert(
                        *id,
                        Lease {
                            ttl_secs: *ttl_secs,
                            deadline,
                            keys: BTreeSet::new(),
                        },
                    );
                    self.next_lease_id = self.next_lease_id.max(id + 1);
                }
                LogOp::LeaseRevoke { id } => {
                    self.leases.remove(id);
                }
            }
        }
        if rev > 0 {
            debug_assert!(rev > self.revision, "revisions increase");
            self.revision = rev;
        }
        events
    }

    fn push_history(&mut self, revision: Revision, events: Vec<WatchEvent>, max_events: usize) {
        if events.is_empty() {
            return;
        }
        self.history_events += events.len();
        self.history.push_back(HistoryEntry { revision, events });
        while self.history_events > max_events {
            let Some(old) = self.history.pop_front() else {
                break;
            };
            self.history_events -= old.events.len();
            self.history_start = old.revision + 1;
        }
    }

    /// Records a revision's events and hands them to the watchers.
    fn publish(&mut self, revision: Revision, events: Vec<WatchEvent>, max_events: usize) {
        if events.is_empty() {
            return;
        }
        self.watchers.retain(|w| {
            if revision < w.start_revision {
                return !w.tx.is_closed();
            }
            let batch: Vec<WatchEvent> = events
                .iter()
                .filter(|e| e.key().starts_with(&w.prefix))
                .cloned()
                .collect();
            if batch.is_empty() {
                return !w.tx.is_closed();
            }
            match w.tx.try_send(batch) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    w.lagged.store(true, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        self.push_history(revision, events, max_events);
    }
}

/// A transaction's view: the state plus the changes of its earlier operations.
struct Overlay<'a> {
    base: &'a State,
    changes: BTreeMap<String, Option<KeyValue>>,
}

impl<'a> Overlay<'a> {
    fn new(base: &'a State) -> Self {
        Self {
            base,
            changes: BTreeMap::new(),
        }
    }

    fn get(&self, key: &str) -> Option<KeyValue> {
        match self.changes.get(key) {
            Some(change) => change.clone(),
            None => self.base.kvs.get(key).cloned(),
        }
    }

    fn range(&self, prefix: &str) -> Vec<KeyValue> {
        let mut out: BTreeMap<String, KeyValue> = self
            .base
            .prefix_range(prefix)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let changed = self
            .changes
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix));
        for (key, change) in changed {
            match change {
                Some(kv) => out.insert(key.clone(), kv.clone()),
                None => out.remove(key),
            };
        }
        out.into_values().collect()
    }

    fn put(&mut self, key: &str, value: &Bytes, lease: LeaseId, rev: Revision) {
        let (create_revision, version) = match self.get(key) {
            Some(kv) => (kv.create_revision, kv.version + 1),
            None => (rev, 1),
        };
        let kv = KeyValue {
            key: key.to_string(),
            value: value.clone(),
            create_revision,
            mod_revision: rev,
            version,
            lease,
        };
        self.changes.insert(key.to_string(), Some(kv));
    }

    fn delete(&mut self, key: &str) -> bool {
        let existed = self.get(key).is_some();
        if existed {
            self.changes.insert(key.to_string(), None);
        }
        existed
    }
}

/// Refuses what etcd refuses: empty keys, too many operations, oversized
/// requests, and a branch that writes one key twice.
fn validate_txn(txn: &Txn, options: &EmbeddedOptions) -> MetaResult<()> {
    if txn.op_count() > options.max_txn_ops {
        return Err(MetaError::Invalid(format!(
            "too many operations in txn request ({} > {})",
            txn.op_count(),
            options.max_txn_ops
        )));
    }
    let mut bytes = 0usize;
    for cmp in &txn.compares {
        if cmp.key.is_empty() {
            return Err(MetaError::Invalid("key is not provided".into()));
        }
        bytes += cmp.key.len();
        if let CmpTarget::Value(v) = &cmp.target {
            bytes += v.len();
        }
    }
    for branch in [&txn.success, &txn.failure] {
        let mut puts = BTreeSet::new();
        let mut deletes = Vec::new();
        for op in branch {
            match op {
                TxnOp::Put { key, value, .. } => {
                    bytes += key.len() + value.len();
                    if key.is_empty() {
                        return Err(MetaError::Invalid("key is not provided".into()));
                    }
                    if !puts.insert(key.as_str()) {
                        return Err(MetaError::Invalid(
                            "duplicate key given in txn request".into(),
                        ));
                    }
                }
                TxnOp::Delete { key } | TxnOp::Get { key } => {
                    bytes += key.len();
                    if key.is_empty() {
                        return Err(MetaError::Invalid("key is not provided".into()));
                    }
                    if matches!(op, TxnOp::Delete { .. }) {
                        deletes.push((key.as_str(), false));
                    }
                }
                TxnOp::DeletePrefix { prefix } => {
                    bytes += prefix.len();
                    deletes.push((prefix.as_str(), true));
                }
                TxnOp::GetPrefix { prefix } => bytes += prefix.len(),
            }
        }
        for put in &puts {
            let overlaps = deletes.iter().any(|(d, prefix)| {
                if *prefix {
                    put.starts_with(d)
                } else {
                    put == d
                }
            });
            if overlaps {
                return Err(MetaError::Invalid(
                    "duplicate key given in txn request".into(),
                ));
            }
        }
    }
    if bytes > options.max_request_bytes {
        return Err(MetaError::Invalid(format!(
            "request is too large ({bytes} > {} bytes)",
            options.max_request_bytes
        )));
    }
    Ok(())
}

fn plan_txn(st: &State, txn: &Txn) -> MetaResult<Planned<TxnResponse>> {
    let succeeded = txn.compares.iter().all(|c| st.compare(c));
    let branch = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    let rev = st.revision + 1;
    let mut view = Overlay::new(st);
    let mut ops = Vec::new();
    let mut responses = Vec::with_capacity(branch.len());
    for op in branch {
        match op {
            TxnOp::Put { key, value, lease } => {
                let lease = lease.unwrap_or(0);
                if lease != 0 && !st.leases.contains_key(&lease) {
                    return Err(MetaError::LeaseNotFound(lease));
                }
                view.put(key, value, lease, rev);
                ops.push(LogOp::Put {
                    key: key.clone(),
                    value: value.clone(),
                    lease,
                });
                responses.push(TxnOpResponse::Put);
            }
            TxnOp::Delete { key } => {
                let existed = view.delete(key);
                if existed {
                    ops.push(LogOp::Delete { key: key.clone() });
                }
                responses.push(TxnOpResponse::Delete {
                    deleted: i64::from(existed),
                });
            }
            TxnOp::DeletePrefix { prefix } => {
                let keys: Vec<String> = view.range(prefix).into_iter().map(|kv| kv.key).collect();
                for key in &keys {
                    view.delete(key);
                }
                let deleted = keys.len() as i64;
                ops.extend(keys.into_iter().map(|key| LogOp::Delete { key }));
                responses.push(TxnOpResponse::Delete { deleted });
            }
            TxnOp::Get { key } => {
                responses.push(TxnOpResponse::Get(view.get(key).into_iter().collect()))
            }
            TxnOp::GetPrefix { prefix } => responses.push(TxnOpResponse::Get(view.range(prefix))),
        }
    }
    let revision = if ops.is_empty() { st.revision } else { rev };
    Ok(Planned {
        ops,
        output: TxnResponse {
            succeeded,
            responses,
            revision,
        },
    })
}

#[async_trait]
impl MetaStore for EmbeddedStore {
    async fn get(&self, key: &str) -> MetaResult<Option<KeyValue>> {
        self.shared.ensure_reaper();
        self.shared.check_key(key)?;
        Ok(self.shared.read_state().kvs.get(key).cloned())
    }

    async fn range(&self, prefix: &str) -> MetaResult<RangeResponse> {
        self.shared.ensure_reaper();
        let st = self.shared.read_state();
        let kvs = st.prefix_range(prefix).map(|(_, kv)| kv.clone()).collect();
        Ok(RangeResponse {
            kvs,
            revision: st.revision,
        })
    }

    async fn put(&self, key: &str, value: Bytes, lease: Option<LeaseId>) -> MetaResult<Revision> {
        let txn = Txn::new().and_then([TxnOp::Put {
            key: key.to_string(),
            value,
            lease,
        }]);
        Ok(self.txn(txn).await?.revision)
    }

    async fn delete(&self, key: &str) -> MetaResult<bool> {
        let response = self.txn(Txn::new().and_then([TxnOp::delete(key)])).await?;
        Ok(
            matches!(response.responses.first(), Some(TxnOpResponse::Delete { deleted }) if *deleted > 0),
        )
    }

    async fn txn(&self, txn: Txn) -> MetaResult<TxnResponse> {
        self.shared.ensure_reaper();
        validate_txn(&txn, &self.shared.options)?;
        self.shared.write(|st| plan_txn(st, &txn)).await
    }

    async fn lease_grant(&self, ttl_secs: i64) -> MetaResult<LeaseId> {
        self.shared.ensure_reaper();
        if !(1..=MAX_LEASE_TTL_SECS).contains(&ttl_secs) {
            return Err(MetaError::Invalid(format!(
                "lease ttl {ttl_secs} out of range"
            )));
        }
        let leases_max = self.shared.options.leases_max;
        self.shared
            .write(|st| {
                if st.leases.len() >= leases_max {
                    return Err(MetaError::Unavailable(format!(
                        "too many leases ({leases_max})"
                    )));
                }
                let id = st.next_lease_id;
                Ok(Planned {
                    ops: vec![LogOp::LeaseGrant { id, ttl_secs }],
                    output: id,
                })
            })
            .await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> MetaResult<i64> {
        self.shared.ensure_reaper();
        let now = Instant::now();
        let mut st = self.shared.write_state();
        match st.leases.get_mut(&lease) {
            // Past its deadline a lease is as good as gone, even before the
            // reaper gets to it (etcd answers the same).
            Some(l) if l.deadline > now => {
                l.deadline = now + Duration::from_secs(u64::try_from(l.ttl_secs).unwrap_or(0));
                Ok(l.ttl_secs)
            }
            _ => Err(MetaError::LeaseNotFound(lease)),
        }
    }

    async fn lease_revoke(&self, lease: LeaseId) -> MetaResult<()> {
        self.shared.ensure_reaper();
        self.shared
            .write(|st| match st.leases.get(&lease) {
                Some(l) => Ok(Planned {
                    ops: revoke_ops(lease, l),
                    output: (),
                }),
                None => Err(MetaError::LeaseNotFound(lease)),
            })
            .await
    }

    async fn watch_prefix(
        &self,
        prefix: &str,
        start_revision: Revision,
    ) -> MetaResult<WatchStream> {
        self.shared.ensure_reaper();
        let options = &self.shared.options;
        let mut st = self.shared.write_state();
        let start = if start_revision <= 0 {
            st.revision + 1
        } else {
            start_revision
        };
        if start < st.history_start {
            return Err(MetaError::Compacted {
                requested: start,
                oldest: st.history_start,
            });
        }
        st.watchers.retain(|w| !w.tx.is_closed());
        if st.watchers.len() >= options.watchers_max {
            return Err(MetaError::Unavailable(format!(
                "too many watchers ({})",
                options.watchers_max
            )));
        }
        let first = st.history.partition_point(|e| e.revision < start);
        let replay: Vec<MetaResult<Vec<WatchEvent>>> = st
            .history
            .range(first..)
            .filter_map(|entry| {
                let batch: Vec<WatchEvent> = entry
                    .events
                    .iter()
                    .filter(|e| e.key().starts_with(prefix))
                    .cloned()
                    .collect();
                (!batch.is_empty()).then_some(Ok(batch))
            })
            .collect();
        let (tx, rx) = mpsc::channel(options.watch_channel_capacity.max(1));
        let lagged = Arc::new(AtomicBool::new(false));
        st.watchers.push(Watcher {
            prefix: prefix.to_string(),
            start_revision: start,
            tx,
            lagged: lagged.clone(),
        });
        drop(st);

        let live = futures::stream::unfold(Some((rx, lagged)), |live| async move {
            let (mut rx, lagged) = live?;
            match rx.recv().await {
                Some(batch) => Some((Ok(batch), Some((rx, lagged)))),
                None if lagged.load(Ordering::Acquire) => Some((
                    Err(MetaError::Unavailable(
                        "watcher fell behind; re-read and watch again".into(),
                    )),
                    None,
                )),
                None => Some((
                    Err(MetaError::Unavailable("embedded store closed".into())),
                    None,
                )),
            }
        });
        Ok(futures::stream::iter(replay).chain(live).boxed())
    }
}

// ---------------------------------------------------------------------------
// Encoding of log records and snapshots

/// One committed write as logged.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    seq: u64,
    /// The revision the key changes happened at, 0 when there are none.
    revision: Revision,
    ops: Vec<LogOp>,
}

#[derive(Debug, Clone, PartialEq)]
enum LogOp {
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
    fn is_kv(&self) -> bool {
        matches!(self, LogOp::Put { .. } | LogOp::Delete { .. })
    }
}

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_LEASE_GRANT: u8 = 3;
const OP_LEASE_REVOKE: u8 = 4;

struct Encoder(Vec<u8>);

impl Encoder {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.0.extend_from_slice(v);
    }
}

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or("truncated")?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(buf))
    }
    fn i64(&mut self) -> Result<i64, String> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(buf))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = usize::try_from(self.u64()?).map_err(|_| "length out of range".to_string())?;
        self.take(len)
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "key is not utf-8".to_string())
    }
    fn count(&mut self) -> Result<usize, String> {
        // Every counted item takes at least one byte, which bounds the count.
        let n = usize::try_from(self.u64()?).map_err(|_| "count out of range".to_string())?;
        if n > self.data.len() - self.pos {
            return Err("count exceeds the data".into());
        }
        Ok(n)
    }
    fn finish(&self) -> Result<(), String> {
        if self.pos == self.data.len() {
            Ok(())
        } else {
            Err("trailing bytes".into())
        }
    }
}

fn encode_record(record: &Record) -> Vec<u8> {
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

fn decode_record(payload: &[u8]) -> Result<Record, String> {
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
fn encode_snapshot(st: &State, last_seq: u64) -> Vec<u8> {
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

fn decode_snapshot(data: &[u8], now: Instant) -> Result<(State, u64), String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn record(seq: u64, revision: Revision, ops: Vec<LogOp>) -> Record {
        Record { seq, revision, ops }
    }

    #[test]
    fn record_round_trip() {
        let r = record(
            7,
            42,
            vec![
                LogOp::Put {
                    key: "a".into(),
                    value: Bytes::from_static(b"v"),
                    lease: 3,
                },
                LogOp::Delete { key: "b".into() },
                LogOp::LeaseGrant {
                    id: 3,
                    ttl_secs: 10,
                },
                LogOp::LeaseRevoke { id: 3 },
            ],
        );
        assert_eq!(decode_record(&encode_record(&r)), Ok(r));
        assert!(decode_record(&[1, 2, 3]).is_err());
    }

    #[tokio::test]
    async fn reopen_restores_keys_revision_and_leases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (revision, lease) = {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            store
                .put("k1", Bytes::from_static(b"one"), None)
                .await
                .expect("put");
            let lease = store.lease_grant(60).await.expect("grant");
            store
                .put("k2", Bytes::from_static(b"two"), Some(lease))
                .await
                .expect("put");
            store
                .put("k1", Bytes::from_static(b"uno"), None)
                .await
                .expect("put");
            assert!(store.delete("k2").await.expect("delete"));
            store
                .put("k2", Bytes::from_static(b"dos"), Some(lease))
                .await
                .expect("put");
            (store.revision(), lease)
        };
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(store.revision(), revision);
        let k1 = store.get("k1").await.expect("get").expect("k1");
        assert_eq!(
            (k1.value.as_ref(), k1.version, k1.create_revision),
            (&b"uno"[..], 2, 2)
        );
        let k2 = store.get("k2").await.expect("get").expect("k2");
        assert_eq!(k2.lease, lease);
        // The lease survived with its keys attached.
        assert_eq!(store.lease_keep_alive(lease).await.expect("keep alive"), 60);
        store.lease_revoke(lease).await.expect("revoke");
        assert_eq!(store.get("k2").await.expect("get"), None);
        // New leases never reuse an old id.
        assert!(store.lease_grant(5).await.expect("grant") > lease);
    }

    #[tokio::test]
    async fn snapshot_truncates_log_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = EmbeddedOptions {
            snapshot_after_records: 10,
            ..EmbeddedOptions::default()
        };
        let revision = {
            let store = EmbeddedStore::open_with(dir.path(), options.clone()).expect("open");
            for i in 0..25 {
                store
                    .put(&format!("key/{i:02}"), Bytes::from(format!("v{i}")), None)
                    .await
                    .expect("put");
            }
            store.revision()
        };
        assert!(dir.path().join(SNAPSHOT_FILE).exists());
        let wal_len = fs::metadata(dir.path().join(WAL_FILE)).expect("wal").len();
        assert!(
            wal_len < 400,
            "log was truncated after the snapshot ({wal_len} bytes)"
        );
        let store = EmbeddedStore::open_with(dir.path(), options).expect("reopen");
        assert_eq!(store.revision(), revision);
        let range = store.range("key/").await.expect("range");
        assert_eq!(range.kvs.len(), 25);
        assert_eq!(range.kvs[24].value.as_ref(), b"v24");
        // Revisions after the snapshot are watchable; older ones are gone.
        let oldest = store.oldest_watchable_revision();
        assert!(oldest > 1 && oldest <= revision);
        assert!(matches!(
            store.watch_prefix("key/", 1).await,
            Err(MetaError::Compacted { .. })
        ));
        let mut watch = store.watch_prefix("key/", oldest).await.expect("watch");
        let first = watch.next().await.expect("event").expect("ok");
        assert_eq!(first[0].key(), "key/20");
    }

    #[tokio::test]
    async fn torn_tail_is_truncated_and_mid_log_damage_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            store
                .put("a", Bytes::from_static(b"1"), None)
                .await
                .expect("put");
            store
                .put("b", Bytes::from_static(b"2"), None)
                .await
                .expect("put");
        }
        let wal = dir.path().join(WAL_FILE);
        let intact = fs::read(&wal).expect("read wal");
        // A torn append: half a record after the intact ones.
        let mut torn = intact.clone();
        torn.extend_from_slice(&intact[..intact.len() / 2 - 3]);
        fs::write(&wal, &torn).expect("write");
        {
            let store = EmbeddedStore::open(dir.path()).expect("open with torn tail");
            assert_eq!(store.revision(), 3);
            assert_eq!(fs::metadata(&wal).expect("wal").len(), intact.len() as u64);
            store
                .put("c", Bytes::from_static(b"3"), None)
                .await
                .expect("put after repair");
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(store.range("").await.expect("range").kvs.len(), 3);
        drop(store);

        // A flipped byte in the first record, with intact records after it.
        let mut damaged = fs::read(&wal).expect("read wal");
        damaged[10] ^= 0xff;
        fs::write(&wal, &damaged).expect("write");
        assert!(matches!(
            EmbeddedStore::open(dir.path()),
            Err(MetaError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _store = EmbeddedStore::open(dir.path()).expect("open");
        let options = EmbeddedOptions {
            lock_wait: Duration::from_millis(50),
            ..EmbeddedOptions::default()
        };
        assert!(matches!(
            EmbeddedStore::open_with(dir.path(), options),
            Err(MetaError::Io(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn lease_expiry_follows_the_tokio_clock() {
        let store = EmbeddedStore::in_memory();
        let lease = store.lease_grant(10).await.expect("grant");
        store
            .put("owned", Bytes::from_static(b"x"), Some(lease))
            .await
            .expect("put");
        tokio::time::advance(Duration::from_secs(9)).await;
        store.expire_leases().await.expect("expire");
        assert!(store.get("owned").await.expect("get").is_some());
        assert_eq!(store.lease_keep_alive(lease).await.expect("keep alive"), 10);
        tokio::time::advance(Duration::from_secs(10)).await;
        store.expire_leases().await.expect("expire");
        assert_eq!(store.get("owned").await.expect("get"), None);
        assert!(matches!(
            store.lease_keep_alive(lease).await,
            Err(MetaError::LeaseNotFound(_))
        ));
    }

    #[tokio::test]
    async fn bounded_history_reports_compaction() {
        let store = EmbeddedStore::in_memory_with(EmbeddedOptions {
            history_max_events: 5,
            ..Default::default()
        });
        for i in 0..10 {
            store
                .put(&format!("h/{i}"), Bytes::from_static(b"v"), None)
                .await
                .expect("put");
        }
        let oldest = store.oldest_watchable_revision();
        assert_eq!(oldest, store.revision() - 4);
        match store.watch_prefix("h/", oldest - 1).await {
            Err(MetaError::Compacted {
                requested,
                oldest: o,
            }) => assert_eq!((requested, o), (oldest - 1, oldest)),
            other => panic!("expected compacted, got {:?}", other.map(|_| ())),
        }
        let mut watch = store.watch_prefix("h/", oldest).await.expect("watch");
        let mut seen = 0;
        while seen < 5 {
            seen += watch.next().await.expect("event").expect("ok").len();
        }
    }

    #[tokio::test]
    async fn slow_watcher_is_cut_off_with_an_error() {
        let store = EmbeddedStore::in_memory_with(EmbeddedOptions {
            watch_channel_capacity: 4,
            ..Default::default()
        });
        let mut watch = store.watch_prefix("slow/", 0).await.expect("watch");
        for i in 0..10 {
            store
                .put(&format!("slow/{i}"), Bytes::from_static(b"v"), None)
                .await
                .expect("put");
        }
        let mut batches = 0;
        loop {
            match watch.next().await {
                Some(Ok(_)) => batches += 1,
                Some(Err(MetaError::Unavailable(_))) => break,
                other => panic!("unexpected {:?}", other.map(|r| r.map(|_| ()))),
            }
        }
        assert_eq!(batches, 4);
        assert!(watch.next().await.is_none());
    }
}
