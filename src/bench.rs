//! `sluice bench`: load generators that print figures.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use clap::Subcommand;
use rand::RngCore;
use serde_json::{json, Value};

/// `sluice bench …`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// HTTP produce through `records-batch`: throughput and latency.
    HttpProduce(HttpProduceArgs),
}

/// Settings of the HTTP produce benchmark.
#[derive(Debug, clap::Args)]
pub struct HttpProduceArgs {
    /// Base URL of a node's HTTP API.
    #[arg(long, env = "SLUICE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Topic (created when missing).
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Partitions of a created topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Value bytes per record.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Records per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// How long to produce.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

/// Run a benchmark.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::HttpProduce(args) => http_produce(args).await,
    }
}

async fn scrape(
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<std::collections::HashMap<String, f64>> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn http_produce(args: HttpProduceArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let clusters: Value = http
        .get(format!("{}/v3/clusters", args.url))
        .send()
        .await?
        .json()
        .await?;
    let cluster = clusters["data"][0]["cluster_id"]
        .as_str()
        .context("no cluster id")?
        .to_string();
    let topics = format!("{}/v3/clusters/{cluster}/topics", args.url);
    let created = http
        .post(&topics)
        .json(&json!({"topic_name": args.topic, "partitions_count": args.partitions}))
        .send()
        .await?;
    if !(created.status().is_success() || created.status().as_u16() == 409) {
        bail!("creating the topic failed: {}", created.text().await?);
    }
    let url = format!("{topics}/{}/records-batch", args.topic);
    let before = scrape(&http, &args.url).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..args.clients {
        let (http, url, stop, records) = (http.clone(), url.clone(), stop.clone(), records.clone());
        let (batch, record_bytes) = (args.batch, args.record_bytes);
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut value = vec![0u8; record_bytes];
            let mut sequence = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let entries: Vec<Value> = (0..batch)
                    .map(|i| {
                        rand::rng().fill_bytes(&mut value);
                        sequence += 1;
                        json!({
                            "id": i.to_string(),
                            "key": {"type": "STRING", "data": format!("c{client}-{sequence}")},
                            "value": {"type": "BINARY", "data": BASE64.encode(&value)},
                        })
                    })
                    .collect();
                let body = serde_json::to_vec(&json!({"entries": entries}))?;
                let sent = Instant::now();
                let response = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let _ = response.bytes().await?;
                if status.as_u16() != 200 {
                    bail!("produce answered {status}");
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                records.fetch_add(batch as u64, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    tokio::time::sleep(args.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = scrape(&http, &args.url).await?;
    let delta = |name: &str| {
        after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
    };
    latencies.sort_by(f64::total_cmp);
    let total = records.load(Ordering::Relaxed) as f64;
    let flushes = delta("sluice_flushes_total").max(1.0);
    println!(
        "http-produce: {} clients, {} records/request, {} B values, {:.1} s",
        args.clients, args.batch, args.record_bytes, elapsed
    );
    println!(
        "  throughput: {:.0} records/s, {:.1} MB/s (values)",
        total / elapsed,
        total * args.record_bytes as f64 / elapsed / 1e6
    );
    println!(
        "  request latency (= produce latency of {} records): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} requests)",
        args.batch,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0.0),
        latencies.len()
    );
    println!(
        "  per flush: {:.2} PUTs, {:.2} commit txns ({:.0} flushes, {:.0} commit conflicts)",
        delta("sluice_object_puts_total") / flushes,
        delta("sluice_commit_txns_total") / flushes,
        flushes,
        delta("sluice_commit_conflicts_total")
    );
    Ok(())
}
