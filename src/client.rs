//! Client subcommands: topic administration, produce and consume against a
//! running node's HTTP API.

use std::io::{BufRead, Write};

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};

/// Lines sent per produce request.
const PRODUCE_LINES_PER_REQUEST: usize = 500;

/// Where the node is, and who asks.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Base URL of a node's HTTP API (`https://…` with --http-tls nodes).
    #[arg(long, env = "SLUICE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// User to authenticate as (HTTP Basic; the password from --password-file).
    #[arg(long, env = "SLUICE_USER", requires = "password_file")]
    pub user: Option<String>,
    /// File whose first line is the user's password.
    #[arg(long, env = "SLUICE_PASSWORD_FILE", requires = "user")]
    pub password_file: Option<std::path::PathBuf>,
    /// File whose first line is a bearer token (`sluice token create`).
    #[arg(long, env = "SLUICE_TOKEN_FILE", conflicts_with = "user")]
    pub token_file: Option<std::path::PathBuf>,
    /// PEM CA to trust for an https:// node (besides the system's).
    #[arg(long, env = "SLUICE_CA")]
    pub ca: Option<std::path::PathBuf>,
}

/// The first line of the file at `path` (a password or a token), which
/// must not be empty.
pub(crate) fn first_line(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the {what} file {}", path.display()))?;
    let line = text.lines().next().unwrap_or_default().to_string();
    if line.is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    Ok(line)
}

impl Target {
    /// An HTTP client that authenticates as the flags say and trusts --ca.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        use base64::Engine;
        use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
        let mut headers = HeaderMap::new();
        let credentials = match (&self.user, &self.password_file, &self.token_file) {
            (Some(user), Some(file), _) => {
                let password = first_line(file, "password")?;
                let pair =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                Some(format!("Basic {pair}"))
            }
            (_, _, Some(file)) => Some(format!("Bearer {}", first_line(file, "token")?)),
            _ => None,
        };
        if let Some(credentials) = credentials {
            let mut value = HeaderValue::from_str(&credentials)
                .context("credentials that fit in an HTTP header")?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder().default_headers(headers);
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            for certificate in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} holds no PEM certificate", ca.display()))?
            {
                builder = builder.add_root_certificate(certificate);
            }
        }
        builder.build().context("building the HTTP client")
    }
}

