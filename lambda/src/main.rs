//! `sluice-lambda`: sluice on AWS Lambda, one binary in two modes chosen by
//! `SLUICE_LAMBDA_MODE`.
//!
//! - `produce` (the default): the HTTP front door behind a Function URL or
//!   an API Gateway HTTP API. It serves the v3 produce endpoints (single,
//!   streaming, batch) with the node's own handlers, authentication and
//!   ACLs, through the node's writer: each invocation's records are sealed
//!   into one segment object and committed in one metadata transaction
//!   before the answer carries their offsets.
//! - `compactor`: on a schedule event, runs the controller's duties and
//!   compaction jobs for a bounded time, holding its claims on a lease of
//!   its own like a node, and returns once no job is left or the time is up.
//!
//! Settings come from the same `SLUICE_*` variables as `sluice serve`
//! (`SLUICE_ETCD` and `SLUICE_STORE_URL` are required: a function has no
//! disk to keep data on). The etcd client, the object store client, the
//! cluster view and the writer are opened on the cold start and kept across
//! warm invocations.

mod compactor;
mod parts;
mod produce;

/// See `sluice-alloc`: a malformed request must not abort the process.
#[global_allocator]
static ALLOCATOR: sluice_alloc::ReservingAllocator = sluice_alloc::ReservingAllocator;

use clap::Parser;
use sluice_node::ServeArgs;

#[derive(Debug, Parser)]
#[command(
    name = "sluice-lambda",
    version,
    about = "sluice on AWS Lambda: the HTTP produce front door (SLUICE_LAMBDA_MODE=produce) \
             or the scheduled compactor (SLUICE_LAMBDA_MODE=compactor); settings are the \
             SLUICE_* variables of `sluice serve`"
)]
struct Cli {
    /// What this function does.
    #[arg(long, env = "SLUICE_LAMBDA_MODE", default_value = "produce")]
    mode: Mode,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    /// Serve the v3 produce endpoints to HTTP events.
    Produce,
    /// Compact on schedule events.
    Compactor,
}

fn main() -> Result<(), lambda_http::Error> {
    // before any thread allocates
    sluice_alloc::tune_malloc();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<(), lambda_http::Error> {
    let cli = Cli::parse();
    // CloudWatch keeps what the function prints: one line per event,
    // without colours or timestamps of our own (Lambda adds them)
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .without_time()
        .init();
    let config = cli.serve.config()?;
    let parts = parts::open(&config).await?;
    match cli.mode {
        Mode::Produce => produce::serve(&config, parts).await,
        Mode::Compactor => compactor::serve(&config, parts).await,
    }
}
