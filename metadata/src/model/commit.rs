//! Partition heads and index entries: reading them, and the commit of a
//! flush (one transaction comparing every head it advances).

use super::*;

impl Catalog {
    /// Decode a head key-value.
    pub fn decode_head(&self, kv: &KeyValue) -> ModelResult<HeadState> {
        Ok(HeadState {
            head: decode_json(kv)?,
            mod_revision: kv.mod_revision,
        })
    }

    /// Decode an index key-value.
    pub fn decode_index_entry(&self, kv: &KeyValue) -> ModelResult<IndexEntry> {
        Ok(decode_json(kv)?)
    }

    /// Read one partition's head.
    pub async fn head(&self, topic_id: &str, partition: i32) -> ModelResult<HeadState> {
        match self
            .store
            .get(&self.keys().head(topic_id, partition))
            .await?
        {
            Some(kv) => self.decode_head(&kv),
            None => Ok(HeadState::default()),
        }
    }

    /// Try to commit `chunks` in one transaction, expecting each partition
    /// head at `expected[i]`. The caller splits flushes that exceed the
    /// store's operation limit (see [`Catalog::commit_ops`]).
    pub async fn try_commit(
        &self,
        chunks: &[ChunkCommit],
        expected: &[HeadState],
    ) -> ModelResult<CommitOutcome> {
        let next_heads: Vec<Head> = chunks
            .iter()
            .zip(expected)
            .map(|(chunk, state)| {
                let mut head = state.head.clone();
                head.next_offset += i64::from(chunk.offset_count);
                head
            })
            .collect();
        self.try_commit_heads(chunks, expected, next_heads, &[])
            .await
    }

    /// [`Catalog::try_commit`] writing the heads the caller computed from
    /// `expected` (with producer state): `next_heads[i]` is written only if
    /// the head is still at `expected[i]`.
    ///
    /// The transaction also requires that GC has not marked `objects` (the
    /// paths of the objects the chunks live in): a writer paused between
    /// upload and commit for longer than the GC grace (a zombie) may find
    /// its object deleted, and must not commit index entries that point at
    /// nothing. Such a commit fails with [`ModelError::Collected`].
    pub async fn try_commit_heads(
        &self,
        chunks: &[ChunkCommit],
        expected: &[HeadState],
        next_heads: Vec<Head>,
        objects: &[String],
    ) -> ModelResult<CommitOutcome> {
        debug_assert_eq!(chunks.len(), expected.len());
        debug_assert_eq!(chunks.len(), next_heads.len());
        let mut next_heads = next_heads.into_iter();
        let committed_ms = self.clock.now_ms();
        let mut txn = Txn::new();
        let mut topics: BTreeMap<&str, Revision> = BTreeMap::new();
        let mut base_offsets = Vec::with_capacity(chunks.len());
        let mut heads = Vec::with_capacity(chunks.len());
        for (chunk, state) in chunks.iter().zip(expected) {
            topics.insert(&chunk.topic_name, chunk.topic_create_revision);
            let head_key = self.keys().head(&chunk.topic_id, chunk.partition);
            txn.compares.push(Compare::mod_revision(
                head_key.clone(),
                CmpOp::Equal,
                state.mod_revision,
            ));
            let base = state.head.next_offset;
            let new_head = next_heads.next().unwrap_or_default();
            debug_assert_eq!(new_head.next_offset, base + i64::from(chunk.offset_count));
            let entry = chunk.index_entry(base, committed_ms);
            txn.success
                .push(TxnOp::put(head_key.clone(), encode_json(&new_head)));
            txn.success.push(TxnOp::put(
                self.keys()
                    .index_entry(&chunk.topic_id, chunk.partition, base),
                encode_json(&entry),
            ));
            txn.failure.push(TxnOp::get(head_key));
            base_offsets.push(base);
            heads.push(new_head);
        }
        for (name, create_revision) in &topics {
            txn.compares.push(Compare::create_revision(
                self.keys().topic(name),
                CmpOp::Equal,
                *create_revision,
            ));
            txn.failure.push(TxnOp::get(self.keys().topic(name)));
        }
        for object in objects {
            let mark = self.keys().gc_mark(object);
            txn.compares.push(Compare::absent(mark.clone()));
            txn.failure.push(TxnOp::get(mark));
        }
        let response = self.store.txn(txn).await?;
        if response.succeeded {
            return Ok(CommitOutcome::Committed {
                base_offsets,
                heads: heads
                    .into_iter()
                    .map(|head| HeadState {
                        head,
                        mod_revision: response.revision,
                    })
                    .collect(),
                revision: response.revision,
            });
        }
        let mut current = Vec::with_capacity(chunks.len());
        let mut results = response.responses.iter();
        for _ in chunks {
            let state = match results.next() {
                Some(TxnOpResponse::Get(kvs)) => match kvs.first() {
                    Some(kv) => self.decode_head(kv)?,
                    None => HeadState::default(),
                },
                _ => HeadState::default(),
            };
            current.push(state);
        }
        let mut missing_topics = Vec::new();
        for (name, create_revision) in &topics {
            let alive = match results.next() {
                Some(TxnOpResponse::Get(kvs)) => kvs
                    .first()
                    .is_some_and(|kv| kv.create_revision == *create_revision),
                _ => false,
            };
            if !alive {
                missing_topics.push(name.to_string());
            }
        }
        for object in objects {
            if matches!(results.next(), Some(TxnOpResponse::Get(kvs)) if !kvs.is_empty()) {
                return Err(ModelError::Collected(object.clone()));
            }
        }
        Ok(CommitOutcome::Conflict {
            heads: current,
            missing_topics,
        })
    }

