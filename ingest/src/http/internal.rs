//! `GET /internal/v1/blocks/{segment}/{block}?object_bytes=N`: one block of
//! a segment object for another node of the cluster (peer-owned blocks,
//! see `sluice_fetch::peer`). Answered from this node's block cache or one
//! object-store GET of its own, never forwarded to another node. Only
//! nodes of the cluster may ask: a request without the cluster's node
//! credential (`x-sluice-node-credential`, from the metadata store) is a
//! 401.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use sluice_fetch::peer::NODE_CREDENTIAL_HEADER;
use sluice_fetch::FetchError;
use sluice_segment::SegmentId;
use subtle::ConstantTimeEq;

use super::{ApiError, HttpState};

/// Largest object length accepted (far above any segment).
const OBJECT_BYTES_MAX: u64 = 1 << 40;

pub(super) async fn block(
    State(state): State<HttpState>,
    Path((segment, block)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let presented = headers
        .get(NODE_CREDENTIAL_HEADER)
        .map(|value| value.as_bytes())
        .unwrap_or_default();
    if !bool::from(presented.ct_eq(state.node_secret.as_bytes())) {
        return Err(ApiError::new(
            401,
            "the internal endpoint answers only nodes of the cluster (no or wrong node credential)",
        ));
    }
    let segment = SegmentId::parse(&segment).ok_or_else(|| {
        ApiError::bad_request(format!(
            "segment must be a segment id (ULID), got {segment:?}"
        ))
    })?;
    let block: u64 = block.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "block must be a non-negative integer, got {block:?}"
        ))
    })?;
    let object_bytes: u64 = params
        .get("object_bytes")
        .ok_or_else(|| ApiError::bad_request("object_bytes is required"))?
        .parse()
        .ok()
        .filter(|n| (1..=OBJECT_BYTES_MAX).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "object_bytes must be an integer in 1..={OBJECT_BYTES_MAX}"
            ))
        })?;
    let cache = state
        .reader
        .cache()
        .ok_or_else(|| ApiError::new(503, "this node has no block cache"))?;
    if block >= object_bytes.div_ceil(cache.block_bytes()) {
        return Err(ApiError::bad_request(format!(
            "block {block} lies past the end of an object of {object_bytes} bytes"
        )));
    }
    let bytes = cache
        .serve_peer(segment, block, object_bytes)
        .await
        .map_err(|error| match error {
            FetchError::Corrupt { .. } => ApiError::new(404, error.to_string()),
            other => ApiError::new(503, other.to_string()),
        })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
