//! One `sluice serve` process: opens the object store and the metadata
//! store, loads the cluster view, starts the write pipeline, the HTTP
//! listener and the Kafka listener (reads go through the node's block
//! cache, which the write path fills with what it uploads), and on shutdown stops accepting on both,
//! answers what was read, flushes and commits what was accepted, then
//! returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sluice_auth::tls::{TlsFiles, TlsServer};
use sluice_compactor::{Duties, NodeParts};
use sluice_fetch::{BlockCache, Peers, Reader};
use sluice_ingest::kafka::SecurityProtocol;
use sluice_metadata::embedded::EmbeddedStore;
use sluice_metadata::etcd::EtcdStore;
use sluice_metadata::membership::{Endpoint, Membership, NodeInfo, Role};
use sluice_metadata::model::Catalog;
use sluice_metadata::view::ClusterView;
use sluice_metadata::MetaStore;
use sluice_segment::store::open_store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use sluice_ingest::group::GroupCoordinator;
use sluice_ingest::http::tls::{Peer, TlsListener};
use sluice_ingest::http::{self, HttpState};
use sluice_ingest::kafka::{self, KafkaContext};
use sluice_ingest::produce::Producer;
use sluice_ingest::writer::Writer;

use crate::config::Config;

/// The whole drain (connections, HTTP requests, the writer's flush, leaving
/// the cluster) is bounded by this many `kafka.drain_timeout`s.
const DRAIN_BOUND_FACTOR: u32 = 3;

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

/// The metadata store: etcd at `etcd`, or the embedded store under
/// `data_dir` when `etcd` is empty (as `serve` opens it; `sluice user`
/// opens it the same way).
pub async fn open_metadata(
    etcd: &[String],
    data_dir: &std::path::Path,
) -> Result<Arc<dyn MetaStore>, NodeError> {
    Ok(if etcd.is_empty() {
        Arc::new(
            EmbeddedStore::open(data_dir.join("meta"))
                .map_err(startup("opening the embedded metadata store"))?,
        )
    } else {
        Arc::new(
            EtcdStore::connect(etcd.to_vec(), Default::default())
                .await
                .map_err(startup("connecting to etcd"))?,
        )
    })
}

/// What every process of a cluster opens first (a node, the Lambda
/// function): the stores, the catalog, the cluster view and the cluster's
/// id and node credential.
pub struct ClusterParts {
    /// The object store.
    pub objects: Arc<dyn object_store::ObjectStore>,
    /// The catalog in the metadata store.
    pub catalog: Catalog,
    /// The cluster view, kept current by its watch.
    pub view: Arc<ClusterView>,
    /// The cluster id.
    pub cluster_id: String,
    /// The credential nodes present to each other.
    pub node_secret: Arc<str>,
}

/// Open the object store at `store_url` and the metadata store (etcd, or
/// the embedded store under `data_dir`), make sure the cluster has its id
/// and node credential, and load the cluster view.
pub async fn open_cluster(
    config: &Config,
    store_url: &str,
    data_dir: &std::path::Path,
) -> Result<ClusterParts, NodeError> {
    let objects = open_store(store_url, &config.store.options())
        .map_err(startup("opening the object store"))?;
    let meta = open_metadata(&config.metadata.etcd, data_dir).await?;
    let catalog = Catalog::new(meta, &config.node.cluster);
    let cluster_id = catalog
        .ensure_cluster_id()
        .await
        .map_err(startup("reading the cluster id"))?;
    let node_secret: Arc<str> = catalog
        .ensure_node_secret()
        .await
        .map_err(startup("reading the node credential"))?
        .into();
    let view = ClusterView::start(catalog.clone())
        .await
        .map_err(startup("loading the cluster view"))?;
    Ok(ClusterParts {
        objects,
        catalog,
        view,
        cluster_id,
        node_secret,
    })
}

/// A Kafka listener bound, with its addresses.
struct BoundListener {
    listener: kafka::Listener,
    local: SocketAddr,
    advertised: (String, i32),
}

/// The node's TLS settings, when a certificate is configured.
fn tls_server(config: &Config) -> Result<Option<Arc<TlsServer>>, NodeError> {
    let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) else {
        return Ok(None);
    };
    let files = TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: config.tls.client_ca_file.clone(),
    };
    TlsServer::load(files)
        .map(Some)
        .map_err(startup("loading the TLS certificate"))
}

