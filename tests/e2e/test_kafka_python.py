"""kafka-python (pure-Python Kafka client) against sluice's Kafka listener.

The client is used as its users do: API versions auto-negotiated through
ApiVersions (no `api_version=` pin), acks='all', compression by
`compression_type`. Covered: produce keyed records with headers under every
codec and read them back byte-equal without a group (assign + seek to
beginning), seek by timestamp with `offsets_for_times` (ListOffsets), a
consumer group that commits and a second member of the same group that
resumes after the committed offset, and the default idempotent producer
(InitProducerId + sequence numbers).
"""

from __future__ import annotations

import random
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka import codec as kafka_codec
from kafka.structs import OffsetAndMetadata

from harness import kafka_partition

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


def topic_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def records(n: int, seed: int) -> list[tuple]:
    """(key, value, headers): some null keys or values, 0-2 headers with binary values."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = None if i % 7 == 3 else rng.randbytes(rng.randrange(1, 40))
        # kafka-python refuses a record with neither key nor value
        value = None if i % 11 == 5 and key is not None else rng.randbytes(rng.randrange(0, 3000))
        headers = [(f"h{j}", rng.randbytes(rng.randrange(0, 20))) for j in range(i % 3)]
        out.append((key, value, headers))
    return out


def producer(node, **kw) -> KafkaProducer:
    conf = dict(bootstrap_servers=node.bootstrap, acks="all", linger_ms=5,
                enable_idempotence=False, request_timeout_ms=20000,
                max_block_ms=20000)
    conf.update(kw)
    return KafkaProducer(**conf)


def produce(node, topic: str, recs: list[tuple], partition: int | None = None,
            **kw) -> list:
    """Send in order; returns every record's RecordMetadata (partition, offset)."""
    p = producer(node, **kw)
    try:
        futures = [p.send(topic, value=v, key=k, headers=h, partition=partition)
                   for k, v, h in recs]
        p.flush(timeout=30)
        return [f.get(timeout=30) for f in futures]
    finally:
        p.close(timeout=10)


def consumer(node, **kw) -> KafkaConsumer:
    conf = dict(bootstrap_servers=node.bootstrap, group_id=None,
                enable_auto_commit=False, fetch_max_wait_ms=200,
                request_timeout_ms=20000, consumer_timeout_ms=1000)
    conf.update(kw)
    return KafkaConsumer(**conf)


def poll_n(c: KafkaConsumer, count: int, timeout: float = 30) -> list:
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        for batch in c.poll(timeout_ms=300, max_records=count - len(out)).values():
            out.extend(batch)
    return out


def read_partition(node, topic: str, partition: int, count: int, start=None) -> list:
    """Read `count` records of one partition from the beginning (or `start`), no group."""
    c = consumer(node)
    try:
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        if start is None:
            c.seek_to_beginning(tp)
        else:
            c.seek(tp, start)
        got = poll_n(c, count)
        # nothing beyond what was produced
        extra = poll_n(c, 1, timeout=0.5)
    finally:
        c.close()
    assert len(got) == count, f"{topic}/{partition}: read {len(got)} of {count}"
    assert not extra, f"{topic}/{partition}: unexpected record {extra[0]!r:.200}"
    return got


def assert_same(got, recs: list[tuple], offsets: list[int]) -> None:
    assert [m.offset for m in got] == offsets
    for m, (key, value, headers) in zip(got, recs):
        assert (m.key, m.value) == (key, value), f"offset {m.offset}"
        assert list(m.headers) == headers, f"offset {m.offset}"


# ---------------------------------------------------------------------------

def test_codec_libraries_are_installed():
    # without them kafka-python raises UnsupportedCodecError: fail, never skip
    assert kafka_codec.has_gzip() and kafka_codec.has_snappy()
    assert kafka_codec.has_lz4() and kafka_codec.has_zstd()


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c or "none")
def test_round_trip_under_every_codec(module_node, codec):
    node = module_node
    topic = topic_name(f"kp-{codec or 'none'}")
    node.api.create_topic(topic, 3)
    recs = records(200, seed=hash(str(codec)) & 0xffff)
    # one partition chosen explicitly: order and offsets are then exact
    metas = produce(node, topic, recs, partition=1, compression_type=codec)
    assert [(m.topic, m.partition, m.offset) for m in metas] == \
        [(topic, 1, i) for i in range(200)]
    got = read_partition(node, topic, 1, 200)
    assert_same(got, recs, list(range(200)))
    assert all(m.topic == topic and m.partition == 1 for m in got)
    assert all(isinstance(m.timestamp, int) and m.timestamp > 0 for m in got)


