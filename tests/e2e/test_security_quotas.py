"""Client quotas across a cluster of 3 nodes, with confluent-kafka.

Three nodes share one etcd namespace and store prefix, each with a
SASL_PLAINTEXT listener; users are made with `sluice user add`. The
measured topics have 6 partitions whose leaders are spread two to a node,
so a client's traffic reaches every node evenly, and each node enforces a
third of a quota.
Covered:

* AlterClientQuotas sets a user's producer and
  consumer byte rates; DescribeClientQuotas and `sluice quota list` show
  them (both raw Kafka requests: no Python client has these calls);
  `sluice quota set/remove` manages them too;
* a producer pushing about 10x its producer_byte_rate is held to it within
  +-20 % over 30 s of steady state (measured after a 10 s warm-up: a
  node's meter starts full, with ten seconds' worth of the client's share,
  the burst Kafka lets through too), and librdkafka reports
  throttle time (its statistics' `throttle`) > 0;
* a consumer over its consumer_byte_rate likewise (measured by the bytes
  librdkafka fetched, from its statistics);
* a client without a quota, on the same nodes at the same time, sending at
  20x the quota, is neither held nor throttled;
* HTTP: a principal over its quota gets 429 with Retry-After;
* request_percentage: a client sending Metadata requests back to back
  keeps a node's threads busy for its share of the quota (the node's
  `sluice_request_busy_seconds_total`) within +-25 % over 30 s, and reads
  throttle_time_ms > 0; a client without the quota on the same node is not
  throttled; over HTTP a principal over it gets 429.
"""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import time
import uuid

import pytest
import requests
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import kafka_wire as wire
from harness import partition_leader
from test_security_http import cli

QUOTA = 100_000          # bytes per second, cluster-wide
VALUE = b"q" * 1000      # records of about a kilobyte
WARMUP = 10.0
FREE_PACE = 20 * QUOTA  # bytes per second the unquota'd producer sends
MEASURE = 30.0
PASSWORD = "quota-password"


@pytest.fixture(scope="module")
def cluster(sluice_bin, etcd, s3, tmp_path_factory):
    from processes import free_port
    from sluice_node import SluiceFactory

    factory = SluiceFactory(sluice_bin, tmp_path_factory.mktemp("quotas"), etcd, s3, "quotas")
    try:
        spec = factory.new_cluster()
        # records stay in segments for the whole module: a fetch from the
        # Parquet archive answers a whole row group as one batch, and one
        # batch larger than ten seconds of a node's share overshoots any
        # quota (the documented bound), which is not what is measured here
        nodes = [factory.distributed(spec, start=False,
                                     listeners={"PLAINTEXT": None, "SASL_PLAINTEXT": None},
                                     extra_args=["--archive-max-lag", "1h"])
                 for _ in range(3)]
        first = nodes[0]
        first.data_dir.mkdir(parents=True, exist_ok=True)
        password = first.data_dir.parent / "password"
        password.write_text(PASSWORD + "\n")
        for user in ("admin", "limited", "reader", "free", "timed"):
            cli(first, "user", "add", user, "--password-file", str(password))
        for node in nodes:
            node.start()
        yield nodes
    finally:
        factory.close()


