//! The buffer stage: accepts appends into the one open segment, seals it
//! at `segment_max_bytes` or `flush_interval`, and hands sealed segments on.

use super::idempotence::Admission;
use super::*;

pub(super) async fn buffer_loop(
    config: WriterConfig,
    view: Arc<ClusterView>,
    in_flight: Arc<InFlight>,
    mut commands: mpsc::Receiver<Command>,
    sealed: mpsc::Sender<Sealed>,
) {
    let mut open: Option<OpenSegment> = None;
    loop {
        let deadline = open.as_ref().map(|o| o.deadline);
        let command = tokio::select! {
            command = commands.recv() => command,
            () = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            } => {
                seal(&mut open, &sealed).await;
                continue;
            }
        };
        match command {
            Some(Command::Append(append)) => {
                let mut append = *append;
                // checked here, in acceptance order, against the batches
                // accepted before it
                let producer = match append.producer {
                    None => None,
                    Some(batch) => {
                        let topic_id = append.topic.record.id.clone();
                        let head = view.head(&topic_id, append.partition);
                        let mut admission = in_flight.admit(
                            head.head.producers.get(&batch.producer_id),
                            true,
                            &topic_id,
                            append.partition,
                            batch,
                            append.reply,
                        );
                        if let Admission::Recheck(reply) = admission {
                            // this node's view may not have seen another
                            // node's commit yet: the stored head decides
                            // (rare: one metadata read on this path only)
                            match view.catalog().head(&topic_id, append.partition).await {
                                Ok(stored) => {
                                    admission = in_flight.admit(
                                        stored.head.producers.get(&batch.producer_id),
                                        false,
                                        &topic_id,
                                        append.partition,
                                        batch,
                                        reply,
                                    );
                                }
                                Err(error) => {
                                    let _ = reply.send(Err(error.into()));
                                    continue;
                                }
                            }
                        }
                        let Admission::Admitted(ticket, reply) = admission else {
                            continue; // answered, or waiting for the same batch
                        };
                        append.reply = reply;
                        Some((batch, ticket))
                    }
                };
                let segment = open.get_or_insert_with(|| OpenSegment {
                    builder: SegmentBuilder::new(),
                    topics: Vec::new(),
                    waiters: Vec::new(),
                    deadline: tokio::time::Instant::now() + config.flush_interval,
                });
                let records = append.summary.offset_count;
                let bytes = append.batches.len();
                let slot = segment.builder.add(
                    &append.topic.record.id,
                    append.partition,
                    append.batches,
                    append.summary,
                );
                if slot.chunk == segment.topics.len() {
                    segment.topics.push(append.topic);
                }
                segment.waiters.push(Waiter {
                    slot,
                    reply: append.reply,
                    _permit: append.permit,
                    accepted_at: append.accepted_at,
                    records,
                    bytes,
                    producer,
                });
                if segment.builder.body_bytes() >= config.segment_max_bytes {
                    seal(&mut open, &sealed).await;
                }
            }
            Some(Command::Seal) => seal(&mut open, &sealed).await,
            Some(Command::Close) | None => {
                seal(&mut open, &sealed).await;
                commands.close();
                // answer appends that raced with the close
                while let Some(command) = commands.recv().await {
                    if let Command::Append(append) = command {
                        let _ = append.reply.send(Err(IngestError::ShuttingDown));
                    }
                }
                return;
            }
        }
    }
}

pub(super) async fn seal(open: &mut Option<OpenSegment>, sealed: &mpsc::Sender<Sealed>) {
    let Some(segment) = open.take() else { return };
    if segment.builder.is_empty() {
        return;
    }
    let (object, footer) = segment.builder.finish();
    debug_assert_eq!(footer.chunks.len(), segment.topics.len());
    metrics::FLUSHES.inc();
    metrics::SEGMENT_BYTES.observe(object.len() as f64);
    let batch = Sealed {
        id: SegmentId::generate(),
        object,
        footer,
        topics: segment.topics,
        waiters: segment.waiters,
    };
    if let Err(mpsc::error::SendError(batch)) = sealed.send(batch).await {
        fail_all(batch.waiters, &IngestError::ShuttingDown);
    }
}

pub(super) fn fail_all(waiters: Vec<Waiter>, error: &IngestError) {
    metrics::FLUSH_FAILURES.inc();
    for waiter in waiters {
        waiter.answer(Err(error.clone()));
    }
}
