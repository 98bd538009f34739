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
//!
//! Every write a coordinator makes (group state, committed offsets, their
//! deletion) compares the coordinator key's create revision — its
//! [`CoordinatorClaim`] — inside the transaction that writes. A node paused
//! past its lease that wakes up still believing it coordinates the group
//! changes nothing, even if it has claimed the group again since.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::keys::GroupLeaf;
use crate::model::{Catalog, ModelError, ModelResult};
use crate::store::{
    CmpOp, Compare, KeyValue, LeaseId, MetaError, Revision, Txn, TxnOp, TxnOpResponse,
};

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

/// Which node coordinates a group, and the create revision of the
/// coordinator key it holds: the fence its writes compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorClaim {
    /// The coordinating node.
    pub node_id: i32,
    /// Create revision of the coordinator key.
    pub revision: Revision,
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
    ) -> ModelResult<CoordinatorClaim> {
        let key = self.keys().group(group, GroupLeaf::Coordinator);
        let response = self
            .store()
            .txn(
                Txn::new()
                    .when([Compare::absent(key.clone())])
                    .and_then([
                        TxnOp::put_with_lease(key.clone(), node_id.to_string(), lease),
                        TxnOp::get(key.clone()),
                    ])
                    .or_else([TxnOp::get(key.clone())]),
            )
            .await?;
        match response.responses.last() {
            Some(TxnOpResponse::Get(kvs)) if !kvs.is_empty() => Ok(CoordinatorClaim {
                node_id: String::from_utf8_lossy(&kvs[0].value)
                    .parse()
                    .map_err(|e| corrupt(&kvs[0], e))?,
                revision: kvs[0].create_revision,
            }),
            _ => Err(ModelError::Concurrent(group.to_string())),
        }
    }

    /// The compare that holds while `claim` is the group's coordinator key.
    fn still_coordinating(&self, group: &str, claim: Revision) -> Compare {
        Compare::create_revision(
            self.keys().group(group, GroupLeaf::Coordinator),
            CmpOp::Equal,
            claim,
        )
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

    /// Persist `group`'s state, only while `claim` is still its coordinator
    /// key (a deposed coordinator must not overwrite its successor).
    /// Returns false when the coordinatorship was lost.
    pub async fn save_group(
        &self,
        group: &str,
        claim: Revision,
        record: &GroupRecord,
    ) -> ModelResult<bool> {
        let value = Bytes::from(serde_json::to_vec(record).unwrap_or_default());
        let response = self
            .store()
            .txn(
                Txn::new()
                    .when([self.still_coordinating(group, claim)])
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

    /// Delete a group's state and offsets (its coordinator key stays with
    /// its lease), while `claim` holds (see [`Self::commit_offsets`]).
    /// Returns false when the coordinatorship was lost.
    pub async fn delete_group(&self, group: &str, claim: Option<Revision>) -> ModelResult<bool> {
        let response = self
            .store()
            .txn(
                Txn::new()
                    .when(claim.map(|claim| self.still_coordinating(group, claim)))
                    .and_then([
                        TxnOp::delete(self.keys().group(group, GroupLeaf::State)),
                        TxnOp::delete_prefix(self.keys().group_offsets(group)),
                    ]),
            )
            .await?;
        Ok(response.succeeded)
    }

    /// Write committed offsets, `ops_max` operations per transaction. With
    /// a coordinator `claim`, each transaction holds only while the claim
    /// does, and false is returned at the first one that did not (the
    /// transactions before it stay written: each is a whole commit of its
    /// partitions). Without one (tools and tests), the writes are not fenced.
    pub async fn commit_offsets(
        &self,
        group: &str,
        claim: Option<Revision>,
        offsets: &[(String, i32, OffsetRecord)],
        ops_max: usize,
    ) -> ModelResult<bool> {
        let ops = offsets.iter().map(|(topic, partition, record)| {
            TxnOp::put(
                self.keys().offset(group, topic, *partition),
                Bytes::from(serde_json::to_vec(record).unwrap_or_default()),
            )
        });
        self.fenced_writes(group, claim, ops, ops_max).await
    }

    /// `ops`, `ops_max` per transaction (one place is the fence's), each
    /// transaction only while `claim` holds; false at the first that did
    /// not.
    async fn fenced_writes(
        &self,
        group: &str,
        claim: Option<Revision>,
        ops: impl Iterator<Item = TxnOp>,
        ops_max: usize,
    ) -> ModelResult<bool> {
        let ops: Vec<TxnOp> = ops.collect();
        for chunk in ops.chunks(ops_max.saturating_sub(1).max(1)) {
            let txn = Txn::new()
                .when(claim.map(|claim| self.still_coordinating(group, claim)))
                .and_then(chunk.iter().cloned());
            if !self.store().txn(txn).await?.succeeded {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Delete committed offsets, fenced like [`Self::commit_offsets`].
    pub async fn delete_offsets(
        &self,
        group: &str,
        claim: Option<Revision>,
        partitions: &[(String, i32)],
        ops_max: usize,
    ) -> ModelResult<bool> {
        let ops = partitions
            .iter()
            .map(|(topic, partition)| TxnOp::delete(self.keys().offset(group, topic, *partition)));
        self.fenced_writes(group, claim, ops, ops_max).await
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
        let a = catalog.claim_coordinator("g1", 1, lease_a).await.unwrap();
        assert_eq!(a.node_id, 1);
        assert_eq!(
            catalog.claim_coordinator("g1", 2, lease_b).await.unwrap(),
            a
        );
        let record = GroupRecord {
            generation: 3,
            ..GroupRecord::default()
        };
        assert!(catalog.save_group("g1", a.revision, &record).await.unwrap());
        assert!(!catalog
            .save_group("g1", a.revision + 1, &record)
            .await
            .unwrap());
        catalog.store().lease_revoke(lease_a).await.unwrap();
        assert_eq!(catalog.coordinator("g1").await.unwrap(), None);
        let b = catalog.claim_coordinator("g1", 2, lease_b).await.unwrap();
        assert_eq!(b.node_id, 2);
        assert_eq!(
            catalog.load_group("g1").await.unwrap().unwrap().generation,
            3
        );
    }

    /// A coordinator paused past its lease wakes up and writes as it did
    /// before: its state, offsets and deletions must all be refused, even
    /// after it has claimed the group again (a new claim, a new fence).
    #[tokio::test]
    async fn a_deposed_coordinator_writes_nothing() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "g");
        let record = |offset| OffsetRecord {
            offset,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: 1,
        };
        let lease_a = catalog.store().lease_grant(30).await.unwrap();
        let zombie = catalog.claim_coordinator("g1", 1, lease_a).await.unwrap();
        let ten = vec![("t".to_string(), 0, record(10))];
        assert!(catalog
            .commit_offsets("g1", Some(zombie.revision), &ten, 16)
            .await
            .unwrap());
        catalog.store().lease_revoke(lease_a).await.unwrap();
        let lease_b = catalog.store().lease_grant(30).await.unwrap();
        let successor = catalog.claim_coordinator("g1", 2, lease_b).await.unwrap();
        let twenty = vec![("t".to_string(), 0, record(20))];
        assert!(catalog
            .commit_offsets("g1", Some(successor.revision), &twenty, 16)
            .await
            .unwrap());
        let five = vec![("t".to_string(), 0, record(5))];
        assert!(!catalog
            .commit_offsets("g1", Some(zombie.revision), &five, 16)
            .await
            .unwrap());
        let deleted = [("t".to_string(), 0)];
        assert!(!catalog
            .delete_offsets("g1", Some(zombie.revision), &deleted, 16)
            .await
            .unwrap());
        assert!(!catalog
            .save_group("g1", zombie.revision, &GroupRecord::default())
            .await
            .unwrap());
        assert!(!catalog
            .delete_group("g1", Some(zombie.revision))
            .await
            .unwrap());
        // the same node, coordinating again after its successor died
        catalog.store().lease_revoke(lease_b).await.unwrap();
        let lease_c = catalog.store().lease_grant(30).await.unwrap();
        let again = catalog.claim_coordinator("g1", 1, lease_c).await.unwrap();
        assert_eq!(again.node_id, 1);
        assert!(!catalog
            .commit_offsets("g1", Some(zombie.revision), &five, 16)
            .await
            .unwrap());
        assert_eq!(
            catalog.fetch_offsets("g1").await.unwrap()["t"][&0].offset,
            20
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
        assert!(catalog
            .commit_offsets("grp", None, &offsets, 2)
            .await
            .unwrap());
        let fetched = catalog.fetch_offsets("grp").await.unwrap();
        assert_eq!(fetched["t.a"][&11].offset, 7);
        assert_eq!(fetched["u"][&2].metadata.as_deref(), Some("m"));
        assert_eq!(
            catalog.list_groups().await.unwrap(),
            vec!["grp".to_string()]
        );
        assert!(catalog
            .delete_offsets("grp", None, &[("u".to_string(), 2)], 10)
            .await
            .unwrap());
        assert!(!catalog
            .fetch_offsets("grp")
            .await
            .unwrap()
            .contains_key("u"));
        assert!(catalog.delete_group("grp", None).await.unwrap());
        assert!(catalog.list_groups().await.unwrap().is_empty());
        assert!(validate_group_id("a/b").is_err());
    }
}
