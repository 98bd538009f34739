//! `sluice init`: make a bucket ready for sluice, with the AWS SDK where
//! `object_store` does not reach.
//!
//! `object_store` reads and writes objects; it cannot create a bucket or
//! read and write its lifecycle configuration. This command does those with
//! `aws-sdk-s3`:
//! - the bucket exists (created with `--create-bucket`);
//! - a lifecycle rule aborts multipart uploads left incomplete under the
//!   store's prefix (a node killed mid-upload leaves its parts, which S3
//!   bills until they are aborted); other rules are kept;
//! - the store honours conditional PUTs (`If-None-Match: *`), which sluice
//!   relies on to never overwrite an object: a probe object is written
//!   twice (the second must be refused with 412) and deleted.
//!
//! With `--check` nothing is changed (but the probe object): a missing
//! bucket or rule is reported and the command exits non-zero.

use anyhow::{bail, Context};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
    CreateBucketConfiguration, ExpirationStatus, LifecycleRule, LifecycleRuleFilter,
};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// `sluice init`
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The store: s3://bucket/prefix (as `serve --store`).
    #[arg(long, env = "SLUICE_STORE")]
    store: String,
    /// Endpoint of an S3-compatible server (as `serve --s3-endpoint`).
    #[arg(long, env = "SLUICE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// Create the bucket when it does not exist.
    #[arg(long)]
    create_bucket: bool,
    /// Abort multipart uploads still incomplete this many days after they
    /// began (S3 counts in whole days).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=3650))]
    abort_incomplete_uploads_days: i32,
    /// Change nothing: report what is missing and exit non-zero if anything is.
    #[arg(long)]
    check: bool,
}

/// Where the store lives.
struct Location {
    bucket: String,
    /// The key prefix, without a trailing `/` (empty: the whole bucket).
    prefix: String,
}

fn location(store: &str) -> anyhow::Result<Location> {
    let rest = store
        .strip_prefix("s3://")
        .with_context(|| format!("--store {store:?}: `sluice init` prepares s3:// stores"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        bail!("--store {store:?} names no bucket");
    }
    Ok(Location {
        bucket: bucket.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
    })
}

async fn client(endpoint: Option<&str>) -> Client {
    // HTTPS by rustls on ring, the provider the rest of sluice uses
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await;
    let mut config = aws_sdk_s3::config::Builder::from(&shared);
    if shared.region().is_none() {
        config = config.region(aws_sdk_s3::config::Region::new("us-east-1"));
    }
    if let Some(endpoint) = endpoint {
        // S3-compatible servers address buckets by path
        config = config.endpoint_url(endpoint).force_path_style(true);
    }
    Client::from_conf(config.build())
}

/// Run `sluice init`; prints one line per check.
pub async fn run(args: InitArgs) -> anyhow::Result<()> {
    let at = location(&args.store)?;
    let s3 = client(args.s3_endpoint.as_deref()).await;
    let mut missing = Vec::new();

    if bucket_exists(&s3, &at.bucket).await? {
        println!("bucket {}: exists", at.bucket);
    } else if args.check || !args.create_bucket {
        println!("bucket {}: missing", at.bucket);
        bail!(
            "bucket {:?} does not exist: run `sluice init --create-bucket`",
            at.bucket
        );
    } else {
        create_bucket(&s3, &at.bucket).await?;
        println!("bucket {}: created", at.bucket);
    }

    let days = args.abort_incomplete_uploads_days;
    let rules = lifecycle_rules(&s3, &at.bucket).await?;
    match rules
        .iter()
        .find(|rule| aborts_uploads_under(rule, &at.prefix, days))
    {
        Some(rule) => println!(
            "lifecycle: rule {:?} aborts incomplete uploads under {:?}",
            rule.id().unwrap_or(""),
            display_prefix(&at.prefix)
        ),
        None if args.check => {
            println!(
                "lifecycle: no rule aborts incomplete uploads under {:?} within {days} days",
                display_prefix(&at.prefix)
            );
            missing.push("the lifecycle rule for incomplete uploads");
        }
        None => {
            let id = add_abort_rule(&s3, &at, rules, days).await?;
            println!(
                "lifecycle: rule {id:?} added: incomplete uploads under {:?} aborted after {days} days",
                display_prefix(&at.prefix)
            );
        }
    }

    probe_conditional_put(&s3, &at).await?;
    println!("conditional PUT (If-None-Match): honoured");

    if !missing.is_empty() {
        bail!(
            "missing: {} (run `sluice init` without --check)",
            missing.join(", ")
        );
    }
    Ok(())
}

fn display_prefix(prefix: &str) -> String {
    if prefix.is_empty() {
        "(the whole bucket)".to_string()
    } else {
        format!("{prefix}/")
    }
}

async fn bucket_exists(s3: &Client, bucket: &str) -> anyhow::Result<bool> {
    match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(true),
        Err(error) => {
            let status = error.raw_response().map(|r| r.status().as_u16());
            if status == Some(404) {
                Ok(false)
            } else {
                Err(anyhow::Error::new(error).context(format!("HeadBucket {bucket}")))
            }
        }
    }
}

