"""Kafka semantics, part 2: every topic config, per-record errors,
broker-side timestamps and static group members.

1. Topic configs: CreateTopics (confluent-kafka AdminClient) with every
   Kafka topic config at a non-default valid value succeeds, and
   DescribeConfigs answers each value with source DYNAMIC_TOPIC_CONFIG; a
   topic without configs shows Kafka's defaults (sluice's retention.ms -1)
   as DEFAULT_CONFIG, with the broker-wide synonym. The same through
   kafka-python's KafkaAdminClient. Invalid values and unknown names are
   INVALID_CONFIG (40) and create nothing. A broker resource lists the
   node's settings (broker.id, num.partitions, log.retention.ms); a group
   resource (config resource type 32) consumer.session.timeout.ms 45000.
2. Per-record errors (KIP-467): a compacted topic refuses a keyless record
   with INVALID_RECORD (87) -- a confluent-kafka delivery report (reported,
   not retried until message.timeout.ms), a raw Produce v8 whose answer
   names the refused records by batch index with a message, and the HTTP
   produce (400, nothing stored). A topic with
   message.timestamp.before.max.ms refuses a record an hour old with
   INVALID_TIMESTAMP (32) and takes one of the current time.
3. LogAppendTime: records sent with a 2001 timestamp to a LogAppendTime
   topic carry the broker's append time in the delivery report
   (TIMESTAMP_LOG_APPEND_TIME), in what confluent-kafka and kafka-python
   consumers read (timestamp type LogAppendTime), and in the HTTP read.
4. Static membership (KIP-345): two confluent-kafka consumers of one group,
   each with its own group.instance.id (range assignor, 4 partitions,
   session.timeout.ms 30 s). Once both hold 2 partitions, the follower and
   then the leader (librdkafka's JoinGroup log names the leader) is closed
   (librdkafka sends no LeaveGroup for a static member) and replaced, well
   within the session timeout, by a new consumer with the same
   group.instance.id: the replacement gets exactly the old partitions back
   in the same generation (a follower under the same leader), the other
   member sees no revoke and no new assignment, and the records produced
   after the rejoin are read by the member owning their partition, from
   the offsets committed before the restart. It runs last, so that under
   -x a failure here still lets the others run.
"""

from __future__ import annotations

import re
import struct
import time
import uuid

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic, ResourceType
import kafka.errors
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource as KpConfigResource, ConfigResourceType

import kafka_wire as wire
from harness import assert_error
from test_kafka_admin import create, describe_configs, error_of
from test_kafka_clients import consume
from test_kafka_idempotent import crc32c, varint
from test_kafka_python import read_partition
from test_kafka_semantics import Reader, topic_name

TIMEOUT = 30
INVALID_TIMESTAMP = 32
INVALID_CONFIG = 40
INVALID_RECORD = 87
DYNAMIC_TOPIC_CONFIG = ConfigSource.DYNAMIC_TOPIC_CONFIG.value  # 1
STATIC_BROKER_CONFIG = ConfigSource.STATIC_BROKER_CONFIG.value  # 4
DEFAULT_CONFIG = ConfigSource.DEFAULT_CONFIG.value  # 5


def now_ms() -> int:
    return int(time.time() * 1000)


def produce_http(node, topic: str, partitions: int, tag: str, count: int) -> dict[int, list[str]]:
    """`count` records to each partition over HTTP, value "p<p>-<tag>-<i>";
    returns the values of each partition."""
    values: dict[int, list[str]] = {}
    for p in range(partitions):
        values[p] = [f"p{p}-{tag}-{i}" for i in range(count)]
        entries = [{"id": v, "partition_id": p, "value": {"type": "STRING", "data": v}}
                   for v in values[p]]
        r = node.api.produce_batch_raw(topic, {"entries": entries})
        assert r.status_code == 200, r.text
    return values


