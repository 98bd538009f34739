//! The node's read cache: a foyer hybrid cache (memory + local disk) of
//! aligned blocks of segment objects, keyed by (segment id, block index).
//!
//! Block `b` of an object covers bytes `b * block_bytes ..` up to the next
//! block or the object's end, so a segment smaller than a block is one
//! block. A read asks for the blocks covering its byte range; a missing
//! block is fetched with one ranged GET of the whole block, and concurrent
//! misses of one block share that GET (foyer's `get_or_fetch` is
//! single-flight). A block fetched for a read also starts a bounded
//! background readahead of the next blocks of the same object.
//!
//! The cache never vouches for its bytes: the reader verifies every range
//! against the crc32c of its index entry and, on a mismatch, fetches the
//! blocks again from the object store once, replacing the cached copies (see
//! [`crate::Reader::read_entry`]). foyer itself checksums each disk entry
//! and treats a damaged one as a miss.
//!
//! With peers set ([`BlockCache::set_peers`]), a missing block that another
//! live node owns (see [`crate::peer`]) is asked of that node first; its
//! answer is cached here like a GET's, and any failure falls back to the
//! object store. Blocks asked for by peers ([`BlockCache::serve_peer`])
//! come from this cache or the object store, never from another peer.
//!
//! Segments are immutable, so a cached block never goes stale; the disk
//! tier is written when the memory tier evicts a block (and with all of
//! the memory tier when the cache closes) and recovered when the same
//! directory is reopened, so it survives a restart.

use std::fmt;
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice_segment::SegmentId;
use tokio::sync::Semaphore;
use tracing::warn;

use foyer::{
    BlockEngineConfig, Code, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    HybridCachePolicy, HybridCacheProperties, Location, RecoverMode, Source, Throttle,
};

use crate::error::{FetchError, FetchResult};
use crate::metrics;
use crate::peer::Peers;

mod fill;

pub use fill::join_parts;
use fill::{check_range, count_lookup, store_failure};
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Pace of the memory tier's write-out to the disk tier at close.
const CLOSE_WRITE_BYTES_PER_SEC: usize = 128 * MIB as usize;

/// Settings of the read cache.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Bytes of blocks kept in memory.
    #[serde(with = "sluice_metadata::units::bytes")]
    pub memory_bytes: usize,
    /// Bytes of the disk tier; 0 = memory only.
    #[serde(with = "sluice_metadata::units::bytes")]
    pub disk_bytes: usize,
    /// Directory of the disk tier (reopened after a restart).
    pub dir: PathBuf,
    /// Block size: the unit of caching and of object-store GETs.
    #[serde(with = "sluice_metadata::units::bytes")]
    pub block_bytes: u64,
    /// Blocks fetched ahead after a block was fetched for a read; 0 = none.
    pub readahead_blocks: u64,
    /// Readahead GETs in flight on the node at once; more are skipped.
    pub readahead_in_flight_max: usize,
    /// Bytes of index entries being read at once, all readers of the node
    /// together (an entry counts twice: as read and as patched).
    #[serde(with = "sluice_metadata::units::bytes")]
    pub read_bytes_max: usize,
}

impl Default for CacheConfig {
    /// The defaults; the empty `dir` stands for the node's own default
    /// (`<data-dir>/cache`), filled in when the node starts.
    fn default() -> Self {
        Self::with_dir(PathBuf::new())
    }
}

impl CacheConfig {
    /// The defaults, with the disk tier in `dir`.
    pub fn with_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            memory_bytes: 256 * MIB as usize,
            disk_bytes: 4 * 1024 * MIB as usize,
            dir: dir.into(),
            block_bytes: 4 * MIB,
            readahead_blocks: 1,
            readahead_in_flight_max: 4,
            read_bytes_max: 64 * MIB as usize,
        }
    }

    /// Memory the cache holds outside `memory_bytes`: the blocks of the
    /// readahead GETs in flight and, with a disk tier, its two write
    /// buffers of one disk block each.
    pub fn overhead_bytes(&self) -> usize {
        let readahead = self.readahead_in_flight_max * self.block_bytes as usize;
        if self.disk_bytes == 0 {
            readahead
        } else {
            readahead + 2 * self.engine_block_bytes()
        }
    }

    /// Size of one foyer disk block (its unit of eviction, which must hold
    /// a whole cache block plus entry headers): room for four cache blocks.
    fn engine_block_bytes(&self) -> usize {
        let per_entry = self.block_bytes + 64 * KIB;
        let bytes = (4 * per_entry).div_ceil(4 * KIB) * 4 * KIB;
        bytes.max(MIB) as usize
    }
}

