//! `sluice serve`'s configuration as data: one serde struct whose sections
//! are the components' own settings (their `Default`s are the only place a
//! default is written), read in layers: a TOML file (`--config`) < the
//! `SLUICE_*` environment < command-line flags. Every flag (and its
//! variable) sets one or more keys of the file, listed in [`FLAGS`], and
//! goes through the same deserialization as the file, so a value means the
//! same wherever it is given. Unknown keys are refused with their name.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Arg, ArgAction, ArgMatches, Command};
use serde::{Deserialize, Serialize};
use sluice_compactor::CompactorConfig;
use sluice_fetch::{CacheConfig, PeerConfig};
use sluice_ingest::group::GroupConfig;
use sluice_ingest::kafka::KafkaConfig;
use sluice_ingest::writer::WriterConfig;
use sluice_metadata::membership::{MembershipOptions, Role};
use sluice_segment::store::StoreOptions;

mod memory;
pub use memory::MemorySection;

/// Everything `sluice serve` is told.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node: data directory, id, roles, cluster.
    pub node: NodeSection,
    /// The object store.
    pub store: StoreSection,
    /// The metadata store (etcd or embedded) and membership.
    pub metadata: MetadataSection,
    /// The HTTP listener.
    pub http: HttpSection,
    /// The Kafka listeners.
    pub kafka: KafkaConfig,
    /// TLS certificate and key (SSL and SASL_SSL listeners) and the CA of
    /// client certificates.
    pub tls: TlsSection,
    /// Who may do what: the authorizer and its super users.
    pub security: SecuritySection,
    /// The write path.
    pub writer: WriterConfig,
    /// The consumer group coordinator.
    pub groups: GroupConfig,
    /// The read cache (an empty `dir` is `<data_dir>/cache`).
    pub cache: CacheConfig,
    /// Peer-owned cache blocks.
    pub peer: PeerConfig,
    /// Compaction, retention and GC.
    pub compactor: CompactorConfig,
    /// The memory budget the components' buffers share.
    pub memory: MemorySection,
}

/// `[node]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Embedded metadata, default object store, remembered node id.
    pub data_dir: PathBuf,
    /// Node id; absent = remembered in the data directory, else allocated.
    pub node_id: Option<i32>,
    /// The metadata namespace `/sluice/<cluster>/`.
    pub cluster: String,
    /// What this node runs.
    pub roles: BTreeSet<Role>,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./sluice-data"),
            node_id: None,
            cluster: "sluice".into(),
            roles: Role::ALL.into_iter().collect(),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `file:///abs/path` or `s3://bucket/prefix`; absent = `file://<data_dir>/objects`.
    pub url: Option<String>,
    /// Endpoint of an S3-compatible server (credentials from the AWS variables).
    pub s3_endpoint: Option<String>,
    /// Time limit of one request (retries stop after twice that).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Retries of one request.
    pub max_retries: usize,
}

impl Default for StoreSection {
    fn default() -> Self {
        let defaults = StoreOptions::default();
        Self {
            url: None,
            s3_endpoint: None,
            request_timeout: defaults.request_timeout,
            max_retries: defaults.max_retries,
        }
    }
}

impl StoreSection {
    /// The object store client's options.
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            max_retries: self.max_retries,
            request_timeout: self.request_timeout,
            retry_timeout: self.request_timeout * 2,
        }
    }
}

/// `[metadata]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetadataSection {
    /// etcd endpoints; empty = the embedded store under the data directory.
    pub etcd: Vec<String>,
    /// How long a dead node stays listed (its registration lease).
    #[serde(with = "humantime_serde")]
    pub node_lease_ttl: Duration,
}

impl Default for MetadataSection {
    fn default() -> Self {
        Self {
            etcd: Vec::new(),
            node_lease_ttl: Duration::from_secs(MembershipOptions::default().ttl_secs as u64),
        }
    }
}

impl MetadataSection {
    /// Lease options: the registration is refreshed four times per lease.
    pub fn membership(&self) -> MembershipOptions {
        MembershipOptions {
            ttl_secs: self.node_lease_ttl.as_secs().max(1) as i64,
            refresh: (self.node_lease_ttl / 4).max(Duration::from_millis(200)),
        }
    }
}