def sasl(nodes, user: str, **extra) -> dict:
    return {"bootstrap.servers": ",".join(
                f"127.0.0.1:{n.listener_ports['SASL_PLAINTEXT']}" for n in nodes),
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": user, "sasl.password": PASSWORD, **extra}


def wait_for_brokers(nodes, conf: dict) -> None:
    admin = AdminClient(conf)
    deadline = time.monotonic() + 30
    while len(admin.list_topics(timeout=10).brokers) < len(nodes):
        assert time.monotonic() < deadline, "not every node is a broker"
        time.sleep(0.2)


def make_topic(nodes, partitions: int = 6, name: str | None = None) -> str:
    name = name or f"quota-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(sasl(nodes, "admin"))
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def make_even_topic(nodes, partitions: int = 6) -> str:
    """A topic whose partition leaders are spread evenly over the nodes.
    Leaders are placed by hashing, and a quota is shared evenly among the
    nodes: a client whose traffic falls on fewer of them gets that fraction
    of its quota (the documented bound), which is not what these tests
    measure."""
    ids = [node.node_id for node in nodes]
    while True:
        name = f"quota-{uuid.uuid4().hex[:8]}"
        expected = {p: partition_leader(ids, name, p) for p in range(partitions)}
        leaders = list(expected.values())
        if sorted(leaders.count(n) for n in ids) == [partitions // len(nodes)] * len(nodes):
            break
    make_topic(nodes, partitions, name)
    admin = AdminClient(sasl(nodes, "admin"))
    placed = {p.id: p.leader for p in admin.list_topics(name, timeout=10).topics[name]
              .partitions.values()}
    assert placed == expected, (placed, expected)
    return name


class Throttles:
    """The largest throttle librdkafka's statistics reported, and the
    message bytes it had fetched, over time."""

    def __init__(self):
        self.max_ms = 0
        self.fetched: list[tuple[float, int]] = []

    def __call__(self, stats: str) -> None:
        stats = json.loads(stats)
        for broker in stats.get("brokers", {}).values():
            self.max_ms = max(self.max_ms, broker.get("throttle", {}).get("max", 0))
        fetched = sum(p.get("rxbytes", 0) for topic in stats.get("topics", {}).values()
                      for p in topic.get("partitions", {}).values())
        self.fetched.append((time.monotonic(), fetched))

    def fetch_rate(self, start: float, end: float) -> float:
        """Bytes per second fetched between the samples nearest `start` and `end`."""
        first = min(self.fetched, key=lambda s: abs(s[0] - start))
        last = min(self.fetched, key=lambda s: abs(s[0] - end))
        return (last[1] - first[1]) / (last[0] - first[0])


def produce_for(conf: dict, topic: str, seconds: float, pace: float | None = None):
    """Produce as fast as the client may for `seconds` (at most `pace`
    bytes per second if given); (time, bytes) of every delivered record,
    and the throttle statistics."""
    throttles = Throttles()
    delivered: list[tuple[float, int]] = []
    # batches of 16 KiB, as the Java client makes them (librdkafka's own
    # default of 1 MB makes every request a burst ten seconds long)
    producer = Producer({**conf, "statistics.interval.ms": 1000, "stats_cb": throttles,
                         "linger.ms": 5, "batch.size": 16384,
                         "queue.buffering.max.kbytes": 1024})

    errors: list = []

    def done(err, msg):
        if err is None:
            delivered.append((time.monotonic(), len(msg.value())))
        else:
            errors.append(err)

    begin = time.monotonic()
    end = begin + seconds
    sent = 0
    while (now := time.monotonic()) < end:
        if pace is not None and sent > pace * (now - begin):
            producer.poll(0.001)
            continue
        try:
            producer.produce(topic, VALUE, on_delivery=done)
        except BufferError:
            producer.poll(0.05)
            continue
        sent += len(VALUE)
        producer.poll(0)
    producer.flush(60)
    assert not errors, f"{len(errors)} deliveries failed, the first: {errors[0]}"
    return delivered, throttles


FREE_PRODUCER = """
import json, sys, time
sys.path.insert(0, %r)
from test_security_quotas import produce_for, rate_between
conf, topic, seconds = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3])
begin = time.monotonic()
events, throttles = produce_for(conf, topic, seconds, pace=float(sys.argv[4]))
print(json.dumps({"rate": rate_between(events, begin, begin + seconds),
                  "throttle_ms": throttles.max_ms}))
""" % str(__import__("pathlib").Path(__file__).resolve().parent)


def rate_between(events: list[tuple[float, int]], start: float, end: float) -> float:
    return sum(n for t, n in events if start <= t < end) / (end - start)


def nullable(text: str | None) -> bytes:
    return struct.pack(">h", -1) if text is None else wire.string(text)


def alter_client_quotas(node, entity: list[tuple[str, str | None]],
                        ops: list[tuple[str, float, bool]]) -> tuple[int, str | None]:
    """AlterClientQuotas v0 of one entry (raw: no Python client has it);
    the entry's (error code, message)."""
    body = struct.pack(">i", 1) + struct.pack(">i", len(entity))
    for kind, name in entity:
        body += wire.string(kind) + nullable(name)
    body += struct.pack(">i", len(ops))
    for key, value, remove in ops:
        body += wire.string(key) + struct.pack(">d?", value, remove)
    body += struct.pack(">?", False)
    answer = wire.call(node, wire.request(49, 0, body))
    reader = Reader(answer)
    reader.i32()  # throttle
    assert reader.i32() == 1
    return reader.i16(), reader.nullable()


def describe_client_quotas(node, kind: str, name: str) -> list[tuple[list, dict]]:
    """DescribeClientQuotas v0 for one exact entity component: the entries
    as ([(type, name)], {key: value})."""
    body = struct.pack(">i", 1) + wire.string(kind) + struct.pack(">b", 0) + wire.string(name)
    body += struct.pack(">?", False)
    reader = Reader(wire.call(node, wire.request(48, 0, body)))
    reader.i32()
    assert reader.i16() == 0, "DescribeClientQuotas error"
    reader.nullable()
    entries = []
    for _ in range(reader.i32()):
        entity = [(reader.string(), reader.nullable()) for _ in range(reader.i32())]
        values = {}
        for _ in range(reader.i32()):
            key = reader.string()
            values[key] = reader.f64()
        entries.append((entity, values))
    return entries


class Reader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, fmt: str):
        value = struct.unpack_from(fmt, self.data, self.at)[0]
        self.at += struct.calcsize(fmt)
        return value

    def i16(self) -> int:
        return self.take(">h")

    def i32(self) -> int:
        return self.take(">i")

    def f64(self) -> float:
        return self.take(">d")

    def nullable(self) -> str | None:
        n = self.i16()
        if n < 0:
            return None
        text = self.data[self.at:self.at + n].decode()
        self.at += n
        return text

    def string(self) -> str:
        text = self.nullable()
        assert text is not None
        return text


def test_quotas_are_set_and_shown_through_the_kafka_api_and_the_cli(cluster):
    node = cluster[0]
    entity = [("user", "someone"), ("client-id", None)]
    assert alter_client_quotas(node, entity, [("producer_byte_rate", 2048.0, False),
                                              ("consumer_byte_rate", 4096.0, False)]) == (0, None)
    assert describe_client_quotas(node, "user", "someone") == [
        ([("user", "someone"), ("client-id", None)],
         {"consumer_byte_rate": 4096.0, "producer_byte_rate": 2048.0})]
    listed = cli(node, "quota", "list")
    assert "user=someone,client-id=<default> consumer_byte_rate=4096 producer_byte_rate=2048" \
        in listed, listed
    # refused: an unknown key, a negative rate
    code, message = alter_client_quotas(node, entity, [("fetch_rate", 1.0, False)])
    assert code == 42 and "not one of" in message  # INVALID_REQUEST
    code, _ = alter_client_quotas(node, entity, [("producer_byte_rate", -5.0, False)])
    assert code == 42
    # removed through the API, then gone everywhere
    assert alter_client_quotas(node, entity, [("producer_byte_rate", 0.0, True),
                                              ("consumer_byte_rate", 0.0, True)]) == (0, None)
    assert describe_client_quotas(node, "user", "someone") == []
    assert "someone" not in cli(node, "quota", "list")


def test_a_producer_is_held_to_its_quota_across_three_nodes(cluster):
    nodes = cluster
    cli(nodes[0], "quota", "set", "--user", "limited", "--producer-byte-rate", str(QUOTA))
    assert f"user=limited producer_byte_rate={QUOTA}" in cli(nodes[0], "quota", "list")
    wait_for_brokers(nodes, sasl(nodes, "admin"))
    topic = make_even_topic(nodes)
    free_topic = make_topic(nodes)
    time.sleep(0.5)  # the quota reaches every node's view (milliseconds)
    # the unquota'd client runs at the same time in a process of its own
    # (two producers in one interpreter share its lock, and the loop of one
    # starves the other's callbacks)
    # paced at 20x the quota for the whole run: well over the quota, yet
    # leaving the two cores enough for the limited one to reach its quota
    free = subprocess.Popen(
        [sys.executable, "-c", FREE_PRODUCER, json.dumps(sasl(nodes, "free")), free_topic,
         str(WARMUP + MEASURE), str(FREE_PACE)], stdout=subprocess.PIPE, text=True)
    begin = time.monotonic()
    limited, throttles = produce_for(sasl(nodes, "limited"), topic, WARMUP + MEASURE)
    free_out, _ = free.communicate(timeout=120)
    rate = rate_between(limited, begin + WARMUP, begin + WARMUP + MEASURE)
    print(f"limited producer: {rate:,.0f} B/s against a quota of {QUOTA:,} B/s; "
          f"largest throttle {throttles.max_ms} ms")
    assert 0.8 * QUOTA <= rate <= 1.2 * QUOTA, f"{rate:,.0f} B/s, quota {QUOTA:,} B/s"
    assert throttles.max_ms > 0, "librdkafka never reported a throttle"
    # the unquota'd client beside it was neither held nor throttled
    free_result = json.loads(free_out)
    print(f"free producer: {free_result['rate']:,.0f} B/s, largest throttle "
          f"{free_result['throttle_ms']} ms")
    assert free_result["rate"] > 0.9 * FREE_PACE, free_result
    assert free_result["throttle_ms"] == 0, free_result


def test_a_consumer_is_held_to_its_quota_across_three_nodes(cluster):
    nodes = cluster
    cli(nodes[0], "quota", "set", "--user", "reader", "--consumer-byte-rate", str(QUOTA))
    wait_for_brokers(nodes, sasl(nodes, "admin"))
    topic = make_even_topic(nodes)
    # enough for the whole measurement at ten times the quota
    # batches of 16 KiB: a fetch answers at least one whole batch, and a
    # batch larger than the share's ten seconds' worth overshoots any quota
    admin_producer = Producer(sasl(nodes, "admin", **{"linger.ms": 20, "batch.size": 16384}))
    total = int(10 * QUOTA * (WARMUP + MEASURE) / len(VALUE)) // 4
    for i in range(total):
        admin_producer.produce(topic, VALUE, partition=i % 6)
        if i % 1000 == 0:
            admin_producer.poll(0)
    assert admin_producer.flush(120) == 0
    throttles = Throttles()
    consumer = Consumer(sasl(nodes, "reader", **{
        "group.id": f"g-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "statistics.interval.ms": 1000, "stats_cb": throttles,
        # small fetches, so that each node's share is let through in small
        # steps rather than in bursts ten seconds apart
        "max.partition.fetch.bytes": 8192}))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(6)])
    consumed: list[tuple[float, int]] = []
    begin = time.monotonic()
    while time.monotonic() < begin + WARMUP + MEASURE:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            consumed.append((time.monotonic(), len(msg.value())))
    consumer.close()
    # what the nodes let through: librdkafka's count of fetched message
    # bytes (what poll() hands out runs ahead of it by the prefetch queue)
    rate = throttles.fetch_rate(begin + WARMUP, begin + WARMUP + MEASURE)
    print(f"limited consumer: {rate:,.0f} B/s against a quota of {QUOTA:,} B/s; "
          f"largest throttle {throttles.max_ms} ms; {len(consumed)} of {total} records")
    assert len(consumed) < total, "the consumer read everything: the test is too small"
    assert 0.8 * QUOTA <= rate <= 1.2 * QUOTA, f"{rate:,.0f} B/s, quota {QUOTA:,} B/s"
    assert throttles.max_ms > 0, "librdkafka never reported a throttle"


