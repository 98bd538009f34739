//! ACLs, Kafka's model: who (principal, host) may or may not do what
//! (operation) to which resources (type, name, literal or prefixed
//! pattern). One key per binding under `acls/`, named by the binding
//! itself, so creating the same binding twice is one key and deleting it
//! is one delete. Every node caches them through the cluster view's watch
//! ([`crate::view::ClusterView::acls`]); the decision is `sluice-auth`'s.

use serde::{Deserialize, Serialize};

use crate::model::{Catalog, ModelError, ModelResult};

macro_rules! kafka_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $code:literal, $text:literal;)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Kafka's code.
            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code,)+ }
            }

            /// By Kafka's code.
            pub fn from_code(code: i8) -> Option<Self> {
                match code { $($code => Some($name::$variant),)+ _ => None }
            }

            /// Kafka's name (as its CLI prints it).
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            /// By name, case-insensitive, `-` or `_` between words.
            pub fn parse(text: &str) -> Option<Self> {
                let text = text.replace('-', "_");
                Self::ALL.iter().copied().find(|v| v.name().eq_ignore_ascii_case(&text))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

kafka_enum!(
    /// What an ACL is about.
    ResourceType {
        /// A topic.
        Topic = 2, "TOPIC";
        /// A consumer group.
        Group = 3, "GROUP";
        /// The cluster (named `kafka-cluster`).
        Cluster = 4, "CLUSTER";
        /// A transactional id.
        TransactionalId = 5, "TRANSACTIONAL_ID";
    }
);

kafka_enum!(
    /// How an ACL's resource name matches.
    PatternType {
        /// The name exactly (`*` matches every name).
        Literal = 3, "LITERAL";
        /// Every name that starts with it.
        Prefixed = 4, "PREFIXED";
    }
);

kafka_enum!(
    /// What an ACL allows or denies.
    Operation {
        /// Every operation.
        All = 2, "ALL";
        /// Consume, join a group.
        Read = 3, "READ";
        /// Produce.
        Write = 4, "WRITE";
        /// Create topics.
        Create = 5, "CREATE";
        /// Delete topics, groups, records.
        Delete = 6, "DELETE";
        /// Add partitions; manage ACLs and users (cluster).
        Alter = 7, "ALTER";
        /// See a topic or group exists; its offsets.
        Describe = 8, "DESCRIBE";
        /// Inter-broker actions.
        ClusterAction = 9, "CLUSTER_ACTION";
        /// Read configs.
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        /// Change configs.
        AlterConfigs = 11, "ALTER_CONFIGS";
        /// Idempotent produce (cluster).
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
    }
);

kafka_enum!(
    /// Whether an ACL allows or denies.
    Permission {
        /// Deny: wins over any allow.
        Deny = 2, "DENY";
        /// Allow.
        Allow = 3, "ALLOW";
    }
);

/// The name of the one cluster resource.
pub const CLUSTER_RESOURCE: &str = "kafka-cluster";
/// The name (and principal, and host) that matches every one.
pub const WILDCARD: &str = "*";

/// One ACL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    /// Resource type.
    pub resource_type: ResourceType,
    /// Resource name (or prefix, or `*`).
    pub resource_name: String,
    /// How the name matches.
    pub pattern_type: PatternType,
    /// `User:alice`, or `User:*` for everyone.
    pub principal: String,
    /// Client host (IP address), or `*`.
    pub host: String,
    /// The operation.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

impl AclBinding {
    /// Whether this binding's resource pattern covers `name` of `resource_type`.
    pub fn covers(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => {
                    self.resource_name == name || self.resource_name == WILDCARD
                }
                PatternType::Prefixed => name.starts_with(&self.resource_name),
            }
    }

    /// Refuse a binding that cannot be stored or would never match.
    pub fn validate(&self) -> Result<(), String> {
        if self.resource_name.is_empty() {
            return Err("the resource name is empty".into());
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_RESOURCE {
            return Err(format!("the cluster resource is named {CLUSTER_RESOURCE}"));
        }
        if self.pattern_type == PatternType::Prefixed && self.resource_name == WILDCARD {
            return Err("a prefixed pattern cannot be *".into());
        }
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => return Err(format!("principal {:?} is not Type:name", self.principal)),
        }
        if self.host.is_empty() {
            return Err("the host is empty (use *)".into());
        }
        Ok(())
    }

    /// The key suffix naming this binding: every field, hex-encoded (so
    /// that any name is a valid, unambiguous key).
    fn key_name(&self) -> String {
        let text = format!(
            "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            self.resource_type.code(),
            self.pattern_type.code(),
            self.resource_name,
            self.principal,
            self.host,
            self.operation.code(),
            self.permission.code()
        );
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }
}

