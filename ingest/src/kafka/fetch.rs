//! Fetch (topic names, v4-v12): read each partition from its fetch offset
//! within `partition_max_bytes` and the response's `max_bytes` (whole
//! batches, at least one so a consumer always moves on), and long-poll up to
//! `max_wait_ms` while fewer than `min_bytes` are available. A response is
//! capped at `max_bytes`: only the first batch may exceed it (KIP-74).
//! Fetch sessions (KIP-227, [`super::fetch_session`]) let a client send
//! only what changed and get only partitions with news.

use sluice_metadata::acls::Operation;

use crate::access;
use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::future::select_all;
use futures::FutureExt;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::model::Topic;
use sluice_metadata::view::PartitionSnapshot;
use sluice_segment::batch;
use tokio::time::Instant;

use super::fetch_session::{Asked, SessionRequest, Tracked};
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

/// Record bytes a fetch response carries (what a consumer quota counts).
pub fn response_bytes(response: &FetchResponse) -> u64 {
    response
        .responses
        .iter()
        .flat_map(|topic| &topic.partitions)
        .map(|p| p.records.as_ref().map_or(0, |r| r.len() as u64))
        .sum()
}

/// Answer a Fetch request: resolve its fetch session, read, and answer
/// every partition (full fetches) or those with news (incremental ones).
pub async fn handle(context: &KafkaContext, request: FetchRequest) -> FetchResponse {
    let asked: Vec<Asked> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|p| {
                let name = topic.topic.0.to_string();
                (name, p.partition, p.fetch_offset, p.partition_max_bytes)
            })
        })
        .collect();
    let forgotten: Vec<(String, i32)> = request
        .forgotten_topics_data
        .iter()
        .flat_map(|topic| {
            let name = topic.topic.0.to_string();
            topic.partitions.iter().map(move |p| (name.clone(), *p))
        })
        .collect();
    let sessions = &context.fetch_sessions;
    let session = match sessions.resolve(
        request.session_id,
        request.session_epoch,
        &asked,
        &forgotten,
    ) {
        Ok(session) => session,
        Err(error) => return FetchResponse::default().with_error_code(error.code()),
    };
    let wanted = match &session {
        SessionRequest::Incremental { partitions, .. } => partitions
            .iter()
            .map(|t| (t.topic.clone(), t.partition, t.fetch_offset, t.max_bytes))
            .collect(),
        SessionRequest::New | SessionRequest::Sessionless => asked,
    };
    let layout = layout_of(context, wanted);
    let mut response = serve(context, &request, &layout).await;
    match session {
        SessionRequest::Sessionless => {}
        SessionRequest::New => {
            let answered = response
                .responses
                .iter()
                .flat_map(|topic| {
                    let name = topic.topic.0.to_string();
                    topic.partitions.iter().map(move |p| (name.clone(), p))
                })
                .zip(layout.iter().flat_map(|(_, wanted)| wanted.iter()))
                .map(|((topic, data), w)| Tracked {
                    topic,
                    partition: data.partition_index,
                    fetch_offset: w.offset,
                    max_bytes: w.max_bytes.min(i32::MAX as usize) as i32,
                    high_watermark: data.high_watermark,
                    log_start_offset: data.log_start_offset,
                })
                .collect();
            response.session_id = sessions.open(answered);
        }
        SessionRequest::Incremental { id, partitions } => {
            response.session_id = id;
            // only the partitions with news: records, an error, or a high
            // watermark or log start the client has not been told
            let told: HashMap<(&str, i32), &Tracked> = partitions
                .iter()
                .map(|t| ((t.topic.as_str(), t.partition), t))
                .collect();
            for topic in &mut response.responses {
                let name = topic.topic.0.to_string();
                topic.partitions.retain(|data| {
                    let Some(t) = told.get(&(name.as_str(), data.partition_index)) else {
                        return true;
                    };
                    let news = data.records.as_ref().is_some_and(|r| !r.is_empty())
                        || data.error_code != 0
                        || data.high_watermark != t.high_watermark
                        || data.log_start_offset != t.log_start_offset;
                    if news {
                        sessions.answered(
                            id,
                            &name,
                            data.partition_index,
                            data.high_watermark,
                            data.log_start_offset,
                        );
                    }
                    news
                });
            }
            response
                .responses
                .retain(|topic| !topic.partitions.is_empty());
        }
    }
    response
}

