"""Key-compacted topics, DeleteRecords and fetch sessions, end to end.

1. A compacted topic keeps the latest value per key: 100,000 records over
   1,000 keys (hot keys updated hundreds of times, tombstones on the way and
   ~100 keys ending with one) to a 2-partition topic with
   cleanup.policy=compact and delete.retention.ms of an hour. Once the
   archive listing shows one compacted file per partition up to the high
   watermark, a confluent-kafka consumer from offset 0, the HTTP read API
   and DuckDB over the listed Parquet files each return exactly one record
   per key: its latest value (a null one for a deleted key), at the offset
   its delivery report gave (offsets keep their gaps).
2. Tombstones go after delete.retention.ms: a compacted topic whose keys
   get values, then tombstones for some (one deleted key is written again);
   a compaction before the tombstones expire keeps them (checked when the
   test gets there in time), the compaction the node schedules at their
   expiry drops them. Kafka and HTTP readers from offset 0 then see only
   the live keys with their latest values, and no tombstone.
3. DeleteRecords (AdminClient.delete_records) moves a partition's log
   start: the answer's low watermark, the HTTP offsets, the consumer's
   watermarks and ListOffsets(earliest) all say 40; a consumer placed at
   offset 10 resets to 40 with auto.offset.reset=earliest and is told
   _AUTO_OFFSET_RESET (Broker: Offset out of range) with
   auto.offset.reset=error; an HTTP read at 10 is 416. The log start never
   moves back; an offset past the high watermark is OFFSET_OUT_OF_RANGE;
   a compact-only topic refuses with POLICY_VIOLATION, a compact,delete
   topic accepts.
4. A compacted partition whose last records are expired tombstones: the
   offsets after the last live record are removed, and consumers from
   offset 0 or from inside the removed tail still reach the high watermark.
5. Fetch sessions (KIP-227): a kafka-python consumer of all 1,000
   partitions of a topic, through a TCP proxy that keeps every Fetch
   request: the first Fetch lists every partition with session id 0 and
   epoch 0; every later one carries the session id the node gave and
   epochs 1, 2, 3, ..., lists only the partitions that changed and is a
   small fraction of the first's size, as are the node's answers; the
   consumer still reads every record, including records produced after the
   session opened to partitions that no request after the first named.

A keyless record on a compacted topic (INVALID_RECORD) is covered by
test_kafka_semantics_2.py::test_per_record_errors and is not repeated here.

The compaction tests share one node with a 2 s archive lag (a compacted
partition is due 1 s after its oldest uncompacted run) and a 2 s GC grace.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

import archive_readers
from harness import assert_error, free_port, unb64, wait_until
from test_archive import listing
from test_kafka_semantics import FETCH, FrameSizeProxy, Reader, topic_name

FAST_COMPACTION = ["--archive-max-lag", "2s", "--gc-interval", "1s", "--gc-grace", "2s"]
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def node(module_factory):
    """One node for the compaction and DeleteRecords tests."""
    return module_factory.distributed(extra_args=FAST_COMPACTION)


# ---------------------------------------------------------------------------
# producing, and reading back over Kafka, HTTP and DuckDB
# A read row is (partition, offset, key, value), key and value bytes or None.

def produce_keyed(node, topic: str, records: list[tuple[bytes, bytes | None]],
                  partition: int | None = None) -> list[tuple[int, int, int]]:
    """Send `records` in order (idempotent producer); the (partition, offset,
    timestamp) of each, from its delivery report."""
    producer = Producer({"bootstrap.servers": node.bootstrap, "enable.idempotence": True,
                         "linger.ms": 20, "batch.num.messages": 10000,
                         "queue.buffering.max.messages": 200000})
    placed: list = [None] * len(records)
    failures: list = []

    def report(i: int):
        def on_delivery(err, msg):
            if err is not None:
                failures.append((i, err))
            else:
                placed[i] = (msg.partition(), msg.offset(), msg.timestamp()[1])
        return on_delivery

    for i, (key, value) in enumerate(records):
        kw = {} if partition is None else {"partition": partition}
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=report(i), **kw)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(180) == 0, "records left unflushed"
    assert not failures, f"{len(failures)} delivery errors, first: {failures[:3]}"
    assert all(p is not None for p in placed)
    return placed


def latest_per_key(records: list[tuple[bytes, bytes | None]],
                   placed: list[tuple[int, int, int]]) -> dict[bytes, tuple[int, int, bytes | None]]:
    """key -> (partition, offset, value) of its last record, checking that a
    key's records got increasing offsets in one partition (send order)."""
    latest: dict[bytes, tuple[int, int, bytes | None]] = {}
    for (key, value), (partition, offset, _) in zip(records, placed):
        if key in latest:
            before = latest[key]
            assert before[0] == partition and before[1] < offset, \
                f"key {key!r}: sent after {before[:2]} but stored at {(partition, offset)}"
        latest[key] = (partition, offset, value)
    return latest