def test_keyed_records_follow_the_java_compatible_partitioner(module_node):
    node = module_node
    topic = topic_name("kp-keyed")
    node.api.create_topic(topic, 4)
    rng = random.Random(5)
    recs = [(f"key-{rng.randrange(20)}".encode(), rng.randbytes(100), [("n", str(i).encode())])
            for i in range(120)]
    metas = produce(node, topic, recs, compression_type="lz4")
    by_partition: dict[int, list] = {}
    for meta, rec in zip(metas, recs):
        by_partition.setdefault(meta.partition, []).append((meta.offset, rec))
    assert len(by_partition) > 1
    # murmur2, like the Java client: a key always lands on the same partition
    for meta, (key, _, _) in zip(metas, recs):
        assert meta.partition == kafka_partition(key, 4), key
    for p, items in by_partition.items():
        offsets = [o for o, _ in items]
        assert offsets == list(range(len(items))), f"partition {p}: {offsets}"
        got = read_partition(node, topic, p, len(items))
        assert_same(got, [r for _, r in items], offsets)


def test_offsets_for_times(module_node):
    node = module_node
    topic = topic_name("kp-ts")
    node.api.create_topic(topic, 1)
    base = int(time.time() * 1000) - 60_000
    p = producer(node, compression_type="gzip")
    try:
        futures = [p.send(topic, value=f"t{i}".encode(), key=b"k", partition=0,
                          timestamp_ms=base + i * 1000) for i in range(10)]
        p.flush(timeout=30)
        metas = [f.get(timeout=30) for f in futures]
    finally:
        p.close(timeout=10)
    assert [m.offset for m in metas] == list(range(10))
    assert [m.timestamp for m in metas] == [base + i * 1000 for i in range(10)]
    c = consumer(node)
    try:
        tp = TopicPartition(topic, 0)
        found = c.offsets_for_times({tp: base + 4500})
        assert found[tp] is not None
        assert (found[tp].offset, found[tp].timestamp) == (5, base + 5000)
        exact = c.offsets_for_times({tp: base + 3000})
        assert (exact[tp].offset, exact[tp].timestamp) == (3, base + 3000)
        assert c.offsets_for_times({tp: base + 100_000})[tp] is None
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: 10}
        # consume from the offset the timestamp lookup gave
        c.assign([tp])
        c.seek(tp, found[tp].offset)
        got = poll_n(c, 5)
    finally:
        c.close()
    assert [(m.offset, m.value, m.timestamp) for m in got] == \
        [(i, f"t{i}".encode(), base + i * 1000) for i in range(5, 10)]


def test_consumer_group_commits_and_a_second_member_resumes(module_node):
    node = module_node
    topic = topic_name("kp-group")
    group = topic_name("kp-g")
    node.api.create_topic(topic, 2)
    recs = records(60, seed=21)
    first, second = recs[:40], recs[40:]
    metas = produce(node, topic, first, partition=0, compression_type="snappy")
    assert [m.offset for m in metas] == list(range(40))

    c1 = consumer(node, group_id=group, auto_offset_reset="earliest",
                  session_timeout_ms=10000, heartbeat_interval_ms=1000)
    try:
        c1.subscribe([topic])
        got = poll_n(c1, 40)
        assert sorted(tp.partition for tp in c1.assignment()) == [0, 1]
        assert_same(got, first, list(range(40)))
        # commit after the 25th record: the next member must resume at 25
        tp0 = TopicPartition(topic, 0)
        c1.commit({tp0: OffsetAndMetadata(25, "kafka-python", -1)})
        assert c1.committed(tp0) == 25
    finally:
        c1.close()

    produce(node, topic, second, partition=0, compression_type="zstd")
    c2 = consumer(node, group_id=group, auto_offset_reset="earliest",
                  session_timeout_ms=10000, heartbeat_interval_ms=1000)
    try:
        c2.subscribe([topic])
        got = poll_n(c2, 35)
        assert_same(got, recs[25:], list(range(25, 60)))
        c2.commit()
        tp0 = TopicPartition(topic, 0)
        assert c2.committed(tp0) == 60
        # partition 1 holds nothing: committed at 0 once c2's position there was
        # reset, or not at all when commit() ran before that reset finished
        assert c2.committed(TopicPartition(topic, 1)) in (None, 0)
    finally:
        c2.close()


def test_idempotent_producer_default(module_node):
    """kafka-python 3 enables idempotence by default: InitProducerId + sequences."""
    node = module_node
    topic = topic_name("kp-idem")
    node.api.create_topic(topic, 1)
    recs = records(100, seed=3)
    p = producer(node, enable_idempotence=True, compression_type="gzip")
    try:
        futures = [p.send(topic, value=v, key=k, headers=h, partition=0) for k, v, h in recs]
        p.flush(timeout=30)
        metas = [f.get(timeout=30) for f in futures]
        # the producer id sluice handed out in InitProducerId (kafka-python keeps
        # it in its transaction manager; -1 would mean idempotence was dropped)
        pid = p._transaction_manager.producer_id_and_epoch
        assert pid.producer_id >= 0 and pid.epoch >= 0, pid
    finally:
        p.close(timeout=10)
    assert [m.offset for m in metas] == list(range(100))
    assert_same(read_partition(node, topic, 0, 100), recs, list(range(100)))
