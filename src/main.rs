//! The `sluice` command: `serve` runs a node; `topic`, `produce` and
//! `consume` talk to a running node over HTTP; `archive` lists and queries
//! a topic's Parquet archive; `bench` measures a node.

mod archive;
mod bench;
mod client;
mod node;

/// See `sluice-alloc`: a malformed request must not abort the process.
#[global_allocator]
static ALLOCATOR: sluice_alloc::ReservingAllocator = sluice_alloc::ReservingAllocator;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sluice_compactor::CompactorConfig;
use sluice_fetch::{CacheConfig, PeerConfig};
use sluice_ingest::group::GroupConfig;
use sluice_ingest::kafka::KafkaConfig;
use sluice_ingest::writer::WriterConfig;
use sluice_metadata::membership::{MembershipOptions, Role};
use sluice_segment::store::StoreOptions;

use crate::node::NodeConfig;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Kafka-compatible log service on object storage and etcd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (every role in one process).
    Serve(Box<ServeArgs>),
    /// Topic administration against a running node.
    Topic {
        #[command(subcommand)]
        command: client::TopicCommand,
    },
    /// Produce stdin lines as records (one record per line).
    Produce(client::ProduceArgs),
    /// Print a partition's records, one value per line.
    Consume(client::ConsumeArgs),
    /// List or query (SQL, with DataFusion) a topic's Parquet archive.
    Archive {
        #[command(subcommand)]
        command: archive::ArchiveCommand,
    },
    /// Benchmarks against a running node.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Local directory for the embedded metadata store, the default object
    /// store and the node id.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    data_dir: PathBuf,
    /// Object store: `file:///abs/path` or `s3://bucket/prefix`
    /// (default: file://<data-dir>/objects).
    #[arg(long, env = "SLUICE_STORE")]
    store: Option<String>,
    /// S3 endpoint URL for S3-compatible servers (credentials and region
    /// come from the usual AWS variables).
    #[arg(long, env = "SLUICE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// Time limit of one object-store request.
    #[arg(long, env = "SLUICE_STORE_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    store_request_timeout: Duration,
    /// Retries of one object-store request.
    #[arg(long, env = "SLUICE_STORE_MAX_RETRIES", default_value_t = 3)]
    store_max_retries: usize,
    /// etcd endpoints, comma separated (default: the embedded store).
    #[arg(long, env = "SLUICE_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// Cluster name: the metadata key namespace.
    #[arg(long, env = "SLUICE_CLUSTER", default_value = "sluice")]
    cluster: String,
    /// HTTP listen address.
    #[arg(long, env = "SLUICE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Kafka listen address.
    #[arg(long, env = "SLUICE_KAFKA_ADDR", default_value = "0.0.0.0:9092")]
    kafka_addr: SocketAddr,
    /// `host:port` announced to Kafka clients (default: the bound address,
    /// 127.0.0.1 when bound to 0.0.0.0).
    #[arg(long, env = "SLUICE_ADVERTISED_KAFKA_ADDR")]
    advertised_kafka_addr: Option<String>,
    /// Partitions of a topic auto-created by a Kafka client.
    #[arg(long, env = "SLUICE_DEFAULT_PARTITIONS", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    default_partitions: i32,
    /// Create topics that Kafka clients ask for (auto.create.topics.enable).
    #[arg(long, env = "SLUICE_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics: bool,
    /// Largest Kafka request; a larger one closes the connection.
    #[arg(long, env = "SLUICE_KAFKA_REQUEST_MAX_BYTES", default_value_t = 100 * 1024 * 1024)]
    kafka_request_max_bytes: usize,
    /// Kafka requests one connection may have in flight.
    #[arg(long, env = "SLUICE_KAFKA_IN_FLIGHT_MAX", default_value_t = 256)]
    kafka_in_flight_max: usize,
    /// Bytes of Kafka requests read but not yet answered, all connections together.
    #[arg(long, env = "SLUICE_KAFKA_IN_FLIGHT_BYTES_MAX", default_value_t = 256 * 1024 * 1024)]
    kafka_in_flight_bytes_max: usize,
    /// Node id (default: remembered in the data directory, else allocated).
    #[arg(long, env = "SLUICE_NODE_ID")]
    node_id: Option<i32>,
    /// Longest time an accepted batch waits before its segment is flushed.
    #[arg(long, env = "SLUICE_FLUSH_INTERVAL", default_value = "250ms", value_parser = humantime::parse_duration)]
    flush_interval: Duration,
    /// Buffer size that triggers a flush (segment.max.bytes).
    #[arg(long, env = "SLUICE_SEGMENT_MAX_BYTES", default_value_t = 8 * 1024 * 1024)]
    segment_max_bytes: usize,
    /// Accepted but unacknowledged bytes before producers wait.
    #[arg(long, env = "SLUICE_BUFFER_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    buffer_max_bytes: usize,
    /// Operations one metadata transaction may hold (etcd --max-txn-ops).
    #[arg(long, env = "SLUICE_TXN_OPS_MAX", default_value_t = 128)]
    txn_ops_max: usize,
    /// How long the first rebalance of an empty consumer group waits for
    /// more members (Kafka's group.initial.rebalance.delay.ms).
    #[arg(long, env = "SLUICE_GROUP_INITIAL_REBALANCE_DELAY", default_value = "1s", value_parser = humantime::parse_duration)]
    group_initial_rebalance_delay: Duration,
    /// How long a node that stopped refreshing its registration lease stays
    /// listed (its partitions and groups move to live nodes after that).
    #[arg(long, env = "SLUICE_NODE_LEASE_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    node_lease_ttl: Duration,
    /// Smallest consumer session timeout accepted (group.min.session.timeout.ms).
    #[arg(long, env = "SLUICE_GROUP_MIN_SESSION_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    group_min_session_timeout: Duration,
    /// Bytes of the read cache's memory tier.
    #[arg(long, env = "SLUICE_CACHE_MEMORY_BYTES", default_value_t = 256 * 1024 * 1024)]
    cache_memory_bytes: usize,
    /// Bytes of the read cache's disk tier (0 = memory only).
    #[arg(long, env = "SLUICE_CACHE_DISK_BYTES", default_value_t = 4 * 1024 * 1024 * 1024)]
    cache_disk_bytes: usize,
    /// Read cache block size: the unit of caching and of object-store GETs.
    #[arg(long, env = "SLUICE_CACHE_BLOCK_BYTES", default_value_t = 4 * 1024 * 1024)]
    cache_block_bytes: u64,
    /// Directory of the read cache's disk tier (default: <data-dir>/cache).
    #[arg(long, env = "SLUICE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Blocks fetched ahead of a read that missed the cache (0 = none).
    #[arg(long, env = "SLUICE_READAHEAD_BLOCKS", default_value_t = 1)]
    readahead_blocks: u64,
    /// Readahead GETs in flight on the node at once; more are skipped.
    #[arg(long, env = "SLUICE_READAHEAD_IN_FLIGHT_MAX", default_value_t = 8)]
    readahead_in_flight_max: usize,
    /// Ask the owner node of a missing cache block (rendezvous hashing over
    /// the live nodes) before the object store.
    #[arg(long, env = "SLUICE_PEER_FETCH", default_value_t = true, action = clap::ArgAction::Set)]
    peer_fetch: bool,
    /// Time limit of one block request to a peer; on expiry the node reads
    /// the object store.
    #[arg(long, env = "SLUICE_PEER_FETCH_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    peer_fetch_timeout: Duration,
    /// Roles of this node, comma separated: `ingest`, `fetch` (either
    /// serves Kafka and HTTP clients and makes the node a broker),
    /// `compactor` (runs compaction jobs). Every node may be elected
    /// controller.
    #[arg(
        long,
        env = "SLUICE_ROLES",
        value_delimiter = ',',
        default_value = "ingest,fetch,compactor"
    )]
    roles: Vec<Role>,
    /// Every record older than this is in an archive (Parquet) file
    /// (archive.max.lag).
    #[arg(long, env = "SLUICE_ARCHIVE_MAX_LAG", default_value = "60s", value_parser = humantime::parse_duration)]
    archive_max_lag: Duration,
    /// Size small archive files are merged up to.
    #[arg(long, env = "SLUICE_ARCHIVE_TARGET_BYTES", default_value_t = 128 * 1024 * 1024)]
    archive_target_bytes: u64,
    /// Uncompressed bytes of one Parquet row group (the unit of archive reads).
    #[arg(long, env = "SLUICE_ARCHIVE_ROW_GROUP_BYTES", default_value_t = 8 * 1024 * 1024)]
    archive_row_group_bytes: usize,
    /// Segment bytes one roll job reads at most.
    #[arg(long, env = "SLUICE_ARCHIVE_ROLL_BYTES_MAX", default_value_t = 64 * 1024 * 1024)]
    archive_roll_bytes_max: u64,
    /// Adjacent small archive files that trigger a merge.
    #[arg(long, env = "SLUICE_ARCHIVE_MERGE_MIN_FILES", default_value_t = 8)]
    archive_merge_min_files: usize,
    /// Compaction jobs this node runs at once.
    #[arg(long, env = "SLUICE_COMPACTION_CONCURRENCY", default_value_t = 2)]
    compaction_concurrency: usize,
    /// How often the controller garbage-collects unreferenced objects.
    #[arg(long, env = "SLUICE_GC_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    gc_interval: Duration,
    /// How long an unreferenced object is kept after GC first sees it.
    #[arg(long, env = "SLUICE_GC_GRACE", default_value = "10m", value_parser = humantime::parse_duration)]
    gc_grace: Duration,
}

