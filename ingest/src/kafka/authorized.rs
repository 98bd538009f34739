//! The operations a client may perform on a resource, as Kafka reports them
//! when asked (`authorized_operations` in Metadata, DescribeCluster and
//! DescribeGroups): a bit field with one bit per `AclOperation` code, of
//! the operations that apply to the resource type and that the request's
//! principal is allowed (all of them without an authorizer).

use sluice_metadata::acls::{Operation, ResourceType, CLUSTER_RESOURCE};

use crate::access;

/// The value when the client did not ask.
pub const NOT_REQUESTED: i32 = i32::MIN;

/// Operations that apply to a topic.
const TOPIC: &[Operation] = &[
    Operation::Read,
    Operation::Write,
    Operation::Create,
    Operation::Delete,
    Operation::Alter,
    Operation::Describe,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
];

/// Operations that apply to the cluster.
const CLUSTER: &[Operation] = &[
    Operation::Create,
    Operation::Alter,
    Operation::Describe,
    Operation::ClusterAction,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
    Operation::IdempotentWrite,
];

/// Operations that apply to a consumer group.
const GROUP: &[Operation] = &[Operation::Read, Operation::Delete, Operation::Describe];

/// Allowed operations on topic `name`.
pub fn topic(name: &str) -> i32 {
    access::operations(ResourceType::Topic, name, TOPIC)
}

/// Allowed operations on the cluster.
pub fn cluster() -> i32 {
    access::operations(ResourceType::Cluster, CLUSTER_RESOURCE, CLUSTER)
}

/// Allowed operations on group `id`.
pub fn group(id: &str) -> i32 {
    access::operations(ResourceType::Group, id, GROUP)
}

/// `operations` when `asked`, else [`NOT_REQUESTED`].
pub fn when_asked(asked: bool, operations: impl FnOnce() -> i32) -> i32 {
    if asked {
        operations()
    } else {
        NOT_REQUESTED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_fields_match_kafkas_operation_codes() {
        // what the Java broker reports for a topic to a super user
        assert_eq!(topic("t"), 0b1101_1111_1000);
        assert_eq!(group("g"), (1 << 3) | (1 << 6) | (1 << 8));
        assert_eq!(cluster() & (1 << 12), 1 << 12);
        assert_eq!(when_asked(false, || topic("t")), i32::MIN);
    }
}
