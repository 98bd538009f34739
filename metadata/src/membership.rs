//! Cluster membership: every node registers `nodes/<id>` on a lease that it
//! keeps alive; the key vanishes when the node stops or dies, so the live
//! set is simply the keys under `nodes/`. The same lease holds the other
//! keys that must die with the node (group coordinatorships).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::model::Catalog;
use crate::store::{KeyValue, LeaseId, MetaError, MetaResult};

/// What a node runs (`--roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves producers (Kafka and HTTP): a broker in Metadata.
    Ingest,
    /// Serves consumers (Kafka and HTTP): a broker in Metadata.
    Fetch,
    /// Runs compaction jobs.
    Compactor,
}

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 3] = [Role::Ingest, Role::Fetch, Role::Compactor];

    /// The role's name (`ingest`, `fetch`, `compactor`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Fetch => "fetch",
            Role::Compactor => "compactor",
        }
    }

    /// Whether the role serves Kafka and HTTP clients. A Kafka client
    /// produces to and fetches from a partition's leader, so a node with
    /// either client role serves both; `ingest` and `fetch` differ only in
    /// name today.
    pub fn serves_clients(self) -> bool {
        matches!(self, Role::Ingest | Role::Fetch)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.name() == text)
            .ok_or_else(|| format!("unknown role {text:?} (ingest, fetch, compactor)"))
    }
}

/// How a node is reached and what it does, as stored under `nodes/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Kafka broker id.
    pub node_id: i32,
    /// Advertised Kafka host.
    pub kafka_host: String,
    /// Advertised Kafka port.
    pub kafka_port: i32,
    /// Base URL of the HTTP API.
    pub http_url: String,
    /// Roles this node runs.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Availability zone / rack, if known.
    #[serde(default)]
    pub zone: Option<String>,
    /// Advertised Kafka endpoint of each listener, by its name
    /// (`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`). Empty for a
    /// node of one PLAINTEXT listener at `kafka_host:kafka_port`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub listeners: BTreeMap<String, Endpoint>,
}

/// A `host:port` clients are told to connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Host.
    pub host: String,
    /// Port.
    pub port: i32,
}

impl NodeInfo {
    /// The endpoint of the listener named `listener`, if the node has one.
    pub fn endpoint(&self, listener: &str) -> Option<Endpoint> {
        if self.listeners.is_empty() {
            return (listener == "PLAINTEXT").then(|| Endpoint {
                host: self.kafka_host.clone(),
                port: self.kafka_port,
            });
        }
        self.listeners.get(listener).cloned()
    }

    /// Whether the node serves Kafka and HTTP clients (and is a broker in
    /// Metadata).
    pub fn serves_clients(&self) -> bool {
        self.roles.iter().any(|role| role.serves_clients())
    }
}

impl Catalog {
    /// Decode a `nodes/<id>` key-value.
    pub fn decode_node(&self, kv: &KeyValue) -> MetaResult<NodeInfo> {
        serde_json::from_slice(&kv.value).map_err(|e| MetaError::Corrupt {
            key: kv.key.clone(),
            reason: e.to_string(),
        })
    }

    /// Every live node, by id.
    pub async fn live_nodes(&self) -> MetaResult<Vec<NodeInfo>> {
        let range = self.store().range(&self.keys().nodes()).await?;
        range.kvs.iter().map(|kv| self.decode_node(kv)).collect()
    }
}

/// Settings of a registration.
#[derive(Debug, Clone, Copy)]
pub struct MembershipOptions {
    /// Lease time to live: how long a dead node stays listed.
    pub ttl_secs: i64,
    /// How often the lease is refreshed (well below the TTL).
    pub refresh: Duration,
}

impl Default for MembershipOptions {
    fn default() -> Self {
        Self {
            ttl_secs: 10,
            refresh: Duration::from_secs(2),
        }
    }
}

