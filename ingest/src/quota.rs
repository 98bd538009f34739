//! Client quotas, enforced the Kafka way: bytes produced and fetched are
//! measured per quota entity, and a client over its rate is told to wait
//! (`throttle_time_ms`, the connection muted that long; HTTP answers 429
//! with `Retry-After`).
//!
//! Which quota applies follows Kafka's precedence, first hit wins:
//! user+client id, user+default client id, user, default user+client id,
//! default user+default client id, default user, client id, default client
//! id. The measured group is the entity that matched, with its defaults
//! replaced by the client's own names (a default-user quota holds each
//! user to it separately).
//!
//! **Cluster-wide.** A quota is for the cluster; each node enforces
//! `quota / live brokers` of it. A client whose traffic spreads evenly over
//! the brokers (as partition leadership spreads a topic) gets its quota
//! within the measuring error; one that talks to fewer brokers than there
//! are gets that fraction of it (at worst `1 / brokers`), never more. The
//! rate is measured as Kafka does: eleven one-second samples, over at
//! least ten seconds; a client over its share is throttled
//! `(rate - share) / share × window`, at most the 10 s window.
//!
//! **Request time.** `request_percentage` is Kafka's request quota: the
//! share of one thread a client's requests may keep busy, in percent (200 =
//! two threads). sluice measures a request's busy time as the time its
//! handler spends being polled ([`Busy`]): the work done for it on the
//! node's threads, not the time it waits on the store, etcd or a long poll.
//! Work a request hands to the node's shared tasks (the segment writer's
//! upload and commit) is not counted, as Kafka does not count its log
//! flushes. The share and the throttle are those of the byte rates.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sluice_metadata::quotas::{EntityName, QuotaEntity, QuotaRecord};
use sluice_metadata::view::ClusterView;

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Bytes produced (`producer_byte_rate`).
    Produce,
    /// Bytes fetched (`consumer_byte_rate`).
    Fetch,
    /// Percent of a thread kept busy (`request_percentage`); recorded in
    /// percent-seconds.
    Request,
}

impl QuotaKind {
    /// The quota key.
    pub fn key(self) -> &'static str {
        match self {
            QuotaKind::Produce => "producer_byte_rate",
            QuotaKind::Fetch => "consumer_byte_rate",
            QuotaKind::Request => "request_percentage",
        }
    }
}

/// A future and the time spent polling it: the thread time its work took,
/// without the time it waited.
#[derive(Debug)]
pub struct Busy<F> {
    inner: Pin<Box<F>>,
    spent: Duration,
}

impl<F: Future> Busy<F> {
    /// Time `inner`.
    pub fn new(inner: F) -> Self {
        Self {
            inner: Box::pin(inner),
            spent: Duration::ZERO,
        }
    }
}

impl<F: Future> Future for Busy<F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let start = Instant::now();
        let polled = self.inner.as_mut().poll(cx);
        self.spent += start.elapsed();
        polled.map(|output| (output, self.spent))
    }
}

/// Samples kept per meter.
const SAMPLES: usize = 11;
/// Length of one sample.
const SAMPLE: Duration = Duration::from_secs(1);
/// Longest throttle asked of a client: the measuring window (Kafka's bound
/// is its window too).
pub const THROTTLE_MAX: Duration = Duration::from_secs(10);
/// Meters kept before idle ones are dropped.
const METERS_MAX: usize = 10_000;

/// Bytes over the last samples.
#[derive(Debug, Default)]
struct Meter {
    /// (sample start, bytes in it), oldest first.
    samples: VecDeque<(Instant, f64)>,
}

impl Meter {
    fn record(&mut self, now: Instant, bytes: f64) {
        match self.samples.back_mut() {
            Some((start, total)) if now.duration_since(*start) < SAMPLE => *total += bytes,
            _ => {
                self.samples.push_back((now, bytes));
                while self.samples.len() > SAMPLES {
                    self.samples.pop_front();
                }
            }
        }
    }

