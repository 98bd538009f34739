//! The data model sluice keeps in the metadata store: topics, partition
//! heads and the offset index (their keys are in [`crate::keys`]).
//!
//! A missing head means an empty partition (next offset 0), so creating a
//! topic is one put whatever its partition count.

mod commit;
mod configs;
mod topics;

pub use configs::{
    topic_config, validate_topic_configs, Allowed, Effect, TopicConfigDef, TopicConfigType,
    TopicSettings, DEFAULT_MAX_MESSAGE_BYTES, TOPIC_CONFIGS,
};

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::clock::{Clock, SystemClock};
use crate::keys::Keys;
use crate::store::{
    CmpOp, Compare, KeyValue, MetaError, MetaStore, Revision, Txn, TxnOp, TxnOpResponse,
};

/// Longest topic name Kafka accepts.
pub const TOPIC_NAME_MAX_LEN: usize = 249;
/// Most partitions one topic may have.
pub const PARTITIONS_MAX: i32 = 10_000;
/// Errors of the model layer.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A topic of that name exists already.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// No topic of that name.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The request is not valid (bad name, partition count, config).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// An offset outside a partition's range.
    #[error("{0}")]
    OutOfRange(String),
    /// The topic changed under a read-modify-write; the caller may retry.
    #[error("topic {0:?} changed concurrently")]
    Concurrent(String),
    /// A commit found its object marked as garbage: its writer paused
    /// between upload and commit for longer than GC waits. Nothing was
    /// committed; the data must be written again.
    #[error("object {0} was marked as garbage before its commit; nothing committed")]
    Collected(String),
}

/// Result alias of the model layer.
pub type ModelResult<T> = Result<T, ModelError>;

/// A topic as stored under `topics/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Stable id; a topic deleted and re-created gets a new one.
    pub id: String,
    /// The name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Topic configs (Kafka names).
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
}

impl TopicRecord {
    /// `max.message.bytes` of this topic.
    pub fn max_message_bytes(&self) -> usize {
        self.settings().max_message_bytes()
    }

    /// The topic's configs, typed.
    pub fn settings(&self) -> TopicSettings<'_> {
        TopicSettings::new(&self.configs)
    }
}

/// A topic with the revision it was created at (used to guard commits
/// against a concurrent delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// The stored record.
    pub record: TopicRecord,
    /// Create revision of the topic key.
    pub create_revision: Revision,
    /// Mod revision of the topic key.
    pub mod_revision: Revision,
}

/// A partition head as stored under `heads/<topic-id>/<p>`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Head {
    /// The next offset to assign (the high watermark).
    pub next_offset: i64,
    /// The first offset still readable.
    #[serde(default)]
    pub log_start_offset: i64,
    /// Idempotent producers' sequence state, by producer id (bounded; see
    /// [`crate::producers`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub producers: BTreeMap<i64, crate::producers::ProducerState>,
}

/// A head with the revision it was read at (`mod_revision` 0 = never written).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeadState {
    /// The head.
    pub head: Head,
    /// Mod revision of the head key, 0 when absent.
    pub mod_revision: Revision,
}

/// One index entry: where a run of offsets of one partition is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// First offset of the run.
    pub base_offset: i64,
    /// Offsets in the run.
    pub offset_count: u32,
    /// Batches in the run.
    pub batch_count: u32,
    /// The segment object holding the run (none for an archive file).
    pub segment: SegmentRef,
    /// Byte offset inside the object.
    pub start: u64,
    /// Byte length.
    pub len: u32,
    /// crc32c of the bytes.
    pub crc: u32,
    /// Largest record timestamp in the run.
    pub max_timestamp: i64,
    /// Length of the whole object (the read cache's blocks are clamped to
    /// it); 0 in entries written before it was recorded.
    #[serde(default)]
    pub object_bytes: u64,
    /// When the run was committed (ms since the epoch; 0 when unknown): the
    /// compactor archives runs by age.
    #[serde(default)]
    pub committed_ms: i64,
    /// Set when the run is an archive (Parquet) file rather than a range of
    /// a segment object; `segment`, `start` and `crc` are then unused and
    /// `len` is the file's size (saturated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveRef>,
}

/// The segment object an index entry's run is stored in: its id (a ULID),
/// or none for an archived run (whose file `archive` names). Stored as the
/// ULID's text, `""` for none, as entries always were; an entry naming
/// anything else does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentRef(Option<Ulid>);

impl SegmentRef {
    /// The segment `id`.
    pub fn of(id: Ulid) -> Self {
        SegmentRef(Some(id))
    }

    /// The segment's id; `None` for an archived run.
    pub fn id(&self) -> Option<Ulid> {
        self.0
    }
}

impl std::fmt::Display for SegmentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(id) => write!(f, "{id}"),
            None => f.write_str("(archive)"),
        }
    }
}