/// Bind every Kafka listener, each announced at its advertised listener
/// (else its bound address, or `--advertised-kafka-addr` for PLAINTEXT).
async fn bind_kafka_listeners(
    config: &Config,
    tls: Option<&Arc<TlsServer>>,
) -> Result<Vec<BoundListener>, NodeError> {
    let specs = config
        .kafka
        .listener_specs()
        .map_err(startup("kafka.listeners"))?;
    let advertised = config
        .kafka
        .advertised_specs()
        .map_err(startup("kafka.advertised_listeners"))?;
    let mut bound = Vec::new();
    for spec in specs {
        let socket = TcpListener::bind(spec.bind_addr())
            .await
            .map_err(startup("binding a Kafka listener"))?;
        let local = socket
            .local_addr()
            .map_err(startup("reading a Kafka listener's address"))?;
        let announced = match advertised.iter().find(|a| a.protocol == spec.protocol) {
            Some(a) => (a.host.clone(), i32::from(a.port)),
            None if spec.protocol == SecurityProtocol::Plaintext => {
                kafka::advertised(local, config.kafka.advertised_addr.as_deref())
            }
            None => kafka::advertised(local, None),
        };
        bound.push(BoundListener {
            listener: kafka::Listener {
                socket,
                protocol: spec.protocol,
                tls: spec.protocol.uses_tls().then(|| tls.cloned()).flatten(),
            },
            local,
            advertised: announced,
        });
    }
    Ok(bound)
}

