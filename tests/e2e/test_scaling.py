"""Scale-out and scale-in under load.

One node serves two idempotent Kafka producers, an HTTP producer and a
consumer group of two members. Two nodes join (partition leaders and group
coordination spread onto them), then both are drained with SIGTERM, one
after the other, the way the Helm chart does it: the load balancer stops
sending HTTP to the node (the chart's preStop sleep), then SIGTERM.

Shown: no acknowledged record lost, none duplicated, every offset dense; no
client error that is not retriable; the group keeps consuming and ends on the
survivor; Metadata drops a drained node as soon as it exits. The
client-visible pause of each drain (the longest gap between acknowledgements
and between consumed records around it) and the drain time are printed.
"""

from __future__ import annotations

import json
import random
import threading
import time

import requests
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from harness import b64, wait_until

TOPIC = "scaling"
PARTITIONS = 6
GROUP = "scaling-group"
# How often the clients refresh Metadata (librdkafka's default is 5 min):
# the leaders of a scaled-out cluster reach connected clients this fast.
# A drain needs no refresh: the clients of a drained node lose their
# connection and ask again at once.
REFRESH_MS = 2000


class Load:
    """The clients, their acknowledgements and their errors."""

    def __init__(self, bootstrap: str, cluster_id: str):
        self.bootstrap = bootstrap
        self.cluster_id = cluster_id
        self.stop = threading.Event()
        self.stop_consuming = threading.Event()
        self.committed = threading.Barrier(2)
        self.lock = threading.Lock()
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.ack_times: list[float] = []
        self.consumed: list[tuple[float, int, int, bytes]] = []
        self.errors: list[str] = []
        self.retriable: list[str] = []
        self.http_targets: list[str] = []
        self.threads: list[threading.Thread] = []

    def spawn(self, fn, *args) -> None:
        def run():
            try:
                fn(*args)
            except Exception as error:  # noqa: BLE001 - every failure is reported
                with self.lock:
                    self.errors.append(f"{fn.__name__}{args}: {error!r}")
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def ack(self, value: bytes, partition: int, offset: int) -> None:
        with self.lock:
            assert value not in self.acked, f"{value!r} acknowledged twice"
            self.acked[value] = (partition, offset)
            self.ack_times.append(time.monotonic())

    def kafka_producer(self, name: str) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                             "linger.ms": 5, "message.timeout.ms": 120000,
                             "topic.metadata.refresh.interval.ms": REFRESH_MS,
                             "error_cb": lambda err: self.client_error(f"producer {name}", err)})

        def delivered(err, msg):
            if err is not None:
                with self.lock:
                    self.errors.append(f"producer {name}: delivery of {msg.value()!r} failed: {err}")
            else:
                self.ack(msg.value(), msg.partition(), msg.offset())

        n = 0
        while not self.stop.is_set():
            producer.produce(TOPIC, value=b"%s-%d" % (name.encode(), n), on_delivery=delivered)
            n += 1
            producer.poll(0.002)
        remaining = producer.flush(120)
        if remaining:
            with self.lock:
                self.errors.append(f"producer {name}: {remaining} records never answered")

    def http_producer(self) -> None:
        session = requests.Session()
        session.trust_env = False
        n = 0
        rng = random.Random(7)
        while not self.stop.is_set():
            with self.lock:
                targets = list(self.http_targets)
            url = rng.choice(targets)
            values = [b"http-%d" % (n + i) for i in range(20)]
            n += len(values)
            body = {"entries": [{"id": str(i), "value": {"type": "BINARY", "data": b64(v)}}
                                for i, v in enumerate(values)]}
            r = session.post(f"{url}/v3/clusters/{self.cluster_id}/topics/{TOPIC}/records-batch",
                             data=json.dumps(body), headers={"content-type": "application/json"},
                             timeout=60)
            if r.status_code != 200:
                with self.lock:
                    self.errors.append(f"http producer: {r.status_code} {r.text[:300]}")
                continue
            for success in r.json()["successes"]:
                self.ack(values[int(success["id"])], success["partition_id"], success["offset"])
            time.sleep(0.05)

    def consumer(self, name: str) -> None:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": GROUP,
                             "enable.auto.commit": False, "auto.offset.reset": "earliest",
                             "session.timeout.ms": 10000, "heartbeat.interval.ms": 500,
                             "topic.metadata.refresh.interval.ms": REFRESH_MS,
                             "error_cb": lambda err: self.client_error(f"consumer {name}", err)})
        consumer.subscribe([TOPIC])
        since_commit = 0
        try:
            while not self.stop_consuming.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        self.client_error(f"consumer {name}", msg.error())
                    continue
                with self.lock:
                    self.consumed.append((time.monotonic(), msg.partition(), msg.offset(), msg.value()))
                since_commit += 1
                if since_commit >= 200:
                    self.commit(consumer, name)
                    since_commit = 0
            # the last commit: a rebalance that refuses it is followed by a
            # rejoin, the rest read again and a commit of where it stands
            for _ in range(30):
                if self.commit(consumer, name):
                    break
                self.drain(consumer, name)
            else:
                raise AssertionError(f"consumer {name}: the last commit was refused 30 times")
            # no member leaves (and so rebalances the other) before both committed
            self.committed.wait(60)
        finally:
            consumer.close()

    def drain(self, consumer, name: str) -> None:
        """Polls until the member has a settled assignment and nothing is left to read."""
        quiet = 0
        deadline = time.monotonic() + 30
        while quiet < 3 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or (msg.error() and msg.error().code() == KafkaError._PARTITION_EOF):
                quiet += 1 if consumer.assignment() else 0
                continue
            quiet = 0
            if msg.error():
                self.client_error(f"consumer {name}", msg.error())
                continue
            with self.lock:
                self.consumed.append((time.monotonic(), msg.partition(), msg.offset(), msg.value()))

    def commit(self, consumer, name: str) -> bool:
        """Commits the positions; False when a rebalance refused the commit."""
        for _ in range(20):
            try:
                consumer.commit(asynchronous=False)
                return True
            except Exception as error:  # KafkaException carrying a KafkaError
                err = error.args[0] if error.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError._NO_OFFSET:
                    return True
                # a rebalance (the coordinator moved) refuses the commit, as
                # Kafka does; the member rejoins and commits again later
                if isinstance(err, KafkaError) and err.code() in (
                        KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION,
                        KafkaError.UNKNOWN_MEMBER_ID):
                    with self.lock:
                        self.retriable.append(f"consumer {name} commit: {err}")
                    return False
                if isinstance(err, KafkaError) and err.retriable():
                    with self.lock:
                        self.retriable.append(f"consumer {name} commit: {err}")
                    time.sleep(0.2)
                    continue
                raise
        raise AssertionError(f"consumer {name}: commit failed 20 times")

    def client_error(self, who: str, err: KafkaError) -> None:
        with self.lock:
            # librdkafka reports a broker going away and coming back as
            # transport errors it recovers from by itself
            if err.fatal() or not (err.retriable() or err.code() in (
                    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE,
                    KafkaError._TIMED_OUT, KafkaError.NOT_COORDINATOR,
                    KafkaError.COORDINATOR_NOT_AVAILABLE)):
                self.errors.append(f"{who}: {err}")
            else:
                self.retriable.append(f"{who}: {err}")


