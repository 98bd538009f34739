//! Peer-owned blocks: every cache block has one owner among the live nodes
//! (rendezvous hashing of (segment id, block index) over the node ids of
//! the cluster view), so that N nodes serving the same data fetch each
//! block from the object store about once. A node that misses a block it
//! does not own asks the owner over `GET /internal/v1/blocks/{segment}/
//! {block}?object_bytes=N` (served from the owner's cache or one GET of
//! the owner's); any failure of that request (dead owner, timeout, other
//! status, wrong length) falls back to the node's own object-store GET.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_metadata::membership::NodeInfo;
use sluice_segment::SegmentId;

use crate::metrics;
use sluice_metadata::membership::rendezvous_owner;
use sluice_metadata::view::ClusterView;

/// Settings of peer fetches.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerConfig {
    /// Whether a node asks the owner of a block before the object store.
    pub enabled: bool,
    /// Time limit of one peer request (connect included).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout: Duration::from_secs(2),
        }
    }
}

/// The node's client of its peers' block endpoints.
#[derive(Debug, Clone)]
pub struct Peers {
    view: Arc<ClusterView>,
    self_id: i32,
    client: reqwest::Client,
    timeout: Duration,
    /// The cluster's node credential, sent with every block request.
    node_secret: Arc<str>,
}

/// The header a node presents its credential in to another node.
pub const NODE_CREDENTIAL_HEADER: &str = "x-sluice-node-credential";

impl Peers {
    /// Peers of node `self_id`, as listed by `view`, verifying the HTTPS
    /// certificates of the others against the system's roots and the CA
    /// certificates of `trusted_ca` (PEM), if given.
    pub fn new(
        view: Arc<ClusterView>,
        self_id: i32,
        config: PeerConfig,
        node_secret: Arc<str>,
        trusted_ca: Option<&[u8]>,
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .timeout(config.timeout);
        let client = match trusted_ca {
            Some(pem) => {
                for certificate in reqwest::Certificate::from_pem_bundle(pem)? {
                    builder = builder.add_root_certificate(certificate);
                }
                builder.build()?
            }
            // only fails when the TLS backend or the resolver cannot be
            // initialised; a default client is the best left then
            None => builder.build().unwrap_or_default(),
        };
        Ok(Self {
            view,
            self_id,
            client,
            timeout: config.timeout,
            node_secret,
        })
    }

    /// The owner of the block, or `None` when it is this node (or no node
    /// is listed). Members without an HTTP address (a Lambda compactor)
    /// own no blocks.
    pub fn owner(&self, segment: SegmentId, block: u64) -> Option<NodeInfo> {
        let nodes: Vec<NodeInfo> = self
            .view
            .nodes()
            .into_iter()
            .filter(|n| !n.http_url.is_empty())
            .collect();
        let ids: Vec<i32> = nodes.iter().map(|n| n.node_id).collect();
        let owner = block_owner(&ids, segment, block)?;
        if owner == self.self_id {
            return None;
        }
        nodes.into_iter().find(|n| n.node_id == owner)
    }

    /// Whether this node owns the block.
    pub fn owns(&self, segment: SegmentId, block: u64) -> bool {
        self.owner(segment, block).is_none()
    }

    /// Ask `owner` for the block; `Some` only for exactly `expected_len`
    /// bytes answered with 200 within the timeout. Counts the result.
    pub async fn fetch(
        &self,
        owner: &NodeInfo,
        segment: SegmentId,
        block: u64,
        object_bytes: u64,
        expected_len: u64,
    ) -> Option<Bytes> {
        let url = format!(
            "{}/internal/v1/blocks/{segment}/{block}?object_bytes={object_bytes}",
            owner.http_url.trim_end_matches('/')
        );
        let attempt = async {
            let response = self
                .client
                .get(&url)
                .header(NODE_CREDENTIAL_HEADER, &*self.node_secret)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            if status.as_u16() != 200 {
                return Err(format!("answered {status}"));
            }
            let bytes = response.bytes().await.map_err(|e| e.to_string())?;
            if bytes.len() as u64 != expected_len {
                return Err(format!(
                    "answered {} bytes, not {expected_len}",
                    bytes.len()
                ));
            }
            Ok(bytes)
        };
        // the client's timeout covers the body too; this one is a backstop
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err("timed out".to_string()),
        };
        match result {
            Ok(bytes) => {
                metrics::PEER_FETCHES.with_label_values(&["hit"]).inc();
                Some(bytes)
            }
            Err(error) => {
                metrics::PEER_FETCHES.with_label_values(&["fallback"]).inc();
                tracing::debug!(%segment, block, owner = owner.node_id, error, "peer fetch failed; reading the object store");
                None
            }
        }
    }
}

/// The owner of block `block` of `segment` among `live_node_ids`:
/// rendezvous hashing, so a node joining or leaving moves only the blocks
/// it gains or owned.
pub fn block_owner(live_node_ids: &[i32], segment: SegmentId, block: u64) -> Option<i32> {
    rendezvous_owner(
        live_node_ids,
        &[&segment.0 .0.to_be_bytes(), &block.to_be_bytes()],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_spread_and_move_only_when_their_node_leaves() {
        let segment = SegmentId::generate();
        let all = [1, 2, 3];
        let mut counts = [0usize; 3];
        for block in 0..3000 {
            let owner = block_owner(&all, segment, block).unwrap_or_default();
            counts[(owner - 1) as usize] += 1;
            let without_3 = block_owner(&[1, 2], segment, block);
            if owner != 3 {
                assert_eq!(without_3, Some(owner), "block {block} moved");
            }
        }
        for count in counts {
            assert!((800..1200).contains(&count), "{counts:?}");
        }
        assert_eq!(block_owner(&[], segment, 0), None);
        assert_eq!(block_owner(&[7], segment, 9), Some(7));
    }
}
