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

/// Read a request body of at most [`REQUEST_BYTES_MAX`] bytes; larger is a 413.
pub(crate) async fn read_body(body: axum::body::Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, REQUEST_BYTES_MAX)
        .await
        .map_err(|error| {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::new(
                    413,
                    format!("request body exceeds {REQUEST_BYTES_MAX} bytes"),
                )
            } else {
                ApiError::bad_request(format!("could not read request body: {error}"))
            }
        })
}
