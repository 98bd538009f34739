//! Settings of the Kafka listener.

use std::net::SocketAddr;
use std::time::Duration;

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
    /// Upper bound of a Fetch's `max_wait_ms`.
    #[serde(with = "humantime_serde")]
    pub fetch_wait_max: Duration,
    /// How long shutdown waits for connections to finish their requests.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
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
            fetch_wait_max: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
        }
    }
}
