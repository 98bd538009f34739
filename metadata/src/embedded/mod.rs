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

mod state;
mod wal;

use state::*;
use wal::*;

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
