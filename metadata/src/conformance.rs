//! The conformance suite every [`MetaStore`] implementation must pass,
//! written once and run against the embedded store and a real etcd.
//!
//! Each behaviour is a `pub async fn` taking the store under test; the
//! [`metastore_conformance!`](crate::metastore_conformance) macro expands to
//! one `#[tokio::test]` per behaviour:
//!
//! ```no_run
//! mod embedded {
//!     sluice_metadata::metastore_conformance!(|| async {
//!         std::sync::Arc::new(sluice_metadata::embedded::EmbeddedStore::in_memory())
//!             as std::sync::Arc<dyn sluice_metadata::MetaStore>
//!     });
//! }
//! ```
//!
//! Every behaviour works under its own unique key prefix and asserts only
//! relations between revisions it produced itself, so the tests can share
//! one etcd and run concurrently. Expiry is awaited by polling with a bound
//! ([`WAIT`]), never by fixed sleeps alone. The functions panic on failure,
//! as tests do.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::store::{
    CmpOp, Compare, KeyValue, MetaError, MetaResult, MetaStore, Revision, Txn, TxnOp,
    TxnOpResponse, WatchEvent, WatchStream,
};

/// Upper bound of any wait in the suite (lease expiry, watch events).
pub const WAIT: Duration = Duration::from_secs(10);

/// Expands to one `#[tokio::test]` per conformance behaviour (the calling
/// crate needs `tokio` with its `macros` and `rt-multi-thread` features).
/// The argument is an expression callable with no arguments that returns a
/// future of an `Arc<dyn MetaStore>` (a closure returning an `async` block,
/// or the path of an `async fn`); it is called once per test, so each test
/// gets a fresh store (or a fresh client of a shared one).
#[macro_export]
macro_rules! metastore_conformance {
    ($factory:expr) => {
        $crate::metastore_conformance!(@tests $factory;
            put_get_delete_revisions,
            invalid_requests_are_refused,
            range_by_prefix_in_key_order,
            txn_writes_share_one_revision,
            txn_compare_targets,
            txn_ops_and_responses,
            txn_reads_see_earlier_writes,
            cas_race_increments_land_once,
            lease_expiry_deletes_attached_keys,
            lease_keep_alive_keeps_keys,
            lease_revoke_deletes_keys,
            watch_events_in_order,
            watch_replays_history,
            watch_from_now,
            watch_sees_lease_expiry,
        );
    };
    (@tests $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: ::std::sync::Arc<dyn $crate::MetaStore> = ($factory)().await;
                $crate::conformance::$name(store).await;
            }
        )*
    };
}

/// A key prefix no other test (or run) uses.
pub fn unique_prefix(test: &str) -> String {
    format!("/conformance/{test}/{}/", uuid::Uuid::new_v4().simple())
}

