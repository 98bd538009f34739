//! The etcd-backed [`MetaStore`], for clusters of sluice nodes.
//!
//! `etcd-client` balances over the endpoints it is given but does not route
//! around a dead one, so this store keeps one client per endpoint and fails
//! over itself: a call goes to the endpoint that answered last, and on a
//! transport failure moves to the next, for a bounded number of rounds and a
//! bounded total time, each attempt under its own timeout. Then the call
//! fails with [`MetaError::Unavailable`].
//!
//! # Which calls are retried
//! Reads, read-only transactions, watches and lease calls are idempotent
//! (a lease granted twice leaks one lease until its TTL runs out; a revoke
//! that finds its lease gone after a retry counts as done), so they are
//! retried after any transport failure or timeout. Writes (`put`, `delete`,
//! transactions with a put or delete) are retried only after an error that
//! proves the request never reached etcd: the connection could not be
//! established (refused, unreachable) or the endpoint is not an etcd server.
//! Any other failure — a timeout, a reset connection, "leader changed",
//! "request timed out" — may have been applied, so it is surfaced as
//! `Unavailable` and the caller, which knows whether the write is guarded by
//! a compare, decides (as etcd's own Go client does).

use std::error::Error as StdError;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, WatchOptions,
};
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::store::{
    CmpOp, CmpTarget, KeyValue, LeaseId, MetaError, MetaResult, MetaStore, RangeResponse, Revision,
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchEvent, WatchStream,
};

/// Connection and retry settings of [`EtcdStore`].
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Time limit of one attempt on one endpoint.
    pub call_timeout: Duration,
    /// Time limit of establishing a connection; kept below `call_timeout` so
    /// that an unreachable endpoint fails as "never sent" and can be skipped.
    pub connect_timeout: Duration,
    /// Passes over the endpoint list before giving up.
    pub retry_rounds: usize,
    /// Total time a call may spend across all attempts.
    pub retry_budget: Duration,
    /// Pause before each further pass over the endpoints (grows linearly).
    pub retry_backoff: Duration,
    /// Largest response accepted (range reads, watch batches).
    pub max_response_bytes: usize,
    /// HTTP/2 keep-alive ping interval, to notice dead connections.
    pub keep_alive_interval: Duration,
    /// How long a keep-alive ping may stay unanswered.
    pub keep_alive_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            retry_rounds: 3,
            retry_budget: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(100),
            max_response_bytes: 64 << 20,
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
        }
    }
}

struct Endpoint {
    url: String,
    client: Client,
}

/// A [`MetaStore`] on an etcd cluster, with client-side failover between
/// its endpoints.
pub struct EtcdStore {
    endpoints: Vec<Endpoint>,
    /// The endpoint that answered last; calls start there.
    preferred: AtomicUsize,
    options: EtcdOptions,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field(
                "endpoints",
                &self
                    .endpoints
                    .iter()
                    .map(|e| e.url.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("preferred", &self.preferred.load(Ordering::Relaxed))
            .finish()
    }
}

/// Whether a failed attempt may be repeated on another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Idempotent: after any transport failure.
    Always,
    /// A write: only when the request provably never reached etcd.
    IfNotSent,
}

/// How one failed attempt is judged.
enum Failure {
    /// The request never reached etcd (connection refused…).
    NotSent(String),
    /// The request may or may not have been applied.
    Ambiguous(String),
    /// etcd answered with an error; retrying elsewhere will not help.
    Final(MetaError),
}

impl EtcdStore {
    /// Connect to the etcd cluster at `endpoints` (`http://host:port`), and
    /// check that at least one endpoint answers.
    pub async fn connect(endpoints: Vec<String>, options: EtcdOptions) -> MetaResult<Self> {
        let store = Self::connect_lazy(endpoints, options)?;
        store.get(crate::keys::CONNECT_PROBE).await?;
        Ok(store)
    }