def longest_gap(times: list[float], start: float, end: float) -> float:
    inside = sorted(t for t in times if start <= t <= end)
    points = [start, *inside, end] if inside else [start, end]
    return max(b - a for a, b in zip(points, points[1:]))


def brokers(bootstrap: str) -> list[int]:
    return sorted(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).brokers)


def test_scale_out_and_in_under_load(sluice):
    cluster = sluice.new_cluster()
    first = sluice.distributed(cluster, node_id=1)
    first.api.create_topic(TOPIC, PARTITIONS)
    load = Load(first.bootstrap, first.api.cluster_id)
    load.http_targets = [first.url]
    load.spawn(load.kafka_producer, "k0")
    load.spawn(load.kafka_producer, "k1")
    load.spawn(load.http_producer)
    load.spawn(load.consumer, "c0")
    load.spawn(load.consumer, "c1")
    time.sleep(6)

    # scale out: two nodes join; the HTTP balancer adds them once ready
    added = [sluice.distributed(cluster, node_id=n) for n in (2, 3)]
    with load.lock:
        load.http_targets += [node.url for node in added]
    wait_until(lambda: brokers(first.bootstrap) == [1, 2, 3], 10, "Metadata lists 3 brokers")
    time.sleep(8)
    with load.lock:
        assert {p for p, _ in load.acked.values()} == set(range(PARTITIONS))
    # the new nodes took their share: Kafka partition leaders and HTTP
    taken = {node.node_id: node.api.metrics().get("sluice_produce_records_total", 0.0)
             for node in added}
    assert all(records > 0 for records in taken.values()), taken
    # the queue time of every Kafka request is measured (a scaling signal)
    assert first.api.metrics().get("sluice_request_queue_seconds_count", 0.0) > 0

    # scale in: drain both, one after the other
    drains = []
    for node in added:
        with load.lock:
            load.http_targets.remove(node.url)
        time.sleep(1)  # the chart's preStop sleep: the balancer has moved on
        signalled = time.monotonic()
        assert node.stop(timeout=40) == 0, node.log_tail()
        exited = time.monotonic()
        survivors = sorted(n.node_id for n in [first, *added] if n.running)
        listed = brokers(first.bootstrap)
        assert listed == survivors, f"Metadata still lists {listed} after node {node.node_id} exited"
        time.sleep(8)
        drains.append((node.node_id, signalled, exited))

    load.stop.set()
    for thread in load.threads[:3]:
        thread.join(150)
    assert not [t for t in load.threads[:3] if t.is_alive()], "a producer did not finish"

    # the group reads everything acknowledged, then commits and stops
    def caught_up() -> bool:
        with load.lock:
            seen = {value for _, _, _, value in load.consumed}
            return all(value in seen for value in load.acked)

    wait_until(caught_up, 90, "the group consumed every acknowledged record", interval=0.5)
    load.stop_consuming.set()
    for thread in load.threads[3:]:
        thread.join(60)
    assert not load.errors, "\n".join(load.errors[:20])

    # every acknowledged record once, at its offset; offsets dense; nothing unknown
    reader = Consumer({"bootstrap.servers": first.bootstrap, "group.id": "scaling-check",
                       "enable.auto.commit": False})
    log: dict[int, list[tuple[int, bytes]]] = {}
    try:
        for partition in range(PARTITIONS):
            _, high = reader.get_watermark_offsets(TopicPartition(TOPIC, partition), timeout=10)
            reader.assign([TopicPartition(TOPIC, partition, 0)])
            got: list[tuple[int, bytes]] = []
            deadline = time.time() + 60
            while len(got) < high and time.time() < deadline:
                msg = reader.poll(1)
                if msg is not None and not msg.error():
                    got.append((msg.offset(), msg.value()))
            assert [o for o, _ in got] == list(range(high)), f"partition {partition} not dense"
            log[partition] = got
    finally:
        reader.close()
    stored: dict[bytes, tuple[int, int]] = {}
    for partition, records in log.items():
        for offset, value in records:
            assert value not in stored, f"{value!r} stored twice: {stored[value]} and {(partition, offset)}"
            stored[value] = (partition, offset)
    assert set(stored) == set(load.acked), (
        f"lost {len(set(load.acked) - set(stored))}, unknown {len(set(stored) - set(load.acked))}")
    moved = [v for v, at in load.acked.items() if stored[v] != at]
    assert not moved, f"{len(moved)} records not at their acknowledged offset, e.g. {moved[:3]}"

    # the group ends on the survivor with its offsets at the end of the log
    group_reader = Consumer({"bootstrap.servers": first.bootstrap, "group.id": GROUP})
    try:
        ends = group_reader.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=10)
    finally:
        group_reader.close()
    assert [tp.offset for tp in ends] == [len(log[p]) for p in range(PARTITIONS)], ends
    admin = AdminClient({"bootstrap.servers": first.bootstrap})
    described = admin.describe_consumer_groups([GROUP])[GROUP].result(10)
    assert described.coordinator.id == 1, described

    total = len(load.acked)
    http = sum(1 for v in load.acked if v.startswith(b"http-"))
    print(f"\nscaling: {total} records acknowledged ({http} over HTTP), 0 lost, 0 duplicated; "
          f"records produced through the added nodes before their drain: {taken}; "
          f"{len(load.retriable)} retriable client errors recovered")
    ack_times = load.ack_times
    consume_times = [t for t, _, _, _ in load.consumed]
    for node_id, signalled, exited in drains:
        window = (signalled - 1, exited + 5)
        print(f"drain of node {node_id}: exited {exited - signalled:.2f} s after SIGTERM; "
              f"longest gap between acknowledgements {longest_gap(ack_times, *window) * 1000:.0f} ms, "
              f"between consumed records {longest_gap(consume_times, *window) * 1000:.0f} ms")
