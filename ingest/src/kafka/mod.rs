//! The Kafka wire-protocol listener: framing, request headers, dispatch to
//! one module per API, responses in request order.
//!
//! Transport lives here; the handlers ([`api_versions`], [`metadata`],
//! [`produce`], [`fetch`], [`list_offsets`]) take a decoded request and
//! return a response, and know nothing about sockets. Codecs come from the
//! `kafka-protocol` crate.
//!
//! A connection reads frames (4-byte big-endian size, then the request) on
//! its own task, runs at most `in_flight_max` requests at once and writes the
//! responses in request order. A frame over `request_max_bytes`, a header
//! that does not decode, or an API key the codec does not know closes that
//! connection. An API sluice does not serve, or a served API at a version
//! outside its advertised range, is answered with that API's response
//! carrying UNSUPPORTED_VERSION when the codec can encode the requested
//! version ([`unsupported`]), and closes the connection otherwise (the
//! response format is unknown); ApiVersions at an unsupported version is
//! answered with UNSUPPORTED_VERSION in its v0 format so the client can pick
//! another. The node keeps serving everyone else.

pub mod api_versions;
pub mod delete_groups;
pub mod describe_groups;
pub mod fetch;
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

// idempotent producers
pub mod init_producer_id;

// admin APIs and the answer to unserved requests
pub mod alter_configs;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod incremental_alter_configs;
pub mod topic_configs;
pub mod unsupported;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use sluice_fetch::Reader;
use sluice_metadata::model::{Catalog, Topic};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::error::{IngestError, IngestResult};
use crate::produce::Producer;

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
    /// Write path and topic resolution.
    pub producer: Arc<Producer>,
    /// Read path.
    pub reader: Reader,
    /// Topic administration (auto-creation).
    pub catalog: Catalog,
    /// Listener settings.
    pub config: KafkaConfig,
    /// Consumer group coordinator.
    pub groups: Arc<crate::group::GroupCoordinator>,
    /// Budget of request bytes in flight (see `KafkaConfig::in_flight_bytes_max`).
    pub request_budget: Arc<tokio::sync::Semaphore>,
}

/// Client host reported for group members (the listener does not pass
/// peer addresses to handlers).
pub const CLIENT_HOST: &str = "/unknown";

impl KafkaContext {
    /// This node as a broker.
    pub fn this_broker(&self) -> sluice_metadata::membership::NodeInfo {
        sluice_metadata::membership::NodeInfo {
            node_id: self.node_id,
            kafka_host: self.advertised_host.clone(),
            kafka_port: self.advertised_port,
            http_url: String::new(),
            roles: vec![sluice_metadata::membership::Role::Ingest],
            zone: None,
        }
    }

    /// Every live broker (a node registered in the metadata store with a
    /// client role), this node always among them.
    pub fn brokers(&self) -> Vec<sluice_metadata::membership::NodeInfo> {
        let mut nodes = self.producer.view().brokers();
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
    /// `create` is set and it does not exist.
    pub async fn topic(&self, name: &str, create: bool) -> IngestResult<Topic> {
        if let Some(topic) = self.producer.view().topic(name) {
            return Ok(topic);
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

/// Accept connections on `listener` until `shutdown` turns true, then stop
/// accepting, let every connection finish the requests it has read (up to
/// `drain_timeout`) and return.
pub async fn serve(
    listener: TcpListener,
    context: Arc<KafkaContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let context = context.clone();
                    let shutdown = shutdown.clone();
                    connections.spawn(async move {
                        debug!(%peer, "kafka connection opened");
                        if let Err(error) = serve_connection(stream, context, shutdown).await {
                            warn!(%peer, %error, "kafka connection closed");
                        }
                    });
                }
                Err(error) => {
                    warn!(%error, "accepting a kafka connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(context.config.drain_timeout, drain)
        .await
        .is_err()
    {
        warn!("kafka connections did not finish in time; closing them");
        connections.shutdown().await;
    }
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Reading or writing the socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A frame's size is negative or over the limit.
    #[error("request of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Declared size.
        size: i64,
        /// Limit.
        max: usize,
    },
    /// The request could not be understood well enough to answer it.
    #[error("{0}")]
    BadRequest(String),
}

/// Read a frame's 4-byte size prefix; `None` at a clean end of stream.
async fn read_frame_size<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> Result<Option<usize>, ConnectionError> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let size = i32::from_be_bytes(size);
    if size < 0 || size as usize > max_bytes {
        return Err(ConnectionError::FrameTooLarge {
            size: i64::from(size),
            max: max_bytes,
        });
    }
    Ok(Some(size as usize))
}

async fn read_frame_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: usize,
) -> Result<Bytes, ConnectionError> {
    let mut frame = BytesMut::zeroed(size);
    reader.read_exact(&mut frame).await?;
    Ok(frame.freeze())
}

/// Read one size-prefixed frame; `None` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> Result<Option<Bytes>, ConnectionError> {
    match read_frame_size(reader, max_bytes).await? {
        Some(size) => Ok(Some(read_frame_body(reader, size).await?)),
        None => Ok(None),
    }
}

/// Read one frame like [`read_frame`], first taking budget for its bytes
/// (the size prefix says how many) so that all connections together hold at
/// most the node's `in_flight_bytes_max` of unanswered requests.
async fn read_budgeted_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
    budget: &Arc<tokio::sync::Semaphore>,
) -> Result<Option<(Bytes, OwnedSemaphorePermit)>, ConnectionError> {
    let Some(size) = read_frame_size(reader, max_bytes).await? else {
        return Ok(None);
    };
    let permit = budget
        .clone()
        .acquire_many_owned((size as u32).max(1))
        .await
        .map_err(|_| ConnectionError::BadRequest("node is shutting down".to_string()))?;
    Ok(Some((read_frame_body(reader, size).await?, permit)))
}

