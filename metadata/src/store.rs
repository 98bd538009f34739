//! The `MetaStore` trait: the small slice of etcd's API that sluice relies on
//! (single keys, prefix ranges, compare-and-swap transactions, leases and
//! prefix watches), so that etcd and the embedded store are interchangeable.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// An etcd-style store revision: a cluster-wide counter bumped by every write.
pub type Revision = i64;

/// A lease id; keys attached to a lease are deleted when it expires or is revoked.
pub type LeaseId = i64;

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The store could not be reached or did not answer in time; retrying may help.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// A watch asked for a revision older than the retained history.
    #[error("revision {requested} is compacted (oldest retained {oldest})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still retained.
        oldest: Revision,
    },
    /// The lease does not exist (expired or revoked).
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// A request the store refused as malformed (too many operations, empty key…).
    #[error("invalid metadata request: {0}")]
    Invalid(String),
    /// A stored value could not be decoded.
    #[error("corrupt metadata value at {key}: {reason}")]
    Corrupt {
        /// The key whose value is bad.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Local I/O failed (embedded store persistence).
    #[error("metadata i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl MetaError {
    /// Whether the caller may retry the same request later.
    pub fn is_retriable(&self) -> bool {
        matches!(self, MetaError::Unavailable(_) | MetaError::Io(_))
    }
}

/// Result alias for metadata operations.
pub type MetaResult<T> = Result<T, MetaError>;

/// One stored key with its etcd-style revisions.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key (UTF-8; all sluice keys are text).
    pub key: String,
    /// The value bytes.
    pub value: Bytes,
    /// Revision at which the key was (last) created.
    pub create_revision: Revision,
    /// Revision of the last modification.
    pub mod_revision: Revision,
    /// Number of modifications since creation (1 after the create).
    pub version: i64,
    /// Lease the key is attached to, 0 for none.
    pub lease: LeaseId,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value", &String::from_utf8_lossy(&self.value))
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .field("lease", &self.lease)
            .finish()
    }
}

/// Comparison operator of a transaction guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// Equal.
    Equal,
    /// Not equal.
    NotEqual,
    /// Less than.
    Less,
    /// Greater than.
    Greater,
}

/// What a guard compares. A missing key has revisions and version 0 and no
/// value (a `Value` compare on a missing key is false, as in etcd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmpTarget {
    /// The key's mod revision.
    ModRevision(Revision),
    /// The key's create revision (0 when absent: `CreateRevision(0)` with
    /// `Equal` means "does not exist").
    CreateRevision(Revision),
    /// The key's version.
    Version(i64),
    /// The key's value bytes.
    Value(Bytes),
}

/// One transaction guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// Key compared.
    pub key: String,
    /// Operator.
    pub op: CmpOp,
    /// Target.
    pub target: CmpTarget,
}

impl Compare {
    /// `key`'s mod revision equals `rev` (0 = key absent).
    pub fn mod_revision(key: impl Into<String>, op: CmpOp, rev: Revision) -> Self {
        Self {
            key: key.into(),
            op,
            target: CmpTarget::ModRevision(rev),
        }
    }
    /// Compare `key`'s create revision.
    pub fn create_revision(key: impl Into<String>, op: CmpOp, rev: Revision) -> Self {
        Self {
            key: key.into(),
            op,
            target: CmpTarget::CreateRevision(rev),
        }
    }
    /// `key` does not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Self::create_revision(key, CmpOp::Equal, 0)
    }
    /// Compare `key`'s version.
    pub fn version(key: impl Into<String>, op: CmpOp, version: i64) -> Self {
        Self {
            key: key.into(),
            op,
            target: CmpTarget::Version(version),
        }
    }
    /// Compare `key`'s value.
    pub fn value(key: impl Into<String>, op: CmpOp, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            op,
            target: CmpTarget::Value(value.into()),
        }
    }
}

/// One operation inside a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Put a key, optionally attached to a lease.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Bytes,
        /// Lease to attach (None = no lease).
        lease: Option<LeaseId>,
    },
    /// Delete one key.
    Delete {
        /// Key.
        key: String,
    },
    /// Delete every key starting with the prefix.
    DeletePrefix {
        /// Prefix.
        prefix: String,
    },
    /// Read one key.
    Get {
        /// Key.
        key: String,
    },
    /// Read every key starting with the prefix, in key order.
    GetPrefix {
        /// Prefix.
        prefix: String,
    },
}