def deliver(producer: Producer, topic: str, **kw) -> tuple:
    """Produce one record, flush, and return (error, partition, offset, timestamp)."""
    reports: list = []
    producer.produce(topic, on_delivery=lambda err, msg: reports.append(
        (err, msg.partition(), msg.offset(), msg.timestamp())), **kw)
    producer.flush(45)
    assert len(reports) == 1, f"{len(reports)} delivery reports for one record"
    return reports[0]


# ---------------------------------------------------------------------------
# 1. topic configs

EVERY_CONFIG = {
    "cleanup.policy": "compact,delete",
    "compression.type": "zstd",
    "compression.gzip.level": "5",
    "compression.lz4.level": "10",
    "compression.zstd.level": "7",
    "delete.retention.ms": "3600000",
    "file.delete.delay.ms": "30000",
    "flush.messages": "1000",
    "flush.ms": "2000",
    "follower.replication.throttled.replicas": "",
    "index.interval.bytes": "8192",
    "leader.replication.throttled.replicas": "0:1",
    "local.retention.bytes": "1000000",
    "local.retention.ms": "600000",
    "max.compaction.lag.ms": "7200000",
    "max.message.bytes": "2097152",
    "message.downconversion.enable": "false",
    "message.format.version": "2.8",
    "message.timestamp.after.max.ms": "3600000",
    "message.timestamp.before.max.ms": "86400000",
    "message.timestamp.difference.max.ms": "172800000",
    "message.timestamp.type": "LogAppendTime",
    "min.cleanable.dirty.ratio": "0.3",
    "min.compaction.lag.ms": "60000",
    "min.insync.replicas": "1",
    "preallocate": "true",
    "remote.log.copy.disable": "true",
    "remote.log.delete.on.disable": "true",
    "remote.storage.enable": "true",
    "retention.bytes": "104857600",
    "retention.ms": "604800000",
    "segment.bytes": "536870912",
    "segment.index.bytes": "5242880",
    "segment.jitter.ms": "1000",
    "segment.ms": "3600000",
    "unclean.leader.election.enable": "true",
}

# Kafka's defaults (sluice keeps records forever unless asked: retention.ms -1)
DEFAULTS = {
    "retention.ms": ("-1", "log.retention.ms"),
    "cleanup.policy": ("delete", "log.cleanup.policy"),
    "delete.retention.ms": ("86400000", "log.cleaner.delete.retention.ms"),
    "max.message.bytes": ("1048576", "message.max.bytes"),
    "message.timestamp.type": ("CreateTime", "log.message.timestamp.type"),
    "min.cleanable.dirty.ratio": ("0.5", "log.cleaner.min.cleanable.ratio"),
    "segment.ms": ("604800000", "log.roll.ms"),
}


