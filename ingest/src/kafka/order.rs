//! Request order on one connection: each request takes effect after the one
//! read before it, while their slow parts (waiting for a commit, a fetch's
//! long poll) still overlap.
//!
//! Every request read gets a [`Turn`] chained to its predecessor's. The
//! handler waits for its turn before it touches anything, and holds it until
//! its effect is decided: for most APIs until the answer is computed; for
//! Produce until its batches are appended to the segment buffer (their order
//! in the log is then fixed, and the wait for the commit runs beside the
//! next requests); for Fetch only until it has read the view (it changes
//! nothing, and its long poll must not hold the connection's writes back).
//! Kafka brokers get the same order by muting a connection until its request
//! is answered; sluice keeps the pipelining.

use tokio::sync::oneshot;

/// A request's place in its connection's order; dropping it lets the next
/// request go.
#[derive(Debug)]
pub struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    _done: oneshot::Sender<()>,
}

impl Turn {
    /// A turn nobody waits for and that waits for nobody (tests, a request
    /// outside a connection).
    pub fn free() -> Self {
        Self {
            previous: None,
            _done: oneshot::channel().0,
        }
    }

    /// Wait until every request read before this one has released its turn.
    pub async fn wait(&mut self) {
        if let Some(previous) = self.previous.as_mut() {
            // an error means the predecessor was dropped: its turn is over
            let _ = previous.await;
            self.previous = None;
        }
    }
}

/// The chain of turns of one connection.
#[derive(Debug, Default)]
pub struct Turns {
    last: Option<oneshot::Receiver<()>>,
}

impl Turns {
    /// The turn of the next request read: after every earlier one.
    pub fn take(&mut self) -> Turn {
        let (done, released) = oneshot::channel();
        let previous = self.last.replace(released);
        Turn {
            previous,
            _done: done,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn turns_are_taken_in_the_order_they_were_handed_out() {
        let mut turns = Turns::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let handed: Vec<Turn> = (0..5).map(|_| turns.take()).collect();
        // started in reverse, the later ones sleeping less
        for (i, mut turn) in handed.into_iter().enumerate().rev() {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5 * i as u64)).await;
                turn.wait().await;
                log.lock().unwrap().push(i);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_turn_released_early_lets_the_next_go_while_it_still_works() {
        let mut turns = Turns::default();
        let (mut first, mut second) = (turns.take(), turns.take());
        first.wait().await;
        let (finish, finished) = oneshot::channel::<()>();
        let slow = tokio::spawn(async move {
            drop(first); // effect decided; the slow part follows
            finished.await.unwrap();
        });
        tokio::time::timeout(Duration::from_secs(5), second.wait())
            .await
            .expect("the second turn comes while the first request still runs");
        finish.send(()).unwrap();
        slow.await.unwrap();
    }

    #[tokio::test]
    async fn a_held_turn_keeps_the_next_waiting() {
        let mut turns = Turns::default();
        let (mut first, mut second) = (turns.take(), turns.take());
        first.wait().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), second.wait())
                .await
                .is_err(),
            "the second ran before the first released its turn"
        );
        drop(first);
        second.wait().await;
    }
}
