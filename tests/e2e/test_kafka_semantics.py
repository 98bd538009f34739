"""Kafka semantics of one connection, of Fetch sizes and of topic names.

1. Request order: a confluent-kafka producer without idempotence but with 5
   requests in flight, acks=all, sends 10,000 records (large ones among many
   small ones) to 3 partitions of a node whose writer buffer (2 MiB) is
   smaller than what those requests carry, so appends wait for room. Kafka
   applies the requests of one connection in arrival order, so every
   partition must hold its records in send order, each at the offset its
   delivery report gave, and no record may fail.
2. Pipelined OffsetCommits: 50 asynchronous commits of offsets 1..50 sent
   back to back by a group member are answered in order and leave 50 as
   the group's committed offset (for that member and for a fresh consumer).
3. Fetch sizes: 8 MB of 500 KB records read with fetch.max.bytes = 1 MiB.
   A TCP proxy between the consumer and the node (which advertises the
   proxy's address) measures every Fetch response: none may exceed
   fetch.max.bytes by more than one batch, with max.partition.fetch.bytes
   at 1 MiB and again at 4 MiB (the response's max_bytes must bound the
   first partition too). Every record must be read, in order.
4. Illegal topic names ("bad name!", 250 characters) are
   INVALID_TOPIC_EXCEPTION (17): raw Metadata v1 and v4, raw Produce v3,
   kafka-python's Metadata (the newest version it negotiates), and a
   confluent-kafka producer's delivery report (reported at once, not after
   message.timeout.ms); no such topic is created.
5. A Produce with acks=2 is INVALID_REQUIRED_ACKS (21) and auto-creates
   nothing; the same request with acks=-1 then creates the topic.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient

import kafka_wire as wire
from harness import HOST, free_port
from test_kafka_clients import consume
from test_kafka_groups import committed
from test_kafka_idempotent import produce as produce_v3_answer, record_batch

INVALID_TOPIC_EXCEPTION = 17
INVALID_REQUIRED_ACKS = 21
UNKNOWN_TOPIC_OR_PARTITION = 3

PRODUCE = 0
FETCH = 1
MIB = 1024 * 1024


def topic_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def first_difference(got: list, want: list, what: str) -> str | None:
    """None if equal; else where the lists first differ, briefly."""
    if got == want:
        return None
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            return f"{what}: first difference at index {i}: {g!r:.80} != {w!r:.80}"
    return f"{what}: {len(got)} items, {len(want)} expected"


# ---------------------------------------------------------------------------
# raw wire: Produce v3 with any acks, Metadata v1-v4 topic errors

def produce_v3(topic: str, partition: int, batch: bytes, *, acks: int,
               correlation_id: int = 1) -> bytes:
    """A framed ProduceRequest v3 (no transactional id) of one batch."""
    body = (struct.pack(">hhi", -1, acks, 30_000) + struct.pack(">i", 1) + wire.string(topic)
            + struct.pack(">i", 1) + struct.pack(">ii", partition, len(batch)) + batch)
    return wire.request(0, 3, body, correlation_id=correlation_id)


def plain_batch(value: bytes = b"v") -> bytes:
    """One uncompressed record of a producer without idempotence."""
    return record_batch([(b"k", value)], producer_id=-1, epoch=-1, base_sequence=-1)


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        text = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return text

    def int32_array(self) -> list[int]:
        return [self.take(">i") for _ in range(self.take(">i"))]


def metadata_request(topics: list[str], version: int, allow_auto_create: bool = True) -> bytes:
    assert 1 <= version <= 4
    body = struct.pack(">i", len(topics)) + b"".join(wire.string(t) for t in topics)
    if version >= 4:
        body += struct.pack(">b", 1 if allow_auto_create else 0)
    return wire.request(3, version, body, correlation_id=version)


def metadata_topic_errors(answer: bytes, version: int) -> dict[str, int]:
    """topic name -> error code of a Metadata v1-v4 response (after the correlation id)."""
    r = Reader(answer)
    if version >= 3:
        r.take(">i")  # throttle
    for _ in range(r.take(">i")):  # brokers
        r.take(">i")
        r.string()
        r.take(">i")
        r.string()  # rack
    if version >= 2:
        r.string()  # cluster id
    r.take(">i")  # controller
    errors = {}
    for _ in range(r.take(">i")):
        error_code = r.take(">h")
        name = r.string()
        r.take(">b")  # is_internal
        for _ in range(r.take(">i")):
            r.take(">hii")  # error, index, leader
            r.int32_array()  # replicas
            r.int32_array()  # isr
        errors[name] = error_code
    assert r.pos == len(answer), f"{len(answer) - r.pos} bytes left in the Metadata response"
    return errors


def metadata_errors(node, topics: list[str], version: int,
                    allow_auto_create: bool = True) -> dict[str, int]:
    answer = wire.call(node, metadata_request(topics, version, allow_auto_create))
    return metadata_topic_errors(answer, version)


def listed_topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


# ---------------------------------------------------------------------------
# a TCP proxy that measures Kafka response frames

class FrameSizeProxy:
    """Forwards Kafka connections to one node and records, for every
    response frame the node sends, the API key and version of its request
    and the frame's size (its 4-byte size prefix), and per API key the most
    requests one connection had in flight. Requests are parsed before they
    are forwarded, so a response always finds its request."""

    def __init__(self, upstream_port: int):
        self.upstream = (HOST, upstream_port)
        self.port = free_port()
        self.address = f"{HOST}:{self.port}"
        self.lock = threading.Lock()
        self.responses: list[tuple[int, int, int]] = []  # (api key, version, frame size)
        self.most_in_flight: dict[int, int] = {}  # api key -> requests of one connection
        self.conns: list[socket.socket] = []
        self.listener = socket.create_server((HOST, self.port))
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream, timeout=10)
            upstream.settimeout(None)
            requests: dict[int, tuple[int, int]] = {}
            with self.lock:
                self.conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, requests, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, requests, False),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket,
              requests: dict[int, tuple[int, int]], from_client: bool) -> None:
        # a request header: size, api key, version, correlation id;
        # a response header: size, correlation id
        header_len = 12 if from_client else 8
        header = b""
        skip = 0
        try:
            while True:
                data = src.recv(1 << 18)
                if not data:
                    break
                i = 0
                while i < len(data):
                    if skip:
                        n = min(skip, len(data) - i)
                        skip -= n
                        i += n
                        continue
                    need = header_len - len(header)
                    header += data[i:i + need]
                    i += min(need, len(data) - i)
                    if len(header) < header_len:
                        continue
                    if from_client:
                        size, key, version, correlation = struct.unpack(">ihhi", header)
                        requests[correlation] = (key, version)
                        in_flight = sum(1 for k, _ in list(requests.values()) if k == key)
                        with self.lock:
                            if in_flight > self.most_in_flight.get(key, 0):
                                self.most_in_flight[key] = in_flight
                    else:
                        size, correlation = struct.unpack(">ii", header)
                        key, version = requests.pop(correlation, (-1, -1))
                        with self.lock:
                            self.responses.append((key, version, size))
                    skip = size - (header_len - 4)
                    header = b""
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self, api_key: int) -> list[int]:
        """Sizes of the responses to `api_key` recorded so far; forgets every record."""
        with self.lock:
            sizes = [size for key, _, size in self.responses if key == api_key]
            self.responses.clear()
        return sizes

    def close(self) -> None:
        self.running = False
        self.listener.close()
        with self.lock:
            conns = list(self.conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@pytest.fixture
def proxied(sluice):
    """Starts a node behind a FrameSizeProxy: ``proxied(*serve_args) -> (node, proxy)``.
    The node advertises the proxy's address, so every client connection
    after the bootstrap goes through the proxy."""
    proxies: list[FrameSizeProxy] = []

    def start(*serve_args: str):
        kafka_port = free_port()
        proxy = FrameSizeProxy(kafka_port)  # listening before the node advertises it
        proxies.append(proxy)
        node = sluice.distributed(kafka_port=kafka_port, extra_args=[
            "--advertised-kafka-addr", proxy.address, *serve_args])
        return node, proxy

    try:
        yield start
    finally:
        for proxy in proxies:
            proxy.close()


# ---------------------------------------------------------------------------
# 1. request order under back-pressure

def sequenced_value(partition: int, seq: int, size: int) -> bytes:
    head = f"{partition}:{seq:07d}:".encode()
    return head + bytes([65 + seq % 26]) * max(0, size - len(head))


def test_a_non_idempotent_producer_keeps_send_order_under_back_pressure(proxied):
    node, proxy = proxied("--buffer-max-bytes", "2MiB")
    partitions, total = 3, 10_000
    topic = topic_name("order")
    node.api.create_topic(topic, partitions)
    rng = random.Random(20261126)
    sent: list[list[bytes]] = [[] for _ in range(partitions)]
    delivered: dict[tuple[int, int], int] = {}  # (partition, seq) -> offset
    errors: list = []

    def report(partition: int, seq: int):
        def on_delivery(err, msg):
            if err is not None:
                errors.append((partition, seq, err))
            else:
                delivered[(partition, seq)] = msg.offset()
        return on_delivery

    producer = Producer({"bootstrap.servers": node.bootstrap, "acks": "all",
                         "enable.idempotence": False,
                         "max.in.flight.requests.per.connection": 5,
                         # a retry may reorder by itself: any failure must show
                         "retries": 0, "linger.ms": 5})
    large = 0
    for i in range(total):
        partition = rng.randrange(partitions)
        seq = len(sent[partition])
        if i % 250 == 0:  # 40 records of 100-500 KB
            size = rng.randrange(100_000, 500_000)
            large += size
        else:
            size = rng.randrange(20, 200)
        value = sequenced_value(partition, seq, size)
        sent[partition].append(value)
        while True:
            try:
                producer.produce(topic, value=value, partition=partition,
                                 on_delivery=report(partition, seq))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0, "records left unflushed"
    producer.close()
    assert large > 4 * 2 * MIB, "the large records must outweigh the writer buffer"
    # the scenario took place: Produce requests were pipelined on a connection
    assert proxy.most_in_flight.get(PRODUCE, 0) >= 2, proxy.most_in_flight
    assert not errors, f"{len(errors)} delivery errors, first: {errors[:5]}"
    assert len(delivered) == total

    for p in range(partitions):
        want = sent[p]
        assert node.api.high_watermark(topic, p) == len(want), f"partition {p}"
        got = consume(node, topic, len(want), partition=p)
        offsets = [m.offset() for m in got]
        why = first_difference(offsets, list(range(len(want))), f"partition {p} offsets")
        assert why is None, why
        seqs = [int(m.value().split(b":")[1]) for m in got]
        why = first_difference(seqs, list(range(len(want))),
                               f"partition {p}: sequence numbers in stored order")
        assert why is None, why
        why = first_difference([m.value() for m in got], want, f"partition {p} values")
        assert why is None, why
        misplaced = [(seq, delivered[(p, seq)]) for seq in range(len(want))
                     if delivered[(p, seq)] != seq]
        assert not misplaced, (f"partition {p}: (seq, delivered offset) of records stored "
                               f"elsewhere: {misplaced[:10]}")


# ---------------------------------------------------------------------------
# 2. pipelined asynchronous OffsetCommits

def test_pipelined_async_commits_end_at_the_last_one(module_node):
    node = module_node
    topic = topic_name("commits")
    group = f"g-{uuid.uuid4().hex[:8]}"
    node.api.create_topic(topic, 1)
    entries = [{"id": str(i), "partition_id": 0, "value": {"type": "STRING", "data": f"v{i}"}}
               for i in range(60)]
    assert node.api.produce_batch_raw(topic, {"entries": entries}).status_code == 200
    answered: list[tuple] = []

    def on_commit(err, partitions):
        answered.append((err, [(tp.partition, tp.offset, tp.error) for tp in partitions]))

    consumer = Consumer({"bootstrap.servers": node.bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "on_commit": on_commit})
    try:
        consumer.subscribe([topic])
        first = None
        deadline = time.monotonic() + 60
        while first is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                first = msg
        assert first is not None and first.offset() == 0, "the member got no record"
        answered.clear()
        for n in range(1, 51):
            consumer.commit(offsets=[TopicPartition(topic, 0, n)], asynchronous=True)
        deadline = time.monotonic() + 60
        while len(answered) < 50 and time.monotonic() < deadline:
            consumer.poll(0.2)
        assert len(answered) == 50, f"{len(answered)} of 50 commits answered"
        failed = [a for a in answered if a[0] is not None or any(e for _, _, e in a[1])]
        assert not failed, failed[:5]
        # responses of one connection come back in request order
        assert [a[1] for a in answered] == [[(0, n, None)] for n in range(1, 51)]
        mine = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        assert mine[0].error is None and mine[0].offset == 50
    finally:
        consumer.close()
    assert committed(node, group, topic)[0] == 50


# ---------------------------------------------------------------------------
# 3. Fetch responses within fetch.max.bytes

RECORD_VALUE = 500_000
RECORDS_PER_PARTITION = 8


def test_fetch_responses_respect_fetch_max_bytes(proxied):
    node, proxy = proxied()
    partitions = 2
    topic = topic_name("fetchsize")
    node.api.create_topic(topic, partitions)
    values = {p: [sequenced_value(p, i, RECORD_VALUE) for i in range(RECORDS_PER_PARTITION)]
              for p in range(partitions)}
    errors: list = []
    producer = Producer({"bootstrap.servers": proxy.address, "acks": "all",
                         "enable.idempotence": False, "linger.ms": 1})
    for i in range(RECORDS_PER_PARTITION):
        for p in range(partitions):
            producer.produce(topic, value=values[p][i], partition=p,
                             on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert producer.flush(60) == 0 and not errors, errors[:3]
    producer.close()
    for p in range(partitions):
        assert node.api.high_watermark(topic, p) == RECORDS_PER_PARTITION
    proxy.take(FETCH)

    fetch_max = MIB
    batch_max = RECORD_VALUE + 200  # one record's batch: value + batch and record headers
    limit = fetch_max + batch_max
    for partition_max in (MIB, 4 * MIB):
        consumer = Consumer({"bootstrap.servers": proxy.address,
                             "group.id": f"unused-{uuid.uuid4().hex[:6]}",
                             "enable.auto.commit": False, "auto.offset.reset": "error",
                             "fetch.max.bytes": fetch_max,
                             "max.partition.fetch.bytes": partition_max,
                             "receive.message.max.bytes": fetch_max + 512,
                             "fetch.wait.max.ms": 200})
        got: dict[int, list] = {p: [] for p in range(partitions)}
        try:
            consumer.assign([TopicPartition(topic, p, -2) for p in range(partitions)])
            deadline = time.monotonic() + 60
            while sum(map(len, got.values())) < partitions * RECORDS_PER_PARTITION \
                    and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                assert msg.error() is None or msg.error().code() == KafkaError._PARTITION_EOF, \
                    msg.error()
                if msg.error() is None:
                    got[msg.partition()].append((msg.offset(), msg.value()))
        finally:
            consumer.close()
        sizes = proxy.take(FETCH)
        context = f"max.partition.fetch.bytes={partition_max}"
        too_big = [s for s in sizes if s > limit]
        assert not too_big, (f"{context}: Fetch responses over fetch.max.bytes {fetch_max} "
                             f"+ one batch ({limit}): {too_big[:10]} (all: {sizes})")
        with_records = [s for s in sizes if s > RECORD_VALUE]
        assert len(with_records) >= 6, f"{context}: Fetch responses seen: {sizes}"
        assert sum(sizes) >= partitions * RECORDS_PER_PARTITION * RECORD_VALUE, \
            f"{context}: the proxy did not see every record fetched: {sizes}"
        print(f"{context}, fetch.max.bytes={fetch_max}: {len(with_records)} Fetch responses "
              f"with records, {min(with_records)}-{max(with_records)} bytes")
        for p in range(partitions):
            assert [o for o, _ in got[p]] == list(range(RECORDS_PER_PARTITION)), \
                f"{context}: partition {p} offsets {[o for o, _ in got[p]]}"
            assert [v for _, v in got[p]] == values[p], f"{context}: partition {p} values"


# ---------------------------------------------------------------------------
# 4. illegal topic names

BAD_NAME = "bad name!"
LONG_NAME = "a" * 250


def test_illegal_topic_names_are_invalid_topic_exception(module_node):
    node = module_node
    bad = [BAD_NAME, LONG_NAME]
    # (a) raw Metadata: v1 auto-creates implicitly, v4 asks for it
    assert metadata_errors(node, bad, version=1) == {n: INVALID_TOPIC_EXCEPTION for n in bad}
    assert metadata_errors(node, bad, version=4, allow_auto_create=True) == \
        {n: INVALID_TOPIC_EXCEPTION for n in bad}
    assert metadata_errors(node, bad, version=4, allow_auto_create=False) == \
        {n: INVALID_TOPIC_EXCEPTION for n in bad}

    # raw Produce v3
    for i, name in enumerate(bad):
        error, base_offset = produce_v3_answer(
            node, produce_v3(name, 0, plain_batch(), acks=-1, correlation_id=i))
        assert (error, base_offset) == (INVALID_TOPIC_EXCEPTION, -1), name

    # (c) kafka-python's Metadata (the newest version both sides speak)
    admin = KafkaAdminClient(bootstrap_servers=node.bootstrap, request_timeout_ms=20000)
    try:
        described = admin.describe_topics(bad)
    finally:
        admin.close()
    assert {t["name"]: t["error_code"] for t in described} == \
        {n: INVALID_TOPIC_EXCEPTION for n in bad}, described

    # (b) confluent-kafka: a permanent error, reported before message.timeout.ms
    reports: list = []
    producer = Producer({"bootstrap.servers": node.bootstrap, "message.timeout.ms": 30000,
                         "enable.idempotence": False})
    producer.produce(BAD_NAME, value=b"x", on_delivery=lambda err, msg: reports.append(err))
    producer.flush(45)
    producer.close()
    assert len(reports) == 1, f"{len(reports)} delivery reports"
    assert reports[0] is not None and reports[0].code() == KafkaError.TOPIC_EXCEPTION, \
        f"expected TOPIC_EXCEPTION (17), got {reports[0]!r}"

    # (d) nothing was created
    assert not set(bad) & listed_topics(node.bootstrap)
    assert not set(bad) & set(node.api.list_topics())


# ---------------------------------------------------------------------------
# 5. invalid acks

def test_a_produce_with_invalid_acks_creates_nothing(module_node):
    node = module_node
    topic = topic_name("acks")
    error, base_offset = produce_v3_answer(node, produce_v3(topic, 0, plain_batch(b"two"),
                                                            acks=2))
    assert (error, base_offset) == (INVALID_REQUIRED_ACKS, -1)
    assert metadata_errors(node, [topic], version=4, allow_auto_create=False) == \
        {topic: UNKNOWN_TOPIC_OR_PARTITION}
    assert topic not in listed_topics(node.bootstrap)
    assert node.api.get_topic(topic).status_code == 404
    # the same request with acks=-1 is valid: it creates the topic and stores the record
    error, base_offset = produce_v3_answer(node, produce_v3(topic, 0, plain_batch(b"all"),
                                                            acks=-1))
    assert (error, base_offset) == (0, 0)
    assert metadata_errors(node, [topic], version=4, allow_auto_create=False) == {topic: 0}
    assert [m.value() for m in consume(node, topic, 1)] == [b"all"]
