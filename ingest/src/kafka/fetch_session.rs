//! Fetch sessions (KIP-227): a consumer of many partitions sends the full
//! list once, then only what changed; the node answers only partitions with
//! news (records, a moved high watermark or log start, an error).
//!
//! A session lives in this node's memory, keyed by a random id: sessions
//! are per node, as Kafka's are per broker, and a client that fetches from
//! another node starts a new one there. The cache is bounded in sessions
//! and in partitions per session; when it is full the session used least
//! recently is evicted, and its client, answered FETCH_SESSION_ID_NOT_FOUND,
//! starts over with a full fetch.

use std::collections::HashMap;
use std::sync::Mutex;

use kafka_protocol::error::ResponseError;

/// Most sessions a node keeps.
pub const SESSIONS_MAX: usize = 1_000;
/// Most partitions one session tracks (a larger full fetch is served
/// without a session).
pub const SESSION_PARTITIONS_MAX: usize = 10_000;

/// A partition a session tracks: what the client last asked for and what
/// the node last told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Where the client reads from.
    pub fetch_offset: i64,
    /// Its per-partition byte limit.
    pub max_bytes: i32,
    /// High watermark last answered (-1: never).
    pub high_watermark: i64,
    /// Log start last answered.
    pub log_start_offset: i64,
}

#[derive(Debug)]
struct Session {
    /// The epoch the next request must carry.
    next_epoch: i32,
    partitions: Vec<Tracked>,
    /// When it was last used, in the cache's own ticks.
    used: u64,
}

#[derive(Debug, Default)]
struct Cache {
    sessions: HashMap<i32, Session>,
    ticks: u64,
}

impl Cache {
    fn tick(&mut self) -> u64 {
        self.ticks += 1;
        self.ticks
    }
}

/// What a Fetch request is, as far as sessions go.
#[derive(Debug)]
pub enum SessionRequest {
    /// No session: serve the request's partitions, answer all of them.
    Sessionless,
    /// A new session over the request's partitions (all answered).
    New,
    /// The next request of an existing session: these partitions, answer
    /// only those with news.
    Incremental {
        /// The session.
        id: i32,
        /// Every partition it tracks after this request.
        partitions: Vec<Tracked>,
    },
}

/// The node's fetch sessions.
#[derive(Debug, Default)]
pub struct FetchSessions {
    cache: Mutex<Cache>,
}

/// A partition named in a request: (topic, partition, fetch offset, max bytes).
pub type Asked = (String, i32, i64, i32);

impl FetchSessions {
    /// Resolve a request's session fields. `asked` are the partitions the
    /// request lists; `forgotten` the ones it drops.
    pub fn resolve(
        &self,
        session_id: i32,
        epoch: i32,
        asked: &[Asked],
        forgotten: &[(String, i32)],
    ) -> Result<SessionRequest, ResponseError> {
        let mut cache = self.lock();
        let now = cache.tick();
        let sessions = &mut cache.sessions;
        match (session_id, epoch) {
            // a full fetch that wants a session
            (0, 0) if asked.len() <= SESSION_PARTITIONS_MAX => Ok(SessionRequest::New),
            (0, _) => Ok(SessionRequest::Sessionless),
            // the client closes its session and fetches without one
            (id, -1) => {
                sessions.remove(&id);
                Ok(SessionRequest::Sessionless)
            }
            (id, epoch) => {
                let Some(session) = sessions.get_mut(&id) else {
                    return Err(ResponseError::FetchSessionIdNotFound);
                };
                if epoch != session.next_epoch {
                    return Err(ResponseError::InvalidFetchSessionEpoch);
                }
                session.partitions.retain(|t| {
                    !forgotten
                        .iter()
                        .any(|(n, p)| *n == t.topic && *p == t.partition)
                });
                for (topic, partition, fetch_offset, max_bytes) in asked {
                    match session
                        .partitions
                        .iter_mut()
                        .find(|t| t.topic == *topic && t.partition == *partition)
                    {
                        Some(tracked) => {
                            tracked.fetch_offset = *fetch_offset;
                            tracked.max_bytes = *max_bytes;
                        }
                        None => session.partitions.push(Tracked {
                            topic: topic.clone(),
                            partition: *partition,
                            fetch_offset: *fetch_offset,
                            max_bytes: *max_bytes,
                            high_watermark: -1,
                            log_start_offset: -1,
                        }),
                    }
                }
                if session.partitions.len() > SESSION_PARTITIONS_MAX {
                    sessions.remove(&id);
                    return Err(ResponseError::FetchSessionIdNotFound);
                }
                session.next_epoch = next_epoch(epoch);
                session.used = now;
                Ok(SessionRequest::Incremental {
                    id,
                    partitions: session.partitions.clone(),
                })
            }
        }
    }