    /// Set up clients for `endpoints` without contacting any of them: the
    /// first call connects (for a node that may start before etcd does).
    /// Must run inside a tokio runtime, which the clients' connections use.
    pub fn connect_lazy(endpoints: Vec<String>, options: EtcdOptions) -> MetaResult<Self> {
        if endpoints.is_empty() {
            return Err(MetaError::Invalid("no etcd endpoints given".into()));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(MetaError::Invalid(
                "etcd clients need a tokio runtime".into(),
            ));
        }
        let mut clients = Vec::with_capacity(endpoints.len());
        for url in endpoints {
            let connect_options = ConnectOptions::new()
                .with_connect_timeout(options.connect_timeout)
                .with_keep_alive(options.keep_alive_interval, options.keep_alive_timeout)
                .with_keep_alive_while_idle(true)
                // Without a leader etcd answers "no leader" at once instead
                // of stalling, and watches are cancelled rather than silent.
                .with_require_leader(true);
            let client = Client::connect([url.as_str()], Some(connect_options))
                .now_or_never()
                .ok_or_else(|| {
                    MetaError::Invalid(format!("etcd endpoint {url}: connecting is not lazy"))
                })?
                .map_err(|e| MetaError::Invalid(format!("etcd endpoint {url}: {e}")))?;
            clients.push(Endpoint { url, client });
        }
        Ok(Self {
            endpoints: clients,
            preferred: AtomicUsize::new(0),
            options,
        })
    }

    /// The endpoint URLs, in the order given.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    /// Compact the key history up to `revision` (operators and tests; etcd
    /// itself runs auto-compaction in production).
    pub async fn compact(&self, revision: Revision) -> MetaResult<()> {
        self.call("compact", Retry::Always, move |mut c, _| async move {
            c.compact(revision, None).await.map(|_| ())
        })
        .await
    }

    /// Runs `attempt` against the endpoints, failing over as the module
    /// documentation describes.
    async fn call<T, F, Fut>(&self, what: &str, retry: Retry, mut attempt: F) -> MetaResult<T>
    where
        F: FnMut(Client, usize) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let count = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % count;
        let mut attempts = 0;
        let mut last_error = String::from("no attempt made");
        'rounds: for round in 0..self.options.retry_rounds.max(1) {
            if round > 0 {
                let remaining = self.options.retry_budget.saturating_sub(started.elapsed());
                let round_factor = u32::try_from(round).unwrap_or(u32::MAX);
                tokio::time::sleep(
                    self.options
                        .retry_backoff
                        .saturating_mul(round_factor)
                        .min(remaining),
                )
                .await;
            }
            for i in 0..count {
                let remaining = self.options.retry_budget.saturating_sub(started.elapsed());
                if remaining.is_zero() {
                    break 'rounds;
                }
                let index = (first + i) % count;
                let endpoint = &self.endpoints[index];
                let timeout = self.options.call_timeout.min(remaining);
                let outcome =
                    tokio::time::timeout(timeout, attempt(endpoint.client.clone(), attempts)).await;
                attempts += 1;
                let failure = match outcome {
                    Ok(Ok(value)) => {
                        if index != first {
                            debug!(endpoint = %endpoint.url, "etcd calls now go to this endpoint");
                        }
                        self.preferred.store(index, Ordering::Relaxed);
                        return Ok(value);
                    }
                    Ok(Err(e)) => classify(e),
                    Err(_) => Failure::Ambiguous(format!("no answer within {timeout:?}")),
                };
                match failure {
                    Failure::Final(e) => return Err(e),
                    Failure::Ambiguous(reason) if retry == Retry::IfNotSent => {
                        return Err(MetaError::Unavailable(format!(
                            "etcd {what} at {}: {reason}; it may or may not have been applied",
                            endpoint.url
                        )));
                    }
                    Failure::NotSent(reason) | Failure::Ambiguous(reason) => {
                        warn!(endpoint = %endpoint.url, call = what, error = %reason, "etcd attempt failed");
                        last_error = format!("{}: {reason}", endpoint.url);
                    }
                }
            }
        }
        Err(MetaError::Unavailable(format!(
            "etcd {what} failed after {attempts} attempts in {:?}; last error: {last_error}",
            started.elapsed()
        )))
    }
}

/// Judges an `etcd-client` error; see the module documentation.
fn classify(err: etcd_client::Error) -> Failure {
    use etcd_client::Error;
    match err {
        Error::GRpcStatus(status) => {
            let message = status.message().to_string();
            if is_connect_failure(&status) {
                return Failure::NotSent(message);
            }
            // gRPC status codes (tonic's `Code` as its wire number).
            match i32::from(status.code()) {
                // InvalidArgument, FailedPrecondition, OutOfRange.
                3 | 9 | 11 => Failure::Final(MetaError::Invalid(message)),
                // NotFound: etcd uses it for unknown leases.
                5 if message.contains("lease not found") => {
                    Failure::Final(MetaError::LeaseNotFound(0))
                }
                5 => Failure::Final(MetaError::Invalid(message)),
                // ResourceExhausted (no space, too many requests),
                // PermissionDenied, Unauthenticated.
                8 | 7 | 16 => Failure::Final(MetaError::Unavailable(message)),
                // Unimplemented: whatever answered is not etcd, so it
                // applied nothing.
                12 => Failure::NotSent(format!("not an etcd endpoint: {message}")),
                _ => Failure::Ambiguous(format!("{status}")),
            }
        }
        Error::TransportError(e) if is_connect_failure(&e) => Failure::NotSent(e.to_string()),
        Error::LeaseKeepAliveError(message) if message.contains("lease not found") => {
            Failure::Final(MetaError::LeaseNotFound(0))
        }
        Error::InvalidArgs(message) => Failure::Final(MetaError::Invalid(message)),
        Error::InvalidUri(e) => Failure::Final(MetaError::Invalid(e.to_string())),
        other => Failure::Ambiguous(other.to_string()),
    }
}

