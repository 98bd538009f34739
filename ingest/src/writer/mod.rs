//! The node's write path: one open segment buffer holding every partition
//! the node received, flushed at `segment_max_bytes` or `flush_interval`,
//! uploaded as one object with `PutMode::Create`, then committed in one
//! metadata transaction per flush (split only to respect the store's
//! operations limit). Producers are answered only after the commit.
//!
//! Three tasks form a pipeline, each stage bounded:
//! buffer (accepts appends, seals segments) -> uploader (PUTs, at most
//! `uploads_in_flight_max` at once, results kept in seal order) -> committer
//! (CAS commits in seal order, so one producer's batches keep their order).
//! Memory is bounded by `buffer_max_bytes`: an append waits for budget,
//! which is returned when its flush is answered.
//!
//! Idempotent producers' batches are checked twice against the sequence
//! rules of [`sluice_metadata::producers`]: when accepted (committed head
//! plus this node's batches in flight, see [`idempotence`]), so that a
//! retried batch is answered with its original offset and never uploaded
//! again; and when committed, against the very head the transaction
//! compares, so that a batch that became a duplicate or out of order after
//! its upload is never committed (its chunk fails with a retriable error).

mod buffer;
mod commit;
mod idempotence;
mod upload;

use buffer::{buffer_loop, fail_all};
use commit::commit_loop;
use upload::upload_loop;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use rand::Rng;
use sluice_fetch::BlockCache;
use sluice_metadata::model::{ChunkCommit, CommitOutcome, HeadState, Topic};
use sluice_metadata::producers::{self, ProducerBatch};
use sluice_metadata::view::ClusterView;
use sluice_segment::format::BatchSlot;
use sluice_segment::{BatchSummary, SegmentBuilder, SegmentFooter, SegmentId};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::error::{IngestError, IngestResult};
use crate::metrics;
use idempotence::{InFlight, Ticket};

/// Settings of the write path.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    /// Longest time a batch waits in the open buffer.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Buffer size that triggers a flush.
    #[serde(with = "sluice_metadata::units::bytes")]
    pub segment_max_bytes: usize,
    /// Batch bytes accepted but not yet answered, across all stages.
    #[serde(with = "sluice_metadata::units::bytes")]
    pub buffer_max_bytes: usize,
    /// Segment uploads running at once.
    pub uploads_in_flight_max: usize,
    /// Commit attempts of one flush before it fails (conflicts are retried).
    pub commit_attempts_max: u32,
    /// Operations one metadata transaction may hold (etcd's `--max-txn-ops`).
    pub txn_ops_max: usize,
    /// Appends queued ahead of the buffer task.
    pub queue_max: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_millis(250),
            segment_max_bytes: 8 * 1024 * 1024,
            buffer_max_bytes: 64 * 1024 * 1024,
            uploads_in_flight_max: 4,
            commit_attempts_max: 64,
            txn_ops_max: 128,
            queue_max: 4096,
        }
    }
}

/// An append waiting for its commit.
#[derive(Debug)]
pub struct Pending {
    receiver: oneshot::Receiver<IngestResult<i64>>,
}

impl Pending {
    /// Wait for the commit; returns the base offset of the appended batches.
    pub async fn wait(self) -> IngestResult<i64> {
        self.receiver
            .await
            .unwrap_or(Err(IngestError::ShuttingDown))
    }
}

struct Append {
    topic: Topic,
    partition: i32,
    batches: Bytes,
    summary: BatchSummary,
    /// The idempotence fields of the (single) batch, if its producer is
    /// idempotent.
    producer: Option<ProducerBatch>,
    reply: oneshot::Sender<IngestResult<i64>>,
    permit: BufferPermit,
    accepted_at: Instant,
}

/// Buffer budget an append holds until its batch is answered: counted in
/// `sluice_writer_buffered_bytes` while held.
struct BufferPermit {
    _permit: OwnedSemaphorePermit,
    bytes: i64,
}

impl BufferPermit {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        let bytes = i64::try_from(permit.num_permits()).unwrap_or(i64::MAX);
        crate::metrics::WRITER_BUFFERED_BYTES.add(bytes);
        Self {
            _permit: permit,
            bytes,
        }
    }
}

impl Drop for BufferPermit {
    fn drop(&mut self) {
        crate::metrics::WRITER_BUFFERED_BYTES.sub(self.bytes);
    }
}

