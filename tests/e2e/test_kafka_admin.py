"""Topic administration through the Kafka protocol with confluent-kafka's
AdminClient (librdkafka): CreateTopics, DeleteTopics, CreatePartitions,
DescribeConfigs, AlterConfigs, IncrementalAlterConfigs, DescribeCluster.

Every change is checked through a second door as well: Kafka Metadata
(list_topics), the HTTP v3 API, and produce/consume on added partitions.
The node runs against the real etcd and the S3 server (module_node). The
last tests speak the wire protocol by hand: DescribeCluster v0, and a
request for an API sluice does not serve, which must get an
UNSUPPORTED_VERSION answer on a connection that stays open.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewPartitions, NewTopic, ResourceType)

from harness import HOST
import kafka_wire as wire

TIMEOUT = 30

# every topic config of Kafka 3.x (sluice's table, metadata/src/model/configs.rs)
KNOWN_CONFIGS = {
    "cleanup.policy", "compression.gzip.level", "compression.lz4.level", "compression.type",
    "compression.zstd.level", "delete.retention.ms", "file.delete.delay.ms", "flush.messages",
    "flush.ms", "follower.replication.throttled.replicas", "index.interval.bytes",
    "leader.replication.throttled.replicas", "local.retention.bytes", "local.retention.ms",
    "max.compaction.lag.ms", "max.message.bytes", "message.downconversion.enable",
    "message.format.version", "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms", "message.timestamp.difference.max.ms",
    "message.timestamp.type", "min.cleanable.dirty.ratio", "min.compaction.lag.ms",
    "min.insync.replicas", "preallocate", "remote.log.copy.disable",
    "remote.log.delete.on.disable", "remote.storage.enable", "retention.bytes", "retention.ms",
    "segment.bytes", "segment.index.bytes", "segment.jitter.ms", "segment.ms",
    "unclean.leader.election.enable",
}


def topic_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def admin(module_node) -> AdminClient:
    return AdminClient({"bootstrap.servers": module_node.bootstrap})


def error_of(future) -> KafkaError:
    """The KafkaError a failed admin future carries (fails if it succeeded)."""
    with pytest.raises(KafkaException) as raised:
        future.result(timeout=TIMEOUT)
    return raised.value.args[0]


def create(admin: AdminClient, *topics: NewTopic, validate_only: bool = False) -> None:
    futures = admin.create_topics(list(topics), validate_only=validate_only,
                                  operation_timeout=TIMEOUT, request_timeout=TIMEOUT)
    for topic in topics:
        assert futures[topic.topic].result(timeout=TIMEOUT) is None


def describe_configs(admin: AdminClient, topic: str) -> dict:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    futures = admin.describe_configs([resource], request_timeout=TIMEOUT)
    (future,) = futures.values()
    return future.result(timeout=TIMEOUT)


def http_configs(node, topic: str) -> dict[str, tuple[str, bool]]:
    r = node.api.s.get(f"{node.api.topics_url(topic)}/configs", timeout=10)
    assert r.status_code == 200, r.text
    return {c["name"]: (c["value"], c["is_default"]) for c in r.json()["data"]}


def metadata_partitions(admin: AdminClient, topic: str) -> list[int] | None:
    """Partition ids of `topic` in Metadata, None if the topic is not listed."""
    listed = admin.list_topics(timeout=TIMEOUT)
    t = listed.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return sorted(t.partitions)


# ---------------------------------------------------------------------------

def test_create_topics_with_configs_and_errors(module_node, admin):
    node = module_node
    plain, tuned = topic_name("adm-plain"), topic_name("adm-tuned")
    create(admin,
           NewTopic(plain, num_partitions=3, replication_factor=1),
           NewTopic(tuned, num_partitions=2, replication_factor=-1,
                    config={"retention.ms": "3600000", "max.message.bytes": "2048",
                            "cleanup.policy": "delete"}))

    # Metadata shows both with their partitions
    assert metadata_partitions(admin, plain) == [0, 1, 2]
    assert metadata_partitions(admin, tuned) == [0, 1]
    # the HTTP API sees the same topics and configs
    r = node.api.get_topic(tuned)
    assert r.status_code == 200 and r.json()["partitions_count"] == 2, r.text
    configs = http_configs(node, tuned)
    assert configs["retention.ms"] == ("3600000", False)
    assert configs["max.message.bytes"] == ("2048", False)

    # an existing topic
    futures = admin.create_topics([NewTopic(plain, num_partitions=1)], request_timeout=TIMEOUT)
    err = error_of(futures[plain])
    assert err.code() == KafkaError.TOPIC_ALREADY_EXISTS, err
    assert plain in err.str()
    assert metadata_partitions(admin, plain) == [0, 1, 2], "the existing topic is unchanged"

    # an invalid name
    bad = "bad name!"
    futures = admin.create_topics([NewTopic(bad, num_partitions=1)], request_timeout=TIMEOUT)
    err = error_of(futures[bad])
    assert err.code() == KafkaError.TOPIC_EXCEPTION, err  # INVALID_TOPIC_EXCEPTION (17)

    # an unknown config and a non-numeric value
    for config in ({"no.such.config": "1"}, {"retention.ms": "soon"}):
        name = topic_name("adm-badcfg")
        futures = admin.create_topics([NewTopic(name, num_partitions=1, config=config)],
                                      request_timeout=TIMEOUT)
        err = error_of(futures[name])
        assert err.code() == KafkaError.INVALID_CONFIG, (config, err)
        assert node.api.get_topic(name).status_code == 404

    # too many partitions
    name = topic_name("adm-huge")
    futures = admin.create_topics([NewTopic(name, num_partitions=100_000)],
                                  request_timeout=TIMEOUT)
    err = error_of(futures[name])
    assert err.code() == KafkaError.INVALID_PARTITIONS, err

    # validate_only checks and creates nothing
    name = topic_name("adm-dry")
    create(admin, NewTopic(name, num_partitions=4), validate_only=True)
    assert node.api.get_topic(name).status_code == 404
    futures = admin.create_topics([NewTopic(plain, num_partitions=1)], validate_only=True,
                                  request_timeout=TIMEOUT)
    assert error_of(futures[plain]).code() == KafkaError.TOPIC_ALREADY_EXISTS


def test_describe_configs_lists_every_config_with_defaults(module_node, admin):
    topic = topic_name("adm-desc")
    create(admin, NewTopic(topic, num_partitions=1, config={"retention.ms": "60000"}))
    entries = describe_configs(admin, topic)
    assert set(entries) == KNOWN_CONFIGS
    retention = entries["retention.ms"]
    assert retention.value == "60000"
    assert not retention.is_default
    assert retention.source == 1  # DYNAMIC_TOPIC_CONFIG
    assert not retention.is_read_only
    max_bytes = entries["max.message.bytes"]
    assert max_bytes.value == "1048576"
    assert max_bytes.is_default
    assert max_bytes.source == 5  # DEFAULT_CONFIG
    assert entries["cleanup.policy"].value == "delete"

    # an unknown topic
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic_name("nope"))],
                                     request_timeout=TIMEOUT)
    (future,) = futures.values()
    assert error_of(future).code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    # a broker: its settings as the node runs them, read-only
    futures = admin.describe_configs([ConfigResource(ResourceType.BROKER,
                                                     str(module_node.node_id))],
                                     request_timeout=TIMEOUT)
    (future,) = futures.values()
    broker = future.result(timeout=TIMEOUT)
    assert broker["broker.id"].value == str(module_node.node_id)
    assert broker["log.retention.ms"].value == "-1"
    assert all(entry.is_read_only for entry in broker.values())


def test_alter_configs_replaces_the_config_set(module_node, admin):
    node = module_node
    topic = topic_name("adm-alter")
    create(admin, NewTopic(topic, num_partitions=1,
                           config={"retention.ms": "60000", "segment.ms": "1000"}))
    resource = ConfigResource(ResourceType.TOPIC, topic,
                              set_config={"retention.bytes": "1000000",
                                          "max.message.bytes": "4096"})
    futures = admin.alter_configs([resource], request_timeout=TIMEOUT)
    assert futures[resource].result(timeout=TIMEOUT) is None

    entries = describe_configs(admin, topic)
    assert entries["retention.bytes"].value == "1000000" and not entries["retention.bytes"].is_default
    assert entries["max.message.bytes"].value == "4096"
    # left out -> back to the defaults
    assert entries["retention.ms"].is_default and entries["retention.ms"].value == "-1"
    assert entries["segment.ms"].is_default
    configs = http_configs(node, topic)
    assert configs["retention.bytes"] == ("1000000", False)
    assert configs["max.message.bytes"] == ("4096", False)
    assert configs["retention.ms"] == ("-1", True)

    # the new max.message.bytes is enforced on produce at once
    producer = Producer({"bootstrap.servers": node.bootstrap, "acks": "all",
                         "enable.idempotence": False, "linger.ms": 0})
    reports = []
    producer.produce(topic, value=b"x" * 8000, partition=0,
                     on_delivery=lambda err, msg: reports.append(err))
    producer.flush(TIMEOUT)
    assert len(reports) == 1 and reports[0] is not None
    assert reports[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, reports[0]

    # an unknown config is refused and changes nothing
    bad = ConfigResource(ResourceType.TOPIC, topic, set_config={"no.such.config": "1"})
    futures = admin.alter_configs([bad], request_timeout=TIMEOUT)
    assert error_of(futures[bad]).code() == KafkaError.INVALID_CONFIG
    assert describe_configs(admin, topic)["retention.bytes"].value == "1000000"

    # an unknown topic
    missing = ConfigResource(ResourceType.TOPIC, topic_name("nope"), set_config={"retention.ms": "1"})
    futures = admin.alter_configs([missing], request_timeout=TIMEOUT)
    assert error_of(futures[missing]).code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_incremental_alter_configs_set_delete_append(module_node, admin):
    node = module_node
    topic = topic_name("adm-incr")
    create(admin, NewTopic(topic, num_partitions=1,
                           config={"retention.ms": "60000", "segment.ms": "1000"}))
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "120000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("segment.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
    ])
    futures = admin.incremental_alter_configs([resource], request_timeout=TIMEOUT)
    assert futures[resource].result(timeout=TIMEOUT) is None

    entries = describe_configs(admin, topic)
    assert entries["retention.ms"].value == "120000" and not entries["retention.ms"].is_default
    assert entries["segment.ms"].is_default
    assert entries["cleanup.policy"].value == "delete,compact"
    configs = http_configs(node, topic)
    assert configs["retention.ms"] == ("120000", False)
    assert configs["cleanup.policy"] == ("delete,compact", False)
    assert "segment.ms" not in configs or configs["segment.ms"][1] is True

    # SUBTRACT on the list config
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT),
    ])
    futures = admin.incremental_alter_configs([resource], request_timeout=TIMEOUT)
    assert futures[resource].result(timeout=TIMEOUT) is None
    assert describe_configs(admin, topic)["cleanup.policy"].value == "compact"

    # APPEND on a non-list config -> INVALID_REQUEST, nothing changes
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.APPEND),
    ])
    futures = admin.incremental_alter_configs([resource], request_timeout=TIMEOUT)
    assert error_of(futures[resource]).code() == KafkaError.INVALID_REQUEST
    # an invalid value -> INVALID_CONFIG
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "later", incremental_operation=AlterConfigOpType.SET),
    ])
    futures = admin.incremental_alter_configs([resource], request_timeout=TIMEOUT)
    assert error_of(futures[resource]).code() == KafkaError.INVALID_CONFIG
    assert describe_configs(admin, topic)["retention.ms"].value == "120000"


def test_create_partitions_grows_and_new_partitions_take_records(module_node, admin):
    node = module_node
    topic = topic_name("adm-grow")
    create(admin, NewTopic(topic, num_partitions=3))
    futures = admin.create_partitions([NewPartitions(topic, 5)], request_timeout=TIMEOUT)
    assert futures[topic].result(timeout=TIMEOUT) is None
    assert metadata_partitions(admin, topic) == [0, 1, 2, 3, 4]
    assert node.api.get_topic(topic).json()["partitions_count"] == 5

    # shrinking or keeping the count -> INVALID_PARTITIONS
    for count in (5, 2):
        futures = admin.create_partitions([NewPartitions(topic, count)], request_timeout=TIMEOUT)
        err = error_of(futures[topic])
        assert err.code() == KafkaError.INVALID_PARTITIONS, (count, err)
    # unknown topic
    missing = topic_name("nope")
    futures = admin.create_partitions([NewPartitions(missing, 4)], request_timeout=TIMEOUT)
    assert error_of(futures[missing]).code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    # produce to the new partition 4 and read it back
    producer = Producer({"bootstrap.servers": node.bootstrap, "acks": "all",
                         "enable.idempotence": False, "linger.ms": 5})
    delivered = []
    values = [f"grown-{i}".encode() for i in range(10)]
    for value in values:
        producer.produce(topic, key=b"k", value=value, partition=4,
                         on_delivery=lambda err, msg: delivered.append(
                             (err, msg.partition(), msg.offset())))
    assert producer.flush(TIMEOUT) == 0
    assert [d[0] for d in delivered] == [None] * 10
    assert [(d[1], d[2]) for d in delivered] == [(4, i) for i in range(10)]

    consumer = Consumer({"bootstrap.servers": node.bootstrap, "group.id": topic,
                         "enable.auto.commit": False, "auto.offset.reset": "error"})
    consumer.assign([TopicPartition(topic, 4, 0)])
    got = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(got) < len(values) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            got.append((msg.partition(), msg.offset(), msg.value()))
    finally:
        consumer.close()
    assert got == [(4, i, v) for i, v in enumerate(values)]
    # and through HTTP
    lines = node.api.read_lines(topic, 4, offset=0, max_records=100, format="string")
    assert [line["value"] for line in lines] == [v.decode() for v in values]


def test_delete_topics(module_node, admin):
    node = module_node
    topic = topic_name("adm-del")
    create(admin, NewTopic(topic, num_partitions=2))
    assert metadata_partitions(admin, topic) == [0, 1]
    futures = admin.delete_topics([topic], operation_timeout=TIMEOUT, request_timeout=TIMEOUT)
    assert futures[topic].result(timeout=TIMEOUT) is None

    assert node.api.get_topic(topic).status_code == 404
    assert topic not in node.api.list_topics()
    assert topic not in admin.list_topics(timeout=TIMEOUT).topics
    # deleting it again
    futures = admin.delete_topics([topic], request_timeout=TIMEOUT)
    assert error_of(futures[topic]).code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    # the name can be used again, with a fresh (empty) topic
    create(admin, NewTopic(topic, num_partitions=1))
    assert metadata_partitions(admin, topic) == [0]


def test_describe_cluster(module_node, admin):
    node = module_node
    result = admin.describe_cluster(request_timeout=TIMEOUT).result(timeout=TIMEOUT)
    assert result.cluster_id == node.api.cluster_id
    ids = [n.id for n in result.nodes]
    assert node.node_id in ids
    me = next(n for n in result.nodes if n.id == node.node_id)
    assert (me.host, me.port) == (HOST, node.kafka_port)
    assert result.controller is not None and result.controller.id == min(ids)


# ---------------------------------------------------------------------------
# by hand: DescribeCluster itself (librdkafka may answer describe_cluster
# from Metadata), and a request for an API sluice does not serve










def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _compact_string(data: bytes, pos: int) -> tuple[str | None, int]:
    n, pos = _uvarint(data, pos)
    if n == 0:
        return None, pos
    return data[pos:pos + n - 1].decode(), pos + n - 1


def test_describe_cluster_on_the_wire(module_node):
    node = module_node
    # DescribeCluster v0: flexible request header v2 (client id, no tags)
    body = struct.pack(">hhih", 60, 0, 31, 4) + b"test" + b"\x00" + b"\x00" + b"\x00"
    with socket.create_connection((HOST, node.kafka_port), timeout=10) as sock:
        sock.sendall(wire.frame(body))
        answer = wire.recv_response(sock)
    correlation_id = struct.unpack(">i", answer[:4])[0]
    assert correlation_id == 31
    pos = 5  # response header v1: correlation id + empty tagged fields
    throttle, error_code = struct.unpack(">ih", answer[pos:pos + 6])
    pos += 6
    assert error_code == 0
    message, pos = _compact_string(answer, pos)
    assert message is None
    cluster_id, pos = _compact_string(answer, pos)
    assert cluster_id == node.api.cluster_id
    controller = struct.unpack(">i", answer[pos:pos + 4])[0]
    pos += 4
    count, pos = _uvarint(answer, pos)
    brokers = []
    for _ in range(count - 1):
        broker_id = struct.unpack(">i", answer[pos:pos + 4])[0]
        host, pos = _compact_string(answer, pos + 4)
        port = struct.unpack(">i", answer[pos:pos + 4])[0]
        _rack, pos = _compact_string(answer, pos + 4)
        _tags, pos = _uvarint(answer, pos)
        brokers.append((broker_id, host, port))
    assert (node.node_id, HOST, node.kafka_port) in brokers
    assert controller == min(b[0] for b in brokers)


def test_unserved_api_gets_unsupported_version_and_the_connection_stays(module_node):
    node = module_node
    # ElectLeaders v1 (non-flexible): election type, null partitions (all), timeout
    elect = struct.pack(">hhih", 43, 1, 41, -1) + struct.pack(">bii", 0, -1, 1000)
    api_versions = struct.pack(">hhih", 18, 0, 42, -1)
    with socket.create_connection((HOST, node.kafka_port), timeout=10) as sock:
        sock.sendall(wire.frame(elect))
        answer = wire.recv_response(sock)
        correlation_id, _throttle, error_code, results = struct.unpack(">iihi", answer)
        assert (correlation_id, error_code, results) == (41, 35, 0)  # UNSUPPORTED_VERSION
        sock.sendall(wire.frame(api_versions))
        assert struct.unpack(">ih", wire.recv_response(sock)[:6]) == (42, 0)
