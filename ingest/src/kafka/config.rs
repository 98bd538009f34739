//! Settings of the Kafka listener.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_auth::Mechanism;

use super::listener::{parse_listeners, ListenerSpec, SecurityProtocol};

/// Settings of the Kafka listener.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Listen address.
    pub listen_addr: SocketAddr,
    /// `host:port` announced in Metadata; `None` = the bound address
    /// (127.0.0.1 when bound to an unspecified address).
    pub advertised_addr: Option<String>,
    /// Partitions of an auto-created topic.
    pub default_partitions: i32,
    /// Whether Metadata creates topics that do not exist (when the client
    /// allows it), like Kafka's `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// Largest request frame; a larger one closes the connection.
    #[serde(with = "sluice_metadata::units::bytes")]
    pub request_max_bytes: usize,
    /// Requests of one connection being handled at once. Produce requests
    /// wait for a segment flush (the flush interval), so clients pipeline
    /// deeply; memory is bounded by `in_flight_bytes_max` instead.
    pub in_flight_max: usize,
    /// Bytes of requests read but not yet answered, across all connections
    /// of the node; a connection waits before reading more.
    #[serde(with = "sluice_metadata::units::bytes")]
    pub in_flight_bytes_max: usize,
    /// Record bytes that Fetch responses being read may hold, across all
    /// connections of the node; a Fetch reads at most half of it (plus the
    /// one batch KIP-74 lets through) and waits while the rest is taken.
    #[serde(with = "sluice_metadata::units::bytes")]
    pub fetch_bytes_max: usize,
    /// Upper bound of a Fetch's `max_wait_ms`.
    #[serde(with = "humantime_serde")]
    pub fetch_wait_max: Duration,
    /// How long shutdown waits for connections to finish their requests.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Listeners, Kafka's way (`PLAINTEXT://host:9092,SASL_SSL://host:9093`);
    /// empty = one PLAINTEXT listener at `listen_addr`.
    pub listeners: Vec<String>,
    /// What each listener announces in Metadata (`SASL_SSL://public:9093`);
    /// a listener not named here announces its bound address (127.0.0.1
    /// when bound to every interface), or `advertised_addr` for PLAINTEXT.
    pub advertised_listeners: Vec<String>,
    /// SASL mechanisms offered on SASL listeners.
    pub sasl_mechanisms: Vec<String>,
    /// Lifetime of an authenticated SASL session (KIP-368,
    /// `connections.max.reauth.ms`); clients re-authenticate before it
    /// ends, or are closed. `None` = sessions last as long as the connection.
    #[serde(with = "humantime_serde")]
    pub sasl_session_lifetime: Option<Duration>,
}

impl KafkaConfig {
    /// The listeners to open: `listeners`, or the PLAINTEXT shorthand.
    pub fn listener_specs(&self) -> Result<Vec<ListenerSpec>, String> {
        let specs = parse_listeners(&self.listeners)?;
        if !specs.is_empty() {
            return Ok(specs);
        }
        Ok(vec![ListenerSpec {
            protocol: SecurityProtocol::Plaintext,
            host: self.listen_addr.ip().to_string(),
            port: self.listen_addr.port(),
        }])
    }

    /// The advertised listeners given (by protocol).
    pub fn advertised_specs(&self) -> Result<Vec<ListenerSpec>, String> {
        parse_listeners(&self.advertised_listeners)
    }

    /// The SASL mechanisms offered.
    pub fn mechanisms(&self) -> Result<Vec<Mechanism>, String> {
        let mut mechanisms = Vec::new();
        for name in self.sasl_mechanisms.iter().flat_map(|n| n.split(',')) {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            let mechanism = Mechanism::parse(name).ok_or_else(|| {
                format!("SASL mechanism {name:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")
            })?;
            if !mechanisms.contains(&mechanism) {
                mechanisms.push(mechanism);
            }
        }
        Ok(mechanisms)
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([0, 0, 0, 0], 9092)),
            advertised_addr: None,
            default_partitions: 1,
            auto_create_topics: true,
            request_max_bytes: 100 * 1024 * 1024,
            in_flight_max: 256,
            in_flight_bytes_max: 256 * 1024 * 1024,
            fetch_bytes_max: 64 * 1024 * 1024,
            fetch_wait_max: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            listeners: Vec::new(),
            advertised_listeners: Vec::new(),
            sasl_mechanisms: Mechanism::ALL
                .iter()
                .map(|m| m.name().to_string())
                .collect(),
            sasl_session_lifetime: None,
        }
    }
}
