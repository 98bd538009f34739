//! The connection loop: accept, read frames (bounded in count and bytes),
//! run their handlers concurrently, each taking effect in its turn (request
//! order, see [`super::order`]), write the responses in request order,
//! drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::dispatch::{handle_frame, Handling, Reply};
use sluice_auth::tls::{principal_of, ClientCerts, TlsServer};
use sluice_auth::Principal;

use super::framing::{read_budgeted_frame, ConnectionError};
use super::listener::SecurityProtocol;
use super::order::Turns;
use super::session::Session;
use super::KafkaContext;

/// How long a connection stays open after the answer that refused its
/// authentication (Kafka's `connection.failed.authentication.delay.ms`).
const FAILED_AUTHENTICATION_CLOSE_DELAY: Duration = Duration::from_millis(100);

/// How long a client has to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound Kafka listener: its socket, its security protocol, and the
/// node's TLS settings when the protocol uses TLS.
pub struct Listener {
    /// The bound socket.
    pub socket: TcpListener,
    /// The listener's security protocol.
    pub protocol: SecurityProtocol,
    /// TLS settings (required for SSL and SASL_SSL).
    pub tls: Option<Arc<TlsServer>>,
}

/// Accept connections on `listener` until `shutdown` turns true, then stop
/// accepting, let every connection finish the requests it has read (up to
/// `drain_timeout`) and return.
pub async fn serve(
    listener: Listener,
    context: Arc<KafkaContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let protocol = listener.protocol;
    loop {
        tokio::select! {
            accepted = listener.socket.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let context = context.clone();
                    let shutdown = shutdown.clone();
                    let tls = listener.tls.clone();
                    connections.spawn(async move {
                        debug!(%peer, %protocol, "kafka connection opened");
                        if let Err(error) = open_connection(stream, peer, protocol, tls, context, shutdown).await {
                            warn!(%peer, %protocol, %error, "kafka connection closed");
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

/// Secure a new connection as its listener says (TLS handshake, the
/// principal of a client certificate), then serve it.
async fn open_connection(
    stream: TcpStream,
    peer: SocketAddr,
    protocol: SecurityProtocol,
    tls: Option<Arc<TlsServer>>,
    context: Arc<KafkaContext>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    if !protocol.uses_tls() {
        let principal = (!protocol.uses_sasl()).then(Principal::anonymous);
        let session = Arc::new(Session::new(protocol, Some(peer), principal));
        let (read_half, write_half) = stream.into_split();
        return run_connection(read_half, write_half, context, session, shutdown).await;
    }
    let tls = tls.ok_or_else(|| {
        ConnectionError::BadRequest(format!("{protocol} listener without TLS settings"))
    })?;
    let client_certs = match protocol {
        SecurityProtocol::Ssl if tls.has_client_ca() => ClientCerts::Required,
        _ => ClientCerts::None,
    };
    let stream = tokio::time::timeout(
        TLS_HANDSHAKE_TIMEOUT,
        tls.acceptor(client_certs).accept(stream),
    )
    .await
    .map_err(|_| ConnectionError::Tls("handshake timed out".into()))?
    .map_err(|error| ConnectionError::Tls(error.to_string()))?;
    let principal = match protocol {
        SecurityProtocol::Ssl => Some(
            stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(principal_of)
                .unwrap_or_else(Principal::anonymous),
        ),
        _ => None,
    };
    let session = Arc::new(Session::new(protocol, Some(peer), principal));
    let (read_half, write_half) = tokio::io::split(stream);
    run_connection(read_half, write_half, context, session, shutdown).await
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serve one connection until the peer closes it, it misbehaves, or the
/// node shuts down (requests already read are answered first).
pub async fn serve_connection(
    stream: TcpStream,
    context: Arc<KafkaContext>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    let (read_half, write_half) = stream.into_split();
    let session = Arc::new(Session::plaintext());
    run_connection(read_half, write_half, context, session, shutdown).await
}

/// A request frame read, with the budget it holds and how long it has been
/// waiting to be handled.
struct QueuedFrame {
    frame: Bytes,
    permit: OwnedSemaphorePermit,
    /// Time spent waiting for request budget before its body was read.
    queued: Duration,
    /// When its body was read (it then waits for an in-flight slot).
    read_at: Instant,
}

async fn run_connection<R, W>(
    mut read_half: R,
    mut write_half: W,
    context: Arc<KafkaContext>,
    session: Arc<Session>,
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
    let (frames_tx, mut frames_rx) = mpsc::channel::<Result<QueuedFrame, ConnectionError>>(1);
    let reading_session = session.clone();
    let reader = tokio::spawn(async move {
        loop {
            // before authentication, frames are held to a small bound
            let max_bytes = || reading_session.frame_max_bytes(request_max_bytes);
            let frame = match read_budgeted_frame(&mut read_half, max_bytes, &budget).await {
                Ok(Some((frame, permit, waited))) => Ok(QueuedFrame {
                    frame,
                    permit,
                    queued: waited,
                    read_at: Instant::now(),
                }),
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
    let mut turns = Turns::default();
    let mut reading = true;
    let mut outcome = Ok(());
    loop {
        if !reading && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            frame = frames_rx.recv(), if reading && in_flight.len() < in_flight_max => match frame {
                Some(Ok(QueuedFrame { frame, permit, queued, read_at })) => {
                    // budget wait, then waiting for a free in-flight slot
                    crate::metrics::REQUEST_QUEUE_SECONDS
                        .observe((queued + read_at.elapsed()).as_secs_f64());
                    let context = context.clone();
                    let session = session.clone();
                    let turn = turns.take();
                    in_flight.push_back(Box::pin(async move {
                        let reply = handle_frame(context, session, frame, turn).await;
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
                Ok(Reply::Send(bytes)) => {
                    write_half.write_all(&bytes).await?;
                    // a refused authentication: answered, then closed a
                    // moment later, so that clients that stop reading at
                    // the close still read the answer
                    if session.closing() {
                        let _ = write_half.flush().await;
                        tokio::time::sleep(FAILED_AUTHENTICATION_CLOSE_DELAY).await;
                        break;
                    }
                    // over a quota: answered, then muted (KIP-219)
                    if let Some(wait) = session.take_mute() {
                        let _ = write_half.flush().await;
                        tokio::time::sleep(wait).await;
                    }
                }
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
    use bytes::{Buf, BufMut, BytesMut};
    use sluice_segment::{batch, NewRecord};
    use tokio::io::{AsyncReadExt, DuplexStream};

    use super::*;
    use crate::kafka::session::UNAUTHENTICATED_FRAME_MAX_BYTES;
    use crate::kafka::testing::TestNode;

    fn string(out: &mut BytesMut, s: &str) {
        out.put_i16(s.len() as i16);
        out.put_slice(s.as_bytes());
    }

    /// A size-prefixed request frame with a v1 header (the codec of this
    /// crate decodes requests, it does not encode them).
    fn frame(key: i16, version: i16, correlation_id: i32, body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        out.put_i32((10 + body.len()) as i32);
        out.put_i16(key);
        out.put_i16(version);
        out.put_i32(correlation_id);
        out.put_i16(-1); // null client id
        out.put_slice(body);
        out
    }

    /// Produce v3, acks=-1, one batch holding `value` to partition 0 of `topic`.
    fn produce(correlation_id: i32, topic: &str, value: &str) -> BytesMut {
        let records = batch::encode(&[NewRecord {
            key: None,
            value: Some(Bytes::from(value.to_string())),
            headers: Vec::new(),
            timestamp_ms: 1_700_000_000_000,
        }])
        .unwrap();
        let mut body = BytesMut::new();
        body.put_i16(-1); // no transactional id
        body.put_i16(-1); // acks
        body.put_i32(10_000); // timeout
        body.put_i32(1);
        string(&mut body, topic);
        body.put_i32(1);
        body.put_i32(0); // partition
        body.put_i32(records.len() as i32);
        body.put_slice(&records);
        frame(0, 3, correlation_id, &body)
    }

    /// Fetch v4 of partition 0 of `topic` from offset 0, waiting up to 10 s for a byte.
    fn long_fetch(correlation_id: i32, topic: &str) -> BytesMut {
        let mut body = BytesMut::new();
        body.put_i32(-1); // replica
        body.put_i32(10_000); // max wait
        body.put_i32(1); // min bytes
        body.put_i32(1 << 20); // max bytes
        body.put_i8(0); // isolation
        body.put_i32(1);
        string(&mut body, topic);
        body.put_i32(1);
        body.put_i32(0);
        body.put_i64(0);
        body.put_i32(1 << 20);
        frame(1, 4, correlation_id, &body)
    }

    async fn response(client: &mut DuplexStream) -> Bytes {
        let size = client.read_i32().await.unwrap();
        let mut body = vec![0u8; size as usize];
        client.read_exact(&mut body).await.unwrap();
        Bytes::from(body)
    }

    fn skip_string(body: &mut Bytes) {
        let len = body.get_i16();
        body.advance(len as usize);
    }

    /// (correlation id, error code, base offset) of a Produce v3 response of one partition.
    fn produce_answer(mut body: Bytes) -> (i32, i16, i64) {
        let correlation_id = body.get_i32();
        assert_eq!(body.get_i32(), 1, "topics");
        skip_string(&mut body);
        assert_eq!(body.get_i32(), 1, "partitions");
        let _index = body.get_i32();
        (correlation_id, body.get_i16(), body.get_i64())
    }

    /// (correlation id, error code, record values) of a Fetch v4 response of one partition.
    fn fetch_answer(mut body: Bytes) -> (i32, i16, Vec<String>) {
        let correlation_id = body.get_i32();
        let _throttle = body.get_i32();
        assert_eq!(body.get_i32(), 1, "topics");
        skip_string(&mut body);
        assert_eq!(body.get_i32(), 1, "partitions");
        let _index = body.get_i32();
        let error = body.get_i16();
        let _high_watermark = body.get_i64();
        let _last_stable = body.get_i64();
        let aborted = body.get_i32();
        assert!(aborted <= 0);
        let size = body.get_i32();
        let records = body.split_to(size.max(0) as usize);
        let values = batch::decode(records)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
            .collect();
        (correlation_id, error, values)
    }

    fn connect(node: &TestNode) -> (DuplexStream, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (read_half, write_half) = tokio::io::split(server);
        let context = node.context.clone();
        let (_stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(async move {
            let _keep = _stop;
            let session = Arc::new(Session::plaintext());
            let _ = run_connection(read_half, write_half, context, session, shutdown).await;
        });
        (client, task)
    }

    fn connect_as(node: &TestNode, session: Session) -> DuplexStream {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (read_half, write_half) = tokio::io::split(server);
        let context = node.context.clone();
        let (stop, shutdown) = watch::channel(false);
        tokio::spawn(async move {
            let _keep = stop;
            let _ =
                run_connection(read_half, write_half, context, Arc::new(session), shutdown).await;
        });
        client
    }

    fn bytes_field(out: &mut BytesMut, bytes: &[u8]) {
        out.put_i32(bytes.len() as i32);
        out.put_slice(bytes);
    }

    /// (error code, auth bytes) of a SaslAuthenticate v0 response.
    fn authenticate_answer(mut body: Bytes) -> (i16, Bytes) {
        let _correlation_id = body.get_i32();
        let error = body.get_i16();
        let message = body.get_i16();
        if message > 0 {
            body.advance(message as usize);
        }
        let len = body.get_i32();
        (error, body.split_to(len.max(0) as usize))
    }

    async fn closed(client: &mut DuplexStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(client.read(&mut byte).await, Ok(0) | Err(_))
    }

    #[tokio::test]
    async fn a_sasl_connection_authenticates_before_anything_else() {
        let node = TestNode::start().await;
        let credential =
            sluice_auth::scram::credential(sluice_auth::ScramMechanism::Sha256, b"pw", 4096);
        node.context
            .catalog
            .put_user_credential("alice", sluice_auth::ScramMechanism::Sha256, &credential)
            .await
            .unwrap();
        let sasl = || Session::new(SecurityProtocol::SaslPlaintext, None, None);
        let mut handshake = BytesMut::new();
        string(&mut handshake, "PLAIN");
        let handshake = frame(17, 1, 1, &handshake);
        let authenticate = |password: &str| {
            let mut body = BytesMut::new();
            bytes_field(&mut body, format!("\0alice\0{password}").as_bytes());
            frame(36, 0, 2, &body)
        };

        // Metadata before authenticating: closed, unanswered
        let mut client = connect_as(&node, sasl());
        client
            .write_all(&frame(3, 1, 9, &(-1i32).to_be_bytes()))
            .await
            .unwrap();
        assert!(closed(&mut client).await);

        // the right password, then Metadata is answered
        let mut client = connect_as(&node, sasl());
        client.write_all(&handshake).await.unwrap();
        let mut answer = response(&mut client).await;
        assert_eq!((answer.get_i32(), answer.get_i16()), (1, 0));
        client.write_all(&authenticate("pw")).await.unwrap();
        assert_eq!(authenticate_answer(response(&mut client).await).0, 0);
        client
            .write_all(&frame(3, 1, 9, &(-1i32).to_be_bytes()))
            .await
            .unwrap();
        assert_eq!(
            response(&mut client).await.get_i32(),
            9,
            "metadata answered"
        );
        // authenticated: a frame over the unauthenticated bound is read (the
        // bound is taken when the frame's size arrives; taken when the reader
        // began waiting, during the SASL exchange, it refused a librdkafka
        // producer's first 1 MB request in the quota e2e test)
        let big = "x".repeat(UNAUTHENTICATED_FRAME_MAX_BYTES + 1000);
        client.write_all(&produce(10, "big", &big)).await.unwrap();
        assert_eq!(produce_answer(response(&mut client).await), (10, 0, 0));

        // a wrong password: SASL_AUTHENTICATION_FAILED, then closed
        let mut client = connect_as(&node, sasl());
        client.write_all(&handshake).await.unwrap();
        response(&mut client).await;
        client.write_all(&authenticate("nope")).await.unwrap();
        assert_eq!(authenticate_answer(response(&mut client).await).0, 58);
        assert!(closed(&mut client).await);

        // an unknown mechanism: UNSUPPORTED_SASL_MECHANISM
        let mut client = connect_as(&node, sasl());
        let mut gssapi = BytesMut::new();
        string(&mut gssapi, "GSSAPI");
        client.write_all(&frame(17, 1, 4, &gssapi)).await.unwrap();
        let mut answer = response(&mut client).await;
        assert_eq!((answer.get_i32(), answer.get_i16()), (4, 33));
        assert_eq!(answer.get_i32(), 3, "the enabled mechanisms are listed");

        // a frame over the unauthenticated bound closes the connection
        let mut client = connect_as(&node, sasl());
        let mut big = BytesMut::new();
        bytes_field(&mut big, &vec![0u8; UNAUTHENTICATED_FRAME_MAX_BYTES]);
        client.write_all(&frame(36, 0, 5, &big)).await.unwrap();
        assert!(closed(&mut client).await);
    }

    #[tokio::test]
    async fn pipelined_produces_take_effect_in_arrival_order() {
        let node = TestNode::start().await;
        // the topic is auto-created by the first request
        let (mut client, _task) = connect(&node);
        // all written before any answer is read: up to in_flight_max run at once
        let mut frames = BytesMut::new();
        for i in 0..40 {
            frames.extend_from_slice(&produce(i, "orders", &format!("v{i}")));
        }
        client.write_all(&frames).await.unwrap();
        for i in 0..40 {
            let (correlation_id, error, base_offset) = produce_answer(response(&mut client).await);
            assert_eq!((correlation_id, error), (i, 0));
            assert_eq!(base_offset, i64::from(i), "request {i} stored out of order");
        }
        // and the log holds them in the order sent
        let mut fetch = long_fetch(99, "orders");
        fetch[4 + 10 + 4..4 + 10 + 8].copy_from_slice(&0i32.to_be_bytes()); // no wait
        client.write_all(&fetch).await.unwrap();
        let (_, error, values) = fetch_answer(response(&mut client).await);
        assert_eq!(error, 0);
        let sent: Vec<String> = (0..40).map(|i| format!("v{i}")).collect();
        assert_eq!(values, sent);
    }

    #[tokio::test]
    async fn a_waiting_fetch_does_not_hold_back_the_requests_behind_it() {
        let node = TestNode::start().await;
        node.topic("orders", 1).await;
        let (mut client, _task) = connect(&node);
        // the fetch waits for data only the produce behind it brings
        let mut frames = long_fetch(1, "orders");
        frames.extend_from_slice(&produce(2, "orders", "late"));
        client.write_all(&frames).await.unwrap();
        let (correlation_id, error, values) = fetch_answer(response(&mut client).await);
        assert_eq!((correlation_id, error), (1, 0));
        // had the fetch held the connection, it would have waited out its
        // max wait and answered nothing
        assert_eq!(values, vec!["late".to_string()]);
        // responses still come in request order
        assert_eq!(produce_answer(response(&mut client).await), (2, 0, 0));
    }
}
