//! `sluice user`: SCRAM users in the metadata store, written directly (the
//! way to create the first user, before any node authenticates anyone).
//! The store is named by the same flags as `serve`: `--etcd` and
//! `--cluster`, or `--data-dir` for the embedded store (while no node has
//! it open). Passwords are read from a file, never from the command line,
//! and only their salted SCRAM credential is stored.

use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;
use sluice_auth::scram;
use sluice_metadata::model::Catalog;
use sluice_metadata::users::{ScramMechanism, ITERATIONS_MIN};

/// Where the metadata store is (the flags of `serve`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MetadataTarget {
    /// etcd endpoints, comma separated (default: the embedded store).
    #[arg(long, env = "SLUICE_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// Cluster name: the metadata key namespace.
    #[arg(long, env = "SLUICE_CLUSTER", default_value = "sluice")]
    cluster: String,
    /// Data directory of the embedded store.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    data_dir: PathBuf,
}

impl MetadataTarget {
    pub(crate) async fn catalog(&self) -> anyhow::Result<Catalog> {
        let store = sluice_node::open_metadata(&self.etcd, &self.data_dir).await?;
        Ok(Catalog::new(store, &self.cluster))
    }
}

fn mechanism(name: &str) -> Result<ScramMechanism, String> {
    ScramMechanism::parse(name)
        .ok_or_else(|| format!("{name:?} is not SCRAM-SHA-256 or SCRAM-SHA-512"))
}

/// `sluice user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user, or change its password, for one SCRAM mechanism
    /// (PLAIN logins are checked against it too).
    Add {
        /// User name.
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, default_value = "SCRAM-SHA-512", value_parser = mechanism)]
        mechanism: ScramMechanism,
        /// File whose first line is the password.
        #[arg(long)]
        password_file: PathBuf,
        /// PBKDF2 iterations (4096 to 16384).
        #[arg(long, default_value_t = ITERATIONS_MIN)]
        iterations: u32,
        #[command(flatten)]
        target: MetadataTarget,
    },
    /// List users: one line per user and mechanism.
    List {
        #[command(flatten)]
        target: MetadataTarget,
    },
    /// Remove a user's credential for one mechanism, or all of them.
    Remove {
        /// User name.
        name: String,
        /// Only this mechanism's credential.
        #[arg(long, value_parser = mechanism)]
        mechanism: Option<ScramMechanism>,
        #[command(flatten)]
        target: MetadataTarget,
    },
}

/// Run a `sluice user` command.
pub async fn run(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            mechanism,
            password_file,
            iterations,
            target,
        } => {
            let password = crate::client::first_line(&password_file, "password")?;
            let credential = scram::credential(mechanism, password.as_bytes(), iterations);
            target
                .catalog()
                .await?
                .put_user_credential(&name, mechanism, &credential)
                .await?;
            println!("{name} {mechanism} iterations={}", credential.iterations);
        }
        UserCommand::List { target } => {
            for (name, credentials) in target.catalog().await?.users().await? {
                for (mechanism, iterations) in credentials {
                    println!("{name} {mechanism} iterations={iterations}");
                }
            }
        }
        UserCommand::Remove {
            name,
            mechanism,
            target,
        } => {
            if !target
                .catalog()
                .await?
                .delete_user_credential(&name, mechanism)
                .await?
            {
                bail!("no such user credential: {name}");
            }
            println!("removed {name}");
        }
    }
    Ok(())
}