/// Why the cache could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The settings cannot work.
    #[error("invalid cache settings: {0}")]
    Invalid(String),
    /// The directory could not be created.
    #[error("creating the cache directory {dir}: {source}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// foyer refused to build the cache.
    #[error("building the cache: {0}")]
    Build(String),
}

/// Whether files in `dir` open with `O_DIRECT` (tmpfs, for one, may not).
fn direct_io(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let probe = dir.join(".direct-io-probe");
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe);
        let _ = std::fs::remove_file(&probe);
        if let Err(error) = opened {
            warn!(%error, dir = %dir.display(), "no direct I/O for the cache's disk tier: buffered files");
            return false;
        }
        true
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

/// The key of one cached block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// The segment's ULID.
    pub segment: u128,
    /// Block index inside the object.
    pub block: u64,
}

impl BlockKey {
    const ENCODED_BYTES: usize = 24;

    fn new(segment: SegmentId, block: u64) -> Self {
        Self {
            segment: segment.0 .0,
            block,
        }
    }
}

impl Code for BlockKey {
    fn encode(&self, writer: &mut impl Write) -> foyer::Result<()> {
        writer
            .write_all(&self.segment.to_le_bytes())
            .and_then(|()| writer.write_all(&self.block.to_le_bytes()))
            .map_err(foyer::Error::io_error)
    }

    fn decode(reader: &mut impl Read) -> foyer::Result<Self> {
        let mut buf = [0u8; Self::ENCODED_BYTES];
        reader
            .read_exact(&mut buf)
            .map_err(foyer::Error::io_error)?;
        let (segment, block) = buf.split_at(16);
        let mut segment_bytes = [0u8; 16];
        segment_bytes.copy_from_slice(segment);
        let mut block_bytes = [0u8; 8];
        block_bytes.copy_from_slice(block);
        Ok(Self {
            segment: u128::from_le_bytes(segment_bytes),
            block: u64::from_le_bytes(block_bytes),
        })
    }

    fn estimated_size(&self) -> usize {
        Self::ENCODED_BYTES
    }
}

/// Who asked for a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A reader: counted as a lookup, its GET starts readahead.
    Read,
    /// The readahead of a read.
    Readahead,
    /// A reader going around a failed cache straight to the object store.
    Bypass,
    /// Another node asking its owner: never forwarded to a peer, starts no
    /// readahead (the asking node runs its own).
    Peer,
}

struct Inner {
    cache: HybridCache<BlockKey, Bytes>,
    store: Arc<dyn ObjectStore>,
    block_bytes: u64,
    readahead_blocks: u64,
    readahead_permits: Arc<Semaphore>,
    peers: OnceLock<Peers>,
}

/// The node's block cache; cheap to clone.
#[derive(Clone)]
pub struct BlockCache {
    inner: Arc<Inner>,
}

impl fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockCache")
            .field("block_bytes", &self.inner.block_bytes)
            .field("readahead_blocks", &self.inner.readahead_blocks)
            .finish()
    }
}