def expected_rows(latest: dict[bytes, tuple[int, int, bytes | None]]) -> list[tuple]:
    return sorted((p, off, key, value) for key, (p, off, value) in latest.items())


def kafka_read(node, topic: str, partitions: int, high_watermarks: dict[int, int],
               timeout: float = 120) -> list[tuple]:
    """Every record from offset 0 to the end of each partition, read by a
    confluent-kafka consumer (assign, no group); each partition must end
    with an end-of-partition event at its high watermark."""
    consumer = Consumer({"bootstrap.servers": node.bootstrap,
                         "group.id": f"unused-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.auto.offset.store": False,
                         "auto.offset.reset": "error", "enable.partition.eof": True,
                         "fetch.wait.max.ms": 200})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    rows: list[tuple] = []
    eof: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(eof) < partitions and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                assert err.code() == KafkaError._PARTITION_EOF, f"consumer error: {err}"
                eof[msg.partition()] = msg.offset()
                continue
            rows.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
    finally:
        consumer.close()
    assert eof == high_watermarks, (
        f"end of partition reached at {eof}, high watermarks {high_watermarks} "
        f"({len(rows)} records read)")
    for p in range(partitions):
        offsets = [off for q, off, _, _ in rows if q == p]
        assert all(a < b for a, b in zip(offsets, offsets[1:])), \
            f"partition {p}: offsets not strictly increasing"
    return sorted(rows)


def http_read(node, topic: str, partition: int) -> list[tuple]:
    """Every record of a partition from its log start, through the HTTP read
    API, following x-sluice-next-offset over compaction gaps."""
    offset = node.api.offsets(topic, partition)["log_start_offset"]
    rows: list[tuple] = []
    while True:
        resp = node.api.read(topic, partition, offset=offset, max_records=5000)
        assert resp.status_code == 200, f"read at {offset}: {resp.status_code} {resp.text[:300]}"
        for line in resp.text.splitlines():
            if line:
                r = json.loads(line)
                rows.append((partition, r["offset"],
                             None if r["key"] is None else unb64(r["key"]),
                             None if r["value"] is None else unb64(r["value"])))
        next_offset = int(resp.headers["x-sluice-next-offset"])
        high_watermark = int(resp.headers["x-sluice-high-watermark"])
        if next_offset >= high_watermark:
            return rows
        assert next_offset > offset, (f"{topic}/{partition}: the read at {offset} moved "
                                      f"nowhere (next {next_offset}, hw {high_watermark})")
        offset = next_offset


