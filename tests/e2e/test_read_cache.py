"""The read cache (issue 4): tail reads and restarts without object-store GETs.

Counted with the node's own `sluice_object_gets_total` (every ranged GET the
read path issues, readahead included), against real etcd and the S3 server:

* a consumer long-polling at the tail of a partition while a producer keeps
  writing for 60 s causes no GET: the node put every segment it uploaded
  into its cache (write-through);
* the disk tier survives a restart: an old range read after a restart
  costs no GET;
* cache files corrupted while the node is stopped are detected: reads
  after the restart are byte-equal to what was produced.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from harness import b64, unb64

TAIL_SECONDS = 60  # the issue: "a consumer following a producer for 60 s"
# small blocks, so a few hundred KB of records span many of them
# GETs are counted: no compaction during these tests (see test_archive.py)
CACHE_ARGS = ["--cache-block-bytes", "65536", "--cache-disk-bytes", str(64 << 20),
              "--roles", "ingest,fetch"]


def produce(api, topic: str, values: list[bytes]) -> None:
    entries = [{"id": str(i), "partition_id": 0, "value": {"type": "BINARY", "data": b64(v)}}
               for i, v in enumerate(values)]
    r = api.produce_batch_raw(topic, {"entries": entries})
    assert r.status_code == 200, f"produce: {r.status_code} {r.text[:300]}"


def read_values(api, topic: str, start: int, end: int) -> list[bytes]:
    return [unb64(line["value"]) for line in api.read_range(topic, 0, start, end)]


def object_gets(node) -> float:
    return node.api.metrics()["sluice_object_gets_total"]


def test_a_consumer_at_the_tail_causes_no_gets(sluice):
    node = sluice.distributed(extra_args=CACHE_ARGS)
    topic = "tail-follow"
    node.api.create_topic(topic, 1)
    rng = random.Random(4)
    produced: list[bytes] = []
    consumed: list[bytes] = []
    stop = threading.Event()
    errors: list[str] = []

    def producer() -> None:
        try:
            while not stop.is_set():
                values = [rng.randbytes(rng.randint(10, 2000)) for _ in range(20)]
                produce(node.api.with_new_session(), topic, values)
                produced.extend(values)
                time.sleep(0.05)
        except Exception as e:  # noqa: BLE001 - reported by the test thread
            errors.append(f"producer: {e!r}")

    def consumer() -> None:
        api = node.api.with_new_session()
        try:
            while not stop.is_set() or len(consumed) < len(produced):
                lines = api.read_lines(topic, 0, offset=len(consumed), format="binary",
                                       timeout_ms=1000, max_records=500)
                for line in lines:
                    assert line["offset"] == len(consumed), line
                    consumed.append(unb64(line["value"]))
        except Exception as e:  # noqa: BLE001
            errors.append(f"consumer: {e!r}")

    before = object_gets(node)
    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    time.sleep(TAIL_SECONDS)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(produced) > 1000, f"only {len(produced)} records produced"
    assert consumed == produced
    metrics = node.api.metrics()
    assert metrics["sluice_object_gets_total"] == before, \
        f"{metrics['sluice_object_gets_total'] - before} object-store GETs at the tail"
    assert metrics["sluice_cache_write_through_blocks_total"] > 0
    assert metrics["sluice_fetch_latency_seconds_count"] > 0


def fill(node, topic: str, records: int = 600) -> list[bytes]:
    rng = random.Random(7)
    values: list[bytes] = []
    for _ in range(records // 100):
        batch = [rng.randbytes(rng.randint(500, 3000)) for _ in range(100)]
        produce(node.api, topic, batch)
        values.extend(batch)
    return values


def test_the_disk_cache_survives_a_restart(sluice):
    node = sluice.distributed(extra_args=CACHE_ARGS)
    topic = "cache-restart"
    node.api.create_topic(topic, 1)
    values = fill(node, topic)
    node.restart()
    assert object_gets(node) == 0
    assert read_values(node.api, topic, 0, len(values)) == values
    metrics = node.api.metrics()
    assert metrics["sluice_object_gets_total"] == 0, "old ranges come from the disk tier"
    assert metrics["sluice_cache_hits_total"] > 0


def test_corrupted_cache_files_are_never_served(sluice):
    node = sluice.distributed(extra_args=CACHE_ARGS)
    topic = "cache-corrupt"
    node.api.create_topic(topic, 1)
    values = fill(node, topic)
    node.stop()
    cache_dir = Path(node.data_dir) / "cache"
    files = [p for p in cache_dir.iterdir() if p.is_file() and p.stat().st_size > 0]
    assert files, f"no cache files under {cache_dir}"
    damaged = 0
    for path in files:
        data = bytearray(path.read_bytes())
        # flip a byte every 512 bytes of everything written
        for at in range(0, len(data), 512):
            if data[at]:
                data[at] ^= 0xFF
                damaged += 1
        path.write_bytes(bytes(data))
    assert damaged > 100, f"only {damaged} bytes of cache data found to damage"
    node.start()
    assert read_values(node.api, topic, 0, len(values)) == values
    metrics = node.api.metrics()
    assert metrics["sluice_object_gets_total"] > 0, "damaged blocks come from the object store"
    assert metrics["sluice_corrupt_ranges_total"] == 0