def test_http_over_its_quota_is_429_with_retry_after(cluster):
    node = cluster[0]
    cli(node, "quota", "set", "--user", "free", "--producer-byte-rate", "1000")
    topic = make_topic(cluster, partitions=1)
    time.sleep(0.5)
    cid = requests.get(f"{node.url}/v3/clusters", timeout=10).json()["data"][0]["cluster_id"]
    url = f"{node.url}/v3/clusters/{cid}/topics/{topic}/records"
    body = json.dumps({"value": {"type": "BINARY",
                                 "data": base64.b64encode(b"x" * 15000).decode()}})
    statuses = []
    for _ in range(20):
        r = requests.post(url, data=body, auth=("free", PASSWORD),
                          headers={"Content-Type": "application/json"}, timeout=10)
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert "over its producer_byte_rate quota" in r.json()["message"]
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    # removed: allowed again at once
    cli(node, "quota", "remove", "--user", "free")
    time.sleep(0.5)
    r = requests.post(url, data=body, auth=("free", PASSWORD),
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200, r.text


REQUEST_QUOTA = 3.0  # percent of a thread, cluster-wide: 1 % on each of 3 nodes


def metadata_v4(topic: str, client_id: bytes) -> bytes:
    """Metadata v4 of one topic, no auto-creation."""
    return wire.request(3, 4, struct.pack(">i", 1) + wire.string(topic) + b"\x00",
                        client_id=client_id)


def busy_seconds(node) -> float:
    return node.api.metrics().get("sluice_request_busy_seconds_total", 0.0)


def metadata_loop(node, topic: str, client_id: bytes, seconds: float,
                  marks: tuple[float, ...] = ()) -> tuple[int, int, dict[float, float]]:
    """Metadata requests back to back on one connection for `seconds`: how
    many were answered, the largest throttle_time_ms answered, and the
    node's (time, busy seconds) at each of `marks` (seconds from the start)
    and at the end (key `seconds`)."""
    import socket
    answered, throttle_max, at = 0, 0, {}
    pending = sorted(marks)
    begin = time.monotonic()
    with socket.create_connection(("127.0.0.1", node.kafka_port), timeout=30) as sock:
        while (elapsed := time.monotonic() - begin) < seconds:
            if pending and elapsed >= pending[0]:
                at[pending.pop(0)] = (time.monotonic(), busy_seconds(node))
            sock.sendall(metadata_v4(topic, client_id))
            answer = wire.recv_response(sock)
            throttle_max = max(throttle_max, struct.unpack_from(">i", answer, 4)[0])
            answered += 1
    at[seconds] = (time.monotonic(), busy_seconds(node))
    return answered, throttle_max, at


def test_a_client_is_held_to_its_request_time_share(cluster):
    node = cluster[0]
    cli(node, "quota", "set", "--client-id", "busy-client",
        "--request-percentage", str(REQUEST_QUOTA))
    assert f"client-id=busy-client request_percentage={REQUEST_QUOTA:g}" in \
        cli(node, "quota", "list")
    topic = make_topic(cluster, partitions=1)
    wait_for_brokers(cluster, sasl(cluster, "admin"))
    time.sleep(0.5)
    answered, throttle_max, at = metadata_loop(node, topic, b"busy-client", WARMUP + MEASURE,
                                               marks=(WARMUP,))
    (t0, busy0), (t1, busy1) = at[WARMUP], at[WARMUP + MEASURE]
    share = REQUEST_QUOTA / len(cluster)
    used = (busy1 - busy0) / (t1 - t0) * 100
    print(f"request-time quota {REQUEST_QUOTA} % (node share {share:.2f} %): the client kept "
          f"the node busy {used:.2f} % of a thread; {answered} requests in "
          f"{WARMUP + MEASURE:.0f} s, largest throttle {throttle_max} ms")
    assert 0.75 * share <= used <= 1.25 * share, f"{used:.3f} % of a thread, share {share} %"
    assert throttle_max > 0, "no answer carried a throttle"
    # a client without the quota, on the same node right after: unthrottled
    calm, calm_throttle, _ = metadata_loop(node, topic, b"calm-client", 3.0)
    print(f"calm client: {calm / 3:,.0f} requests/s (the busy one {answered / (WARMUP + MEASURE):,.0f}/s)")
    assert calm_throttle == 0
    assert calm / 3.0 > 5 * answered / (WARMUP + MEASURE), (calm, answered)
    cli(node, "quota", "remove", "--client-id", "busy-client")


def test_http_over_its_request_time_quota_is_429(cluster):
    node = cluster[0]
    # a tenth of a percent of a thread on each node: a few requests are over it
    cli(node, "quota", "set", "--user", "timed", "--request-percentage", "0.3")
    time.sleep(0.5)
    url = f"{node.url}/v3/clusters/" + \
        requests.get(f"{node.url}/v3/clusters", timeout=10).json()["data"][0]["cluster_id"] + \
        "/topics"
    statuses = []
    for _ in range(500):
        r = requests.get(url, auth=("timed", PASSWORD), timeout=10)
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert "over its request_percentage quota" in r.json()["message"], r.text
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    # another user is not held
    assert requests.get(url, auth=("free", PASSWORD), timeout=10).status_code == 200
    cli(node, "quota", "remove", "--user", "timed")
    time.sleep(0.5)
    assert requests.get(url, auth=("timed", PASSWORD), timeout=10).status_code == 200