def duckdb_query(node, s3, topic: str, select: str) -> list[tuple]:
    """`select` (FROM archive) by DuckDB over exactly the Parquet files the
    archive listing names, read from the S3 server through s3fs."""
    import duckdb
    import s3fs

    files = listing(node, topic)["files"]
    assert files, f"{topic}: no archive file listed"
    urls = [f"s3://{s3.bucket}/{node.cluster.prefix}/{f['path']}" for f in files]
    fs = s3fs.S3FileSystem(
        key=archive_readers.ACCESS_KEY, secret=archive_readers.SECRET_KEY,
        endpoint_url=s3.endpoint, client_kwargs={"region_name": archive_readers.REGION},
        config_kwargs={"s3": {"addressing_style": "path"}},
        skip_instance_cache=True, use_listings_cache=False)
    con = duckdb.connect()
    try:
        con.register_filesystem(fs)
        quoted = ", ".join("'" + u.replace("'", "''") + "'" for u in urls)
        con.sql(f"CREATE VIEW archive AS SELECT * FROM read_parquet([{quoted}])")
        return con.sql(select).fetchall()
    finally:
        con.close()


def compacted_to(node, topic: str, high_watermarks: dict[int, int]) -> bool:
    """Every partition is one archive file from offset 0 to its high
    watermark, with no segment run left: the compactor rewrote everything
    (a compacted topic's archive files are written only by compactions)."""
    doc = listing(node, topic)
    for p in doc["partitions"]:
        hw = high_watermarks[p["partition"]]
        if (p["high_watermark"], p["archived_end_offset"], p["segment_runs"]) != (hw, hw, 0):
            return False
    spans = sorted((f["partition"], f["first_offset"], f["last_offset"]) for f in doc["files"])
    return spans == [(p, 0, hw - 1) for p, hw in sorted(high_watermarks.items())]


def high_watermarks_of(placed: list[tuple[int, int, int]], partitions: int) -> dict[int, int]:
    hw = {p: 0 for p in range(partitions)}
    for p, off, _ in placed:
        hw[p] = max(hw[p], off + 1)
    return hw


def compact_publishes(node, topic: str) -> int:
    """Compaction files published for `topic`, as the node logs them."""
    return sum(1 for line in node.log.read_text(errors="replace").splitlines()
               if "archive file published" in line and 'kind="compact"' in line
               and f'topic="{topic}"' in line)


def first_difference(got: list, want: list, what: str) -> str | None:
    if got == want:
        return None
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            return f"{what}: row {i} is {g!r:.200}, expected {w!r:.200}"
    return f"{what}: {len(got)} rows, {len(want)} expected"


# ---------------------------------------------------------------------------
# 1. latest value per key