def test_every_topic_config_is_accepted_and_described(module_node):
    node = module_node
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    tuned, plain = topic_name("cfg-all"), topic_name("cfg-none")
    create(admin, NewTopic(tuned, num_partitions=1, config=dict(EVERY_CONFIG)),
           NewTopic(plain, num_partitions=1))

    # confluent-kafka: every config set, as set, from the topic
    entries = describe_configs(admin, tuned)
    assert set(EVERY_CONFIG) <= set(entries), sorted(set(EVERY_CONFIG) - set(entries))
    wrong = {name: (entries[name].value, entries[name].source)
             for name, value in EVERY_CONFIG.items()
             if (entries[name].value, entries[name].source) != (value, DYNAMIC_TOPIC_CONFIG)}
    assert not wrong, f"described (value, source) differing from what was set: {wrong}"
    assert all(not entries[n].is_default for n in EVERY_CONFIG)

    # the topic without configs: defaults, with the broker-wide synonym
    entries = describe_configs(admin, plain)
    assert set(EVERY_CONFIG) <= set(entries)
    assert all(e.source == DEFAULT_CONFIG and e.is_default for e in entries.values()), \
        {n: e.source for n, e in entries.items() if e.source != DEFAULT_CONFIG}
    for name, (value, synonym) in DEFAULTS.items():
        assert entries[name].value == value, (name, entries[name].value)
        syn = entries[name].synonyms.get(synonym)
        assert syn is not None, f"{name}: synonyms {list(entries[name].synonyms)}"
        assert (syn.value, syn.source) == (value, DEFAULT_CONFIG), (name, syn)

    # kafka-python: the same answers, and the synonym lists in order
    kp = KafkaAdminClient(bootstrap_servers=node.bootstrap, request_timeout_ms=20000)
    try:
        described = kp.describe_configs(
            [KpConfigResource(ConfigResourceType.TOPIC, tuned),
             KpConfigResource(ConfigResourceType.TOPIC, plain)],
            include_synonyms=True, config_filter="all")["topic"]
        group = f"g-cfg-{uuid.uuid4().hex[:6]}"
        group_configs = kp.describe_configs(
            [KpConfigResource(ConfigResourceType.GROUP, group)],
            config_filter="all")["group"][group]
    finally:
        kp.close()
    got = described[tuned]
    wrong = {n: (got[n]["value"], got[n]["config_source"]) for n, v in EVERY_CONFIG.items()
             if (got[n]["value"], got[n]["config_source"]) != (v, "DYNAMIC_TOPIC_CONFIG")}
    assert not wrong, f"kafka-python: (value, source) differing from what was set: {wrong}"
    assert [(s["name"], s["value"], s["source"]) for s in got["retention.ms"]["synonyms"]] == [
        ("retention.ms", "604800000", "DYNAMIC_TOPIC_CONFIG"),
        ("log.retention.ms", "-1", "DEFAULT_CONFIG")]
    got = described[plain]
    for name, (value, synonym) in DEFAULTS.items():
        assert (got[name]["value"], got[name]["config_source"]) == (value, "DEFAULT_CONFIG"), \
            (name, got[name])
        assert [(s["name"], s["value"], s["source"]) for s in got[name]["synonyms"]] == \
            [(synonym, value, "DEFAULT_CONFIG")], (name, got[name]["synonyms"])
    assert group_configs["consumer.session.timeout.ms"]["value"] == "45000", group_configs

    # invalid values and unknown names: INVALID_CONFIG, nothing created
    for bad in ({"cleanup.policy": "shred"}, {"min.cleanable.dirty.ratio": "2"},
                {"no.such.config": "1"}):
        name = topic_name("cfg-bad")
        futures = admin.create_topics([NewTopic(name, num_partitions=1, config=bad)],
                                      request_timeout=TIMEOUT)
        err = error_of(futures[name])
        assert err.code() == KafkaError.INVALID_CONFIG == INVALID_CONFIG, (bad, err)
        assert node.api.get_topic(name).status_code == 404, bad

    # the broker: the node's settings
    brokers = admin.list_topics(timeout=TIMEOUT).brokers
    assert list(brokers) == [node.node_id], brokers
    resource = ConfigResource(ResourceType.BROKER, str(node.node_id))
    (future,) = admin.describe_configs([resource], request_timeout=TIMEOUT).values()
    broker = future.result(timeout=TIMEOUT)
    assert (broker["broker.id"].value, broker["broker.id"].source) == \
        (str(node.node_id), STATIC_BROKER_CONFIG)
    assert broker["num.partitions"].value == "1"
    assert (broker["log.retention.ms"].value, broker["log.retention.ms"].source) == \
        ("-1", DEFAULT_CONFIG)
    assert broker["log.cleanup.policy"].value == "delete"

    # a group (confluent-kafka's ResourceType.GROUP is config resource type 32)
    resource = ConfigResource(ResourceType.GROUP, f"g-{uuid.uuid4().hex[:6]}")
    (future,) = admin.describe_configs([resource], request_timeout=TIMEOUT).values()
    group_entries = future.result(timeout=TIMEOUT)
    assert group_entries["consumer.session.timeout.ms"].value == "45000", group_entries


# ---------------------------------------------------------------------------
# 2. per-record errors

