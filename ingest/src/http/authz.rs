//! Who an HTTP request acts as and what it may do. Every request of the
//! client router runs with an [`Access`] (see [`crate::access`]) whose
//! principal comes from its `Authorization` header:
//!
//! - `Basic` (RFC 7617): a user and password, checked against the user's
//!   stored SCRAM credential (the users of SASL), acting as `User:<name>`;
//! - `Bearer` (RFC 6750): a token made by `sluice token create`, acting as
//!   the principal it was made for;
//! - none: `User:ANONYMOUS`, which the ACLs may grant rights like any other.
//!
//! Credentials that do not check out are a 401. Each route names the
//! operation it needs on the resource its path names, checked here before
//! the handler runs: a refusal is a 401 asking for credentials when the
//! request had none, else a 403, each with a JSON reason. Listing
//! endpoints filter what they list by the same rules, and topic creation
//! checks CREATE in its handler (the name is in the body).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{header, Extensions, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sluice_auth::sasl::check_password;
use sluice_auth::token;
use sluice_auth::Principal;
use sluice_metadata::acls::{Operation, ResourceType, CLUSTER_RESOURCE};

use super::tls::Peer;
use super::{ApiError, HttpState};
use crate::access::{self, Access};
use crate::quota::{self, BusyClock, QuotaKind};

/// What a route needs: an operation on the resource named by one of its
/// path parameters (or on the cluster).
struct Need {
    operation: Operation,
    resource_type: ResourceType,
    /// The path parameter naming the resource; `None` for the cluster.
    param: Option<&'static str>,
}

const fn on(operation: Operation, resource_type: ResourceType, param: &'static str) -> Need {
    Need {
        operation,
        resource_type,
        param: Some(param),
    }
}

/// The rule of each route that names a resource in its path.
fn need(method: &Method, route: &str) -> Option<Need> {
    use Operation::*;
    use ResourceType::{Group, Topic};
    let topic = "topic";
    let group = "group";
    Some(match (method.as_str(), route) {
        ("GET", "/v3/clusters/{cluster_id}/topics/{topic}") => on(Describe, Topic, topic),
        ("DELETE", "/v3/clusters/{cluster_id}/topics/{topic}") => on(Delete, Topic, topic),
        ("GET", "/v3/clusters/{cluster_id}/topics/{topic}/configs") => {
            on(DescribeConfigs, Topic, topic)
        }
        (
            "POST",
            "/v3/clusters/{cluster_id}/topics/{topic}/records"
            | "/v3/clusters/{cluster_id}/topics/{topic}/records-batch"
            | "/v3/clusters/{cluster_id}/topics/{topic}/records:batch",
        ) => on(Write, Topic, topic),
        ("GET", "/v1/topics/{topic}/partitions/{partition}/records") => on(Read, Topic, topic),
        ("GET", "/v1/topics/{topic}/partitions/{partition}/offsets") => on(Describe, Topic, topic),
        ("GET", "/v1/topics/{topic}/archive") => on(Read, Topic, topic),
        ("GET", "/v3/clusters/{cluster_id}/consumer-groups") => Need {
            operation: Describe,
            resource_type: ResourceType::Cluster,
            param: None,
        },
        ("GET", "/v3/clusters/{cluster_id}/consumer-groups/{group}")
        | ("GET", "/v3/clusters/{cluster_id}/consumer-groups/{group}/lags") => {
            on(Describe, Group, group)
        }
        ("DELETE", "/v3/clusters/{cluster_id}/consumer-groups/{group}") => on(Delete, Group, group),
        ("POST", "/v3/clusters/{cluster_id}/consumer-groups/{group}/offsets:reset") => {
            on(Read, Group, group)
        }
        _ => return None,
    })
}