/// Whether the error chain shows that no connection could be made, i.e. the
/// request was never sent.
fn is_connect_failure(err: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::NetworkUnreachable
                    | std::io::ErrorKind::HostUnreachable
            ) {
                return true;
            }
        }
        // hyper-util's connector error, which tonic wraps.
        if e.to_string() == "tcp connect error" {
            return true;
        }
        current = e.source();
    }
    false
}

fn lease_not_found_as(id: LeaseId) -> impl Fn(MetaError) -> MetaError {
    move |e| match e {
        MetaError::LeaseNotFound(_) => MetaError::LeaseNotFound(id),
        other => other,
    }
}

fn convert_kv(kv: &etcd_client::KeyValue) -> MetaResult<KeyValue> {
    let key = String::from_utf8(kv.key().to_vec()).map_err(|_| MetaError::Corrupt {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        reason: "key is not utf-8".into(),
    })?;
    Ok(KeyValue {
        key,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    })
}

fn convert_kvs(kvs: &[etcd_client::KeyValue]) -> MetaResult<Vec<KeyValue>> {
    kvs.iter().map(convert_kv).collect()
}

fn prefix_get_options(prefix: &str) -> GetOptions {
    if prefix.is_empty() {
        GetOptions::new().with_all_keys()
    } else {
        GetOptions::new().with_prefix()
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> MetaResult<Revision> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| MetaError::Unavailable("etcd response without a header".into()))
}

fn to_etcd_txn(txn: &Txn) -> etcd_client::Txn {
    let compares: Vec<etcd_client::Compare> = txn
        .compares
        .iter()
        .map(|c| {
            let op = match c.op {
                CmpOp::Equal => CompareOp::Equal,
                CmpOp::NotEqual => CompareOp::NotEqual,
                CmpOp::Less => CompareOp::Less,
                CmpOp::Greater => CompareOp::Greater,
            };
            let key = c.key.as_bytes();
            match &c.target {
                CmpTarget::ModRevision(r) => etcd_client::Compare::mod_revision(key, op, *r),
                CmpTarget::CreateRevision(r) => etcd_client::Compare::create_revision(key, op, *r),
                CmpTarget::Version(v) => etcd_client::Compare::version(key, op, *v),
                CmpTarget::Value(v) => etcd_client::Compare::value(key, op, v.to_vec()),
            }
        })
        .collect();
    let ops = |ops: &[TxnOp]| -> Vec<etcd_client::TxnOp> {
        ops.iter()
            .map(|op| match op {
                TxnOp::Put { key, value, lease } => etcd_client::TxnOp::put(
                    key.as_bytes(),
                    value.to_vec(),
                    lease
                        .filter(|l| *l != 0)
                        .map(|l| PutOptions::new().with_lease(l)),
                ),
                TxnOp::Delete { key } => etcd_client::TxnOp::delete(key.as_bytes(), None),
                TxnOp::DeletePrefix { prefix } if prefix.is_empty() => etcd_client::TxnOp::delete(
                    prefix.as_bytes(),
                    Some(DeleteOptions::new().with_all_keys()),
                ),
                TxnOp::DeletePrefix { prefix } => etcd_client::TxnOp::delete(
                    prefix.as_bytes(),
                    Some(DeleteOptions::new().with_prefix()),
                ),
                TxnOp::Get { key } => etcd_client::TxnOp::get(key.as_bytes(), None),
                TxnOp::GetPrefix { prefix } => {
                    etcd_client::TxnOp::get(prefix.as_bytes(), Some(prefix_get_options(prefix)))
                }
            })
            .collect()
    };
    etcd_client::Txn::new()
        .when(compares)
        .and_then(ops(&txn.success))
        .or_else(ops(&txn.failure))
}