    /// Open a session over `answered` (what a full fetch answered); its id,
    /// or 0 when none could be kept.
    pub fn open(&self, answered: Vec<Tracked>) -> i32 {
        let mut cache = self.lock();
        let now = cache.tick();
        let sessions = &mut cache.sessions;
        if sessions.len() >= SESSIONS_MAX {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        let id = loop {
            let id = rand::random::<i32>() & i32::MAX;
            if id != 0 && !sessions.contains_key(&id) {
                break id;
            }
        };
        sessions.insert(
            id,
            Session {
                next_epoch: 1,
                partitions: answered,
                used: now,
            },
        );
        id
    }

    /// Record what was answered to session `id` for `partition` of `topic`.
    pub fn answered(
        &self,
        id: i32,
        topic: &str,
        partition: i32,
        high_watermark: i64,
        log_start: i64,
    ) {
        let mut cache = self.lock();
        if let Some(tracked) = cache.sessions.get_mut(&id).and_then(|s| {
            s.partitions
                .iter_mut()
                .find(|t| t.topic == topic && t.partition == partition)
        }) {
            tracked.high_watermark = high_watermark;
            tracked.log_start_offset = log_start;
        }
    }

    /// Sessions kept.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether no session is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The epoch after `epoch` (wrapping past i32::MAX to 1, as Kafka does).
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn asked(topic: &str, partition: i32, offset: i64) -> Asked {
        (topic.to_string(), partition, offset, 1 << 20)
    }

    fn tracked(topic: &str, partition: i32, offset: i64) -> Tracked {
        Tracked {
            topic: topic.into(),
            partition,
            fetch_offset: offset,
            max_bytes: 1 << 20,
            high_watermark: -1,
            log_start_offset: -1,
        }
    }

    #[test]
    fn a_session_tracks_changes_forgets_and_checks_epochs() {
        let sessions = FetchSessions::default();
        assert!(matches!(
            sessions.resolve(0, 0, &[asked("t", 0, 0)], &[]),
            Ok(SessionRequest::New)
        ));
        let id = sessions.open(vec![tracked("t", 0, 0), tracked("t", 1, 0)]);
        assert_ne!(id, 0);
        // epoch 1: partition 1 moves, partition 2 is added
        let Ok(SessionRequest::Incremental { partitions, .. }) =
            sessions.resolve(id, 1, &[asked("t", 1, 5), asked("t", 2, 0)], &[])
        else {
            panic!("not incremental")
        };
        let offsets: Vec<(i32, i64)> = partitions
            .iter()
            .map(|t| (t.partition, t.fetch_offset))
            .collect();
        assert_eq!(offsets, vec![(0, 0), (1, 5), (2, 0)]);
        // epoch 2: partition 0 forgotten
        let Ok(SessionRequest::Incremental { partitions, .. }) =
            sessions.resolve(id, 2, &[], &[("t".into(), 0)])
        else {
            panic!("not incremental")
        };
        assert_eq!(partitions.len(), 2);
        // a stale or skipped epoch is refused; an unknown id too
        assert_eq!(
            sessions.resolve(id, 2, &[], &[]).err(),
            Some(ResponseError::InvalidFetchSessionEpoch)
        );
        assert_eq!(
            sessions.resolve(id ^ 1, 3, &[], &[]).err(),
            Some(ResponseError::FetchSessionIdNotFound)
        );
        // epoch -1 closes it
        assert!(matches!(
            sessions.resolve(id, -1, &[], &[]),
            Ok(SessionRequest::Sessionless)
        ));
        assert!(sessions.is_empty());
        assert!(matches!(
            sessions.resolve(0, -1, &[], &[]),
            Ok(SessionRequest::Sessionless)
        ));
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_the_least_recently_used() {
        let sessions = FetchSessions::default();
        let first = sessions.open(vec![tracked("t", 0, 0)]);
        for _ in 1..SESSIONS_MAX {
            sessions.open(vec![tracked("t", 0, 0)]);
        }
        assert_eq!(sessions.len(), SESSIONS_MAX);
        sessions.open(vec![tracked("t", 0, 0)]);
        assert_eq!(sessions.len(), SESSIONS_MAX);
        assert_eq!(
            sessions.resolve(first, 1, &[], &[]).err(),
            Some(ResponseError::FetchSessionIdNotFound)
        );
    }
}
