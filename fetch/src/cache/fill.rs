//! How the cache fills a miss: a block from memory, disk, its owner node or
//! one ranged GET (concurrent misses share it), bounded readahead after a
//! read's miss, the assembly of a range from blocks, and the accounting of
//! lookups.

use super::*;

impl Inner {
    /// Cut `range` out of the fetched `blocks`: a slice of each, in order.
    pub(super) fn cut(
        &self,
        segment: SegmentId,
        range: &Range<u64>,
        object_bytes: u64,
        blocks: std::ops::RangeInclusive<u64>,
        fetched: Vec<Bytes>,
    ) -> FetchResult<Vec<Bytes>> {
        let mut parts = Vec::with_capacity(fetched.len());
        for (block, bytes) in blocks.zip(fetched) {
            let block_range = self.block_range(block, object_bytes);
            if bytes.len() as u64 != block_range.end - block_range.start {
                return Err(FetchError::corrupt(
                    segment.to_string(),
                    "block has the wrong length",
                ));
            }
            let from = range.start.max(block_range.start) - block_range.start;
            let to = range.end.min(block_range.end) - block_range.start;
            parts.push(bytes.slice(from as usize..to as usize));
        }
        Ok(parts)
    }

    pub(super) fn block_range(&self, block: u64, object_bytes: u64) -> Range<u64> {
        let start = block * self.block_bytes;
        start..(start + self.block_bytes).min(object_bytes)
    }

    pub(super) fn blocks_of(&self, range: &Range<u64>) -> std::ops::RangeInclusive<u64> {
        debug_assert!(!range.is_empty());
        range.start / self.block_bytes..=(range.end - 1) / self.block_bytes
    }

    /// One block, from memory, disk or (one shared GET) the object store.
    pub(super) async fn block(
        self: &Arc<Self>,
        segment: SegmentId,
        block: u64,
        object_bytes: u64,
        origin: Origin,
    ) -> FetchResult<Bytes> {
        let key = BlockKey::new(segment, block);
        let range = self.block_range(block, object_bytes);
        let inner = self.clone();
        let fetch_range = range.clone();
        let lookup = self.cache.get_or_fetch(&key, move || async move {
            inner
                .fetch_block(segment, fetch_range, object_bytes, origin)
                .await
        });
        match lookup.await {
            Ok(entry) => {
                if origin == Origin::Read {
                    count_lookup(entry.source());
                }
                Ok(entry.value().clone())
            }
            Err(error) => {
                if let Some(store_error) = error.downcast_ref::<object_store::Error>() {
                    return Err(store_failure(segment, store_error));
                }
                // the cache itself failed (e.g. a disk read error): the
                // object store still has the bytes
                warn!(%segment, block, %error, "read cache failed; reading the object store");
                self.get_block(segment, range, Origin::Bypass)
                    .await
                    .map_err(|error| store_failure(segment, &error))
            }
        }
    }

    /// A missing block: from its owner when that is another node (and
    /// the block was not asked for by a peer), else (or when the owner
    /// fails) one ranged GET. A read's fetch also starts readahead.
    pub(super) async fn fetch_block(
        self: &Arc<Self>,
        segment: SegmentId,
        range: Range<u64>,
        object_bytes: u64,
        origin: Origin,
    ) -> object_store::Result<Bytes> {
        let block = range.start / self.block_bytes;
        let from_peer = match (origin, self.peers.get()) {
            (Origin::Read | Origin::Readahead, Some(peers)) => match peers.owner(segment, block) {
                Some(owner) => {
                    peers
                        .fetch(
                            &owner,
                            segment,
                            block,
                            object_bytes,
                            range.end - range.start,
                        )
                        .await
                }
                None => None,
            },
            _ => None,
        };
        let bytes = match from_peer {
            Some(bytes) => bytes,
            None => self.get_block(segment, range, origin).await?,
        };
        if origin == Origin::Read {
            self.start_readahead(segment, block, object_bytes);
        }
        Ok(bytes)
    }