impl BlockCache {
    /// Open (or reopen, keeping its disk tier) the cache described by
    /// `config`, fetching missing blocks from `store`.
    pub async fn open(
        config: &CacheConfig,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self, CacheError> {
        if config.block_bytes == 0 || config.block_bytes > 256 * MIB {
            return Err(CacheError::Invalid(format!(
                "block size {} is not in 1..=256 MiB",
                config.block_bytes
            )));
        }
        if config.memory_bytes == 0 {
            return Err(CacheError::Invalid("memory size must not be 0".into()));
        }
        let engine_block = config.engine_block_bytes();
        if config.disk_bytes > 0 && config.disk_bytes < 4 * engine_block {
            return Err(CacheError::Invalid(format!(
                "disk size {} is below {} (four disk blocks of {} for blocks of {}); use 0 for no disk tier",
                config.disk_bytes,
                4 * engine_block,
                engine_block,
                config.block_bytes
            )));
        }
        // a shard must hold many blocks, or large blocks evict each other
        let shards = (config.memory_bytes as u64 / (config.block_bytes * 16)).clamp(1, 8) as usize;
        let builder = HybridCacheBuilder::new()
            .with_name("sluice-blocks")
            // blocks go to disk when the memory tier evicts them (and all
            // of it when the cache closes), not when inserted
            .with_policy(HybridCachePolicy::WriteOnEviction)
            .with_flush_on_close(true)
            .memory(config.memory_bytes)
            .with_shards(shards)
            .with_weighter(|_key: &BlockKey, value: &Bytes| value.len().max(1))
            .storage();
        let builder = if config.disk_bytes > 0 {
            create_dir(&config.dir)?;
            // direct I/O: spilled blocks skip the page cache (a copy per
            // write and memory outside the node's budget); a filesystem
            // without O_DIRECT gets buffered files
            let device = FsDeviceBuilder::new(&config.dir)
                .with_capacity(config.disk_bytes)
                .with_direct(direct_io(&config.dir))
                // paces the write-out of the memory tier when the cache
                // closes: foyer drops blocks that reach its flusher while
                // both of its buffers are busy
                .with_throttle(Throttle::new().with_write_throughput(CLOSE_WRITE_BYTES_PER_SEC))
                .build()
                .map_err(|error| CacheError::Build(error.to_string()))?;
            builder
                .with_engine_config(
                    BlockEngineConfig::new(device)
                        .with_block_size(engine_block)
                        // two buffers of this size, one filled while the
                        // other is written; a block evicted while both are
                        // busy is dropped, not queued
                        .with_buffer_pool_size(engine_block)
                        // blocks queued for the flusher beyond that are
                        // dropped (the cache is lossy; the store has them)
                        .with_submit_queue_size_threshold(engine_block),
                )
                .with_recover_mode(RecoverMode::Quiet)
        } else {
            builder
        };
        let cache = builder
            .build()
            .await
            .map_err(|error| CacheError::Build(error.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                cache,
                store,
                block_bytes: config.block_bytes,
                readahead_blocks: config.readahead_blocks,
                readahead_permits: Arc::new(Semaphore::new(config.readahead_in_flight_max)),
                peers: OnceLock::new(),
            }),
        })
    }

    /// Bytes the memory tier holds now.
    pub fn memory_used_bytes(&self) -> usize {
        self.inner.cache.memory().usage()
    }

    /// The block size.
    pub fn block_bytes(&self) -> u64 {
        self.inner.block_bytes
    }

    /// Ask the owners of missing blocks before the object store (once;
    /// later calls are ignored).
    pub fn set_peers(&self, peers: Peers) {
        if self.inner.peers.set(peers).is_err() {
            warn!("read cache peers were already set");
        }
    }

    /// Serve block `block` of `segment` (an object of `object_bytes`
    /// bytes) to another node: from this cache, else with one GET of this
    /// node's, which is cached. Never asks a peer, so peer requests cannot
    /// loop. A block index past the object's end is an error.
    pub async fn serve_peer(
        &self,
        segment: SegmentId,
        block: u64,
        object_bytes: u64,
    ) -> FetchResult<Bytes> {
        if object_bytes == 0 || block >= object_bytes.div_ceil(self.inner.block_bytes) {
            return Err(FetchError::corrupt(
                segment.to_string(),
                "block index lies outside its object",
            ));
        }
        metrics::PEER_SERVED_BLOCKS.inc();
        let owned = self
            .inner
            .peers
            .get()
            .is_none_or(|peers| peers.owns(segment, block));
        if owned {
            // shares a GET with concurrent readers and peers of this block
            return self
                .inner
                .block(segment, block, object_bytes, Origin::Peer)
                .await;
        }
        // the asker thinks this node owns the block, this node does not
        // (their membership views differ for a moment): no single flight,
        // whose fetch might be a peer request of this node's
        let key = BlockKey::new(segment, block);
        if let Ok(Some(entry)) = self.inner.cache.get(&key).await {
            return Ok(entry.value().clone());
        }
        let range = self.inner.block_range(block, object_bytes);
        let bytes = self
            .inner
            .get_block(segment, range, Origin::Peer)
            .await
            .map_err(|error| store_failure(segment, &error))?;
        self.inner.cache.insert(key, bytes.clone());
        Ok(bytes)
    }

    /// Put every block of a just-uploaded object into the cache
    /// (write-through), so readers at the tail need no GET.
    pub fn insert_object(&self, segment: SegmentId, object: &Bytes) {
        let object_bytes = object.len() as u64;
        for block in 0..object_bytes.div_ceil(self.inner.block_bytes) {
            let range = self.inner.block_range(block, object_bytes);
            // kept in memory only: the disk tier takes a block when it
            // leaves memory, and a written-through block leaves unspilled
            // (it is in the store; a reader who still wants it fetches it,
            // and that copy is spilled): writing every produced byte to
            // disk cost more CPU than the rest of the produce path
            self.inner.cache.insert_with_properties(
                BlockKey::new(segment, block),
                object.slice(range.start as usize..range.end as usize),
                HybridCacheProperties::default().with_location(Location::InMem),
            );
            metrics::CACHE_WRITE_THROUGH_BLOCKS.inc();
        }
    }

    /// Read `range` of the object `segment` (of `object_bytes` bytes)
    /// through the cache. The bytes are not verified here.
    pub async fn read(
        &self,
        segment: SegmentId,
        range: Range<u64>,
        object_bytes: u64,
    ) -> FetchResult<Bytes> {
        Ok(join_parts(
            self.read_parts(segment, range, object_bytes).await?,
        ))
    }

    /// Read `range` like [`BlockCache::read`], as the blocks' own slices
    /// of it, in order, instead of one buffer: for a reader that needs
    /// only part of the range and would otherwise copy all of it.
    pub async fn read_parts(
        &self,
        segment: SegmentId,
        range: Range<u64>,
        object_bytes: u64,
    ) -> FetchResult<Vec<Bytes>> {
        if check_range(segment, &range, object_bytes)? {
            return Ok(Vec::new());
        }
        let blocks = self.inner.blocks_of(&range);
        let fetched = self.fetch_blocks(segment, &blocks, object_bytes).await?;
        match self
            .inner
            .cut(segment, &range, object_bytes, blocks, fetched)
        {
            Err(FetchError::Corrupt { reason, .. }) => {
                // a damaged entry foyer's checksum did not catch
                warn!(%segment, reason, "cached block failed its length check; refetching");
                metrics::CACHE_REFETCHES.inc();
                self.refetch_parts(segment, range, object_bytes).await
            }
            other => other,
        }
    }

    /// The blocks `blocks` of `segment`, fetched at once.
    async fn fetch_blocks(
        &self,
        segment: SegmentId,
        blocks: &std::ops::RangeInclusive<u64>,
        object_bytes: u64,
    ) -> FetchResult<Vec<Bytes>> {
        futures::future::try_join_all(
            blocks
                .clone()
                .map(|block| self.inner.block(segment, block, object_bytes, Origin::Read)),
        )
        .await
    }

    /// Read `range` like [`BlockCache::read`], but with every block fetched
    /// again from the object store and replacing the cached copy: for
    /// cached bytes that failed verification.
    pub async fn refetch(
        &self,
        segment: SegmentId,
        range: Range<u64>,
        object_bytes: u64,
    ) -> FetchResult<Bytes> {
        Ok(join_parts(
            self.refetch_parts(segment, range, object_bytes).await?,
        ))
    }

    /// [`BlockCache::refetch`], as the blocks' own slices of the range.
    pub async fn refetch_parts(
        &self,
        segment: SegmentId,
        range: Range<u64>,
        object_bytes: u64,
    ) -> FetchResult<Vec<Bytes>> {
        if check_range(segment, &range, object_bytes)? {
            return Ok(Vec::new());
        }
        let blocks = self.inner.blocks_of(&range);
        let fetched = futures::future::try_join_all(blocks.clone().map(|block| async move {
            let block_range = self.inner.block_range(block, object_bytes);
            let bytes = self
                .inner
                .get_block(segment, block_range, Origin::Bypass)
                .await
                .map_err(|error| store_failure(segment, &error))?;
            // a newer insert replaces the entry in memory and on disk
            self.inner
                .cache
                .insert(BlockKey::new(segment, block), bytes.clone());
            Ok::<_, FetchError>(bytes)
        }))
        .await?;
        self.inner
            .cut(segment, &range, object_bytes, blocks, fetched)
    }

    /// A derived value cached under (`object`, `slot`): from memory or disk,
    /// else computed once by `compute` (concurrent misses share it) and
    /// kept. Used for archive row groups re-encoded as record batches;
    /// `object` must be an id no segment shares (a fresh ULID). A failed
    /// computation is reported through `on_error`; a failure of the cache
    /// itself is `Unavailable`.
    pub async fn get_or_compute<F, Fut, E>(
        &self,
        object: u128,
        slot: u64,
        compute: F,
        on_error: impl FnOnce(&E) -> FetchError,
    ) -> FetchResult<Bytes>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Bytes, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let key = BlockKey {
            segment: object,
            block: slot,
        };
        match self.inner.cache.get_or_fetch(&key, compute).await {
            Ok(entry) => {
                count_lookup(entry.source());
                Ok(entry.value().clone())
            }
            Err(error) => Err(match error.downcast_ref::<E>() {
                Some(compute_error) => on_error(compute_error),
                None => FetchError::Unavailable(error.to_string()),
            }),
        }
    }

    /// Drop the blocks covering `range` from both tiers (they failed
    /// verification).
    pub fn evict(&self, segment: SegmentId, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        for block in self.inner.blocks_of(&range) {
            self.inner.cache.remove(&BlockKey::new(segment, block));
        }
    }

    /// Whether block `block` of `segment` is cached (a hint: may be a false
    /// positive on a hash collision).
    pub fn contains(&self, segment: SegmentId, block: u64) -> bool {
        self.inner.cache.contains(&BlockKey::new(segment, block))
    }

    /// Wait for the disk tier's pending writes and close it.
    pub async fn close(&self) {
        if let Err(error) = self.inner.cache.close().await {
            warn!(%error, "closing the read cache failed");
        }
    }
}