/// `[http]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Listen address.
    pub addr: SocketAddr,
    /// Serve HTTPS with the node's TLS certificate (`[tls]`).
    pub tls: bool,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            tls: false,
        }
    }
}

/// `[tls]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain of the node (leaf first).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of that certificate.
    pub key_file: Option<PathBuf>,
    /// PEM CA of client certificates: SSL listeners then require one, and
    /// the connection acts as its subject (mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// PEM CA certificates the nodes' HTTPS certificates chain to: with
    /// `http.tls`, nodes fetch cache blocks from each other over HTTPS and
    /// verify the peer against these (and the system's roots).
    pub ca_file: Option<PathBuf>,
}

/// `[security]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySection {
    /// Enforce ACLs on every Kafka and HTTP request (off: everything is
    /// allowed, the default of a local node).
    pub authorizer: bool,
    /// Principals that may do everything (`User:admin`).
    pub super_users: Vec<String>,
}

impl SecuritySection {
    /// The authorizer these settings ask for (super users that do not
    /// parse are refused by [`Config::validate`]).
    pub fn authorizer(&self) -> sluice_auth::Authorizer {
        if self.authorizer {
            sluice_auth::Authorizer::enforcing(
                self.super_users
                    .iter()
                    .filter_map(|user| sluice_auth::Principal::parse(user))
                    .collect(),
            )
        } else {
            sluice_auth::Authorizer::allow_all()
        }
    }
}

impl Config {
    /// The defaults, with the component sizes the default memory budget
    /// gives them (what a node started with no settings runs with).
    pub fn budgeted() -> Self {
        let mut table = toml::Table::new();
        match MemorySection::derive(&mut table) {
            Ok(()) => Config::deserialize(toml::Value::Table(table)).unwrap_or_default(),
            Err(_) => Config::default(),
        }
    }

    /// Fill in what defaults to a place under the data directory.
    pub fn resolved(mut self) -> Self {
        if self.cache.dir.as_os_str().is_empty() {
            self.cache.dir = self.node.data_dir.join("cache");
        }
        self
    }

    /// Refuse settings no component can run with.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.node.roles.is_empty() {
            bail!("node.roles: at least one of ingest, fetch, compactor");
        }
        if self.kafka.default_partitions < 1 {
            bail!("kafka.default_partitions must be at least 1");
        }
        if self.compactor.row_group_bytes == 0 {
            bail!("compactor.row_group_bytes must be positive");
        }
        if self.compactor.job_concurrency == 0 {
            bail!("compactor.job_concurrency must be positive");
        }
        let listeners = self
            .kafka
            .listener_specs()
            .map_err(|e| anyhow::anyhow!("kafka.listeners: {e}"))?;
        self.kafka
            .advertised_specs()
            .map_err(|e| anyhow::anyhow!("kafka.advertised_listeners: {e}"))?;
        let mechanisms = self
            .kafka
            .mechanisms()
            .map_err(|e| anyhow::anyhow!("kafka.sasl_mechanisms: {e}"))?;
        if listeners.iter().any(|l| l.protocol.uses_tls())
            && (self.tls.cert_file.is_none() || self.tls.key_file.is_none())
        {
            bail!("an SSL or SASL_SSL listener needs tls.cert_file and tls.key_file (--tls-cert-file, --tls-key-file)");
        }
        if self.http.tls && (self.tls.cert_file.is_none() || self.tls.key_file.is_none()) {
            bail!(
                "http.tls needs tls.cert_file and tls.key_file (--tls-cert-file, --tls-key-file)"
            );
        }
        if self.tls.client_ca_file.is_some() && self.tls.cert_file.is_none() {
            bail!("tls.client_ca_file needs tls.cert_file and tls.key_file");
        }
        for user in &self.security.super_users {
            if sluice_auth::Principal::parse(user).is_none() {
                bail!("security.super_users: {user:?} is not Type:name (e.g. User:admin)");
            }
        }
        if listeners.iter().any(|l| l.protocol.uses_sasl()) && mechanisms.is_empty() {
            bail!("a SASL listener needs at least one of kafka.sasl_mechanisms");
        }
        Ok(())
    }
}