fn val(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn must<T>(result: MetaResult<T>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Polls `check` until it returns true, panicking after [`WAIT`].
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads events from `stream` until `count` have arrived (panics after
/// [`WAIT`], on a stream error or on more events than expected in a batch).
pub async fn next_events(stream: &mut WatchStream, count: usize) -> Vec<WatchEvent> {
    let mut events = Vec::new();
    while events.len() < count {
        match tokio::time::timeout(WAIT, stream.next()).await {
            Ok(Some(Ok(batch))) => {
                assert!(!batch.is_empty(), "watch delivered an empty batch");
                events.extend(batch);
            }
            Ok(Some(Err(e))) => {
                panic!("watch failed after {} of {count} events: {e}", events.len())
            }
            Ok(None) => panic!("watch ended after {} of {count} events", events.len()),
            Err(_) => panic!(
                "timed out after {} of {count} watch events: {events:?}",
                events.len()
            ),
        }
    }
    assert_eq!(events.len(), count, "more events than expected: {events:?}");
    events
}

/// Asserts that no event arrives on `stream` within `quiet`.
pub async fn assert_no_events(stream: &mut WatchStream, quiet: Duration) {
    if let Ok(item) = tokio::time::timeout(quiet, stream.next()).await {
        panic!(
            "unexpected watch item: {:?}",
            item.map(|r| r.map_err(|e| e.to_string()))
        );
    }
}

/// Asserts that watching `prefix` from `revision` reports
/// [`MetaError::Compacted`], either at once or as the stream's first item
/// (etcd reports it on the stream).
pub async fn assert_watch_compacted(store: &dyn MetaStore, prefix: &str, revision: Revision) {
    match store.watch_prefix(prefix, revision).await {
        Err(MetaError::Compacted { requested, oldest }) => {
            assert_eq!(requested, revision);
            assert!(
                oldest > revision,
                "oldest retained {oldest} must be after {revision}"
            );
        }
        Err(e) => panic!("expected a compacted error, got {e}"),
        Ok(mut stream) => match tokio::time::timeout(WAIT, stream.next()).await {
            Ok(Some(Err(MetaError::Compacted { requested, oldest }))) => {
                assert_eq!(requested, revision);
                assert!(
                    oldest > revision,
                    "oldest retained {oldest} must be after {revision}"
                );
                assert!(
                    stream.next().await.is_none(),
                    "the stream ends after the error"
                );
            }
            other => panic!(
                "expected a compacted error on the stream, got {:?}",
                other.map(|o| o.map(|r| r.map_err(|e| e.to_string())))
            ),
        },
    }
}

async fn get(store: &dyn MetaStore, key: &str) -> Option<KeyValue> {
    must(store.get(key).await, "get")
}

async fn put(store: &dyn MetaStore, key: &str, value: &str) -> Revision {
    must(store.put(key, val(value), None).await, "put")
}

/// get/put/delete: revisions, versions, create revision, lease 0.
pub async fn put_get_delete_revisions(store: Arc<dyn MetaStore>) {
    let store = store.as_ref();
    let p = unique_prefix("put_get_delete");
    let key = format!("{p}k");
    assert_eq!(get(store, &key).await, None);

    let r1 = put(store, &key, "one").await;
    let kv = get(store, &key).await.expect("key after put");
    assert_eq!(kv.key, key);
    assert_eq!(kv.value, val("one"));
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version, kv.lease),
        (r1, r1, 1, 0)
    );

    let r2 = put(store, &key, "two").await;
    assert!(r2 > r1, "every put bumps the revision ({r2} > {r1})");
    let kv = get(store, &key).await.expect("key after second put");
    assert_eq!(kv.value, val("two"));
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r2, 2)
    );

    assert!(must(store.delete(&key).await, "delete"));
    assert_eq!(get(store, &key).await, None);
    assert!(
        !must(store.delete(&key).await, "delete absent"),
        "deleting an absent key reports false"
    );

    let r3 = put(store, &key, "three").await;
    let kv = get(store, &key).await.expect("key after re-create");
    assert!(r3 > r2);
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r3, r3, 1),
        "re-created key starts over"
    );

    // The store revision covers our writes.
    let range = must(store.range(&p).await, "range");
    assert!(range.revision >= r3);
    // An empty value is a value.
    let empty = format!("{p}empty");
    put(store, &empty, "").await;
    assert_eq!(
        get(store, &empty).await.expect("empty value").value.len(),
        0
    );
}

