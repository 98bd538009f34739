//! sluice's control plane. Everything that coordinates nodes lives in a
//! [`MetaStore`]: etcd in a cluster, or the embedded store for a single node.
//! On top of the raw store, [`model`] keeps topics, partition heads and the
//! offset index under `/sluice/<cluster>/` (every key is built and parsed in
//! [`keys`]), and [`view::ClusterView`] keeps the cluster's topics, partition
//! heads, hot offset index and live nodes in memory, loaded once and then fed
//! by one prefix watch (and by the node's own writes, so a producer reads
//! its writes at once).

pub mod acls;
pub mod clock;
pub mod compaction;
pub mod conformance;
pub mod embedded;
pub mod etcd;
pub mod groups;
pub mod keys;
pub mod membership;
pub mod metrics;
pub mod model;
pub mod producers;
pub mod quotas;
pub mod store;
pub mod testing;
pub mod units;
pub mod users;
pub mod view;

pub use store::*;
