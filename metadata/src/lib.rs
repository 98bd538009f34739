//! sluice's control plane. Everything that coordinates nodes lives in a
//! [`MetaStore`]: etcd in a cluster, or the embedded store for a single node.
//! On top of the raw store, [`model`] keeps topics, partition heads and the
//! offset index under `/sluice/<cluster>/`.

pub mod conformance;
pub mod embedded;
pub mod etcd;
pub mod groups;
pub mod membership;
pub mod model;
pub mod producers;
pub mod store;
pub mod testing;

pub use store::*;
