"""The compactor: segments roll into a Parquet archive that Arrow tools read
with no sluice code, archived offsets are served over Kafka and HTTP after the
segments are gone, a killed compactor's job is finished by another, the index
stays small under load, and retention drops what it should.

Every node here runs with a short archive lag and GC grace so that the whole
cycle (roll, merge, publish, GC) happens within seconds.
"""

from __future__ import annotations

import json
import re
import struct
import time

import pytest
import requests
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                   ConfigResource)

import archive_readers
from harness import unb64, wait_until

FAST_ARCHIVE = ["--archive-max-lag", "2s", "--gc-interval", "1s", "--gc-grace", "2s"]
BASE_TS = 1_700_000_000_000


def listing(node, topic: str) -> dict:
    resp = requests.get(f"{node.url}/v1/topics/{topic}/archive", timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def fully_archived(node, topic: str, expected_hw: dict[int, int] | None = None) -> bool:
    doc = listing(node, topic)
    for p in doc["partitions"]:
        if expected_hw is not None and p["high_watermark"] != expected_hw[p["partition"]]:
            return False
        if p["segment_runs"] != 0 or p["archived_end_offset"] != p["high_watermark"]:
            return False
    return True


def settled(node, s3, topic: str) -> bool:
    """Fully archived, and the bucket holds exactly the published archive
    files and no segment: GC has removed every replaced or orphaned object."""
    cluster = node.cluster
    if not fully_archived(node, topic):
        return False
    published = {f"{cluster.prefix}/{f['path']}" for f in listing(node, topic)["files"]}
    stored = set(s3.keys(f"{cluster.prefix}/archive/{topic}/"))
    return stored == published and not s3.keys(f"{cluster.prefix}/segments/")


def metric(node, name: str, labels: str = "") -> float:
    text = requests.get(f"{node.url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + (labels or "")) and (labels or line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def record(i: int) -> tuple:
    """The i-th record of a dataset: (key, value, headers, timestamp).
    Keys and values are null, empty or binary; headers have null values."""
    key = None if i % 7 == 0 else b"k%d" % (i % 1000)
    if i % 11 == 0:
        value = None
    elif i % 13 == 0:
        value = b""
    else:
        value = struct.pack(">qI", i, i * 2654435761 % 2**32) + b"\x00\xff" + (b'{"n":%d}' % i)
    headers = [[], [("h", b"v")], [("trace", i.to_bytes(8, "big")), ("none", None)]][i % 3]
    return key, value, headers, BASE_TS + i


def produce(node, topic: str, partitions: int, count: int, start: int = 0) -> None:
    """Records start..start+count, record i to partition i % partitions, in
    order (idempotent producer), so record i lands at offset i // partitions."""
    producer = Producer({"bootstrap.servers": node.bootstrap, "enable.idempotence": True,
                         "linger.ms": 20, "batch.num.messages": 10000,
                         "queue.buffering.max.messages": 400000,
                         "compression.type": "lz4"})
    failures = []

    def on_delivery(err, _msg):
        if err is not None:
            failures.append(err)

    for i in range(start, start + count):
        key, value, headers, ts = record(i)
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers,
                                 partition=i % partitions, timestamp=ts,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0
    assert not failures, failures[:3]


def expected_rows(partitions: int, count: int) -> list[tuple]:
    rows = []
    for i in range(count):
        key, value, headers, ts = record(i)
        rows.append((i % partitions, i // partitions, ts, key, value, headers))
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows


def create_topic(node, name: str, partitions: int, configs: dict | None = None) -> None:
    args = ["topic", "create", name, "--partitions", str(partitions), "--url", node.url]
    for k, v in (configs or {}).items():
        args += ["--config", f"{k}={v}"]
    out = node.cli(*args)
    assert out.returncode == 0, out.stderr


def test_a_million_records_are_read_back_exactly_by_four_arrow_tools(sluice, s3):
    """1,000,000 records over 6 partitions, archived and merged; DuckDB (via
    s3fs), pyarrow.dataset, Polars and DataFusion read the hive-partitioned
    dataset straight from the S3 server and return exactly what was produced."""
    node = sluice.distributed(extra_args=FAST_ARCHIVE + ["--archive-merge-min-files", "4"])
    topic, partitions, count = "million", 6, 1_000_000
    create_topic(node, topic, partitions)
    # five waves, each archived before the next: small files that merge
    wave = count // 5
    for start in range(0, count, wave):
        produce(node, topic, partitions, wave, start)
        hw = {p: len(range(p, start + wave, partitions)) for p in range(partitions)}
        wait_until(lambda: fully_archived(node, topic, hw), 600, "the wave archived",
                   interval=0.5, proc=node.proc, log=node.log)
    wait_until(lambda: settled(node, s3, topic), 300, "GC of replaced objects",
               interval=1, proc=node.proc, log=node.log)
    assert metric(node, "sluice_compaction_jobs_total", '{kind="merge",outcome="published"}') > 0
    expected = expected_rows(partitions, count)
    prefix = node.cluster.prefix + "/"
    for reader in (archive_readers.read_duckdb, archive_readers.read_pyarrow,
                   archive_readers.read_polars, archive_readers.read_datafusion):
        rows = reader(s3.endpoint, s3.bucket, prefix, topic)
        assert len(rows) == count, reader.__name__
        if rows != expected:
            bad = next(i for i, (a, b) in enumerate(zip(rows, expected)) if a != b)
            pytest.fail(f"{reader.__name__}: row {bad} is {rows[bad]!r}, "
                        f"expected {expected[bad]!r}")
        del rows


def consume_all(node, topic: str, partitions: int, total: int) -> dict[int, list]:
    consumer = Consumer({"bootstrap.servers": node.bootstrap, "group.id": f"g-{time.time()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: dict[int, list] = {p: [] for p in range(partitions)}
    deadline = time.monotonic() + 120
    n = 0
    try:
        while n < total and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got[msg.partition()].append((msg.offset(), msg.timestamp()[1], msg.key(),
                                         msg.value(), [(k, v) for k, v in (msg.headers() or [])]))
            n += 1
    finally:
        consumer.close()
    return got


def test_consumers_read_from_zero_after_segments_are_collected(sluice, s3):
    """Once every segment object is gone, Kafka and HTTP consumers still read
    every record from offset 0, byte-equal; `sluice archive ls|query` list and
    query the same files."""
    node = sluice.distributed(extra_args=FAST_ARCHIVE)
    topic, partitions, count = "gone-segments", 3, 6000
    create_topic(node, topic, partitions)
    produce(node, topic, partitions, count)
    wait_until(lambda: settled(node, s3, topic), 120, "archived and segments collected",
               interval=0.5, proc=node.proc, log=node.log)
    assert not s3.keys(f"{node.cluster.prefix}/segments/")

    expected = expected_rows(partitions, count)
    got = consume_all(node, topic, partitions, count)
    kafka_rows = sorted((p, off, ts, k, v, h) for p, recs in got.items()
                        for off, ts, k, v, h in recs)
    assert kafka_rows == expected

    # the Kafka reads decoded each archived row group once; the HTTP reads of
    # the same offsets are served from the node's cache
    decoded = metric(node, "sluice_archive_row_group_reads_total")
    assert decoded > 0
    http_rows = []
    for p in range(partitions):
        offset = 0
        while True:
            resp = requests.get(f"{node.url}/v1/topics/{topic}/partitions/{p}/records",
                                params={"offset": offset, "max_records": 1000}, timeout=30)
            assert resp.status_code == 200, resp.text
            lines = [line for line in resp.text.splitlines() if line]
            if not lines:
                break
            for line in lines:
                r = json.loads(line)
                key = None if r["key"] is None else unb64(r["key"])
                value = None if r["value"] is None else unb64(r["value"])
                headers = [(h["name"], None if h["value"] is None else unb64(h["value"]))
                           for h in r["headers"]]
                http_rows.append((p, r["offset"], r["timestamp"], key, value, headers))
            offset = int(resp.headers["x-sluice-next-offset"])
    assert http_rows == expected
    assert metric(node, "sluice_archive_row_group_reads_total") == decoded

    # ListOffsets by timestamp finds archived records
    consumer = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "ts"})
    wanted = [TopicPartition(topic, p, BASE_TS + 3 * 1500 + p) for p in range(partitions)]
    found = consumer.offsets_for_times(wanted, timeout=30)
    consumer.close()
    assert [tp.offset for tp in found] == [1500] * partitions

    ls = node.cli("archive", "ls", topic, "--url", node.url)
    assert ls.returncode == 0, ls.stderr
    files = listing(node, topic)["files"]
    for f in files:
        assert f["path"] in ls.stdout.decode()
    env_store = ["--store", node.cluster.store, "--s3-endpoint", node.cluster.s3_endpoint]
    q = node.cli("archive", "query", topic,
                 'SELECT "partition", count(*) AS n, min("offset") AS lo, max("offset") AS hi '
                 'FROM archive GROUP BY "partition" ORDER BY 1',
                 *env_store, "--url", node.url)
    assert q.returncode == 0, q.stderr
    table = q.stdout.decode()
    for p in range(partitions):
        assert re.search(rf"\|\s*{p}\s*\|\s*2000\s*\|\s*0\s*\|\s*1999\s*\|", table), table


def test_a_killed_compactor_job_is_finished_by_another_and_leaves_no_orphan(sluice, s3):
    """Two compactor nodes; the one that claims a roll job is SIGKILLed right
    after its claim. The other takes the job over once the lease expires: the
    archive holds every record exactly once and GC leaves no orphan."""
    lease = ["--node-lease-ttl", "3s"]
    lazy = ["--archive-max-lag", "20s", "--gc-interval", "1s", "--gc-grace", "2s"]
    ingest = sluice.distributed(extra_args=lazy + lease + ["--roles", "ingest,fetch"])
    cluster = ingest.cluster
    workers = [sluice.distributed(cluster, extra_args=lazy + lease + ["--roles", "compactor"])
               for _ in range(2)]
    topic, partitions, count = "killed-job", 1, 300_000
    create_topic(ingest, topic, partitions)
    produce(ingest, topic, partitions, count)

    def claimed():
        for w in workers:
            m = re.search(r'compaction job claimed topic="killed-job" partition=(\d+) '
                          r'kind="roll" first=(\d+) end=(\d+)', w.log.read_text())
            if m:
                return w, m
        return None

    wait_until(lambda: claimed() is not None, 120, "a roll job claimed", interval=0.02)
    victim, m = claimed()
    victim.kill9()
    survivor = next(w for w in workers if w is not victim)
    wait_until(lambda: fully_archived(ingest, topic), 300, "the survivor archives everything",
               interval=1)
    partition, first = m.group(1), m.group(2)
    assert re.search(rf'archive file published kind="roll" topic="killed-job" '
                     rf'partition={partition} first={first} ', survivor.log.read_text()), \
        "the survivor finished the killed node's job"
    wait_until(lambda: settled(ingest, s3, topic), 120, "GC of orphans", interval=1)
    rows = archive_readers.read_pyarrow(s3.endpoint, s3.bucket, cluster.prefix + "/", topic)
    assert rows == expected_rows(partitions, count)


def test_index_entries_stay_bounded_under_continuous_load(sluice):
    """45 s of steady producing with 50 ms flushes: the partition holding the
    most index entries never holds more than a bounded number."""
    node = sluice.distributed(extra_args=FAST_ARCHIVE + ["--archive-merge-min-files", "4"])
    topic = "steady"
    create_topic(node, topic, 2)
    producer = Producer({"bootstrap.servers": node.bootstrap, "linger.ms": 5})
    highest = 0
    samples = []
    deadline = time.monotonic() + 45
    i = 0
    next_sample = time.monotonic() + 1
    while time.monotonic() < deadline:
        for _ in range(200):
            producer.produce(topic, value=b"x" * 200, partition=i % 2)
            i += 1
        producer.poll(0)
        time.sleep(0.02)
        if time.monotonic() >= next_sample:
            next_sample += 1
            n = metric(node, "sluice_index_entries_partition_max")
            samples.append(n)
            highest = max(highest, n)
    assert producer.flush(60) == 0
    print(f"index entries of the fullest partition: max {highest}, last {samples[-1]}, "
          f"{i} records")
    assert metric(node, "sluice_compaction_jobs_total", '{kind="roll",outcome="published"}') > 10
    # 2 s lag at 20 flushes/s is ~20-40 segment runs, plus the archive files
    # that merging keeps below 4 per size class
    assert highest <= 80, samples
    assert samples[-1] <= 80


def offsets(node, topic: str, p: int) -> dict:
    resp = requests.get(f"{node.url}/v1/topics/{topic}/partitions/{p}/offsets", timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_retention_drops_old_and_excess_runs_and_nothing_else(sluice, s3):
    """retention.ms drops the archive file whose records are all older than
    it; retention.bytes drops the oldest files beyond it; retention.ms=-1
    keeps everything. Log starts advance to file boundaries, the dropped files
    are collected, the kept ones stay readable."""
    node = sluice.distributed(extra_args=FAST_ARCHIVE)
    now = int(time.time() * 1000)

    def produce_file(topic: str, n: int, ts: int, start: int) -> None:
        producer = Producer({"bootstrap.servers": node.bootstrap})
        for i in range(start, start + n):
            producer.produce(topic, value=b"v%d" % i, partition=0, timestamp=ts)
        assert producer.flush(30) == 0
        wait_until(lambda: fully_archived(node, topic, {0: start + n}), 60,
                   f"{topic} archived to {start + n}", interval=0.3)

    for topic in ("by-time", "by-bytes", "forever"):
        create_topic(node, topic, 1)
    produce_file("by-time", 100, now - 3_600_000, 0)   # an hour old
    produce_file("by-time", 100, now, 100)
    for k in range(3):
        produce_file("by-bytes", 100, now, 100 * k)
    produce_file("forever", 100, now - 3_600_000, 0)
    produce_file("forever", 100, now, 100)
    sizes = [f["bytes"] for f in listing(node, "by-bytes")["files"]]
    assert len(sizes) == 3

    def alter(topic: str, name: str, value: str) -> None:
        admin = AdminClient({"bootstrap.servers": node.bootstrap})
        res = ConfigResource("topic", topic, incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
        for fut in admin.incremental_alter_configs([res]).values():
            fut.result(30)

    alter("by-time", "retention.ms", str(30 * 60 * 1000))
    alter("by-bytes", "retention.bytes", str(sizes[1] + sizes[2]))
    alter("forever", "retention.ms", "-1")
    for topic in ("by-time", "by-bytes"):
        wait_until(lambda: offsets(node, topic, 0)["log_start_offset"] == 100, 60,
                   f"{topic} log start at 100", interval=0.3)
    for topic, kept in (("by-time", ["100-199"]), ("by-bytes", ["100-199", "200-299"]),
                        ("forever", ["0-99", "100-199"])):
        files = [f["path"].rsplit("/", 1)[1][:-len(".parquet")] for f in listing(node, topic)["files"]]
        assert files == kept, (topic, files)
        wait_until(lambda: settled(node, s3, topic), 60, f"{topic} GC", interval=0.5)
        stored = sorted(k.rsplit("/", 1)[1] for k in
                        s3.keys(f"{node.cluster.prefix}/archive/{topic}/"))
        assert stored == sorted(f"{name}.parquet" for name in kept), (topic, stored)
    # the kept records are all there; below the log start is out of range
    consumer = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "r",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    lo, hi = consumer.get_watermark_offsets(TopicPartition("by-time", 0), timeout=10)
    assert (lo, hi) == (100, 200)
    lo, hi = consumer.get_watermark_offsets(TopicPartition("forever", 0), timeout=10)
    assert (lo, hi) == (0, 200)
    consumer.close()
    resp = requests.get(f"{node.url}/v1/topics/by-bytes/partitions/0/records",
                        params={"offset": 100, "max_records": 1000}, timeout=10)
    values = [line for line in resp.text.splitlines() if line]
    assert len(values) == 200
    resp = requests.get(f"{node.url}/v1/topics/by-bytes/partitions/0/records",
                        params={"offset": 5}, timeout=10)
    assert resp.status_code == 416, resp.text
    assert offsets(node, "forever", 0)["log_start_offset"] == 0
