//! Who an HTTP request acts as and what it may do. Every request of the
//! client router runs with an [`Access`] (see [`crate::access`]): for now
//! the anonymous principal, `User:ANONYMOUS`, which the ACLs may grant
//! rights like any other. Each route names the operation it needs on the
//! resource its path names, checked here before the handler runs; a
//! refusal is a 403 with a JSON reason. Listing endpoints filter what they
//! list by the same rules, and topic creation checks CREATE in its
//! handler (the name is in the body).

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sluice_auth::Principal;
use sluice_metadata::acls::{Operation, ResourceType, CLUSTER_RESOURCE};

use super::{ApiError, HttpState};
use crate::access::{self, Access};

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

/// Middleware: the request's access, its route's check, then the handler
/// with that access in scope.
pub(crate) async fn authorize(
    State(state): State<HttpState>,
    request: Request,
    next: Next,
) -> Response {
    let access = Arc::new(Access::new(
        state.authorizer.clone(),
        state.producer.view().acls(),
        Principal::anonymous(),
        "unknown".to_string(),
    ));
    let (mut parts, body) = request.into_parts();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string());
    if let Some(need) = route.and_then(|route| need(&parts.method, &route)) {
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
            return ApiError::from(denied).into_response();
        }
    }
    access::scoped(access, next.run(Request::from_parts(parts, body))).await
}
