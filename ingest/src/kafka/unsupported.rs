//! Answers to requests this listener does not serve: an API key the codec
//! knows but sluice does not implement, or a version of a served API
//! outside the advertised range.
//!
//! Instead of closing the connection the listener answers with the API's
//! response at the requested version carrying UNSUPPORTED_VERSION: in the
//! top-level `error_code` where the response has one, and for Produce,
//! ListOffsets and Metadata (whose responses are per topic and partition)
//! in an entry mirrored from each requested topic and partition. This is
//! only possible when the requested version is within the codec's range;
//! otherwise the response format is unknown and the connection is closed,
//! as Kafka brokers do.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};

use super::{encode_response, ConnectionError};

/// The error code every unsupported request gets.
pub const ERROR_CODE: i16 = ResponseError::UnsupportedVersion.code();

/// Whether the codec can decode and encode `version` of `key`.
pub fn codec_knows(key: ApiKey, version: i16) -> bool {
    let range = key.valid_versions();
    (range.min..=range.max).contains(&version)
}

/// The framed UNSUPPORTED_VERSION answer to `frame` (the request after its
/// size prefix), or `None` when it cannot be encoded (a version outside
/// the codec's range, an undecodable header).
pub fn answer(key: ApiKey, version: i16, mut frame: Bytes) -> Option<Bytes> {
    if !codec_knows(key, version) {
        return None;
    }
    let header = RequestHeader::decode(&mut frame, key.request_header_version(version)).ok()?;
    answer_body(key, version, header.correlation_id, frame)
}

/// The framed UNSUPPORTED_VERSION answer to a request whose header is
/// decoded already; `body` is what follows the header.
pub fn answer_body(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    mut frame: Bytes,
) -> Option<Bytes> {
    if !codec_knows(key, version) {
        return None;
    }
    let encoded = match key {
        ApiKey::Produce => {
            let request = ProduceRequest::decode(&mut frame, version).ok()?;
            encode(key, version, correlation_id, &produce(request))
        }
        ApiKey::ListOffsets => {
            let request = ListOffsetsRequest::decode(&mut frame, version).ok()?;
            encode(key, version, correlation_id, &list_offsets(request))
        }
        ApiKey::Metadata => {
            let request = MetadataRequest::decode(&mut frame, version).ok()?;
            encode(key, version, correlation_id, &metadata(request))
        }
        // handled before dispatch (answered in its v0 format)
        ApiKey::ApiVersions => return None,
        other => default_answer(other, version, correlation_id),
    };
    encoded.ok()
}

fn encode<T: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, ConnectionError> {
    encode_response(key, version, correlation_id, body)
}

fn produce(request: ProduceRequest) -> ProduceResponse {
    let topics = request
        .topic_data
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partition_data
                .iter()
                .map(|p| {
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(ERROR_CODE)
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_topic_id(topic.topic_id)
                .with_partition_responses(partitions)
        })
        .collect();
    ProduceResponse::default().with_responses(topics)
}

fn list_offsets(request: ListOffsetsRequest) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(ERROR_CODE)
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

fn metadata(request: MetadataRequest) -> MetadataResponse {
    let topics = request
        .topics
        .unwrap_or_default()
        .into_iter()
        .map(|topic| {
            MetadataResponseTopic::default()
                .with_error_code(ERROR_CODE)
                .with_name(topic.name)
                .with_topic_id(topic.topic_id)
        })
        .collect();
    MetadataResponse::default()
        .with_error_code(ERROR_CODE)
        .with_topics(topics)
}

/// The default response of `key`, with the top-level error code set where
/// the response (at that version) has one.
macro_rules! default_answers {
    (
        $key:expr, $version:expr, $correlation_id:expr;
        with_error_code: [$($top:ident => $top_ty:ty,)*]
        without: [$($plain:ident => $plain_ty:ty,)*]
    ) => {
        match $key {
            // versions whose response lacks the error code (the codec
            // refuses to drop a set field) get the plain default
            $(ApiKey::$top => encode(
                $key,
                $version,
                $correlation_id,
                &<$top_ty>::default().with_error_code(ERROR_CODE),
            )
            .or_else(|_| encode($key, $version, $correlation_id, &<$top_ty>::default())),)*
            $(ApiKey::$plain => encode($key, $version, $correlation_id, &<$plain_ty>::default()),)*
            other => Err(ConnectionError::BadRequest(format!(
                "no unsupported-version answer for {other:?}"
            ))),
        }
    };
}

