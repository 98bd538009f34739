//! The produce mode: HTTP events in, the node's produce handlers, one
//! segment object and one commit per invocation.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use lambda_http::request::RequestContext;
use sluice_fetch::Reader;
use sluice_ingest::budget::ByteBudget;
use sluice_ingest::http::tls::Peer;
use sluice_ingest::http::{self, HttpState};
use sluice_ingest::produce::Producer;
use sluice_ingest::quota::Quotas;
use sluice_ingest::writer::Writer;
use sluice_node::Config;

use crate::parts::Parts;

/// Serve HTTP events until the runtime stops the function.
pub async fn serve(config: &Config, parts: Parts) -> Result<(), lambda_http::Error> {
    sluice_ingest::metrics::register();
    // one request at a time per instance: each call's records are sealed
    // into their own segment as soon as they are appended
    let (writer, _tasks) = Writer::start(
        config.writer.clone(),
        parts.objects.clone(),
        parts.view.clone(),
    );
    let producer = Arc::new(Producer::new(parts.view.clone(), writer).sealing_each_call());
    let state = HttpState {
        producer,
        reader: Reader::new(parts.objects.clone(), parts.view.clone()),
        catalog: parts.catalog.clone(),
        cluster_id: parts.cluster_id.clone(),
        ready: Arc::new(AtomicBool::new(true)),
        groups: None,
        authorizer: Arc::new(config.security.authorizer()),
        node_secret: parts.node_secret.clone(),
        quotas: Quotas::new(parts.view.clone()),
        // one request at a time: the largest body, and no reads
        requests: ByteBudget::new(http::REQUEST_BYTES_MAX),
        responses: ByteBudget::new(1),
    };
    tracing::info!(
        cluster_id = parts.cluster_id,
        "sluice-lambda serving produce"
    );
    let app = http::produce_router(state).layer(axum::middleware::map_request(with_peer));
    lambda_http::run(app).await
}

/// Host ACLs match the caller's address: Lambda gives it in the event's
/// request context (`sourceIp`), where a node reads its TCP peer.
async fn with_peer(mut request: Request) -> Request {
    let source = match request.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(context)) => context.http.source_ip.clone(),
        _ => None,
    };
    if let Some(ip) = source.and_then(|ip| ip.parse::<IpAddr>().ok()) {
        request
            .extensions_mut()
            .insert(ConnectInfo(Peer(SocketAddr::new(ip, 0))));
    }
    request
}
