//! Fetch (topic names, v4-v12): read each partition from its fetch offset
//! within `partition_max_bytes` and the response's `max_bytes` (whole
//! batches, at least one so a consumer always moves on), and long-poll up to
//! `max_wait_ms` while fewer than `min_bytes` are available. Fetch sessions
//! are declined (session id 0), so clients send full requests.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::select_all;
use futures::FutureExt;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use sluice_metadata::view::PartitionSnapshot;
use sluice_segment::batch;
use tokio::time::Instant;

use super::KafkaContext;
use crate::error::{IngestError, IngestResult};

/// One partition asked for.
struct Wanted {
    topic_id: Option<String>,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    known: IngestResult<()>,
}

/// Answer a Fetch request.
pub async fn handle(context: &KafkaContext, request: FetchRequest) -> FetchResponse {
    let view = &context.view;
    let mut layout: Vec<(TopicName, Vec<Wanted>)> = Vec::new();
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        let found = view.topic(&name);
        let wanted = topic
            .partitions
            .into_iter()
            .map(|p| {
                let known = match &found {
                    None => Err(IngestError::UnknownTopic(name.clone())),
                    Some(t) if !(0..t.record.partitions).contains(&p.partition) => {
                        Err(IngestError::UnknownPartition {
                            topic: name.clone(),
                            partition: p.partition,
                        })
                    }
                    Some(_) => Ok(()),
                };
                Wanted {
                    topic_id: found.as_ref().map(|t| t.record.id.clone()),
                    partition: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes.max(0) as usize,
                    known,
                }
            })
            .collect();
        layout.push((topic.topic, wanted));
    }
    let max_wait =
        Duration::from_millis(request.max_wait_ms.max(0) as u64).min(context.config.fetch_wait_max);
    let deadline = Instant::now() + max_wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if request.max_bytes > 0 {
        request.max_bytes as usize
    } else {
        usize::MAX
    };
    loop {
        let (response, total, any_error) = read_all(context, &layout, max_bytes).await;
        let now = Instant::now();
        if total >= min_bytes.max(1) || any_error || now >= deadline {
            return response;
        }
        // wait for any partition to grow past what this round saw
        let waits: Vec<_> = layout
            .iter()
            .flat_map(|(_, wanted)| wanted.iter())
            .filter_map(|w| {
                let topic_id = w.topic_id.as_ref()?;
                w.known.as_ref().ok()?;
                let seen = view.snapshot(topic_id, w.partition).high_watermark;
                let reader = context.reader.clone();
                let topic_id = topic_id.clone();
                let partition = w.partition;
                Some(
                    async move {
                        reader
                            .wait_for_data(&topic_id, partition, seen.max(w.offset), deadline - now)
                            .await
                    }
                    .boxed(),
                )
            })
            .collect();
        if waits.is_empty() {
            tokio::time::sleep_until(deadline).await;
        } else {
            let _ = select_all(waits).await;
        }
    }
}

/// One round of reads; returns the response, the record bytes in it and
/// whether any partition answered with an error.
async fn read_all(
    context: &KafkaContext,
    layout: &[(TopicName, Vec<Wanted>)],
    max_bytes: usize,
) -> (FetchResponse, usize, bool) {
    let view = &context.view;
    let mut total = 0usize;
    let mut any_error = false;
    let mut responses = Vec::with_capacity(layout.len());
    for (name, wanted) in layout {
        let mut partitions = Vec::with_capacity(wanted.len());
        for w in wanted {
            let mut data = PartitionData::default().with_partition_index(w.partition);
            let result = match (&w.known, &w.topic_id) {
                (Ok(()), Some(topic_id)) => {
                    let snapshot = view.snapshot(topic_id, w.partition);
                    // the first non-empty partition may exceed the limits by
                    // one batch, so that a consumer always moves on
                    let first = total == 0;
                    let budget = if first {
                        w.max_bytes.max(1)
                    } else {
                        w.max_bytes.min(max_bytes.saturating_sub(total))
                    };
                    read_partition(context, topic_id, w, snapshot, budget, first)
                        .await
                        .map(|records| (snapshot, records))
                }
                (Err(error), _) => Err(error.clone()),
                (Ok(()), None) => Err(IngestError::UnknownPartition {
                    topic: name.0.to_string(),
                    partition: w.partition,
                }),
            };
            match result {
                Ok((snapshot, records)) => {
                    total += records.len();
                    data = data
                        .with_high_watermark(snapshot.high_watermark)
                        .with_last_stable_offset(snapshot.high_watermark)
                        .with_log_start_offset(snapshot.log_start_offset)
                        .with_records(Some(records));
                }
                Err(error) => {
                    any_error = true;
                    let snapshot = w.topic_id.as_ref().map(|id| view.snapshot(id, w.partition));
                    data = data
                        .with_error_code(error.kind().kafka_error_code())
                        .with_high_watermark(snapshot.map_or(-1, |s| s.high_watermark))
                        .with_last_stable_offset(snapshot.map_or(-1, |s| s.high_watermark))
                        .with_log_start_offset(snapshot.map_or(-1, |s| s.log_start_offset))
                        .with_records(Some(Bytes::new()));
                }
            }
            partitions.push(data);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(name.clone())
                .with_partitions(partitions),
        );
    }
    (
        FetchResponse::default().with_responses(responses),
        total,
        any_error,
    )
}

/// The batches of one partition from the fetch offset, within `budget`
/// bytes, or one batch over it when `at_least_one`.
async fn read_partition(
    context: &KafkaContext,
    topic_id: &str,
    wanted: &Wanted,
    snapshot: PartitionSnapshot,
    budget: usize,
    at_least_one: bool,
) -> IngestResult<Bytes> {
    if wanted.offset < snapshot.log_start_offset || wanted.offset > snapshot.high_watermark {
        return Err(IngestError::OutOfRange(format!(
            "offset {} is outside {}..{}",
            wanted.offset, snapshot.log_start_offset, snapshot.high_watermark
        )));
    }
    if wanted.offset == snapshot.high_watermark || budget == 0 {
        return Ok(Bytes::new());
    }
    let chunks = context
        .reader
        .read(topic_id, wanted.partition, wanted.offset, budget)
        .await?;
    let mut joined = BytesMut::new();
    for chunk in chunks {
        joined.extend_from_slice(&chunk.batches);
    }
    let records = batch::batches_from(&joined.freeze(), wanted.offset, budget)
        .map_err(|error| IngestError::Corrupt(error.to_string()))?;
    if records.len() > budget && !at_least_one {
        return Ok(Bytes::new());
    }
    Ok(records)
}
