//! One `sluice serve` process. [`config`] reads what the node is told (a
//! TOML file < `SLUICE_*` variables < flags, defaults written once by each
//! component); [`run`] opens the stores, starts what the node's roles ask
//! for (Kafka and HTTP clients, compaction jobs; every node may be elected
//! controller), and on shutdown drains it.

pub mod config;
mod memory;
mod run;

pub use config::{Config, ServeArgs};
pub use run::{open_cluster, open_metadata, run, ClusterParts, NodeError};
