//! A [`KafkaContext`] on in-memory backends for the handlers' unit tests:
//! the embedded metadata store in memory, an in-memory object store, a
//! writer that flushes every 5 ms, a group coordinator on a lease of its
//! own. Nothing listens on a socket.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use sluice_fetch::Reader;
use sluice_metadata::embedded::EmbeddedStore;
use sluice_metadata::groups::OffsetRecord;
use sluice_metadata::membership::{NodeInfo, Role};
use sluice_metadata::model::{Catalog, Topic};
use sluice_metadata::view::ClusterView;
use sluice_metadata::LeaseId;
use tokio::sync::watch;

use super::{heartbeat, join_group, sync_group, KafkaConfig, KafkaContext};
use crate::group::{GroupConfig, GroupCoordinator};
use crate::produce::Producer;
use crate::writer::{Writer, WriterConfig, WriterTasks};

/// This node's id in the test context.
pub const NODE_ID: i32 = 1;

/// A context and what keeps it running.
pub struct TestNode {
    /// The context handlers take.
    pub context: Arc<KafkaContext>,
    /// The objects written.
    #[allow(dead_code)]
    pub store: Arc<dyn ObjectStore>,
    /// The writer's tasks: flush and commit what was accepted.
    #[allow(dead_code)]
    pub tasks: WriterTasks,
    _lease: watch::Sender<LeaseId>,
}

impl TestNode {
    /// A context with no topics, this node registered as the one broker.
    pub async fn start() -> Self {
        Self::start_with(KafkaConfig::default()).await
    }

    /// [`TestNode::start`] with listener settings.
    pub async fn start_with(config: KafkaConfig) -> Self {
        let meta = Arc::new(EmbeddedStore::in_memory());
        let catalog = Catalog::new(meta, "test");
        let cluster_id = catalog.ensure_cluster_id().await.unwrap();
        let view = ClusterView::start(catalog.clone()).await.unwrap();
        view.upsert_node(NodeInfo {
            node_id: NODE_ID,
            kafka_host: "127.0.0.1".into(),
            kafka_port: 9092,
            http_url: "http://127.0.0.1:8080".into(),
            roles: vec![Role::Ingest, Role::Fetch],
            zone: None,
            listeners: Default::default(),
        });
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let writer_config = WriterConfig {
            flush_interval: Duration::from_millis(5),
            ..WriterConfig::default()
        };
        let (writer, tasks) = Writer::start(writer_config, store.clone(), view.clone());
        let lease = catalog.store().lease_grant(60).await.unwrap();
        let (lease_tx, lease_rx) = watch::channel(lease);
        let groups = GroupCoordinator::start(
            catalog.clone(),
            NODE_ID,
            lease_rx,
            GroupConfig {
                initial_rebalance_delay: Duration::from_millis(10),
                ..GroupConfig::default()
            },
        );
        let context = Arc::new(KafkaContext::new(
            NODE_ID,
            cluster_id,
            ("127.0.0.1".into(), 9092),
            Arc::new(Producer::new(view.clone(), writer)),
            Reader::new(store.clone(), view.clone()),
            config,
            groups,
        ));
        Self {
            context,
            store,
            tasks,
            _lease: lease_tx,
        }
    }

    /// Create a topic.
    pub async fn topic(&self, name: &str, partitions: i32) -> Topic {
        self.context
            .view
            .create_topic(name, partitions, BTreeMap::new())
            .await
            .unwrap()
    }

    /// Create a topic of one partition with `configs`.
    pub async fn topic_with(&self, name: &str, configs: &[(&str, &str)]) -> Topic {
        let configs = configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.context
            .view
            .create_topic(name, 1, configs)
            .await
            .unwrap()
    }
}

/// A protocol string holding `s`.
pub fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Call `probe` every 5 ms, at most 400 times, until `done` holds for its answer; the last answer.
pub async fn eventually<T, F, Fut>(mut probe: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let mut answer = probe().await;
    for _ in 1..400 {
        if done(&answer) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        answer = probe().await;
    }
    answer
}

/// Claim `group` for node `node_id` on a lease of its own; the node holding it.
pub async fn claim_for(context: &KafkaContext, group: &str, node_id: i32) -> i32 {
    let lease = context.catalog.store().lease_grant(60).await.unwrap();
    context
        .catalog
        .claim_coordinator(group, node_id, lease)
        .await
        .unwrap()
        .node_id
}

/// One JoinGroup protocol: `name` with subscription `metadata`.
pub fn protocol(name: &str, metadata: &'static [u8]) -> JoinGroupRequestProtocol {
    JoinGroupRequestProtocol::default()
        .with_name(text(name))
        .with_metadata(Bytes::from_static(metadata))
}

/// A consumer's JoinGroup of `group`: protocol `range` ("subscription"), 10 s timeouts.
pub fn join_request(group: &str, member_id: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_member_id(text(member_id))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![protocol("range", b"subscription")])
}

/// Send `request` at v3 (a new member joins at once) from client "client".
pub async fn join(context: &KafkaContext, request: JoinGroupRequest) -> JoinGroupResponse {
    join_group::handle(context, 3, "client", request).await
}

/// `member` of `group` in `generation` syncs, assigning itself "p0"; it must succeed.
pub async fn sync(context: &KafkaContext, group: &str, generation: i32, member: &str) {
    let request = SyncGroupRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id(generation)
        .with_member_id(text(member))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(text(member))
            .with_assignment(Bytes::from_static(b"p0"))]);
    assert_eq!(sync_group::handle(context, request).await.error_code, 0);
}

/// Join with `request` and sync: a member alone and stable in generation 1; its id.
pub async fn stable_member(context: &KafkaContext, request: JoinGroupRequest) -> String {
    let group = request.group_id.0.to_string();
    let joined = join(context, request).await;
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    let member = joined.member_id.to_string();
    sync(context, &group, 1, &member).await;
    member
}

/// A Heartbeat of `member` in `generation` of `group`.
pub fn heartbeat_request(group: &str, generation: i32, member: &str) -> HeartbeatRequest {
    HeartbeatRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id(generation)
        .with_member_id(text(member))
}

/// The error code answering a Heartbeat of `member` in `generation` of `group`.
pub async fn heartbeat(context: &KafkaContext, group: &str, generation: i32, member: &str) -> i16 {
    let request = heartbeat_request(group, generation, member);
    heartbeat::handle(context, request).await.error_code
}

/// An offset record at `offset`: no leader epoch or metadata, committed at 1 ms.
pub fn record(offset: i64) -> OffsetRecord {
    OffsetRecord {
        offset,
        leader_epoch: -1,
        metadata: None,
        commit_timestamp_ms: 1,
    }
}

/// Committed offsets of `group`: (topic, partition, offset).
pub async fn stored(context: &KafkaContext, group: &str) -> Vec<(String, i32, i64)> {
    let committed = context.groups.fetch_offsets(group).await.unwrap();
    committed
        .into_iter()
        .flat_map(|(topic, partitions)| {
            partitions
                .into_iter()
                .map(move |(p, r)| (topic.clone(), p, r.offset))
        })
        .collect()
}
