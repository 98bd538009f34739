//! What a cold start opens once and every warm invocation reuses: the
//! node's own [`sluice_node::open_cluster`], with etcd and an object store
//! URL required.

use anyhow::Context;
use sluice_node::{ClusterParts, Config};

/// The stores and the cluster view of one function instance.
pub type Parts = ClusterParts;

/// Connect to etcd and the object store and load the cluster view.
pub async fn open(config: &Config) -> anyhow::Result<Parts> {
    anyhow::ensure!(
        !config.metadata.etcd.is_empty(),
        "SLUICE_ETCD is required: a function keeps no metadata of its own"
    );
    let store_url = config
        .store
        .url
        .as_deref()
        .context("SLUICE_STORE is required: a function keeps no data of its own")?;
    Ok(sluice_node::open_cluster(config, store_url, &config.node.data_dir).await?)
}
