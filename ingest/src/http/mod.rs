//! The HTTP front door (axum): Confluent REST Proxy v3 compatible topic
//! administration and produce, an NDJSON read endpoint with long-poll,
//! health and Prometheus metrics, and the internal block endpoint that
//! other nodes of the cluster read cache blocks from. Every error is JSON:
//! `{"error_code": <http status>, "message": "..."}`.

mod archive;
mod authz;
mod groups;
mod internal;
mod read;
pub mod records;
pub mod tls;
mod topics;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde_json::json;
use sluice_fetch::Reader;
use sluice_metadata::model::Catalog;

use crate::budget::ByteBudget;
use crate::error::IngestError;
use crate::produce::Producer;

/// Largest request body accepted (a records stream or batch).
pub const REQUEST_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What the HTTP handlers share.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Produces records.
    pub producer: Arc<Producer>,
    /// Reads records.
    pub reader: Reader,
    /// Topic administration.
    pub catalog: Catalog,
    /// The cluster id (Kafka's and the v3 API's).
    pub cluster_id: String,
    /// Whether the node is ready to serve (false while shutting down).
    pub ready: Arc<AtomicBool>,
    /// Consumer groups (the operator's view and offset resets); `None`
    /// where no coordinator runs (the Lambda front door).
    pub groups: Option<Arc<crate::group::GroupCoordinator>>,
    /// Who may do what (everything unless enforcing).
    pub authorizer: Arc<sluice_auth::Authorizer>,
    /// The credential other nodes present on the internal endpoint.
    pub node_secret: Arc<str>,
    /// The node's quota meters (shared with the Kafka listener).
    pub quotas: Arc<crate::quota::Quotas>,
    /// Request bodies being read and handled take their bytes from here
    /// (a node's is the Kafka listener's `in_flight_bytes_max`).
    pub requests: ByteBudget,
    /// Read responses being built take their bytes from here (a node's is
    /// the Kafka listener's `fetch_bytes_max`).
    pub responses: ByteBudget,
}

/// An error answered as JSON with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Ask for credentials (`WWW-Authenticate`): a 401 of the client API.
    challenge: bool,
}

impl ApiError {
    /// An error with an explicit status.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            challenge: false,
        }
    }

    /// A 401 asking for Basic or Bearer credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            challenge: true,
            ..Self::new(401, message)
        }
    }

    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }

    /// The JSON body of this error.
    pub fn body(&self) -> serde_json::Value {
        json!({"error_code": self.status.as_u16(), "message": self.message})
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match &error {
            // refused to nobody in particular: credentials might help
            IngestError::Denied { principal, .. }
                if principal.as_str() == sluice_auth::principal::ANONYMOUS_USER =>
            {
                ApiError::unauthorized(error.to_string())
            }
            _ => ApiError::new(error.kind().http_status(), error.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let challenge = self.challenge;
        let mut response = (self.status, Json(self.body())).into_response();
        if challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(r#"Basic realm="sluice", Bearer realm="sluice""#),
            );
        }
        response
    }
}

/// The router of every HTTP endpoint.
pub fn router(state: HttpState) -> Router {
    let client_routes = front_door_routes(
        get(topics::list_topics).post(topics::create_topic),
        get(topics::get_topic).delete(topics::delete_topic),
    )
    .route(
        "/v3/clusters/{cluster_id}/topics/{topic}/configs",
        get(topics::list_topic_configs),
    )
    .route(
        "/v1/topics/{topic}/partitions/{partition}/records",
        get(read::read_records),
    )
    .route(
        "/v1/topics/{topic}/partitions/{partition}/offsets",
        get(read::offsets),
    )
    .route("/v1/topics/{topic}/archive", get(archive::list_archive))
    .route(
        "/v3/clusters/{cluster_id}/consumer-groups",
        get(groups::list_groups),
    )
    .route(
        "/v3/clusters/{cluster_id}/consumer-groups/{group}",
        get(groups::get_group).delete(groups::delete_group),
    )
    .route(
        "/v3/clusters/{cluster_id}/consumer-groups/{group}/lags",
        get(groups::group_lags),
    )
    .route(
        "/v3/clusters/{cluster_id}/consumer-groups/{group}/offsets:reset",
        post(groups::reset_offsets),
    );
    authorized(client_routes, &state)
        .merge(operations_routes())
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// The router of the Lambda front door: the v3 produce endpoints (single,
/// streaming and batch) and the cluster and topic reads a v3 client makes
/// first, behind the same authentication and ACLs as a node's. Everything
/// else answers 404 with the reason.
pub fn produce_router(state: HttpState) -> Router {
    let routes = front_door_routes(get(topics::list_topics), get(topics::get_topic));
    authorized(routes, &state)
        .fallback(not_served_by_lambda)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// What both front doors serve: the cluster reads, the topic collection
/// and one topic (`topics` and `topic`: a node adds create and delete) and
/// the three produce endpoints.
fn front_door_routes(
    topics: MethodRouter<HttpState>,
    topic: MethodRouter<HttpState>,
) -> Router<HttpState> {
    Router::new()
        .route("/v3/clusters", get(topics::list_clusters))
        .route("/v3/clusters/{cluster_id}", get(topics::get_cluster))
        .route("/v3/clusters/{cluster_id}/topics", topics)
        .route("/v3/clusters/{cluster_id}/topics/{topic}", topic)
        .route(
            "/v3/clusters/{cluster_id}/topics/{topic}/records",
            post(records::produce_records),
        )
        .route(
            "/v3/clusters/{cluster_id}/topics/{topic}/records-batch",
            post(records::produce_batch),
        )
        .route(
            "/v3/clusters/{cluster_id}/topics/{topic}/records:batch",
            post(records::produce_batch),
        )
}

/// Every client route: its principal's access, its ACL check.
fn authorized(routes: Router<HttpState>, state: &HttpState) -> Router<HttpState> {
    routes.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        authz::authorize,
    ))
}

