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
    /// HTTP read of a whole topic from offset 0 by N readers: throughput,
    /// object-store GETs and cache hit ratio.
    Read(ReadArgs),
}

/// Settings of the read benchmark.
#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// Base URLs of the nodes' HTTP APIs (readers are spread over them;
    /// metrics are summed over all of them). Repeat or comma-separate.
    #[arg(
        long,
        env = "SLUICE_URL",
        default_value = "http://127.0.0.1:8080",
        value_delimiter = ','
    )]
    url: Vec<String>,
    /// Topic to read (every partition, from offset 0 to its high watermark
    /// at the start).
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Concurrent readers, each reading the whole topic (like consumer
    /// groups).
    #[arg(long, default_value_t = 1)]
    readers: usize,
    /// Records per read request.
    #[arg(long, default_value_t = 2000)]
    max_records: usize,
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
    /// Stop once this many MB of values were acknowledged (0 = run for
    /// `--duration`): to fill a topic of a given size.
    #[arg(long, default_value_t = 0)]
    megabytes: u64,
}

/// Run a benchmark.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::HttpProduce(args) => http_produce(args).await,
        BenchCommand::Read(args) => read(args).await,
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
    let cluster = crate::client::cluster_id(&http, &args.url).await?;
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
    if args.megabytes == 0 {
        tokio::time::sleep(args.duration).await;
    } else {
        let target = args.megabytes * 1_000_000;
        while records.load(Ordering::Relaxed) * (args.record_bytes as u64) < target {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
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

/// Sum of every series of `name` (all label sets) in a scrape.
fn metric_sum(scrape: &std::collections::HashMap<String, f64>, name: &str) -> f64 {
    scrape
        .iter()
        .filter(|(series, _)| {
            series.as_str() == name
                || series
                    .strip_prefix(name)
                    .is_some_and(|r| r.starts_with('{'))
        })
        .map(|(_, value)| value)
        .sum()
}

async fn scrape_all(
    http: &reqwest::Client,
    urls: &[String],
) -> anyhow::Result<std::collections::HashMap<String, f64>> {
    let mut total = std::collections::HashMap::new();
    for url in urls {
        for (series, value) in scrape(http, url).await? {
            *total.entry(series).or_insert(0.0) += value;
        }
    }
    Ok(total)
}

/// Read `partition` of `topic` from 0 to `end`; returns (records, value bytes).
async fn read_partition(
    http: &reqwest::Client,
    url: &str,
    topic: &str,
    partition: i32,
    end: i64,
    max_records: usize,
) -> anyhow::Result<(u64, u64)> {
    let (mut offset, mut records, mut bytes) = (0i64, 0u64, 0u64);
    while offset < end {
        let response = http
            .get(format!(
                "{url}/v1/topics/{topic}/partitions/{partition}/records"
            ))
            .query(&[
                ("offset", offset.to_string()),
                ("max_records", max_records.to_string()),
                ("format", "binary".to_string()),
            ])
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        if status.as_u16() != 200 {
            bail!("read answered {status}: {}", String::from_utf8_lossy(&body));
        }
        let mut got = 0;
        for line in serde_json::Deserializer::from_slice(&body).into_iter::<Value>() {
            let line = line?;
            let at = line["offset"]
                .as_i64()
                .context("record without an offset")?;
            if at != offset {
                bail!("{topic}/{partition}: expected offset {offset}, got {at}");
            }
            if let Some(value) = line["value"].as_str() {
                bytes += BASE64.decode(value)?.len() as u64;
            }
            offset += 1;
            records += 1;
            got += 1;
        }
        if got == 0 {
            bail!("{topic}/{partition}: empty read at {offset} below {end}");
        }
    }
    Ok((records, bytes))
}

async fn read(args: ReadArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let first = args.url.first().context("no --url")?.clone();
    let cluster = crate::client::cluster_id(&http, &first).await?;
    let topic: Value = http
        .get(format!(
            "{first}/v3/clusters/{cluster}/topics/{}",
            args.topic
        ))
        .send()
        .await?
        .json()
        .await?;
    let partitions = topic["partitions_count"]
        .as_i64()
        .with_context(|| format!("no topic {:?}: {topic}", args.topic))?
        as i32;
    let mut ends = Vec::new();
    for partition in 0..partitions {
        let offsets: Value = http
            .get(format!(
                "{first}/v1/topics/{}/partitions/{partition}/offsets",
                args.topic
            ))
            .send()
            .await?
            .json()
            .await?;
        ends.push(
            offsets["high_watermark"]
                .as_i64()
                .context("no high watermark")?,
        );
    }
    let before = scrape_all(&http, &args.url).await?;
    let started = Instant::now();
    let mut readers = Vec::new();
    for reader in 0..args.readers.max(1) {
        let url = args.url[reader % args.url.len()].clone();
        let (http, topic, ends) = (http.clone(), args.topic.clone(), ends.clone());
        let max_records = args.max_records;
        readers.push(tokio::spawn(async move {
            // every partition of the topic at once, as a consumer would
            let parts = ends.iter().enumerate().map(|(partition, end)| {
                read_partition(&http, &url, &topic, partition as i32, *end, max_records)
            });
            let done = futures::future::try_join_all(parts).await?;
            Ok::<_, anyhow::Error>(done.into_iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)))
        }));
    }
    let (mut records, mut bytes) = (0u64, 0u64);
    for reader in readers {
        let (r, b) = reader.await??;
        records += r;
        bytes += b;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = scrape_all(&http, &args.url).await?;
    let delta = |name: &str| metric_sum(&after, name) - metric_sum(&before, name);
    let gets = delta("sluice_object_gets_total");
    let hits = delta("sluice_cache_hits_total");
    // every lookup is a memory hit or a memory miss
    let lookups = delta("sluice_cache_hits_total{tier=\"memory\"}")
        + delta("sluice_cache_misses_total{tier=\"memory\"}");
    let topic_gib = bytes as f64 / args.readers.max(1) as f64 / (1u64 << 30) as f64;
    println!(
        "read: {} readers over {} node(s), topic {:?} ({} partitions, {:.1} MiB of values per reader), {:.1} s",
        args.readers.max(1),
        args.url.len(),
        args.topic,
        partitions,
        bytes as f64 / args.readers.max(1) as f64 / (1 << 20) as f64,
        elapsed
    );
    println!(
        "  throughput: {:.1} MB/s (values, all readers), {:.0} records/s",
        bytes as f64 / elapsed / 1e6,
        records as f64 / elapsed
    );
    println!(
        "  object store: {:.0} GETs, {:.1} MB, {:.0} GETs per GiB of topic",
        gets,
        delta("sluice_object_get_bytes_total") / 1e6,
        if topic_gib > 0.0 {
            gets / topic_gib
        } else {
            0.0
        }
    );
    println!(
        "  cache: hit ratio {:.3} ({:.0} of {:.0} block lookups; {:.0} memory, {:.0} disk), peer fetches {:.0} hit / {:.0} fallback",
        if lookups > 0.0 { hits / lookups } else { 0.0 },
        hits,
        lookups,
        delta("sluice_cache_hits_total{tier=\"memory\"}"),
        delta("sluice_cache_hits_total{tier=\"disk\"}"),
        delta("sluice_peer_fetches_total{result=\"hit\"}"),
        delta("sluice_peer_fetches_total{result=\"fallback\"}")
    );
    Ok(())
}