def keyed_workload(total: int, keys: int, deleted: int, seed: int) -> list[tuple]:
    """`total` (key, value) records: every key once, then updates biased
    to a hot tenth of the keys (1% of them tombstones), then tombstones for
    `deleted` keys. A value names its key and version."""
    rng = random.Random(seed)
    versions = [0] * keys
    out: list[tuple[bytes, bytes | None]] = []

    def emit(k: int, tombstone: bool = False) -> None:
        versions[k] += 1
        value = None if tombstone else b"key-%d:v%d:" % (k, versions[k]) + bytes(rng.randrange(40))
        out.append((b"key-%d" % k, value))

    for k in range(keys):
        emit(k)
    while len(out) < total - deleted:
        k = rng.randrange(keys // 10) if rng.random() < 0.6 else rng.randrange(keys)
        emit(k, tombstone=rng.random() < 0.01)
    for k in rng.sample(range(keys), deleted):
        emit(k, tombstone=True)
    return out


def test_a_compacted_topic_keeps_the_latest_value_per_key(node, s3):
    topic, partitions = topic_name("latest"), 2
    node.api.create_topic(topic, partitions, {"cleanup.policy": "compact",
                                              "delete.retention.ms": HOUR_MS})
    records = keyed_workload(total=100_000, keys=1000, deleted=100, seed=20261126)
    placed = produce_keyed(node, topic, records)
    latest = latest_per_key(records, placed)
    expected = expected_rows(latest)
    hws = high_watermarks_of(placed, partitions)
    assert len(latest) == 1000 and sum(hws.values()) == 100_000
    tombstones = sum(1 for _, _, _, value in expected if value is None)
    assert tombstones >= 100, tombstones
    assert max(Counter(key for key, _ in records).values()) > 300, "no hot key"

    wait_until(lambda: compacted_to(node, topic, hws), 240,
               f"{topic}: one compacted file per partition", interval=0.5,
               proc=node.proc, log=node.log)
    assert compact_publishes(node, topic) >= partitions

    # (a) Kafka from offset 0: one record per key, its latest value, at the
    # offset it was stored at
    kafka_rows = kafka_read(node, topic, partitions, hws)
    keys_read = [key for _, _, key, _ in kafka_rows]
    assert len(keys_read) == len(set(keys_read)), \
        f"{len(keys_read) - len(set(keys_read))} keys read more than once"
    why = first_difference(kafka_rows, expected, "Kafka read")
    assert why is None, why
    for p in range(partitions):
        offsets = [off for q, off, _, _ in kafka_rows if q == p]
        assert len(offsets) < hws[p] and offsets[-1] == hws[p] - 1, \
            f"partition {p}: {len(offsets)} records up to {offsets[-1]}, hw {hws[p]}"

    # (b) HTTP from offset 0
    http_rows = sorted(row for p in range(partitions) for row in http_read(node, topic, p))
    why = first_difference(http_rows, expected, "HTTP read")
    assert why is None, why

    # (c) DuckDB over the listed archive files
    duck_rows = duckdb_query(node, s3, topic,
                             'SELECT "partition", "offset", "key", "value" FROM archive '
                             'ORDER BY "partition", "offset"')
    why = first_difference(sorted(duck_rows), expected, "DuckDB")
    assert why is None, why
    assert duckdb_query(node, s3, topic, 'SELECT "key", count(*) FROM archive '
                                         'GROUP BY "key" HAVING count(*) > 1') == []


# ---------------------------------------------------------------------------
# 2. tombstones after delete.retention.ms

RETENTION_MS = 8000


def test_tombstones_go_after_delete_retention(node):
    topic = topic_name("tombstones")
    node.api.create_topic(topic, 1, {"cleanup.policy": "compact",
                                     "delete.retention.ms": RETENTION_MS})
    keys = [b"user-%03d" % k for k in range(200)]
    deleted = keys[::4]  # 50 keys
    revived = deleted[:5]  # deleted, then written again
    records: list[tuple[bytes, bytes | None]] = []
    for version in range(3):
        records += [(k, b"%s=v%d" % (k, version)) for k in keys]
    records += [(k, None) for k in deleted]
    records += [(k, b"%s=back" % k) for k in revived]
    records.append((b"zz-last", b"written last"))  # the tail is a live record
    placed = produce_keyed(node, topic, records, partition=0)
    latest = latest_per_key(records, placed)
    hws = high_watermarks_of(placed, 1)
    gone = set(deleted) - set(revived)
    with_tombstones = expected_rows(latest)
    live = expected_rows({k: v for k, v in latest.items() if k not in gone})
    assert len(with_tombstones) == 201 and len(live) == 201 - 45
    first_expiry = min(ts for (k, v), (_, _, ts) in zip(records, placed) if v is None) \
        + RETENTION_MS

    wait_until(lambda: compacted_to(node, topic, hws), 120, f"{topic} compacted",
               interval=0.2, proc=node.proc, log=node.log)
    kept_checked = time.time() * 1000 < first_expiry - 3000
    if kept_checked:
        # compacted before any tombstone expired: each deleted key is its tombstone
        rows = http_read(node, topic, 0)
        why = first_difference(rows, with_tombstones, "compacted, tombstones kept")
        assert why is None, why
        publishes = compact_publishes(node, topic)
    print(f"tombstones checked while kept: {kept_checked}")

    def tombstones_gone() -> bool:
        return all(value is not None for _, _, _, value in http_read(node, topic, 0))

    wait_until(tombstones_gone, 120, f"{topic}: tombstones dropped", interval=0.5,
               proc=node.proc, log=node.log)
    assert time.time() * 1000 >= first_expiry, "tombstones dropped before delete.retention.ms"
    if kept_checked:
        assert compact_publishes(node, topic) > publishes, \
            "the tombstones went without another compaction"
    assert compacted_to(node, topic, hws)

    kafka_rows = kafka_read(node, topic, 1, hws)
    why = first_difference(kafka_rows, live, "Kafka read after tombstones expired")
    assert why is None, why
    why = first_difference(http_read(node, topic, 0), live, "HTTP read after tombstones expired")
    assert why is None, why


# ---------------------------------------------------------------------------
# 3. DeleteRecords

def test_a_consumer_moves_past_a_tail_that_compaction_removed(node):
    """The last records of a compacted partition are tombstones that expire:
    compaction removes every offset after the last live record. A consumer
    from offset 0 must still reach the high watermark (the last batch served
    covers the removed offsets, as in a Kafka compacted log), and so must a
    consumer placed inside the removed tail."""
    topic = topic_name("cmp-tail")
    node.api.create_topic(topic, 1, {"cleanup.policy": "compact", "delete.retention.ms": 1000})
    records = [(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"c", None), (b"d", b"4"), (b"d", None)]
    placed = produce_keyed(node, topic, records, partition=0)
    hws = high_watermarks_of(placed, 1)
    assert hws == {0: 6}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if compacted_to(node, topic, hws) and len(http_read(node, topic, 0)) == 2:
            break
        time.sleep(0.5)
    assert http_read(node, topic, 0) == [(0, 0, b"a", b"1"), (0, 1, b"b", b"2")]
    # kafka_read asserts the end-of-partition event comes at the high watermark
    assert kafka_read(node, topic, 1, hws, timeout=60) == [(0, 0, b"a", b"1"),
                                                            (0, 1, b"b", b"2")]
    consumer = Consumer({"bootstrap.servers": node.bootstrap,
                         "group.id": f"unused-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "error",
                         "enable.partition.eof": True, "fetch.wait.max.ms": 200})
    consumer.assign([TopicPartition(topic, 0, 3)])
    try:
        eof = None
        deadline = time.monotonic() + 30
        while eof is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is not None and msg.error().code() == KafkaError._PARTITION_EOF, \
                f"got {msg.error() or (msg.offset(), msg.value())} from inside the removed tail"
            eof = msg.offset()
    finally:
        consumer.close()
    assert eof == 6


def delete_records(admin: AdminClient, topic: str, offset: int, partition: int = 0):
    """The DeletedRecords answer, or the KafkaError of the partition."""
    tp = TopicPartition(topic, partition, offset)
    future = admin.delete_records([tp], request_timeout=30)[tp]
    try:
        return future.result(30)
    except KafkaException as e:
        return e.args[0]


def test_delete_records_moves_the_log_start(node):
    topic = topic_name("delete-records")
    node.api.create_topic(topic, 1)
    values = [b"value-%d" % i for i in range(100)]
    placed = produce_keyed(node, topic, [(b"k%d" % i, v) for i, v in enumerate(values)],
                           partition=0)
    assert [off for _, off, _ in placed] == list(range(100))
    admin = AdminClient({"bootstrap.servers": node.bootstrap})

    answer = delete_records(admin, topic, 40)
    assert not isinstance(answer, KafkaError), answer
    assert answer.low_watermark == 40
    assert {k: node.api.offsets(topic, 0)[k] for k in ("log_start_offset", "high_watermark")} \
        == {"log_start_offset": 40, "high_watermark": 100}
    probe = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "unused-watermarks"})
    try:
        assert probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10,
                                           cached=False) == (40, 100)
    finally:
        probe.close()
    tp = TopicPartition(topic, 0)
    earliest = admin.list_offsets({tp: OffsetSpec.earliest()})[tp].result(30)
    latest = admin.list_offsets({tp: OffsetSpec.latest()})[tp].result(30)
    assert (earliest.offset, latest.offset) == (40, 100)

    # a consumer at 10: reset to the log start, or told the offset is out of range
    def consumer_at_10(reset: str) -> tuple[list, list]:
        consumer = Consumer({"bootstrap.servers": node.bootstrap,
                             "group.id": f"unused-{uuid.uuid4().hex[:8]}",
                             "enable.auto.commit": False, "enable.auto.offset.store": False,
                             "auto.offset.reset": reset, "fetch.wait.max.ms": 200})
        consumer.assign([TopicPartition(topic, 0, 10)])
        got, errors = [], []
        deadline = time.monotonic() + 30
        try:
            while len(got) < 60 and not errors and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error() is not None:
                    errors.append(msg.error())
                else:
                    got.append((msg.offset(), msg.value()))
        finally:
            consumer.close()
        return got, errors

    got, errors = consumer_at_10("earliest")
    assert not errors, errors
    assert got == [(i, values[i]) for i in range(40, 100)], got[:3]
    got, errors = consumer_at_10("error")
    assert got == [] and len(errors) == 1, (got[:3], errors)
    assert errors[0].code() == KafkaError._AUTO_OFFSET_RESET, errors[0]
    assert "Offset out of range" in errors[0].str(), errors[0].str()

    # HTTP: below the log start is 416, from it the 60 records
    body = assert_error(node.api.read(topic, 0, offset=10), 416, "HTTP read at 10")
    assert "offset 10 is out of range [40, 100]" in body["message"], body
    rows = http_read(node, topic, 0)
    assert rows == [(0, i, b"k%d" % i, values[i]) for i in range(40, 100)]

    # never backwards; past the high watermark is out of range
    answer = delete_records(admin, topic, 30)
    assert not isinstance(answer, KafkaError) and answer.low_watermark == 40, answer
    answer = delete_records(admin, topic, 101)
    assert isinstance(answer, KafkaError) and answer.code() == KafkaError.OFFSET_OUT_OF_RANGE, \
        answer
    assert node.api.offsets(topic, 0)["log_start_offset"] == 40

    # compact-only topics refuse; compact,delete ones accept
    compact_only, both = topic_name("compact-only"), topic_name("compact-delete")
    node.api.create_topic(compact_only, 1, {"cleanup.policy": "compact"})
    node.api.create_topic(both, 1, {"cleanup.policy": "compact,delete"})
    for t in (compact_only, both):
        produce_keyed(node, t, [(b"k%d" % i, b"v") for i in range(10)], partition=0)
    answer = delete_records(admin, compact_only, 5)
    assert isinstance(answer, KafkaError) and answer.code() == KafkaError.POLICY_VIOLATION, \
        answer
    assert node.api.offsets(compact_only, 0)["log_start_offset"] == 0
    answer = delete_records(admin, both, 5)
    assert not isinstance(answer, KafkaError) and answer.low_watermark == 5, answer
    assert node.api.offsets(both, 0)["log_start_offset"] == 5