async fn not_served_by_lambda() -> ApiError {
    ApiError::new(
        404,
        "the Lambda front door serves produce only: read, administer and use groups through a node",
    )
}

/// What every node serves, client roles or not: health, metrics and the
/// internal block endpoint.
fn operations_routes() -> Router<HttpState> {
    Router::new()
        .route(
            "/internal/v1/blocks/{segment}/{block}",
            get(internal::block),
        )
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
}

/// The router of a node without a client role: [`router`]'s client
/// endpoints answer 404 with the reason.
pub fn operations_router(state: HttpState) -> Router {
    operations_routes()
        .fallback(no_clients_here)
        .with_state(state)
}

async fn no_clients_here() -> ApiError {
    ApiError::new(
        404,
        "this node serves no clients (its roles have neither ingest nor fetch)",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(404, "no such endpoint")
}

async fn live() -> impl IntoResponse {
    Json(json!({"status": "live"}))
}

async fn ready(State(state): State<HttpState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        Json(json!({"status": "ready"})).into_response()
    } else {
        ApiError::new(503, "node is not ready").into_response()
    }
}

async fn metrics() -> Response {
    use prometheus::Encoder;
    let encoder = prometheus::TextEncoder::new();
    let mut out = Vec::new();
    if let Err(error) = encoder.encode(&prometheus::gather(), &mut out) {
        return ApiError::new(500, format!("metrics encoding failed: {error}")).into_response();
    }
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_string())],
        out,
    )
        .into_response()
}

/// Check the cluster id of a v3 path.
pub(crate) fn check_cluster(state: &HttpState, cluster_id: &str) -> Result<(), ApiError> {
    if cluster_id == state.cluster_id {
        Ok(())
    } else {
        Err(ApiError::new(
            404,
            format!("unknown cluster {cluster_id:?}"),
        ))
    }
}

/// The base URL of this node as the client addressed it, for `metadata.self` links.
pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// A request body, holding its bytes of the request budget until dropped
/// (the handler's end: parsing it is part of what it costs).
pub(crate) struct Body {
    bytes: axum::body::Bytes,
    _budget: tokio::sync::OwnedSemaphorePermit,
}

