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
//! are gets that fraction of it (at worst `1 / brokers`), never more.
//!
//! **A token bucket per client.** Each node meters a client's share with a
//! bucket that fills at the share's rate up to ten seconds' worth (the
//! burst Kafka's ten-second window lets through) and that what the client
//! uses is taken from, into debt if a request is larger than what is left.
//! A client in debt is throttled until the bucket is back at zero (at most
//! 10 s). Kafka's own meter (eleven one-second samples) lets the samples
//! of a burst expire all at once, so a saturating client bursts every
//! eleven seconds and starves in between, below its quota by as much as a
//! third; the bucket holds it to the share itself (Kafka meters its
//! controller mutations with a token bucket for the same reason, KIP-599).
//!
//! **Request time.** `request_percentage` is Kafka's request quota: the
//! share of one thread a client's requests may keep busy, in percent (200 =
//! two threads). sluice measures a request's busy time as the time its
//! handler spends being polled ([`timed`]): the work done for it on the
//! node's threads, not the time it waits on the store, etcd or a long poll.
//! Work a request hands to the node's shared tasks (the segment writer's
//! upload and commit) is not counted, as Kafka does not count its log
//! flushes. The share and the throttle are those of the byte rates.

use std::collections::HashMap;
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

/// Thread time spent on one request so far, not yet recorded.
#[derive(Debug, Default)]
pub struct BusyClock {
    /// Counted and not taken, and when the poll in progress started (or
    /// was last taken from).
    state: Mutex<(Duration, Option<Instant>)>,
}

impl BusyClock {
    /// The time counted since the last take, the poll in progress up to
    /// now included; counting starts again at zero.
    pub fn take(&self) -> Duration {
        let mut state = lock(&self.state);
        let (counted, polling_since) = &mut *state;
        let mut taken = std::mem::take(counted);
        if let Some(since) = polling_since {
            let now = Instant::now();
            taken += now.saturating_duration_since(*since);
            *since = now;
        }
        taken
    }

    fn start(&self) {
        lock(&self.state).1 = Some(Instant::now());
    }

    fn stop(&self) {
        let mut state = lock(&self.state);
        if let Some(since) = state.1.take() {
            state.0 += since.elapsed();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

tokio::task_local! {
    /// The clock of the request being handled, where requests are timed.
    static REQUEST_CLOCK: Arc<BusyClock>;
}

/// Run `inner`, adding the time spent polling it to `clock` (the thread
/// time its work took, not the time it waited); inside it,
/// [`take_request_busy`] reads the clock.
pub async fn timed<F: Future>(clock: Arc<BusyClock>, inner: F) -> F::Output {
    REQUEST_CLOCK
        .scope(clock.clone(), Busy { inner, clock })
        .await
}

/// The busy time of the request being handled so far, taken from its
/// clock (so it is recorded once); `None` where requests are not timed.
pub fn take_request_busy() -> Option<Duration> {
    REQUEST_CLOCK.try_with(|clock| clock.take()).ok()
}

pin_project_lite::pin_project! {
    /// A future whose polls are timed into a clock.
    struct Busy<F> {
        #[pin]
        inner: F,
        clock: Arc<BusyClock>,
    }
}

impl<F: Future> Future for Busy<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.clock.start();
        let polled = this.inner.poll(cx);
        this.clock.stop();
        polled
    }
}

/// The burst a full meter lets through: this long at the share's rate (the
/// ten seconds' worth Kafka's window lets through).
const BURST: Duration = Duration::from_secs(10);
/// Longest throttle asked of a client (Kafka's bound is its window too).
pub const THROTTLE_MAX: Duration = Duration::from_secs(10);
/// Meters kept before idle ones are dropped.
const METERS_MAX: usize = 10_000;

/// A token bucket: it fills at the share's rate up to [`BURST`] of it, and
/// what a client uses is taken out of it, into debt if need be. A client in
/// debt waits until the bucket is back at zero.
#[derive(Debug)]
struct Meter {
    /// Units left (negative: owed), as of `at`.
    tokens: f64,
    at: Instant,
}

impl Meter {
    /// A full meter for a share of `rate` per second.
    fn full(now: Instant, rate: f64) -> Self {
        Self {
            tokens: rate * BURST.as_secs_f64(),
            at: now,
        }
    }