fn from_etcd_txn(resp: &etcd_client::TxnResponse) -> MetaResult<TxnResponse> {
    let mut responses = Vec::new();
    for op in resp.op_responses() {
        responses.push(match op {
            etcd_client::TxnOpResponse::Put(_) => TxnOpResponse::Put,
            etcd_client::TxnOpResponse::Delete(d) => TxnOpResponse::Delete {
                deleted: d.deleted(),
            },
            etcd_client::TxnOpResponse::Get(g) => TxnOpResponse::Get(convert_kvs(g.kvs())?),
            etcd_client::TxnOpResponse::Txn(_) => {
                return Err(MetaError::Invalid(
                    "nested transactions are not supported".into(),
                ))
            }
        });
    }
    Ok(TxnResponse {
        succeeded: resp.succeeded(),
        responses,
        revision: header_revision(resp.header())?,
    })
}

fn is_write(op: &TxnOp) -> bool {
    matches!(
        op,
        TxnOp::Put { .. } | TxnOp::Delete { .. } | TxnOp::DeletePrefix { .. }
    )
}

#[async_trait]
impl MetaStore for EtcdStore {
    async fn get(&self, key: &str) -> MetaResult<Option<KeyValue>> {
        let max = self.options.max_response_bytes;
        let resp = self
            .call("get", Retry::Always, |c, _| {
                let key = key.to_string();
                async move {
                    c.kv_client()
                        .max_decoding_message_size(max)
                        .get(key, None)
                        .await
                }
            })
            .await?;
        resp.kvs().first().map(convert_kv).transpose()
    }

    async fn range(&self, prefix: &str) -> MetaResult<RangeResponse> {
        let max = self.options.max_response_bytes;
        let resp = self
            .call("range", Retry::Always, |c, _| {
                let prefix = prefix.to_string();
                async move {
                    let options = prefix_get_options(&prefix);
                    c.kv_client()
                        .max_decoding_message_size(max)
                        .get(prefix, Some(options))
                        .await
                }
            })
            .await?;
        Ok(RangeResponse {
            kvs: convert_kvs(resp.kvs())?,
            revision: header_revision(resp.header())?,
        })
    }

    async fn put(&self, key: &str, value: Bytes, lease: Option<LeaseId>) -> MetaResult<Revision> {
        let lease = lease.filter(|l| *l != 0);
        let resp = self
            .call("put", Retry::IfNotSent, |mut c, _| {
                let (key, value) = (key.to_string(), value.to_vec());
                async move {
                    c.put(key, value, lease.map(|l| PutOptions::new().with_lease(l)))
                        .await
                }
            })
            .await
            .map_err(lease_not_found_as(lease.unwrap_or(0)))?;
        header_revision(resp.header())
    }

    async fn delete(&self, key: &str) -> MetaResult<bool> {
        let resp = self
            .call("delete", Retry::IfNotSent, |mut c, _| {
                let key = key.to_string();
                async move { c.delete(key, None).await }
            })
            .await?;
        Ok(resp.deleted() > 0)
    }

    async fn txn(&self, txn: Txn) -> MetaResult<TxnResponse> {
        let writes = txn.success.iter().chain(&txn.failure).any(is_write);
        let retry = if writes {
            Retry::IfNotSent
        } else {
            Retry::Always
        };
        let lease = txn
            .success
            .iter()
            .chain(&txn.failure)
            .find_map(|op| match op {
                TxnOp::Put { lease: Some(l), .. } => Some(*l),
                _ => None,
            })
            .unwrap_or(0);
        let request = to_etcd_txn(&txn);
        let max = self.options.max_response_bytes;
        let resp = self
            .call("txn", retry, |c, _| {
                let request = request.clone();
                async move {
                    c.kv_client()
                        .max_decoding_message_size(max)
                        .txn(request)
                        .await
                }
            })
            .await
            .map_err(lease_not_found_as(lease))?;
        from_etcd_txn(&resp)
    }

