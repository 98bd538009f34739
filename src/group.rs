//! `sluice group …`: consumer groups as `kafka-consumer-groups` shows and
//! changes them, over a node's HTTP API. Delete and reset run on the
//! group's coordinator, which any node names.

use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{check, cluster_id, Target};

/// `sluice group …`
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List the cluster's consumer groups with their state.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// A group's state, members and, per partition, committed offset, log
    /// end and lag.
    Describe {
        /// Group id.
        group: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a group without members (its committed offsets go too).
    Delete {
        /// Group id.
        group: String,
        #[command(flatten)]
        target: Target,
    },
    /// Move an inactive group's committed offsets; shows the plan unless
    /// --execute is given.
    ResetOffsets(ResetArgs),
}

/// `sluice group reset-offsets`
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("to").required(true).multiple(false)))]
pub struct ResetArgs {
    /// Group id.
    pub group: String,
    /// Only this topic (default: every topic the group committed).
    #[arg(long)]
    pub topic: Option<String>,
    /// Only these partitions of --topic (comma separated).
    #[arg(long, value_delimiter = ',', requires = "topic")]
    pub partitions: Option<Vec<i32>>,
    /// To each partition's log start.
    #[arg(long, group = "to")]
    pub to_earliest: bool,
    /// To each partition's end.
    #[arg(long, group = "to")]
    pub to_latest: bool,
    /// To this offset (clamped to each partition's range).
    #[arg(long, group = "to")]
    pub to_offset: Option<i64>,
    /// To the first record at or after this time (RFC 3339, e.g.
    /// 2026-11-26T08:00:00Z).
    #[arg(long, group = "to")]
    pub to_datetime: Option<String>,
    /// Move the committed offsets by this many (negative: back).
    #[arg(long, group = "to", allow_negative_numbers = true)]
    pub shift_by: Option<i64>,
    /// Commit the new offsets (without it, only print them).
    #[arg(long)]
    pub execute: bool,
    #[command(flatten)]
    pub target: Target,
}

/// Print a table with columns sized to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl GroupCommand {
    fn target(&self) -> &Target {
        match self {
            GroupCommand::List { target }
            | GroupCommand::Describe { target, .. }
            | GroupCommand::Delete { target, .. } => target,
            GroupCommand::ResetOffsets(args) => &args.target,
        }
    }
}

/// Run a `sluice group …` command.
pub async fn run(command: GroupCommand) -> anyhow::Result<()> {
    let http = command.target().client()?;
    match command {
        GroupCommand::List { target } => {
            let id = cluster_id(&http, &target.url).await?;
            let list: Value = check(
                http.get(format!("{}/v3/clusters/{id}/consumer-groups", target.url))
                    .send()
                    .await?,
            )
            .await?
            .json()
            .await?;
            let rows: Vec<Vec<String>> = list["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| {
                    vec![
                        cell(&g["consumer_group_id"]),
                        cell(&g["state"]),
                        cell(&g["members"]),
                        cell(&g["coordinator"]["node_id"]),
                    ]
                })
                .collect();
            table(&["GROUP", "STATE", "MEMBERS", "COORDINATOR"], &rows);
        }
        GroupCommand::Describe { group, target } => {
            let id = cluster_id(&http, &target.url).await?;
            let base = format!("{}/v3/clusters/{id}/consumer-groups/{group}", target.url);
            let described: Value = check(http.get(&base).send().await?).await?.json().await?;
            println!(
                "group {group}: {} ({} members, assignor {}, coordinator {})",
                cell(&described["state"]),
                cell(&described["members"]),
                cell(&described["partition_assignor"]),
                cell(&described["coordinator"]["node_id"]),
            );
            let lags: Value = check(http.get(format!("{base}/lags")).send().await?)
                .await?
                .json()
                .await?;
            let rows: Vec<Vec<String>> = lags["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    [
                        "topic_name",
                        "partition_id",
                        "current_offset",
                        "log_end_offset",
                        "lag",
                        "consumer_id",
                        "host",
                        "client_id",
                    ]
                    .iter()
                    .map(|k| cell(&p[*k]))
                    .collect()
                })
                .collect();
            table(
                &[
                    "TOPIC",
                    "PARTITION",
                    "CURRENT-OFFSET",
                    "LOG-END-OFFSET",
                    "LAG",
                    "CONSUMER-ID",
                    "HOST",
                    "CLIENT-ID",
                ],
                &rows,
            );
        }
        GroupCommand::Delete { group, target } => {
            let (url, id) = coordinator(&http, &target, &group).await?;
            check(
                http.delete(format!("{url}/v3/clusters/{id}/consumer-groups/{group}"))
                    .send()
                    .await?,
            )
            .await?;
            println!("deleted group {group}");
        }
        GroupCommand::ResetOffsets(args) => {
            let (url, id) = coordinator(&http, &args.target, &args.group).await?;
            let mut body = match (
                args.to_earliest,
                args.to_latest,
                args.to_offset,
                &args.to_datetime,
                args.shift_by,
            ) {
                (true, ..) => json!({"to": "earliest"}),
                (_, true, ..) => json!({"to": "latest"}),
                (_, _, Some(offset), ..) => json!({"to": "offset", "offset": offset}),
                (_, _, _, Some(datetime), _) => json!({"to": "datetime", "datetime": datetime}),
                (.., Some(shift)) => json!({"to": "shift", "shift_by": shift}),
                _ => anyhow::bail!("say where to: --to-earliest, --to-latest, --to-offset, --to-datetime or --shift-by"),
            };
            body["topic"] = json!(args.topic);
            body["partitions"] = json!(args.partitions);
            body["execute"] = json!(args.execute);
            let answer: Value = check(
                http.post(format!(
                    "{url}/v3/clusters/{id}/consumer-groups/{}/offsets:reset",
                    args.group
                ))
                .json(&body)
                .send()
                .await?,
            )
            .await?
            .json()
            .await?;
            let rows: Vec<Vec<String>> = answer["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    ["topic_name", "partition_id", "current_offset", "new_offset"]
                        .iter()
                        .map(|k| cell(&p[*k]))
                        .collect()
                })
                .collect();
            table(
                &["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
                &rows,
            );
            if args.execute {
                println!("offsets of group {} reset", args.group);
            } else {
                println!("(dry run: add --execute to commit these offsets)");
            }
        }
    }
    Ok(())
}

/// The URL of the node coordinating `group` (the target node when none
/// does) and the cluster id.
async fn coordinator(
    http: &reqwest::Client,
    target: &Target,
    group: &str,
) -> anyhow::Result<(String, String)> {
    let id = cluster_id(http, &target.url).await?;
    let described: Value = check(
        http.get(format!(
            "{}/v3/clusters/{id}/consumer-groups/{group}",
            target.url
        ))
        .send()
        .await?,
    )
    .await
    .with_context(|| format!("looking up group {group}"))?
    .json()
    .await?;
    let url = described["coordinator"]["url"]
        .as_str()
        .map_or_else(|| target.url.clone(), str::to_string);
    Ok((url, id))
}
