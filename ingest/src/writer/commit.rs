//! The commit stage: one metadata transaction per flush (split at the
//! store's operations limit), in seal order, retried on lost
//! compare-and-swaps with the current heads, then the waiters answered.

use super::*;

pub(super) async fn commit_loop(
    config: WriterConfig,
    view: Arc<ClusterView>,
    mut uploaded: mpsc::Receiver<(Sealed, IngestResult<()>)>,
) {
    while let Some((segment, result)) = uploaded.recv().await {
        if let Err(error) = result {
            fail_all(segment.waiters, &error);
            continue;
        }
        commit_segment(&config, &view, segment).await;
    }
}

/// Commit one uploaded segment and answer its waiters.
pub(super) async fn commit_segment(config: &WriterConfig, view: &ClusterView, segment: Sealed) {
    let chunks: Vec<ChunkCommit> = segment
        .footer
        .chunks
        .iter()
        .zip(&segment.topics)
        .map(|(chunk, topic)| ChunkCommit {
            topic_name: topic.record.name.clone(),
            topic_create_revision: topic.create_revision,
            topic_id: chunk.topic_id.clone(),
            partition: chunk.partition,
            segment: segment.id.0,
            start: chunk.start,
            len: chunk.len,
            crc: chunk.crc,
            offset_count: chunk.offset_count,
            batch_count: chunk.batch_count,
            max_timestamp: chunk.max_timestamp,
            object_bytes: segment.object.len() as u64,
        })
        .collect();
    // per chunk: its idempotent batches in order, with their offset deltas
    // and whether it holds a batch of an epoch its producer has since
    // abandoned (see `idempotence`): such a chunk is not committed, its
    // other batches get a retriable error and are sent again
    let mut sequenced: Vec<Vec<(ProducerBatch, u32)>> = vec![Vec::new(); chunks.len()];
    let mut fenced = vec![false; chunks.len()];
    for waiter in &segment.waiters {
        if let Some((batch, ticket)) = &waiter.producer {
            sequenced[waiter.slot.chunk].push((*batch, waiter.slot.offset_delta));
            if ticket.fenced() {
                debug!(
                    producer_id = batch.producer_id,
                    epoch = batch.epoch,
                    "batch of an abandoned producer epoch; its chunk is not committed"
                );
                fenced[waiter.slot.chunk] = true;
            }
        }
    }
    // per chunk: its base offset, or why it failed
    let mut outcomes: Vec<IngestResult<i64>> = vec![Err(IngestError::ShuttingDown); chunks.len()];
    for (i, _) in fenced.iter().enumerate().filter(|(_, f)| **f) {
        metrics::FENCED_CHUNKS.inc();
        outcomes[i] = Err(IngestError::SequenceRecheck(
            "a batch of an abandoned producer epoch shares this chunk; not committed".into(),
        ));
    }
    // two operations per chunk, plus the GC fence of the one object
    let per_txn = (config.txn_ops_max.saturating_sub(1) / 2).max(1);
    let object = [segment.id.path_text()];
    let indices: Vec<usize> = (0..chunks.len()).filter(|&i| !fenced[i]).collect();
    let shared = Shared {
        config,
        view,
        chunks: &chunks,
        sequenced: &sequenced,
        object: &object,
    };
    for group in indices.chunks(per_txn) {
        commit_group(&shared, group, &mut outcomes).await;
    }
    for waiter in segment.waiters {
        let result = match &outcomes[waiter.slot.chunk] {
            Ok(base) => {
                metrics::PRODUCE_RECORDS.inc_by(u64::from(waiter.records));
                metrics::PRODUCE_BYTES.inc_by(waiter.bytes as u64);
                Ok(base + i64::from(waiter.slot.offset_delta))
            }
            Err(error) => Err(error.clone()),
        };
        metrics::PRODUCE_LATENCY.observe(waiter.accepted_at.elapsed().as_secs_f64());
        waiter.answer(result);
    }
}

