//! The connection loop: accept, read frames (bounded in count and bytes),
//! run their handlers concurrently, write the responses in request order,
//! drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::dispatch::{handle_frame, Handling, Reply};
use super::framing::{read_budgeted_frame, ConnectionError};
use super::KafkaContext;

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