enum Command {
    Append(Box<Append>),
    /// Seal the open segment now (not waiting for its size or interval).
    Seal,
    Close,
}

struct Waiter {
    slot: BatchSlot,
    reply: oneshot::Sender<IngestResult<i64>>,
    _permit: BufferPermit,
    accepted_at: Instant,
    records: u32,
    bytes: usize,
    /// An idempotent batch: its fields and its place among the batches in
    /// flight.
    producer: Option<(ProducerBatch, Ticket)>,
}

impl Waiter {
    fn answer(self, result: IngestResult<i64>) {
        if let Some((_, ticket)) = self.producer {
            ticket.finish(&result);
        }
        let _ = self.reply.send(result);
    }
}

struct OpenSegment {
    builder: SegmentBuilder,
    topics: Vec<Topic>,
    waiters: Vec<Waiter>,
    deadline: tokio::time::Instant,
}

struct Sealed {
    id: SegmentId,
    object: Bytes,
    footer: SegmentFooter,
    /// The topic of each footer chunk.
    topics: Vec<Topic>,
    waiters: Vec<Waiter>,
}

/// A handle for appending to the node's segment buffer; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    commands: mpsc::Sender<Command>,
    budget: Arc<Semaphore>,
    buffer_max_bytes: usize,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("buffer_max_bytes", &self.buffer_max_bytes)
            .finish()
    }
}

/// Owns the writer's tasks; [`WriterTasks::shutdown`] flushes and stops them.
#[derive(Debug)]
pub struct WriterTasks {
    commands: mpsc::Sender<Command>,
    handles: Vec<JoinHandle<()>>,
}

impl WriterTasks {
    /// Seal the open buffer, finish every upload and commit, answer every
    /// waiter, then stop. Appends after this are refused.
    pub async fn shutdown(self) {
        // a full queue still drains: the buffer task keeps receiving
        let _ = self.commands.send(Command::Close).await;
        for handle in self.handles {
            if let Err(error) = handle.await {
                warn!(%error, "writer task failed");
            }
        }
    }
}

impl Writer {
    /// Start the pipeline writing to `store` and committing through `view`'s catalog.
    pub fn start(
        config: WriterConfig,
        store: Arc<dyn ObjectStore>,
        view: Arc<ClusterView>,
    ) -> (Writer, WriterTasks) {
        Self::start_with_cache(config, store, view, None)
    }

    /// [`Writer::start`], also putting every uploaded segment into `cache`
    /// (write-through: readers at the tail then need no object-store GET).
    pub fn start_with_cache(
        config: WriterConfig,
        store: Arc<dyn ObjectStore>,
        view: Arc<ClusterView>,
        cache: Option<BlockCache>,
    ) -> (Writer, WriterTasks) {
        let (commands, command_rx) = mpsc::channel(config.queue_max.max(1));
        let (sealed_tx, sealed_rx) = mpsc::channel(1);
        let (uploaded_tx, uploaded_rx) = mpsc::channel(config.uploads_in_flight_max.max(1));
        let in_flight = Arc::new(InFlight::default());
        let handles = vec![
            tokio::spawn(buffer_loop(
                config.clone(),
                view.clone(),
                in_flight,
                command_rx,
                sealed_tx,
            )),
            tokio::spawn(upload_loop(
                config.clone(),
                store,
                cache,
                sealed_rx,
                uploaded_tx,
            )),
            tokio::spawn(commit_loop(config.clone(), view, uploaded_rx)),
        ];
        crate::metrics::WRITER_BUFFER_MAX_BYTES
            .set(i64::try_from(config.buffer_max_bytes).unwrap_or(i64::MAX));
        let writer = Writer {
            commands: commands.clone(),
            budget: Arc::new(Semaphore::new(config.buffer_max_bytes)),
            buffer_max_bytes: config.buffer_max_bytes,
        };
        (writer, WriterTasks { commands, handles })
    }

    /// Seal the open segment now: what was appended before this call is
    /// uploaded and committed without waiting for `flush_interval` (the
    /// Lambda front door: one invocation, one object, one commit).
    pub async fn seal(&self) -> IngestResult<()> {
        self.commands
            .send(Command::Seal)
            .await
            .map_err(|_| IngestError::ShuttingDown)
    }