impl Serialize for SegmentRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(id) => serializer.serialize_str(&id.to_string()),
            None => serializer.serialize_str(""),
        }
    }
}

impl<'de> Deserialize<'de> for SegmentRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() {
            return Ok(SegmentRef(None));
        }
        Ulid::from_string(&text)
            .map(|id| SegmentRef(Some(id)))
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a segment id")))
    }
}

/// Where an archived run lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRef {
    /// Object path of the Parquet file.
    pub path: String,
    /// A ULID unique to this file: the read cache's key.
    pub id: String,
    /// First offset of each row group.
    pub row_groups: Vec<i64>,
    /// The file holds a key-compacted run: its offsets have gaps (only the
    /// latest record of each key is kept, as in a Kafka compacted log).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compacted: bool,
    /// When the first tombstone kept in the file may be dropped (its
    /// timestamp plus `delete.retention.ms`): the controller compacts the
    /// partition again then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstones_expire_ms: Option<i64>,
}

impl IndexEntry {
    /// One past the last offset of the run.
    pub fn end_offset(&self) -> i64 {
        self.base_offset + i64::from(self.offset_count)
    }

    /// Bytes of the object the run takes (its share of a segment, or the
    /// whole archive file).
    pub fn stored_bytes(&self) -> u64 {
        match &self.archive {
            Some(_) => self.object_bytes,
            None => u64::from(self.len),
        }
    }
}

/// One partition's share of a flush, to be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkCommit {
    /// Topic name (guards against a concurrent delete).
    pub topic_name: String,
    /// Create revision of the topic key seen when the data was accepted.
    pub topic_create_revision: Revision,
    /// Topic id.
    pub topic_id: String,
    /// Partition.
    pub partition: i32,
    /// Segment id of the uploaded object.
    pub segment: Ulid,
    /// Byte offset of the chunk in the object.
    pub start: u64,
    /// Byte length of the chunk.
    pub len: u32,
    /// crc32c of the chunk.
    pub crc: u32,
    /// Offsets in the chunk.
    pub offset_count: u32,
    /// Batches in the chunk.
    pub batch_count: u32,
    /// Largest timestamp in the chunk.
    pub max_timestamp: i64,
    /// Length of the whole uploaded object.
    pub object_bytes: u64,
}

impl ChunkCommit {
    /// The index entry of this chunk once committed at `base_offset`, at
    /// `committed_ms`.
    pub fn index_entry(&self, base_offset: i64, committed_ms: i64) -> IndexEntry {
        IndexEntry {
            base_offset,
            offset_count: self.offset_count,
            batch_count: self.batch_count,
            segment: SegmentRef::of(self.segment),
            start: self.start,
            len: self.len,
            crc: self.crc,
            max_timestamp: self.max_timestamp,
            object_bytes: self.object_bytes,
            committed_ms,
            archive: None,
        }
    }
}

/// The outcome of one commit attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Every chunk was committed; base offset and new head state per chunk.
    Committed {
        /// Base offset assigned to each chunk, in input order.
        base_offsets: Vec<i64>,
        /// The head states written, in input order.
        heads: Vec<HeadState>,
        /// Revision of the commit.
        revision: Revision,
    },
    /// Some guard failed: the current state of every head, in input order,
    /// and the names of topics that no longer exist (or were re-created).
    Conflict {
        /// Current head state per chunk.
        heads: Vec<HeadState>,
        /// Topics that are gone.
        missing_topics: Vec<String>,
    },
}

