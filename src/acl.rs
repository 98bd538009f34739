//! `sluice acl`, `sluice token` and `sluice quota`: ACLs, HTTP bearer
//! tokens and client quotas in the metadata store, written directly (named by the flags of `serve`, as for
//! `sluice user`). Kafka's admin clients manage the same ACLs and quotas
//! through CreateAcls, DescribeAcls, DeleteAcls and
//! Describe/AlterClientQuotas.

use anyhow::{bail, Context};
use clap::Subcommand;
use sluice_auth::{token, Principal};
use sluice_metadata::acls::{
    AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType, CLUSTER_RESOURCE,
};
use sluice_metadata::quotas::{EntityName, QuotaEntity, QUOTA_KEYS};
use sluice_metadata::users::TokenRecord;

use crate::user::MetadataTarget;

fn operation(text: &str) -> Result<Operation, String> {
    Operation::parse(text).ok_or_else(|| {
        let names: Vec<&str> = Operation::ALL.iter().map(|o| o.name()).collect();
        format!("{text:?} is not one of {}", names.join(", "))
    })
}

fn principal(text: &str) -> Result<String, String> {
    Principal::parse(text)
        .map(|p| p.to_string())
        .ok_or_else(|| format!("{text:?} is not Type:name (e.g. User:alice, User:*)"))
}

/// One binding, as flags.
#[derive(Debug, clap::Args)]
pub struct BindingArgs {
    /// Who: `User:alice`, or `User:*` for everyone.
    #[arg(long, value_parser = principal)]
    principal: String,
    /// What: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS,
    /// ALTER_CONFIGS, IDEMPOTENT_WRITE, CLUSTER_ACTION or ALL.
    #[arg(long, value_parser = operation)]
    operation: Operation,
    /// On this topic (`*` for every topic).
    #[arg(long, conflicts_with_all = ["group", "on_cluster"])]
    topic: Option<String>,
    /// On this consumer group (`*` for every group).
    #[arg(long, conflicts_with = "on_cluster")]
    group: Option<String>,
    /// On the cluster (`--cluster` names the metadata namespace).
    #[arg(long)]
    on_cluster: bool,
    /// The topic or group name is a prefix.
    #[arg(long)]
    prefixed: bool,
    /// Deny instead of allow (a deny wins over any allow).
    #[arg(long)]
    deny: bool,
    /// Client host (IP address) the binding is limited to.
    #[arg(long, default_value = "*")]
    host: String,
}

impl BindingArgs {
    fn binding(&self) -> anyhow::Result<AclBinding> {
        let (resource_type, resource_name) = match (&self.topic, &self.group, self.on_cluster) {
            (Some(topic), None, false) => (ResourceType::Topic, topic.clone()),
            (None, Some(group), false) => (ResourceType::Group, group.clone()),
            (None, None, true) => (ResourceType::Cluster, CLUSTER_RESOURCE.to_string()),
            _ => bail!("name one resource: --topic NAME, --group NAME or --on-cluster"),
        };
        let binding = AclBinding {
            resource_type,
            resource_name,
            pattern_type: if self.prefixed {
                PatternType::Prefixed
            } else {
                PatternType::Literal
            },
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: self.operation,
            permission: if self.deny {
                Permission::Deny
            } else {
                Permission::Allow
            },
        };
        binding.validate().map_err(anyhow::Error::msg)?;
        Ok(binding)
    }
}

/// `sluice acl …`
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Add a binding (allow, or deny with --deny).
    Add {
        #[command(flatten)]
        binding: BindingArgs,
        #[command(flatten)]
        target: MetadataTarget,
    },
    /// List bindings, one per line.
    List {
        /// Only this principal's.
        #[arg(long, value_parser = principal)]
        principal: Option<String>,
        #[command(flatten)]
        target: MetadataTarget,
    },
    /// Remove exactly this binding.
    Remove {
        #[command(flatten)]
        binding: BindingArgs,
        #[command(flatten)]
        target: MetadataTarget,
    },
}

fn line(binding: &AclBinding) -> String {
    format!(
        "{} {} {} {}:{}:{} host={}",
        binding.principal,
        binding.permission,
        binding.operation,
        binding.resource_type,
        binding.pattern_type,
        binding.resource_name,
        binding.host
    )
}

/// Run a `sluice acl` command.
pub async fn run(command: AclCommand) -> anyhow::Result<()> {
    match command {
        AclCommand::Add { binding, target } => {
            let binding = binding.binding()?;
            target.catalog().await?.create_acl(&binding).await?;
            println!("{}", line(&binding));
        }
        AclCommand::List { principal, target } => {
            let mut bindings = target.catalog().await?.acls().await?;
            bindings.sort();
            for binding in bindings
                .iter()
                .filter(|b| principal.as_ref().is_none_or(|p| *p == b.principal))
            {
                println!("{}", line(binding));
            }
        }
        AclCommand::Remove { binding, target } => {
            let binding = binding.binding()?;
            let exactly = AclFilter {
                resource_type: Some(binding.resource_type),
                resource_name: Some(binding.resource_name.clone()),
                pattern_type: Some(binding.pattern_type),
                matching: false,
                principal: Some(binding.principal.clone()),
                host: Some(binding.host.clone()),
                operation: Some(binding.operation),
                permission: Some(binding.permission),
            };
            let deleted = target.catalog().await?.delete_acls(&exactly).await?;
            if deleted.is_empty() {
                bail!("no such binding: {}", line(&binding));
            }
            println!("removed {}", line(&binding));
        }
    }
    Ok(())
}