impl ServeArgs {
    fn into_config(self) -> NodeConfig {
        let cache = CacheConfig {
            memory_bytes: self.cache_memory_bytes,
            disk_bytes: self.cache_disk_bytes,
            dir: self
                .cache_dir
                .unwrap_or_else(|| self.data_dir.join("cache")),
            block_bytes: self.cache_block_bytes,
            readahead_blocks: self.readahead_blocks,
            readahead_in_flight_max: self.readahead_in_flight_max,
        };
        let compactor = CompactorConfig {
            archive_max_lag: self.archive_max_lag,
            archive_target_bytes: self.archive_target_bytes,
            row_group_bytes: self.archive_row_group_bytes.max(1),
            roll_bytes_max: self.archive_roll_bytes_max,
            merge_min_files: self.archive_merge_min_files,
            job_concurrency: self.compaction_concurrency.max(1),
            gc_interval: self.gc_interval,
            gc_grace: self.gc_grace,
            txn_ops_max: self.txn_ops_max,
            ..CompactorConfig::default()
        };
        NodeConfig {
            roles: self.roles.into_iter().collect(),
            compactor,
            cache,
            peer: PeerConfig {
                enabled: self.peer_fetch,
                timeout: self.peer_fetch_timeout,
            },
            data_dir: self.data_dir,
            store_url: self.store,
            store_options: StoreOptions {
                s3_endpoint: self.s3_endpoint,
                max_retries: self.store_max_retries,
                request_timeout: self.store_request_timeout,
                retry_timeout: self.store_request_timeout * 2,
            },
            etcd_endpoints: self.etcd,
            cluster: self.cluster,
            http_addr: self.http_addr,
            node_id: self.node_id,
            writer: WriterConfig {
                flush_interval: self.flush_interval,
                segment_max_bytes: self.segment_max_bytes,
                buffer_max_bytes: self.buffer_max_bytes,
                txn_ops_max: self.txn_ops_max,
                ..WriterConfig::default()
            },
            membership: MembershipOptions {
                ttl_secs: self.node_lease_ttl.as_secs().max(1) as i64,
                refresh: (self.node_lease_ttl / 4).max(Duration::from_millis(200)),
            },
            groups: GroupConfig {
                initial_rebalance_delay: self.group_initial_rebalance_delay,
                session_timeout_min: self.group_min_session_timeout,
                txn_ops_max: self.txn_ops_max,
                ..GroupConfig::default()
            },
            kafka: KafkaConfig {
                listen_addr: self.kafka_addr,
                advertised_addr: self.advertised_kafka_addr,
                default_partitions: self.default_partitions,
                auto_create_topics: self.auto_create_topics,
                request_max_bytes: self.kafka_request_max_bytes,
                in_flight_max: self.kafka_in_flight_max,
                in_flight_bytes_max: self.kafka_in_flight_bytes_max,
                ..KafkaConfig::default()
            },
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => node::run(args.into_config(), shutdown_signal()).await?,
        Command::Topic { command } => client::topic(command).await?,
        Command::Produce(args) => client::produce(args).await?,
        Command::Consume(args) => client::consume(args).await?,
        Command::Archive { command } => archive::run(command).await?,
        Command::Bench { command } => bench::run(command).await?,
    }
    Ok(())
}
