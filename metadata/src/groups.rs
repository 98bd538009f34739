//! Consumer group state in the metadata store:
//!
//! ```text
//! groups/<group>/coordinator       node id of the coordinator (on its node lease)
//! groups/<group>/state             GroupRecord (JSON): generation, members, assignment
//! offsets/<group>/<topic>/<p>      OffsetRecord (JSON): committed offset + metadata
//! ```
//!
//! The coordinator key lives on the coordinating node's lease, so when that
//! node dies the key vanishes and the next FindCoordinator claims the group
//! for another node, which loads `state` and carries on.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::keys::GroupLeaf;
use crate::model::{Catalog, ModelError, ModelResult};
use crate::store::{CmpOp, Compare, KeyValue, LeaseId, MetaError, Txn, TxnOp, TxnOpResponse};

/// Longest group id accepted.
pub const GROUP_ID_MAX_LEN: usize = 255;

/// One member as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Member id.
    pub member_id: String,
    /// Static membership id (`group.instance.id`).
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Protocol metadata of the chosen protocol (the subscription).
    #[serde(with = "base64_bytes")]
    pub metadata: Vec<u8>,
    /// Assignment given by the leader.
    #[serde(with = "base64_bytes")]
    pub assignment: Vec<u8>,
}

/// A group as persisted after each completed rebalance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GroupRecord {
    /// Generation.
    pub generation: i32,
    /// Protocol type (`consumer`).
    #[serde(default)]
    pub protocol_type: Option<String>,
    /// Chosen protocol (assignor) name.
    #[serde(default)]
    pub protocol_name: Option<String>,
    /// Leader member id.
    #[serde(default)]
    pub leader: Option<String>,
    /// Members with their assignments.
    #[serde(default)]
    pub members: Vec<MemberRecord>,
}

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRecord {
    /// Next offset to consume.
    pub offset: i64,
    /// Leader epoch given by the client (-1 if none).
    #[serde(default = "minus_one")]
    pub leader_epoch: i32,
    /// Client metadata.
    #[serde(default)]
    pub metadata: Option<String>,
    /// Commit time, ms since the epoch.
    #[serde(default)]
    pub commit_timestamp_ms: i64,
}

fn minus_one() -> i32 {
    -1
}

mod base64_bytes {
    //! Serde of byte vectors as base64 text.
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

fn corrupt(kv: &KeyValue, error: impl ToString) -> ModelError {
    ModelError::Meta(MetaError::Corrupt {
        key: kv.key.clone(),
        reason: error.to_string(),
    })
}

/// Check a group id: non-empty, bounded, no `/` (it is a key segment).
pub fn validate_group_id(group: &str) -> ModelResult<()> {
    if group.is_empty() || group.len() > GROUP_ID_MAX_LEN || group.contains('/') {
        return Err(ModelError::Invalid(format!("invalid group id {group:?}")));
    }
    Ok(())
}

impl Catalog {
    /// The coordinator of `group`, claiming it for `node_id` (on `lease`)
    /// when no live node holds it.
    pub async fn claim_coordinator(
        &self,
        group: &str,
        node_id: i32,
        lease: LeaseId,
    ) -> ModelResult<i32> {
        let key = self.keys().group(group, GroupLeaf::Coordinator);
        let response = self
            .store()
            .txn(
                Txn::new()
                    .when([Compare::absent(key.clone())])
                    .and_then([TxnOp::put_with_lease(
                        key.clone(),
                        node_id.to_string(),
                        lease,
                    )])
                    .or_else([TxnOp::get(key.clone())]),
            )
            .await?;
        if response.succeeded {
            return Ok(node_id);
        }
        match response.responses.first() {
            Some(TxnOpResponse::Get(kvs)) if !kvs.is_empty() => {
                String::from_utf8_lossy(&kvs[0].value)
                    .parse()
                    .map_err(|e| corrupt(&kvs[0], e))
            }
            _ => Err(ModelError::Concurrent(group.to_string())),
        }
    }

    /// The node currently coordinating `group`, if any.
    pub async fn coordinator(&self, group: &str) -> ModelResult<Option<i32>> {
        match self
            .store()
            .get(&self.keys().group(group, GroupLeaf::Coordinator))
            .await?
        {
            Some(kv) => Ok(Some(
                String::from_utf8_lossy(&kv.value)
                    .parse()
                    .map_err(|e| corrupt(&kv, e))?,
            )),
            None => Ok(None),
        }
    }

    /// The persisted state of `group`.
    pub async fn load_group(&self, group: &str) -> ModelResult<Option<GroupRecord>> {
        match self
            .store()
            .get(&self.keys().group(group, GroupLeaf::State))
            .await?
        {
            Some(kv) => Ok(Some(
                serde_json::from_slice(&kv.value).map_err(|e| corrupt(&kv, e))?,
            )),
            None => Ok(None),
        }
    }

    /// Persist `group`'s state, only while `node_id` still coordinates it
    /// (a deposed coordinator must not overwrite its successor). Returns
    /// false when the coordinatorship was lost.
    pub async fn save_group(
        &self,
        group: &str,
        node_id: i32,
        record: &GroupRecord,
    ) -> ModelResult<bool> {
        let value = Bytes::from(serde_json::to_vec(record).unwrap_or_default());
        let response = self
            .store()
            .txn(
                Txn::new()
                    .when([Compare::value(
                        self.keys().group(group, GroupLeaf::Coordinator),
                        CmpOp::Equal,
                        node_id.to_string(),
                    )])
                    .and_then([TxnOp::put(
                        self.keys().group(group, GroupLeaf::State),
                        value,
                    )]),
            )
            .await?;
        Ok(response.succeeded)
    }