/// Re-read the TLS files on every SIGHUP.
fn reload_tls_on_sighup(tls: Arc<TlsServer>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: TLS files will not be reloaded");
            return;
        };
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => info!("SIGHUP: TLS certificate, key and client CA reloaded"),
                Err(error) => {
                    tracing::warn!(%error, "SIGHUP: TLS files not reloaded; the old ones stay")
                }
            }
        }
    });
    #[cfg(not(unix))]
    drop(tls);
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
    let ClusterParts {
        objects,
        catalog,
        view,
        cluster_id,
        node_secret,
    } = open_cluster(&config, &store_url, &data_dir).await?;
    let node_id = node_id(&config, &catalog).await?;
    let cache = BlockCache::open(&config.cache, objects.clone())
        .await
        .map_err(startup("opening the read cache"))?;
    if config.peer.enabled {
        let trusted_ca = match &config.tls.ca_file {
            Some(ca) => Some(std::fs::read(ca).map_err(startup("reading tls.ca_file"))?),
            None => None,
        };
        let peers = Peers::new(
            view.clone(),
            node_id,
            config.peer,
            node_secret.clone(),
            trusted_ca.as_deref(),
        )
        .map_err(startup("tls.ca_file: the peers' CA certificates"))?;
        cache.set_peers(peers);
    }
    let (writer, writer_tasks) = Writer::start_with_cache(
        config.writer.clone(),
        objects.clone(),
        view.clone(),
        Some(cache.clone()),
    );
    let ready = Arc::new(AtomicBool::new(false));
    let producer = Arc::new(Producer::new(view.clone(), writer));
    let reader = Reader::new(objects.clone(), view.clone())
        .with_cache(cache.clone())
        .with_read_budget(config.cache.read_bytes_max);
    let listener = TcpListener::bind(config.http.addr)
        .await
        .map_err(startup("binding the HTTP address"))?;
    let local = listener
        .local_addr()
        .map_err(startup("reading the HTTP address"))?;
    let serves_clients = config.node.roles.iter().any(|role| role.serves_clients());
    // a node without a client role opens no Kafka port: clients are refused
    let tls = tls_server(&config)?;
    let kafka_listeners = if serves_clients {
        bind_kafka_listeners(&config, tls.as_ref()).await?
    } else {
        Vec::new()
    };
    // the PLAINTEXT endpoint (else the first) is the node's Kafka address
    // for what knows only one
    let primary = kafka_listeners
        .iter()
        .find(|l| l.listener.protocol == SecurityProtocol::Plaintext)
        .or(kafka_listeners.first());
    let (advertised_host, advertised_port) = match primary {
        Some(bound) => bound.advertised.clone(),
        None => kafka::advertised(
            config.kafka.listen_addr,
            config.kafka.advertised_addr.as_deref(),
        ),
    };
    if let Some(tls) = &tls {
        reload_tls_on_sighup(tls.clone());
    }
    // register on a lease: Metadata lists the live nodes, group
    // coordinatorships live and die with this node
    let node_info = NodeInfo {
        node_id,
        kafka_host: advertised_host.clone(),
        kafka_port: advertised_port,
        // peers fetch cache blocks here: over HTTPS where the API is
        http_url: format!(
            "{}://{local}",
            if config.http.tls { "https" } else { "http" }
        ),
        roles: config.node.roles.iter().copied().collect(),
        zone: None,
        listeners: kafka_listeners
            .iter()
            .map(|bound| {
                let (host, port) = bound.advertised.clone();
                (
                    bound.listener.protocol.name().to_string(),
                    Endpoint { host, port },
                )
            })
            .collect(),
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
    let authorizer = Arc::new(config.security.authorizer());
    let quotas = sluice_ingest::quota::Quotas::new(view.clone());
    let kafka_context = Arc::new(
        KafkaContext::new(
            node_id,
            cluster_id.clone(),
            (advertised_host, advertised_port),
            producer,
            reader,
            config.kafka.clone(),
            groups,
        )
        .with_authorizer(authorizer.clone())
        .with_quotas(quotas),
    );
    let state = HttpState {
        producer: kafka_context.producer.clone(),
        reader: kafka_context.reader.clone(),
        catalog: catalog.clone(),
        cluster_id: cluster_id.clone(),
        ready: ready.clone(),
        groups: Some(kafka_context.groups.clone()),
        authorizer: authorizer.clone(),
        node_secret: node_secret.clone(),
        quotas: kafka_context.quotas.clone(),
        // one budget of request bytes and one of response bytes for both
        // front doors
        requests: kafka_context.request_budget.clone(),
        responses: kafka_context.fetch_budget.clone(),
    };
    crate::memory::report(
        &config,
        crate::memory::Holders {
            cache: cache.clone(),
            requests: kafka_context.request_budget.clone(),
            fetch: kafka_context.fetch_budget.clone(),
            reader: kafka_context.reader.clone(),
        },
    );
    let listening: Vec<String> = kafka_listeners
        .iter()
        .map(|bound| {
            format!(
                "{}://{} (advertised {}:{})",
                bound.listener.protocol, bound.local, bound.advertised.0, bound.advertised.1
            )
        })
        .collect();
    info!(
        node_id,
        cluster_id,
        http = %local,
        kafka = listening.join(", "),
        store = store_url,
        "sluice node serving"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let kafka_servers: Vec<_> = kafka_listeners
        .into_iter()
        .map(|bound| {
            let context = Arc::new(
                kafka_context.for_listener(bound.listener.protocol, bound.advertised.clone()),
            );
            tokio::spawn(kafka::serve(bound.listener, context, stop_rx.clone()))
        })
        .collect();
    ready.store(true, Ordering::Release);
    let not_ready = ready.clone();
    let router = if serves_clients {
        http::router(state)
    } else {
        http::operations_router(state)
    };
    let drain_max = config.kafka.drain_timeout * DRAIN_BOUND_FACTOR;
    let draining = async move {
        shutdown.await;
        not_ready.store(false, Ordering::Release);
        let _ = stop_tx.send(true);
        info!(
            bound = ?drain_max,
            "shutting down: draining requests, flushing the buffer"
        );
        // the drain is bounded: connections by kafka.drain_timeout, the
        // flush by the writer's attempts; past this the process leaves
        // anyway (what it has not answered, clients send again)
        tokio::spawn(async move {
            tokio::time::sleep(drain_max).await;
            tracing::error!(bound = ?drain_max, "drain did not finish in time: exiting");
            std::process::exit(1);
        });
    };
    let served = match (&tls, config.http.tls) {
        (Some(tls), true) => {
            axum::serve(
                TlsListener::new(listener, tls.clone()),
                router.into_make_service_with_connect_info::<Peer>(),
            )
            .with_graceful_shutdown(draining)
            .await
        }
        _ => {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<Peer>(),
            )
            .with_graceful_shutdown(draining)
            .await
        }
    };
    for server in kafka_servers {
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