/// Requests etcd refuses are refused: empty keys, duplicate keys in one
/// branch, more operations than etcd's default limit (128).
pub async fn invalid_requests_are_refused(store: Arc<dyn MetaStore>) {
    let p = unique_prefix("invalid");
    assert!(
        matches!(
            store.put("", val("x"), None).await,
            Err(MetaError::Invalid(_))
        ),
        "empty key put"
    );
    let dup = Txn::new().and_then([
        TxnOp::put(format!("{p}a"), "1"),
        TxnOp::put(format!("{p}a"), "2"),
    ]);
    assert!(
        matches!(store.txn(dup).await, Err(MetaError::Invalid(_))),
        "duplicate key in a branch"
    );
    let overlap = Txn::new().and_then([
        TxnOp::put(format!("{p}a/b"), "1"),
        TxnOp::delete_prefix(format!("{p}a/")),
    ]);
    assert!(
        matches!(store.txn(overlap).await, Err(MetaError::Invalid(_))),
        "put inside a deleted prefix"
    );
    let too_many = Txn::new().and_then((0..129).map(|i| TxnOp::put(format!("{p}many/{i}"), "x")));
    assert!(
        matches!(store.txn(too_many).await, Err(MetaError::Invalid(_))),
        "too many operations"
    );
    assert!(
        must(store.range(&p).await, "range").kvs.is_empty(),
        "refused requests wrote nothing"
    );
}

/// A prefix range returns exactly the keys under the prefix, in key order.
pub async fn range_by_prefix_in_key_order(store: Arc<dyn MetaStore>) {
    let store = store.as_ref();
    let p = unique_prefix("range");
    let keys = ["m", "a", "z", "b/2", "b/10", "b/1", "A", "é"];
    let mut last = 0;
    for k in keys {
        last = put(store, &format!("{p}dir/{k}"), k).await;
    }
    // Neighbours that share a string prefix but not the key prefix.
    put(store, &format!("{p}dir"), "parent").await;
    put(store, &format!("{p}dirt/x"), "sibling").await;

    let range = must(store.range(&format!("{p}dir/")).await, "range");
    let mut expected: Vec<String> = keys.iter().map(|k| format!("{p}dir/{k}")).collect();
    expected.sort();
    let got: Vec<String> = range.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(got, expected);
    assert!(range
        .kvs
        .iter()
        .all(|kv| kv.value == val(kv.key.rsplit("dir/").next().unwrap_or_default())));
    assert!(range.revision >= last);

    let nested = must(store.range(&format!("{p}dir/b/")).await, "nested range");
    assert_eq!(nested.kvs.len(), 3);
    let none = must(store.range(&format!("{p}nothing/")).await, "empty range");
    assert!(none.kvs.is_empty());
    assert!(
        none.revision >= last,
        "an empty range still reports the store revision"
    );
    let all = must(store.range(&p).await, "whole prefix");
    assert_eq!(all.kvs.len(), keys.len() + 2);
}

/// All writes of one transaction happen at one revision, bumped once.
pub async fn txn_writes_share_one_revision(store: Arc<dyn MetaStore>) {
    let store = store.as_ref();
    let p = unique_prefix("txn_revision");
    let before = put(store, &format!("{p}seed"), "x").await;
    let resp = must(
        store
            .txn(Txn::new().and_then([
                TxnOp::put(format!("{p}a"), "1"),
                TxnOp::put(format!("{p}b"), "2"),
                TxnOp::delete(format!("{p}seed")),
            ]))
            .await,
        "txn",
    );
    assert!(resp.succeeded, "a transaction without compares succeeds");
    assert!(resp.revision > before);
    let range = must(store.range(&p).await, "range");
    assert_eq!(range.kvs.len(), 2);
    for kv in &range.kvs {
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version),
            (resp.revision, resp.revision, 1)
        );
    }
    // The next write gets the next revision at the earliest.
    let after = put(store, &format!("{p}c"), "3").await;
    assert!(after > resp.revision);
}