/// What handling one request produced.
pub enum Reply {
    /// Send this response.
    Send(Bytes),
    /// Send nothing (a Produce with acks=0).
    Nothing,
}

type Handling = Pin<Box<dyn Future<Output = Result<Reply, ConnectionError>> + Send>>;

/// Encode `body` with its response header as one size-prefixed frame.
pub fn encode_response<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, ConnectionError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    let mut out = BytesMut::new();
    out.put_i32(0);
    header
        .encode(&mut out, header_version)
        .and_then(|()| body.encode(&mut out, version))
        .map_err(|e| ConnectionError::BadRequest(format!("encoding a response: {e}")))?;
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}

/// The parts of a request frame read before dispatch.
#[derive(Debug)]
pub struct Framed {
    /// API.
    pub api_key: ApiKey,
    /// Version asked for.
    pub version: i16,
    /// Decoded header.
    pub header: RequestHeader,
    /// The request body.
    pub body: Bytes,
}

/// What to do with a frame before running its handler.
#[derive(Debug)]
pub enum Parsed {
    /// Run the handler.
    Request(Framed),
    /// Answer at once (ApiVersions at an unsupported version).
    Answer(Bytes),
}

/// Decode a frame's header and check its API and version.
pub fn parse_frame(mut frame: Bytes) -> Result<Parsed, ConnectionError> {
    if frame.len() < 8 {
        return Err(ConnectionError::BadRequest(format!(
            "request of {} bytes is shorter than a header",
            frame.len()
        )));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key)
        .map_err(|_| ConnectionError::BadRequest(format!("unknown api key {raw_key}")))?;
    if !api_versions::is_supported(api_key, version) {
        if api_key == ApiKey::ApiVersions {
            let body = api_versions::unsupported_version();
            return Ok(Parsed::Answer(encode_response(
                api_key,
                0,
                correlation_id,
                &body,
            )?));
        }
        // an error response where the codec can encode one; else close
        if let Some(answer) = unsupported::answer(api_key, version, frame.clone()) {
            debug!(api = ?api_key, version, "answered an unserved request with UNSUPPORTED_VERSION");
            return Ok(Parsed::Answer(answer));
        }
        return Err(ConnectionError::BadRequest(format!(
            "unsupported version {version} of {api_key:?}"
        )));
    }
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| ConnectionError::BadRequest(format!("request header: {e}")))?;
    Ok(Parsed::Request(Framed {
        api_key,
        version,
        header,
        body: frame,
    }))
}

fn decode_body<T: Decodable>(framed: &mut Framed) -> Result<T, ConnectionError> {
    let body = T::decode(&mut framed.body, framed.version).map_err(|e| {
        ConnectionError::BadRequest(format!(
            "{:?} v{} request: {e}",
            framed.api_key, framed.version
        ))
    })?;
    if framed.body.has_remaining() {
        debug!(
            api = ?framed.api_key,
            trailing = framed.body.remaining(),
            "request has trailing bytes"
        );
    }
    Ok(body)
}

