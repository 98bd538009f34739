"""Three sluice nodes on one etcd and one bucket, Kafka clients bootstrapping
from one of them: Metadata lists all three with partition leaders spread
over them, and producing and consuming (in a consumer group) keep working
when one node is killed with SIGKILL — the node's registration lease expires,
its partitions' leadership and its groups move to the live nodes.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from harness import partition_leader, wait_until

PARTITIONS = 6
LEASE_TTL = "3s"


def spread_topic(node_ids, victim: int) -> tuple[str, dict[int, int]]:
    """A topic name whose partitions lead on at least two nodes, the victim
    among them: with six partitions on three nodes, one in 243 random names
    puts every leader on one node."""
    while True:
        topic = f"ha-{uuid.uuid4().hex[:8]}"
        leaders = {p: partition_leader(node_ids, topic, p) for p in range(PARTITIONS)}
        if victim in leaders.values() and len(set(leaders.values())) >= 2:
            return topic, leaders


def brokers_of(bootstrap: str) -> dict[int, str]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {b.id: f"{b.host}:{b.port}" for b in metadata.brokers.values()}


def leaders_of(bootstrap: str, topic: str) -> dict[int, int]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p.id: p.leader for p in metadata.topics[topic].partitions.values()}


@pytest.mark.parametrize("victim", [0, 1], ids=["bootstrap-node", "other-node"])
def test_three_nodes_keep_serving_when_one_dies(sluice, victim):
    cluster = sluice.new_cluster()
    extra = ["--node-lease-ttl", LEASE_TTL, "--group-initial-rebalance-delay", "200ms"]
    nodes = [sluice.distributed(cluster, flush_interval="20ms", extra_args=extra)
             for _ in range(3)]
    entry = nodes[0].bootstrap
    want = {n.node_id: n.bootstrap for n in nodes}
    wait_until(lambda: brokers_of(entry) == want, 20, "Metadata lists the three nodes")

    # leaders are placed by hashing: a name that spreads them, the victim leading some
    topic, expected = spread_topic(list(want), nodes[victim].node_id)
    nodes[0].api.create_topic(topic, PARTITIONS)
    leaders = leaders_of(entry, topic)
    assert leaders == expected, (leaders, expected)

    acked: dict[str, tuple[int, int]] = {}
    failed: list = []
    stop = threading.Event()
    produced_all = threading.Event()  # the producer flushed: `acked` is final

    def produce_loop():
        producer = Producer({"bootstrap.servers": entry, "acks": "all", "linger.ms": 5,
                             "message.timeout.ms": 60000,
                             "topic.metadata.refresh.interval.ms": 1000})

        def report(err, msg):
            if err is not None:
                failed.append(str(err))
            else:
                acked[msg.value().decode()] = (msg.partition(), msg.offset())

        i = 0
        while not stop.is_set():
            value = f"r{i}"
            producer.produce(topic, key=f"k{i % 50}".encode(), value=value.encode(),
                             on_delivery=report)
            producer.poll(0)
            i += 1
            time.sleep(0.004)
        try:
            assert producer.flush(90) == 0, "records still undelivered after 90 s"
        finally:
            produced_all.set()

    consumed: dict[str, tuple[int, int]] = {}

    def consume_loop():
        consumer = Consumer({"bootstrap.servers": entry, "group.id": f"ha-{topic}",
                             "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                             "heartbeat.interval.ms": 500,
                             "topic.metadata.refresh.interval.ms": 1000})
        consumer.subscribe([topic])
        idle_since = None
        while True:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                consumed[msg.value().decode()] = (msg.partition(), msg.offset())
                idle_since = None
            elif produced_all.is_set():
                idle_since = idle_since or time.monotonic()
                if set(acked) <= set(consumed) or time.monotonic() - idle_since > 30:
                    break
        consumer.close()

    producer_thread = threading.Thread(target=produce_loop)
    consumer_thread = threading.Thread(target=consume_loop)
    producer_thread.start()
    consumer_thread.start()
    try:
        wait_until(lambda: len(consumed) > 300, 60, "consumption running before the kill")
        dead = nodes[victim]
        dead.kill9()
        before = len(acked)
        survivors = [n for n in nodes if n is not dead]
        alive = {n.node_id: n.bootstrap for n in survivors}
        wait_until(lambda: brokers_of(survivors[0].bootstrap) == alive, 30,
                   "the dead node's lease expired and Metadata dropped it")
        assert set(leaders_of(survivors[0].bootstrap, topic).values()) <= set(alive)
        wait_until(lambda: len(acked) > before + 300, 60, "producing continues after the kill")
    finally:
        stop.set()
        producer_thread.join(timeout=120)
        consumer_thread.join(timeout=120)

    assert not failed, f"deliveries failed: {failed[:5]}"
    # every acknowledged record is stored at its acknowledged offset (read back over HTTP)
    reader = survivors[0].api
    stored: dict[tuple[int, int], str] = {}
    for p in range(PARTITIONS):
        for line in reader.read_all(topic, p, fmt="string"):
            stored[(p, line["offset"])] = line["value"]
    for value, where in acked.items():
        assert stored.get(where) == value, f"{value} acknowledged at {where}, stored {stored.get(where)}"
    missing = set(acked) - set(consumed)
    assert not missing, f"{len(missing)} acknowledged records never consumed, e.g. {sorted(missing)[:5]}"
