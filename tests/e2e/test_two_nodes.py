"""Two nodes, one etcd, one bucket: concurrent writes to the SAME partitions.

Correctness comes only from the etcd compare-and-swap on partition heads, so
the union must be complete with dense, unique offsets, and every acknowledged
offset must hold exactly the record acknowledged there -- read through either
node.
"""

from __future__ import annotations

import random

from harness import ProduceLog, Workers, produce_loop, random_record, send_batch, verify_log

PARTITIONS = 3
THREADS_PER_NODE = 4
REQUESTS_PER_THREAD = 40
PER_REQUEST = 40


def test_two_nodes_same_partitions(sluice):
    cluster = sluice.new_cluster()
    # A short flush interval makes the two nodes' commits overlap often, so
    # compare-and-swap conflicts really happen (asserted below).
    a = sluice.distributed(cluster, flush_interval="5ms")
    b = sluice.distributed(cluster, flush_interval="5ms")
    assert a.node_id != b.node_id and a.data_dir != b.data_dir
    topic = "contended"
    a.api.create_topic(topic, PARTITIONS)
    # Both nodes see the same cluster, hence the same cluster id and topic.
    assert b.api.cluster_id == a.api.cluster_id
    assert b.api.get_topic(topic).status_code == 200

    log = ProduceLog("r")
    workers = Workers()
    seed = 0
    for node in (a, b):
        for _ in range(THREADS_PER_NODE):
            seed += 1
            # Alternate batch and streaming /records bodies; explicit partition ids only.
            workers.spawn(produce_loop, node.api, topic, log, workers.stop,
                          partitions=PARTITIONS, seed=seed,
                          mode="batch" if seed % 2 else "stream", batch=PER_REQUEST,
                          max_requests=REQUESTS_PER_THREAD, explicit_only=True)
    for t in workers.threads:
        t.join(timeout=240)
    workers.join(timeout=5)

    total = THREADS_PER_NODE * 2 * REQUESTS_PER_THREAD * PER_REQUEST
    assert len(log.sent) == total
    assert not log.failed, f"{len(log.failed)} failed, e.g. {next(iter(log.failed.items()))}"
    assert not log.unknown
    assert len(log.acked) == total and len(log.by_offset) == total

    reads_a = verify_log(a.api, topic, PARTITIONS, log, exact=True)
    reads_b = verify_log(b.api, topic, PARTITIONS, log, exact=True)
    for p in range(PARTITIONS):
        assert reads_a[p] == reads_b[p], f"partition {p} differs between the nodes"
        hw_a = a.api.offsets(topic, p)["high_watermark"]
        hw_b = b.api.offsets(topic, p)["high_watermark"]
        assert hw_a == hw_b == log.acked_per_partition().get(p, 0)

    ma, mb = a.api.metrics(), b.api.metrics()
    assert ma["sluice_commit_txns_total"] > 0 and mb["sluice_commit_txns_total"] > 0, \
        "both nodes must have committed their own flushes"
    conflicts = ma["sluice_commit_conflicts_total"] + mb["sluice_commit_conflicts_total"]
    print("commit conflicts: a=%s b=%s, txns: a=%s b=%s" % (
        ma["sluice_commit_conflicts_total"], mb["sluice_commit_conflicts_total"],
        ma["sluice_commit_txns_total"], mb["sluice_commit_txns_total"]))
    assert conflicts > 0, "no commit conflict happened: the test did not exercise the CAS retry"

    # Writes continue densely after the contention, through either node.
    hw_before = log.acked_per_partition()
    old = set(log.acked)
    rng = random.Random(7)
    for node in (b, a):
        recs = [random_record(log, rng, PARTITIONS, p_explicit=1.0) for _ in range(30)]
        r = send_batch(node.api, topic, log, recs)
        assert r is not None and r.status_code == 200, r.text if r is not None else None
    for rid, (p, off) in log.acked.items():
        if rid not in old:
            assert off >= hw_before.get(p, 0), f"{rid} got offset {off} below old hw {hw_before}"
    verify_log(a.api, topic, PARTITIONS, log, exact=True)
    verify_log(b.api, topic, PARTITIONS, log, exact=True)
