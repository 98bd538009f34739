//! The operations a client may perform on a resource, as Kafka reports them
//! when asked (`authorized_operations` in Metadata, DescribeCluster and
//! DescribeGroups): a bit field with one bit per `AclOperation` code.
//!
//! sluice has no authorizer yet, so every operation that applies to a
//! resource type is allowed and reported; the security issue replaces these
//! with what the principal's ACLs allow.

/// Kafka `AclOperation` codes.
mod op {
    pub const READ: u32 = 3;
    pub const WRITE: u32 = 4;
    pub const CREATE: u32 = 5;
    pub const DELETE: u32 = 6;
    pub const ALTER: u32 = 7;
    pub const DESCRIBE: u32 = 8;
    pub const CLUSTER_ACTION: u32 = 9;
    pub const DESCRIBE_CONFIGS: u32 = 10;
    pub const ALTER_CONFIGS: u32 = 11;
    pub const IDEMPOTENT_WRITE: u32 = 12;
}

/// The value when the client did not ask.
pub const NOT_REQUESTED: i32 = i32::MIN;

fn bits(operations: &[u32]) -> i32 {
    operations.iter().fold(0, |acc, op| acc | (1 << op))
}

/// Operations on a topic.
pub fn topic() -> i32 {
    bits(&[
        op::READ,
        op::WRITE,
        op::CREATE,
        op::DELETE,
        op::ALTER,
        op::DESCRIBE,
        op::DESCRIBE_CONFIGS,
        op::ALTER_CONFIGS,
    ])
}

/// Operations on the cluster.
pub fn cluster() -> i32 {
    bits(&[
        op::CREATE,
        op::ALTER,
        op::DESCRIBE,
        op::CLUSTER_ACTION,
        op::DESCRIBE_CONFIGS,
        op::ALTER_CONFIGS,
        op::IDEMPOTENT_WRITE,
    ])
}

/// Operations on a consumer group.
pub fn group() -> i32 {
    bits(&[op::READ, op::DELETE, op::DESCRIBE])
}

/// `operations` when `asked`, else [`NOT_REQUESTED`].
pub fn when_asked(asked: bool, operations: i32) -> i32 {
    if asked {
        operations
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
        assert_eq!(topic(), 0b1101_1111_1000);
        assert_eq!(group(), (1 << 3) | (1 << 6) | (1 << 8));
        assert_eq!(cluster() & (1 << op::IDEMPOTENT_WRITE), 1 << 12);
        assert_eq!(when_asked(false, topic()), i32::MIN);
    }
}