/// Each compare target and operator, on present and absent keys.
pub async fn txn_compare_targets(store: Arc<dyn MetaStore>) {
    let store = store.as_ref();
    let p = unique_prefix("txn_compare");
    let key = format!("{p}key");
    let absent = format!("{p}absent");
    let r1 = put(store, &key, "b").await;
    let r2 = put(store, &key, "b").await; // version 2, create r1, mod r2

    let marker = format!("{p}marker");
    use CmpOp::{Equal, Greater, Less, NotEqual};
    let cases: Vec<(Compare, bool)> = vec![
        (Compare::mod_revision(&key, Equal, r2), true),
        (Compare::mod_revision(&key, Equal, r1), false),
        (Compare::mod_revision(&key, NotEqual, r1), true),
        (Compare::mod_revision(&key, Less, r2 + 1), true),
        (Compare::mod_revision(&key, Greater, r2), false),
        (Compare::create_revision(&key, Equal, r1), true),
        (Compare::create_revision(&key, Greater, r1 - 1), true),
        (Compare::create_revision(&key, Less, r1), false),
        (Compare::version(&key, Equal, 2), true),
        (Compare::version(&key, Equal, 1), false),
        (Compare::version(&key, Greater, 1), true),
        (Compare::version(&key, Less, 2), false),
        (Compare::value(&key, Equal, "b"), true),
        (Compare::value(&key, NotEqual, "b"), false),
        (Compare::value(&key, NotEqual, "c"), true),
        (Compare::value(&key, Less, "c"), true),
        (Compare::value(&key, Greater, "a"), true),
        (Compare::value(&key, Greater, "bb"), false),
        (Compare::absent(&key), false),
        // An absent key has revisions and version 0…
        (Compare::absent(&absent), true),
        (Compare::mod_revision(&absent, Equal, 0), true),
        (Compare::version(&absent, Equal, 0), true),
        (Compare::version(&absent, Greater, 0), false),
        (Compare::create_revision(&absent, Less, 1), true),
        // …and no value: every value compare on it is false.
        (Compare::value(&absent, Equal, ""), false),
        (Compare::value(&absent, NotEqual, "x"), false),
        (Compare::value(&absent, Less, "x"), false),
    ];
    for (cmp, expected) in cases {
        assert_eq!(
            compare_holds(store, &marker, cmp.clone()).await,
            expected,
            "{cmp:?}"
        );
    }
    // All compares must hold.
    let mixed = [Compare::version(&key, Equal, 2), Compare::absent(&key)];
    let resp = must(store.txn(Txn::new().when(mixed)).await, "mixed compares");
    assert!(!resp.succeeded, "one failing compare fails the transaction");
}

async fn compare_holds(store: &dyn MetaStore, marker: &str, cmp: Compare) -> bool {
    let txn = Txn::new()
        .when([cmp.clone()])
        .and_then([TxnOp::get(marker)])
        .or_else([TxnOp::get(marker)]);
    let resp = must(store.txn(txn).await, "compare txn");
    assert_eq!(resp.responses.len(), 1, "{cmp:?}: one response per op");
    resp.succeeded
}

