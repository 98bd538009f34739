//! What a cold start opens once and every warm invocation reuses.

use std::sync::Arc;

use anyhow::Context;
use object_store::ObjectStore;
use sluice_metadata::model::Catalog;
use sluice_metadata::view::ClusterView;
use sluice_node::Config;
use sluice_segment::store::open_store;

/// The stores and the cluster view of one function instance.
pub struct Parts {
    /// The object store.
    pub objects: Arc<dyn ObjectStore>,
    /// The catalog in etcd.
    pub catalog: Catalog,
    /// The cluster view, kept current by its etcd watch.
    pub view: Arc<ClusterView>,
    /// The cluster id.
    pub cluster_id: String,
    /// The credential nodes present to each other.
    pub node_secret: Arc<str>,
}

impl Parts {
    /// Connect to etcd and the object store and load the cluster view.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.metadata.etcd.is_empty(),
            "SLUICE_ETCD is required: a function keeps no metadata of its own"
        );
        let store_url = config
            .store
            .url
            .as_deref()
            .context("SLUICE_STORE_URL is required: a function keeps no data of its own")?;
        let objects =
            open_store(store_url, &config.store.options()).context("opening the object store")?;
        let meta = sluice_node::open_metadata(&config.metadata.etcd, &config.node.data_dir).await?;
        let catalog = Catalog::new(meta, &config.node.cluster);
        let cluster_id = catalog
            .ensure_cluster_id()
            .await
            .context("reading the cluster id")?;
        let node_secret: Arc<str> = catalog
            .ensure_node_secret()
            .await
            .context("reading the node credential")?
            .into();
        let view = ClusterView::start(catalog.clone())
            .await
            .context("loading the cluster view")?;
        Ok(Self {
            objects,
            catalog,
            view,
            cluster_id,
            node_secret,
        })
    }
}
