//! ApiVersions: the APIs this listener implements and their version ranges,
//! read from the dispatch table ([`dispatch::APIS`]), so only what is
//! implemented is advertised. Flexible versions are handled by the codec.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use super::dispatch;

/// Whether `version` of `key` is served (see [`dispatch::APIS`]).
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    dispatch::is_supported(key, version)
}

fn api_keys() -> Vec<ApiVersion> {
    dispatch::APIS
        .iter()
        .map(|api| {
            ApiVersion::default()
                .with_api_key(api.key as i16)
                .with_min_version(api.min)
                .with_max_version(api.max)
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
    fn every_served_api_is_advertised_with_its_range_and_nothing_else() {
        let answer = handle(3);
        assert_eq!(answer.error_code, 0);
        assert_eq!(answer.api_keys.len(), dispatch::APIS.len());
        for api in dispatch::APIS {
            let listed = answer
                .api_keys
                .iter()
                .find(|v| v.api_key == api.key as i16)
                .unwrap_or_else(|| panic!("{:?} not advertised", api.key));
            assert_eq!((listed.min_version, listed.max_version), (api.min, api.max));
            assert!(is_supported(api.key, api.min) && is_supported(api.key, api.max));
            assert!(!is_supported(api.key, api.max + 1));
        }
        assert!(!is_supported(ApiKey::ElectLeaders, 0));
        let refused = unsupported_version();
        assert_eq!(refused.error_code, ResponseError::UnsupportedVersion.code());
        assert_eq!(
            refused.api_keys, answer.api_keys,
            "the ranges to choose from"
        );
    }

    #[test]
    fn advertised_ranges_are_within_the_codec() {
        for &dispatch::Api { key, min, max, .. } in dispatch::APIS {
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
                ApiKey::DeleteRecords => kafka_protocol::messages::DeleteRecordsRequest::VERSIONS,
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
                ApiKey::SaslHandshake => kafka_protocol::messages::SaslHandshakeRequest::VERSIONS,
                ApiKey::CreateAcls => kafka_protocol::messages::CreateAclsRequest::VERSIONS,
                ApiKey::DescribeClientQuotas => {
                    kafka_protocol::messages::DescribeClientQuotasRequest::VERSIONS
                }
                ApiKey::AlterClientQuotas => {
                    kafka_protocol::messages::AlterClientQuotasRequest::VERSIONS
                }
                ApiKey::DescribeAcls => kafka_protocol::messages::DescribeAclsRequest::VERSIONS,
                ApiKey::DeleteAcls => kafka_protocol::messages::DeleteAclsRequest::VERSIONS,
                ApiKey::SaslAuthenticate => {
                    kafka_protocol::messages::SaslAuthenticateRequest::VERSIONS
                }
                ApiKey::DescribeUserScramCredentials => {
                    kafka_protocol::messages::DescribeUserScramCredentialsRequest::VERSIONS
                }
                ApiKey::AlterUserScramCredentials => {
                    kafka_protocol::messages::AlterUserScramCredentialsRequest::VERSIONS
                }
                other => panic!("no codec check for {other:?}"),
            };
            assert!(codec.min <= min && max <= codec.max, "{key:?}");
        }
    }
}
