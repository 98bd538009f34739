//! sluice's front doors and write path.
//!
//! - [`access`]: a request's principal and what the ACLs let it do.
//! - [`budget`]: the byte budgets both front doors take requests and responses from.
//! - [`writer`]: the node's segment buffer, upload and commit pipeline.
//! - [`produce`]: value records (HTTP) into RecordBatch v2, partitioning.
//! - [`kafka`]: the Kafka wire-protocol listener (one module per API).
//! - [`http`]: the HTTP API (Confluent REST v3 produce and topics, NDJSON reads).
//!
//! A produce is acknowledged only after its segment object is stored and its
//! offsets are committed in the metadata store.

pub mod access;
pub mod budget;
pub mod error;
pub mod group;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod produce;
pub mod quota;
pub mod rules;
pub mod writer;

pub use error::{ErrorKind, IngestError, IngestResult};