/// Operations of the branch that ran, their responses, and the revision.
pub async fn txn_ops_and_responses(store: Arc<dyn MetaStore>) {
    let store = store.as_ref();
    let p = unique_prefix("txn_ops");
    let head = format!("{p}head");
    let r0 = put(store, &head, "0").await;
    put(store, &format!("{p}dir/a"), "a").await;
    put(store, &format!("{p}dir/b"), "b").await;
    let old = put(store, &format!("{p}old"), "gone soon").await;

    // Success branch: compare holds.
    let resp = must(
        store
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(&head, CmpOp::Equal, r0)])
                    .and_then([
                        TxnOp::put(&head, "1"),
                        TxnOp::get(format!("{p}dir/a")),
                        TxnOp::get_prefix(format!("{p}dir/")),
                        TxnOp::delete(format!("{p}old")),
                        TxnOp::delete(format!("{p}never")),
                        TxnOp::get(format!("{p}never")),
                    ])
                    .or_else([TxnOp::put(format!("{p}failure-ran"), "x")]),
            )
            .await,
        "success txn",
    );
    assert!(resp.succeeded);
    assert!(resp.revision > old);
    assert_eq!(resp.responses.len(), 6);
    assert_eq!(resp.responses[0], TxnOpResponse::Put);
    match &resp.responses[1] {
        TxnOpResponse::Get(kvs) => {
            assert_eq!(kvs.len(), 1);
            assert_eq!(kvs[0].value, val("a"));
        }
        other => panic!("expected a get response, got {other:?}"),
    }
    match &resp.responses[2] {
        TxnOpResponse::Get(kvs) => {
            let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
            assert_eq!(keys, [format!("{p}dir/a"), format!("{p}dir/b")]);
        }
        other => panic!("expected a get response, got {other:?}"),
    }
    assert_eq!(resp.responses[3], TxnOpResponse::Delete { deleted: 1 });
    assert_eq!(resp.responses[4], TxnOpResponse::Delete { deleted: 0 });
    assert_eq!(resp.responses[5], TxnOpResponse::Get(vec![]));
    assert_eq!(
        get(store, &format!("{p}failure-ran")).await,
        None,
        "the failure branch did not run"
    );
    let head_kv = get(store, &head).await.expect("head");
    assert_eq!(
        (head_kv.value.clone(), head_kv.mod_revision),
        (val("1"), resp.revision)
    );
    assert_eq!(get(store, &format!("{p}old")).await, None);

    // Failure branch: the same compare is now stale.
    let resp = must(
        store
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(&head, CmpOp::Equal, r0)])
                    .and_then([TxnOp::put(&head, "2")])
                    .or_else([TxnOp::get(&head), TxnOp::delete_prefix(format!("{p}dir/"))]),
            )
            .await,
        "failure txn",
    );
    assert!(!resp.succeeded);
    assert_eq!(resp.responses.len(), 2);
    match &resp.responses[0] {
        TxnOpResponse::Get(kvs) => assert_eq!(
            kvs[0].mod_revision, head_kv.mod_revision,
            "current head returned"
        ),
        other => panic!("expected a get response, got {other:?}"),
    }
    assert_eq!(resp.responses[1], TxnOpResponse::Delete { deleted: 2 });
    assert!(
        resp.revision > head_kv.mod_revision,
        "the failure branch wrote at a new revision"
    );
    assert_eq!(
        get(store, &head).await.expect("head").value,
        val("1"),
        "the success branch did not run"
    );
    assert!(must(store.range(&format!("{p}dir/")).await, "range")
        .kvs
        .is_empty());

    // A read-only transaction does not bump the revision of what it read.
    let resp = must(
        store.txn(Txn::new().and_then([TxnOp::get(&head)])).await,
        "read txn",
    );
    match &resp.responses[0] {
        TxnOpResponse::Get(kvs) => assert_eq!(kvs[0].mod_revision, head_kv.mod_revision),
        other => panic!("expected a get response, got {other:?}"),
    }
    // An empty branch is fine too.
    let resp = must(
        store.txn(Txn::new().when([Compare::absent(&head)])).await,
        "empty txn",
    );
    assert!(!resp.succeeded);
    assert!(resp.responses.is_empty());
}

/// Reads inside a transaction see the transaction's earlier writes (as in
/// etcd, where a transaction is one write view).
pub async fn txn_reads_see_earlier_writes(store: Arc<dyn MetaStore>) {
    let p = unique_prefix("txn_read_own");
    put(store.as_ref(), &format!("{p}x"), "old").await;
    let resp = must(
        store
            .txn(Txn::new().and_then([
                TxnOp::put(format!("{p}x"), "new"),
                TxnOp::get(format!("{p}x")),
                TxnOp::put(format!("{p}y"), "fresh"),
                TxnOp::get_prefix(&p),
            ]))
            .await,
        "txn",
    );
    match (&resp.responses[1], &resp.responses[3]) {
        (TxnOpResponse::Get(x), TxnOpResponse::Get(all)) => {
            assert_eq!(x[0].value, val("new"));
            assert_eq!((x[0].mod_revision, x[0].version), (resp.revision, 2));
            let values: Vec<Bytes> = all.iter().map(|kv| kv.value.clone()).collect();
            assert_eq!(values, [val("new"), val("fresh")]);
        }
        other => panic!("expected get responses, got {other:?}"),
    }
}