    /// The ranged GET of one block, checked to be as long as asked.
    pub(super) async fn get_block(
        self: &Arc<Self>,
        segment: SegmentId,
        range: Range<u64>,
        origin: Origin,
    ) -> object_store::Result<Bytes> {
        metrics::OBJECT_GETS.inc();
        if origin == Origin::Readahead {
            metrics::READAHEAD_GETS.inc();
        }
        let expected = range.end - range.start;
        let bytes = self.store.get_range(&segment.path(), range).await?;
        metrics::OBJECT_GET_BYTES.inc_by(bytes.len() as u64);
        if bytes.len() as u64 != expected {
            // e.g. a peer's request with a wrong object length: never cache it
            return Err(object_store::Error::Generic {
                store: "sluice",
                source: format!("ranged GET returned {} bytes, not {expected}", bytes.len()).into(),
            });
        }
        Ok(bytes)
    }

    /// Fetch the blocks after `block` in the background, within the
    /// node-wide limit and never past the object's end.
    pub(super) fn start_readahead(
        self: &Arc<Self>,
        segment: SegmentId,
        block: u64,
        object_bytes: u64,
    ) {
        for next in block + 1..=block.saturating_add(self.readahead_blocks) {
            if next.saturating_mul(self.block_bytes) >= object_bytes {
                break;
            }
            if self.cache.contains(&BlockKey::new(segment, next)) {
                continue;
            }
            let Ok(permit) = self.readahead_permits.clone().try_acquire_owned() else {
                metrics::READAHEAD_SKIPPED.inc();
                break;
            };
            tokio::spawn(readahead(self.clone(), segment, next, object_bytes, permit));
        }
    }
}

/// One readahead (boxed: it runs the same lookup that spawns it).
pub(super) fn readahead(
    inner: Arc<Inner>,
    segment: SegmentId,
    block: u64,
    object_bytes: u64,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> BoxFuture<'static, ()> {
    async move {
        let _permit = permit;
        if let Err(error) = inner
            .block(segment, block, object_bytes, Origin::Readahead)
            .await
        {
            tracing::debug!(%segment, block, %error, "readahead failed");
        }
    }
    .boxed()
}

pub(super) fn count_lookup(source: Source) {
    let (memory_hit, disk_hit) = match source {
        Source::Memory => (true, false),
        Source::Disk => (false, true),
        Source::Outer => (false, false),
    };
    if memory_hit {
        metrics::CACHE_HITS.with_label_values(&["memory"]).inc();
        return;
    }
    metrics::CACHE_MISSES.with_label_values(&["memory"]).inc();
    if disk_hit {
        metrics::CACHE_HITS.with_label_values(&["disk"]).inc();
    } else {
        metrics::CACHE_MISSES.with_label_values(&["disk"]).inc();
    }
}

pub(super) fn store_failure(segment: SegmentId, error: &object_store::Error) -> FetchError {
    match error {
        object_store::Error::NotFound { .. } => {
            FetchError::corrupt(segment.to_string(), "segment object is missing")
        }
        other => FetchError::Unavailable(other.to_string()),
    }
}

/// Check that `range` lies inside an object of `object_bytes`; `true` when
/// it is empty (nothing to read).
pub(super) fn check_range(
    segment: SegmentId,
    range: &Range<u64>,
    object_bytes: u64,
) -> FetchResult<bool> {
    if range.start > range.end || range.end > object_bytes {
        return Err(FetchError::corrupt(
            segment.to_string(),
            "index entry range lies outside its object",
        ));
    }
    Ok(range.is_empty())
}

/// `parts` as one buffer (the part itself when there is one, no copy).
pub fn join_parts(mut parts: Vec<Bytes>) -> Bytes {
    if parts.len() == 1 {
        return parts.swap_remove(0);
    }
    let mut joined = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
    for part in &parts {
        joined.extend_from_slice(part);
    }
    joined.freeze()
}