    /// (bytes per second, window) as of `now`.
    fn rate(&mut self, now: Instant) -> (f64, Duration) {
        let horizon = SAMPLE * SAMPLES as u32;
        while self
            .samples
            .front()
            .is_some_and(|(start, _)| now.duration_since(*start) > horizon)
        {
            self.samples.pop_front();
        }
        let total: f64 = self.samples.iter().map(|(_, bytes)| bytes).sum();
        let elapsed = self
            .samples
            .front()
            .map_or(Duration::ZERO, |(start, _)| now.duration_since(*start));
        let window = elapsed.max(SAMPLE * (SAMPLES as u32 - 1));
        (total / window.as_secs_f64(), window)
    }

    fn idle(&self, now: Instant) -> bool {
        self.samples
            .back()
            .is_none_or(|(start, _)| now.duration_since(*start) > SAMPLE * SAMPLES as u32)
    }
}

/// The quota of `kind` for `user` and `client_id` among `quotas`: its
/// value and the name of the group it is measured over.
pub fn resolve(
    quotas: &[QuotaRecord],
    kind: QuotaKind,
    user: &str,
    client_id: &str,
) -> Option<(f64, String)> {
    let named = |name: &str| Some(EntityName::Named(name.to_string()));
    let default = || Some(EntityName::Default);
    let candidates = [
        (named(user), named(client_id)),
        (named(user), default()),
        (named(user), None),
        (default(), named(client_id)),
        (default(), default()),
        (default(), None),
        (None, named(client_id)),
        (None, default()),
    ];
    for (u, c) in candidates {
        let has_user = u.is_some();
        let has_client = c.is_some();
        let entity = QuotaEntity {
            user: u,
            client_id: c,
        };
        let found = quotas
            .iter()
            .find(|q| q.entity == entity)
            .and_then(|q| q.values.get(kind.key()));
        if let Some(value) = found {
            let group = format!(
                "user={}|client-id={}",
                if has_user { user } else { "" },
                if has_client { client_id } else { "" }
            );
            return Some((*value, group));
        }
    }
    None
}

/// The node's meters.
#[derive(Debug)]
pub struct Quotas {
    view: Arc<ClusterView>,
    meters: Mutex<HashMap<(QuotaKind, String), Meter>>,
}

impl Quotas {
    /// Quotas of the cluster `view` sees.
    pub fn new(view: Arc<ClusterView>) -> Arc<Self> {
        Arc::new(Self {
            view,
            meters: Mutex::new(HashMap::new()),
        })
    }

    /// This node's share of a cluster-wide quota.
    fn share(&self, quota: f64) -> f64 {
        quota / self.view.brokers().len().max(1) as f64
    }

    /// Record `bytes` of `kind` for `user` and `client_id`; how long the
    /// client is to wait (zero within its quota, or without one).
    pub fn record(&self, kind: QuotaKind, user: &str, client_id: &str, bytes: u64) -> Duration {
        self.measure(kind, user, client_id, Some(bytes as f64))
    }

    /// Whether any quota of the cluster limits request time: without one,
    /// requests are not timed at all.
    pub fn limits_request_time(&self) -> bool {
        let quotas = self.view.quotas();
        !quotas.is_empty()
            && quotas
                .iter()
                .any(|quota| quota.values.contains_key(QuotaKind::Request.key()))
    }

    /// Record `busy` thread time of a request of `user` and `client_id`;
    /// how long the client is to wait.
    pub fn record_busy(&self, user: &str, client_id: &str, busy: Duration) -> Duration {
        crate::metrics::REQUEST_BUSY_SECONDS.inc_by(busy.as_secs_f64());
        let percent_seconds = busy.as_secs_f64() * 100.0;
        self.measure(QuotaKind::Request, user, client_id, Some(percent_seconds))
    }

    /// How long the client is to wait before its next request of `kind`.
    pub fn throttle(&self, kind: QuotaKind, user: &str, client_id: &str) -> Duration {
        self.measure(kind, user, client_id, None)
    }

