"""The S3 endpoint disappears while producing, then comes back.

sluice talks to moto through a FaultProxy (see harness.FaultProxy for why the
proxy is stopped rather than moto itself).  While it is down every produce must
fail with 503 within a bounded time, nothing that failed may ever become
readable, every acknowledged record must be there exactly once, and after
the endpoint returns produce resumes with dense offsets.
"""

from __future__ import annotations

import random
import time

from harness import (ProduceLog, Workers, assert_error, produce_loop, random_record, send_batch,
                     send_single, verify_log)

PARTITIONS = 3
# --store-request-timeout 2s and --store-max-retries 1: a flush gives up after
# roughly 2 attempts x 2 s plus backoff; allow generous slack for the 2-core box.
FAIL_WITHIN = 20.0


def test_s3_outage_fails_503_and_recovers(sluice, s3_proxy):
    cluster = sluice.new_cluster(s3_endpoint=s3_proxy.endpoint)
    node = sluice.distributed(cluster, extra_args=["--store-request-timeout", "2s",
                                                   "--store-max-retries", "1"])
    api = node.api
    topic = "outage"
    api.create_topic(topic, PARTITIONS)
    log = ProduceLog("r")

    # Phase 1: healthy traffic.
    workers = Workers()
    for i, mode in enumerate(["single", "single", "batch", "stream"]):
        workers.spawn(produce_loop, api, topic, log, workers.stop, partitions=PARTITIONS,
                      seed=i, mode=mode, batch=10, pause=0.02)
    deadline = time.monotonic() + 30
    while len(log.acked) < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(log.acked) >= 100, f"only {len(log.acked)} acked before the outage"
    assert not log.failed, f"failures while S3 was up: {list(log.failed.items())[:3]}"

    # Phase 2: the S3 endpoint vanishes.
    s3_proxy.stop()
    t_down = time.monotonic()
    time.sleep(8)  # let the producers run into the outage for a while

    # Probes sent while down: each must be answered 503 in bounded time.
    probe = ProduceLog("probe")
    rng = random.Random(99)
    for _ in range(2):
        rec = random_record(probe, rng, PARTITIONS, p_explicit=1.0)
        t0 = time.monotonic()
        r = send_single(api, topic, probe, rec, timeout=FAIL_WITHIN + 10)
        took = time.monotonic() - t0
        assert r is not None, "single produce got no HTTP answer while S3 was down"
        body = assert_error(r, 503, "single produce while S3 is down")
        assert took < FAIL_WITHIN, f"503 took {took:.1f}s"
        assert body["message"], body
    recs = [random_record(probe, rng, PARTITIONS, p_explicit=1.0) for _ in range(5)]
    t0 = time.monotonic()
    r = send_batch(api, topic, probe, recs, timeout=FAIL_WITHIN + 10)
    assert r is not None and time.monotonic() - t0 < FAIL_WITHIN
    assert r.status_code == 207, f"records-batch while S3 down: {r.status_code} {r.text[:300]}"
    failures = r.json().get("failures") or []
    assert len(failures) == 5 and not r.json().get("successes"), r.text[:500]
    assert all(f.get("error_code") == 503 for f in failures), failures

    # The background producers saw 503s too, and nothing sent after the outage
    # began was acknowledged.
    down_events = [(t, kind, st) for t, kind, st in list(log.events) if t > t_down + 0.5]
    assert any(st == 503 or (kind == "batch" and st == 207) for _, kind, st in down_events), \
        f"no 503 seen by producers while down: {down_events[-10:]}"
    first_fail = min((t for t, _, st in log.events if t > t_down and st not in (200, 0)),
                     default=None)
    assert first_fail is not None and first_fail - t_down < FAIL_WITHIN, \
        "producers were not failed within the bound"
    late_ok = [e for e in down_events if e[0] > t_down + FAIL_WITHIN and e[2] == 200]
    assert not late_ok, f"produce acknowledged while S3 was down: {late_ok[:3]}"
    assert log.failed, "no record failed during the outage"
    codes = {code for code, _ in log.failed.values()}
    assert codes == {503}, f"expected only 503 failures, got {codes}"

    # Phase 3: S3 comes back; produce succeeds again within a bounded time.
    acked_before = len(log.acked)
    s3_proxy.start()
    t_up = time.monotonic()
    deadline = t_up + 30
    while len(log.acked) < acked_before + 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(log.acked) >= acked_before + 50, \
        f"produce did not resume within 30s of S3 returning ({len(log.acked) - acked_before} acks)"
    time.sleep(1)
    workers.join(timeout=90)
    print(f"acked={len(log.acked)} failed={len(log.failed)} unanswered={len(log.unknown)} "
          f"proxy connections={s3_proxy.connections_total}")

    # Fold the probes into the main log: their failures must not show up either.
    merged = ProduceLog("r")
    for src in (log, probe):
        merged.sent.update(src.sent)
        merged.acked.update(src.acked)
        merged.failed.update(src.failed)
        merged.unknown |= src.unknown
        merged.problems += src.problems
    verify_log(api, topic, PARTITIONS, merged)

    # "Ever": after a clean restart (which flushes anything still buffered) the
    # failed records are still absent and nothing moved.
    hws = [api.offsets(topic, p)["high_watermark"] for p in range(PARTITIONS)]
    assert node.stop() == 0
    node.start()
    verify_log(api, topic, PARTITIONS, merged)
    assert [api.offsets(topic, p)["high_watermark"] for p in range(PARTITIONS)] == hws