def batch_of(records: list[tuple[bytes | None, bytes]], timestamp: int) -> bytes:
    """One uncompressed RecordBatch v2 of a producer without idempotence;
    a key may be None."""
    body = b""
    for i, (key, value) in enumerate(records):
        key_bytes = varint(-1) if key is None else varint(len(key)) + key
        rec = b"\x00" + varint(0) + varint(i) + key_bytes + varint(len(value)) + value + varint(0)
        body += varint(len(rec)) + rec
    after_crc = struct.pack(">hiqqqhii", 0, len(records) - 1, timestamp, timestamp,
                            -1, -1, -1, len(records)) + body
    after_length = struct.pack(">ib", -1, 2) + struct.pack(">I", crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def produce_v8(node, topic: str, partition: int, batch: bytes) -> dict:
    """Send a ProduceRequest v8 (acks -1) of one batch; the one partition's answer."""
    body = (struct.pack(">hhi", -1, -1, 30_000) + struct.pack(">i", 1) + wire.string(topic)
            + struct.pack(">i", 1) + struct.pack(">ii", partition, len(batch)) + batch)
    r = Reader(wire.call(node, wire.request(0, 8, body, correlation_id=8)))
    assert r.take(">i") == 1
    assert r.string() == topic
    assert r.take(">i") == 1
    answer = {"index": r.take(">i"), "error_code": r.take(">h"), "base_offset": r.take(">q"),
              "log_append_time_ms": r.take(">q"), "log_start_offset": r.take(">q")}
    answer["record_errors"] = [(r.take(">i"), r.string()) for _ in range(r.take(">i"))]
    answer["error_message"] = r.string()
    r.take(">i")  # throttle_time_ms
    assert r.pos == len(r.data), f"{len(r.data) - r.pos} bytes left in the Produce v8 answer"
    return answer


def test_per_record_errors(module_node):
    node = module_node
    compacted = topic_name("compacted")
    node.api.create_topic(compacted, 1, {"cleanup.policy": "compact"})
    producer = Producer({"bootstrap.servers": node.bootstrap, "acks": "all",
                         "message.timeout.ms": 30000, "linger.ms": 0})

    # (a) confluent-kafka: a keyless record is INVALID_RECORD, a keyed one stored
    err, _, offset, _ = deliver(producer, compacted, value=b"no key", partition=0)
    assert err is not None and err.code() == KafkaError.INVALID_RECORD == INVALID_RECORD, \
        f"keyless record on a compacted topic: {err!r}"
    err, partition, offset, _ = deliver(producer, compacted, key=b"k", value=b"keyed",
                                        partition=0)
    assert err is None, err
    assert (partition, offset) == (0, 0), "the refused record must not take an offset"
    assert node.api.high_watermark(compacted, 0) == 1

    # (b) raw Produce v8: the refused records named by batch index
    ts = now_ms()
    answer = produce_v8(node, compacted, 0, batch_of(
        [(b"k0", b"v0"), (None, b"v1"), (None, b"v2")], ts))
    assert answer["error_code"] == INVALID_RECORD, answer
    assert answer["base_offset"] == -1, answer
    assert [i for i, _ in answer["record_errors"]] == [1, 2], answer
    assert answer["error_message"], answer
    assert node.api.high_watermark(compacted, 0) == 1, "a refused batch stores nothing"
    answer = produce_v8(node, compacted, 0, batch_of([(b"k1", b"v1"), (b"k2", b"v2")], ts))
    assert (answer["error_code"], answer["base_offset"], answer["record_errors"],
            answer["log_append_time_ms"]) == (0, 1, [], -1), answer
    assert not answer["error_message"], answer
    assert node.api.high_watermark(compacted, 0) == 3

    # (c) HTTP: 400 naming the key, nothing stored
    r = node.api.produce_one(compacted, {"partition_id": 0,
                                         "value": {"type": "STRING", "data": "keyless"}})
    body = assert_error(r, 400, "keyless HTTP record on a compacted topic")
    assert "key" in body["message"].lower(), body
    assert node.api.high_watermark(compacted, 0) == 3
    assert [m.key() for m in consume(node, compacted, 3)] == [b"k", b"k1", b"k2"]

    # (d) message.timestamp.before.max.ms: an hour-old record refused
    bounded = topic_name("tsbound")
    node.api.create_topic(bounded, 1, {"message.timestamp.before.max.ms": "60000"})
    err, _, _, _ = deliver(producer, bounded, key=b"k", value=b"old", partition=0,
                           timestamp=now_ms() - 3_600_000)
    assert err is not None and err.code() == KafkaError.INVALID_TIMESTAMP == INVALID_TIMESTAMP, \
        f"an hour-old record with message.timestamp.before.max.ms=60000: {err!r}"
    stamp = now_ms()
    err, partition, offset, timestamp = deliver(producer, bounded, key=b"k", value=b"now",
                                                partition=0, timestamp=stamp)
    assert err is None, err
    assert (partition, offset) == (0, 0)
    (msg,) = consume(node, bounded, 1)
    assert (msg.value(), msg.timestamp()[1]) == (b"now", stamp)
    producer.close()

    # (e) the same two refusals told to kafka-python's producer, which
    # raises them as permanent errors rather than retrying
    # (one producer per send: each refusal stays with its own record)
    def kp_send(topic: str, **record):
        kp = KafkaProducer(bootstrap_servers=node.bootstrap, acks="all", retries=3,
                           request_timeout_ms=30000)
        try:
            return kp.send(topic, partition=0, **record).get(timeout=30)
        finally:
            kp.close()

    with pytest.raises(kafka.errors.InvalidRecordError):
        kp_send(compacted, value=b"no key")
    with pytest.raises(kafka.errors.InvalidTimestampError):
        kp_send(bounded, key=b"k", value=b"old", timestamp_ms=now_ms() - 3_600_000)
    assert kp_send(compacted, key=b"k9", value=b"kept").offset == 3


# ---------------------------------------------------------------------------
# 3. LogAppendTime

Y2001 = 978_307_200_000  # 2001-01-01T00:00:00Z


def test_log_append_time_replaces_the_producer_timestamp(module_node):
    node = module_node
    topic = topic_name("appendtime")
    node.api.create_topic(topic, 1, {"message.timestamp.type": "LogAppendTime"})
    producer = Producer({"bootstrap.servers": node.bootstrap, "acks": "all", "linger.ms": 5})
    reports: list = []
    windows: list[tuple[int, int]] = []
    for round_ in range(2):  # two requests: two append times
        before = now_ms()
        for i in range(5):
            producer.produce(topic, key=f"k{round_}-{i}".encode(), value=b"v", partition=0,
                             timestamp=Y2001, on_delivery=lambda err, msg: reports.append(
                                 (err, msg.offset(), msg.timestamp())))
        assert producer.flush(TIMEOUT) == 0
        windows.append((before, now_ms()))
    assert [r[0] for r in reports] == [None] * 10, reports
    assert [r[1] for r in reports] == list(range(10))
    stamps: dict[int, int] = {}
    for n, (_, offset, (ts_type, ts)) in enumerate(reports):
        before, after = windows[n // 5]
        assert ts_type == TIMESTAMP_LOG_APPEND_TIME, f"offset {offset}: {(ts_type, ts)}"
        assert before <= ts <= after, \
            f"offset {offset}: log append time {ts} outside [{before}, {after}]"
        stamps[offset] = ts

    # confluent-kafka consumer
    got = consume(node, topic, 10)
    assert [(m.offset(), m.timestamp()) for m in got] == \
        [(o, (TIMESTAMP_LOG_APPEND_TIME, stamps[o])) for o in range(10)]
    # kafka-python consumer
    got = read_partition(node, topic, 0, 10)
    assert [(m.offset, m.timestamp_type, m.timestamp) for m in got] == \
        [(o, 1, stamps[o]) for o in range(10)]
    # HTTP
    lines = node.api.read_lines(topic, 0, offset=0, max_records=100, format="binary")
    assert [(line["offset"], line["timestamp"]) for line in lines] == \
        [(o, stamps[o]) for o in range(10)]


# ---------------------------------------------------------------------------
# 4. static membership

class LogSink:
    """A confluent-kafka `logger`: keeps librdkafka's log lines."""

    def __init__(self):
        self.lines: list[str] = []

    def log(self, level, fmt, *args):
        self.lines.append(fmt % args if args else fmt)


JOIN_RESPONSE = re.compile(r"JoinGroup response: GenerationId (-?\d+), Protocol (\S*), "
                           r"LeaderId (\S*)( \(me\))?, my MemberId ([^,\s]*)")


class StaticMember:
    """One confluent-kafka consumer (one incarnation of a static member):
    its assignment, the rebalance events and the records it read."""

    def __init__(self, node, group: str, topic: str, instance: str, incarnation: int,
                 events: list):
        self.name = f"{instance}#{incarnation}"
        self.instance = instance
        self.events = events  # shared: (name, event, partitions, monotonic time)
        self.logs = LogSink()
        self.assigned: list[int] = []
        self.records: list[tuple[int, int, str]] = []  # (partition, offset, value)
        self.closed = False
        self.consumer = Consumer({
            "bootstrap.servers": node.bootstrap, "group.id": group,
            "group.instance.id": instance, "session.timeout.ms": 30000,
            "partition.assignment.strategy": "range", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
            "debug": "cgrp", "logger": self.logs})
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer, partitions):
        self.assigned = sorted(tp.partition for tp in partitions)
        self.events.append((self.name, "assign", list(self.assigned), time.monotonic()))

    def _on_revoke(self, consumer, partitions):
        revoked = sorted(tp.partition for tp in partitions)
        self.assigned = [p for p in self.assigned if p not in revoked]
        self.events.append((self.name, "revoke", revoked, time.monotonic()))

    def poll(self, timeout: float = 0.1) -> None:
        msg = self.consumer.poll(timeout)
        if msg is None:
            return
        assert msg.error() is None, f"{self.name}: {msg.error()}"
        self.records.append((msg.partition(), msg.offset(), msg.value().decode()))

    def joins(self) -> list[tuple[int, str, bool, str]]:
        """(generation, leader id, whether I lead, my member id) of every
        JoinGroup response librdkafka logged."""
        out = []
        for line in self.logs.lines:
            m = JOIN_RESPONSE.search(line)
            if m:
                out.append((int(m.group(1)), m.group(3), bool(m.group(4)), m.group(5)))
        return out

    def values(self, since: int = 0) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for p, _, v in self.records[since:]:
            out.setdefault(p, []).append(v)
        return out

    def commit(self) -> None:
        done = self.consumer.commit(asynchronous=False)
        assert all(tp.error is None for tp in done), [(tp.partition, tp.error) for tp in done]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.consumer.close()


def poll_until(members: list[StaticMember], pred, timeout: float, what: str,
               detail=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s: " + "; ".join(
                f"{m.name} assigned={m.assigned} read={len(m.records)}" for m in members)
                + detail())
        for m in members:
            m.poll(0.05)