/// The partitions to read, grouped by topic in the order first named.
fn layout_of(context: &KafkaContext, wanted: Vec<Asked>) -> Vec<(TopicName, Vec<Wanted>)> {
    let view = &context.view;
    let mut layout: Vec<(TopicName, Vec<Wanted>)> = Vec::new();
    let mut found: HashMap<String, Option<Topic>> = HashMap::new();
    for (name, partition, offset, max_bytes) in wanted {
        let topic = found
            .entry(name.clone())
            .or_insert_with(|| view.topic(&name))
            .clone();
        let known = match (access::topic(Operation::Read, &name), &topic) {
            (Err(denied), _) => Err(denied),
            (Ok(()), None) => Err(IngestError::UnknownTopic(name.clone())),
            (Ok(()), Some(t)) if !(0..t.record.partitions).contains(&partition) => {
                Err(IngestError::UnknownPartition {
                    topic: name.clone(),
                    partition,
                })
            }
            (Ok(()), Some(_)) => Ok(()),
        };
        let w = Wanted {
            topic_id: topic.as_ref().map(|t| t.record.id.clone()),
            partition,
            offset,
            max_bytes: max_bytes.max(0) as usize,
            known,
        };
        match layout.iter_mut().find(|(n, _)| n.0.as_str() == name) {
            Some((_, partitions)) => partitions.push(w),
            None => layout.push((TopicName(StrBytes::from_string(name)), vec![w])),
        }
    }
    layout
}

