//! The HTTP listener over TLS (`--http-tls`): an axum [`Listener`] that
//! accepts TCP connections and hands axum those whose TLS handshake
//! completed. Handshakes run concurrently (a slow client does not hold up
//! the others), each within a time limit, at most
//! [`HANDSHAKES_IN_FLIGHT_MAX`] at once; a failed one is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use sluice_auth::tls::{ClientCerts, TlsServer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tracing::debug;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once; more connections wait in the
/// kernel's accept queue.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;

type Handshake = Option<(TlsStream<TcpStream>, SocketAddr)>;

/// A TCP listener whose connections are TLS.
pub struct TlsListener {
    tcp: TcpListener,
    tls: Arc<TlsServer>,
    handshakes: JoinSet<Handshake>,
}

impl TlsListener {
    /// TLS with `tls`'s certificate on `tcp`.
    pub fn new(tcp: TcpListener, tls: Arc<TlsServer>) -> Self {
        Self {
            tcp,
            tls,
            handshakes: JoinSet::new(),
        }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept(), if self.handshakes.len() < HANDSHAKES_IN_FLIGHT_MAX => {
                    match accepted {
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
                            // the settings as of now: a SIGHUP reload applies
                            // to connections accepted after it
                            let acceptor = self.tls.acceptor(ClientCerts::None);
                            self.handshakes.spawn(async move {
                                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(stream)) => Some((stream, peer)),
                                    Ok(Err(error)) => {
                                        debug!(%peer, %error, "HTTP TLS handshake failed");
                                        None
                                    }
                                    Err(_) => None,
                                }
                            });
                        }
                        Err(error) => {
                            debug!(%error, "accepting an HTTP connection failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A connection's peer, as the HTTP handlers see it (axum's `ConnectInfo`):
/// ACLs match their host against its address.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}