def poll_for(members: list[StaticMember], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for m in members:
            m.poll(0.05)


def join_trouble(member: StaticMember) -> str:
    """librdkafka's last lines about its JoinGroup attempts (for a failure message)."""
    lines = [line for line in member.logs.lines
             if "JoinGroup" in line or "Disconnected" in line]
    return (f"\n{member.name}: {len(lines)} JoinGroup/Disconnected log lines, last ones:\n  "
            + "\n  ".join(line[:220] for line in lines[-6:]))


def test_static_members_rejoin_without_a_rebalance(module_node):
    node = module_node
    partitions = 4
    topic = topic_name("static")
    group = f"g-static-{uuid.uuid4().hex[:8]}"
    node.api.create_topic(topic, partitions)
    events: list = []
    live = {"a": StaticMember(node, group, topic, "a", 1, events),
            "b": StaticMember(node, group, topic, "b", 1, events)}
    every: list[StaticMember] = list(live.values())
    try:
        members = lambda: list(live.values())  # noqa: E731
        poll_until(members(), lambda: sorted(len(m.assigned) for m in members()) == [2, 2]
                   and sorted(p for m in members() for p in m.assigned) == list(range(4)),
                   60, "both static members hold 2 of the 4 partitions")
        # the leader: librdkafka logs "(me)" on the JoinGroup response of the
        # generation it is in
        generation = {name: m.joins()[-1] for name, m in live.items()}
        assert generation["a"][0] == generation["b"][0], f"two generations: {generation}"
        assert generation["a"][1] == generation["b"][1], f"leader ids differ: {generation}"
        leaders = [name for name, j in generation.items() if j[2]]
        assert len(leaders) == 1, f"JoinGroup responses: {generation}"
        leader = leaders[0]
        follower = "b" if leader == "a" else "a"
        owned = {name: list(m.assigned) for name, m in live.items()}
        stable = len(events)
        expected: list[tuple[str, str, list[int]]] = []  # the events after `stable`

        # phase 0: each member reads its own partitions, then commits
        sent = produce_http(node, topic, partitions, "ph0", 5)
        poll_until(members(), lambda: sum(len(m.records) for m in members()) >= 20, 60,
                   "20 records read")
        for name, m in live.items():
            assert m.values() == {p: sent[p] for p in owned[name]}, f"{name} read {m.values()}"
            m.commit()
        poll_for(members(), 1.0)

        # restart the follower, then the leader
        for phase, name in enumerate([follower, leader], start=1):
            other = "b" if name == "a" else "a"
            role = "leader" if name == leader else "follower"
            mark = len(events)
            expected.append((live[name].name, "revoke", owned[name]))  # close() revokes
            live[name].close()  # a static member: no LeaveGroup
            new = StaticMember(node, group, topic, name, phase + 1, events)
            expected.append((new.name, "assign", owned[name]))
            every.append(new)
            live[name] = new
            poll_until(members(), lambda: bool(new.assigned), 25,
                       f"the {role}'s replacement {new.name} (same group.instance.id) "
                       f"assigned again", detail=lambda: join_trouble(new))
            # long enough for the other member's heartbeats to see a rebalance
            poll_for(members(), 4.0)
            mine = [e for e in events[mark:] if e[0] == new.name]
            others = [e for e in events[mark:] if e[0] == live[other].name]
            assert [(e[1], e[2]) for e in mine] == [("assign", owned[name])], \
                f"{new.name} ({role}) rebalance events after the rejoin: {mine} " \
                f"(owned {owned[name]})"
            assert others == [], f"{live[other].name} saw {others} when the {role} restarted"
            assert live[other].assigned == owned[other]
            joins = new.joins()
            assert joins, f"{new.name} logged no JoinGroup response"
            gen, leader_id, leads, member_id = joins[-1]
            assert gen == generation[name][0], \
                f"{new.name} rejoined generation {gen}, the group was at {generation}"
            if name == follower:
                # a follower comes back as a follower of the same leader
                assert (leader_id, leads) == (generation[leader][1], False), \
                    f"{new.name} (follower): JoinGroup answered leader {leader_id}, " \
                    f"member {member_id}; the leader was {generation[leader][1]}"
            # (a leader rejoining with JoinGroup < v9 -- librdkafka sends v5 -- may
            # be answered its new id as leader with the members, whose assignment
            # the Stable group then ignores at SyncGroup, or, as Kafka answers it,
            # the old leader id and no members; either way no rebalance)

            # records produced now: each read by the member owning their partition,
            # from the offsets committed before the restart
            tag = f"ph{phase}"
            since = {n: len(m.records) for n, m in live.items()}
            sent = produce_http(node, topic, partitions, tag, 5)
            poll_until(members(), lambda: sum(len(m.records) - since[n]
                                              for n, m in live.items()) >= 20, 60,
                       f"the 20 records of {tag} read")
            poll_for(members(), 0.5)
            for n, m in live.items():
                assert m.values(since[n]) == {p: sent[p] for p in owned[n]}, \
                    f"{m.name} read {m.values(since[n])}, owns {owned[n]}"
                m.commit()
        # over the whole test, nothing but the closes and the rejoins
        assert [e[:3] for e in events[stable:]] == expected
    finally:
        for m in every:
            m.close()