    /// Refill for the time since the last use, at `rate` per second.
    fn refill(&mut self, now: Instant, rate: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + rate * elapsed).min(rate * BURST.as_secs_f64());
        self.at = now;
    }

    /// Take `amount` (refilled first at `rate`); how long until the meter
    /// is out of debt. Debt is bounded by [`THROTTLE_MAX`] at the rate: a
    /// request larger than that overshoots. A rate of zero lets nothing
    /// through.
    fn take(&mut self, now: Instant, rate: f64, amount: f64) -> Duration {
        if rate <= 0.0 {
            return THROTTLE_MAX;
        }
        self.refill(now, rate);
        self.tokens = (self.tokens - amount).max(-rate * THROTTLE_MAX.as_secs_f64());
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.tokens / rate)
    }

    /// Whether the meter has been left alone long enough to be full again
    /// (a new one is the same).
    fn idle(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.at) > BURST + THROTTLE_MAX
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
        self.view
            .quotas()
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
        amount: Option<f64>,
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
        let mut meters = lock(&self.meters);
        if meters.len() > METERS_MAX {
            meters.retain(|_, meter| !meter.idle(now));
        }
        let meter = meters
            .entry((kind, group))
            .or_insert_with(|| Meter::full(now, share));
        let wait = meter.take(now, share, amount.unwrap_or(0.0));
        if !wait.is_zero() && amount.is_some() {
            crate::metrics::QUOTA_THROTTLES
                .with_label_values(&[kind.key()])
                .inc();
        }
        wait
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
        let clock = Arc::new(BusyClock::default());
        let (output, inside) = timed(clock.clone(), async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(20) {
                std::hint::spin_loop();
            }
            // the poll in progress counts
            let so_far = take_request_busy().unwrap();
            (7, so_far)
        })
        .await;
        assert_eq!(output, 7);
        assert!(inside >= Duration::from_millis(20), "{inside:?}");
        assert!(inside < Duration::from_millis(200), "{inside:?}");
        let rest = clock.take();
        assert!(rest < Duration::from_millis(5), "counted once: {rest:?}");
        assert_eq!(clock.take(), Duration::ZERO, "taken once");
        assert!(take_request_busy().is_none(), "outside a timed request");
    }

    #[test]
    fn a_meter_lets_a_burst_through_then_holds_to_its_rate() {
        let start = Instant::now();
        let rate = 1000.0;
        let mut meter = Meter::full(start, rate);
        // ten seconds' worth at once: within the burst
        assert_eq!(meter.take(start, rate, 10_000.0), Duration::ZERO);
        // then a second's worth more: a second's wait
        assert_eq!(meter.take(start, rate, 1000.0), Duration::from_secs(1));
        // paid back after that second; one more unit is a millisecond
        let later = start + Duration::from_secs(1);
        assert_eq!(meter.take(later, rate, 1.0), Duration::from_millis(1));
        // a client that waits as told gets exactly the rate over time
        let mut now = later + Duration::from_millis(1);
        let mut used = 0.0;
        while now < later + Duration::from_secs(60) {
            used += 500.0;
            now += meter.take(now, rate, 500.0);
        }
        let seconds = (now - later).as_secs_f64();
        assert!(
            (used / seconds - rate).abs() < rate * 0.02,
            "{}",
            used / seconds
        );
        // debt is bounded by the longest throttle
        assert_eq!(meter.take(now, rate, 1e9), THROTTLE_MAX);
        // left alone, it is full again
        assert!(meter.idle(now + Duration::from_secs(21)));
        meter.refill(now + Duration::from_secs(10_000_000), rate);
        assert_eq!(meter.tokens, rate * BURST.as_secs_f64());
    }
}
