//! The compactor mode: each schedule event runs the controller's duties
//! and compaction jobs for a bounded time.
//!
//! An invocation joins the cluster as a member with the `compactor` role
//! only (Metadata lists client-serving nodes, so clients never see it; it
//! gives no HTTP address, so peers ask it for no block), stands for
//! controller and claims jobs on its own lease, and returns once no job is
//! planned or its time is up. Leaving revokes the lease: a claim of a job
//! cut short expires with it and the job is claimed again later.

use std::time::{Duration, Instant};

use lambda_http::lambda_runtime::{self, service_fn, LambdaEvent};
use serde_json::{json, Value};
use sluice_compactor::{metrics, Duties, NodeParts};
use sluice_fetch::Reader;
use sluice_metadata::membership::{Membership, NodeInfo, Role};
use sluice_node::Config;

use crate::parts::Parts;

/// What an invocation is given when neither the event nor
/// `SLUICE_LAMBDA_COMPACT_SECONDS` says.
const DEFAULT_SECONDS: u64 = 240;
/// Left of the function's own timeout for stopping and leaving: a fifth
/// of it, at most this.
const MARGIN_MAX: Duration = Duration::from_secs(10);

/// Serve schedule events until the runtime stops the function.
pub async fn serve(config: &Config, parts: Parts) -> Result<(), lambda_http::Error> {
    sluice_fetch::metrics::register();
    let default_seconds = std::env::var("SLUICE_LAMBDA_COMPACT_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(DEFAULT_SECONDS);
    let parts = &parts;
    tracing::info!(
        cluster_id = parts.cluster_id,
        "sluice-lambda serving compaction"
    );
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let asked = event
            .payload
            .get("seconds")
            .and_then(Value::as_u64)
            .unwrap_or(default_seconds);
        // the invocation's own deadline bounds it too (a local emulator
        // may send one already past: then only the asked time does)
        let left = event
            .context
            .deadline()
            .duration_since(std::time::SystemTime::now())
            .ok()
            .filter(|left| !left.is_zero())
            .map_or(Duration::MAX, |left| {
                left.saturating_sub((left / 5).min(MARGIN_MAX))
            });
        let bound = Duration::from_secs(asked).min(left);
        compact(config, parts, bound).await
    }))
    .await
}

/// A member id of the cluster's counter that no live member holds (nodes
/// given `--node-id` do not take theirs from the counter).
async fn member_id(parts: &Parts) -> Result<i32, lambda_http::Error> {
    const ATTEMPTS_MAX: usize = 64;
    let live: Vec<i32> = parts.view.nodes().iter().map(|n| n.node_id).collect();
    for _ in 0..ATTEMPTS_MAX {
        let id = parts.catalog.allocate_node_id().await?;
        if !live.contains(&id) {
            return Ok(id);
        }
    }
    Err(format!("no free member id in {ATTEMPTS_MAX} attempts").into())
}

/// One invocation: join, compact until idle or `bound`, leave.
async fn compact(
    config: &Config,
    parts: &Parts,
    bound: Duration,
) -> Result<Value, lambda_http::Error> {
    let started = Instant::now();
    let node_id = member_id(parts).await?;
    let membership = Membership::join(
        parts.catalog.clone(),
        NodeInfo {
            node_id,
            kafka_host: String::new(),
            kafka_port: 0,
            http_url: String::new(),
            roles: vec![Role::Compactor],
            zone: None,
            listeners: Default::default(),
        },
        config.metadata.membership(),
    )
    .await?;
    let written_before = metrics::ARCHIVE_BYTES_WRITTEN.get();
    let rolled_before = metrics::COMPACTED_BYTES.get();
    let handle = sluice_compactor::start(
        config.compactor.clone(),
        Duties {
            controller: true,
            worker: true,
        },
        NodeParts {
            catalog: parts.catalog.clone(),
            store: parts.objects.clone(),
            view: parts.view.clone(),
            reader: Reader::new(parts.objects.clone(), parts.view.clone()),
            node_id,
            lease: membership.lease_receiver(),
        },
    );
    // give the controller (this function, or a node) two plans' time, then
    // stop as soon as nothing is planned
    let settle = config.compactor.tick() * 2;
    let poll = config.compactor.job_poll.max(Duration::from_millis(200));
    let idle = loop {
        let elapsed = started.elapsed();
        if elapsed >= bound {
            break false;
        }
        if elapsed >= settle {
            match parts.catalog.compaction_jobs().await {
                Ok(jobs) if jobs.is_empty() => break true,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "listing compaction jobs failed"),
            }
        }
        tokio::time::sleep(poll.min(bound.saturating_sub(elapsed))).await;
    };
    handle.stop().await;
    membership.leave().await;
    let summary = json!({
        "node_id": node_id,
        "seconds": started.elapsed().as_secs_f64(),
        "bound_seconds": bound.as_secs_f64(),
        "finished": if idle { "no job left" } else { "time is up" },
        "segment_bytes_rolled": metrics::COMPACTED_BYTES.get() - rolled_before,
        "archive_bytes_written": metrics::ARCHIVE_BYTES_WRITTEN.get() - written_before,
    });
    tracing::info!(%summary, "compaction invocation done");
    Ok(summary)
}
