"""Idempotent producers: InitProducerId, sequence checks, duplicates.

1. confluent-kafka with ``enable.idempotence=true`` and acks=all produces
   keyed records with unique payloads to a 3-partition topic while its node
   is ``kill -9``ed and restarted mid-stream (same port, same data dir,
   etcd + S3). Every delivered record must be stored exactly once, at its
   reported offset, in per-key production order, and the producer must not
   report a fatal error.
2. Over a raw socket: the same ProduceRequest bytes sent twice (and again
   after a kill -9 and restart) are stored once and answered with the same
   base offset; a gap is OUT_OF_ORDER_SEQUENCE_NUMBER; a transactional
   InitProducerId is refused.
"""

from __future__ import annotations

import struct
import threading
import time
import uuid

from confluent_kafka import Producer

from harness import unb64
import kafka_wire as wire

PARTITIONS = 3

OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53


def topic_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def read_partition(node, topic: str, partition: int) -> list[tuple[int, bytes, bytes]]:
    """(offset, key, value) of every record of the partition, over HTTP."""
    lines = node.api.read_all(topic, partition, fmt="binary")
    return [(line["offset"], unb64(line["key"]), unb64(line["value"])) for line in lines]


# ---------------------------------------------------------------------------
# 1. confluent-kafka through a kill -9

def test_idempotent_producer_survives_kill9_exactly_once(sluice):
    node = sluice.distributed()
    topic = topic_name("idem")
    node.api.create_topic(topic, PARTITIONS)
    total = 5000
    delivered: dict[bytes, tuple[int, int]] = {}  # value -> (partition, offset)
    failed: list = []
    errors: list = []
    lock = threading.Lock()

    def on_delivery(err, msg):
        with lock:
            if err is not None:
                failed.append((msg.value(), err))
            else:
                delivered[msg.value()] = (msg.partition(), msg.offset())

    producer = Producer({
        "bootstrap.servers": node.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 50,
        # long enough that nothing expires while the node restarts
        "message.timeout.ms": 120_000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "retry.backoff.ms": 50,
        "error_cb": lambda err: errors.append(err),
    })
    run = uuid.uuid4().hex[:8]
    order: dict[bytes, list[bytes]] = {}  # key -> values in production order
    acked_before_kill = None
    for i in range(total):
        key = f"key-{i % 40}".encode()
        value = f"{run}-{i:06d}".encode()
        order.setdefault(key, []).append(value)
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        producer.poll(0)
        if i % 10 == 0:
            time.sleep(0.01)  # about 1,000 records a second: requests stay in flight
        with lock:
            acked = len(delivered)
        # kill once a third is acknowledged, while the rest is being sent
        if acked_before_kill is None and acked >= total // 3:
            acked_before_kill = acked
            node.kill9()
            time.sleep(0.5)
            node.restart()
    assert producer.flush(180) == 0, "records left unflushed"
    fatal = [e for e in errors if e.fatal()]
    assert not fatal, f"fatal producer errors: {fatal}"
    assert not failed, f"{len(failed)} records failed, e.g. {failed[:3]}"
    assert len(delivered) == total
    assert acked_before_kill is not None, "the node was never killed"
    assert acked_before_kill < total, "the kill happened after everything was acknowledged"

    stored: dict[bytes, tuple[int, int]] = {}
    per_key_stored: dict[bytes, list[bytes]] = {}
    for p in range(PARTITIONS):
        records = read_partition(node, topic, p)
        assert [o for o, _, _ in records] == list(range(len(records))), f"partition {p} not dense"
        for offset, key, value in records:
            assert value not in stored, f"{value!r} stored twice: {stored[value]} and {(p, offset)}"
            stored[value] = (p, offset)
            per_key_stored.setdefault(key, []).append(value)
    missing = [v for v in delivered if v not in stored]
    assert not missing, f"{len(missing)} delivered records missing, e.g. {missing[:3]}"
    extra = [v for v in stored if v not in delivered]
    assert not extra, f"{len(extra)} records stored but never delivered, e.g. {extra[:3]}"
    wrong = [(v, delivered[v], stored[v]) for v in delivered if delivered[v] != stored[v]]
    assert not wrong, f"{len(wrong)} records not at their reported offset, e.g. {wrong[:3]}"
    for key, values in order.items():
        assert per_key_stored.get(key) == values, f"records of {key!r} out of order"


# ---------------------------------------------------------------------------
# 2. raw requests: the same ProduceRequest bytes twice