/// The model over a [`MetaStore`], rooted at `/sluice/<cluster>/`.
#[derive(Clone)]
pub struct Catalog {
    store: Arc<dyn MetaStore>,
    keys: Keys,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("root", &self.keys.root())
            .finish()
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(kv: &KeyValue) -> Result<T, MetaError> {
    serde_json::from_slice(&kv.value).map_err(|e| MetaError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

pub(crate) fn encode_json<T: Serialize>(value: &T) -> Bytes {
    // Serializing these plain structs cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// Check a topic name the way Kafka does.
pub fn validate_topic_name(name: &str) -> ModelResult<()> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(ModelError::Invalid(format!("invalid topic name {name:?}")));
    }
    if name.len() > TOPIC_NAME_MAX_LEN {
        return Err(ModelError::Invalid(format!(
            "topic name longer than {TOPIC_NAME_MAX_LEN} characters"
        )));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(ModelError::Invalid(format!(
            "topic name {name:?} may contain only ASCII letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

impl Catalog {
    /// A catalog for `cluster` (the key namespace) over `store`.
    pub fn new(store: Arc<dyn MetaStore>, cluster: &str) -> Self {
        Self::with_clock(store, cluster, Arc::new(SystemClock))
    }

    /// A catalog whose wall-clock time comes from `clock`.
    pub fn with_clock(store: Arc<dyn MetaStore>, cluster: &str, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            keys: Keys::new(cluster),
            clock,
        }
    }

    /// The clock that stamps and ages what this catalog writes.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The cluster's metadata keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    /// The cluster id, created on first use.
    pub async fn ensure_cluster_id(&self) -> ModelResult<String> {
        let key = self.keys.cluster_id();
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.ensure_value(key, id).await
    }

    /// The credential every node of the cluster presents to the others
    /// (the internal block endpoint), created on first use: 256 random
    /// bits, hex.
    pub async fn ensure_node_secret(&self) -> ModelResult<String> {
        let bytes: [u8; 32] = rand::random();
        let secret = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.ensure_value(self.keys.node_secret(), secret).await
    }

    /// The value at `key`, or `value` written there if there is none yet
    /// (whoever writes first wins).
    async fn ensure_value(&self, key: String, value: String) -> ModelResult<String> {
        if let Some(kv) = self.store.get(&key).await? {
            return Ok(String::from_utf8_lossy(&kv.value).into_owned());
        }
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::absent(key.clone())])
                    .and_then([TxnOp::put(key.clone(), value.clone())])
                    .or_else([TxnOp::get(key.clone())]),
            )
            .await?;
        if response.succeeded {
            return Ok(value);
        }
        match response.responses.first() {
            Some(TxnOpResponse::Get(kvs)) if !kvs.is_empty() => {
                Ok(String::from_utf8_lossy(&kvs[0].value).into_owned())
            }
            _ => Err(ModelError::Concurrent(key)),
        }
    }

    /// Allocate a fresh node id from the cluster's counter (ids start at 1).
    pub async fn allocate_node_id(&self) -> ModelResult<i32> {
        let key = self.keys.node_id_counter();
        let id = self.increment_counter(&key, 1).await?;
        i32::try_from(id).map_err(|_| ModelError::Invalid(format!("{key} overflowed")))
    }

    /// Take the next value of the counter at `key` (`first` when it does
    /// not exist yet) by a bounded compare-and-swap loop.
    pub async fn increment_counter(&self, key: &str, first: i64) -> ModelResult<i64> {
        const ATTEMPTS_MAX: usize = 64;
        for _ in 0..ATTEMPTS_MAX {
            let current = self.store.get(key).await?;
            let (next, guard) = match &current {
                Some(kv) => {
                    let last: i64 = String::from_utf8_lossy(&kv.value)
                        .parse()
                        .map_err(|_| ModelError::Invalid(format!("{key} is not a number")))?;
                    (
                        last + 1,
                        Compare::mod_revision(key, CmpOp::Equal, kv.mod_revision),
                    )
                }
                None => (first, Compare::absent(key)),
            };
            let response = self
                .store
                .txn(
                    Txn::new()
                        .when([guard])
                        .and_then([TxnOp::put(key, next.to_string())]),
                )
                .await?;
            if response.succeeded {
                return Ok(next);
            }
        }
        Err(ModelError::Concurrent(key.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::embedded::EmbeddedStore;

    fn catalog() -> Catalog {
        Catalog::new(Arc::new(EmbeddedStore::in_memory()), "test")
    }

    /// A chunk of `count` offsets of `topic`/`partition` in a new segment.
    pub(crate) fn chunk(topic: &Topic, partition: i32, count: u32) -> ChunkCommit {
        ChunkCommit {
            topic_name: topic.record.name.clone(),
            topic_create_revision: topic.create_revision,
            topic_id: topic.record.id.clone(),
            partition,
            segment: Ulid::new(),
            start: 16,
            len: 100,
            crc: 7,
            offset_count: count,
            batch_count: 1,
            max_timestamp: 5,
            object_bytes: 116,
        }
    }

    #[tokio::test]
    async fn topic_configs_are_replaced_validated_and_guarded() {
        let catalog = catalog();
        let mut initial = BTreeMap::new();
        initial.insert("retention.ms".to_string(), "1000".to_string());
        let topic = catalog.create_topic("c", 1, initial).await.unwrap();
        let mut next = BTreeMap::new();
        next.insert("max.message.bytes".to_string(), "2048".to_string());
        let altered = catalog
            .alter_topic_configs("c", next.clone())
            .await
            .unwrap();
        assert_eq!(altered.record.configs, next);
        assert_eq!(altered.record.id, topic.record.id);
        assert!(altered.mod_revision > topic.mod_revision);
        let stored = catalog.get_topic("c").await.unwrap().unwrap();
        assert_eq!(stored.record.configs, next);
        let mut bad = BTreeMap::new();
        bad.insert("no.such.config".to_string(), "1".to_string());
        assert!(matches!(
            catalog.alter_topic_configs("c", bad).await,
            Err(ModelError::Invalid(_))
        ));
        assert!(matches!(
            catalog
                .alter_topic_configs("missing", BTreeMap::new())
                .await,
            Err(ModelError::UnknownTopic(_))
        ));
        let edited = catalog
            .update_topic_configs("c", |current| {
                let mut configs = current.clone();
                configs.insert("retention.bytes".to_string(), "5".to_string());
                Ok(configs)
            })
            .await
            .unwrap();
        assert_eq!(edited.record.configs.len(), 2);
    }

    #[tokio::test]
    async fn topics_are_created_once_listed_grown_and_deleted() {
        let catalog = catalog();
        let topic = catalog
            .create_topic("orders", 3, BTreeMap::new())
            .await
            .unwrap();
        assert!(matches!(
            catalog.create_topic("orders", 3, BTreeMap::new()).await,
            Err(ModelError::TopicExists(_))
        ));
        assert!(matches!(
            catalog.create_topic("bad name", 1, BTreeMap::new()).await,
            Err(ModelError::Invalid(_))
        ));
        assert!(matches!(
            catalog.create_topic("zero", 0, BTreeMap::new()).await,
            Err(ModelError::Invalid(_))
        ));
        let grown = catalog.add_partitions("orders", 5).await.unwrap();
        assert_eq!(grown.record.partitions, 5);
        assert_eq!(grown.record.id, topic.record.id);
        let names: Vec<_> = catalog
            .list_topics()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.record.name)
            .collect();
        assert_eq!(names, vec!["orders"]);
        catalog.delete_topic("orders").await.unwrap();
        assert!(catalog.get_topic("orders").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn commits_assign_dense_offsets_and_detect_conflicts() {
        let catalog = catalog();
        let topic = catalog.create_topic("t", 2, BTreeMap::new()).await.unwrap();
        let chunks = vec![chunk(&topic, 0, 3), chunk(&topic, 1, 2)];
        let fresh = vec![HeadState::default(); 2];
        let CommitOutcome::Committed {
            base_offsets,
            heads,
            ..
        } = catalog.try_commit(&chunks, &fresh).await.unwrap()
        else {
            panic!("first commit must succeed");
        };
        assert_eq!(base_offsets, vec![0, 0]);
        // a stale expectation conflicts and reports the current heads
        let CommitOutcome::Conflict {
            heads: current,
            missing_topics,
        } = catalog.try_commit(&chunks, &fresh).await.unwrap()
        else {
            panic!("stale commit must conflict");
        };
        assert_eq!(current, heads);
        assert!(missing_topics.is_empty());
        let CommitOutcome::Committed { base_offsets, .. } =
            catalog.try_commit(&chunks, &current).await.unwrap()
        else {
            panic!("retry must succeed");
        };
        assert_eq!(base_offsets, vec![3, 2]);
        let index = catalog
            .store()
            .range(&catalog.keys().index())
            .await
            .unwrap();
        assert_eq!(index.kvs.len(), 4);
        // a deleted topic is reported, not written to
        catalog.delete_topic("t").await.unwrap();
        let CommitOutcome::Conflict { missing_topics, .. } =
            catalog.try_commit(&chunks, &current).await.unwrap()
        else {
            panic!("commit to a deleted topic must fail");
        };
        assert_eq!(missing_topics, vec!["t".to_string()]);
    }
    /// A writer paused between upload and commit for longer than the GC
    /// grace finds its object marked: the commit fails whole and writes
    /// nothing, so no index entry ever points at a deleted object.
    #[tokio::test]
    async fn a_commit_into_an_object_gc_marked_writes_nothing() {
        let catalog = catalog();
        let topic = catalog.create_topic("z", 1, BTreeMap::new()).await.unwrap();
        let chunks = vec![chunk(&topic, 0, 3)];
        let object = vec![format!("segments/{}.seg", chunks[0].segment)];
        let next = || {
            vec![Head {
                next_offset: 3,
                ..Head::default()
            }]
        };
        catalog.mark_garbage(&object[0], 1).await.unwrap();
        let refused = catalog
            .try_commit_heads(&chunks, &[HeadState::default()], next(), &object)
            .await;
        assert!(
            matches!(&refused, Err(ModelError::Collected(o)) if *o == object[0]),
            "{refused:?}"
        );
        assert_eq!(
            catalog.head(&topic.record.id, 0).await.unwrap(),
            HeadState::default()
        );
        catalog.unmark_garbage(&object[0]).await.unwrap();
        let committed = catalog
            .try_commit_heads(&chunks, &[HeadState::default()], next(), &object)
            .await
            .unwrap();
        assert!(matches!(committed, CommitOutcome::Committed { .. }));
    }
}