/// Read `layout` within the request's limits, long-polling up to its
/// `max_wait_ms` while fewer than `min_bytes` are there.
async fn serve(
    context: &KafkaContext,
    request: &FetchRequest,
    layout: &[(TopicName, Vec<Wanted>)],
) -> FetchResponse {
    let view = &context.view;
    let max_wait =
        Duration::from_millis(request.max_wait_ms.max(0) as u64).min(context.config.fetch_wait_max);
    let deadline = Instant::now() + max_wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if request.max_bytes > 0 {
        request.max_bytes as usize
    } else {
        usize::MAX
    };
    // what this fetch may read: its own limits, and at most half of the
    // node's fetch budget, held while it reads (not while it waits)
    let wanted: usize = layout
        .iter()
        .flat_map(|(_, wanted)| wanted.iter())
        .fold(0usize, |sum, w| sum.saturating_add(w.max_bytes));
    let share = context.fetch_budget.one_read_max();
    let max_bytes = max_bytes.min(wanted).min(share).max(1);
    loop {
        let budget = context.fetch_budget.take(max_bytes).await;
        let (response, total, any_error) = read_all(context, layout, max_bytes).await;
        drop(budget);
        let now = Instant::now();
        if total >= min_bytes || any_error || now >= deadline {
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
                    let mut budget = w.max_bytes.min(max_bytes.saturating_sub(total));
                    if first {
                        budget = budget.max(1);
                    }
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
    if wanted.offset < snapshot.log_start_offset
        || context
            .reader
            .past_the_end(topic_id, wanted.partition, wanted.offset, snapshot)
            .await?
    {
        return Err(IngestError::OutOfRange(format!(
            "offset {} is outside {}..{}",
            wanted.offset, snapshot.log_start_offset, snapshot.high_watermark
        )));
    }
    // past this node's view but not past the stored end: nothing yet here
    if wanted.offset >= snapshot.high_watermark || budget == 0 {
        return Ok(Bytes::new());
    }
    let chunks = context
        .reader
        .read(topic_id, wanted.partition, wanted.offset, budget)
        .await?;
    let records = select(&chunks, wanted.offset, budget)
        .map_err(|error| IngestError::Corrupt(error.to_string()))?;
    if records.len() > budget && !at_least_one {
        return Ok(Bytes::new());
    }
    Ok(records)
}

/// The whole batches of `chunks` from the one holding `offset` on, within
/// `budget` bytes but at least one: slices of the chunks, copied into one
/// buffer only when they span more than one chunk (a chunk may be a whole
/// archive row group, many times what a fetch returns).
fn select(
    chunks: &[sluice_fetch::ReadChunk],
    offset: i64,
    budget: usize,
) -> Result<Bytes, batch::BatchError> {
    let mut parts: Vec<Bytes> = Vec::new();
    let mut taken = 0usize;
    for chunk in chunks {
        let room = budget.saturating_sub(taken);
        if !parts.is_empty() && room == 0 {
            break;
        }
        let Some(range) = batch::batch_range_from(&chunk.batches, offset, room)? else {
            continue;
        };
        // past the first part, an oversized first batch is not taken
        if !parts.is_empty() && range.len() > room {
            break;
        }
        taken += range.len();
        let to_the_end = range.end == chunk.batches.len();
        parts.push(chunk.batches.slice(range));
        if !to_the_end {
            break;
        }
    }
    Ok(sluice_fetch::join_parts(parts))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::ProduceRequest;
    use sluice_segment::NewRecord;

    use super::*;
    use crate::kafka::testing::{text, TestNode};
    use crate::kafka::{produce, KafkaConfig};

    fn topic_name(name: &str) -> TopicName {
        TopicName(text(name))
    }

    /// One batch of `values`, as a producer sends it.
    fn batch_of(values: &[&str]) -> Bytes {
        let records: Vec<NewRecord> = values
            .iter()
            .map(|v| NewRecord {
                key: None,
                value: Some(Bytes::from(v.to_string())),
                headers: vec![("h".to_string(), Some(Bytes::from_static(b"1")))],
                timestamp_ms: 1_700_000_000_000,
            })
            .collect();
        batch::encode(&records).unwrap()
    }

    /// Produce one batch (acks=-1) and return its base offset.
    async fn produce(node: &TestNode, topic: &str, partition: i32, batch: Bytes) -> i64 {
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch))])]);
        let response = produce::handle(&node.context, request).await.unwrap();
        let answer = &response.responses[0].partition_responses[0];
        assert_eq!(answer.error_code, 0, "{:?}", answer.error_message);
        answer.base_offset
    }

    fn wanted(partition: i32, offset: i64, max_bytes: i32) -> FetchPartition {
        FetchPartition::default()
            .with_partition(partition)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(max_bytes)
    }

    /// A fetch that does not wait, of `partitions` of `topic`.
    fn request(topic: &str, partitions: Vec<FetchPartition>) -> FetchRequest {
        FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(partitions)])
    }

    /// The one partition answered.
    async fn fetch_one(node: &TestNode, topic: &str, wanted: FetchPartition) -> PartitionData {
        let response = handle(&node.context, request(topic, vec![wanted])).await;
        assert_eq!(response.responses.len(), 1);
        assert_eq!(response.responses[0].topic.0.as_str(), topic);
        assert_eq!(response.responses[0].partitions.len(), 1);
        response.responses[0].partitions[0].clone()
    }

    /// (offset, value) of every record in fetched bytes.
    fn offsets_and_values(records: &Option<Bytes>) -> Vec<(i64, String)> {
        let bytes = records.clone().unwrap_or_default();
        batch::decode(bytes)
            .unwrap()
            .into_iter()
            .map(|r| {
                let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                (r.offset, value)
            })
            .collect()
    }

    fn pairs(from: i64, values: &[&str]) -> Vec<(i64, String)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (from + i as i64, v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn reads_committed_records_from_the_fetch_offset() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        assert_eq!(
            produce(&node, "orders", 0, batch_of(&["a", "b", "c"])).await,
            0
        );
        assert_eq!(produce(&node, "orders", 0, batch_of(&["d", "e"])).await, 3);

        let data = fetch_one(&node, "orders", wanted(0, 0, 1 << 20)).await;
        assert_eq!(data.partition_index, 0);
        assert_eq!(data.error_code, 0);
        assert_eq!(data.high_watermark, 5);
        assert_eq!(data.last_stable_offset, 5);
        assert_eq!(data.log_start_offset, 0);
        assert_eq!(
            offsets_and_values(&data.records),
            pairs(0, &["a", "b", "c", "d", "e"])
        );
        let headers = batch::decode(data.records.clone().unwrap()).unwrap()[0]
            .headers
            .clone();
        assert_eq!(
            headers,
            vec![("h".to_string(), Some(Bytes::from_static(b"1")))]
        );

        // from a batch boundary: that batch on
        let data = fetch_one(&node, "orders", wanted(0, 3, 1 << 20)).await;
        assert_eq!(offsets_and_values(&data.records), pairs(3, &["d", "e"]));

        // from inside a batch: the whole batch holding it (clients skip the
        // records before their offset), then the rest
        let data = fetch_one(&node, "orders", wanted(0, 1, 1 << 20)).await;
        assert_eq!(
            offsets_and_values(&data.records),
            pairs(0, &["a", "b", "c", "d", "e"])
        );
        let data = fetch_one(&node, "orders", wanted(0, 4, 1 << 20)).await;
        assert_eq!(offsets_and_values(&data.records), pairs(3, &["d", "e"]));
    }

    #[tokio::test]
    async fn the_high_watermark_is_empty_and_offsets_outside_the_log_are_out_of_range() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;

        // an empty partition: offset 0 is its end
        let data = fetch_one(&node, "orders", wanted(0, 0, 1 << 20)).await;
        assert_eq!(data.error_code, 0);
        assert_eq!(data.high_watermark, 0);
        assert_eq!(data.records, Some(Bytes::new()));

        produce(&node, "orders", 0, batch_of(&["a", "b"])).await;
        let data = fetch_one(&node, "orders", wanted(0, 2, 1 << 20)).await;
        assert_eq!(data.error_code, 0);
        assert_eq!(data.high_watermark, 2);
        assert_eq!(data.records, Some(Bytes::new()));

        for offset in [3, 1_000, -1, i64::MIN] {
            let data = fetch_one(&node, "orders", wanted(0, offset, 1 << 20)).await;
            assert_eq!(
                data.error_code,
                ResponseError::OffsetOutOfRange.code(),
                "offset {offset}"
            );
            assert_eq!(data.high_watermark, 2);
            assert_eq!(data.log_start_offset, 0);
            assert_eq!(data.records, Some(Bytes::new()));
        }
    }

    /// This node's view lags a commit another node made (here: made
    /// straight in the catalog): an offset past the view's high watermark
    /// but not past the stored head is "nothing yet", never
    /// OFFSET_OUT_OF_RANGE, which would send librdkafka back to
    /// `auto.offset.reset` (chaos campaign, kill -9, seed 21).
    #[tokio::test]
    async fn an_offset_past_a_lagging_view_is_checked_against_the_stored_head() {
        let node = TestNode::start().await;
        let topic = node.topic("orders", 1).await;
        produce(&node, "orders", 0, batch_of(&["a", "b"])).await;
        let reader = &node.context.reader;
        let id = &topic.record.id;
        let lagging = PartitionSnapshot {
            high_watermark: 1,
            log_start_offset: 0,
        };
        assert!(!reader.past_the_end(id, 0, 2, lagging).await.unwrap());
        assert!(reader.past_the_end(id, 0, 3, lagging).await.unwrap());
        let data = fetch_one(&node, "orders", wanted(0, 3, 1 << 20)).await;
        assert_eq!(data.error_code, ResponseError::OffsetOutOfRange.code());
    }

    #[tokio::test]
    async fn unknown_topics_and_partitions_are_answered_per_partition() {
        let node = TestNode::start().await;
        node.topic("orders", 2).await;
        produce(&node, "orders", 1, batch_of(&["a"])).await;

        let data = fetch_one(&node, "ghost", wanted(0, 0, 1 << 20)).await;
        assert_eq!(
            data.error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert_eq!(data.high_watermark, -1);
        assert_eq!(data.log_start_offset, -1);
        // a fetch creates nothing
        assert!(node.context.view.topic("ghost").is_none());

        // an unknown partition next to a known one: each gets its own answer
        let response = handle(
            &node.context,
            request("orders", vec![wanted(2, 0, 1 << 20), wanted(1, 0, 1 << 20)]),
        )
        .await;
        let partitions = &response.responses[0].partitions;
        assert_eq!(partitions[0].partition_index, 2);
        assert_eq!(
            partitions[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert_eq!(partitions[1].partition_index, 1);
        assert_eq!(partitions[1].error_code, 0);
        assert_eq!(offsets_and_values(&partitions[1].records), pairs(0, &["a"]));
    }

    #[tokio::test]
    async fn partition_max_bytes_keeps_whole_batches_and_at_least_one() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        let first = batch_of(&["a", "b", "c"]);
        let second = batch_of(&["d"]);
        let (first_len, second_len) = (first.len() as i32, second.len() as i32);
        produce(&node, "orders", 0, first).await;
        produce(&node, "orders", 0, second).await;

        // exactly the first batch's size: that batch only
        let data = fetch_one(&node, "orders", wanted(0, 0, first_len)).await;
        assert_eq!(data.records.as_ref().unwrap().len(), first_len as usize);
        assert_eq!(
            offsets_and_values(&data.records),
            pairs(0, &["a", "b", "c"])
        );

        // one byte short of both: still the first only, never half a batch
        let data = fetch_one(&node, "orders", wanted(0, 0, first_len + second_len - 1)).await;
        assert_eq!(
            offsets_and_values(&data.records),
            pairs(0, &["a", "b", "c"])
        );

        // less than one batch: the first batch anyway, so the consumer moves on
        for max in [1, 0] {
            let data = fetch_one(&node, "orders", wanted(0, 0, max)).await;
            assert_eq!(data.error_code, 0);
            assert_eq!(
                offsets_and_values(&data.records),
                pairs(0, &["a", "b", "c"])
            );
        }

        let data = fetch_one(&node, "orders", wanted(0, 0, first_len + second_len)).await;
        assert_eq!(
            offsets_and_values(&data.records),
            pairs(0, &["a", "b", "c", "d"])
        );
    }

    #[tokio::test]
    async fn max_bytes_bounds_the_partitions_after_the_first() {
        let node = TestNode::start().await;
        node.topic("orders", 2).await;
        let batch = batch_of(&["a", "b"]);
        let len = batch.len() as i32;
        produce(&node, "orders", 0, batch.clone()).await;
        produce(&node, "orders", 1, batch).await;

        let both = vec![wanted(0, 0, 1 << 20), wanted(1, 0, 1 << 20)];
        let response = handle(
            &node.context,
            request("orders", both.clone()).with_max_bytes(len),
        )
        .await;
        let partitions = &response.responses[0].partitions;
        assert_eq!(
            offsets_and_values(&partitions[0].records),
            pairs(0, &["a", "b"])
        );
        // no room left: an empty answer, not an error
        assert_eq!(partitions[1].error_code, 0);
        assert_eq!(partitions[1].high_watermark, 2);
        assert_eq!(partitions[1].records, Some(Bytes::new()));

        let response = handle(
            &node.context,
            request("orders", both).with_max_bytes(2 * len),
        )
        .await;
        let partitions = &response.responses[0].partitions;
        assert_eq!(
            offsets_and_values(&partitions[0].records),
            pairs(0, &["a", "b"])
        );
        assert_eq!(
            offsets_and_values(&partitions[1].records),
            pairs(0, &["a", "b"])
        );
    }

    #[tokio::test]
    async fn a_long_poll_returns_when_records_arrive() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        let context = node.context.clone();
        let poll = tokio::spawn(async move {
            let request = request("orders", vec![wanted(0, 0, 1 << 20)])
                .with_max_wait_ms(20_000)
                .with_min_bytes(1);
            let started = std::time::Instant::now();
            let response = handle(&context, request).await;
            (response, started.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        produce(&node, "orders", 0, batch_of(&["late"])).await;
        let (response, waited) = poll.await.unwrap();
        let data = &response.responses[0].partitions[0];
        assert_eq!(data.error_code, 0);
        assert_eq!(offsets_and_values(&data.records), pairs(0, &["late"]));
        assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    }

    #[tokio::test]
    async fn max_wait_is_capped_by_fetch_wait_max() {
        let node = TestNode::start_with(KafkaConfig {
            fetch_wait_max: Duration::from_millis(50),
            ..KafkaConfig::default()
        })
        .await;
        node.topic("orders", 1).await;
        let started = std::time::Instant::now();
        let response = handle(
            &node.context,
            request("orders", vec![wanted(0, 0, 1 << 20)])
                .with_max_wait_ms(600_000)
                .with_min_bytes(1),
        )
        .await;
        let waited = started.elapsed();
        let data = &response.responses[0].partitions[0];
        assert_eq!(data.error_code, 0);
        assert_eq!(data.records, Some(Bytes::new()));
        assert!(waited >= Duration::from_millis(45), "waited {waited:?}");
        assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    }

    #[tokio::test]
    async fn an_error_answers_at_once_without_waiting() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        let started = std::time::Instant::now();
        let response = handle(
            &node.context,
            request("orders", vec![wanted(0, 0, 1 << 20), wanted(5, 0, 1 << 20)])
                .with_max_wait_ms(20_000)
                .with_min_bytes(1),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(10));
        let partitions = &response.responses[0].partitions;
        assert_eq!(partitions[0].error_code, 0);
        assert_eq!(
            partitions[1].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
    }

    // the response's max_bytes bounds the first partition too: only one
    // batch may exceed it (Kafka's KIP-74)
    #[tokio::test]
    async fn max_bytes_lets_the_first_partition_exceed_it_by_one_batch_only() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        for value in ["a", "b", "c"] {
            produce(&node, "orders", 0, batch_of(&[value])).await;
        }
        let response = handle(
            &node.context,
            request("orders", vec![wanted(0, 0, 1 << 20)]).with_max_bytes(1),
        )
        .await;
        let data = &response.responses[0].partitions[0];
        assert_eq!(offsets_and_values(&data.records), pairs(0, &["a"]));
    }

    // a fetch with min_bytes 0 is answered at once, data or not
    #[tokio::test]
    async fn min_bytes_zero_answers_at_once() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        let started = std::time::Instant::now();
        let response = handle(
            &node.context,
            request("orders", vec![wanted(0, 0, 1 << 20)])
                .with_max_wait_ms(2_000)
                .with_min_bytes(0),
        )
        .await;
        assert_eq!(response.responses[0].partitions[0].error_code, 0);
        assert!(started.elapsed() < Duration::from_millis(1_000));
    }

    /// (partition, record values) of every partition answered.
    fn answered(response: &FetchResponse) -> Vec<(i32, Vec<String>)> {
        response
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| {
                let values = offsets_and_values(&p.records)
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect();
                (p.partition_index, values)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_fetch_session_answers_only_partitions_with_news() {
        let node = TestNode::start().await;
        node.topic("orders", 3).await;
        produce(&node, "orders", 0, batch_of(&["a"])).await;
        let all = (0..3).map(|p| wanted(p, 0, 1 << 20)).collect();
        let full = request("orders", all)
            .with_session_id(0)
            .with_session_epoch(0);
        let response = handle(&node.context, full).await;
        assert_eq!(response.error_code, 0);
        let id = response.session_id;
        assert_ne!(id, 0, "a session was opened");
        assert_eq!(
            answered(&response),
            vec![(0, vec!["a".to_string()]), (1, vec![]), (2, vec![])]
        );
        // the client moved partition 0 on; nothing new anywhere
        let next = request("orders", vec![wanted(0, 1, 1 << 20)])
            .with_session_id(id)
            .with_session_epoch(1);
        let response = handle(&node.context, next).await;
        assert_eq!((response.error_code, response.session_id), (0, id));
        assert_eq!(answered(&response), vec![]);
        // a record on partition 2: only that partition is answered
        produce(&node, "orders", 2, batch_of(&["b"])).await;
        let next = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_session_id(id)
            .with_session_epoch(2);
        let response = handle(&node.context, next).await;
        assert_eq!(answered(&response), vec![(2, vec!["b".to_string()])]);
        // an epoch out of turn, an unknown session
        let stale = FetchRequest::default()
            .with_session_id(id)
            .with_session_epoch(2);
        assert_eq!(
            handle(&node.context, stale).await.error_code,
            ResponseError::InvalidFetchSessionEpoch.code()
        );
        let unknown = FetchRequest::default()
            .with_session_id(id ^ 1)
            .with_session_epoch(1);
        assert_eq!(
            handle(&node.context, unknown).await.error_code,
            ResponseError::FetchSessionIdNotFound.code()
        );
        // forgetting partition 2, then closing the session
        let forget = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_session_id(id)
            .with_session_epoch(3)
            .with_forgotten_topics_data(vec![ForgottenTopic::default()
                .with_topic(topic_name("orders"))
                .with_partitions(vec![2])]);
        assert_eq!(handle(&node.context, forget).await.error_code, 0);
        let close = request("orders", vec![wanted(1, 0, 1 << 20)])
            .with_session_id(id)
            .with_session_epoch(-1);
        let response = handle(&node.context, close).await;
        assert_eq!((response.error_code, response.session_id), (0, 0));
        assert_eq!(answered(&response), vec![(1, vec![])]);
        assert!(node.context.fetch_sessions.is_empty());
    }
}
