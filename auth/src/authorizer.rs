//! The authorizer: may this principal, from this host, perform this
//! operation on this resource? Kafka's rules (its `AclAuthorizer`):
//!
//! - super users may do everything;
//! - a DENY binding that matches (principal or `User:*`, host or `*`, the
//!   operation or ALL, a pattern covering the resource) refuses, whatever
//!   allows it;
//! - else an ALLOW binding that matches allows; READ, WRITE, DELETE and
//!   ALTER each imply DESCRIBE, and ALTER_CONFIGS implies DESCRIBE_CONFIGS;
//! - else the answer is no.
//!
//! Without an authorizer (the default of a local node) everything is
//! allowed.

use sluice_metadata::acls::{AclBinding, Operation, Permission, ResourceType, WILDCARD};

use crate::principal::Principal;

/// The authorizer of a node.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    enabled: bool,
    super_users: Vec<Principal>,
}

impl Authorizer {
    /// No authorizer: everything is allowed.
    pub fn allow_all() -> Self {
        Self::default()
    }

    /// ACLs enforced; `super_users` may do everything.
    pub fn enforcing(super_users: Vec<Principal>) -> Self {
        Self {
            enabled: true,
            super_users,
        }
    }

    /// Whether ACLs are enforced.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `principal` may do everything.
    pub fn is_super_user(&self, principal: &Principal) -> bool {
        self.super_users.contains(principal)
    }

    /// Whether `principal` connecting from `host` may perform `operation`
    /// on `name` of `resource_type`, given `acls`.
    pub fn authorize(
        &self,
        acls: &[AclBinding],
        principal: &Principal,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if !self.enabled || self.super_users.contains(principal) {
            return true;
        }
        let who = principal.to_string();
        let wildcard = format!("{}:{WILDCARD}", principal.kind);
        let applies = |acl: &&AclBinding| {
            (acl.principal == who || acl.principal == wildcard)
                && (acl.host == host || acl.host == WILDCARD)
                && acl.covers(resource_type, name)
        };
        let mut allowed = false;
        for acl in acls.iter().filter(applies) {
            match acl.permission {
                Permission::Deny
                    if acl.operation == operation || acl.operation == Operation::All =>
                {
                    return false;
                }
                Permission::Deny => {}
                Permission::Allow => allowed |= implies(acl.operation, operation),
            }
        }
        allowed
    }
}

/// Whether allowing `granted` allows `wanted`.
fn implies(granted: Operation, wanted: Operation) -> bool {
    granted == wanted
        || granted == Operation::All
        || (wanted == Operation::Describe
            && matches!(
                granted,
                Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
            ))
        || (wanted == Operation::DescribeConfigs && granted == Operation::AlterConfigs)
}

#[cfg(test)]
mod tests {
    use sluice_metadata::acls::PatternType;

    use super::*;

    fn acl(
        principal: &str,
        name: &str,
        pattern: PatternType,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation,
            permission,
        }
    }

    #[test]
    fn kafkas_rules() {
        let alice = Principal::user("alice");
        let bob = Principal::user("bob");
        let auth = Authorizer::enforcing(vec![Principal::user("admin")]);
        let acls = vec![
            acl(
                "User:alice",
                "team-a.",
                PatternType::Prefixed,
                Operation::Write,
                Permission::Allow,
            ),
            acl(
                "User:alice",
                "team-a.secret",
                PatternType::Literal,
                Operation::All,
                Permission::Deny,
            ),
            acl(
                "User:*",
                "public",
                PatternType::Literal,
                Operation::Read,
                Permission::Allow,
            ),
        ];
        let can = |who: &Principal, op, name| {
            auth.authorize(&acls, who, "10.0.0.1", op, ResourceType::Topic, name)
        };
        assert!(can(&alice, Operation::Write, "team-a.orders"));
        assert!(
            can(&alice, Operation::Describe, "team-a.orders"),
            "WRITE implies DESCRIBE"
        );
        assert!(!can(&alice, Operation::Read, "team-a.orders"));
        assert!(
            !can(&alice, Operation::Write, "team-b.orders"),
            "exactly its prefix"
        );
        assert!(
            !can(&alice, Operation::Write, "team-a.secret"),
            "deny beats allow"
        );
        assert!(can(&bob, Operation::Read, "public"), "User:* is everyone");
        assert!(!can(&bob, Operation::Write, "team-a.orders"));
        assert!(
            auth.authorize(
                &acls,
                &Principal::user("admin"),
                "h",
                Operation::Alter,
                ResourceType::Cluster,
                "kafka-cluster"
            ),
            "super user"
        );
        // another resource type is not covered
        assert!(!auth.authorize(
            &acls,
            &bob,
            "h",
            Operation::Read,
            ResourceType::Group,
            "public"
        ));
        // no authorizer: everything
        assert!(Authorizer::allow_all().authorize(
            &[],
            &bob,
            "h",
            Operation::Delete,
            ResourceType::Topic,
            "x"
        ));
        // a host-bound binding
        let mut from_host = acls[2].clone();
        from_host.principal = "User:carol".into();
        from_host.host = "10.0.0.9".into();
        let carol = Principal::user("carol");
        assert!(auth.authorize(
            &[from_host.clone()],
            &carol,
            "10.0.0.9",
            Operation::Read,
            ResourceType::Topic,
            "public"
        ));
        assert!(!auth.authorize(
            &[from_host],
            &carol,
            "10.0.0.8",
            Operation::Read,
            ResourceType::Topic,
            "public"
        ));
        assert!(implies(Operation::AlterConfigs, Operation::DescribeConfigs));
        assert!(!implies(Operation::Describe, Operation::Read));
    }
}
