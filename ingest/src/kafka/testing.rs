//! A [`KafkaContext`] on in-memory backends for the handlers' unit tests:
//! the embedded metadata store in memory, an in-memory object store, a
//! writer that flushes every 5 ms, a group coordinator on a lease of its
//! own. Nothing listens on a socket.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::ObjectStore;
use sluice_fetch::Reader;
use sluice_metadata::embedded::EmbeddedStore;
use sluice_metadata::membership::{NodeInfo, Role};
use sluice_metadata::model::{Catalog, Topic};
use sluice_metadata::view::ClusterView;
use sluice_metadata::LeaseId;
use tokio::sync::watch;

use super::{KafkaConfig, KafkaContext};
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
}