    async fn lease_grant(&self, ttl_secs: i64) -> MetaResult<LeaseId> {
        if ttl_secs <= 0 {
            return Err(MetaError::Invalid(format!(
                "lease ttl {ttl_secs} out of range"
            )));
        }
        let resp = self
            .call("lease grant", Retry::Always, |mut c, _| async move {
                c.lease_grant(ttl_secs, None).await
            })
            .await?;
        if !resp.error().is_empty() {
            return Err(MetaError::Unavailable(format!(
                "lease grant: {}",
                resp.error()
            )));
        }
        Ok(resp.id())
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> MetaResult<i64> {
        self.call("lease keep-alive", Retry::Always, |mut c, _| async move {
            // Opening the stream sends one refresh and checks the answer but
            // keeps its TTL to itself, so a second refresh reports it.
            let (mut keeper, mut responses) = c.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            match responses.message().await? {
                Some(resp) if resp.ttl() > 0 => Ok(resp.ttl()),
                Some(_) => Err(etcd_client::Error::LeaseKeepAliveError(
                    "lease not found".into(),
                )),
                None => Err(etcd_client::Error::LeaseKeepAliveError(
                    "keep-alive stream closed".into(),
                )),
            }
        })
        .await
        .map_err(lease_not_found_as(lease))
    }

    async fn lease_revoke(&self, lease: LeaseId) -> MetaResult<()> {
        self.call("lease revoke", Retry::Always, |mut c, attempt| async move {
            match c.lease_revoke(lease).await {
                // An earlier attempt may have revoked it already.
                Err(etcd_client::Error::GRpcStatus(s))
                    if attempt > 0 && s.message().contains("lease not found") =>
                {
                    Ok(())
                }
                other => other.map(|_| ()),
            }
        })
        .await
        .map_err(lease_not_found_as(lease))
    }

    async fn watch_prefix(
        &self,
        prefix: &str,
        start_revision: Revision,
    ) -> MetaResult<WatchStream> {
        let max = self.options.max_response_bytes;
        let (stream, created) = self
            .call("watch", Retry::Always, |c, _| {
                let prefix = prefix.to_string();
                async move {
                    let mut options = if prefix.is_empty() {
                        WatchOptions::new().with_all_keys()
                    } else {
                        WatchOptions::new().with_prefix()
                    };
                    if start_revision > 0 {
                        options = options.with_start_revision(start_revision);
                    }
                    let mut stream = c
                        .watch_client()
                        .max_decoding_message_size(max)
                        .watch(prefix, Some(options))
                        .await?;
                    // Wait for etcd to confirm the watch, so that a dead
                    // endpoint fails here (and fails over) rather than later.
                    match stream.message().await? {
                        Some(created) => Ok((stream, created)),
                        None => Err(etcd_client::Error::WatchError(
                            "watch stream closed before it was created".into(),
                        )),
                    }
                }
            })
            .await?;
        if created.canceled() {
            return Err(watch_cancel_error(&created, start_revision));
        }
        let first = (!created.events().is_empty()).then_some(created);
        let events = futures::stream::unfold(Some((stream, first)), move |state| async move {
            let (mut stream, mut pending) = state?;
            loop {
                let resp = match pending.take() {
                    Some(resp) => resp,
                    None => match stream.message().await {
                        Ok(Some(resp)) => resp,
                        Ok(None) => {
                            return Some((
                                Err(MetaError::Unavailable("etcd watch stream closed".into())),
                                None,
                            ))
                        }
                        Err(e) => {
                            return Some((
                                Err(MetaError::Unavailable(format!("etcd watch failed: {e}"))),
                                None,
                            ))
                        }
                    },
                };
                if resp.canceled() {
                    return Some((Err(watch_cancel_error(&resp, start_revision)), None));
                }
                if resp.events().is_empty() {
                    continue; // progress notification
                }
                return match convert_events(resp.events()) {
                    Ok(events) => Some((Ok(events), Some((stream, None)))),
                    Err(e) => Some((Err(e), None)),
                };
            }
        });
        Ok(events.boxed())
    }
}

fn watch_cancel_error(resp: &etcd_client::WatchResponse, requested: Revision) -> MetaError {
    if resp.compact_revision() > 0 {
        MetaError::Compacted {
            requested,
            oldest: resp.compact_revision(),
        }
    } else {
        MetaError::Unavailable(format!(
            "etcd cancelled the watch: {}",
            resp.cancel_reason()
        ))
    }
}

fn convert_events(events: &[etcd_client::Event]) -> MetaResult<Vec<WatchEvent>> {
    events
        .iter()
        .map(|event| {
            let kv = event
                .kv()
                .ok_or_else(|| MetaError::Unavailable("etcd watch event without a key".into()))
                .and_then(convert_kv)?;
            Ok(match event.event_type() {
                etcd_client::EventType::Put => WatchEvent::Put(kv),
                etcd_client::EventType::Delete => WatchEvent::Delete(kv),
            })
        })
        .collect()
}