def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)  # zigzag
    out = bytearray()
    while True:
        byte = z & 0x7F
        z >>= 7
        if z:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def record_batch(records: list[tuple[bytes, bytes]], producer_id: int, epoch: int,
                 base_sequence: int, timestamp: int = 1_700_000_000_000) -> bytes:
    """One uncompressed RecordBatch v2 of an idempotent producer."""
    body = b""
    for i, (key, value) in enumerate(records):
        rec = (b"\x00" + varint(0) + varint(i) + varint(len(key)) + key
               + varint(len(value)) + value + varint(0))
        body += varint(len(rec)) + rec
    after_crc = (struct.pack(">hiqqqhii", 0, len(records) - 1, timestamp, timestamp,
                             producer_id, epoch, base_sequence, len(records)) + body)
    after_length = struct.pack(">ib", -1, 2) + struct.pack(">I", crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length








def produce_request(correlation_id: int, topic: str, partition: int, batch: bytes) -> bytes:
    """ProduceRequest v3, acks=-1."""
    header = struct.pack(">hhi", 0, 3, correlation_id) + wire.string("raw-test")
    body = (struct.pack(">hhi", -1, -1, 30_000) + struct.pack(">i", 1) + wire.string(topic)
            + struct.pack(">i", 1) + struct.pack(">ii", partition, len(batch)) + batch)
    return wire.frame(header + body)


def init_producer_id_request(correlation_id: int, transactional_id: str | None = None) -> bytes:
    """InitProducerIdRequest v0."""
    header = struct.pack(">hhi", 22, 0, correlation_id) + wire.string("raw-test")
    tx = wire.string(transactional_id) if transactional_id is not None else struct.pack(">h", -1)
    return wire.frame(header + tx + struct.pack(">i", 60_000))








def init_producer_id(node, transactional_id: str | None = None) -> tuple[int, int, int]:
    """(error code, producer id, epoch)."""
    answer = wire.call(node, init_producer_id_request(1, transactional_id))
    _throttle, error, producer_id, epoch = struct.unpack(">ihqh", answer[:16])
    return error, producer_id, epoch


def produce(node, frame: bytes) -> tuple[int, int]:
    """(error code, base offset) of a one-partition ProduceResponse v3."""
    answer = wire.call(node, frame)
    topics = struct.unpack(">i", answer[:4])[0]
    assert topics == 1
    name_len = struct.unpack(">h", answer[4:6])[0]
    at = 6 + name_len
    partitions, _index, error, base_offset = struct.unpack(">iihq", answer[at:at + 18])
    assert partitions == 1
    return error, base_offset


def test_a_retried_produce_request_is_stored_once(sluice):
    node = sluice.distributed()
    topic = topic_name("idem-raw")
    node.api.create_topic(topic, 1)

    error, tx_id, _ = init_producer_id(node, transactional_id="tx-1")
    assert error == TRANSACTIONAL_ID_AUTHORIZATION_FAILED and tx_id == -1
    error, producer_id, epoch = init_producer_id(node)
    assert error == 0 and producer_id >= 0 and epoch == 0
    error, other_id, _ = init_producer_id(node)
    assert error == 0 and other_id != producer_id

    first = produce_request(7, topic, 0,
                            record_batch([(b"k", b"a0"), (b"k", b"a1"), (b"k", b"a2")],
                                         producer_id, epoch, 0))
    assert produce(node, first) == (0, 0)
    assert produce(node, first) == (0, 0), "the retry must get the original offset"
    second = produce_request(8, topic, 0,
                             record_batch([(b"k", b"b0"), (b"k", b"b1")], producer_id, epoch, 3))
    assert produce(node, second) == (0, 3)
    gap = produce_request(9, topic, 0, record_batch([(b"k", b"c0")], producer_id, epoch, 9))
    assert produce(node, gap)[0] == OUT_OF_ORDER_SEQUENCE_NUMBER
    # another producer's first batch must start at sequence 0
    late = produce_request(10, topic, 0, record_batch([(b"k", b"d0")], other_id, 0, 4))
    assert produce(node, late)[0] == OUT_OF_ORDER_SEQUENCE_NUMBER
    # a newer epoch fences the old one
    bumped = produce_request(11, topic, 0, record_batch([(b"k", b"e0")], producer_id, 1, 0))
    assert produce(node, bumped) == (0, 5)
    stale = produce_request(12, topic, 0, record_batch([(b"k", b"f0")], producer_id, 0, 5))
    assert produce(node, stale)[0] == INVALID_PRODUCER_EPOCH

    # the producer state lives in the metadata store: it survives a kill -9
    node.kill9()
    node.restart()
    assert produce(node, bumped) == (0, 5)
    assert produce(node, first)[0] == INVALID_PRODUCER_EPOCH  # epoch 0 is fenced now
    values = [v for _, _, v in read_partition(node, topic, 0)]
    assert values == [b"a0", b"a1", b"a2", b"b0", b"b1", b"e0"]


def test_produce_to_an_unknown_topic_creates_it(module_node):
    """A Produce (without a Metadata request first) auto-creates its topic
    with the default partition count, and the record is stored."""
    node = module_node
    topic = topic_name("autoprod")
    batch = record_batch([(b"k", b"created by produce")], producer_id=-1, epoch=-1,
                         base_sequence=-1)
    error, base_offset = produce(node, produce_request(1, topic, 0, batch))
    assert (error, base_offset) == (0, 0)
    assert node.api.get_topic(topic).status_code == 200
    assert read_partition(node, topic, 0) == [(0, b"k", b"created by produce")]
    # a partition beyond the auto-created count is refused
    error, _ = produce(node, produce_request(2, topic, 5, batch))
    assert error == 3, "UNKNOWN_TOPIC_OR_PARTITION"
