//! Building the object store from a `--store` URL: `file:///path` or
//! `s3://bucket/prefix` (endpoint, region and credentials from the usual AWS
//! variables, or the endpoint given explicitly).

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

/// Settings for reaching the object store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// S3 endpoint (e.g. `http://127.0.0.1:9000`); `None` = AWS default.
    pub s3_endpoint: Option<String>,
    /// Retries of one request before it fails (bounded).
    pub max_retries: usize,
    /// Total time one request may spend retrying.
    pub retry_timeout: Duration,
    /// Time limit of one HTTP request.
    pub request_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            s3_endpoint: None,
            max_retries: 3,
            retry_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Why the store URL could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    /// Not a URL sluice understands.
    #[error("invalid store url {url:?}: {reason}")]
    Invalid {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The store could not be built.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// The local directory could not be created.
    #[error("store directory: {0}")]
    Io(#[from] std::io::Error),
}

/// Open the object store named by `url`.
pub fn open_store(
    url: &str,
    options: &StoreOptions,
) -> Result<Arc<dyn ObjectStore>, StoreUrlError> {
    let parsed = url::Url::parse(url).map_err(|e| StoreUrlError::Invalid {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    match parsed.scheme() {
        "file" => {
            let path = parsed.to_file_path().map_err(|()| StoreUrlError::Invalid {
                url: url.to_string(),
                reason: "not an absolute file path".to_string(),
            })?;
            std::fs::create_dir_all(&path)?;
            Ok(Arc::new(LocalFileSystem::new_with_prefix(path)?))
        }
        "s3" => {
            let bucket = parsed.host_str().unwrap_or_default();
            if bucket.is_empty() {
                return Err(StoreUrlError::Invalid {
                    url: url.to_string(),
                    reason: "missing bucket".to_string(),
                });
            }
            let retry = RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: options.max_retries,
                retry_timeout: options.retry_timeout,
            };
            let client = ClientOptions::new()
                .with_timeout(options.request_timeout)
                .with_connect_timeout(Duration::from_secs(2))
                .with_allow_http(true);
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry)
                .with_client_options(client);
            // no SHA-256 of each PUT body for its signature (it was a sixth
            // of the produce path's CPU): segments carry their own crc32c,
            // checked on every read, and HTTPS protects them in transit;
            // AWS_UNSIGNED_PAYLOAD=false signs the payload again
            if std::env::var_os("AWS_UNSIGNED_PAYLOAD").is_none() {
                builder = builder.with_unsigned_payload(true);
            }
            if let Some(endpoint) = &options.s3_endpoint {
                builder = builder.with_endpoint(endpoint).with_allow_http(true);
            }
            let s3: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
            let prefix = parsed.path().trim_matches('/');
            if prefix.is_empty() {
                Ok(s3)
            } else {
                Ok(Arc::new(PrefixStore::new(s3, prefix)))
            }
        }
        other => Err(StoreUrlError::Invalid {
            url: url.to_string(),
            reason: format!("unsupported scheme {other:?} (use file:// or s3://)"),
        }),
    }
}