/// Handle one request frame: the response to send, if any.
pub async fn handle_frame(
    context: Arc<KafkaContext>,
    frame: Bytes,
) -> Result<Reply, ConnectionError> {
    let mut framed = match parse_frame(frame)? {
        Parsed::Answer(bytes) => return Ok(Reply::Send(bytes)),
        Parsed::Request(framed) => framed,
    };
    let key = framed.api_key;
    let version = framed.version;
    let correlation_id = framed.header.correlation_id;
    let encode = |body: &dyn ErasedBody| body.encode_frame(key, version, correlation_id);
    match key {
        ApiKey::ApiVersions => {
            let _request: ApiVersionsRequest = decode_body(&mut framed)?;
            encode(&api_versions::handle(version)).map(Reply::Send)
        }
        ApiKey::Metadata => {
            let request: MetadataRequest = decode_body(&mut framed)?;
            encode(&metadata::handle(&context, version, request).await).map(Reply::Send)
        }
        ApiKey::Produce => {
            let request: ProduceRequest = decode_body(&mut framed)?;
            match produce::handle(&context, request).await {
                Some(response) => encode(&response).map(Reply::Send),
                None => Ok(Reply::Nothing),
            }
        }
        ApiKey::InitProducerId => {
            let request: kafka_protocol::messages::InitProducerIdRequest =
                decode_body(&mut framed)?;
            encode(&init_producer_id::handle(&context, request).await).map(Reply::Send)
        }
        ApiKey::Fetch => {
            let request: FetchRequest = decode_body(&mut framed)?;
            encode(&fetch::handle(&context, request).await).map(Reply::Send)
        }
        ApiKey::ListOffsets => {
            let request: ListOffsetsRequest = decode_body(&mut framed)?;
            encode(&list_offsets::handle(&context, version, request).await).map(Reply::Send)
        }
        ApiKey::FindCoordinator => {
            let request: kafka_protocol::messages::FindCoordinatorRequest =
                decode_body(&mut framed)?;
            encode(&find_coordinator::handle(&context, version, request).await).map(Reply::Send)
        }
        ApiKey::JoinGroup => {
            let client_id = framed
                .header
                .client_id
                .as_deref()
                .unwrap_or_default()
                .to_string();
            let request: kafka_protocol::messages::JoinGroupRequest = decode_body(&mut framed)?;
            encode(&join_group::handle(&context, version, &client_id, request).await)
                .map(Reply::Send)
        }
        ApiKey::SyncGroup => {
            let request: kafka_protocol::messages::SyncGroupRequest = decode_body(&mut framed)?;
            encode(&sync_group::handle(&context, request).await).map(Reply::Send)
        }
        ApiKey::Heartbeat => {
            let request: kafka_protocol::messages::HeartbeatRequest = decode_body(&mut framed)?;
            encode(&heartbeat::handle(&context, request).await).map(Reply::Send)
        }
        ApiKey::LeaveGroup => {
            let request: kafka_protocol::messages::LeaveGroupRequest = decode_body(&mut framed)?;
            encode(&leave_group::handle(&context, version, request).await).map(Reply::Send)
        }
        ApiKey::OffsetCommit => {
            let request: kafka_protocol::messages::OffsetCommitRequest = decode_body(&mut framed)?;
            encode(&offset_commit::handle(&context, version, request).await).map(Reply::Send)
        }
        ApiKey::OffsetFetch => {
            let request: kafka_protocol::messages::OffsetFetchRequest = decode_body(&mut framed)?;
            encode(&offset_fetch::handle(&context, version, request).await).map(Reply::Send)
        }
        ApiKey::ListGroups => {
            let request: kafka_protocol::messages::ListGroupsRequest = decode_body(&mut framed)?;
            encode(&list_groups::handle(&context, request).await).map(Reply::Send)
        }
        ApiKey::DescribeGroups => {
            let request: kafka_protocol::messages::DescribeGroupsRequest =
                decode_body(&mut framed)?;
            encode(&describe_groups::handle(&context, request).await).map(Reply::Send)
        }
        ApiKey::DeleteGroups => {
            let request: kafka_protocol::messages::DeleteGroupsRequest = decode_body(&mut framed)?;
            encode(&delete_groups::handle(&context, request).await).map(Reply::Send)
        }
        ApiKey::OffsetDelete => {
            let request: kafka_protocol::messages::OffsetDeleteRequest = decode_body(&mut framed)?;
            encode(&offset_delete::handle(&context, request).await).map(Reply::Send)
        }
        ApiKey::CreateTopics => {
            let request: kafka_protocol::messages::CreateTopicsRequest = decode_body(&mut framed)?;
            encode(&create_topics::handle(&context, version, request).await).map(Reply::Send)
        }
        ApiKey::DeleteTopics => {
            let request: kafka_protocol::messages::DeleteTopicsRequest = decode_body(&mut framed)?;
            encode(&delete_topics::handle(&context, version, request).await).map(Reply::Send)
        }
        ApiKey::CreatePartitions => {
            let request: kafka_protocol::messages::CreatePartitionsRequest =
                decode_body(&mut framed)?;
            encode(&create_partitions::handle(&context, request).await).map(Reply::Send)
        }
        ApiKey::DescribeConfigs => {
            let request: kafka_protocol::messages::DescribeConfigsRequest =
                decode_body(&mut framed)?;
            encode(&describe_configs::handle(&context, version, request).await).map(Reply::Send)
        }
        ApiKey::AlterConfigs => {
            let request: kafka_protocol::messages::AlterConfigsRequest = decode_body(&mut framed)?;
            encode(&alter_configs::handle(&context, request).await).map(Reply::Send)
        }
        ApiKey::IncrementalAlterConfigs => {
            let request: kafka_protocol::messages::IncrementalAlterConfigsRequest =
                decode_body(&mut framed)?;
            encode(&incremental_alter_configs::handle(&context, request).await).map(Reply::Send)
        }
        ApiKey::DescribeCluster => {
            let request: kafka_protocol::messages::DescribeClusterRequest =
                decode_body(&mut framed)?;
            encode(&describe_cluster::handle(&context, request)).map(Reply::Send)
        }
        // is_supported admits only the APIs above; answer anything else
        // with UNSUPPORTED_VERSION where the response can be encoded
        other => unsupported::answer_body(other, version, correlation_id, framed.body.clone())
            .map(Reply::Send)
            .ok_or_else(|| ConnectionError::BadRequest(format!("{other:?} is not implemented"))),
    }
}