/// N concurrent read-modify-write increments through compare-and-swap all
/// land exactly once.
pub async fn cas_race_increments_land_once(store: Arc<dyn MetaStore>) {
    const WRITERS: usize = 16;
    const ATTEMPTS_MAX: usize = 500;
    let p = unique_prefix("cas_race");
    let counter = format!("{p}counter");
    put(store.as_ref(), &counter, "0").await;
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let store = store.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ATTEMPTS_MAX {
                let kv = must(store.get(&counter).await, "get counter").expect("counter exists");
                let n: u64 = std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .expect("a number");
                let resp = must(
                    store
                        .txn(
                            Txn::new()
                                .when([Compare::mod_revision(
                                    &counter,
                                    CmpOp::Equal,
                                    kv.mod_revision,
                                )])
                                .and_then([TxnOp::put(&counter, (n + 1).to_string())]),
                        )
                        .await,
                    "cas",
                );
                if resp.succeeded {
                    return resp.revision;
                }
            }
            panic!("no increment landed in {ATTEMPTS_MAX} attempts");
        }));
    }
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await.expect("writer task"));
    }
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(
        revisions.len(),
        WRITERS,
        "each increment landed at its own revision"
    );
    let kv = get(store.as_ref(), &counter).await.expect("counter");
    assert_eq!(kv.value, val(&WRITERS.to_string()));
    assert_eq!(kv.version, WRITERS as i64 + 1);
}

/// Keys attached to a lease vanish when it expires; others stay; the lease
/// is gone afterwards.
pub async fn lease_expiry_deletes_attached_keys(store: Arc<dyn MetaStore>) {
    let p = unique_prefix("lease_expiry");
    let lease = must(store.lease_grant(1).await, "grant");
    must(
        store.put(&format!("{p}a"), val("a"), Some(lease)).await,
        "put a",
    );
    let resp = must(
        store
            .txn(Txn::new().and_then([TxnOp::put_with_lease(format!("{p}b"), "b", lease)]))
            .await,
        "txn put b",
    );
    assert!(resp.succeeded);
    put(store.as_ref(), &format!("{p}free"), "unleased").await;
    let kv = get(store.as_ref(), &format!("{p}a")).await.expect("a");
    assert_eq!(kv.lease, lease);

    let prefix = p.clone();
    let s = store.clone();
    wait_until("leased keys to expire", move || {
        let (s, prefix) = (s.clone(), prefix.clone());
        async move { must(s.range(&prefix).await, "range").kvs.len() == 1 }
    })
    .await;
    let left = must(store.range(&p).await, "range");
    assert_eq!(left.kvs[0].key, format!("{p}free"));
    assert!(
        matches!(store.lease_keep_alive(lease).await, Err(MetaError::LeaseNotFound(id)) if id == lease)
    );
    assert!(matches!(
        store.put(&format!("{p}late"), val("x"), Some(lease)).await,
        Err(MetaError::LeaseNotFound(id)) if id == lease
    ));
}

/// Keep-alives hold a short lease (and its keys) well past its TTL.
pub async fn lease_keep_alive_keeps_keys(store: Arc<dyn MetaStore>) {
    let p = unique_prefix("lease_keep_alive");
    let key = format!("{p}alive");
    let lease = must(store.lease_grant(2).await, "grant");
    must(store.put(&key, val("x"), Some(lease)).await, "put");
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let ttl = must(store.lease_keep_alive(lease).await, "keep alive");
        assert_eq!(ttl, 2, "keep-alive reports the granted ttl");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        get(store.as_ref(), &key).await.is_some(),
        "the key outlived its ttl thanks to keep-alives"
    );
    must(store.lease_revoke(lease).await, "revoke");
    assert_eq!(get(store.as_ref(), &key).await, None);
}