    /// Every group id with persisted state or committed offsets.
    pub async fn list_groups(&self) -> ModelResult<Vec<String>> {
        let mut groups = std::collections::BTreeSet::new();
        // a coordinator key alone (a group only looked up) is not a group
        for (prefix, state_only) in [(self.keys().groups(), true), (self.keys().offsets(), false)] {
            for kv in self.store().range(&prefix).await?.kvs {
                let Some(rest) = kv.key.strip_prefix(&prefix) else {
                    continue;
                };
                if state_only && !rest.ends_with("/state") {
                    continue;
                }
                if let Some(group) = rest.split('/').next() {
                    groups.insert(group.to_string());
                }
            }
        }
        Ok(groups.into_iter().collect())
    }

    /// Delete a group's state and offsets (its coordinator key stays with its lease).
    pub async fn delete_group(&self, group: &str) -> ModelResult<()> {
        self.store()
            .txn(Txn::new().and_then([
                TxnOp::delete(self.keys().group(group, GroupLeaf::State)),
                TxnOp::delete_prefix(self.keys().group_offsets(group)),
            ]))
            .await?;
        Ok(())
    }

    /// Write committed offsets, `ops_max` keys per transaction.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(String, i32, OffsetRecord)],
        ops_max: usize,
    ) -> ModelResult<()> {
        for chunk in offsets.chunks(ops_max.max(1)) {
            let ops = chunk.iter().map(|(topic, partition, record)| {
                TxnOp::put(
                    self.keys().offset(group, topic, *partition),
                    Bytes::from(serde_json::to_vec(record).unwrap_or_default()),
                )
            });
            self.store().txn(Txn::new().and_then(ops)).await?;
        }
        Ok(())
    }

    /// Delete committed offsets.
    pub async fn delete_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
        ops_max: usize,
    ) -> ModelResult<()> {
        for chunk in partitions.chunks(ops_max.max(1)) {
            let ops = chunk.iter().map(|(topic, partition)| {
                TxnOp::delete(self.keys().offset(group, topic, *partition))
            });
            self.store().txn(Txn::new().and_then(ops)).await?;
        }
        Ok(())
    }

    /// Every committed offset of `group`: topic -> partition -> record.
    pub async fn fetch_offsets(
        &self,
        group: &str,
    ) -> ModelResult<BTreeMap<String, BTreeMap<i32, OffsetRecord>>> {
        let prefix = self.keys().group_offsets(group);
        let mut out: BTreeMap<String, BTreeMap<i32, OffsetRecord>> = BTreeMap::new();
        for kv in self.store().range(&prefix).await?.kvs {
            let Some((topic, partition)) = kv
                .key
                .strip_prefix(&prefix)
                .and_then(|rest| rest.rsplit_once('/'))
            else {
                continue;
            };
            let Ok(partition) = partition.parse() else {
                continue;
            };
            let record: OffsetRecord =
                serde_json::from_slice(&kv.value).map_err(|e| corrupt(&kv, e))?;
            out.entry(topic.to_string())
                .or_default()
                .insert(partition, record);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::embedded::EmbeddedStore;

    #[tokio::test]
    async fn coordinator_is_claimed_once_and_released_with_its_lease() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "g");
        let lease_a = catalog.store().lease_grant(30).await.unwrap();
        let lease_b = catalog.store().lease_grant(30).await.unwrap();
        assert_eq!(
            catalog.claim_coordinator("g1", 1, lease_a).await.unwrap(),
            1
        );
        assert_eq!(
            catalog.claim_coordinator("g1", 2, lease_b).await.unwrap(),
            1
        );
        let record = GroupRecord {
            generation: 3,
            ..GroupRecord::default()
        };
        assert!(catalog.save_group("g1", 1, &record).await.unwrap());
        assert!(!catalog.save_group("g1", 2, &record).await.unwrap());
        catalog.store().lease_revoke(lease_a).await.unwrap();
        assert_eq!(catalog.coordinator("g1").await.unwrap(), None);
        assert_eq!(
            catalog.claim_coordinator("g1", 2, lease_b).await.unwrap(),
            2
        );
        assert_eq!(
            catalog.load_group("g1").await.unwrap().unwrap().generation,
            3
        );
    }

    #[tokio::test]
    async fn offsets_round_trip_and_groups_are_listed_and_deleted() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "g");
        let record = |offset| OffsetRecord {
            offset,
            leader_epoch: -1,
            metadata: Some("m".into()),
            commit_timestamp_ms: 1,
        };
        let offsets = vec![
            ("t.a".to_string(), 0, record(5)),
            ("t.a".to_string(), 11, record(7)),
            ("u".to_string(), 2, record(9)),
        ];
        catalog.commit_offsets("grp", &offsets, 2).await.unwrap();
        let fetched = catalog.fetch_offsets("grp").await.unwrap();
        assert_eq!(fetched["t.a"][&11].offset, 7);
        assert_eq!(fetched["u"][&2].metadata.as_deref(), Some("m"));
        assert_eq!(
            catalog.list_groups().await.unwrap(),
            vec!["grp".to_string()]
        );
        catalog
            .delete_offsets("grp", &[("u".to_string(), 2)], 10)
            .await
            .unwrap();
        assert!(!catalog
            .fetch_offsets("grp")
            .await
            .unwrap()
            .contains_key("u"));
        catalog.delete_group("grp").await.unwrap();
        assert!(catalog.list_groups().await.unwrap().is_empty());
        assert!(validate_group_id("a/b").is_err());
    }
}