async fn create_bucket(s3: &Client, bucket: &str) -> anyhow::Result<()> {
    let mut request = s3.create_bucket().bucket(bucket);
    // us-east-1 takes no location constraint; every other region needs one
    let region = s3.config().region().map(|r| r.as_ref().to_string());
    if let Some(region) = region.filter(|r| r != "us-east-1") {
        request = request.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region.as_str()))
                .build(),
        );
    }
    request
        .send()
        .await
        .with_context(|| format!("CreateBucket {bucket}"))?;
    Ok(())
}

async fn lifecycle_rules(s3: &Client, bucket: &str) -> anyhow::Result<Vec<LifecycleRule>> {
    match s3
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(output) => Ok(output.rules().to_vec()),
        Err(error) if error.code() == Some("NoSuchLifecycleConfiguration") => Ok(Vec::new()),
        Err(error) => {
            Err(anyhow::Error::new(error)
                .context(format!("GetBucketLifecycleConfiguration {bucket}")))
        }
    }
}

/// Whether `rule` aborts incomplete uploads of every key under `prefix`
/// within `days`: enabled, with no filter or a prefix filter covering it.
fn aborts_uploads_under(rule: &LifecycleRule, prefix: &str, days: i32) -> bool {
    let enabled = rule.status() == &ExpirationStatus::Enabled;
    let soon_enough = rule
        .abort_incomplete_multipart_upload()
        .and_then(|abort| abort.days_after_initiation())
        .is_some_and(|d| d <= days);
    #[allow(deprecated)] // the rule-level prefix of older configurations
    let rule_prefix = rule.prefix();
    let covers = match rule.filter() {
        None => rule_prefix.is_none_or(|p| format!("{prefix}/").starts_with(p)),
        Some(filter) => match (filter.prefix(), filter.tag(), filter.and()) {
            (Some(p), None, None) => format!("{prefix}/").starts_with(p),
            (None, None, None) => true,
            _ => false, // tags or size conditions: not every upload
        },
    };
    enabled && soon_enough && covers
}

async fn add_abort_rule(
    s3: &Client,
    at: &Location,
    mut rules: Vec<LifecycleRule>,
    days: i32,
) -> anyhow::Result<String> {
    let id = if at.prefix.is_empty() {
        "sluice-abort-incomplete-uploads".to_string()
    } else {
        format!(
            "sluice-abort-incomplete-uploads-{}",
            at.prefix.replace('/', "-")
        )
    };
    // an older rule of ours (other days) is replaced, every other rule kept
    rules.retain(|rule| rule.id() != Some(id.as_str()));
    let filter_prefix = if at.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", at.prefix)
    };
    rules.push(
        LifecycleRule::builder()
            .id(&id)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix(filter_prefix).build())
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(days)
                    .build(),
            )
            .build()
            .context("building the lifecycle rule")?,
    );
    let configuration = BucketLifecycleConfiguration::builder()
        .set_rules(Some(rules))
        .build()
        .context("building the lifecycle configuration")?;
    s3.put_bucket_lifecycle_configuration()
        .bucket(&at.bucket)
        .lifecycle_configuration(configuration)
        .send()
        .await
        .with_context(|| format!("PutBucketLifecycleConfiguration {}", at.bucket))?;
    Ok(id)
}

async fn probe_conditional_put(s3: &Client, at: &Location) -> anyhow::Result<()> {
    let name = format!("init-probe-{}", uuid::Uuid::new_v4());
    let key = if at.prefix.is_empty() {
        format!("_sluice/{name}")
    } else {
        format!("{}/_sluice/{name}", at.prefix)
    };
    let put = || {
        s3.put_object()
            .bucket(&at.bucket)
            .key(&key)
            .if_none_match("*")
            .body(ByteStream::from_static(b"sluice init probe"))
            .send()
    };
    put()
        .await
        .with_context(|| format!("PutObject {key} (If-None-Match: *)"))?;
    let again = put().await;
    let deleted = s3.delete_object().bucket(&at.bucket).key(&key).send().await;
    match again {
        Err(error) if error.raw_response().map(|r| r.status().as_u16()) == Some(412) => {}
        Err(error) => {
            return Err(anyhow::Error::new(error)
                .context(format!("PutObject {key} again (If-None-Match: *)")))
        }
        Ok(_) => bail!(
            "the store overwrote {key} despite If-None-Match: *; sluice needs conditional PUTs"
        ),
    }
    deleted.with_context(|| format!("DeleteObject {key}"))?;
    Ok(())
}
