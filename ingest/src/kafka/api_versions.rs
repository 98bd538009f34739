//! ApiVersions: the APIs this listener implements and their version ranges.
//!
//! Only what is implemented is advertised. The ranges cover what librdkafka
//! 2.x (kcat, confluent-kafka) and the Java client negotiate; flexible
//! versions are handled by the codec.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// (API, lowest version, highest version) served.
///
/// Produce starts at 3 and Fetch at 4: the first versions carrying
/// RecordBatch v2, the only format sluice stores. Fetch stops at 12 (v13+
/// names topics by id); ListOffsets at 6 (v7 adds the max-timestamp query).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    // admin: the whole codec range of each
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    // idempotent producers (v5 differs from v4 only for transactions)
    (ApiKey::InitProducerId, 0, 5),
];

/// Whether `version` of `key` is served.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|&(k, min, max)| k == key && (min..=max).contains(&version))
}

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

/// The answer to an ApiVersions request at a served version.
pub fn handle(_version: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

/// The answer to an ApiVersions request at a version this listener does not
/// serve: UNSUPPORTED_VERSION with the served ranges, to be encoded as v0.
pub fn unsupported_version() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{
        ApiVersionsRequest, FetchRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest,
    };
    use kafka_protocol::protocol::Message;

    #[test]
    fn advertised_ranges_are_within_the_codec() {
        for &(key, min, max) in SUPPORTED {
            let codec = match key {
                ApiKey::Produce => ProduceRequest::VERSIONS,
                ApiKey::Fetch => FetchRequest::VERSIONS,
                ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
                ApiKey::Metadata => MetadataRequest::VERSIONS,
                ApiKey::ApiVersions => ApiVersionsRequest::VERSIONS,
                ApiKey::FindCoordinator => {
                    kafka_protocol::messages::FindCoordinatorRequest::VERSIONS
                }
                ApiKey::JoinGroup => kafka_protocol::messages::JoinGroupRequest::VERSIONS,
                ApiKey::SyncGroup => kafka_protocol::messages::SyncGroupRequest::VERSIONS,
                ApiKey::Heartbeat => kafka_protocol::messages::HeartbeatRequest::VERSIONS,
                ApiKey::LeaveGroup => kafka_protocol::messages::LeaveGroupRequest::VERSIONS,
                ApiKey::OffsetCommit => kafka_protocol::messages::OffsetCommitRequest::VERSIONS,
                ApiKey::OffsetFetch => kafka_protocol::messages::OffsetFetchRequest::VERSIONS,
                ApiKey::ListGroups => kafka_protocol::messages::ListGroupsRequest::VERSIONS,
                ApiKey::DescribeGroups => kafka_protocol::messages::DescribeGroupsRequest::VERSIONS,
                ApiKey::DeleteGroups => kafka_protocol::messages::DeleteGroupsRequest::VERSIONS,
                ApiKey::OffsetDelete => kafka_protocol::messages::OffsetDeleteRequest::VERSIONS,
                ApiKey::CreateTopics => kafka_protocol::messages::CreateTopicsRequest::VERSIONS,
                ApiKey::DeleteTopics => kafka_protocol::messages::DeleteTopicsRequest::VERSIONS,
                ApiKey::CreatePartitions => {
                    kafka_protocol::messages::CreatePartitionsRequest::VERSIONS
                }
                ApiKey::DescribeConfigs => {
                    kafka_protocol::messages::DescribeConfigsRequest::VERSIONS
                }
                ApiKey::AlterConfigs => kafka_protocol::messages::AlterConfigsRequest::VERSIONS,
                ApiKey::IncrementalAlterConfigs => {
                    kafka_protocol::messages::IncrementalAlterConfigsRequest::VERSIONS
                }
                ApiKey::DescribeCluster => {
                    kafka_protocol::messages::DescribeClusterRequest::VERSIONS
                }
                ApiKey::InitProducerId => kafka_protocol::messages::InitProducerIdRequest::VERSIONS,
                other => panic!("no codec check for {other:?}"),
            };
            assert!(codec.min <= min && max <= codec.max, "{key:?}");
        }
    }
}