fn create_dir(dir: &Path) -> Result<(), CacheError> {
    std::fs::create_dir_all(dir).map_err(|source| CacheError::Dir {
        dir: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use object_store::memory::InMemory;
    use object_store::PutPayload;
    use sluice_metadata::embedded::EmbeddedStore;
    use sluice_metadata::model::{Catalog, IndexEntry, SegmentRef};
    use sluice_segment::batch::{self, NewRecord};
    use sluice_segment::SegmentBuilder;

    use super::*;
    use crate::counting::CountingStore;
    use crate::Reader;
    use sluice_metadata::view::ClusterView;

    const BLOCK: u64 = 4096;
    const TOPIC: &str = "topic-id";

    /// One stored segment of three partition chunks of about 10 KB each,
    /// so each chunk spans several 4 KiB blocks.
    struct Fixture {
        dir: tempfile::TempDir,
        counting: Arc<CountingStore>,
        plain: Arc<dyn ObjectStore>,
        view: Arc<ClusterView>,
        segment: SegmentId,
        object: Bytes,
        entries: Vec<IndexEntry>,
    }

    /// Bytes without repeats, so a probe finds the one place they are stored.
    fn noise(seed: i32, len: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ seed as u64;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 56) as u8
            })
            .collect()
    }

    impl Fixture {
        async fn new() -> Self {
            let mut builder = SegmentBuilder::new();
            for partition in 0..3 {
                let records: Vec<NewRecord> = (0..10)
                    .map(|i| NewRecord {
                        key: Some(Bytes::from(format!("p{partition}-{i}"))),
                        value: Some(Bytes::from(noise(partition * 100 + i, 1000))),
                        headers: vec![],
                        timestamp_ms: 1_000 + i as i64,
                    })
                    .collect();
                let bytes = batch::encode(&records).unwrap();
                let summary = batch::validate(&bytes).unwrap();
                builder.add(TOPIC, partition, bytes, summary);
            }
            let (object, footer) = builder.finish();
            let segment = SegmentId::generate();
            let plain: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            plain
                .put(&segment.path(), PutPayload::from_bytes(object.clone()))
                .await
                .unwrap();
            let entries = footer
                .chunks
                .iter()
                .map(|chunk| IndexEntry {
                    base_offset: 0,
                    offset_count: chunk.offset_count,
                    batch_count: chunk.batch_count,
                    segment: SegmentRef::of(segment.0),
                    start: chunk.start,
                    len: chunk.len,
                    crc: chunk.crc,
                    max_timestamp: chunk.max_timestamp,
                    object_bytes: object.len() as u64,
                    committed_ms: 0,
                    archive: None,
                })
                .collect();
            let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "t");
            Self {
                dir: tempfile::tempdir().unwrap(),
                counting: Arc::new(CountingStore::new(plain.clone())),
                plain,
                view: ClusterView::start(catalog).await.unwrap(),
                segment,
                object,
                entries,
            }
        }

        fn config(&self, readahead_blocks: u64) -> CacheConfig {
            CacheConfig {
                memory_bytes: 1 << 20,
                disk_bytes: 16 << 20,
                dir: self.dir.path().join("cache"),
                block_bytes: BLOCK,
                readahead_blocks,
                readahead_in_flight_max: 4,
                read_bytes_max: 1 << 20,
            }
        }

        async fn cache(&self, readahead_blocks: u64) -> BlockCache {
            BlockCache::open(&self.config(readahead_blocks), self.counting.clone())
                .await
                .unwrap()
        }

        fn reader(&self, cache: &BlockCache) -> Reader {
            Reader::new(self.counting.clone(), self.view.clone()).with_cache(cache.clone())
        }

        /// The entry's bytes as the uncached reader serves them.
        async fn expected(&self, index: usize) -> Bytes {
            Reader::new(self.plain.clone(), self.view.clone())
                .read_entry(TOPIC, index as i32, &self.entries[index])
                .await
                .unwrap()
        }

        async fn read(&self, reader: &Reader, index: usize) -> Bytes {
            reader
                .read_entry(TOPIC, index as i32, &self.entries[index])
                .await
                .unwrap()
        }

        fn blocks(&self, indices: &[usize]) -> BTreeSet<u64> {
            indices
                .iter()
                .flat_map(|&i| {
                    let e = &self.entries[i];
                    e.start / BLOCK..=(e.start + u64::from(e.len) - 1) / BLOCK
                })
                .collect()
        }

        /// The path of foyer's (only) device file under the cache dir.
        fn device_files(&self) -> Vec<PathBuf> {
            std::fs::read_dir(self.dir.path().join("cache"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_file())
                .collect()
        }
    }

    #[tokio::test]
    async fn a_second_read_of_a_range_costs_no_get() {
        let f = Fixture::new().await;
        let cache = f.cache(0).await;
        let reader = f.reader(&cache);
        let first = f.read(&reader, 1).await;
        let blocks = f.blocks(&[1]).len() as u64;
        assert!(blocks >= 3, "the chunk spans several blocks");
        assert_eq!(f.counting.gets(), blocks);
        assert_eq!(f.read(&reader, 1).await, first);
        assert_eq!(
            f.counting.gets(),
            blocks,
            "second read is served by the cache"
        );
        assert_eq!(first, f.expected(1).await);
    }

    #[tokio::test]
    async fn reads_spanning_blocks_fetch_each_block_once() {
        let f = Fixture::new().await;
        let cache = f.cache(0).await;
        let reader = f.reader(&cache);
        for index in [1, 0, 2, 1, 0] {
            assert_eq!(f.read(&reader, index).await, f.expected(index).await);
        }
        // neighbouring chunks share their boundary blocks
        assert_eq!(f.counting.gets(), f.blocks(&[0, 1, 2]).len() as u64);
        // whole blocks, clamped to the object's end
        let last = f.object.len() as u64 / BLOCK;
        assert!(f.blocks(&[2]).contains(&last));
        assert_eq!(f.counting.get_bytes(), {
            let blocks = f.blocks(&[0, 1, 2]);
            blocks
                .iter()
                .map(|b| ((b + 1) * BLOCK).min(f.object.len() as u64) - b * BLOCK)
                .sum::<u64>()
        });
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_block_share_one_get() {
        let f = Fixture::new().await;
        let cache = f.cache(0).await;
        let object_bytes = f.object.len() as u64;
        let reads = (0..16).map(|i| cache.read(f.segment, i * 10..i * 10 + 100, object_bytes));
        let results = futures::future::try_join_all(reads).await.unwrap();
        for (i, bytes) in results.iter().enumerate() {
            assert_eq!(bytes, &f.object.slice(i * 10..i * 10 + 100));
        }
        assert_eq!(f.counting.gets(), 1);
    }

    #[tokio::test]
    async fn written_through_objects_are_read_without_a_get() {
        let f = Fixture::new().await;
        let cache = f.cache(1).await;
        cache.insert_object(f.segment, &f.object);
        let reader = f.reader(&cache);
        for index in 0..3 {
            assert_eq!(f.read(&reader, index).await, f.expected(index).await);
        }
        assert_eq!(f.counting.gets(), 0);
    }

    #[tokio::test]
    async fn the_disk_tier_survives_a_reopen() {
        let f = Fixture::new().await;
        let cache = f.cache(0).await;
        cache.insert_object(f.segment, &f.object);
        cache.close().await;
        drop(cache);
        let disk_hits = metrics::CACHE_HITS.with_label_values(&["disk"]).get();
        let reopened = f.cache(0).await;
        let reader = f.reader(&reopened);
        for index in 0..3 {
            assert_eq!(f.read(&reader, index).await, f.expected(index).await);
        }
        assert_eq!(f.counting.gets(), 0, "served by the reopened disk tier");
        assert!(metrics::CACHE_HITS.with_label_values(&["disk"]).get() > disk_hits);
    }

    #[tokio::test]
    async fn a_corrupted_disk_file_is_refetched_never_served() {
        let f = Fixture::new().await;
        let cache = f.cache(0).await;
        cache.insert_object(f.segment, &f.object);
        cache.close().await;
        drop(cache);
        // damage every cached copy of the object's bytes on disk
        let mut damaged = 0;
        for path in f.device_files() {
            let mut file = std::fs::read(&path).unwrap();
            for block in f.object.chunks(BLOCK as usize) {
                let probe = &block[block.len() / 2..block.len() / 2 + 32];
                let hits: Vec<usize> = file
                    .windows(probe.len())
                    .enumerate()
                    .filter(|(_, w)| *w == probe)
                    .map(|(at, _)| at)
                    .collect();
                if hits.is_empty() {
                    continue;
                }
                for at in hits {
                    for byte in &mut file[at..at + probe.len()] {
                        *byte ^= 0x5a;
                    }
                }
                damaged += 1;
            }
            std::fs::write(&path, file).unwrap();
        }
        assert_eq!(
            damaged,
            f.object.len().div_ceil(BLOCK as usize),
            "every block found on disk"
        );
        let reopened = f.cache(0).await;
        let reader = f.reader(&reopened);
        for index in 0..3 {
            assert_eq!(f.read(&reader, index).await, f.expected(index).await);
        }
        // every damaged block came again from the object store
        assert_eq!(f.counting.gets(), f.blocks(&[0, 1, 2]).len() as u64);
    }

    #[tokio::test]
    async fn bad_bytes_in_the_cache_are_replaced_by_one_refetch() {
        let f = Fixture::new().await;
        let cache = f.cache(0).await;
        // a cache that holds wrong bytes for the object (e.g. a bit flip
        // that foyer's own checksum did not see)
        let entry = &f.entries[1];
        let mut poisoned = f.object.to_vec();
        poisoned[entry.start as usize + 100] ^= 0xff;
        cache.insert_object(f.segment, &Bytes::from(poisoned));
        let refetches = metrics::CACHE_REFETCHES.get();
        let reader = f.reader(&cache);
        assert_eq!(f.read(&reader, 1).await, f.expected(1).await);
        assert_eq!(metrics::CACHE_REFETCHES.get(), refetches + 1);
        assert_eq!(f.counting.gets(), f.blocks(&[1]).len() as u64);
        // the good bytes are cached now
        assert_eq!(f.read(&reader, 1).await, f.expected(1).await);
        assert_eq!(f.counting.gets(), f.blocks(&[1]).len() as u64);
    }

    #[tokio::test]
    async fn a_partial_read_of_bad_cached_bytes_is_refetched_never_served() {
        let f = Fixture::new().await;
        let cache = f.cache(0).await;
        let entry = &f.entries[1];
        // a flipped byte in the last record of the entry's batch
        let mut poisoned = f.object.to_vec();
        poisoned[(entry.start + u64::from(entry.len)) as usize - 10] ^= 0xff;
        cache.insert_object(f.segment, &Bytes::from(poisoned));
        let refetches = metrics::CACHE_REFETCHES.get();
        let chunk = f
            .reader(&cache)
            .read_part(TOPIC, 1, entry, 0, 1 << 20, true)
            .await
            .unwrap();
        assert_eq!(chunk.batches, f.expected(1).await);
        assert_eq!(
            (chunk.base_offset, chunk.end_offset),
            (0, entry.end_offset())
        );
        assert_eq!(metrics::CACHE_REFETCHES.get(), refetches + 1);
        assert_eq!(f.counting.gets(), f.blocks(&[1]).len() as u64);
    }

    #[tokio::test]
    async fn a_range_bad_in_the_store_too_is_reported_corrupt() {
        let f = Fixture::new().await;
        let cache = f.cache(0).await;
        let mut entry = f.entries[0].clone();
        entry.crc ^= 1;
        let error = f
            .reader(&cache)
            .read_entry(TOPIC, 0, &entry)
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::Corrupt { .. }), "{error:?}");
        // read twice: once through the cache, once after evicting
        assert_eq!(f.counting.gets(), 2 * f.blocks(&[0]).len() as u64);
    }

    #[tokio::test]
    async fn readahead_fetches_the_next_block_and_stops_at_the_end() {
        let f = Fixture::new().await;
        let cache = f.cache(1).await;
        let object_bytes = f.object.len() as u64;
        let readaheads = metrics::READAHEAD_GETS.get();
        cache.read(f.segment, 0..10, object_bytes).await.unwrap();
        for _ in 0..200 {
            if f.counting.gets() == 2 && cache.contains(f.segment, 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(f.counting.gets(), 2);
        assert!(metrics::READAHEAD_GETS.get() > readaheads);
        cache
            .read(f.segment, BLOCK..BLOCK + 10, object_bytes)
            .await
            .unwrap();
        assert_eq!(f.counting.gets(), 2, "block 1 came from the readahead");
        // the last block has nothing after it
        let last = (object_bytes - 1) / BLOCK;
        cache
            .read(f.segment, last * BLOCK..object_bytes, object_bytes)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(f.counting.gets(), 3);
    }

    #[tokio::test]
    async fn entries_without_an_object_length_use_a_plain_range_get() {
        let f = Fixture::new().await;
        let cache = f.cache(1).await;
        let mut entry = f.entries[2].clone();
        entry.object_bytes = 0;
        let reader = f.reader(&cache);
        for _ in 0..2 {
            let bytes = reader.read_entry(TOPIC, 2, &entry).await.unwrap();
            assert_eq!(bytes, f.expected(2).await);
        }
        assert_eq!(f.counting.gets(), 2);
        assert_eq!(f.counting.get_bytes(), 2 * u64::from(entry.len));
    }
}