impl TxnOp {
    /// A put without a lease.
    pub fn put(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }
    /// A put attached to `lease`.
    pub fn put_with_lease(key: impl Into<String>, value: impl Into<Bytes>, lease: LeaseId) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        }
    }
    /// A single-key delete.
    pub fn delete(key: impl Into<String>) -> Self {
        TxnOp::Delete { key: key.into() }
    }
    /// A prefix delete.
    pub fn delete_prefix(prefix: impl Into<String>) -> Self {
        TxnOp::DeletePrefix {
            prefix: prefix.into(),
        }
    }
    /// A single-key read.
    pub fn get(key: impl Into<String>) -> Self {
        TxnOp::Get { key: key.into() }
    }
    /// A prefix read.
    pub fn get_prefix(prefix: impl Into<String>) -> Self {
        TxnOp::GetPrefix {
            prefix: prefix.into(),
        }
    }
}

/// A compare-and-swap transaction: if every compare holds, run `success`,
/// else run `failure`; atomically, at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Guards, all of which must hold.
    pub compares: Vec<Compare>,
    /// Operations run when every guard holds.
    pub success: Vec<TxnOp>,
    /// Operations run otherwise.
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }
    /// Add guards.
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }
    /// Add success operations.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }
    /// Add failure operations.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }
    /// Number of operations etcd counts against its `--max-txn-ops` limit
    /// (the larger branch plus the compares).
    pub fn op_count(&self) -> usize {
        self.compares
            .len()
            .max(self.success.len().max(self.failure.len()))
    }
}

/// The result of one operation of the branch that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResponse {
    /// A put happened.
    Put,
    /// Keys deleted by a delete or prefix delete.
    Delete {
        /// How many.
        deleted: i64,
    },
    /// Keys read by a get or prefix get (empty when absent).
    Get(Vec<KeyValue>),
}

/// The outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether the compares held (the success branch ran).
    pub succeeded: bool,
    /// One response per operation of the branch that ran, in order.
    pub responses: Vec<TxnOpResponse>,
    /// The store revision after the transaction.
    pub revision: Revision,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or modified (its new state).
    Put(KeyValue),
    /// A key was deleted (`value` empty, `mod_revision` = the deleting revision).
    Delete(KeyValue),
}

impl WatchEvent {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) | WatchEvent::Delete(kv) => &kv.key,
        }
    }
}

/// Events of one revision (or a batch of revisions, in order). An `Err`
/// ends the stream: the watcher must re-read and re-watch.
pub type WatchStream = BoxStream<'static, MetaResult<Vec<WatchEvent>>>;

/// A prefix range read: the keys in key order and the store revision it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    /// Keys in key order.
    pub kvs: Vec<KeyValue>,
    /// The store revision of the read.
    pub revision: Revision,
}

/// The metadata store: etcd semantics. Every implementation passes the
/// conformance suite in `conformance.rs`.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Read one key.
    async fn get(&self, key: &str) -> MetaResult<Option<KeyValue>>;
    /// Read every key starting with `prefix`, in key order, with the revision read at.
    async fn range(&self, prefix: &str) -> MetaResult<RangeResponse>;
    /// Put a key (optionally on a lease); returns the new revision.
    async fn put(&self, key: &str, value: Bytes, lease: Option<LeaseId>) -> MetaResult<Revision>;
    /// Delete a key; returns whether it existed.
    async fn delete(&self, key: &str) -> MetaResult<bool>;
    /// Run a compare-and-swap transaction.
    async fn txn(&self, txn: Txn) -> MetaResult<TxnResponse>;
    /// Grant a lease of `ttl_secs` seconds.
    async fn lease_grant(&self, ttl_secs: i64) -> MetaResult<LeaseId>;
    /// Refresh a lease once; returns its new TTL in seconds, or
    /// `LeaseNotFound` when it has expired or was revoked.
    async fn lease_keep_alive(&self, lease: LeaseId) -> MetaResult<i64>;
    /// Revoke a lease, deleting the keys attached to it.
    async fn lease_revoke(&self, lease: LeaseId) -> MetaResult<()>;
    /// Watch every key starting with `prefix` for changes at revisions
    /// `>= start_revision` (use a range's revision + 1 to continue from it).
    async fn watch_prefix(&self, prefix: &str, start_revision: Revision)
        -> MetaResult<WatchStream>;
}