/// How a flag's text becomes a value of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Integer,
    Boolean,
    /// Bytes: a number or e.g. `64MiB`.
    Size,
    /// e.g. `250ms`, `10m`.
    Duration,
    /// Comma separated texts.
    List,
}

/// A command-line flag (and its environment variable) and the keys it sets.
#[derive(Debug)]
pub struct Flag {
    name: &'static str,
    env: &'static str,
    kind: Kind,
    keys: &'static [&'static str],
    help: &'static str,
}

macro_rules! flag {
    ($name:literal, $env:literal, $kind:ident, [$($key:literal),+], $help:literal) => {
        Flag { name: $name, env: $env, kind: Kind::$kind, keys: &[$($key),+], help: $help }
    };
}

/// Every `serve` flag: name, variable, kind, the config keys it sets, help.
pub const FLAGS: &[Flag] = &[
    flag!("data-dir", "SLUICE_DATA_DIR", Text, ["node.data_dir"], "Local directory: embedded metadata, default object store, node id"),
    flag!("node-id", "SLUICE_NODE_ID", Integer, ["node.node_id"], "Node id (default: remembered in the data directory, else allocated)"),
    flag!("cluster", "SLUICE_CLUSTER", Text, ["node.cluster"], "Cluster name: the metadata key namespace"),
    flag!("roles", "SLUICE_ROLES", List, ["node.roles"], "Roles, comma separated: ingest, fetch (either serves clients and makes the node a broker), compactor (runs compaction jobs)"),
    flag!("store", "SLUICE_STORE", Text, ["store.url"], "Object store: file:///abs/path or s3://bucket/prefix (default: file://<data-dir>/objects)"),
    flag!("s3-endpoint", "SLUICE_S3_ENDPOINT", Text, ["store.s3_endpoint"], "Endpoint of an S3-compatible server (credentials and region from the AWS variables)"),
    flag!("store-request-timeout", "SLUICE_STORE_REQUEST_TIMEOUT", Duration, ["store.request_timeout"], "Time limit of one object-store request"),
    flag!("store-max-retries", "SLUICE_STORE_MAX_RETRIES", Integer, ["store.max_retries"], "Retries of one object-store request"),
    flag!("etcd", "SLUICE_ETCD", List, ["metadata.etcd"], "etcd endpoints, comma separated (default: the embedded store)"),
    flag!("node-lease-ttl", "SLUICE_NODE_LEASE_TTL", Duration, ["metadata.node_lease_ttl"], "How long a dead node stays listed; its partitions and groups then move"),
    flag!("txn-ops-max", "SLUICE_TXN_OPS_MAX", Integer, ["writer.txn_ops_max", "groups.txn_ops_max", "compactor.txn_ops_max"], "Operations one metadata transaction may hold (etcd --max-txn-ops)"),
    flag!("http-addr", "SLUICE_HTTP_ADDR", Text, ["http.addr"], "HTTP listen address"),
    flag!("http-tls", "SLUICE_HTTP_TLS", Boolean, ["http.tls"], "Serve HTTPS on --http-addr with the certificate of --tls-cert-file (reloaded on SIGHUP)"),
    flag!("kafka-addr", "SLUICE_KAFKA_ADDR", Text, ["kafka.listen_addr"], "Kafka listen address"),
    flag!("advertised-kafka-addr", "SLUICE_ADVERTISED_KAFKA_ADDR", Text, ["kafka.advertised_addr"], "host:port announced to Kafka clients (default: the bound address, 127.0.0.1 when bound to 0.0.0.0)"),
    flag!("listeners", "SLUICE_LISTENERS", List, ["kafka.listeners"], "Kafka listeners, comma separated PROTOCOL://host:port with PROTOCOL one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL (replaces --kafka-addr)"),
    flag!("advertised-listeners", "SLUICE_ADVERTISED_LISTENERS", List, ["kafka.advertised_listeners"], "What each listener announces in Metadata, PROTOCOL://host:port (default: its bound address)"),
    flag!("tls-cert-file", "SLUICE_TLS_CERT_FILE", Text, ["tls.cert_file"], "PEM certificate chain of SSL and SASL_SSL listeners (reloaded on SIGHUP)"),
    flag!("tls-key-file", "SLUICE_TLS_KEY_FILE", Text, ["tls.key_file"], "PEM private key of that certificate (reloaded on SIGHUP)"),
    flag!("tls-client-ca-file", "SLUICE_TLS_CLIENT_CA_FILE", Text, ["tls.client_ca_file"], "PEM CA of client certificates: SSL listeners require one and act as its subject (mTLS)"),
    flag!("tls-ca-file", "SLUICE_TLS_CA_FILE", Text, ["tls.ca_file"], "PEM CA certificates the nodes' HTTPS certificates chain to: with --http-tls, peers fetch cache blocks over HTTPS and verify each other against them (and the system's roots)"),
    flag!("sasl-mechanisms", "SLUICE_SASL_MECHANISMS", List, ["kafka.sasl_mechanisms"], "SASL mechanisms of SASL listeners, comma separated: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
    flag!("sasl-session-lifetime", "SLUICE_SASL_SESSION_LIFETIME", Duration, ["kafka.sasl_session_lifetime"], "Lifetime of an authenticated SASL session; clients re-authenticate before it ends (KIP-368; default: the connection's)"),
    flag!("authorizer", "SLUICE_AUTHORIZER", Boolean, ["security.authorizer"], "Enforce ACLs on every Kafka and HTTP request (without it everything is allowed)"),
    flag!("super-users", "SLUICE_SUPER_USERS", List, ["security.super_users"], "Principals that may do everything, comma separated (User:admin)"),
    flag!("default-partitions", "SLUICE_DEFAULT_PARTITIONS", Integer, ["kafka.default_partitions"], "Partitions of a topic auto-created by a Kafka client"),
    flag!("auto-create-topics", "SLUICE_AUTO_CREATE_TOPICS", Boolean, ["kafka.auto_create_topics"], "Create topics that Kafka clients ask for (auto.create.topics.enable)"),
    flag!("kafka-request-max-bytes", "SLUICE_KAFKA_REQUEST_MAX_BYTES", Size, ["kafka.request_max_bytes"], "Largest Kafka request; a larger one closes the connection"),
    flag!("kafka-fetch-bytes-max", "SLUICE_KAFKA_FETCH_BYTES_MAX", Size, ["kafka.fetch_bytes_max"], "Record bytes of Fetch responses being read, all connections together (default: its share of --memory-max)"),
    flag!("kafka-in-flight-max", "SLUICE_KAFKA_IN_FLIGHT_MAX", Integer, ["kafka.in_flight_max"], "Kafka requests one connection may have in flight"),
    flag!("kafka-in-flight-bytes-max", "SLUICE_KAFKA_IN_FLIGHT_BYTES_MAX", Size, ["kafka.in_flight_bytes_max"], "Bytes of Kafka requests read but not yet answered, all connections together (default: its share of --memory-max)"),
    flag!("flush-interval", "SLUICE_FLUSH_INTERVAL", Duration, ["writer.flush_interval"], "Longest time an accepted batch waits before its segment is flushed"),
    flag!("segment-max-bytes", "SLUICE_SEGMENT_MAX_BYTES", Size, ["writer.segment_max_bytes"], "Buffer size that triggers a flush (segment.max.bytes)"),
    flag!("buffer-max-bytes", "SLUICE_BUFFER_MAX_BYTES", Size, ["writer.buffer_max_bytes"], "Accepted but unacknowledged bytes before producers wait (default: its share of --memory-max)"),
    flag!("group-initial-rebalance-delay", "SLUICE_GROUP_INITIAL_REBALANCE_DELAY", Duration, ["groups.initial_rebalance_delay"], "How long the first rebalance of an empty group waits for more members"),
    flag!("group-min-session-timeout", "SLUICE_GROUP_MIN_SESSION_TIMEOUT", Duration, ["groups.session_timeout_min"], "Smallest consumer session timeout accepted"),
    flag!("memory-max", "SLUICE_MEMORY_MAX", Size, ["memory.max"], "Memory budget: the read cache, the produce buffer, requests in flight, fetch responses and compaction take their shares of it ([memory] sets the shares; a size set on its own wins)"),
    flag!("cache-memory-bytes", "SLUICE_CACHE_MEMORY_BYTES", Size, ["cache.memory_bytes"], "Read cache: memory tier (default: its share of --memory-max)"),
    flag!("cache-disk-bytes", "SLUICE_CACHE_DISK_BYTES", Size, ["cache.disk_bytes"], "Read cache: disk tier (0 = memory only)"),
    flag!("cache-block-bytes", "SLUICE_CACHE_BLOCK_BYTES", Size, ["cache.block_bytes"], "Read cache block: the unit of caching and of object-store GETs"),
    flag!("cache-dir", "SLUICE_CACHE_DIR", Text, ["cache.dir"], "Directory of the disk tier (default: <data-dir>/cache)"),
    flag!("readahead-blocks", "SLUICE_READAHEAD_BLOCKS", Integer, ["cache.readahead_blocks"], "Blocks fetched ahead of a read that missed the cache (0 = none)"),
    flag!("cache-read-bytes-max", "SLUICE_CACHE_READ_BYTES_MAX", Size, ["cache.read_bytes_max"], "Bytes of index entries being read, verified and patched at once, all readers together (default: half the fetch share of --memory-max)"),
    flag!("readahead-in-flight-max", "SLUICE_READAHEAD_IN_FLIGHT_MAX", Integer, ["cache.readahead_in_flight_max"], "Readahead GETs in flight on the node; more are skipped"),
    flag!("peer-fetch", "SLUICE_PEER_FETCH", Boolean, ["peer.enabled"], "On a cache miss, ask the block's owner node before the object store"),
    flag!("peer-fetch-timeout", "SLUICE_PEER_FETCH_TIMEOUT", Duration, ["peer.timeout"], "Time limit of one peer block request"),
    flag!("archive-max-lag", "SLUICE_ARCHIVE_MAX_LAG", Duration, ["compactor.archive_max_lag"], "Every record older than this is in a published Parquet file"),
    flag!("archive-target-bytes", "SLUICE_ARCHIVE_TARGET_BYTES", Size, ["compactor.archive_target_bytes"], "Size small archive files are merged up to"),
    flag!("archive-row-group-bytes", "SLUICE_ARCHIVE_ROW_GROUP_BYTES", Size, ["compactor.row_group_bytes"], "Uncompressed bytes per Parquet row group (the unit of archive reads)"),
    flag!("archive-roll-bytes-max", "SLUICE_ARCHIVE_ROLL_BYTES_MAX", Size, ["compactor.roll_bytes_max"], "Segment bytes one roll job reads at most (default: from the compaction share of --memory-max)"),
    flag!("archive-merge-min-files", "SLUICE_ARCHIVE_MERGE_MIN_FILES", Integer, ["compactor.merge_min_files"], "Adjacent small archive files that trigger a merge"),
    flag!("compaction-concurrency", "SLUICE_COMPACTION_CONCURRENCY", Integer, ["compactor.job_concurrency"], "Compaction jobs this node runs at once"),
    flag!("gc-interval", "SLUICE_GC_INTERVAL", Duration, ["compactor.gc_interval"], "How often the controller garbage-collects"),
    flag!("gc-grace", "SLUICE_GC_GRACE", Duration, ["compactor.gc_grace"], "How long an object stays after GC first sees it unreferenced"),
];

/// The arguments of `sluice serve` and `sluice config show`: a config
/// file and whatever flags or variables were given.
#[derive(Debug, Clone, Default)]
pub struct ServeArgs {
    file: Option<PathBuf>,
    given: Vec<(&'static Flag, toml::Value)>,
}

fn value_of(flag: &Flag, matches: &ArgMatches) -> Option<toml::Value> {
    if flag.kind == Kind::List {
        let items = matches.get_many::<String>(flag.name)?;
        return Some(toml::Value::Array(
            items
                .map(|item| toml::Value::String(item.clone()))
                .collect(),
        ));
    }
    let text = matches.get_one::<String>(flag.name)?;
    Some(match flag.kind {
        // checked by the parser `arg` gives the flag
        Kind::Integer => toml::Value::Integer(text.parse().unwrap_or_default()),
        Kind::Boolean => toml::Value::Boolean(text == "true"),
        Kind::Text | Kind::Size | Kind::Duration | Kind::List => toml::Value::String(text.clone()),
    })
}

/// The default of `key` as the file would write it (absent: none).
fn default_text(defaults: &toml::Value, key: &str) -> Option<String> {
    let value = key
        .split('.')
        .try_fold(defaults, |value, part| value.get(part))?;
    Some(match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map_or_else(|| item.to_string(), str::to_string)
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    })
}

fn arg(flag: &'static Flag, defaults: &toml::Value) -> Arg {
    let help = match default_text(defaults, flag.keys[0]) {
        Some(text) if !text.is_empty() => format!("{} [default: {text}]", flag.help),
        _ => flag.help.to_string(),
    };
    let arg = Arg::new(flag.name)
        .long(flag.name)
        .env(flag.env)
        .help(help)
        .action(ArgAction::Set);
    match flag.kind {
        Kind::Text => arg,
        Kind::Integer => arg.value_parser(|text: &str| {
            text.parse::<i64>()
                .map(|_| text.to_string())
                .map_err(|_| format!("{text:?} is not an integer"))
        }),
        // `--authorizer` alone means true
        Kind::Boolean => arg
            .value_parser(["true", "false"])
            .num_args(0..=1)
            .default_missing_value("true"),
        Kind::Size => arg.value_parser(|text: &str| {
            sluice_metadata::units::bytes::parse(text).map(|_| text.to_string())
        }),
        Kind::Duration => arg.value_parser(|text: &str| {
            humantime::parse_duration(text)
                .map(|_| text.to_string())
                .map_err(|error| format!("{text:?} is not a duration: {error}"))
        }),
        Kind::List => arg.value_delimiter(',').action(ArgAction::Append),
    }
}

impl clap::FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = Self::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        if let Some(file) = matches.get_one::<PathBuf>("config") {
            self.file = Some(file.clone());
        }
        for flag in FLAGS {
            if let Some(value) = value_of(flag, matches) {
                self.given.push((flag, value));
            }
        }
        Ok(())
    }
}

