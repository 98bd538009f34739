//! OffsetFetch: a group's committed positions (one group before v8, a batch
//! of groups from v8). Unknown positions answer offset -1.

use sluice_metadata::acls::Operation;

use crate::access;
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
    access::group(Operation::Describe, group).map_err(|denied| denied.kind().kafka_error_code())?;
    // a topic the principal may not DESCRIBE: none of its offsets
    let visible = |topic: &str| access::topic(Operation::Describe, topic).is_ok();
    let committed = context
        .groups
        .fetch_offsets(group)
        .await
        .map_err(|e| e.code())?;
    Ok(match wanted {
        None => committed
            .into_iter()
            .filter(|(topic, _)| visible(topic))
            .map(|(topic, partitions)| {
                let list = partitions.into_iter().map(|(p, r)| (p, Some(r))).collect();
                (topic, list)
            })
            .collect(),
        Some(wanted) => wanted
            .into_iter()
            .map(|(topic, partitions)| {
                let known: BTreeMap<i32, OffsetRecord> = match visible(&topic) {
                    true => committed.get(&topic).cloned().unwrap_or_default(),
                    false => BTreeMap::new(),
                };
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
    let wanted: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let asked = wanted.clone();
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
        // v0-v1 have no top-level error: every partition asked carries it
        Err(code) if version < 2 => OffsetFetchResponse::default().with_topics(
            asked
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_metadata(metadata_of(&None))
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
        Err(code) => OffsetFetchResponse::default().with_error_code(code),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::GroupId;

    use super::*;
    use crate::kafka::testing::{text, TestNode};

    /// (topic, partition, committed offset, leader epoch) of a v8 answer.
    type Position = (String, i32, i64, i32);

    fn record(offset: i64, leader_epoch: i32, metadata: Option<&str>) -> OffsetRecord {
        OffsetRecord {
            offset,
            leader_epoch,
            metadata: metadata.map(str::to_string),
            commit_timestamp_ms: 1,
        }
    }

    /// Group `g` committed orders/0 = 10 (epoch 3, metadata "m"),
    /// orders/1 = 20 and audit/0 = 7, as a consumer outside the group.
    async fn committed(node: &TestNode) {
        node.topic("orders", 3).await;
        node.topic("audit", 1).await;
        let offsets = vec![
            ("orders".to_string(), 0, record(10, 3, Some("m"))),
            ("orders".to_string(), 1, record(20, -1, None)),
            ("audit".to_string(), 0, record(7, -1, None)),
        ];
        node.context
            .groups
            .commit_offsets("g", -1, "", None, offsets)
            .await
            .unwrap();
    }

    /// (topic, partition, offset, leader epoch, metadata) of an answer before v8.
    fn positions(response: &OffsetFetchResponse) -> Vec<(String, i32, i64, i32, String)> {
        response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    assert_eq!(p.error_code, 0);
                    (
                        t.name.0.to_string(),
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.metadata.as_ref().map(|m| m.to_string()).unwrap(),
                    )
                })
            })
            .collect()
    }

    fn asking(group: &str, topics: Option<&[(&str, &[i32])]>) -> OffsetFetchRequest {
        OffsetFetchRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_topics(topics.map(|topics| {
                topics
                    .iter()
                    .map(|(name, partitions)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(text(name)))
                            .with_partition_indexes(partitions.to_vec())
                    })
                    .collect()
            }))
    }

    fn p(
        topic: &str,
        partition: i32,
        offset: i64,
        epoch: i32,
        meta: &str,
    ) -> (String, i32, i64, i32, String) {
        (
            topic.to_string(),
            partition,
            offset,
            epoch,
            meta.to_string(),
        )
    }

    #[tokio::test]
    async fn named_partitions_answer_their_commit_or_minus_one() {
        let node = TestNode::start().await;
        committed(&node).await;
        let request = asking("g", Some(&[("orders", &[0, 1, 2]), ("missing", &[0])]));
        let response = handle(&node.context, 7, request).await;
        assert_eq!(response.error_code, 0);
        assert_eq!(
            positions(&response),
            vec![
                p("orders", 0, 10, 3, "m"),
                p("orders", 1, 20, -1, ""),
                p("orders", 2, -1, -1, ""),
                p("missing", 0, -1, -1, ""),
            ]
        );
        // a group that never committed answers -1 for what is asked
        let request = asking("fresh", Some(&[("orders", &[0])]));
        let response = handle(&node.context, 5, request).await;
        assert_eq!(response.error_code, 0);
        assert_eq!(positions(&response), vec![p("orders", 0, -1, -1, "")]);
    }

    #[tokio::test]
    async fn a_group_error_is_carried_by_each_partition_before_version_two() {
        let node = TestNode::start().await;
        let request = asking("", Some(&[("orders", &[0, 1])]));
        let response = handle(&node.context, 1, request.clone()).await;
        let codes: Vec<(i32, i16, i64)> = response.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.error_code, p.committed_offset))
            .collect();
        let invalid = ResponseError::InvalidGroupId.code();
        assert_eq!(codes, vec![(0, invalid, -1), (1, invalid, -1)]);
        let response = handle(&node.context, 3, request).await;
        assert_eq!(response.error_code, invalid);
    }

    #[tokio::test]
    async fn no_topics_named_answers_every_committed_position() {
        let node = TestNode::start().await;
        committed(&node).await;
        let response = handle(&node.context, 7, asking("g", None)).await;
        assert_eq!(response.error_code, 0);
        assert_eq!(
            positions(&response),
            vec![
                p("audit", 0, 7, -1, ""),
                p("orders", 0, 10, 3, "m"),
                p("orders", 1, 20, -1, ""),
            ]
        );
        let response = handle(&node.context, 7, asking("fresh", None)).await;
        assert_eq!(response.error_code, 0);
        assert!(response.topics.is_empty());
    }

    #[tokio::test]
    async fn an_invalid_group_id_fails_the_request() {
        let node = TestNode::start().await;
        committed(&node).await;
        for group in ["", "a/b"] {
            let response = handle(&node.context, 7, asking(group, None)).await;
            assert_eq!(
                response.error_code,
                ResponseError::InvalidGroupId.code(),
                "{group:?}"
            );
            assert!(response.topics.is_empty());
        }
    }

    #[tokio::test]
    async fn from_v8_each_group_is_answered_on_its_own() {
        let node = TestNode::start().await;
        committed(&node).await;
        let group = |id: &str, topics: Option<Vec<(&str, Vec<i32>)>>| {
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(text(id)))
                .with_topics(topics.map(|topics| {
                    topics
                        .into_iter()
                        .map(|(name, partitions)| {
                            OffsetFetchRequestTopics::default()
                                .with_name(TopicName(text(name)))
                                .with_partition_indexes(partitions)
                        })
                        .collect()
                }))
        };
        let request = OffsetFetchRequest::default().with_groups(vec![
            group("g", None),
            group("g", Some(vec![("orders", vec![0, 2])])),
            group("a/b", None),
            group("fresh", Some(vec![("audit", vec![0])])),
        ]);
        let response = handle(&node.context, 8, request).await;
        let answers: Vec<(String, i16, Vec<Position>)> = response
            .groups
            .iter()
            .map(|g| {
                let positions = g
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(|p| {
                            (
                                t.name.0.to_string(),
                                p.partition_index,
                                p.committed_offset,
                                p.committed_leader_epoch,
                            )
                        })
                    })
                    .collect();
                (g.group_id.0.to_string(), g.error_code, positions)
            })
            .collect();
        let at = |t: &str, p: i32, o: i64, e: i32| (t.to_string(), p, o, e);
        assert_eq!(
            answers,
            vec![
                (
                    "g".to_string(),
                    0,
                    vec![
                        at("audit", 0, 7, -1),
                        at("orders", 0, 10, 3),
                        at("orders", 1, 20, -1)
                    ]
                ),
                (
                    "g".to_string(),
                    0,
                    vec![at("orders", 0, 10, 3), at("orders", 2, -1, -1)]
                ),
                (
                    "a/b".to_string(),
                    ResponseError::InvalidGroupId.code(),
                    vec![]
                ),
                ("fresh".to_string(), 0, vec![at("audit", 0, -1, -1)]),
            ]
        );
        let metadata = &response.groups[1].topics[0].partitions[0].metadata;
        assert_eq!(metadata.as_deref(), Some("m"));
    }
}
