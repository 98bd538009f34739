//! Framing: size-prefixed frames in, request headers decoded and checked
//! against the served versions, responses encoded with their headers.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use super::{api_versions, dispatch, unsupported};
use crate::budget::ByteBudget;

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
    /// The TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// A request the connection may not make before it authenticates.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
}

/// Time a request frame has to arrive once its size is read and its
/// budget taken (as an HTTP body has, `http::BODY_READ_TIMEOUT`).
pub const FRAME_BODY_TIMEOUT: std::time::Duration = crate::http::BODY_READ_TIMEOUT;

/// Read a frame's 4-byte size prefix; `None` at a clean end of stream.
async fn read_frame_size<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: impl FnOnce() -> usize,
) -> Result<Option<usize>, ConnectionError> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    // the bound as of the frame's arrival (it grows once a SASL connection
    // authenticates, which happens while this read waits)
    let max_bytes = max_bytes();
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
    // read into the buffer's spare capacity: no zeroing first
    let mut frame = BytesMut::with_capacity(size);
    while frame.len() < size {
        let wanted = size - frame.len();
        if reader.read_buf(&mut (&mut frame).limit(wanted)).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(frame.freeze())
}

/// Read one size-prefixed frame; `None` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> Result<Option<Bytes>, ConnectionError> {
    match read_frame_size(reader, || max_bytes).await? {
        Some(size) => Ok(Some(read_frame_body(reader, size).await?)),
        None => Ok(None),
    }
}

/// Read one frame like [`read_frame`], first taking budget for its bytes
/// (the size prefix says how many) so that all connections together hold at
/// most the node's `in_flight_bytes_max` of unanswered requests. The frame
/// bound is asked for when the size prefix has arrived. Also returns how
/// long the frame waited for budget (part of its queue time).
pub(super) async fn read_budgeted_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: impl FnOnce() -> usize,
    budget: &ByteBudget,
) -> Result<Option<(Bytes, OwnedSemaphorePermit, std::time::Duration)>, ConnectionError> {
    let Some(size) = read_frame_size(reader, max_bytes).await? else {
        return Ok(None);
    };
    let waiting = std::time::Instant::now();
    let permit = budget
        .take(size)
        .await
        .ok_or_else(|| ConnectionError::BadRequest("node is shutting down".to_string()))?;
    let waited = waiting.elapsed();
    // a client stalling mid-frame must not hold the budget for longer
    let frame = tokio::time::timeout(FRAME_BODY_TIMEOUT, read_frame_body(reader, size))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "a request frame of {size} bytes did not arrive within {} s",
                    FRAME_BODY_TIMEOUT.as_secs()
                ),
            )
        })??;
    Ok(Some((frame, permit, waited)))
}

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
    if !dispatch::is_supported(api_key, version) {
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

pub(super) fn decode_body<T: Decodable>(framed: &mut Framed) -> Result<T, ConnectionError> {
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

    #[tokio::test(start_paused = true)]
    async fn a_frame_stalled_mid_body_times_out_and_gives_its_budget_back() {
        use tokio::io::AsyncWriteExt;
        let budget = ByteBudget::new(1000);
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(&100i32.to_be_bytes()).await.unwrap();
        client.write_all(&[0u8; 40]).await.unwrap(); // 60 bytes never come
        let error = read_budgeted_frame(&mut server, || 1000, &budget)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&error, ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut),
            "{error}"
        );
        assert_eq!(budget.held(), 0);
        drop(client);
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
}