/// Revoking a lease deletes its keys at once; the lease is then unknown.
/// A key re-put without the lease no longer belongs to it.
pub async fn lease_revoke_deletes_keys(store: Arc<dyn MetaStore>) {
    let store_ref = store.as_ref();
    let p = unique_prefix("lease_revoke");
    let lease = must(store.lease_grant(60).await, "grant");
    let other = must(store.lease_grant(60).await, "grant other");
    assert_ne!(lease, other);
    for k in ["a", "b", "moved", "detached"] {
        must(
            store.put(&format!("{p}{k}"), val(k), Some(lease)).await,
            "put",
        );
    }
    must(
        store
            .put(&format!("{p}moved"), val("moved"), Some(other))
            .await,
        "move to other lease",
    );
    put(store_ref, &format!("{p}detached"), "no lease").await;
    assert_eq!(
        get(store_ref, &format!("{p}detached"))
            .await
            .expect("detached")
            .lease,
        0
    );

    must(store.lease_revoke(lease).await, "revoke");
    let left: Vec<String> = must(store.range(&p).await, "range")
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(left, [format!("{p}detached"), format!("{p}moved")]);
    assert!(
        matches!(store.lease_keep_alive(lease).await, Err(MetaError::LeaseNotFound(id)) if id == lease)
    );
    assert!(
        matches!(store.lease_revoke(lease).await, Err(MetaError::LeaseNotFound(id)) if id == lease)
    );
    let txn = Txn::new().and_then([TxnOp::put_with_lease(format!("{p}c"), "c", lease)]);
    assert!(matches!(store.txn(txn).await, Err(MetaError::LeaseNotFound(id)) if id == lease));
    assert!(matches!(
        store.lease_keep_alive(i64::MAX - 7).await,
        Err(MetaError::LeaseNotFound(_))
    ));

    must(store.lease_revoke(other).await, "revoke other");
    assert_eq!(must(store.range(&p).await, "range").kvs.len(), 1);
}

/// A watch delivers puts and deletes under its prefix, in revision order,
/// with the key's new state; other prefixes stay silent.
pub async fn watch_events_in_order(store: Arc<dyn MetaStore>) {
    let store_ref = store.as_ref();
    let p = unique_prefix("watch_order");
    let start = must(store.range(&p).await, "range").revision + 1;
    let mut watch = must(store.watch_prefix(&format!("{p}w/"), start).await, "watch");

    let r1 = put(store_ref, &format!("{p}w/a"), "1").await;
    put(store_ref, &format!("{p}elsewhere"), "ignored").await;
    let r2 = put(store_ref, &format!("{p}w/a"), "2").await;
    let txn = must(
        store
            .txn(Txn::new().and_then([
                TxnOp::put(format!("{p}w/b"), "3"),
                TxnOp::put(format!("{p}w/c"), "4"),
            ]))
            .await,
        "txn",
    );
    assert!(must(store.delete(&format!("{p}w/a")).await, "delete"));
    let r4 = must(store.range(&p).await, "range").revision;

    let events = next_events(&mut watch, 5).await;
    match &events[0] {
        WatchEvent::Put(kv) => {
            assert_eq!(
                (kv.key.as_str(), kv.value.clone()),
                (format!("{p}w/a").as_str(), val("1"))
            );
            assert_eq!(
                (kv.create_revision, kv.mod_revision, kv.version),
                (r1, r1, 1)
            );
        }
        other => panic!("expected a put, got {other:?}"),
    }
    match &events[1] {
        WatchEvent::Put(kv) => assert_eq!(
            (kv.mod_revision, kv.version, kv.value.clone()),
            (r2, 2, val("2"))
        ),
        other => panic!("expected a put, got {other:?}"),
    }
    let txn_keys: Vec<&str> = events[2..4].iter().map(WatchEvent::key).collect();
    assert_eq!(txn_keys, [format!("{p}w/b"), format!("{p}w/c")]);
    for e in &events[2..4] {
        match e {
            WatchEvent::Put(kv) => assert_eq!(kv.mod_revision, txn.revision),
            other => panic!("expected a put, got {other:?}"),
        }
    }
    match &events[4] {
        WatchEvent::Delete(kv) => {
            assert_eq!(kv.key, format!("{p}w/a"));
            assert!(
                kv.mod_revision > txn.revision && kv.mod_revision <= r4,
                "delete carries its revision"
            );
            assert!(kv.value.is_empty());
        }
        other => panic!("expected a delete, got {other:?}"),
    }
    assert_no_events(&mut watch, Duration::from_millis(200)).await;
}