    fn measure(
        &self,
        kind: QuotaKind,
        user: &str,
        client_id: &str,
        bytes: Option<f64>,
    ) -> Duration {
        let quotas = self.view.quotas();
        // the common case, on every produce and fetch: no quota at all
        if quotas.is_empty() {
            return Duration::ZERO;
        }
        let Some((quota, group)) = resolve(&quotas, kind, user, client_id) else {
            return Duration::ZERO;
        };
        let share = self.share(quota);
        let now = Instant::now();
        let mut meters = self.meters.lock().unwrap_or_else(|e| e.into_inner());
        if meters.len() > METERS_MAX {
            meters.retain(|_, meter| !meter.idle(now));
        }
        let meter = meters.entry((kind, group)).or_default();
        if let Some(bytes) = bytes {
            meter.record(now, bytes);
        }
        let (rate, window) = meter.rate(now);
        if rate <= share {
            return Duration::ZERO;
        }
        if bytes.is_some() {
            crate::metrics::QUOTA_THROTTLES
                .with_label_values(&[kind.key()])
                .inc();
        }
        let over = (rate - share) / share;
        Duration::from_secs_f64(window.as_secs_f64() * over).min(THROTTLE_MAX)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn quota(user: Option<EntityName>, client: Option<EntityName>, rate: f64) -> QuotaRecord {
        QuotaRecord {
            entity: QuotaEntity {
                user,
                client_id: client,
            },
            values: BTreeMap::from([("producer_byte_rate".to_string(), rate)]),
        }
    }

    #[test]
    fn kafkas_precedence_picks_the_most_specific_quota() {
        let named = |n: &str| Some(EntityName::Named(n.into()));
        let quotas = vec![
            quota(None, Some(EntityName::Default), 1.0),
            quota(Some(EntityName::Default), None, 2.0),
            quota(named("alice"), None, 3.0),
            quota(named("alice"), named("app"), 4.0),
        ];
        let p = QuotaKind::Produce;
        assert_eq!(resolve(&quotas, p, "alice", "app").unwrap().0, 4.0);
        assert_eq!(
            resolve(&quotas, p, "alice", "other").unwrap(),
            (3.0, "user=alice|client-id=".into())
        );
        // a default user quota is per user
        assert_eq!(
            resolve(&quotas, p, "bob", "x").unwrap(),
            (2.0, "user=bob|client-id=".into())
        );
        assert_eq!(
            resolve(&quotas[..1], p, "bob", "x").unwrap(),
            (1.0, "user=|client-id=x".into())
        );
        assert!(resolve(&quotas, QuotaKind::Fetch, "alice", "app").is_none());
        assert!(resolve(&[], p, "alice", "app").is_none());
    }

    #[tokio::test]
    async fn busy_time_is_the_time_polled_not_the_time_waited() {
        let (output, busy) = Busy::new(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(20) {
                std::hint::spin_loop();
            }
            7
        })
        .await;
        assert_eq!(output, 7);
        assert!(busy >= Duration::from_millis(20), "{busy:?}");
        assert!(busy < Duration::from_millis(200), "{busy:?}");
    }

    #[test]
    fn a_meter_measures_over_at_least_ten_seconds() {
        let start = Instant::now();
        let mut meter = Meter::default();
        meter.record(start, 1000.0);
        let (rate, window) = meter.rate(start);
        assert_eq!(window, Duration::from_secs(10));
        assert_eq!(rate, 100.0);
        for second in 1..=20u64 {
            meter.record(start + Duration::from_secs(second), 1000.0);
        }
        let (rate, window) = meter.rate(start + Duration::from_secs(20));
        assert!(meter.samples.len() <= SAMPLES);
        assert_eq!(window, Duration::from_secs(10));
        assert!((rate - 1100.0).abs() < 1e-9, "{rate}");
        assert!(meter.idle(start + Duration::from_secs(40)));
    }
}
