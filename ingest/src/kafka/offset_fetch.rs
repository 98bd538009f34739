//! OffsetFetch: a group's committed positions (one group before v8, a batch
//! of groups from v8). Unknown positions answer offset -1.

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::groups::OffsetRecord;

use super::KafkaContext;

/// Committed offsets of one group, as (topic, [(partition, record)]).
type Positions = Vec<(String, Vec<(i32, Option<OffsetRecord>)>)>;

/// Look up `wanted` (topic -> partitions; `None` = everything committed).
async fn positions(
    context: &KafkaContext,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Positions, i16> {
    let committed = context
        .groups
        .fetch_offsets(group)
        .await
        .map_err(|e| e.code())?;
    Ok(match wanted {
        None => committed
            .into_iter()
            .map(|(topic, partitions)| {
                let list = partitions.into_iter().map(|(p, r)| (p, Some(r))).collect();
                (topic, list)
            })
            .collect(),
        Some(wanted) => wanted
            .into_iter()
            .map(|(topic, partitions)| {
                let known: BTreeMap<i32, OffsetRecord> =
                    committed.get(&topic).cloned().unwrap_or_default();
                let list = partitions
                    .into_iter()
                    .map(|p| (p, known.get(&p).cloned()))
                    .collect();
                (topic, list)
            })
            .collect(),
    })
}

fn metadata_of(record: &Option<OffsetRecord>) -> Option<StrBytes> {
    Some(StrBytes::from_string(
        record
            .as_ref()
            .and_then(|r| r.metadata.clone())
            .unwrap_or_default(),
    ))
}

/// Answer an OffsetFetch request.
pub async fn handle(
    context: &KafkaContext,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::with_capacity(request.groups.len());
        for group in request.groups {
            let wanted = group.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let answer = OffsetFetchResponseGroup::default().with_group_id(group.group_id.clone());
            groups.push(match positions(context, &group.group_id.0, wanted).await {
                Ok(found) => answer.with_topics(
                    found
                        .into_iter()
                        .map(|(topic, partitions)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(StrBytes::from_string(topic)))
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|(p, r)| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(
                                                    r.as_ref().map_or(-1, |r| r.offset),
                                                )
                                                .with_committed_leader_epoch(
                                                    r.as_ref().map_or(-1, |r| r.leader_epoch),
                                                )
                                                .with_metadata(metadata_of(&r))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
                Err(code) => answer.with_error_code(code),
            });
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    match positions(context, &request.group_id.0, wanted).await {
        Ok(found) => OffsetFetchResponse::default().with_topics(
            found
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(p, r)| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(r.as_ref().map_or(-1, |r| r.offset))
                                        .with_committed_leader_epoch(
                                            r.as_ref().map_or(-1, |r| r.leader_epoch),
                                        )
                                        .with_metadata(metadata_of(&r))
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
        Err(code) => OffsetFetchResponse::default().with_error_code(code),
    }
}
