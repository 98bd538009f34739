//! One `sluice serve` process: opens the object store and the metadata
//! store, loads the cluster view, starts the write pipeline, the HTTP
//! listener and the Kafka listener (reads go through the node's block
//! cache, which the write path fills with what it uploads), and on shutdown stops accepting on both,
//! answers what was read, flushes and commits what was accepted, then
//! returns.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sluice_compactor::{Duties, NodeParts};
use sluice_fetch::{BlockCache, Peers, Reader};
use sluice_metadata::embedded::EmbeddedStore;
use sluice_metadata::etcd::EtcdStore;
use sluice_metadata::membership::{Membership, NodeInfo, Role};
use sluice_metadata::model::Catalog;
use sluice_metadata::view::ClusterView;
use sluice_metadata::MetaStore;
use sluice_segment::store::open_store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use sluice_ingest::group::GroupCoordinator;
use sluice_ingest::http::{self, HttpState};
use sluice_ingest::kafka::{self, KafkaContext};
use sluice_ingest::produce::Producer;
use sluice_ingest::writer::Writer;

use crate::config::Config;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Startup failed.
    #[error("{0}")]
    Startup(String),
}

fn startup<E: std::fmt::Display>(context: &'static str) -> impl FnOnce(E) -> NodeError {
    move |error| NodeError::Startup(format!("{context}: {error}"))
}

async fn node_id(config: &Config, catalog: &Catalog) -> Result<i32, NodeError> {
    if let Some(id) = config.node.node_id {
        return Ok(id);
    }
    let path = config.node.data_dir.join("node-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(id) = text.trim().parse() {
            return Ok(id);
        }
    }
    let id = catalog
        .allocate_node_id()
        .await
        .map_err(startup("allocating a node id"))?;
    std::fs::write(&path, format!("{id}\n")).map_err(startup("remembering the node id"))?;
    Ok(id)
}

/// Run a node until `shutdown` resolves, then drain and return.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    sluice_ingest::metrics::register();
    sluice_fetch::metrics::register();
    sluice_metadata::metrics::register();
    std::fs::create_dir_all(&config.node.data_dir)
        .map_err(startup("creating the data directory"))?;
    let data_dir = std::fs::canonicalize(&config.node.data_dir)
        .map_err(startup("resolving the data directory"))?;
    let store_url = match &config.store.url {
        Some(url) => url.clone(),
        None => format!("file://{}", data_dir.join("objects").display()),
    };
    let objects = open_store(&store_url, &config.store.options())
        .map_err(startup("opening the object store"))?;
    let meta: Arc<dyn MetaStore> = if config.metadata.etcd.is_empty() {
        Arc::new(
            EmbeddedStore::open(data_dir.join("meta"))
                .map_err(startup("opening the embedded metadata store"))?,
        )
    } else {
        Arc::new(
            EtcdStore::connect(config.metadata.etcd.clone(), Default::default())
                .await
                .map_err(startup("connecting to etcd"))?,
        )
    };
    let catalog = Catalog::new(meta, &config.node.cluster);
    let cluster_id = catalog
        .ensure_cluster_id()
        .await
        .map_err(startup("reading the cluster id"))?;
    let node_id = node_id(&config, &catalog).await?;
    let view = ClusterView::start(catalog.clone())
        .await
        .map_err(startup("loading the cluster view"))?;
    let cache = BlockCache::open(&config.cache, objects.clone())
        .await
        .map_err(startup("opening the read cache"))?;
    if config.peer.enabled {
        cache.set_peers(Peers::new(view.clone(), node_id, config.peer));
    }
    let (writer, writer_tasks) = Writer::start_with_cache(
        config.writer.clone(),
        objects.clone(),
        view.clone(),
        Some(cache.clone()),
    );
    let ready = Arc::new(AtomicBool::new(false));
    let producer = Arc::new(Producer::new(view.clone(), writer));
    let reader = Reader::new(objects.clone(), view.clone()).with_cache(cache.clone());
    let listener = TcpListener::bind(config.http.addr)
        .await
        .map_err(startup("binding the HTTP address"))?;
    let local = listener
        .local_addr()
        .map_err(startup("reading the HTTP address"))?;
    let serves_clients = config.node.roles.iter().any(|role| role.serves_clients());
    // a node without a client role opens no Kafka port: clients are refused
    let kafka_listener = if serves_clients {
        Some(
            TcpListener::bind(config.kafka.listen_addr)
                .await
                .map_err(startup("binding the Kafka address"))?,
        )
    } else {
        None
    };
    let kafka_local = match &kafka_listener {
        Some(listener) => listener
            .local_addr()
            .map_err(startup("reading the Kafka address"))?,
        None => config.kafka.listen_addr,
    };
    let (advertised_host, advertised_port) =
        kafka::advertised(kafka_local, config.kafka.advertised_addr.as_deref());
    // register on a lease: Metadata lists the live nodes, group
    // coordinatorships live and die with this node
    let node_info = NodeInfo {
        node_id,
        kafka_host: advertised_host.clone(),
        kafka_port: advertised_port,
        http_url: format!("http://{local}"),
        roles: config.node.roles.iter().copied().collect(),
        zone: None,
    };
    let membership = Membership::join(
        catalog.clone(),
        node_info.clone(),
        config.metadata.membership(),
    )
    .await
    .map_err(startup("registering the node"))?;
    view.upsert_node(node_info);
    let compactor = sluice_compactor::start(
        config.compactor.clone(),
        Duties {
            controller: true,
            worker: config.node.roles.contains(&Role::Compactor),
        },
        NodeParts {
            catalog: catalog.clone(),
            store: objects.clone(),
            view: view.clone(),
            reader: reader.clone(),
            node_id,
            lease: membership.lease_receiver(),
        },
    );
    let groups = GroupCoordinator::start(
        catalog.clone(),
        node_id,
        membership.lease_receiver(),
        config.groups.clone(),
    );
    let state = HttpState {
        producer: producer.clone(),
        reader: reader.clone(),
        catalog: catalog.clone(),
        cluster_id: cluster_id.clone(),
        ready: ready.clone(),
        groups: groups.clone(),
    };
    let kafka_context = Arc::new(KafkaContext::new(
        node_id,
        cluster_id.clone(),
        (advertised_host, advertised_port),
        producer,
        reader,
        config.kafka.clone(),
        groups,
    ));
    info!(
        node_id,
        cluster_id,
        http = %local,
        kafka = %kafka_local,
        advertised = format!("{}:{}", kafka_context.advertised_host, kafka_context.advertised_port),
        store = store_url,
        "sluice node serving"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let kafka_server =
        kafka_listener.map(|listener| tokio::spawn(kafka::serve(listener, kafka_context, stop_rx)));
    ready.store(true, Ordering::Release);
    let not_ready = ready.clone();
    let router = if serves_clients {
        http::router(state)
    } else {
        http::operations_router(state)
    };
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        not_ready.store(false, Ordering::Release);
        let _ = stop_tx.send(true);
        info!("shutting down: draining requests, flushing the buffer");
    });
    let served = server.await;
    if let Some(server) = kafka_server {
        if let Err(error) = server.await {
            tracing::warn!(%error, "kafka listener failed");
        }
    }
    // every accepted append is flushed and committed (or failed) before exit
    writer_tasks.shutdown().await;
    compactor.stop().await;
    membership.leave().await;
    cache.close().await;
    info!("sluice node stopped");
    served.map_err(startup("serving HTTP"))
}
