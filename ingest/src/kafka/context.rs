//! What every Kafka handler reaches the node through: this node's identity,
//! the cluster view, the write and read paths, the group coordinator.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_fetch::Reader;
use sluice_metadata::model::{Catalog, Topic};
use sluice_metadata::view::ClusterView;
use tracing::info;

use sluice_auth::{Authorizer, Mechanism, Principal};

use crate::access::{self, Access};
use crate::budget::ByteBudget;

use super::listener::SecurityProtocol;
use super::session::Session;
use super::KafkaConfig;
use crate::error::{IngestError, IngestResult};
use crate::produce::Producer;

/// What the handlers share: this node, its write and read paths.
#[derive(Debug)]
pub struct KafkaContext {
    /// This node's broker id.
    pub node_id: i32,
    /// The cluster id shown in Metadata.
    pub cluster_id: String,
    /// Host announced to clients.
    pub advertised_host: String,
    /// Port announced to clients.
    pub advertised_port: i32,
    /// The cluster as this node sees it (topics, heads, index, nodes);
    /// topic administration goes through it so that it stays current.
    pub view: Arc<ClusterView>,
    /// Write path.
    pub producer: Arc<Producer>,
    /// Read path.
    pub reader: Reader,
    /// Topic administration (auto-creation).
    pub catalog: Catalog,
    /// Listener settings.
    pub config: KafkaConfig,
    /// Consumer group coordinator.
    pub groups: Arc<crate::group::GroupCoordinator>,
    /// Budget of request bytes in flight (see `KafkaConfig::in_flight_bytes_max`),
    /// shared with the HTTP front door's request bodies.
    pub request_budget: ByteBudget,
    /// Budget of Fetch response bytes being read (see `KafkaConfig::fetch_bytes_max`),
    /// shared with the HTTP front door's reads.
    pub fetch_budget: ByteBudget,
    /// Fetch sessions (KIP-227) of the clients fetching from this node.
    pub fetch_sessions: Arc<super::fetch_session::FetchSessions>,
    /// The listener this context serves: Metadata, FindCoordinator and
    /// DescribeCluster announce every broker's endpoint of this listener.
    pub listener: SecurityProtocol,
    /// SASL mechanisms offered (on SASL listeners).
    pub sasl_mechanisms: Vec<Mechanism>,
    /// The node's authorizer (everything allowed unless enforcing).
    pub authorizer: Arc<Authorizer>,
    /// The node's quota meters (shared with the HTTP listener).
    pub quotas: Arc<crate::quota::Quotas>,
}

/// Client host reported for group members (the listener does not pass
/// peer addresses to handlers).
pub const CLIENT_HOST: &str = "/unknown";

impl KafkaContext {
    /// A context for this node: `advertised` is the (host, port) announced
    /// to clients; the view and catalog are the producer's.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_id: i32,
        cluster_id: String,
        advertised: (String, i32),
        producer: Arc<Producer>,
        reader: Reader,
        config: KafkaConfig,
        groups: Arc<crate::group::GroupCoordinator>,
    ) -> Self {
        let view = producer.view().clone();
        let quotas = crate::quota::Quotas::new(view.clone());
        let catalog = view.catalog().clone();
        let (advertised_host, advertised_port) = advertised;
        Self {
            node_id,
            cluster_id,
            advertised_host,
            advertised_port,
            view,
            producer,
            reader,
            catalog,
            request_budget: ByteBudget::new(config.in_flight_bytes_max),
            fetch_budget: ByteBudget::new(config.fetch_bytes_max),
            sasl_mechanisms: config.mechanisms().unwrap_or_default(),
            config,
            groups,
            fetch_sessions: Default::default(),
            listener: SecurityProtocol::Plaintext,
            authorizer: Arc::new(Authorizer::allow_all()),
            quotas,
        }
    }

    /// This node with `quotas` as its meters (those the HTTP listener uses too).
    pub fn with_quotas(mut self, quotas: Arc<crate::quota::Quotas>) -> Self {
        self.quotas = quotas;
        self
    }

    /// Record `bytes` of `kind` for the request of `session` from
    /// `client_id`: the throttle to answer, the connection muted that long.
    pub fn throttle(
        &self,
        session: &Session,
        client_id: Option<&str>,
        kind: crate::quota::QuotaKind,
        bytes: u64,
    ) -> i32 {
        let principal = session.principal().unwrap_or_else(Principal::anonymous);
        let wait = self
            .quotas
            .record(kind, &principal.name, client_id.unwrap_or_default(), bytes);
        mute(session, wait)
    }

    /// Record `busy`, thread time a request of `session` from `client_id`
    /// took: the throttle (ms) it earns, the connection muted that long (0
    /// within its request-time quota or without one).
    pub fn record_busy(&self, session: &Session, client_id: Option<&str>, busy: Duration) -> i32 {
        let principal = session.principal().unwrap_or_else(Principal::anonymous);
        let wait = self
            .quotas
            .record_busy(&principal.name, client_id.unwrap_or_default(), busy);
        mute(session, wait)
    }

    /// This node with `authorizer` deciding what principals may do.
    pub fn with_authorizer(mut self, authorizer: Arc<Authorizer>) -> Self {
        self.authorizer = authorizer;
        self
    }

    /// What a request of `session` may do: its principal (anonymous
    /// until it authenticates), its host, the ACLs as of now.
    pub fn access(&self, session: &Session) -> Access {
        Access::new(
            self.authorizer.clone(),
            self.view.acls(),
            session.principal().unwrap_or_else(Principal::anonymous),
            session
                .peer
                .map_or_else(|| "unknown".to_string(), |peer| peer.ip().to_string()),
        )
    }

    /// The same node serving the `listener` listener, announced at
    /// `advertised`: everything but the listener is shared.
    pub fn for_listener(&self, listener: SecurityProtocol, advertised: (String, i32)) -> Self {
        Self {
            node_id: self.node_id,
            cluster_id: self.cluster_id.clone(),
            advertised_host: advertised.0,
            advertised_port: advertised.1,
            view: self.view.clone(),
            producer: self.producer.clone(),
            reader: self.reader.clone(),
            catalog: self.catalog.clone(),
            config: self.config.clone(),
            groups: self.groups.clone(),
            request_budget: self.request_budget.clone(),
            fetch_budget: self.fetch_budget.clone(),
            fetch_sessions: self.fetch_sessions.clone(),
            listener,
            sasl_mechanisms: self.sasl_mechanisms.clone(),
            authorizer: self.authorizer.clone(),
            quotas: self.quotas.clone(),
        }
    }

    /// This node as a broker.
    pub fn this_broker(&self) -> sluice_metadata::membership::NodeInfo {
        sluice_metadata::membership::NodeInfo {
            node_id: self.node_id,
            kafka_host: self.advertised_host.clone(),
            kafka_port: self.advertised_port,
            http_url: String::new(),
            roles: vec![sluice_metadata::membership::Role::Ingest],
            zone: None,
            listeners: Default::default(),
        }
    }

    /// Every live broker (a node registered in the metadata store with a
    /// client role) that has this context's listener, with that
    /// listener's endpoint as its Kafka host and port; this node always
    /// among them.
    pub fn brokers(&self) -> Vec<sluice_metadata::membership::NodeInfo> {
        let listener = self.listener.name();
        let mut nodes: Vec<_> = self
            .view
            .brokers()
            .into_iter()
            .filter_map(|mut node| {
                let endpoint = node.endpoint(listener)?;
                node.kafka_host = endpoint.host;
                node.kafka_port = endpoint.port;
                Some(node)
            })
            .collect();
        if !nodes.iter().any(|n| n.node_id == self.node_id) {
            nodes.push(self.this_broker());
            nodes.sort_by_key(|n| n.node_id);
        }
        nodes
    }

    /// A live broker by id.
    pub fn broker(&self, node_id: i32) -> Option<sluice_metadata::membership::NodeInfo> {
        self.brokers().into_iter().find(|n| n.node_id == node_id)
    }
}