impl std::ops::Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Time a request body has to arrive once its budget is taken (a client
/// that stalls mid-body must not hold the budget for longer).
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Budget a body of unknown length (chunked) takes at first, and takes
/// more of in steps of as it arrives.
const UNKNOWN_LENGTH_STEP_BYTES: usize = 1024 * 1024;

/// Read a request body of at most [`REQUEST_BYTES_MAX`] bytes, or the whole
/// request budget if that is smaller (larger is a 413), taking its bytes of
/// the budget first: a declared length is taken whole before the body is
/// read, waiting while the budget is spent (the body waits unread:
/// back-pressure on the client's connection). A body of unknown length
/// (chunked) waits for its first step and takes the rest as it arrives
/// without waiting (a 503 to retry when the budget has no room: a body
/// holding budget never waits for more, so bodies cannot wait on each
/// other). A body that does not arrive within [`BODY_READ_TIMEOUT`] is a
/// 408.
pub(crate) async fn read_body(
    body: axum::body::Body,
    budget: &ByteBudget,
) -> Result<Body, ApiError> {
    use axum::body::HttpBody as _;
    let limit = REQUEST_BYTES_MAX.min(budget.bytes_max());
    let declared = body
        .size_hint()
        .exact()
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    if declared.is_some_and(|n| n > limit) {
        return Err(body_too_large(limit));
    }
    let first = declared.unwrap_or(UNKNOWN_LENGTH_STEP_BYTES.min(limit));
    let mut permit = budget
        .take(first)
        .await
        .ok_or_else(|| ApiError::new(503, "the node is shutting down"))?;
    let read = collect_body(body, &mut permit, budget, limit);
    let bytes = tokio::time::timeout(BODY_READ_TIMEOUT, read)
        .await
        .map_err(|_| {
            ApiError::new(
                408,
                format!(
                    "request body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            )
        })??;
    let unused = permit.num_permits().saturating_sub(bytes.len().max(1));
    drop(permit.split(unused));
    Ok(Body {
        bytes,
        _budget: permit,
    })
}

fn body_too_large(limit: usize) -> ApiError {
    ApiError::new(
        413,
        format!(
            "request body exceeds {limit} bytes (the smaller of {REQUEST_BYTES_MAX}, the largest \
             body, and the node's budget of request bytes in flight, kafka.in_flight_bytes_max)"
        ),
    )
}

/// The body's bytes, taking more budget in steps without waiting when
/// they outgrow what `permit` holds.
async fn collect_body(
    mut body: axum::body::Body,
    permit: &mut tokio::sync::OwnedSemaphorePermit,
    budget: &ByteBudget,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    use http_body_util::BodyExt as _;
    let mut out = bytes::BytesMut::with_capacity(permit.num_permits().min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            ApiError::bad_request(format!("could not read request body: {error}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let len = out.len() + data.len();
        if len > limit {
            return Err(body_too_large(limit));
        }
        if len > permit.num_permits() {
            let more = (len - permit.num_permits())
                .max(UNKNOWN_LENGTH_STEP_BYTES)
                .min(limit - permit.num_permits());
            let taken = budget.try_take(more).ok_or_else(|| {
                ApiError::new(
                    503,
                    "the node's budget of request bytes in flight is spent: retry, or send a \
                     Content-Length so that the body waits for room",
                )
            })?;
            permit.merge(taken);
        }
        out.extend_from_slice(&data);
    }
    Ok(out.freeze())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use axum::body::Bytes;

    use super::*;

    fn chunked(parts: &[&'static [u8]]) -> axum::body::Body {
        let parts: Vec<Result<Bytes, std::io::Error>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        axum::body::Body::from_stream(futures::stream::iter(parts))
    }

    #[tokio::test]
    async fn a_body_holds_its_bytes_of_the_budget_until_dropped() {
        let budget = ByteBudget::new(1000);
        let body = read_body(axum::body::Body::from(vec![7u8; 300]), &budget)
            .await
            .unwrap();
        assert_eq!(&body[..], &[7u8; 300][..]);
        assert_eq!(budget.held(), 300);
        drop(body);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_gives_back_what_it_did_not_use() {
        let budget = ByteBudget::new(1000);
        let body = read_body(chunked(&[b"abc", b"defg"]), &budget)
            .await
            .unwrap();
        assert_eq!(&body[..], b"abcdefg");
        assert_eq!(budget.held(), 7);
    }

    #[tokio::test]
    async fn a_body_larger_than_the_budget_is_a_413() {
        let budget = ByteBudget::new(10);
        let declared = read_body(axum::body::Body::from(vec![0u8; 11]), &budget)
            .await
            .err()
            .unwrap();
        assert_eq!(declared.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            declared.message.contains("in_flight_bytes_max"),
            "{}",
            declared.message
        );
        let streamed = read_body(chunked(&[b"123456", b"78901"]), &budget)
            .await
            .err()
            .unwrap();
        assert_eq!(streamed.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(budget.held(), 0, "a refused body holds nothing");
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_takes_more_without_waiting() {
        const MIB: usize = 1024 * 1024;
        static CHUNK: [u8; MIB] = [3u8; MIB];
        let budget = ByteBudget::new(4 * MIB);
        let other = budget.take(2 * MIB).await.unwrap();
        // two steps fit beside the other holder; the third has no room
        let refused = read_body(chunked(&[&CHUNK, &CHUNK, &CHUNK]), &budget)
            .await
            .err()
            .unwrap();
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            budget.held(),
            2 * MIB,
            "the refused body gave back its steps"
        );
        drop(other);
        let body = read_body(chunked(&[&CHUNK, &CHUNK, &CHUNK]), &budget)
            .await
            .unwrap();
        assert_eq!(body.len(), 3 * MIB);
        assert_eq!(budget.held(), 3 * MIB);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_a_408_and_gives_its_budget_back() {
        let budget = ByteBudget::new(1000);
        let stalled = axum::body::Body::from_stream(futures::stream::pending::<
            Result<Bytes, std::io::Error>,
        >());
        let error = read_body(stalled, &budget).await.err().unwrap();
        assert_eq!(error.status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn a_body_waits_while_the_budget_is_spent() {
        let budget = ByteBudget::new(1000);
        let first = read_body(axum::body::Body::from(vec![1u8; 800]), &budget)
            .await
            .unwrap();
        let second = read_body(axum::body::Body::from(vec![2u8; 300]), &budget);
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut second)
                .await
                .is_err(),
            "a body was read past the budget"
        );
        drop(first);
        let second = second.await.unwrap();
        assert_eq!(second.len(), 300);
        assert_eq!(budget.held(), 300);
    }
}