impl clap::Args for ServeArgs {
    fn augment_args(command: Command) -> Command {
        let command = command.arg(
            Arg::new("config")
                .long("config")
                .env("SLUICE_CONFIG")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML file of settings (`sluice config show` prints every key); the SLUICE_* variables and flags override it"),
        );
        // Config's defaults are plain data: they always serialize
        let defaults = toml::Value::try_from(Config::budgeted())
            .unwrap_or(toml::Value::Table(toml::Table::new()));
        FLAGS
            .iter()
            .fold(command, |command, flag| command.arg(arg(flag, &defaults)))
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

fn set(table: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_string(), value);
        }
        Some((section, rest)) => {
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(inner) = entry {
                set(inner, rest, value);
            }
        }
    }
}

fn read_file(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    // parsed as the Config first, so that an unknown key or a bad value is
    // reported with its name and place in the file
    toml::from_str::<Config>(&text).with_context(|| format!("config file {}", path.display()))?;
    Ok(toml::from_str(&text)?)
}

impl ServeArgs {
    /// The effective config: defaults < file < environment < flags.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut table = match &self.file {
            Some(path) => read_file(path)?,
            None => toml::Table::new(),
        };
        for (flag, value) in &self.given {
            for key in flag.keys {
                set(&mut table, key, value.clone());
            }
        }
        MemorySection::derive(&mut table)?;
        let config = Config::deserialize(toml::Value::Table(table))
            .context("settings from the environment or flags")?
            .resolved();
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::{FromArgMatches, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        let matches = <Cli as clap::CommandFactory>::command()
            .try_get_matches_from(std::iter::once("sluice").chain(args.iter().copied()))?;
        Cli::from_arg_matches(&matches)?.serve.config()
    }

    #[test]
    fn every_flag_sets_a_key_the_config_has() {
        let keys = toml::Value::try_from(Config::default().resolved()).unwrap();
        for flag in FLAGS {
            for key in flag.keys {
                let (section, field) = key.split_once('.').unwrap();
                let known = keys[section].as_table().unwrap();
                // absent only when the default is None
                let optional = [
                    "node_id",
                    "url",
                    "s3_endpoint",
                    "advertised_addr",
                    "cert_file",
                    "key_file",
                    "client_ca_file",
                    "ca_file",
                    "sasl_session_lifetime",
                ];
                assert!(
                    known.contains_key(field) || optional.contains(&field),
                    "{key}"
                );
            }
            assert_eq!(
                flag.env,
                format!("SLUICE_{}", flag.name.to_uppercase().replace('-', "_"))
            );
        }
    }

    #[test]
    fn defaults_are_the_components_defaults() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.writer.flush_interval, Duration::from_millis(250));
        assert_eq!(config.cache.dir, PathBuf::from("./sluice-data/cache"));
        assert_eq!(config.node.roles.len(), 3);
        assert_eq!(config.http.addr.port(), 8080);
    }

    #[test]
    fn the_memory_budget_sizes_the_components_it_shares() {
        const MIB: usize = 1 << 20;
        let config = parse(&[]).unwrap();
        let memory = &config.memory;
        assert_eq!(memory.max, 256 * MIB);
        let disk_buffers = config.cache.overhead_bytes();
        assert!(
            disk_buffers > config.cache.readahead_in_flight_max * config.cache.block_bytes as usize
        );
        assert_eq!(
            config.cache.memory_bytes,
            memory.bytes(memory.cache) - disk_buffers
        );
        assert_eq!(config.writer.buffer_max_bytes, memory.bytes(memory.writer));
        assert_eq!(
            config.kafka.in_flight_bytes_max,
            memory.bytes(memory.requests)
        );
        assert_eq!(config.kafka.fetch_bytes_max, memory.bytes(memory.fetch) / 2);
        assert_eq!(config.cache.read_bytes_max, memory.bytes(memory.fetch) / 2);
        assert_eq!(
            config.compactor.roll_bytes_max as usize,
            memory.bytes(memory.compaction) / config.compactor.job_concurrency / 2 / 1024 * 1024
        );
        // together they stay inside the budget, leaving the process its part
        let shares = config.cache.memory_bytes
            + disk_buffers
            + config.writer.buffer_max_bytes
            + config.kafka.in_flight_bytes_max
            + config.kafka.fetch_bytes_max
            + config.cache.read_bytes_max
            + 2 * config.compactor.roll_bytes_max as usize * config.compactor.job_concurrency;
        assert!(shares <= memory.max * 9 / 10, "{shares}");
        // `--help` shows the sizes a node runs with
        assert_eq!(
            Config::budgeted().cache.memory_bytes,
            config.cache.memory_bytes
        );

        // a larger budget scales every share
        let large = parse(&["--memory-max", "1GiB"]).unwrap();
        assert_eq!(large.memory.max, 4 * memory.max);
        assert_eq!(
            large.writer.buffer_max_bytes,
            large.memory.bytes(memory.writer)
        );
        assert!(large.writer.buffer_max_bytes >= 4 * config.writer.buffer_max_bytes);
        assert_eq!(
            large.kafka.fetch_bytes_max,
            large.memory.bytes(memory.fetch) / 2
        );
        assert_eq!(
            large.cache.memory_bytes,
            large.memory.bytes(memory.cache) - disk_buffers
        );
    }

    #[test]
    fn a_size_set_on_its_own_wins_over_its_share() {
        let config = parse(&["--memory-max", "512MiB", "--cache-memory-bytes", "32MiB"]).unwrap();
        assert_eq!(config.cache.memory_bytes, 32 << 20);
        assert_eq!(config.writer.buffer_max_bytes, config.memory.bytes(0.20));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(
            &file,
            "[memory]\nmax = \"1GiB\"\nwriter = 0.3\ncache = 0.3\n[kafka]\nfetch_bytes_max = \"8MiB\"\n",
        )
        .unwrap();
        let config = parse(&["--config", file.to_str().unwrap()]).unwrap();
        assert_eq!(config.writer.buffer_max_bytes, config.memory.bytes(0.3));
        assert_eq!(config.kafka.fetch_bytes_max, 8 << 20);
    }

    #[test]
    fn budgets_that_cannot_work_are_refused_with_their_reason() {
        for (args, reason) in [
            (vec!["--memory-max", "8MiB"], "at least 16MiB"),
            (vec!["--memory-max", "64MiB"], "less than four cache blocks"),
        ] {
            let error = format!("{:#}", parse(&args).unwrap_err());
            assert!(error.contains(reason), "{args:?}: {error}");
        }
        // a memory-only cache needs no disk buffers
        assert!(parse(&["--memory-max", "96MiB", "--cache-disk-bytes", "0"]).is_ok());
        let dir = tempfile::tempdir().unwrap();
        for (shares, reason) in [
            ("writer = 0.5\ncache = 0.4", "add up to"),
            ("fetch = 0.0", "between 0 and 1"),
            ("fetch = 1.5", "between 0 and 1"),
        ] {
            let file = dir.path().join("sluice.toml");
            std::fs::write(&file, format!("[memory]\n{shares}\n")).unwrap();
            let error = format!(
                "{:#}",
                parse(&["--config", file.to_str().unwrap()]).unwrap_err()
            );
            assert!(error.contains(reason), "{shares}: {error}");
        }
    }

    #[test]
    fn flags_parse_like_the_file() {
        let config = parse(&[
            "--flush-interval",
            "50ms",
            "--cache-block-bytes",
            "262144",
            "--segment-max-bytes",
            "4MiB",
            "--roles",
            "ingest,compactor",
            "--txn-ops-max",
            "64",
            "--peer-fetch",
            "false",
            "--cluster",
            "123",
        ])
        .unwrap();
        assert_eq!(config.writer.flush_interval, Duration::from_millis(50));
        assert_eq!(config.cache.block_bytes, 262_144);
        assert_eq!(config.writer.segment_max_bytes, 4 << 20);
        assert_eq!(
            config.node.roles,
            [Role::Ingest, Role::Compactor].into_iter().collect()
        );
        assert_eq!(
            (
                config.writer.txn_ops_max,
                config.groups.txn_ops_max,
                config.compactor.txn_ops_max
            ),
            (64, 64, 64)
        );
        assert!(!config.peer.enabled);
        assert_eq!(config.node.cluster, "123");
        assert!(parse(&["--roles", "ingest,nope"]).is_err());
        assert!(parse(&["--flush-interval", "soon"]).is_err());
        assert!(parse(&["--default-partitions", "0"]).is_err());
    }

    #[test]
    fn listeners_and_tls_are_checked_together() {
        let config = parse(&[
            "--listeners",
            "PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9093",
            "--tls-cert-file",
            "/c.pem",
            "--tls-key-file",
            "/k.pem",
            "--sasl-mechanisms",
            "SCRAM-SHA-512",
            "--sasl-session-lifetime",
            "10m",
        ])
        .unwrap();
        assert_eq!(config.kafka.listener_specs().unwrap().len(), 2);
        assert_eq!(config.kafka.mechanisms().unwrap().len(), 1);
        assert_eq!(
            config.kafka.sasl_session_lifetime,
            Some(Duration::from_secs(600))
        );
        // TLS listener without a certificate; a listener that does not parse
        assert!(parse(&["--listeners", "SSL://127.0.0.1:9093"]).is_err());
        assert!(parse(&["--listeners", "TLS://127.0.0.1:9093"]).is_err());
        assert!(parse(&["--sasl-mechanisms", "GSSAPI"]).is_err());
        let secured = parse(&["--authorizer", "--super-users", "User:admin,User:ops"]).unwrap();
        assert!(secured.security.authorizer);
        assert_eq!(secured.security.super_users.len(), 2);
        assert!(
            !parse(&["--authorizer", "false"])
                .unwrap()
                .security
                .authorizer
        );
        assert!(parse(&["--super-users", "admin"]).is_err());
        // the default: one PLAINTEXT listener at --kafka-addr
        let plain = parse(&["--kafka-addr", "127.0.0.1:19092"]).unwrap();
        let specs = plain.kafka.listener_specs().unwrap();
        assert_eq!(specs[0].to_string(), "PLAINTEXT://127.0.0.1:19092");
    }
}