fn default_answer(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
) -> Result<Bytes, ConnectionError> {
    default_answers!(key, version, correlation_id;
        with_error_code: [
        Fetch => FetchResponse,
        OffsetFetch => OffsetFetchResponse,
        FindCoordinator => FindCoordinatorResponse,
        JoinGroup => JoinGroupResponse,
        Heartbeat => HeartbeatResponse,
        LeaveGroup => LeaveGroupResponse,
        SyncGroup => SyncGroupResponse,
        ListGroups => ListGroupsResponse,
        SaslHandshake => SaslHandshakeResponse,
        InitProducerId => InitProducerIdResponse,
        AddPartitionsToTxn => AddPartitionsToTxnResponse,
        AddOffsetsToTxn => AddOffsetsToTxnResponse,
        EndTxn => EndTxnResponse,
        DescribeAcls => DescribeAclsResponse,
        DescribeLogDirs => DescribeLogDirsResponse,
        SaslAuthenticate => SaslAuthenticateResponse,
        CreateDelegationToken => CreateDelegationTokenResponse,
        RenewDelegationToken => RenewDelegationTokenResponse,
        ExpireDelegationToken => ExpireDelegationTokenResponse,
        DescribeDelegationToken => DescribeDelegationTokenResponse,
        ElectLeaders => ElectLeadersResponse,
        AlterPartitionReassignments => AlterPartitionReassignmentsResponse,
        ListPartitionReassignments => ListPartitionReassignmentsResponse,
        OffsetDelete => OffsetDeleteResponse,
        DescribeClientQuotas => DescribeClientQuotasResponse,
        DescribeUserScramCredentials => DescribeUserScramCredentialsResponse,
        Vote => VoteResponse,
        BeginQuorumEpoch => BeginQuorumEpochResponse,
        EndQuorumEpoch => EndQuorumEpochResponse,
        DescribeQuorum => DescribeQuorumResponse,
        AlterPartition => AlterPartitionResponse,
        UpdateFeatures => UpdateFeaturesResponse,
        Envelope => EnvelopeResponse,
        FetchSnapshot => FetchSnapshotResponse,
        DescribeCluster => DescribeClusterResponse,
        BrokerRegistration => BrokerRegistrationResponse,
        BrokerHeartbeat => BrokerHeartbeatResponse,
        UnregisterBroker => UnregisterBrokerResponse,
        ListTransactions => ListTransactionsResponse,
        AllocateProducerIds => AllocateProducerIdsResponse,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatResponse,
        ControllerRegistration => ControllerRegistrationResponse,
        GetTelemetrySubscriptions => GetTelemetrySubscriptionsResponse,
        PushTelemetry => PushTelemetryResponse,
        AssignReplicasToDirs => AssignReplicasToDirsResponse,
        ListConfigResources => ListConfigResourcesResponse,
        ShareGroupHeartbeat => ShareGroupHeartbeatResponse,
        ShareFetch => ShareFetchResponse,
        ShareAcknowledge => ShareAcknowledgeResponse,
        AddRaftVoter => AddRaftVoterResponse,
        RemoveRaftVoter => RemoveRaftVoterResponse,
        UpdateRaftVoter => UpdateRaftVoterResponse,
        AlterShareGroupOffsets => AlterShareGroupOffsetsResponse,
        DeleteShareGroupOffsets => DeleteShareGroupOffsetsResponse,
        ]
        without: [
        OffsetCommit => OffsetCommitResponse,
        DescribeGroups => DescribeGroupsResponse,
        CreateTopics => CreateTopicsResponse,
        DeleteTopics => DeleteTopicsResponse,
        DeleteRecords => DeleteRecordsResponse,
        OffsetForLeaderEpoch => OffsetForLeaderEpochResponse,
        WriteTxnMarkers => WriteTxnMarkersResponse,
        TxnOffsetCommit => TxnOffsetCommitResponse,
        CreateAcls => CreateAclsResponse,
        DeleteAcls => DeleteAclsResponse,
        DescribeConfigs => DescribeConfigsResponse,
        AlterConfigs => AlterConfigsResponse,
        AlterReplicaLogDirs => AlterReplicaLogDirsResponse,
        CreatePartitions => CreatePartitionsResponse,
        DeleteGroups => DeleteGroupsResponse,
        IncrementalAlterConfigs => IncrementalAlterConfigsResponse,
        AlterClientQuotas => AlterClientQuotasResponse,
        AlterUserScramCredentials => AlterUserScramCredentialsResponse,
        DescribeProducers => DescribeProducersResponse,
        DescribeTransactions => DescribeTransactionsResponse,
        ConsumerGroupDescribe => ConsumerGroupDescribeResponse,
        DescribeTopicPartitions => DescribeTopicPartitionsResponse,
        ShareGroupDescribe => ShareGroupDescribeResponse,
        InitializeShareGroupState => InitializeShareGroupStateResponse,
        ReadShareGroupState => ReadShareGroupStateResponse,
        WriteShareGroupState => WriteShareGroupStateResponse,
        DeleteShareGroupState => DeleteShareGroupStateResponse,
        ReadShareGroupStateSummary => ReadShareGroupStateSummaryResponse,
        DescribeShareGroupOffsets => DescribeShareGroupOffsetsResponse,
        ]
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{api_versions, parse_frame, Parsed};
    use super::*;
    use bytes::{Buf, BufMut, BytesMut};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::protocol::StrBytes;

    /// An ElectLeaders v1 request (non-flexible), by hand: the codec only
    /// decodes requests.
    fn elect_leaders_v1(correlation_id: i32) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(ApiKey::ElectLeaders as i16);
        out.put_i16(1);
        out.put_i32(correlation_id);
        out.put_i16(-1); // null client id
        out.put_i8(0); // election type
        out.put_i32(-1); // null topic partitions: all
        out.put_i32(1000); // timeout ms
        out.freeze()
    }

    #[test]
    fn an_unserved_api_gets_its_response_with_unsupported_version() {
        // ElectLeaders (partition leadership) never applies to sluice
        assert!(!api_versions::is_supported(ApiKey::ElectLeaders, 1));
        let Parsed::Answer(mut answer) = parse_frame(elect_leaders_v1(77)).unwrap() else {
            panic!("expected an immediate answer");
        };
        assert_eq!(answer.get_i32() as usize, answer.len(), "size prefix");
        assert_eq!(answer.get_i32(), 77, "correlation id");
        assert_eq!(answer.get_i32(), 0, "throttle time");
        assert_eq!(answer.get_i16(), ERROR_CODE, "error code");
        assert_eq!(answer.get_i32(), 0, "no election results");
        assert!(!answer.has_remaining());
    }

    #[test]
    fn an_unserved_api_answered_after_dispatch_keeps_the_correlation_id() {
        let mut frame = elect_leaders_v1(5);
        let header = RequestHeader::decode(&mut frame, 1).unwrap();
        let mut answer =
            answer_body(ApiKey::ElectLeaders, 1, header.correlation_id, frame).unwrap();
        answer.advance(4);
        assert_eq!(answer.get_i32(), 5);
    }

    #[test]
    fn every_codec_api_has_an_answer_at_every_codec_version() {
        for key in ApiKey::iter() {
            let range = key.valid_versions();
            for version in range.min..=range.max {
                let answered = match key {
                    // answered from the decoded request, tested below
                    ApiKey::Produce | ApiKey::ListOffsets | ApiKey::Metadata => continue,
                    ApiKey::ApiVersions => continue,
                    _ => default_answer(key, version, 1),
                };
                assert!(answered.is_ok(), "{key:?} v{version}: {answered:?}");
            }
        }
    }

    #[test]
    fn per_partition_answers_fail_every_requested_partition() {
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_data(vec![
                    PartitionProduceData::default().with_index(0),
                    PartitionProduceData::default().with_index(3),
                ])]);
        let response = produce(request);
        assert_eq!(response.responses.len(), 1);
        let codes: Vec<_> = response.responses[0]
            .partition_responses
            .iter()
            .map(|p| (p.index, p.error_code))
            .collect();
        assert_eq!(codes, vec![(0, ERROR_CODE), (3, ERROR_CODE)]);
        for version in 3..=12 {
            encode(ApiKey::Produce, version, 1, &response).unwrap();
        }
        let listed = list_offsets(ListOffsetsRequest::default().with_topics(vec![
            kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![
                    kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(2),
                ]),
        ]));
        assert_eq!(listed.topics[0].partitions[0].partition_index, 2);
        assert_eq!(listed.topics[0].partitions[0].error_code, ERROR_CODE);
        for version in 1..=10 {
            encode(ApiKey::ListOffsets, version, 1, &listed).unwrap();
        }
        let described = metadata(MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("t")))),
        ])));
        assert_eq!(described.topics[0].error_code, ERROR_CODE);
        for version in 0..=13 {
            encode(ApiKey::Metadata, version, 1, &described).unwrap();
        }
    }

    #[test]
    fn versions_outside_the_codec_cannot_be_answered() {
        assert!(answer(ApiKey::ElectLeaders, 99, elect_leaders_v1(1)).is_none());
        assert!(!codec_knows(ApiKey::Produce, 0));
        assert!(codec_knows(ApiKey::Produce, 3));
    }
}