# ---------------------------------------------------------------------------
# 4. fetch sessions

class FetchRequestProxy(FrameSizeProxy):
    """A FrameSizeProxy (response sizes per API key) that also keeps every
    Fetch request frame (without its size prefix), in arrival order."""

    def __init__(self, upstream_port: int):
        self.fetches: list[bytes] = []
        super().__init__(upstream_port)

    def _pump(self, src: socket.socket, dst: socket.socket, requests: dict,
              from_client: bool) -> None:
        if not from_client:
            return super()._pump(src, dst, requests, from_client)
        pending = bytearray()
        try:
            while True:
                data = src.recv(1 << 18)
                if not data:
                    break
                pending += data
                while len(pending) >= 4:
                    size = struct.unpack_from(">i", pending)[0]
                    if len(pending) < 4 + size:
                        break
                    frame = bytes(pending[4:4 + size])
                    del pending[:4 + size]
                    key, version, correlation = struct.unpack_from(">hhi", frame)
                    requests[correlation] = (key, version)  # before the response can come
                    if key == FETCH:
                        with self.lock:
                            self.fetches.append(frame)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def fetch_response_sizes(self) -> list[int]:
        with self.lock:
            return [size for key, _, size in self.responses if key == FETCH]


class WireReader(Reader):
    """Reader plus the flexible-version encodings."""

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            byte = self.take(">B")
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.pos += self.uvarint()

    def length(self, flexible: bool) -> int:
        """An array's or string's length (-1: null)."""
        return self.uvarint() - 1 if flexible else self.take(">i")

    def text(self, flexible: bool) -> str | None:
        if not flexible:
            return self.string()
        n = self.uvarint() - 1
        if n < 0:
            return None
        text = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return text


