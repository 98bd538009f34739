//! The embedded store's state in memory: keys with their revisions, leases,
//! watchers and history, and the planning of a transaction against it.

use super::*;

/// What a write intends: the log operations and what to answer.
pub(super) struct Planned<R> {
    pub(super) ops: Vec<LogOp>,
    pub(super) output: R,
}

pub(super) struct Lease {
    pub(super) ttl_secs: i64,
    pub(super) deadline: Instant,
    pub(super) keys: BTreeSet<String>,
}

pub(super) struct HistoryEntry {
    pub(super) revision: Revision,
    pub(super) events: Vec<WatchEvent>,
}

pub(super) struct Watcher {
    pub(super) prefix: String,
    pub(super) start_revision: Revision,
    pub(super) tx: mpsc::Sender<Vec<WatchEvent>>,
    pub(super) lagged: Arc<AtomicBool>,
}

/// The store's contents; changed only through [`State::apply`].
pub(super) struct State {
    pub(super) kvs: BTreeMap<String, KeyValue>,
    pub(super) revision: Revision,
    pub(super) leases: HashMap<LeaseId, Lease>,
    pub(super) next_lease_id: LeaseId,
    pub(super) history: VecDeque<HistoryEntry>,
    pub(super) history_events: usize,
    /// The oldest revision a watch may start from.
    pub(super) history_start: Revision,
    pub(super) watchers: Vec<Watcher>,
}

impl State {
    pub(super) fn new(revision: Revision) -> Self {
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

    pub(super) fn prefix_range<'a>(
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

    pub(super) fn compare(&self, cmp: &Compare) -> bool {
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
    pub(super) fn apply(&mut self, record: &Record, now: Instant) -> Vec<WatchEvent> {
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

    pub(super) fn push_history(
        &mut self,
        revision: Revision,
        events: Vec<WatchEvent>,
        max_events: usize,
    ) {
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
    pub(super) fn publish(
        &mut self,
        revision: Revision,
        events: Vec<WatchEvent>,
        max_events: usize,
    ) {
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
pub(super) struct Overlay<'a> {
    pub(super) base: &'a State,
    pub(super) changes: BTreeMap<String, Option<KeyValue>>,
}

impl<'a> Overlay<'a> {
    pub(super) fn new(base: &'a State) -> Self {
        Self {
            base,
            changes: BTreeMap::new(),
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<KeyValue> {
        match self.changes.get(key) {
            Some(change) => change.clone(),
            None => self.base.kvs.get(key).cloned(),
        }
    }

    pub(super) fn range(&self, prefix: &str) -> Vec<KeyValue> {
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

    pub(super) fn put(&mut self, key: &str, value: &Bytes, lease: LeaseId, rev: Revision) {
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

    pub(super) fn delete(&mut self, key: &str) -> bool {
        let existed = self.get(key).is_some();
        if existed {
            self.changes.insert(key.to_string(), None);
        }
        existed
    }
}

/// Refuses what etcd refuses: empty keys, too many operations, oversized
/// requests, and a branch that writes one key twice.
pub(super) fn validate_txn(txn: &Txn, options: &EmbeddedOptions) -> MetaResult<()> {
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

pub(super) fn plan_txn(st: &State, txn: &Txn) -> MetaResult<Planned<TxnResponse>> {
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
