//! The Kafka wire-protocol listener: framing, request headers, dispatch to
//! one module per API, responses in request order.
//!
//! In layers: [`framing`] (size-prefixed frames, request headers, response
//! encoding), [`connection`] (accept loop, per-connection reading, ordering
//! and draining), [`dispatch`] (one table of served APIs, versions and
//! handlers), [`context`] (what handlers reach the node through), and one
//! module per API ([`produce`], [`fetch`], [`metadata`], …) that takes a
//! decoded request and returns a response, knowing nothing of sockets.
//! Codecs come from the `kafka-protocol` crate.
//!
//! A connection reads frames (4-byte big-endian size, then the request) on
//! its own task, runs at most `in_flight_max` requests at once, each taking
//! effect after the one before it ([`order`]), and writes the responses in
//! request order. A frame over `request_max_bytes`, a header
//! that does not decode, or an API key the codec does not know closes that
//! connection. An API sluice does not serve, or a served API at a version
//! outside its advertised range, is answered with that API's response
//! carrying UNSUPPORTED_VERSION when the codec can encode the requested
//! version ([`unsupported`]), and closes the connection otherwise (the
//! response format is unknown); ApiVersions at an unsupported version is
//! answered with UNSUPPORTED_VERSION in its v0 format so the client can pick
//! another. The node keeps serving everyone else.

pub mod config;
pub mod connection;
pub mod context;
pub mod dispatch;
pub mod framing;
pub mod listener;
pub mod order;
pub mod session;
#[cfg(test)]
pub(crate) mod testing;

pub mod api_versions;
pub mod authorized;
pub mod delete_groups;
pub mod describe_groups;
pub mod fetch;
pub mod fetch_session;
pub mod find_coordinator;
pub mod heartbeat;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod produce;
pub mod sync_group;

// security: SASL and the users it authenticates, ACLs, quotas
pub mod acls;
pub mod client_quotas;
pub mod sasl;
pub mod scram_credentials;

// idempotent producers
pub mod init_producer_id;

// admin APIs and the answer to unserved requests
pub mod alter_configs;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod incremental_alter_configs;
pub mod topic_configs;
pub mod unsupported;

pub use config::KafkaConfig;
pub use connection::{serve, serve_connection, Listener};
pub use context::{advertised, KafkaContext, CLIENT_HOST};
pub use dispatch::{handle_frame, Reply};
pub use framing::{encode_response, parse_frame, read_frame, ConnectionError, Framed, Parsed};
pub use listener::{ListenerSpec, SecurityProtocol};
pub use session::Session;
