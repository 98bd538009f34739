//! The `MetaStore` conformance suite against both implementations: the
//! embedded store persisted in a temporary directory, and `EtcdStore` on a
//! real etcd started by this test binary (a missing etcd fails the tests).
//! Plus what only one side has: the embedded store's crash safety and
//! bounded history, and the etcd store's endpoint failover.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use sluice_metadata::conformance::{assert_watch_compacted, next_events, unique_prefix};
use sluice_metadata::embedded::{EmbeddedOptions, EmbeddedStore};
use sluice_metadata::etcd::{EtcdOptions, EtcdStore};
use sluice_metadata::testing::EtcdProcess;
use sluice_metadata::{
    KeyValue, LeaseId, MetaError, MetaResult, MetaStore, RangeResponse, Revision, Txn, TxnResponse,
    WatchStream,
};

/// An embedded store together with the temporary directory it lives in.
struct EmbeddedInDir {
    store: EmbeddedStore,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl MetaStore for EmbeddedInDir {
    async fn get(&self, key: &str) -> MetaResult<Option<KeyValue>> {
        self.store.get(key).await
    }
    async fn range(&self, prefix: &str) -> MetaResult<RangeResponse> {
        self.store.range(prefix).await
    }
    async fn put(&self, key: &str, value: Bytes, lease: Option<LeaseId>) -> MetaResult<Revision> {
        self.store.put(key, value, lease).await
    }
    async fn delete(&self, key: &str) -> MetaResult<bool> {
        self.store.delete(key).await
    }
    async fn txn(&self, txn: Txn) -> MetaResult<TxnResponse> {
        self.store.txn(txn).await
    }
    async fn lease_grant(&self, ttl_secs: i64) -> MetaResult<LeaseId> {
        self.store.lease_grant(ttl_secs).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> MetaResult<i64> {
        self.store.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> MetaResult<()> {
        self.store.lease_revoke(lease).await
    }
    async fn watch_prefix(
        &self,
        prefix: &str,
        start_revision: Revision,
    ) -> MetaResult<WatchStream> {
        self.store.watch_prefix(prefix, start_revision).await
    }
}

async fn embedded_store() -> Arc<dyn MetaStore> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
    Arc::new(EmbeddedInDir { store, _dir: dir })
}

/// One etcd for the whole test binary (nextest runs each test in its own
/// process, so that is one per test there). Never dropped: the process
/// guard in `EtcdProcess` kills etcd when this process exits.
fn shared_etcd() -> &'static str {
    static ETCD: OnceLock<Result<EtcdProcess, String>> = OnceLock::new();
    match ETCD.get_or_init(|| EtcdProcess::start().map_err(|e| e.to_string())) {
        Ok(etcd) => etcd.endpoint(),
        Err(e) => panic!("etcd is required for these tests and did not start: {e}"),
    }
}

async fn etcd_store() -> Arc<dyn MetaStore> {
    let endpoint = tokio::task::spawn_blocking(shared_etcd)
        .await
        .expect("start etcd");
    Arc::new(
        EtcdStore::connect(vec![endpoint.to_string()], EtcdOptions::default())
            .await
            .expect("connect to etcd"),
    )
}

mod embedded {
    sluice_metadata::metastore_conformance!(super::embedded_store);
}

mod etcd {
    sluice_metadata::metastore_conformance!(super::etcd_store);
}

/// An address nothing listens on.
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_fails_over_from_a_dead_endpoint() {
    let live = tokio::task::spawn_blocking(shared_etcd)
        .await
        .expect("start etcd")
        .to_string();
    let store = EtcdStore::connect(vec![dead_endpoint(), live], EtcdOptions::default())
        .await
        .expect("connect");
    let p = unique_prefix("failover");
    // Writes too: a refused connection proves the request was never sent.
    let r = store
        .put(&format!("{p}k"), Bytes::from_static(b"v"), None)
        .await
        .expect("put");
    assert_eq!(
        store
            .get(&format!("{p}k"))
            .await
            .expect("get")
            .expect("key")
            .mod_revision,
        r
    );
    let lease = store.lease_grant(30).await.expect("grant");
    store.lease_keep_alive(lease).await.expect("keep alive");
    let mut watch = store.watch_prefix(&p, r).await.expect("watch");
    assert_eq!(next_events(&mut watch, 1).await[0].key(), format!("{p}k"));
    store.lease_revoke(lease).await.expect("revoke");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_fails_over_when_an_endpoint_dies() {
    let live = tokio::task::spawn_blocking(shared_etcd)
        .await
        .expect("start etcd")
        .to_string();
    let doomed = tokio::task::spawn_blocking(EtcdProcess::start)
        .await
        .expect("join")
        .expect("start second etcd");
    let store = EtcdStore::connect(
        vec![doomed.endpoint().to_string(), live],
        EtcdOptions::default(),
    )
    .await
    .expect("connect");
    let p = unique_prefix("failover_dies");
    store
        .put(&format!("{p}first"), Bytes::from_static(b"1"), None)
        .await
        .expect("put on the first endpoint");
    let mut watch = store
        .watch_prefix(&p, 0)
        .await
        .expect("watch on the first endpoint");
    drop(doomed);

    // A watch on the dead endpoint ends with an error, never silently.
    match tokio::time::timeout(
        Duration::from_secs(10),
        futures::StreamExt::next(&mut watch),
    )
    .await
    {
        Ok(Some(Err(MetaError::Unavailable(_)))) => {}
        other => panic!(
            "expected the watch to fail, got {:?}",
            other.map(|o| o.map(|r| r.map_err(|e| e.to_string())))
        ),
    }
    // Reads fail over whatever the failure was. (A write racing with the
    // connection's death could be ambiguous and is then not retried; once
    // the connection is known dead, a refused reconnect is retried.)
    let started = Instant::now();
    assert_eq!(
        store
            .get(&format!("{p}first"))
            .await
            .expect("get after failover"),
        None,
        "the other etcd"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failover is quick: {:?}",
        started.elapsed()
    );
    store
        .put(&format!("{p}second"), Bytes::from_static(b"2"), None)
        .await
        .expect("put after failover");
    let kv = store
        .get(&format!("{p}second"))
        .await
        .expect("get")
        .expect("key");
    assert_eq!(kv.value.as_ref(), b"2");
}

/// A server that accepts connections and never answers.
fn black_hole() -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        // Bounded: a handful of connections is all a test makes.
        for conn in listener.incoming().take(8) {
            match conn {
                Ok(conn) => held.push(conn),
                Err(_) => break,
            }
        }
    });
    (format!("http://{addr}"), handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_ambiguous_write_is_surfaced_not_retried() {
    let live = tokio::task::spawn_blocking(shared_etcd)
        .await
        .expect("start etcd")
        .to_string();
    let (silent, _server) = black_hole();
    let options = EtcdOptions {
        call_timeout: Duration::from_millis(500),
        ..EtcdOptions::default()
    };
    let store = EtcdStore::connect_lazy(vec![silent, live], options).expect("connect");
    let key = format!("{}k", unique_prefix("ambiguous"));

    // The write reached a server that never answered: it may have been
    // applied, so it is reported, not repeated elsewhere.
    match store.put(&key, Bytes::from_static(b"v"), None).await {
        Err(MetaError::Unavailable(message)) => {
            assert!(message.contains("may or may not"), "{message}")
        }
        other => panic!("expected an ambiguous failure, got {other:?}"),
    }
    // A read is retried on the next endpoint, which then serves the writes.
    assert_eq!(store.get(&key).await.expect("read fails over"), None);
    store
        .put(&key, Bytes::from_static(b"v"), None)
        .await
        .expect("write on the live endpoint");
}

#[tokio::test]
async fn etcd_without_any_live_endpoint_is_unavailable() {
    let options = EtcdOptions {
        retry_budget: Duration::from_secs(2),
        ..EtcdOptions::default()
    };
    let started = Instant::now();
    match EtcdStore::connect(vec![dead_endpoint(), dead_endpoint()], options).await {
        Err(MetaError::Unavailable(message)) => assert!(message.contains("attempts"), "{message}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "bounded: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn etcd_watch_from_a_compacted_revision_fails() {
    // A private etcd: compaction would disturb other tests' replays.
    let etcd = tokio::task::spawn_blocking(EtcdProcess::start)
        .await
        .expect("join")
        .expect("start etcd");
    let store = EtcdStore::connect(vec![etcd.endpoint().to_string()], EtcdOptions::default())
        .await
        .expect("connect");
    let first = store
        .put("/compact/a", Bytes::from_static(b"1"), None)
        .await
        .expect("put");
    let last = store
        .put("/compact/a", Bytes::from_static(b"2"), None)
        .await
        .expect("put");
    store.compact(last).await.expect("compact");
    assert_watch_compacted(&store, "/compact/", first).await;
    let mut watch = store
        .watch_prefix("/compact/", last)
        .await
        .expect("watch at the compaction revision");
    assert_eq!(next_events(&mut watch, 1).await.len(), 1);
}

#[tokio::test]
async fn embedded_watch_from_a_compacted_revision_fails() {
    let store = EmbeddedStore::in_memory_with(EmbeddedOptions {
        history_max_events: 3,
        ..EmbeddedOptions::default()
    });
    let first = store
        .put("/compact/a", Bytes::from_static(b"1"), None)
        .await
        .expect("put");
    for i in 0..5 {
        store
            .put("/compact/a", Bytes::from(format!("{i}")), None)
            .await
            .expect("put");
    }
    assert_watch_compacted(&store, "/compact/", first).await;
}

#[test]
fn missing_etcd_binary_is_an_error() {
    let err = EtcdProcess::start_binary("/nonexistent/etcd").expect_err("must not start");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

#[tokio::test]
async fn embedded_write_drop_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = unique_prefix("reopen");
    let (revision, lease) = {
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let lease = store.lease_grant(120).await.expect("grant");
        store
            .put(&format!("{p}a"), Bytes::from_static(b"1"), None)
            .await
            .expect("put");
        store
            .put(&format!("{p}b"), Bytes::from_static(b"2"), Some(lease))
            .await
            .expect("put");
        store.delete(&format!("{p}a")).await.expect("delete");
        (store.revision(), lease)
    };
    let store = EmbeddedStore::open(dir.path()).expect("reopen");
    assert_eq!(store.revision(), revision);
    let range = store.range(&p).await.expect("range");
    assert_eq!(range.revision, revision);
    assert_eq!(range.kvs.len(), 1);
    assert_eq!(
        (range.kvs[0].value.as_ref(), range.kvs[0].lease),
        (&b"2"[..], lease)
    );
    // Writes continue from the restored revision.
    assert_eq!(
        store
            .put(&format!("{p}c"), Bytes::new(), None)
            .await
            .expect("put"),
        revision + 1
    );
}

const KILL9_CHILD_DIR: &str = "SLUICE_TEST_KILL9_CHILD_DIR";
const KILL9_ACKS: usize = 40;

/// The child half of `embedded_survives_kill_9`: writes until killed,
/// printing each acknowledged write.
fn kill9_child(dir: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = EmbeddedStore::open(dir).expect("open");
        let lease = store.lease_grant(600).await.expect("grant");
        println!("KILL9 lease {lease}");
        for i in 0..100_000 {
            let key = format!("/kill9/{i:06}");
            let on_lease = (i % 2 == 0).then_some(lease);
            let revision = store
                .put(&key, Bytes::from(format!("value {i}")), on_lease)
                .await
                .expect("put");
            println!("KILL9 acked {i} {revision}");
        }
    });
}

#[test]
fn embedded_survives_kill_9() {
    if let Ok(dir) = std::env::var(KILL9_CHILD_DIR) {
        return kill9_child(&dir);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "embedded_survives_kill_9",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL9_CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut acked: Vec<(usize, i64)> = Vec::new();
    let mut lease = None;
    // Lines arrive through a thread so that a silent child cannot hang the test.
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        // libtest may print its own text before ours on the same line.
        let Some(start) = line.find("KILL9 ") else {
            continue;
        };
        let mut words = line[start + "KILL9 ".len()..].split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("lease"), Some(id), None) => lease = id.parse::<i64>().ok(),
            (Some("acked"), Some(i), Some(rev)) => {
                acked.push((i.parse().expect("index"), rev.parse().expect("revision")));
            }
            _ => {}
        }
        if acked.len() >= KILL9_ACKS {
            break;
        }
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap child");
    assert!(
        acked.len() >= KILL9_ACKS,
        "child acknowledged only {} writes",
        acked.len()
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = EmbeddedStore::open(dir.path()).expect("reopen after kill -9");
        let lease = lease.expect("child granted a lease");
        let (last_index, last_revision) = *acked.last().expect("acks");
        assert!(
            store.revision() >= last_revision,
            "{} < {last_revision}",
            store.revision()
        );
        for (i, revision) in &acked {
            let kv = store
                .get(&format!("/kill9/{i:06}"))
                .await
                .expect("get")
                .expect("acknowledged key survived");
            assert_eq!(kv.value, Bytes::from(format!("value {i}")));
            assert_eq!(kv.mod_revision, *revision);
            assert_eq!(kv.lease, if i % 2 == 0 { lease } else { 0 });
        }
        // The lease came back (with its full TTL) and still owns its keys.
        assert_eq!(
            store.lease_keep_alive(lease).await.expect("lease restored"),
            600
        );
        store.lease_revoke(lease).await.expect("revoke");
        let left = store.range("/kill9/").await.expect("range").kvs;
        assert!(left.iter().all(|kv| kv.lease == 0));
        assert!(left.len() > last_index / 2 - 1);
    });
}