    /// Operations one commit of `chunks` partitions over `topics` topics
    /// in `objects` objects counts against the store's per-transaction
    /// limit (the largest of its compares, success and failure branches).
    pub fn commit_ops(chunks: usize, topics: usize, objects: usize) -> usize {
        (2 * chunks).max(chunks + topics + objects)
    }
}

/// Most compare-and-swap rounds [`Catalog::advance_log_start`] tries
/// before giving up (each lost round means a commit landed meanwhile).
const LOG_START_ATTEMPTS_MAX: u32 = 16;

impl Catalog {
    /// Move a partition's log start forward to `offset` (Kafka's
    /// DeleteRecords; -1 means the high watermark), guarded by the head and
    /// the topic. Records below it are no longer readable; the compactor
    /// drops the runs that lie wholly below it. A start at or below the
    /// current one changes nothing. Returns the head as stored.
    pub async fn advance_log_start(
        &self,
        topic: &Topic,
        partition: i32,
        offset: i64,
    ) -> ModelResult<HeadState> {
        let key = self.keys().head(&topic.record.id, partition);
        for _ in 0..LOG_START_ATTEMPTS_MAX {
            let current = self.head(&topic.record.id, partition).await?;
            let high_watermark = current.head.next_offset;
            let wanted = if offset == -1 { high_watermark } else { offset };
            if wanted < 0 || wanted > high_watermark {
                return Err(ModelError::OutOfRange(format!(
                    "offset {offset} is outside 0..={high_watermark} of {}/{partition}",
                    topic.record.name
                )));
            }
            if wanted <= current.head.log_start_offset {
                return Ok(current);
            }
            let mut head = current.head.clone();
            head.log_start_offset = wanted;
            let response = self
                .store()
                .txn(
                    Txn::new()
                        .when([
                            Compare::mod_revision(key.clone(), CmpOp::Equal, current.mod_revision),
                            Compare::create_revision(
                                self.keys().topic(&topic.record.name),
                                CmpOp::Equal,
                                topic.create_revision,
                            ),
                        ])
                        .and_then([TxnOp::put(key.clone(), encode_json(&head))]),
                )
                .await?;
            if response.succeeded {
                return Ok(HeadState {
                    head,
                    mod_revision: response.revision,
                });
            }
            if self
                .get_topic(&topic.record.name)
                .await?
                .map(|t| t.create_revision)
                != Some(topic.create_revision)
            {
                return Err(ModelError::UnknownTopic(topic.record.name.clone()));
            }
        }
        Err(ModelError::Concurrent(topic.record.name.clone()))
    }
}