/// A filter of bindings (DescribeAcls, DeleteAcls): `None` matches any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFilter {
    /// Resource type.
    pub resource_type: Option<ResourceType>,
    /// Resource name.
    pub resource_name: Option<String>,
    /// Pattern: `None` = any; `Match` semantics are `matching`.
    pub pattern_type: Option<PatternType>,
    /// Kafka's MATCH pattern filter: bindings that would apply to the
    /// resource name (literal equal or `*`, prefixes of it).
    pub matching: bool,
    /// Principal.
    pub principal: Option<String>,
    /// Host.
    pub host: Option<String>,
    /// Operation (`All` here matches only ALL bindings; `None` any).
    pub operation: Option<Operation>,
    /// Permission.
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// Whether `binding` passes the filter.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        let resource = match (&self.resource_name, self.matching) {
            (Some(name), true) => {
                self.resource_type.is_none_or(|t| binding.covers(t, name))
                    && (self.resource_type.is_some()
                        || ResourceType::ALL.iter().any(|&t| binding.covers(t, name)))
            }
            (Some(name), false) => {
                binding.resource_name == *name
                    && self
                        .resource_type
                        .is_none_or(|t| t == binding.resource_type)
                    && self.pattern_type.is_none_or(|p| p == binding.pattern_type)
            }
            (None, _) => {
                self.resource_type
                    .is_none_or(|t| t == binding.resource_type)
                    && (self.matching
                        || self.pattern_type.is_none_or(|p| p == binding.pattern_type))
            }
        };
        resource
            && self
                .principal
                .as_ref()
                .is_none_or(|p| *p == binding.principal)
            && self.host.as_ref().is_none_or(|h| *h == binding.host)
            && self.operation.is_none_or(|o| o == binding.operation)
            && self.permission.is_none_or(|p| p == binding.permission)
    }
}

impl Catalog {
    /// Store `binding` (a binding stored already stays one).
    pub async fn create_acl(&self, binding: &AclBinding) -> ModelResult<()> {
        binding.validate().map_err(ModelError::Invalid)?;
        let key = self.keys().acl(&binding.key_name());
        let value = serde_json::to_vec(binding)
            .map_err(|e| ModelError::Invalid(format!("encoding an ACL: {e}")))?;
        self.store().put(&key, value.into(), None).await?;
        Ok(())
    }

    /// Every stored binding (read from the store, not the view).
    pub async fn acls(&self) -> ModelResult<Vec<AclBinding>> {
        let mut out = Vec::new();
        for kv in self.store().range(&self.keys().acls()).await?.kvs {
            out.push(
                decode_acl(&kv.value)
                    .map_err(|e| ModelError::Invalid(format!("{}: {e}", kv.key)))?,
            );
        }
        Ok(out)
    }

    /// Delete every binding `filter` matches; the deleted ones.
    pub async fn delete_acls(&self, filter: &AclFilter) -> ModelResult<Vec<AclBinding>> {
        let mut deleted = Vec::new();
        for binding in self.acls().await? {
            if filter.matches(&binding) {
                let key = self.keys().acl(&binding.key_name());
                if self.store().delete(&key).await? {
                    deleted.push(binding);
                }
            }
        }
        Ok(deleted)
    }
}

/// A stored binding.
pub fn decode_acl(value: &[u8]) -> Result<AclBinding, String> {
    serde_json::from_slice(value).map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::embedded::EmbeddedStore;

    pub(crate) fn binding(name: &str, pattern: PatternType, op: Operation) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: "User:alice".into(),
            host: WILDCARD.into(),
            operation: op,
            permission: Permission::Allow,
        }
    }

    #[test]
    fn patterns_cover_their_names() {
        let literal = binding("orders", PatternType::Literal, Operation::Read);
        assert!(literal.covers(ResourceType::Topic, "orders"));
        assert!(!literal.covers(ResourceType::Topic, "orders2"));
        assert!(!literal.covers(ResourceType::Group, "orders"));
        let prefixed = binding("team-a.", PatternType::Prefixed, Operation::Read);
        assert!(prefixed.covers(ResourceType::Topic, "team-a.orders"));
        assert!(!prefixed.covers(ResourceType::Topic, "team-b.orders"));
        assert!(!prefixed.covers(ResourceType::Topic, "team-a"));
        let any = binding("*", PatternType::Literal, Operation::Read);
        assert!(any.covers(ResourceType::Topic, "whatever"));
        assert_eq!(
            Operation::parse("describe-configs"),
            Some(Operation::DescribeConfigs)
        );
        assert_eq!(Operation::from_code(12), Some(Operation::IdempotentWrite));
        assert_eq!(ResourceType::Cluster.code(), 4);
    }

    #[tokio::test]
    async fn bindings_are_stored_once_and_deleted_by_filter() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "c");
        let read = binding("orders", PatternType::Literal, Operation::Read);
        let write = binding("team/a.", PatternType::Prefixed, Operation::Write);
        catalog.create_acl(&read).await.unwrap();
        catalog.create_acl(&read).await.unwrap();
        catalog.create_acl(&write).await.unwrap();
        assert_eq!(catalog.acls().await.unwrap().len(), 2);
        let bad = AclBinding {
            principal: "alice".into(),
            ..read.clone()
        };
        assert!(catalog.create_acl(&bad).await.is_err());
        // MATCH: what applies to team/a.orders
        let matching = AclFilter {
            resource_type: Some(ResourceType::Topic),
            resource_name: Some("team/a.orders".into()),
            matching: true,
            ..AclFilter::default()
        };
        assert!(matching.matches(&write) && !matching.matches(&read));
        let deleted = catalog
            .delete_acls(&AclFilter {
                operation: Some(Operation::Read),
                ..AclFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(deleted, vec![read]);
        assert_eq!(catalog.acls().await.unwrap(), vec![write]);
    }
}
