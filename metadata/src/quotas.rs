//! Client quotas, Kafka's entity model: a quota is set for a user, a
//! client id, or a user and client id, each named or the default
//! (`<default>`), and holds any of `producer_byte_rate`,
//! `consumer_byte_rate` (bytes per second) and `request_percentage`. One
//! key per entity under `quotas/`; every node caches them through the
//! cluster view's watch ([`crate::view::ClusterView::quotas`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::keys::Key;
use crate::model::{Catalog, ModelError, ModelResult};

/// The quota keys sluice enforces.
pub const QUOTA_KEYS: [&str; 3] = [
    "producer_byte_rate",
    "consumer_byte_rate",
    "request_percentage",
];

/// One part of an entity: a name, or the default of its type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityName {
    /// Every user (or client id) without a quota of its own.
    Default,
    /// This one.
    Named(String),
}

/// Who a quota is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QuotaEntity {
    /// The user part, if any.
    pub user: Option<EntityName>,
    /// The client id part, if any.
    pub client_id: Option<EntityName>,
}

impl QuotaEntity {
    fn key_name(&self) -> String {
        let part = |p: &Option<EntityName>| match p {
            None => "-".to_string(),
            Some(EntityName::Default) => "*".to_string(),
            Some(EntityName::Named(name)) => format!("={name}"),
        };
        let text = format!("{}\u{0}{}", part(&self.user), part(&self.client_id));
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether the entity names anything.
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.client_id.is_none()
    }
}

impl std::fmt::Display for QuotaEntity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |p: &EntityName| match p {
            EntityName::Default => "<default>".to_string(),
            EntityName::Named(name) => name.clone(),
        };
        let mut parts = Vec::new();
        if let Some(user) = &self.user {
            parts.push(format!("user={}", show(user)));
        }
        if let Some(client) = &self.client_id {
            parts.push(format!("client-id={}", show(client)));
        }
        f.write_str(&parts.join(","))
    }
}

/// An entity's quotas as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaRecord {
    /// Who.
    pub entity: QuotaEntity,
    /// Quota key → value.
    pub values: BTreeMap<String, f64>,
}

/// Refuse a quota key sluice does not know or a value it cannot enforce.
pub fn validate_quota(key: &str, value: f64) -> Result<(), String> {
    if !QUOTA_KEYS.contains(&key) {
        return Err(format!(
            "quota {key:?} is not one of {}",
            QUOTA_KEYS.join(", ")
        ));
    }
    if !value.is_finite() || value <= 0.0 {
        return Err(format!(
            "quota {key} must be a positive number, not {value}"
        ));
    }
    Ok(())
}

impl Catalog {
    /// Set (`Some`) or remove (`None`) quota `key` of `entity`.
    pub async fn alter_quota(
        &self,
        entity: &QuotaEntity,
        key: &str,
        value: Option<f64>,
    ) -> ModelResult<()> {
        if entity.is_empty() {
            return Err(ModelError::Invalid(
                "a quota names a user or a client id".into(),
            ));
        }
        if let Some(value) = value {
            validate_quota(key, value).map_err(ModelError::Invalid)?;
        }
        let store_key = self.keys().quota(&entity.key_name());
        let mut record = match self.store().get(&store_key).await? {
            Some(kv) => decode_quota(&kv.value).map_err(ModelError::Invalid)?,
            None => QuotaRecord {
                entity: entity.clone(),
                values: BTreeMap::new(),
            },
        };
        match value {
            Some(value) => record.values.insert(key.to_string(), value),
            None => record.values.remove(key),
        };
        if record.values.is_empty() {
            self.store().delete(&store_key).await?;
            return Ok(());
        }
        let bytes = serde_json::to_vec(&record)
            .map_err(|e| ModelError::Invalid(format!("encoding a quota: {e}")))?;
        self.store().put(&store_key, bytes.into(), None).await?;
        Ok(())
    }

    /// Every stored quota (read from the store, not the view).
    pub async fn quotas(&self) -> ModelResult<Vec<QuotaRecord>> {
        let keys = self.keys();
        let mut out = Vec::new();
        for kv in self.store().range(&keys.quotas()).await?.kvs {
            if let Some(Key::Quota { .. }) = keys.parse(&kv.key) {
                out.push(decode_quota(&kv.value).map_err(ModelError::Invalid)?);
            }
        }
        Ok(out)
    }
}

/// A stored quota record.
pub fn decode_quota(value: &[u8]) -> Result<QuotaRecord, String> {
    serde_json::from_slice(value).map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::embedded::EmbeddedStore;

    #[tokio::test]
    async fn quotas_are_set_per_entity_and_removed_by_key() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "c");
        let alice = QuotaEntity {
            user: Some(EntityName::Named("alice".into())),
            client_id: None,
        };
        let every_client = QuotaEntity {
            user: None,
            client_id: Some(EntityName::Default),
        };
        catalog
            .alter_quota(&alice, "producer_byte_rate", Some(1024.0))
            .await
            .unwrap();
        catalog
            .alter_quota(&alice, "consumer_byte_rate", Some(2048.0))
            .await
            .unwrap();
        catalog
            .alter_quota(&every_client, "producer_byte_rate", Some(10.0))
            .await
            .unwrap();
        let quotas = catalog.quotas().await.unwrap();
        assert_eq!(quotas.len(), 2);
        let mine = quotas.iter().find(|q| q.entity == alice).unwrap();
        assert_eq!(mine.values["consumer_byte_rate"], 2048.0);
        assert_eq!(alice.to_string(), "user=alice");
        assert_eq!(every_client.to_string(), "client-id=<default>");
        catalog
            .alter_quota(&alice, "producer_byte_rate", None)
            .await
            .unwrap();
        catalog
            .alter_quota(&alice, "consumer_byte_rate", None)
            .await
            .unwrap();
        assert_eq!(
            catalog.quotas().await.unwrap().len(),
            1,
            "an empty record is deleted"
        );
        assert!(catalog
            .alter_quota(&alice, "fetch_rate", Some(1.0))
            .await
            .is_err());
        assert!(catalog
            .alter_quota(&alice, "producer_byte_rate", Some(-1.0))
            .await
            .is_err());
        let nobody = QuotaEntity {
            user: None,
            client_id: None,
        };
        assert!(catalog
            .alter_quota(&nobody, "producer_byte_rate", Some(1.0))
            .await
            .is_err());
    }
}