    /// Append validated batches (`summary` from `batch::validate`) for one
    /// partition. Waits for buffer budget; appends are kept in call order.
    pub async fn submit(
        &self,
        topic: &Topic,
        partition: i32,
        batches: Bytes,
        summary: BatchSummary,
    ) -> IngestResult<Pending> {
        self.submit_idempotent(topic, partition, batches, summary, None)
            .await
    }

    /// [`Writer::submit`] for one batch of an idempotent producer
    /// (`producer` = its fields; `None` = not idempotent). A batch already
    /// stored is answered with its original base offset and not stored
    /// again; one that breaks the sequence rules is refused.
    pub async fn submit_idempotent(
        &self,
        topic: &Topic,
        partition: i32,
        batches: Bytes,
        summary: BatchSummary,
        producer: Option<ProducerBatch>,
    ) -> IngestResult<Pending> {
        debug_assert!(producer.is_none() || summary.batch_count == 1);
        if batches.len() > self.buffer_max_bytes {
            return Err(IngestError::TooLarge(format!(
                "{} bytes exceed the node's buffer of {} bytes",
                batches.len(),
                self.buffer_max_bytes
            )));
        }
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(batches.len().max(1) as u32)
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        let (reply, receiver) = oneshot::channel();
        let append = Append {
            topic: topic.clone(),
            partition,
            batches,
            summary,
            producer,
            reply,
            permit: BufferPermit::new(permit),
            accepted_at: Instant::now(),
        };
        self.commands
            .send(Command::Append(Box::new(append)))
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        Ok(Pending { receiver })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use object_store::memory::InMemory;
    use sluice_fetch::{CacheConfig, CountingStore, Reader};
    use sluice_metadata::embedded::EmbeddedStore;
    use sluice_metadata::model::Catalog;
    use sluice_metadata::producers::SequenceError;
    use sluice_segment::batch::{self, NewRecord};

    use super::*;

    /// `n` records keyed `<tag>-<i>`.
    fn new_records(tag: &str, n: usize) -> Vec<NewRecord> {
        (0..n)
            .map(|i| NewRecord {
                key: Some(Bytes::from(format!("{tag}-{i}"))),
                value: Some(Bytes::from(vec![i as u8; 10])),
                headers: vec![],
                timestamp_ms: 1_000 + i as i64,
            })
            .collect()
    }

    fn records(tag: &str, n: usize) -> (Bytes, BatchSummary) {
        let bytes = batch::encode(&new_records(tag, n)).unwrap();
        let summary = batch::validate(&bytes).unwrap();
        (bytes, summary)
    }

    #[tokio::test]
    async fn appends_are_committed_densely_and_read_back() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "t");
        let topic = catalog
            .create_topic("orders", 2, BTreeMap::new())
            .await
            .unwrap();
        let view = ClusterView::start(catalog).await.unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let config = WriterConfig {
            flush_interval: Duration::from_millis(20),
            ..WriterConfig::default()
        };
        let (writer, tasks) = Writer::start(config, store.clone(), view.clone());
        let mut pending = Vec::new();
        for (tag, partition, n) in [("a", 0, 3), ("b", 1, 2), ("c", 0, 4)] {
            let (bytes, summary) = records(tag, n);
            pending.push(
                writer
                    .submit(&topic, partition, bytes, summary)
                    .await
                    .unwrap(),
            );
        }
        let mut bases = Vec::new();
        for p in pending {
            bases.push(p.wait().await.unwrap());
        }
        assert_eq!(bases, vec![0, 0, 3]);
        assert_eq!(view.snapshot(&topic.record.id, 0).high_watermark, 7);
        assert_eq!(view.snapshot(&topic.record.id, 1).high_watermark, 2);
        let reader = Reader::new(store, view.clone());
        let chunks = reader.read(&topic.record.id, 0, 0, 1 << 20).await.unwrap();
        let decoded: Vec<_> = chunks
            .into_iter()
            .flat_map(|c| batch::decode(c.batches).unwrap())
            .collect();
        let keys: Vec<_> = decoded
            .iter()
            .map(|r| String::from_utf8_lossy(r.key.as_ref().unwrap()).into_owned())
            .collect();
        assert_eq!(keys, vec!["a-0", "a-1", "a-2", "c-0", "c-1", "c-2", "c-3"]);
        assert_eq!(
            decoded.iter().map(|r| r.offset).collect::<Vec<_>>(),
            (0..7).collect::<Vec<_>>()
        );
        // shutdown flushes what is still buffered; later appends are refused
        let (bytes, summary) = records("d", 1);
        let last = writer
            .submit(&topic, 1, bytes.clone(), summary)
            .await
            .unwrap();
        tasks.shutdown().await;
        assert_eq!(last.wait().await.unwrap(), 2);
        assert!(matches!(
            writer.submit(&topic, 1, bytes, summary).await,
            Err(IngestError::ShuttingDown)
        ));
    }

    #[tokio::test]
    async fn uploaded_segments_are_read_from_the_cache_without_a_get() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "t");
        let topic = catalog
            .create_topic("tail", 1, BTreeMap::new())
            .await
            .unwrap();
        let view = ClusterView::start(catalog.clone()).await.unwrap();
        let counting = Arc::new(CountingStore::new(Arc::new(InMemory::new())));
        let dir = tempfile::tempdir().unwrap();
        let cache = BlockCache::open(
            &CacheConfig {
                memory_bytes: 1 << 20,
                disk_bytes: 0,
                block_bytes: 4096,
                ..CacheConfig::with_dir(dir.path())
            },
            counting.clone(),
        )
        .await
        .unwrap();
        let (writer, tasks) =
            Writer::start_with_cache(fast(), counting.clone(), view.clone(), Some(cache.clone()));
        for tag in ["a", "b", "c"] {
            let (bytes, summary) = records(tag, 50);
            writer
                .submit(&topic, 0, bytes, summary)
                .await
                .unwrap()
                .wait()
                .await
                .unwrap();
        }
        tasks.shutdown().await;
        let reader = Reader::new(counting.clone(), view).with_cache(cache);
        let chunks = reader.read(&topic.record.id, 0, 0, 1 << 20).await.unwrap();
        let offsets: Vec<i64> = chunks
            .into_iter()
            .flat_map(|c| batch::decode(c.batches).unwrap())
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, (0..150).collect::<Vec<_>>());
        assert_eq!(
            counting.gets(),
            0,
            "tail reads are served by the write-through cache"
        );
    }

    #[tokio::test]
    async fn a_deleted_topic_fails_its_appends() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "t");
        let topic = catalog
            .create_topic("gone", 1, BTreeMap::new())
            .await
            .unwrap();
        let view = ClusterView::start(catalog.clone()).await.unwrap();
        catalog.delete_topic("gone").await.unwrap();
        let (writer, tasks) =
            Writer::start(WriterConfig::default(), Arc::new(InMemory::new()), view);
        let (bytes, summary) = records("x", 1);
        let pending = writer.submit(&topic, 0, bytes, summary).await.unwrap();
        tasks.shutdown().await;
        assert!(matches!(
            pending.wait().await,
            Err(IngestError::UnknownTopic(_))
        ));
    }

    #[tokio::test]
    async fn the_buffer_gauge_counts_what_is_accepted_until_it_is_answered() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "t");
        let topic = catalog
            .create_topic("gauged", 1, BTreeMap::new())
            .await
            .unwrap();
        let view = ClusterView::start(catalog).await.unwrap();
        let config = WriterConfig {
            flush_interval: Duration::from_millis(300),
            buffer_max_bytes: 1 << 20,
            ..WriterConfig::default()
        };
        let (writer, tasks) = Writer::start(config, Arc::new(InMemory::new()), view);
        let buffered = || crate::metrics::WRITER_BUFFERED_BYTES.get();
        assert_eq!(crate::metrics::WRITER_BUFFER_MAX_BYTES.get(), 1 << 20);
        let before = buffered();
        let (bytes, summary) = records("held", 3);
        let len = bytes.len() as i64;
        let pending = writer.submit(&topic, 0, bytes, summary).await.unwrap();
        assert_eq!(buffered() - before, len, "held until the flush");
        pending.wait().await.unwrap();
        assert_eq!(buffered(), before, "released once answered");
        tasks.shutdown().await;
    }

    fn idempotent(
        tag: &str,
        n: usize,
        producer_id: i64,
        epoch: i16,
        seq: i32,
    ) -> (Bytes, BatchSummary, Option<ProducerBatch>) {
        let bytes =
            batch::encode_idempotent(&new_records(tag, n), producer_id, epoch, seq).unwrap();
        let summary = batch::validate(&bytes).unwrap();
        let fields = batch::producer_fields(&bytes).unwrap()[0];
        let producer = ProducerBatch::new(
            fields.producer_id,
            fields.producer_epoch,
            fields.base_sequence,
            fields.last_offset_delta,
        );
        (bytes, summary, Some(producer))
    }

    async fn idempotent_setup(name: &str) -> (Catalog, Topic, Arc<ClusterView>) {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "t");
        let topic = catalog
            .create_topic(name, 1, BTreeMap::new())
            .await
            .unwrap();
        let view = ClusterView::start(catalog.clone()).await.unwrap();
        (catalog, topic, view)
    }

    fn fast() -> WriterConfig {
        WriterConfig {
            flush_interval: Duration::from_millis(10),
            ..WriterConfig::default()
        }
    }

    async fn stored_keys(
        store: Arc<dyn ObjectStore>,
        view: Arc<ClusterView>,
        topic: &Topic,
    ) -> Vec<(i64, String)> {
        let reader = Reader::new(store, view);
        let chunks = reader.read(&topic.record.id, 0, 0, 1 << 20).await.unwrap();
        chunks
            .into_iter()
            .flat_map(|c| batch::decode(c.batches).unwrap())
            .map(|r| {
                (
                    r.offset,
                    String::from_utf8_lossy(r.key.as_ref().unwrap()).into_owned(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_retried_batch_is_stored_once_and_answered_with_its_offset() {
        let (_catalog, topic, view) = idempotent_setup("idem").await;
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (writer, tasks) = Writer::start(fast(), store.clone(), view.clone());
        let submit = |(bytes, summary, producer): (Bytes, BatchSummary, Option<ProducerBatch>)| {
            let writer = writer.clone();
            let topic = topic.clone();
            async move {
                writer
                    .submit_idempotent(&topic, 0, bytes, summary, producer)
                    .await
                    .unwrap()
                    .wait()
                    .await
            }
        };
        // a plain batch first, so producer offsets do not start at 0
        let (bytes, summary) = records("plain", 2);
        writer
            .submit(&topic, 0, bytes, summary)
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert_eq!(submit(idempotent("a", 3, 9, 0, 0)).await.unwrap(), 2);
        // the same batch again (a retry after a lost answer)
        assert_eq!(submit(idempotent("a", 3, 9, 0, 0)).await.unwrap(), 2);
        assert_eq!(submit(idempotent("b", 2, 9, 0, 3)).await.unwrap(), 5);
        // a retry of an older batch of the window is still recognized
        assert_eq!(submit(idempotent("a", 3, 9, 0, 0)).await.unwrap(), 2);
        // a gap and a batch that was never sent are out of order
        let gap = submit(idempotent("c", 1, 9, 0, 6)).await;
        assert!(
            matches!(
                gap,
                Err(IngestError::Sequence(SequenceError::OutOfOrder {
                    expected: 5,
                    got: 6,
                    ..
                }))
            ),
            "{gap:?}"
        );
        assert_eq!(gap.unwrap_err().kind().kafka_error_code(), 45);
        // a new producer must start at 0
        assert!(matches!(
            submit(idempotent("d", 1, 10, 0, 4)).await,
            Err(IngestError::Sequence(SequenceError::OutOfOrder {
                expected: 0,
                ..
            }))
        ));
        // a bumped epoch restarts at 0 and fences the old one
        assert_eq!(submit(idempotent("e", 1, 9, 1, 0)).await.unwrap(), 7);
        let fenced = submit(idempotent("f", 1, 9, 0, 5)).await;
        assert_eq!(fenced.unwrap_err().kind().kafka_error_code(), 47);
        tasks.shutdown().await;
        let keys: Vec<String> = stored_keys(store, view, &topic)
            .await
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        assert_eq!(
            keys,
            vec!["plain-0", "plain-1", "a-0", "a-1", "a-2", "b-0", "b-1", "e-0"]
        );
    }

    #[tokio::test]
    async fn a_duplicate_of_a_batch_in_flight_gets_the_same_answer() {
        let (_catalog, topic, view) = idempotent_setup("inflight").await;
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let config = WriterConfig {
            flush_interval: Duration::from_millis(100),
            ..WriterConfig::default()
        };
        let (writer, tasks) = Writer::start(config, store.clone(), view.clone());
        let mut pending = Vec::new();
        for (tag, seq) in [("a", 0), ("a", 0), ("b", 2), ("a", 0)] {
            let (bytes, summary, producer) = idempotent(tag, 2, 3, 0, seq);
            pending.push(
                writer
                    .submit_idempotent(&topic, 0, bytes, summary, producer)
                    .await
                    .unwrap(),
            );
        }
        let mut answers = Vec::new();
        for p in pending {
            answers.push(p.wait().await.unwrap());
        }
        assert_eq!(answers, vec![0, 0, 2, 0]);
        tasks.shutdown().await;
        let keys: Vec<(i64, String)> = stored_keys(store, view, &topic).await;
        assert_eq!(keys.len(), 4, "{keys:?}");
    }

    #[tokio::test]
    async fn a_batch_that_became_a_duplicate_after_upload_is_not_committed() {
        // two nodes share one catalog; the producer's batch reaches both
        let (catalog, topic, view_a) = idempotent_setup("race").await;
        let view_b = ClusterView::start(catalog.clone()).await.unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let slow = WriterConfig {
            flush_interval: Duration::from_millis(300),
            ..WriterConfig::default()
        };
        let (writer_a, tasks_a) = Writer::start(fast(), store.clone(), view_a.clone());
        let (writer_b, tasks_b) = Writer::start(slow, store.clone(), view_b.clone());
        let (bytes, summary, producer) = idempotent("x", 4, 1, 0, 0);
        // B accepts it first (nothing committed yet) but flushes late
        let late = writer_b
            .submit_idempotent(&topic, 0, bytes.clone(), summary, producer)
            .await
            .unwrap();
        let first = writer_a
            .submit_idempotent(&topic, 0, bytes.clone(), summary, producer)
            .await
            .unwrap();
        assert_eq!(first.wait().await.unwrap(), 0);
        let error = late.wait().await.unwrap_err();
        assert!(
            matches!(error, IngestError::SequenceRecheck(_)),
            "{error:?}"
        );
        assert!(error.kind().is_retriable());
        // the client's retry is answered from the committed state
        for _ in 0..100 {
            if view_b.snapshot(&topic.record.id, 0).high_watermark == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let retry = writer_b
            .submit_idempotent(&topic, 0, bytes, summary, producer)
            .await
            .unwrap();
        assert_eq!(retry.wait().await.unwrap(), 0);
        tasks_a.shutdown().await;
        tasks_b.shutdown().await;
        assert_eq!(view_a.snapshot(&topic.record.id, 0).high_watermark, 4);
        let keys = stored_keys(store, view_a, &topic).await;
        assert_eq!(keys.len(), 4, "{keys:?}");
    }

    #[tokio::test]
    async fn a_batch_after_a_failed_one_is_not_committed() {
        // the first segment's upload fails, the second one's succeeds: the
        // later batch must not be committed over the gap
        let (_catalog, topic, view) = idempotent_setup("gap").await;
        let store: Arc<dyn ObjectStore> = Arc::new(FailFirstPut::default());
        let config = WriterConfig {
            // one append per segment
            segment_max_bytes: 1,
            ..fast()
        };
        let (writer, tasks) = Writer::start(config, store.clone(), view.clone());
        let (bytes, summary, producer) = idempotent("a", 1, 5, 0, 0);
        let first = writer
            .submit_idempotent(&topic, 0, bytes, summary, producer)
            .await
            .unwrap();
        let (bytes, summary, producer) = idempotent("b", 1, 5, 0, 1);
        let second = writer
            .submit_idempotent(&topic, 0, bytes, summary, producer)
            .await
            .unwrap();
        assert!(matches!(first.wait().await, Err(IngestError::Store(_))));
        let second = second.wait().await.unwrap_err();
        assert!(
            matches!(second, IngestError::SequenceRecheck(_)),
            "{second:?}"
        );
        assert!(second.kind().is_retriable());
        tasks.shutdown().await;
        assert_eq!(view.snapshot(&topic.record.id, 0).high_watermark, 0);
    }

    /// An object store whose first put fails.
    #[derive(Debug, Default)]
    struct FailFirstPut {
        inner: InMemory,
        failed: std::sync::atomic::AtomicBool,
    }

    impl std::fmt::Display for FailFirstPut {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "FailFirstPut")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for FailFirstPut {
        async fn put_opts(
            &self,
            location: &object_store::path::Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            if !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Err(object_store::Error::Generic {
                    store: "test",
                    source: "injected failure".into(),
                });
            }
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &object_store::path::Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &object_store::path::Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<
                'static,
                object_store::Result<object_store::path::Path>,
            >,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>
        {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &object_store::path::Path,
            to: &object_store::path::Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }
}