/// `sluice token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a bearer token for the HTTP API; it is printed once, and only
    /// its digest is stored.
    Create {
        /// The principal it acts as (`User:alice`).
        #[arg(long, value_parser = principal)]
        principal: String,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        target: MetadataTarget,
    },
    /// List tokens: digest prefix, principal, description.
    List {
        #[command(flatten)]
        target: MetadataTarget,
    },
    /// Revoke the token whose digest starts with DIGEST (8+ hex digits).
    Revoke {
        /// The start of its digest, as `list` shows it.
        digest: String,
        #[command(flatten)]
        target: MetadataTarget,
    },
}

/// Run a `sluice token` command.
pub async fn run_token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            principal,
            description,
            target,
        } => {
            let secret = token::generate();
            let created_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("the clock is before 1970")?
                .as_millis() as i64;
            let record = TokenRecord {
                principal,
                created_ms,
                description,
            };
            target
                .catalog()
                .await?
                .put_token(&token::digest(&secret), &record)
                .await?;
            println!("{secret}");
        }
        TokenCommand::List { target } => {
            for (digest, record) in target.catalog().await?.tokens().await? {
                println!(
                    "{} {} {}",
                    &digest[..12.min(digest.len())],
                    record.principal,
                    record.description
                );
            }
        }
        TokenCommand::Revoke { digest, target } => {
            let revoked = target.catalog().await?.revoke_tokens(&digest).await?;
            if revoked == 0 {
                bail!("no token's digest starts with {digest}");
            }
            println!("revoked {revoked} token(s)");
        }
    }
    Ok(())
}

/// Whose quota: a user and/or a client id, each named or the default.
#[derive(Debug, clap::Args)]
pub struct QuotaEntityArgs {
    /// This user.
    #[arg(long, conflicts_with = "user_default")]
    user: Option<String>,
    /// Every user without a quota of its own.
    #[arg(long)]
    user_default: bool,
    /// This client id.
    #[arg(long, conflicts_with = "client_id_default")]
    client_id: Option<String>,
    /// Every client id without a quota of its own.
    #[arg(long)]
    client_id_default: bool,
}

impl QuotaEntityArgs {
    fn entity(&self) -> anyhow::Result<QuotaEntity> {
        let part = |name: &Option<String>, default: bool| match (name, default) {
            (Some(name), _) => Some(EntityName::Named(name.clone())),
            (None, true) => Some(EntityName::Default),
            (None, false) => None,
        };
        let entity = QuotaEntity {
            user: part(&self.user, self.user_default),
            client_id: part(&self.client_id, self.client_id_default),
        };
        if entity.is_empty() {
            bail!("name a user (--user, --user-default) and/or a client id (--client-id, --client-id-default)");
        }
        Ok(entity)
    }
}

/// `sluice quota …`
#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set quotas of a user, client id, or both (cluster-wide; each node
    /// enforces its share).
    Set {
        #[command(flatten)]
        entity: QuotaEntityArgs,
        /// Bytes per second produced.
        #[arg(long)]
        producer_byte_rate: Option<f64>,
        /// Bytes per second fetched.
        #[arg(long)]
        consumer_byte_rate: Option<f64>,
        /// Percent of one thread its requests may keep busy (200 = two
        /// threads).
        #[arg(long)]
        request_percentage: Option<f64>,
        #[command(flatten)]
        target: MetadataTarget,
    },
    /// List every quota.
    List {
        #[command(flatten)]
        target: MetadataTarget,
    },
    /// Remove quotas of an entity (every key, or the ones named).
    Remove {
        #[command(flatten)]
        entity: QuotaEntityArgs,
        /// Only this key (producer_byte_rate, consumer_byte_rate,
        /// request_percentage); repeatable.
        #[arg(long = "key")]
        keys: Vec<String>,
        #[command(flatten)]
        target: MetadataTarget,
    },
}

/// Run a `sluice quota` command.
pub async fn run_quota(command: QuotaCommand) -> anyhow::Result<()> {
    match command {
        QuotaCommand::Set {
            entity,
            producer_byte_rate,
            consumer_byte_rate,
            request_percentage,
            target,
        } => {
            let entity = entity.entity()?;
            let values = [
                ("producer_byte_rate", producer_byte_rate),
                ("consumer_byte_rate", consumer_byte_rate),
                ("request_percentage", request_percentage),
            ];
            if values.iter().all(|(_, v)| v.is_none()) {
                bail!("set --producer-byte-rate, --consumer-byte-rate or --request-percentage");
            }
            let catalog = target.catalog().await?;
            for (key, value) in values {
                if let Some(value) = value {
                    catalog.alter_quota(&entity, key, Some(value)).await?;
                    println!("{entity} {key}={value}");
                }
            }
        }
        QuotaCommand::List { target } => {
            for record in target.catalog().await?.quotas().await? {
                let values: Vec<String> = record
                    .values
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect();
                println!("{} {}", record.entity, values.join(" "));
            }
        }
        QuotaCommand::Remove {
            entity,
            keys,
            target,
        } => {
            let entity = entity.entity()?;
            let keys: Vec<String> = if keys.is_empty() {
                QUOTA_KEYS.iter().map(|k| k.to_string()).collect()
            } else {
                keys
            };
            let catalog = target.catalog().await?;
            for key in &keys {
                catalog.alter_quota(&entity, key, None).await?;
            }
            println!("removed {entity} {}", keys.join(","));
        }
    }
    Ok(())
}