/// `sluice topic …`
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Partition count.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Topic config `name=value` (repeatable).
        #[arg(long = "config", value_name = "NAME=VALUE")]
        configs: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List topic names.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Show a topic's partitions, configs and offsets.
    Describe {
        /// Topic name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a topic.
    Delete {
        /// Topic name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

/// `sluice produce`
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Topic name.
    pub topic: String,
    /// Partition (default: by key, else round-robin).
    #[arg(long)]
    pub partition: Option<i32>,
    /// Key given to every record.
    #[arg(long)]
    pub key: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

/// `sluice consume`
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Topic name.
    pub topic: String,
    /// Partition.
    #[arg(long, default_value_t = 0)]
    pub partition: i32,
    /// First offset.
    #[arg(long, default_value_t = 0)]
    pub offset: i64,
    /// Stop after this many records.
    #[arg(long)]
    pub max: Option<usize>,
    /// Keep waiting for new records at the end of the partition.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub target: Target,
}

/// Turn a non-2xx answer into an error carrying the node's message.
pub(crate) async fn check(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or(body);
    bail!("{status}: {message}")
}

/// The cluster id a node reports in `GET /v3/clusters`.
pub(crate) async fn cluster_id(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let clusters: Value = check(http.get(format!("{url}/v3/clusters")).send().await?)
        .await?
        .json()
        .await?;
    clusters["data"][0]["cluster_id"]
        .as_str()
        .map(str::to_string)
        .context("the node reported no cluster id")
}

impl TopicCommand {
    fn target(&self) -> &Target {
        match self {
            TopicCommand::Create { target, .. }
            | TopicCommand::List { target }
            | TopicCommand::Describe { target, .. }
            | TopicCommand::Delete { target, .. } => target,
        }
    }
}

/// Run a `sluice topic …` command.
pub async fn topic(command: TopicCommand) -> anyhow::Result<()> {
    let http = command.target().client()?;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            configs,
            target,
        } => {
            let id = cluster_id(&http, &target.url).await?;
            let mut list = Vec::new();
            for config in configs {
                let (k, v) = config
                    .split_once('=')
                    .with_context(|| format!("config {config:?} is not NAME=VALUE"))?;
                list.push(json!({"name": k, "value": v}));
            }
            let body = json!({"topic_name": name, "partitions_count": partitions, "configs": list});
            check(
                http.post(format!("{}/v3/clusters/{id}/topics", target.url))
                    .json(&body)
                    .send()
                    .await?,
            )
            .await?;
            println!("created topic {name} with {partitions} partitions");
        }
        TopicCommand::List { target } => {
            let id = cluster_id(&http, &target.url).await?;
            let list: Value = check(
                http.get(format!("{}/v3/clusters/{id}/topics", target.url))
                    .send()
                    .await?,
            )
            .await?
            .json()
            .await?;
            for topic in list["data"].as_array().into_iter().flatten() {
                println!("{}", topic["topic_name"].as_str().unwrap_or_default());
            }
        }
        TopicCommand::Describe { name, target } => {
            let id = cluster_id(&http, &target.url).await?;
            let base = format!("{}/v3/clusters/{id}/topics/{name}", target.url);
            let topic: Value = check(http.get(&base).send().await?).await?.json().await?;
            let partitions = topic["partitions_count"].as_i64().unwrap_or(0);
            println!("topic: {name}");
            println!("id: {}", topic["topic_id"].as_str().unwrap_or_default());
            println!("partitions: {partitions}");
            let configs: Value = check(http.get(format!("{base}/configs")).send().await?)
                .await?
                .json()
                .await?;
            for config in configs["data"].as_array().into_iter().flatten() {
                println!(
                    "config: {}={}",
                    config["name"].as_str().unwrap_or_default(),
                    config["value"].as_str().unwrap_or_default()
                );
            }
            // per partition: offsets, how far the Parquet archive reaches
            // and its size, and the segment runs not archived yet
            let archive: Value = check(
                http.get(format!("{}/v1/topics/{name}/archive", target.url))
                    .send()
                    .await?,
            )
            .await?
            .json()
            .await?;
            let files = archive["files"].as_array().cloned().unwrap_or_default();
            println!(
                "{:<9}  {:>16}  {:>14}  {:>11}  {:>13}  {:>12}",
                "PARTITION",
                "LOG-START-OFFSET",
                "HIGH-WATERMARK",
                "ARCHIVED-TO",
                "ARCHIVE-BYTES",
                "SEGMENT-RUNS"
            );
            for p in archive["partitions"].as_array().into_iter().flatten() {
                let partition = p["partition"].as_i64().unwrap_or(-1);
                let bytes: u64 = files
                    .iter()
                    .filter(|f| f["partition"].as_i64() == Some(partition))
                    .filter_map(|f| f["bytes"].as_u64())
                    .sum();
                println!(
                    "{:<9}  {:>16}  {:>14}  {:>11}  {:>13}  {:>12}",
                    partition,
                    p["log_start_offset"],
                    p["high_watermark"],
                    p["archived_end_offset"],
                    bytes,
                    p["segment_runs"]
                );
            }
        }
        TopicCommand::Delete { name, target } => {
            let id = cluster_id(&http, &target.url).await?;
            check(
                http.delete(format!("{}/v3/clusters/{id}/topics/{name}", target.url))
                    .send()
                    .await?,
            )
            .await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

async fn send_lines(
    http: &reqwest::Client,
    url: &str,
    args: &ProduceArgs,
    lines: &[String],
) -> anyhow::Result<usize> {
    let entries: Vec<Value> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let mut entry = json!({"id": i.to_string(), "value": {"type": "STRING", "data": line}});
            if let Some(key) = &args.key {
                entry["key"] = json!({"type": "STRING", "data": key});
            }
            if let Some(partition) = args.partition {
                entry["partition_id"] = json!(partition);
            }
            entry
        })
        .collect();
    let response: Value = check(
        http.post(url)
            .json(&json!({"entries": entries}))
            .send()
            .await?,
    )
    .await?
    .json()
    .await?;
    if let Some(failure) = response["failures"].as_array().and_then(|f| f.first()) {
        bail!("record {} failed: {}", failure["id"], failure["message"]);
    }
    Ok(lines.len())
}

/// Run `sluice produce`.
pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let http = args.target.client()?;
    let id = cluster_id(&http, &args.target.url).await?;
    let url = format!(
        "{}/v3/clusters/{id}/topics/{}/records-batch",
        args.target.url, args.topic
    );
    let stdin = std::io::stdin();
    let mut lines = Vec::with_capacity(PRODUCE_LINES_PER_REQUEST);
    let mut sent = 0;
    for line in stdin.lock().lines() {
        lines.push(line?);
        if lines.len() == PRODUCE_LINES_PER_REQUEST {
            sent += send_lines(&http, &url, &args, &lines).await?;
            lines.clear();
        }
    }
    if !lines.is_empty() {
        sent += send_lines(&http, &url, &args, &lines).await?;
    }
    eprintln!("produced {sent} records to {}", args.topic);
    Ok(())
}

/// Run `sluice consume`.
pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let http = args.target.client()?;
    let mut offset = args.offset;
    let mut printed = 0usize;
    let stdout = std::io::stdout();
    loop {
        let remaining = args.max.map_or(1000, |max| (max - printed).min(1000));
        if remaining == 0 {
            return Ok(());
        }
        let timeout_ms = if args.follow { 10_000 } else { 0 };
        let url = format!(
            "{}/v1/topics/{}/partitions/{}/records?offset={offset}&max_records={remaining}&timeout_ms={timeout_ms}&format=string",
            args.target.url, args.topic, args.partition
        );
        let response = check(http.get(&url).send().await?).await?;
        let high_watermark: i64 = response
            .headers()
            .get("x-sluice-high-watermark")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = response.text().await?;
        let mut out = stdout.lock();
        for line in body.lines() {
            let record: Value = serde_json::from_str(line)?;
            writeln!(out, "{}", record["value"].as_str().unwrap_or_default())?;
            offset = record["offset"].as_i64().unwrap_or(offset) + 1;
            printed += 1;
        }
        out.flush()?;
        if !args.follow && offset >= high_watermark {
            return Ok(());
        }
    }
}
