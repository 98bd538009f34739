//! `sluice archive ls|query`: list a topic's published archive files, or
//! run SQL over them with DataFusion, reading the Parquet files straight
//! from the object store.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde_json::Value;
use sluice_segment::store::{open_store, StoreOptions};

use crate::client::{check, Target};

/// The URL the object store is registered under in DataFusion.
const STORE_URL: &str = "sluice://store/";

/// `sluice archive …`
#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// List a topic's published archive files.
    Ls {
        /// Topic name.
        topic: String,
        #[command(flatten)]
        target: Target,
    },
    /// Run SQL over a topic's archive; the table is `archive` (columns
    /// offset, timestamp, key, value, headers, partition).
    Query {
        /// Topic name.
        topic: String,
        /// The SQL, e.g. `SELECT partition, count(*) FROM archive GROUP BY 1`.
        sql: String,
        /// Object store holding the archive (as given to `sluice serve`).
        #[arg(long, env = "SLUICE_STORE")]
        store: String,
        /// S3 endpoint URL for S3-compatible servers.
        #[arg(long, env = "SLUICE_S3_ENDPOINT")]
        s3_endpoint: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

/// Run a `sluice archive …` command.
pub async fn run(command: ArchiveCommand) -> anyhow::Result<()> {
    match command {
        ArchiveCommand::Ls { topic, target } => {
            let listing = listing(&target, &topic).await?;
            println!(
                "{:>9}  {:>12}  {:>12}  {:>10}  {:>12}  path",
                "partition", "first", "last", "records", "bytes"
            );
            for file in listing["files"].as_array().into_iter().flatten() {
                let field = |name: &str| file[name].to_string();
                println!(
                    "{:>9}  {:>12}  {:>12}  {:>10}  {:>12}  {}",
                    field("partition"),
                    field("first_offset"),
                    field("last_offset"),
                    field("records"),
                    field("bytes"),
                    file["path"].as_str().unwrap_or_default()
                );
            }
            for partition in listing["partitions"].as_array().into_iter().flatten() {
                eprintln!(
                    "partition {}: archived up to {} of {} (log start {}, {} segment runs)",
                    partition["partition"],
                    partition["archived_end_offset"],
                    partition["high_watermark"],
                    partition["log_start_offset"],
                    partition["segment_runs"]
                );
            }
            Ok(())
        }
        ArchiveCommand::Query {
            topic,
            sql,
            store,
            s3_endpoint,
            target,
        } => {
            let listing = listing(&target, &topic).await?;
            let options = StoreOptions {
                s3_endpoint,
                ..StoreOptions::default()
            };
            query(&listing, &store, &options, &sql).await
        }
    }
}

async fn listing(target: &Target, topic: &str) -> anyhow::Result<Value> {
    let url = &target.url;
    let http = target.client()?;
    Ok(check(
        http.get(format!("{url}/v1/topics/{topic}/archive"))
            .send()
            .await?,
    )
    .await?
    .json()
    .await?)
}

async fn query(
    listing: &Value,
    store_url: &str,
    options: &StoreOptions,
    sql: &str,
) -> anyhow::Result<()> {
    // An S3 store is opened at the bucket and paths carry the prefix:
    // object_store's PrefixStore answers HEAD with the unstripped path, which
    // DataFusion's file listing then does not recognise.
    let parsed = url::Url::parse(store_url).context("parsing the store URL")?;
    let (store, prefix) = match parsed.scheme() {
        "s3" => {
            let bucket = format!("s3://{}", parsed.host_str().unwrap_or_default());
            let prefix = parsed.path().trim_matches('/');
            let prefix = if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            };
            (open_store(&bucket, options), prefix)
        }
        _ => (open_store(store_url, options), String::new()),
    };
    let store = store.context("opening the object store")?;
    let ctx = SessionContext::new();
    ctx.register_object_store(&url::Url::parse(STORE_URL)?, store);
    let files: Vec<&Value> = listing["files"].as_array().into_iter().flatten().collect();
    let total_bytes: u64 = files.iter().filter_map(|f| f["bytes"].as_u64()).sum();
    let schema = sluice_segment::archive::schema();
    if files.is_empty() {
        ctx.register_table(
            "archive",
            Arc::new(MemTable::try_new(schema, vec![vec![]])?),
        )?;
    } else {
        let urls = files
            .iter()
            .map(|f| {
                ListingTableUrl::parse(format!(
                    "{STORE_URL}{prefix}{}",
                    f["path"].as_str().unwrap_or_default()
                ))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(
                ListingOptions::new(Arc::new(ParquetFormat::default()))
                    .with_file_extension(".parquet"),
            )
            .with_schema(schema);
        ctx.register_table("archive", Arc::new(ListingTable::try_new(config)?))?;
    }
    let started = Instant::now();
    let rows = Arc::new(AtomicUsize::new(0));
    let progress = {
        let rows = rows.clone();
        let files = files.len();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprint!(
                    "\rscanning {files} files ({:.1} MB): {:.0} s, {} rows so far",
                    total_bytes as f64 / 1e6,
                    started.elapsed().as_secs_f64(),
                    rows.load(Ordering::Relaxed)
                );
            }
        })
    };
    let result = async {
        let mut stream = ctx.sql(sql).await?.execute_stream().await?;
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows.fetch_add(batch.num_rows(), Ordering::Relaxed);
            batches.push(batch);
        }
        Ok::<_, anyhow::Error>(batches)
    }
    .await;
    progress.abort();
    if started.elapsed() >= Duration::from_secs(1) {
        eprintln!();
    }
    let batches = result?;
    println!("{}", pretty_format_batches(&batches)?);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if std::io::stderr().is_terminal() || started.elapsed() >= Duration::from_secs(1) {
        eprintln!(
            "{rows} rows in {:.2} s ({} files, {:.1} MB)",
            started.elapsed().as_secs_f64(),
            files.len(),
            total_bytes as f64 / 1e6
        );
    }
    Ok(())
}
