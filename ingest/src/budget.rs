//! A byte budget shared by the two front doors: the Kafka listener and the
//! HTTP API take request bytes from one budget (the memory budget's
//! `requests` share, `kafka.in_flight_bytes_max`) and response bytes from
//! another (half the `fetch` share, `kafka.fetch_bytes_max`), so a node
//! holds at most that much whichever door the load comes through. A taker
//! waits for bytes when the budget is spent: back-pressure, not growth.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes as semaphore permits: at least one, at most what a semaphore holds.
pub(crate) fn permits(bytes: usize) -> usize {
    bytes.clamp(1, Semaphore::MAX_PERMITS)
}

/// A budget of bytes: a semaphore of one permit per byte, and its size.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    permits: Arc<Semaphore>,
    bytes_max: usize,
}

impl ByteBudget {
    /// A budget of `bytes_max` bytes; its clones share it.
    pub fn new(bytes_max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits(bytes_max))),
            bytes_max: bytes_max.max(1),
        }
    }

    /// Its size: no one taker gets more.
    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// The most one reader may take: half the budget, so two readers can
    /// always run and one large read cannot hold every other reader back.
    /// A Kafka Fetch and an HTTP read are capped alike.
    pub fn one_read_max(&self) -> usize {
        (self.bytes_max / 2).max(1)
    }

    /// Bytes of it held now.
    pub fn held(&self) -> usize {
        permits(self.bytes_max).saturating_sub(self.permits.available_permits())
    }

    /// Take `bytes` (at most the budget's size), waiting until they are
    /// free; they are given back when the permit is dropped. `None` once
    /// the semaphore is closed.
    pub async fn take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let count = self.count(bytes);
        self.permits.clone().acquire_many_owned(count).await.ok()
    }

    /// [`ByteBudget::take`] without waiting: `None` when the bytes are
    /// not free now.
    pub fn try_take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let count = self.count(bytes);
        self.permits.clone().try_acquire_many_owned(count).ok()
    }

    /// Permits for `bytes`: at least one, at most the budget's size.
    fn count(&self, bytes: usize) -> u32 {
        u32::try_from(permits(bytes.min(self.bytes_max))).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn takers_wait_for_bytes_given_back() {
        let budget = ByteBudget::new(1000);
        let first = budget.take(700).await.unwrap();
        assert_eq!(budget.held(), 700);
        // a second taker of 400 waits: only 300 are free
        let waiting = tokio::time::timeout(Duration::from_millis(50), budget.take(400)).await;
        assert!(waiting.is_err(), "400 bytes were taken with 300 free");
        drop(first);
        let second = budget.take(400).await.unwrap();
        assert_eq!(budget.held(), 400);
        drop(second);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn no_taker_gets_more_than_the_budget() {
        let budget = ByteBudget::new(1000);
        let all = budget.take(5000).await.unwrap();
        assert_eq!(all.num_permits(), 1000);
        assert_eq!(budget.held(), 1000);
    }

    #[test]
    fn one_reader_takes_at_most_half() {
        let budget = ByteBudget::new(1000);
        assert_eq!(budget.one_read_max(), 500);
        let first = budget.try_take(budget.one_read_max()).unwrap();
        // a second reader of the largest size still fits beside the first
        assert!(budget.try_take(budget.one_read_max()).is_some());
        drop(first);
        assert_eq!(ByteBudget::new(1).one_read_max(), 1);
    }

    #[tokio::test]
    async fn clones_are_one_budget() {
        let kafka = ByteBudget::new(1000);
        let http = kafka.clone();
        let kafka_frame = kafka.take(600).await.unwrap();
        assert_eq!(http.held(), 600);
        let waiting = tokio::time::timeout(Duration::from_millis(50), http.take(500)).await;
        assert!(waiting.is_err(), "HTTP took bytes a Kafka frame holds");
        drop(kafka_frame);
        assert!(http.take(500).await.is_some());
    }
}