/// A refusal answered before the request's body was read: the connection
/// cannot carry another request (the unread body is in the way), so the
/// client is told it closes.
fn closing(refused: ApiError) -> Response {
    let mut response = refused.into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// The principal of a request's `Authorization` header.
async fn authenticate(state: &HttpState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Principal::anonymous());
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD
            .decode(credentials)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                ApiError::unauthorized("Basic credentials are not base64 user:password")
            })?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| ApiError::unauthorized("Basic credentials are not user:password"))?;
        match check_password(&state.catalog, user, password.as_bytes()).await {
            Ok(true) => Ok(Principal::user(user)),
            Ok(false) => {
                crate::metrics::AUTHENTICATION_FAILURES.inc();
                Err(ApiError::unauthorized("invalid user or password"))
            }
            Err(error) => Err(ApiError::new(
                503,
                format!("credentials could not be read: {error}"),
            )),
        }
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let record = state
            .catalog
            .token(&token::digest(credentials))
            .await
            .map_err(|error| ApiError::new(503, format!("tokens could not be read: {error}")))?;
        match record.and_then(|record| Principal::parse(&record.principal)) {
            Some(principal) => Ok(principal),
            None => {
                crate::metrics::AUTHENTICATION_FAILURES.inc();
                Err(ApiError::unauthorized("unknown or revoked token"))
            }
        }
    } else {
        Err(ApiError::unauthorized(format!(
            "authorization scheme {scheme:?} is not Basic or Bearer"
        )))
    }
}

/// Middleware: the request's access, its route's check, then the handler
/// with that access in scope.
pub(crate) async fn authorize(
    State(state): State<HttpState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let principal = match authenticate(&state, &parts.headers).await {
        Ok(principal) => principal,
        Err(refused) => return closing(refused),
    };
    let access = Arc::new(Access::new(
        state.authorizer.clone(),
        state.producer.view().acls(),
        principal,
        peer_host(&parts.extensions),
    ));
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string());
    let mut metered = None;
    if let Some((need, route)) = route.and_then(|route| Some((need(&parts.method, &route)?, route)))
    {
        metered = match (need.operation, need.resource_type) {
            (Operation::Write, ResourceType::Topic) => Some(QuotaKind::Produce),
            (Operation::Read, ResourceType::Topic) if route.ends_with("/records") => {
                Some(QuotaKind::Fetch)
            }
            _ => None,
        };
        let name = match need.param {
            None => Some(CLUSTER_RESOURCE.to_string()),
            Some(param) => RawPathParams::from_request_parts(&mut parts, &state)
                .await
                .ok()
                .and_then(|params| {
                    params
                        .iter()
                        .find(|(key, _)| *key == param)
                        .map(|(_, value)| value.to_string())
                }),
        };
        let Some(name) = name else {
            return ApiError::bad_request("the path names no resource").into_response();
        };
        let checked = access::scoped(access.clone(), async {
            access::check(need.operation, need.resource_type, &name)
        })
        .await;
        if let Err(denied) = checked {
            return closing(ApiError::from(denied));
        }
    }
    let user = access.principal().name.clone();
    let timed = state.quotas.limits_request_time();
    // over a quota: 429 until the client's rate is back within it
    for kind in metered
        .into_iter()
        .chain(timed.then_some(QuotaKind::Request))
    {
        let wait = state.quotas.throttle(kind, &user, "");
        if !wait.is_zero() {
            return over_quota(access.principal(), kind, wait);
        }
    }
    let request_bytes = content_length(&parts.headers);
    let handling = access::scoped(access, next.run(Request::from_parts(parts, body)));
    let response = if timed {
        let clock = Arc::new(BusyClock::default());
        let response = quota::timed(clock.clone(), handling).await;
        state.quotas.record_busy(&user, "", clock.take());
        response
    } else {
        handling.await
    };
    if let Some(kind) = metered {
        let bytes = match kind {
            QuotaKind::Fetch => content_length(response.headers()),
            _ => request_bytes,
        };
        state.quotas.record(kind, &user, "", bytes);
    }
    response
}

/// 429: `principal` is over its `kind` quota for `wait`.
fn over_quota(principal: &Principal, kind: QuotaKind, wait: Duration) -> Response {
    crate::metrics::QUOTA_THROTTLES
        .with_label_values(&[kind.key()])
        .inc();
    let mut response = closing(ApiError::new(
        429,
        format!(
            "{principal} is over its {} quota; retry in {} ms",
            kind.key(),
            wait.as_millis()
        ),
    ));
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(value) = header::HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The host ACLs match a request by: its peer's address, as Kafka's
/// listeners match theirs ("unknown" where the server was not told the
/// peer, and only `host=*` ACLs apply).
fn peer_host(extensions: &Extensions) -> String {
    extensions
        .get::<ConnectInfo<Peer>>()
        .map_or_else(|| "unknown".to_string(), |peer| peer.0 .0.ip().to_string())
}

/// A message's `Content-Length` (0 when absent: a streamed body is not
/// counted).
fn content_length(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