/// A watch from an older revision first replays the retained history from
/// there, then continues live.
pub async fn watch_replays_history(store: Arc<dyn MetaStore>) {
    let store_ref = store.as_ref();
    let p = unique_prefix("watch_replay");
    let mut revisions = Vec::new();
    for i in 0..5 {
        revisions.push(put(store_ref, &format!("{p}k{i}"), &i.to_string()).await);
    }
    assert!(must(store.delete(&format!("{p}k0")).await, "delete"));

    // From the third write: k2, k3, k4, delete k0.
    let mut watch = must(store.watch_prefix(&p, revisions[2]).await, "watch");
    let events = next_events(&mut watch, 4).await;
    let keys: Vec<&str> = events.iter().map(WatchEvent::key).collect();
    assert_eq!(
        keys,
        [
            format!("{p}k2"),
            format!("{p}k3"),
            format!("{p}k4"),
            format!("{p}k0")
        ]
    );
    assert!(matches!(events[3], WatchEvent::Delete(_)));
    match &events[0] {
        WatchEvent::Put(kv) => assert_eq!(kv.mod_revision, revisions[2]),
        other => panic!("expected a put, got {other:?}"),
    }
    // Then live.
    let live = put(store_ref, &format!("{p}k5"), "5").await;
    let events = next_events(&mut watch, 1).await;
    match &events[0] {
        WatchEvent::Put(kv) => {
            assert_eq!((kv.key.clone(), kv.mod_revision), (format!("{p}k5"), live))
        }
        other => panic!("expected a put, got {other:?}"),
    }

    // From the very first write, everything again.
    let mut all = must(
        store.watch_prefix(&p, revisions[0]).await,
        "watch from start",
    );
    let events = next_events(&mut all, 7).await;
    let mods: Vec<Revision> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Put(kv) | WatchEvent::Delete(kv) => kv.mod_revision,
        })
        .collect();
    assert!(
        mods.windows(2).all(|w| w[0] < w[1]),
        "replayed in revision order: {mods:?}"
    );
}

/// `start_revision` 0 watches from now on: nothing older is replayed.
pub async fn watch_from_now(store: Arc<dyn MetaStore>) {
    let p = unique_prefix("watch_now");
    put(store.as_ref(), &format!("{p}before"), "x").await;
    let mut watch = must(store.watch_prefix(&p, 0).await, "watch");
    let r = put(store.as_ref(), &format!("{p}after"), "y").await;
    let events = next_events(&mut watch, 1).await;
    match &events[0] {
        WatchEvent::Put(kv) => {
            assert_eq!((kv.key.clone(), kv.mod_revision), (format!("{p}after"), r))
        }
        other => panic!("expected a put, got {other:?}"),
    }
}

/// Keys deleted by lease expiry show up as delete events.
pub async fn watch_sees_lease_expiry(store: Arc<dyn MetaStore>) {
    let p = unique_prefix("watch_lease");
    let lease = must(store.lease_grant(1).await, "grant");
    let r = must(
        store
            .put(&format!("{p}ephemeral"), val("x"), Some(lease))
            .await,
        "put",
    );
    let mut watch = must(store.watch_prefix(&p, r + 1).await, "watch");
    let events = next_events(&mut watch, 1).await;
    match &events[0] {
        WatchEvent::Delete(kv) => {
            assert_eq!(kv.key, format!("{p}ephemeral"));
            assert!(kv.mod_revision > r);
        }
        other => panic!("expected a delete, got {other:?}"),
    }
}