/// A live registration; keeps its lease alive until [`Membership::leave`].
#[derive(Debug)]
pub struct Membership {
    catalog: Catalog,
    lease: watch::Receiver<LeaseId>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Membership {
    /// Register `info` on a fresh lease and start keeping it alive. When the
    /// lease is lost (the store was unreachable for longer than the TTL) a
    /// new lease is granted and the key written again; [`Membership::lease`]
    /// then reports the new lease.
    pub async fn join(
        catalog: Catalog,
        info: NodeInfo,
        options: MembershipOptions,
    ) -> MetaResult<Self> {
        let lease = register(&catalog, &info, options.ttl_secs).await?;
        info!(node_id = info.node_id, lease, "registered node");
        let (lease_tx, lease_rx) = watch::channel(lease);
        let (stop, mut stopped) = watch::channel(false);
        let task_catalog = catalog.clone();
        let task = tokio::spawn(async move {
            let catalog = task_catalog;
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    () = tokio::time::sleep(options.refresh) => {}
                }
                let lease = *lease_tx.borrow();
                match catalog.store().lease_keep_alive(lease).await {
                    Ok(_) => {}
                    Err(MetaError::LeaseNotFound(_)) => {
                        warn!(
                            node_id = info.node_id,
                            lease, "node lease lost; registering again"
                        );
                        match register(&catalog, &info, options.ttl_secs).await {
                            Ok(lease) => {
                                lease_tx.send_replace(lease);
                            }
                            Err(error) => warn!(%error, "node registration failed"),
                        }
                    }
                    Err(error) => warn!(%error, "node lease refresh failed"),
                }
            }
        });
        Ok(Self {
            catalog,
            lease: lease_rx,
            stop,
            task,
        })
    }

    /// A receiver that sees every new lease (after a lost one was replaced).
    pub fn lease_receiver(&self) -> watch::Receiver<LeaseId> {
        self.lease.clone()
    }

    /// The lease currently holding the registration.
    pub fn lease(&self) -> LeaseId {
        *self.lease.borrow()
    }

    /// Stop refreshing and revoke the lease: the node and every key on its
    /// lease disappear at once.
    pub async fn leave(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let lease = *self.lease.borrow();
        if let Err(error) = self.catalog.store().lease_revoke(lease).await {
            warn!(%error, "revoking the node lease failed; it will expire");
        }
    }
}

async fn register(catalog: &Catalog, info: &NodeInfo, ttl_secs: i64) -> MetaResult<LeaseId> {
    let lease = catalog.store().lease_grant(ttl_secs).await?;
    let value = Bytes::from(serde_json::to_vec(info).unwrap_or_default());
    catalog
        .store()
        .put(&catalog.keys().node(info.node_id), value, Some(lease))
        .await?;
    Ok(lease)
}

/// The live node that leads `(topic, partition)`: rendezvous hashing over
/// the live node ids, so each partition has one leader and a node joining or
/// leaving moves only its share of partitions.
pub fn partition_leader(live_node_ids: &[i32], topic: &str, partition: i32) -> Option<i32> {
    rendezvous_owner(live_node_ids, &[topic.as_bytes(), &partition.to_be_bytes()])
}

/// Rendezvous (highest random weight) hashing: the node of `node_ids`
/// whose score for `key` is highest (ties to the higher id). Adding or
/// removing a node moves only the keys it wins or held.
pub fn rendezvous_owner(node_ids: &[i32], key: &[&[u8]]) -> Option<i32> {
    node_ids
        .iter()
        .copied()
        .max_by_key(|node| (rendezvous_score(*node, key), *node))
}

/// FNV-1a over the node id and the key's parts, then a 64-bit finalizer.
fn rendezvous_score(node: i32, key: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(&node.to_be_bytes());
    for part in key {
        feed(part);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::embedded::EmbeddedStore;

    fn info(id: i32) -> NodeInfo {
        NodeInfo {
            node_id: id,
            kafka_host: "127.0.0.1".into(),
            kafka_port: 9092 + id,
            http_url: format!("http://127.0.0.1:{}", 8080 + id),
            roles: vec![Role::Ingest],
            zone: None,
            listeners: Default::default(),
        }
    }

    #[tokio::test]
    async fn nodes_are_listed_while_registered_and_gone_after_leaving() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "m");
        let a = Membership::join(catalog.clone(), info(1), MembershipOptions::default())
            .await
            .unwrap();
        let b = Membership::join(catalog.clone(), info(2), MembershipOptions::default())
            .await
            .unwrap();
        let ids: Vec<i32> = catalog
            .live_nodes()
            .await
            .unwrap()
            .iter()
            .map(|n| n.node_id)
            .collect();
        assert_eq!(ids, vec![1, 2]);
        a.leave().await;
        let ids: Vec<i32> = catalog
            .live_nodes()
            .await
            .unwrap()
            .iter()
            .map(|n| n.node_id)
            .collect();
        assert_eq!(ids, vec![2]);
        b.leave().await;
        assert!(catalog.live_nodes().await.unwrap().is_empty());
    }

    #[test]
    fn leaders_spread_and_move_only_with_their_node() {
        let nodes = [1, 2, 3];
        let mut counts = [0usize; 3];
        let mut leaders = Vec::new();
        for p in 0..300 {
            let leader = partition_leader(&nodes, "orders", p).unwrap();
            counts[(leader - 1) as usize] += 1;
            leaders.push(leader);
        }
        assert!(counts.iter().all(|&c| c > 60), "unbalanced: {counts:?}");
        // node 3 leaves: only its partitions move
        for (p, before) in leaders.iter().enumerate() {
            let after = partition_leader(&[1, 2], "orders", p as i32).unwrap();
            if *before != 3 {
                assert_eq!(after, *before);
            }
        }
        assert_eq!(partition_leader(&[], "t", 0), None);
    }
}