def parse_fetch_request(frame: bytes) -> dict:
    """A Fetch request v4-v12: its session id and epoch, and the partitions
    it lists {(topic, partition): fetch offset} and forgets."""
    r = WireReader(frame)
    key, version, _correlation = r.take(">hhi")
    assert key == FETCH
    assert 4 <= version <= 12, f"Fetch v{version} (this parser reads v4-v12)"
    flexible = version >= 12
    r.string()  # client id: a plain nullable string in every header version
    if flexible:
        r.tagged_fields()  # request header v2
    r.take(">i")  # replica id (v<15)
    r.take(">iii")  # max wait, min bytes, max bytes (v3+)
    r.take(">b")  # isolation level (v4+)
    session_id, epoch = r.take(">ii") if version >= 7 else (None, None)
    listed: dict[tuple[str, int], int] = {}
    for _ in range(r.length(flexible)):
        topic = r.text(flexible)
        for _ in range(r.length(flexible)):
            partition = r.take(">i")
            if version >= 9:
                r.take(">i")  # current leader epoch
            fetch_offset = r.take(">q")
            if version >= 12:
                r.take(">i")  # last fetched epoch
            r.take(">q")  # log start offset (v5+)
            r.take(">i")  # partition max bytes
            if flexible:
                r.tagged_fields()
            listed[(topic, partition)] = fetch_offset
        if flexible:
            r.tagged_fields()
    forgotten: list[tuple[str, int]] = []
    if version >= 7:
        for _ in range(r.length(flexible)):
            topic = r.text(flexible)
            forgotten += [(topic, r.take(">i")) for _ in range(r.length(flexible))]
            if flexible:
                r.tagged_fields()
    if version >= 11:
        r.text(flexible)  # rack id
    if flexible:
        r.tagged_fields()
    assert r.pos == len(frame), f"{len(frame) - r.pos} bytes left in a Fetch v{version} request"
    return {"version": version, "size": len(frame) + 4, "session_id": session_id,
            "epoch": epoch, "listed": listed, "forgotten": forgotten}


