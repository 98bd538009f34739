"""100,000 records from 8 concurrent HTTP clients, read back byte-exact (etcd + S3)."""

from __future__ import annotations

import time

from harness import ProduceLog, Workers, produce_loop, verify_log

TOTAL = 100_000
CLIENTS = 8
PER_REQUEST = 500
PARTITIONS = 6


def test_produce_100k_from_8_clients(sluice):
    node = sluice.distributed()
    api = node.api
    topic = "hundred-k"
    api.create_topic(topic, PARTITIONS)

    log = ProduceLog("r")
    workers = Workers()
    requests_per_client = TOTAL // CLIENTS // PER_REQUEST
    assert requests_per_client * CLIENTS * PER_REQUEST == TOTAL
    t0 = time.monotonic()
    for i in range(CLIENTS):
        # Mix per record: ~25% explicit partition_id, ~10% keyless, the rest keyed
        # (murmur2-partitioned), ~3% null values, ~30% with an extra header.
        workers.spawn(produce_loop, api, topic, log, workers.stop, partitions=PARTITIONS,
                      seed=1000 + i, mode="batch", batch=PER_REQUEST,
                      max_requests=requests_per_client)
    for t in workers.threads:
        t.join(timeout=240)
    workers.join(timeout=5)
    elapsed = time.monotonic() - t0
    print(f"produced {len(log.sent)} records in {elapsed:.1f}s ({len(log.sent) / elapsed:.0f}/s)")

    assert len(log.sent) == TOTAL
    assert not log.failed, f"{len(log.failed)} records failed, e.g. {next(iter(log.failed.items()))}"
    assert not log.unknown, f"{len(log.unknown)} records got no answer"
    assert len(log.acked) == TOTAL
    assert len(log.by_offset) == TOTAL, "two records acknowledged at the same offset"

    reads = verify_log(api, topic, PARTITIONS, log, exact=True)

    per_partition = {p: len(lines) for p, lines in reads.items()}
    assert sum(per_partition.values()) == TOTAL, per_partition
    acked = log.acked_per_partition()
    assert per_partition == {p: acked.get(p, 0) for p in range(PARTITIONS)}, (per_partition, acked)
    hws = [api.offsets(topic, p)["high_watermark"] for p in range(PARTITIONS)]
    assert sum(hws) == TOTAL, hws
    assert all(n > 0 for n in per_partition.values()), per_partition

    # Keyless records are spread round-robin: every partition must hold some.
    keyless_parts = {log.acked[rid][0] for rid, rec in log.sent.items()
                     if rec.key is None and rec.partition is None}
    assert keyless_parts == set(range(PARTITIONS)), keyless_parts

    m = api.metrics()
    for name in ("sluice_produce_records_total", "sluice_produce_bytes_total",
                 "sluice_flushes_total", "sluice_object_puts_total",
                 "sluice_commit_txns_total", "sluice_commit_conflicts_total",
                 "sluice_fetch_bytes_total", "sluice_object_gets_total"):
        assert name in m, f"/metrics lacks {name}"
    assert m["sluice_produce_records_total"] == TOTAL, m["sluice_produce_records_total"]
    assert m["sluice_produce_bytes_total"] > 0
    assert m["sluice_flushes_total"] >= 1
    assert m["sluice_object_puts_total"] >= m["sluice_flushes_total"]
    assert m["sluice_commit_txns_total"] >= 1
    assert m["sluice_fetch_bytes_total"] > 0
    print({k: v for k, v in m.items() if k.startswith("sluice_")})
