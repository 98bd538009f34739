//! The `sluice` command: `serve` runs a node (`sluice-node`), `config show`
//! prints its effective settings; `topic`, `group`, `produce` and
//! `consume` talk to a running node over HTTP; `archive` lists and queries
//! a topic's Parquet archive; `bench` measures a node; `user`, `acl` and
//! `token` and `quota` manage the users, ACLs, HTTP tokens and quotas in
//! the metadata store.

mod acl;
mod archive;
mod bench;
mod client;
mod group;
mod init;
mod user;

/// See `sluice-alloc`: a malformed request must not abort the process.
#[global_allocator]
static ALLOCATOR: sluice_alloc::ReservingAllocator = sluice_alloc::ReservingAllocator;

use clap::{Parser, Subcommand};
use sluice_node::ServeArgs;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Kafka-compatible log service on object storage and etcd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (every role in one process unless --roles says otherwise).
    Serve(ServeArgs),
    /// Make an S3 bucket ready: create it (--create-bucket), add the
    /// lifecycle rule that aborts incomplete uploads, check conditional PUTs.
    Init(init::InitArgs),
    /// The effective configuration of `serve`.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Topic administration against a running node.
    Topic {
        #[command(subcommand)]
        command: client::TopicCommand,
    },
    /// Consumer groups: list, describe (with lag), delete, reset offsets.
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Produce stdin lines as records (one record per line).
    Produce(client::ProduceArgs),
    /// Print a partition's records, one value per line.
    Consume(client::ConsumeArgs),
    /// List or query (SQL, with DataFusion) a topic's Parquet archive.
    Archive {
        #[command(subcommand)]
        command: archive::ArchiveCommand,
    },
    /// SCRAM users in the metadata store (named by --etcd/--cluster or
    /// --data-dir, as for serve).
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// ACLs in the metadata store: add, list, remove (Kafka's model).
    Acl {
        #[command(subcommand)]
        command: acl::AclCommand,
    },
    /// Bearer tokens of the HTTP API: create, list, revoke.
    Token {
        #[command(subcommand)]
        command: acl::TokenCommand,
    },
    /// Client quotas in the metadata store: set, list, remove.
    Quota {
        #[command(subcommand)]
        command: acl::QuotaCommand,
    },
    /// Benchmarks against a running node.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the settings `serve` would run with, as TOML: defaults < the
    /// --config file < SLUICE_* variables < flags (takes serve's options).
    Show(ServeArgs),
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

fn main() -> anyhow::Result<()> {
    // before any thread allocates
    sluice_alloc::tune_malloc();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    // rustls' provider for the CLI's https:// clients (ring, as the node's)
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => sluice_node::run(args.config()?, shutdown_signal()).await?,
        Command::Init(args) => init::run(args).await?,
        Command::Config {
            command: ConfigCommand::Show(args),
        } => print!("{}", toml::to_string_pretty(&args.config()?)?),
        Command::Topic { command } => client::topic(command).await?,
        Command::Group { command } => group::run(command).await?,
        Command::Produce(args) => client::produce(args).await?,
        Command::Consume(args) => client::consume(args).await?,
        Command::Archive { command } => archive::run(command).await?,
        Command::Bench { command } => bench::run(command).await?,
        Command::User { command } => user::run(command).await?,
        Command::Acl { command } => acl::run(command).await?,
        Command::Token { command } => acl::run_token(command).await?,
        Command::Quota { command } => acl::run_quota(command).await?,
    }
    Ok(())
}