impl KafkaContext {
    /// A topic by name, created with the default partition count when
    /// `create` is set and it does not exist. A name Kafka does not allow
    /// is INVALID_TOPIC_EXCEPTION, which clients treat as permanent.
    pub async fn topic(&self, name: &str, create: bool) -> IngestResult<Topic> {
        if let Some(topic) = self.view.topic(name) {
            return Ok(topic);
        }
        sluice_metadata::model::validate_topic_name(name)
            .map_err(|error| IngestError::InvalidTopic(error.to_string()))?;
        // auto-creation needs CREATE, on the cluster or on the topic; a
        // client that may not create is told so (as Kafka's Metadata
        // does), not left waiting for a topic that will never exist
        if create && !access::may_create_topic(name) {
            access::topic(sluice_metadata::acls::Operation::Create, name)?;
        }
        if !create {
            return Err(IngestError::UnknownTopic(name.to_string()));
        }
        let topic = match self
            .producer
            .view()
            .create_topic(name, self.config.default_partitions, BTreeMap::new())
            .await
        {
            Ok(topic) => {
                info!(
                    topic = name,
                    partitions = topic.record.partitions,
                    "auto-created topic"
                );
                topic
            }
            // created concurrently (another client or node): use that one
            Err(sluice_metadata::model::ModelError::TopicExists(_)) => self
                .producer
                .view()
                .load_topic(name)
                .await?
                .ok_or_else(|| IngestError::UnknownTopic(name.to_string()))?,
            Err(error) => return Err(error.into()),
        };
        Ok(topic)
    }
}

/// The address announced to clients for a listener bound to `bound`.
pub fn advertised(bound: SocketAddr, configured: Option<&str>) -> (String, i32) {
    if let Some(addr) = configured {
        if let Some((host, port)) = addr.rsplit_once(':') {
            if let Ok(port) = port.parse() {
                return (host.trim_matches(['[', ']']).to_string(), port);
            }
        }
        return (addr.to_string(), i32::from(bound.port()));
    }
    let host = if bound.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        bound.ip().to_string()
    };
    (host, i32::from(bound.port()))
}

/// Mute `session` for `wait` (KIP-219): the throttle (ms) to answer, 0
/// when there is nothing to wait.
fn mute(session: &Session, wait: Duration) -> i32 {
    if wait.is_zero() {
        return 0;
    }
    session.mute_for(wait);
    i32::try_from(wait.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn advertised_address_defaults_to_loopback_for_unspecified() {
        let bound: SocketAddr = "0.0.0.0:9092".parse().unwrap();
        assert_eq!(advertised(bound, None), ("127.0.0.1".to_string(), 9092));
        let bound: SocketAddr = "10.0.0.5:19092".parse().unwrap();
        assert_eq!(advertised(bound, None), ("10.0.0.5".to_string(), 19092));
        assert_eq!(
            advertised(bound, Some("kafka.example:9094")),
            ("kafka.example".to_string(), 9094)
        );
    }
}