PARTITIONS = 1000


def test_fetch_sessions_send_incremental_fetches(sluice):
    kafka_port = free_port()
    proxy = FetchRequestProxy(kafka_port)  # listening before the node advertises it
    consumer = None
    try:
        node = sluice.distributed(kafka_port=kafka_port,
                                  extra_args=["--advertised-kafka-addr", proxy.address])
        topic = topic_name("sessions")
        admin = AdminClient({"bootstrap.servers": node.bootstrap})
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)],
                            request_timeout=120)[topic].result(150)
        rng = random.Random(227)
        early = sorted(rng.sample(range(PARTITIONS), 20))
        late_only = sorted(rng.sample(sorted(set(range(PARTITIONS)) - set(early)), 5))
        late = late_only + early[:5]
        expected: dict[tuple[int, int], bytes] = {}

        def produce(partitions: list[int], count: int, tag: str) -> None:
            producer = Producer({"bootstrap.servers": node.bootstrap, "linger.ms": 20})
            failures: list = []

            def on_delivery(err, msg):
                if err is not None:
                    failures.append(err)
                else:
                    expected[(msg.partition(), msg.offset())] = msg.value()

            for p in partitions:
                for i in range(count):
                    producer.produce(topic, value=b"%s-%d-%d" % (tag.encode(), p, i),
                                     partition=p, on_delivery=on_delivery)
            assert producer.flush(60) == 0 and not failures, failures[:3]

        produce(early, 5, "early")
        consumer = KafkaConsumer(bootstrap_servers=proxy.address, group_id=None,
                                 enable_auto_commit=False, fetch_max_wait_ms=100,
                                 client_id="fetch-sessions")
        consumer.assign([KpTopicPartition(topic, p) for p in range(PARTITIONS)])
        consumer.seek_to_beginning()
        got: dict[tuple[int, int], bytes] = {}

        def poll() -> None:
            for tp, msgs in consumer.poll(timeout_ms=200).items():
                for m in msgs:
                    assert (tp.partition, m.offset) not in got, \
                        f"{tp.partition}/{m.offset} read twice"
                    got[(tp.partition, m.offset)] = m.value

        def poll_until(done, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while not done() and time.monotonic() < deadline:
                poll()

        poll_until(lambda: len(got) >= len(expected), 120)
        assert len(got) == len(expected), f"read {len(got)} of {len(expected)} early records"
        # a few idle incremental fetches, then records to partitions the
        # session has not heard of since its first request
        fetched = len(proxy.fetches)
        poll_until(lambda: len(proxy.fetches) >= fetched + 5, 60)
        produce(late, 3, "late")
        poll_until(lambda: len(got) >= len(expected), 60)
        fetched = len(proxy.fetches)
        poll_until(lambda: len(proxy.fetches) >= fetched + 3, 30)
    finally:
        if consumer is not None:
            consumer.close()
        proxy.close()

    assert got == expected, (f"{len(got)} records read, {len(expected)} produced; missing "
                             f"{sorted(set(expected) - set(got))[:10]}, unexpected "
                             f"{sorted(set(got) - set(expected))[:10]}")
    with proxy.lock:
        fetches = [parse_fetch_request(f) for f in proxy.fetches]
    assert len(fetches) >= 8, f"{len(fetches)} Fetch requests"
    first, later = fetches[0], fetches[1:]
    answers = proxy.fetch_response_sizes()
    assert first["version"] >= 7, f"Fetch v{first['version']} has no sessions"
    assert (first["session_id"], first["epoch"]) == (0, 0), \
        f"the first Fetch does not open a session: {first['session_id'], first['epoch']}"
    assert first["listed"] == {(topic, p): 0 for p in range(PARTITIONS)}, \
        f"the first Fetch lists {len(first['listed'])} partitions"
    session_id = later[0]["session_id"]
    assert session_id not in (0, None), "the node gave no session"
    sessions = [(f["session_id"], f["epoch"]) for f in later]
    assert sessions == [(session_id, epoch) for epoch in range(1, len(later) + 1)], \
        f"(session id, epoch) of the later Fetches: {sessions}"
    sizes = [f["size"] for f in later]
    assert max(sizes) * 10 < first["size"], \
        f"first Fetch {first['size']} bytes, later ones up to {max(sizes)}: {sizes}"
    assert max(len(f["listed"]) for f in later) <= len(early) + len(late), \
        [len(f["listed"]) for f in later]
    # the late-only partitions reached the consumer although no request after
    # the first asked for them at offset 0: the node answered their news
    asked = [(i, f["listed"][(topic, p)]) for i, f in enumerate(later, 1) for p in late_only
             if (topic, p) in f["listed"] and f["listed"][(topic, p)] == 0]
    assert not asked, f"(request, offset) of late-only partitions asked again: {asked}"
    assert len(answers) >= len(fetches) - 1, (len(answers), len(fetches))
    assert max(answers[1:]) * 10 < answers[0], \
        f"the first Fetch answer {answers[0]} bytes, later ones up to {max(answers[1:])}"
    print(f"Fetch v{first['version']}: first request {first['size']} bytes listing "
          f"{len(first['listed'])} partitions, answered in {answers[0]} bytes; "
          f"{len(later)} later requests of {min(f['size'] for f in later)}-"
          f"{max(f['size'] for f in later)} bytes listing up to "
          f"{max(len(f['listed']) for f in later)} partitions, answered in "
          f"{min(answers[1:])}-{max(answers[1:])} bytes")
