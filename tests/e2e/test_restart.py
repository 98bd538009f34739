"""Restarts: kill -9 after acknowledgements and mid-flight, SIGTERM mid-stream.

Both the distributed setup (etcd + S3) and the embedded default (no --etcd,
no --store: metadata and objects under the data dir) must keep every
acknowledged record at its acknowledged offset across a restart.
"""

from __future__ import annotations

import random
import time

import pytest

from harness import (ProduceLog, Sluice, Workers, produce_loop, random_record, send_batch,
                     verify_log)

PARTITIONS = 3
MODES = ["distributed", "embedded"]


def start_node(sluice, mode: str, **kw) -> Sluice:
    return sluice.distributed(**kw) if mode == "distributed" else sluice.embedded(**kw)


def spawn_producers(workers: Workers, node: Sluice, topic: str, log: ProduceLog, *,
                    threads: int = 4, max_requests: int | None = None, seed: int = 0) -> None:
    modes = ["batch", "stream", "batch", "single"]
    for i in range(threads):
        workers.spawn(produce_loop, node.api, topic, log, workers.stop, partitions=PARTITIONS,
                      seed=seed + i, mode=modes[i % len(modes)], batch=25,
                      max_requests=max_requests, give_up_after_errors=3)


def produce_more_and_check_dense(node: Sluice, topic: str, log: ProduceLog, seed: int) -> None:
    """New produces after a restart continue each partition right at its old end."""
    hw = {p: node.api.offsets(topic, p)["high_watermark"] for p in range(PARTITIONS)}
    before = set(log.acked)
    rng = random.Random(seed)
    recs = [random_record(log, rng, PARTITIONS, p_explicit=1.0) for _ in range(60)]
    r = send_batch(node.api, topic, log, recs)
    assert r is not None and r.status_code == 200, r.text if r is not None else "no answer"
    new = sorted(((p, off) for rid, (p, off) in log.acked.items() if rid not in before))
    for p in range(PARTITIONS):
        offs = [off for q, off in new if q == p]
        assert offs == list(range(hw[p], hw[p] + len(offs))), \
            f"partition {p}: new offsets {offs[:5]}... do not continue at high watermark {hw[p]}"
    verify_log(node.api, topic, PARTITIONS, log)


@pytest.mark.parametrize("mode", MODES)
def test_kill9_restart(sluice, mode):
    node = start_node(sluice, mode)
    topic = "restart-kill9"
    node.api.create_topic(topic, PARTITIONS)
    log = ProduceLog("r")

    # 1. kill -9 right after the last acknowledgement.
    workers = Workers()
    spawn_producers(workers, node, topic, log, max_requests=8, seed=10)
    for t in workers.threads:
        t.join(timeout=120)
    workers.join(timeout=5)
    assert log.acked and not log.failed and not log.unknown, \
        (len(log.acked), list(log.failed.items())[:3], len(log.unknown))
    node.kill9()
    node.restart()
    verify_log(node.api, topic, PARTITIONS, log, exact=True)
    for p, n in log.acked_per_partition().items():
        assert node.api.offsets(topic, p)["high_watermark"] == n

    # 2. kill -9 while produce requests are in flight.
    acked_before = len(log.acked)
    workers = Workers()
    spawn_producers(workers, node, topic, log, seed=20)
    deadline = time.monotonic() + 20
    while len(log.acked) < acked_before + 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    node.kill9()
    workers.join(timeout=90)
    assert len(log.acked) > acked_before, "nothing was acknowledged before the kill"
    assert not log.failed, f"errors before the kill: {list(log.failed.items())[:3]}"
    node.restart()
    verify_log(node.api, topic, PARTITIONS, log)

    # 3. Writing goes on densely after the restart.
    produce_more_and_check_dense(node, topic, log, seed=30)


@pytest.mark.parametrize("mode", MODES)
def test_sigterm_while_producing(sluice, mode):
    # A longer flush interval leaves accepted-but-unflushed records in the
    # buffer when SIGTERM arrives; they must be flushed, committed, answered.
    node = start_node(sluice, mode, flush_interval="400ms")
    topic = "restart-sigterm"
    node.api.create_topic(topic, PARTITIONS)
    log = ProduceLog("r")

    workers = Workers()
    spawn_producers(workers, node, topic, log, threads=6, seed=40)
    deadline = time.monotonic() + 20
    while len(log.acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.acked, "nothing acknowledged before SIGTERM"
    t0 = time.monotonic()
    rc = node.stop(timeout=30)
    took = time.monotonic() - t0
    workers.join(timeout=90)
    assert rc == 0, f"sluice exited with {rc} after SIGTERM\n{node.log_tail()}"
    print(f"SIGTERM -> exit 0 in {took:.2f}s; acked={len(log.acked)} "
          f"failed={len(log.failed)} unanswered={len(log.unknown)}")
    # Whatever sluice answered with an error during shutdown must be absent;
    # verify_log enforces it.  Every acknowledged record must be there.
    node.start()
    verify_log(node.api, topic, PARTITIONS, log)
    produce_more_and_check_dense(node, topic, log, seed=50)