/// What every commit transaction of one segment shares.
#[derive(Clone, Copy)]
pub(super) struct Shared<'a> {
    config: &'a WriterConfig,
    view: &'a ClusterView,
    chunks: &'a [ChunkCommit],
    /// Per chunk: its idempotent batches with their offset deltas.
    sequenced: &'a [Vec<(ProducerBatch, u32)>],
    /// The segment's object path: the commit requires GC not to have marked it.
    object: &'a [String],
}

/// Commit the chunks `group` of `chunks`, retrying lost compare-and-swaps
/// with the current heads. Each attempt computes every partition's new head
/// from the head it compares, re-checking the chunk's idempotent batches
/// (`sequenced`): a chunk that fails the check is dropped with a retriable
/// error and its upload becomes garbage.
pub(super) async fn commit_group(
    shared: &Shared<'_>,
    group: &[usize],
    outcomes: &mut [IngestResult<i64>],
) {
    let Shared {
        config,
        view,
        chunks,
        sequenced,
        object,
    } = *shared;
    let mut live: Vec<usize> = group.to_vec();
    let mut expected: Vec<HeadState> = live
        .iter()
        .map(|&i| view.head(&chunks[i].topic_id, chunks[i].partition))
        .collect();
    let now_ms = view.catalog().clock().now_ms();
    for attempt in 0..config.commit_attempts_max {
        let mut next_heads = Vec::with_capacity(live.len());
        let mut checked = Vec::with_capacity(live.len());
        let mut checked_expected = Vec::with_capacity(live.len());
        for (&i, state) in live.iter().zip(expected) {
            match producers::advance(&state.head, chunks[i].offset_count, &sequenced[i], now_ms) {
                Ok(head) => {
                    next_heads.push(head);
                    checked.push(i);
                    checked_expected.push(state);
                }
                Err(error) => {
                    debug!(%error, partition = chunks[i].partition, "chunk fails its sequence check at commit");
                    outcomes[i] = Err(IngestError::SequenceRecheck(error.to_string()));
                }
            }
        }
        live = checked;
        expected = checked_expected;
        if live.is_empty() {
            return;
        }
        let batch: Vec<ChunkCommit> = live.iter().map(|&i| chunks[i].clone()).collect();
        metrics::COMMIT_TXNS.inc();
        match view
            .try_commit_heads(&batch, &expected, next_heads, object)
            .await
        {
            Ok(CommitOutcome::Committed { base_offsets, .. }) => {
                for (&i, base) in live.iter().zip(base_offsets) {
                    outcomes[i] = Ok(base);
                }
                return;
            }
            Ok(CommitOutcome::Conflict {
                heads,
                missing_topics,
            }) => {
                metrics::COMMIT_CONFLICTS.inc();
                debug!(attempt, "commit conflict; retrying with current heads");
                let mut still = Vec::with_capacity(live.len());
                let mut still_expected = Vec::with_capacity(live.len());
                for (&i, head) in live.iter().zip(heads) {
                    if missing_topics.contains(&chunks[i].topic_name) {
                        outcomes[i] = Err(IngestError::UnknownTopic(chunks[i].topic_name.clone()));
                    } else {
                        still.push(i);
                        still_expected.push(head);
                    }
                }
                live = still;
                expected = still_expected;
                if attempt >= 4 {
                    let jitter = rand::rng().random_range(0..(2 << attempt.min(6)));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
            }
            Err(error) => {
                // Not retried: a failed transaction may still have been
                // applied, and a retry could commit the data twice.
                warn!(%error, "commit failed");
                let error = IngestError::from(error);
                for &i in &live {
                    outcomes[i] = Err(error.clone());
                }
                return;
            }
        }
    }
    for &i in &live {
        outcomes[i] = Err(IngestError::CommitContention(config.commit_attempts_max));
    }
}