/// A response body whose type is erased so that one closure encodes all.
trait ErasedBody {
    fn encode_frame(
        &self,
        key: ApiKey,
        version: i16,
        correlation_id: i32,
    ) -> Result<Bytes, ConnectionError>;
}

impl<T: Encodable> ErasedBody for T {
    fn encode_frame(
        &self,
        key: ApiKey,
        version: i16,
        correlation_id: i32,
    ) -> Result<Bytes, ConnectionError> {
        encode_response(key, version, correlation_id, self)
    }
}

/// Serve one connection until the peer closes it, it misbehaves, or the
/// node shuts down (requests already read are answered first).
pub async fn serve_connection(
    stream: TcpStream,
    context: Arc<KafkaContext>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    let (read_half, write_half) = stream.into_split();
    run_connection(read_half, write_half, context, shutdown).await
}

async fn run_connection<R, W>(
    mut read_half: R,
    mut write_half: W,
    context: Arc<KafkaContext>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectionError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let in_flight_max = context.config.in_flight_max.max(1);
    let request_max_bytes = context
        .config
        .request_max_bytes
        .min(context.config.in_flight_bytes_max);
    let budget = context.request_budget.clone();
    // The reader task runs ahead by at most `in_flight_max` frames, and
    // holds budget for the bytes of every frame until it is answered.
    let (frames_tx, mut frames_rx) =
        mpsc::channel::<Result<(Bytes, OwnedSemaphorePermit), ConnectionError>>(1);
    let reader = tokio::spawn(async move {
        loop {
            let frame = match read_budgeted_frame(&mut read_half, request_max_bytes, &budget).await
            {
                Ok(Some(frame)) => Ok(frame),
                Ok(None) => return,
                Err(error) => Err(error),
            };
            let failed = frame.is_err();
            if frames_tx.send(frame).await.is_err() || failed {
                return;
            }
        }
    });
    let mut in_flight: FuturesOrdered<Handling> = FuturesOrdered::new();
    let mut reading = true;
    let mut outcome = Ok(());
    loop {
        if !reading && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            frame = frames_rx.recv(), if reading && in_flight.len() < in_flight_max => match frame {
                Some(Ok((frame, permit))) => {
                    let context = context.clone();
                    in_flight.push_back(Box::pin(async move {
                        let reply = handle_frame(context, frame).await;
                        drop(permit);
                        reply
                    }));
                }
                Some(Err(error)) => {
                    // answer what was read before the bad frame, then close
                    reading = false;
                    outcome = Err(error);
                }
                None => reading = false,
            },
            Some(reply) = in_flight.next(), if !in_flight.is_empty() => match reply {
                Ok(Reply::Send(bytes)) => write_half.write_all(&bytes).await?,
                Ok(Reply::Nothing) => {}
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            },
            _ = stopped(&mut shutdown), if reading => reading = false,
        }
    }
    reader.abort();
    let _ = write_half.flush().await;
    let _ = write_half.shutdown().await;
    outcome
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn frame(parts: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = parts.concat();
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    fn api_versions_v0(correlation_id: i32) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&18i16.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&correlation_id.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
        body
    }

    #[tokio::test]
    async fn read_frame_reads_size_prefixed_frames() {
        let bytes = frame(&[b"hello"]);
        let mut input = &bytes[..];
        let got = read_frame(&mut input, 100).await.unwrap().unwrap();
        assert_eq!(&got[..], b"hello");
        assert!(read_frame(&mut input, 100).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn read_frame_rejects_huge_and_negative_sizes() {
        let huge = i32::MAX.to_be_bytes();
        let mut input = &huge[..];
        assert!(matches!(
            read_frame(&mut input, 100 * 1024 * 1024).await,
            Err(ConnectionError::FrameTooLarge { .. })
        ));
        let negative = (-5i32).to_be_bytes();
        let mut input = &negative[..];
        assert!(matches!(
            read_frame(&mut input, 100).await,
            Err(ConnectionError::FrameTooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn read_frame_reports_truncated_frames() {
        let mut bytes = frame(&[b"hello world"]);
        bytes.truncate(8);
        let mut input = &bytes[..];
        assert!(matches!(
            read_frame(&mut input, 100).await,
            Err(ConnectionError::Io(_))
        ));
        // a partial size prefix is a clean end of stream
        let mut input = &[0u8, 0][..];
        assert!(read_frame(&mut input, 100).await.unwrap().is_none());
    }

    #[test]
    fn short_frames_and_unknown_keys_are_refused() {
        assert!(matches!(
            parse_frame(Bytes::from_static(&[0, 18, 0])),
            Err(ConnectionError::BadRequest(_))
        ));
        let mut unknown = api_versions_v0(7);
        unknown[0..2].copy_from_slice(&999i16.to_be_bytes());
        assert!(matches!(
            parse_frame(Bytes::from(unknown)),
            Err(ConnectionError::BadRequest(_))
        ));
    }

    #[test]
    fn truncated_header_is_refused() {
        // produce v9 uses a flexible header; cut it inside the client id
        let mut body = Vec::new();
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&9i16.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&40i16.to_be_bytes());
        body.extend_from_slice(b"abc");
        assert!(matches!(
            parse_frame(Bytes::from(body)),
            Err(ConnectionError::BadRequest(_))
        ));
    }

    #[test]
    fn api_versions_at_an_unsupported_version_gets_a_v0_error() {
        let mut request = api_versions_v0(42);
        request[2..4].copy_from_slice(&99i16.to_be_bytes());
        let Parsed::Answer(mut answer) = parse_frame(Bytes::from(request)).unwrap() else {
            panic!("expected an immediate answer");
        };
        let size = answer.get_i32();
        assert_eq!(size as usize, answer.len());
        assert_eq!(answer.get_i32(), 42, "correlation id");
        assert_eq!(answer.get_i16(), 35, "UNSUPPORTED_VERSION");
        // v0 body: array of (api key, min, max)
        let count = answer.get_i32();
        let keys: Vec<(i16, i16, i16)> = (0..count)
            .map(|_| (answer.get_i16(), answer.get_i16(), answer.get_i16()))
            .collect();
        assert!(!answer.has_remaining());
        assert!(keys.contains(&(ApiKey::ApiVersions as i16, 0, 4)));
    }

    #[test]
    fn unsupported_versions_of_other_apis_close_the_connection() {
        let mut request = api_versions_v0(1);
        request[0..2].copy_from_slice(&(ApiKey::Produce as i16).to_be_bytes());
        request[2..4].copy_from_slice(&0i16.to_be_bytes()); // produce v0: magic 0/1 only
        assert!(matches!(
            parse_frame(Bytes::from(request)),
            Err(ConnectionError::BadRequest(_))
        ));
    }

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
