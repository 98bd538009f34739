//! Who a request acts as and what the ACLs let it do. Each Kafka request
//! and each HTTP request runs with one [`Access`]: its principal, its
//! client host, the node's authorizer and the ACLs as the cluster view saw
//! them when the request arrived (the view follows etcd's watch, so a
//! change reaches every node within the watch delay).
//!
//! The Kafka listener sets the access of the request being handled as a
//! task-local ([`scoped`]) around the handler's future, so the modules of
//! the APIs check it where they touch a resource ([`check`]) without
//! threading it through every signature. Outside a request (unit tests of
//! the modules) there is none and everything is allowed; a handler must
//! check before it spawns a task of its own.

use std::future::Future;
use std::sync::Arc;

use sluice_auth::{Authorizer, Principal};
use sluice_metadata::acls::{AclBinding, Operation, Permission, ResourceType, CLUSTER_RESOURCE};

use crate::error::{ErrorKind, IngestError, IngestResult};

/// One request's principal and what it may do.
#[derive(Debug, Clone)]
pub struct Access {
    authorizer: Arc<Authorizer>,
    acls: Arc<Vec<AclBinding>>,
    principal: Principal,
    host: String,
}

tokio::task_local! {
    static CURRENT: Arc<Access>;
}

impl Access {
    /// `principal` from `host`, judged by `authorizer` against `acls`.
    pub fn new(
        authorizer: Arc<Authorizer>,
        acls: Arc<Vec<AclBinding>>,
        principal: Principal,
        host: String,
    ) -> Self {
        Self {
            authorizer,
            acls,
            principal,
            host,
        }
    }

    /// Who the request acts as.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Whether `operation` on `name` of `resource_type` is allowed.
    pub fn allows(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        self.authorizer.authorize(
            &self.acls,
            &self.principal,
            &self.host,
            operation,
            resource_type,
            name,
        )
    }

    /// Whether `operation` is allowed on some resource of `resource_type`
    /// (Kafka's idempotent producer may initialize when it may WRITE to
    /// any topic): an ALLOW binding of this principal for it, and no
    /// DENY of it on every name.
    pub fn allows_any(&self, operation: Operation, resource_type: ResourceType) -> bool {
        if !self.authorizer.enabled() || self.authorizer.is_super_user(&self.principal) {
            return true;
        }
        let who = self.principal.to_string();
        let everyone = format!("{}:*", self.principal.kind);
        let mine = |acl: &&AclBinding| {
            acl.resource_type == resource_type
                && (acl.principal == who || acl.principal == everyone)
                && (acl.host == self.host || acl.host == "*")
                && (acl.operation == operation || acl.operation == Operation::All)
        };
        let denied_everywhere = self.acls.iter().filter(mine).any(|acl| {
            acl.permission == Permission::Deny
                && acl.resource_name == "*"
                && acl.pattern_type == sluice_metadata::acls::PatternType::Literal
        });
        !denied_everywhere
            && self
                .acls
                .iter()
                .filter(mine)
                .any(|acl| acl.permission == Permission::Allow)
    }

    /// The Kafka `authorized_operations` bit field of `operations` on a
    /// resource.
    pub fn operations(
        &self,
        resource_type: ResourceType,
        name: &str,
        operations: &[Operation],
    ) -> i32 {
        operations
            .iter()
            .filter(|&&op| self.allows(op, resource_type, name))
            .fold(0, |bits, op| bits | (1 << op.code()))
    }
}

/// Run `future` as a request of `access`.
pub async fn scoped<F: Future>(access: Arc<Access>, future: F) -> F::Output {
    CURRENT.scope(access, future).await
}

/// The access of the request being handled, if any.
pub fn current() -> Option<Arc<Access>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Whether the current request may perform `operation` on `name` of
/// `resource_type`.
pub fn allowed(operation: Operation, resource_type: ResourceType, name: &str) -> bool {
    current().is_none_or(|access| access.allows(operation, resource_type, name))
}

/// [`allowed`], as the error a refusal is.
pub fn check(operation: Operation, resource_type: ResourceType, name: &str) -> IngestResult<()> {
    if allowed(operation, resource_type, name) {
        return Ok(());
    }
    let principal = current().map_or_else(String::new, |a| a.principal().to_string());
    let (kind, resource) = match resource_type {
        ResourceType::Topic => (ErrorKind::TopicDenied, format!("topic {name:?}")),
        ResourceType::Group => (ErrorKind::GroupDenied, format!("group {name:?}")),
        ResourceType::Cluster | ResourceType::TransactionalId => {
            (ErrorKind::ClusterDenied, "the cluster".to_string())
        }
    };
    Err(IngestError::Denied {
        principal,
        operation,
        resource,
        kind,
    })
}

/// [`check`] on a topic.
pub fn topic(operation: Operation, name: &str) -> IngestResult<()> {
    check(operation, ResourceType::Topic, name)
}

/// [`check`] on a group.
pub fn group(operation: Operation, id: &str) -> IngestResult<()> {
    check(operation, ResourceType::Group, id)
}

/// [`check`] on the cluster.
pub fn cluster(operation: Operation) -> IngestResult<()> {
    check(operation, ResourceType::Cluster, CLUSTER_RESOURCE)
}

/// Whether the current request may create topic `name` (CREATE on the
/// cluster or on the topic).
pub fn may_create_topic(name: &str) -> bool {
    allowed(Operation::Create, ResourceType::Cluster, CLUSTER_RESOURCE)
        || allowed(Operation::Create, ResourceType::Topic, name)
}

/// The `authorized_operations` bits of `operations` on a resource for the
/// current request (all of them outside a request).
pub fn operations(resource_type: ResourceType, name: &str, operations: &[Operation]) -> i32 {
    match current() {
        Some(access) => access.operations(resource_type, name, operations),
        None => operations
            .iter()
            .fold(0, |bits, op| bits | (1 << op.code())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use sluice_metadata::acls::PatternType;

    use super::*;

    #[tokio::test]
    async fn checks_use_the_access_of_the_request_being_handled() {
        let acls = vec![AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "orders".into(),
            pattern_type: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Write,
            permission: Permission::Allow,
        }];
        let access = |who: &str| {
            Arc::new(Access::new(
                Arc::new(Authorizer::enforcing(vec![])),
                Arc::new(acls.clone()),
                Principal::user(who),
                "127.0.0.1".into(),
            ))
        };
        scoped(access("alice"), async {
            assert!(topic(Operation::Write, "orders").is_ok());
            assert!(topic(Operation::Describe, "orders").is_ok());
            let error = topic(Operation::Read, "orders").unwrap_err();
            assert_eq!(error.kind(), ErrorKind::TopicDenied);
            assert!(
                error.to_string().contains("User:alice may not READ"),
                "{error}"
            );
            assert!(current()
                .unwrap()
                .allows_any(Operation::Write, ResourceType::Topic));
        })
        .await;
        scoped(access("bob"), async {
            assert!(topic(Operation::Write, "orders").is_err());
            assert!(!current()
                .unwrap()
                .allows_any(Operation::Write, ResourceType::Topic));
            assert_eq!(
                group(Operation::Read, "g").unwrap_err().kind(),
                ErrorKind::GroupDenied
            );
        })
        .await;
        // outside a request: everything
        assert!(cluster(Operation::Alter).is_ok());
    }
}
