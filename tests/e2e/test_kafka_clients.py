"""Unmodified Kafka clients against sluice's Kafka listener.

kcat (librdkafka) and confluent-kafka (librdkafka through Python) produce with
keys and headers under every compression codec and consume from the earliest
offset (assign, no group: consumer groups are not built yet); records must
come back byte-equal, and records produced over HTTP must read the same over
Kafka and the other way round. Nodes run against the real etcd and the S3
server (module_node), like the HTTP suite.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from harness import HOST, b64, unb64
import kafka_wire as wire

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def topic_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def kcat(node, *args: str, input: bytes | None = None, timeout: float = 60) -> bytes:
    argv = ["kcat", "-b", node.bootstrap, *args]
    done = subprocess.run(argv, input=input, capture_output=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} -> {done.returncode}: {done.stderr.decode()[-2000:]}"
    return done.stdout


def produce(node, topic: str, records: list[tuple], compression: str = "none",
            partition: int = 0) -> list[int]:
    """Produce (key, value, headers) records in order; returns their offsets."""
    producer = Producer({"bootstrap.servers": node.bootstrap, "acks": "all",
                         "compression.type": compression, "linger.ms": 5,
                         "enable.idempotence": False})
    offsets: list = [None] * len(records)
    errors: list = []

    def report(i):
        def on_delivery(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                offsets[i] = msg.offset()
        return on_delivery

    for i, (key, value, headers) in enumerate(records):
        producer.produce(topic, value=value, key=key, headers=headers, partition=partition,
                         on_delivery=report(i))
        producer.poll(0)
    assert producer.flush(60) == 0, "records left unflushed"
    assert not errors, errors[:5]
    return offsets


def consume(node, topic: str, count: int, partition: int = 0,
            offset: int | None = None, timeout: float = 60) -> list:
    """Read `count` messages from `offset` (default earliest) without a group."""
    consumer = Consumer({"bootstrap.servers": node.bootstrap,
                         "group.id": "unused-no-group-apis",
                         "enable.auto.commit": False,
                         "enable.auto.offset.store": False,
                         "auto.offset.reset": "error",
                         "fetch.wait.max.ms": 200})
    start = TopicPartition(topic, partition,
                           offset if offset is not None else -2)  # OFFSET_BEGINNING
    consumer.assign([start])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None or msg.error().code() == KafkaError._PARTITION_EOF, \
                msg.error()
            if msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    assert len(out) == count, f"read {len(out)} of {count} records"
    return out


def random_records(n: int, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        key = None if i % 7 == 3 else rng.randbytes(rng.randrange(0, 40))
        value = None if i % 11 == 5 else rng.randbytes(rng.randrange(0, 3000))
        headers = [(f"h{j}", rng.randbytes(rng.randrange(0, 20))) for j in range(i % 3)]
        records.append((key, value, headers))
    return records


def headers_of(msg) -> list:
    return [(k, v) for k, v in (msg.headers() or [])]


# ---------------------------------------------------------------------------

@pytest.mark.parametrize("codec", CODECS)
def test_kcat_produce_and_consume_with_keys_and_headers(module_node, codec):
    node = module_node
    topic = topic_name(f"kcat-{codec}")
    node.api.create_topic(topic, 1)
    lines = [f"key-{i}:value {i} é".encode() for i in range(50)]
    kcat(node, "-t", topic, "-P", "-K:", "-z", codec, "-H", "source=kcat", "-H", "n=1",
         input=b"\n".join(lines) + b"\n")
    out = kcat(node, "-t", topic, "-C", "-o", "beginning", "-e", "-f", "%k:%s:%o\n")
    got = out.decode().splitlines()
    assert got == [f"key-{i}:value {i} é:{i}" for i in range(50)]
    headers = kcat(node, "-t", topic, "-C", "-o", "beginning", "-e", "-c", "1", "-f", "%h\n")
    assert headers.decode().strip() == "source=kcat,n=1"
    # the same records over HTTP (Kafka -> HTTP), byte-equal
    read = node.api.read_lines(topic, 0, offset=0, max_records=100, format="binary")
    assert [(unb64(r["key"]), unb64(r["value"]), r["offset"]) for r in read] == \
        [(f"key-{i}".encode(), f"value {i} é".encode(), i) for i in range(50)]
    assert [(h["name"], unb64(h["value"])) for h in read[0]["headers"]] == \
        [("source", b"kcat"), ("n", b"1")]


def test_kcat_consumes_from_a_timestamp(module_node):
    node = module_node
    topic = topic_name("kcat-ts")
    node.api.create_topic(topic, 1)
    base = 1_700_000_000_000
    entries = [{"id": str(i), "partition_id": 0, "timestamp": _rfc3339(base + 1000 * i),
                "value": {"type": "STRING", "data": f"v{i}"}} for i in range(10)]
    assert node.api.produce_batch_raw(topic, {"entries": entries}).status_code == 200
    # -o s@<ms>: the first record at or after that time
    out = kcat(node, "-t", topic, "-C", "-o", f"s@{base + 6500}", "-e", "-f", "%s:%o:%T\n")
    assert out.decode().splitlines() == [f"v{i}:{i}:{base + 1000 * i}" for i in range(7, 10)]
    out = kcat(node, "-t", topic, "-C", "-o", f"s@{base + 3000}", "-e", "-f", "%o\n")
    assert out.decode().splitlines() == [str(i) for i in range(3, 10)]


def _rfc3339(ms: int) -> str:
    import datetime
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc) \
        .isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_kafka_round_trip_under_every_codec(module_node, codec):
    node = module_node
    topic = topic_name(f"ck-{codec}")
    node.api.create_topic(topic, 2)
    records = random_records(300, seed=hash(codec) & 0xffff)
    offsets = produce(node, topic, records, compression=codec, partition=1)
    assert offsets == list(range(300))
    got = consume(node, topic, 300, partition=1)
    assert [m.offset() for m in got] == list(range(300))
    for msg, (key, value, headers) in zip(got, records):
        assert msg.key() == key and msg.value() == value
        assert headers_of(msg) == headers
    # kcat reads the same partition (another librdkafka build)
    out = kcat(node, "-t", topic, "-p", "1", "-C", "-o", "beginning", "-e", "-f", "%o\n")
    assert out.decode().split() == [str(i) for i in range(300)]


def test_http_produced_records_read_over_kafka(module_node):
    node = module_node
    topic = topic_name("http2kafka")
    node.api.create_topic(topic, 1)
    rng = random.Random(7)
    records = [(rng.randbytes(16), rng.randbytes(rng.randrange(1, 500))) for _ in range(40)]
    body = [{"partition_id": 0, "key": {"type": "BINARY", "data": b64(k)},
             "value": {"type": "BINARY", "data": b64(v)},
             "headers": [{"name": "via", "value": b64(b"http")}]} for k, v in records]
    r = node.api.produce_stream(topic, body)
    assert r.status_code == 200, r.text
    reports = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    assert [rep["offset"] for rep in reports] == list(range(40))
    got = consume(node, topic, 40)
    assert [(m.key(), m.value()) for m in got] == records
    assert all(headers_of(m) == [("via", b"http")] for m in got)


def test_kafka_produced_records_read_over_http(module_node):
    node = module_node
    topic = topic_name("kafka2http")
    node.api.create_topic(topic, 1)
    records = random_records(60, seed=11)
    produce(node, topic, records)
    read = node.api.read_lines(topic, 0, offset=0, max_records=100, format="binary")
    assert [r["offset"] for r in read] == list(range(60))
    for line, (key, value, headers) in zip(read, records):
        assert (unb64(line["key"]) if line["key"] is not None else None) == key
        assert (unb64(line["value"]) if line["value"] is not None else None) == value
        assert [(h["name"], unb64(h["value"])) for h in line["headers"]] == headers


def test_metadata_auto_creates_topics_and_lists_offsets(module_node):
    node = module_node
    topic = topic_name("auto")
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    produce(node, topic, [(b"k", b"v0", []), (b"k", b"v1", [])])
    meta = admin.list_topics(topic, timeout=10)
    assert meta.cluster_id == node.api.cluster_id
    assert list(meta.brokers) == [node.node_id]
    assert meta.brokers[node.node_id].port == node.kafka_port
    assert sorted(meta.topics[topic].partitions) == [0]
    assert meta.topics[topic].partitions[0].leader == node.node_id
    assert node.api.get_topic(topic).status_code == 200
    # ListOffsets: earliest / latest / by timestamp
    consumer = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "unused"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10,
                                                   cached=False)
        assert (low, high) == (0, 2)
        base = int(time.time() * 1000)
        producer = Producer({"bootstrap.servers": node.bootstrap})
        for i, ts in enumerate([base + 10_000, base + 20_000, base + 30_000]):
            producer.produce(topic, value=f"t{i}".encode(), partition=0, timestamp=ts)
        assert producer.flush(30) == 0
        found = consumer.offsets_for_times(
            [TopicPartition(topic, 0, base + 15_000)], timeout=10)
        assert found[0].error is None and found[0].offset == 3
        past_end = consumer.offsets_for_times(
            [TopicPartition(topic, 0, base + 40_000)], timeout=10)
        assert past_end[0].offset == -1
    finally:
        consumer.close()


def test_unknown_topic_and_out_of_range_are_kafka_errors(module_node):
    node = module_node
    topic = topic_name("errs")
    node.api.create_topic(topic, 1)
    produce(node, topic, [(None, b"only", [])])
    consumer = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "unused",
                         "auto.offset.reset": "error", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, 5)])
        deadline = time.monotonic() + 30
        error = None
        while time.monotonic() < deadline and error is None:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is not None:
                error = msg.error()
        assert error is not None and error.code() == KafkaError._AUTO_OFFSET_RESET, error
    finally:
        consumer.close()
    producer = Producer({"bootstrap.servers": node.bootstrap, "message.timeout.ms": 3000})
    failures = []
    producer.produce(topic, value=b"x", partition=7,
                     on_delivery=lambda err, msg: failures.append(err))
    producer.flush(10)
    assert failures and failures[0] is not None


# ---------------------------------------------------------------------------
# malformed frames: the connection is answered or closed, the node keeps serving
















@pytest.mark.parametrize("payload", [
    pytest.param(struct.pack(">i", 0x7fffffff) + b"\0" * 16, id="huge-length"),
    pytest.param(struct.pack(">i", -1), id="negative-length"),
    pytest.param(wire.frame(struct.pack(">hhih", 999, 0, 1, -1)), id="unknown-api-key"),
    pytest.param(wire.frame(b"\0\x12"), id="shorter-than-header"),
    pytest.param(wire.frame(struct.pack(">hhih", 3, 9, 1, 30) + b"abc"), id="truncated-header"),
    pytest.param(wire.frame(struct.pack(">hhih", 3, 1, 1, -1) + b"\xff\xff"), id="truncated-body"),
])
def test_malformed_frames_close_the_connection(module_node, payload):
    node = module_node
    with socket.create_connection((HOST, node.kafka_port), timeout=10) as bad:
        bad.sendall(payload)
        assert wire.closed(bad)
    with socket.create_connection((HOST, node.kafka_port), timeout=10) as good:
        good.sendall(wire.api_versions(77))
        answer = wire.recv_response(good)
        assert struct.unpack(">ih", answer[:6]) == (77, 0)


def test_api_versions_at_unsupported_version_is_answered_in_v0(module_node):
    with socket.create_connection((HOST, module_node.kafka_port), timeout=10) as sock:
        sock.sendall(wire.api_versions(5, version=99))
        answer = wire.recv_response(sock)
        correlation_id, error_code, count = struct.unpack(">ihi", answer[:10])
        assert (correlation_id, error_code) == (5, 35)  # UNSUPPORTED_VERSION
        keys = {struct.unpack(">hhh", answer[10 + 6 * i:16 + 6 * i])[0] for i in range(count)}
        assert {0, 1, 2, 3, 18} <= keys
        # the connection stays usable
        sock.sendall(wire.api_versions(6))
        assert struct.unpack(">ih", wire.recv_response(sock)[:6]) == (6, 0)


def test_truncated_frame_then_close_is_harmless(module_node):
    node = module_node
    with socket.create_connection((HOST, node.kafka_port), timeout=10) as sock:
        sock.sendall(struct.pack(">i", 100) + b"\0" * 10)
    assert os.path.exists(node.log)
    kcat(node, "-L", "-J")
    assert node.running
