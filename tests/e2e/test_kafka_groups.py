"""Consumer groups through sluice's Kafka listener with confluent-kafka
(librdkafka): the classic rebalance protocol, committed offsets in etcd.

Members run as separate processes (group_member.py) so that one can be
killed with SIGKILL (no LeaveGroup) while another leaves cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from harness import wait_until

MEMBER = Path(__file__).with_name("group_member.py")
PARTITIONS = 12


class Member:
    """A group_member.py process and what it printed."""

    def __init__(self, bootstrap: str, group: str, topic: str, assignor: str):
        self.proc = subprocess.Popen(
            [sys.executable, str(MEMBER), bootstrap, group, topic, assignor],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.assigned: list[int] = []
        self.records: list[tuple[int, int, str]] = []
        self.closed = False
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            event = json.loads(line)
            with self.lock:
                if "assigned" in event:
                    self.assigned = event["assigned"]
                elif "p" in event:
                    self.records.append((event["p"], event["o"], event["v"]))
                elif "closed" in event:
                    self.closed = True

    def snapshot(self) -> tuple[list[int], list[tuple[int, int, str]]]:
        with self.lock:
            return list(self.assigned), list(self.records)

    def kill(self, sig: int) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        self.reader.join(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def produce_http(api, topic: str, start: int, count: int) -> set[str]:
    """`count` records per partition, value "p<p>-<i>"; returns the values."""
    values = set()
    for p in range(PARTITIONS):
        entries = []
        for i in range(start, start + count):
            value = f"p{p}-{i}"
            values.add(value)
            entries.append({"id": value, "partition_id": p,
                            "value": {"type": "STRING", "data": value}})
        r = api.produce_batch_raw(topic, {"entries": entries})
        assert r.status_code == 200, r.text
    return values


def assignments_of(members: list[Member]) -> list[list[int]]:
    return [m.snapshot()[0] for m in members]


def balanced(members: list[Member]) -> bool:
    parts = assignments_of(members)
    flat = sorted(p for a in parts for p in a)
    return flat == list(range(PARTITIONS)) and max(map(len, parts)) - min(map(len, parts)) <= 1


def consumed_values(members: list[Member]) -> set[str]:
    return {v for m in members for (_, _, v) in m.snapshot()[1]}


@pytest.fixture
def group_node(sluice):
    return sluice.distributed(flush_interval="20ms",
                              extra_args=["--group-initial-rebalance-delay", "500ms"])


@pytest.mark.parametrize("assignor", ["range", "roundrobin", "cooperative-sticky"])
def test_group_balances_and_survives_a_leave_and_a_crash(group_node, assignor):
    node = group_node
    topic = f"grp-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    node.api.create_topic(topic, PARTITIONS)
    produced = produce_http(node.api, topic, 0, 50)

    members = [Member(node.bootstrap, group, topic, assignor) for _ in range(3)]
    try:
        wait_until(lambda: balanced(members), 60, f"3 members balanced over 12 partitions: "
                   f"{assignments_of(members)}")
        assert sorted(map(len, assignments_of(members))) == [4, 4, 4]
        wait_until(lambda: produced <= consumed_values(members), 60, "first records consumed")

        leaver, crasher, survivor = members
        leaver.kill(signal.SIGTERM)
        assert leaver.closed, "the leaving member did not close cleanly"
        crasher.kill(signal.SIGKILL)
        t_crash = time.monotonic()
        # the crashed member's 6 s session must expire and its partitions move
        wait_until(lambda: survivor.snapshot()[0] == list(range(PARTITIONS)), 45,
                   f"survivor owns every partition: {survivor.snapshot()[0]}")
        took = time.monotonic() - t_crash
        assert took < 30, f"rebalance after the crash took {took:.1f}s"

        more = produce_http(node.api, topic, 50, 30)
        wait_until(lambda: (produced | more) <= consumed_values(members), 60,
                   "records produced after the rebalance consumed")
        # nothing skipped: every partition was read without gaps by someone
        for p in range(PARTITIONS):
            offsets = sorted({o for m in members for (q, o, _) in m.snapshot()[1] if q == p})
            assert offsets == list(range(80)), f"partition {p} has gaps: {offsets[:5]}..."
        # the survivor's commits reached etcd: the group's committed offsets are at the end
        wait_until(lambda: committed(node, group, topic) == [80] * PARTITIONS, 30,
                   f"committed offsets at the end: {committed(node, group, topic)}")
    finally:
        for m in members:
            m.close()


def committed(node, group: str, topic: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": node.bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)],
                                 timeout=10)
        return [tp.offset for tp in tps]
    finally:
        consumer.close()


def test_committed_offsets_resume_and_groups_are_described_and_deleted(group_node):
    node = group_node
    topic = f"resume-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    node.api.create_topic(topic, 1)
    entries = [{"id": str(i), "partition_id": 0, "value": {"type": "STRING", "data": f"v{i}"}}
               for i in range(20)]
    assert node.api.produce_batch_raw(topic, {"entries": entries}).status_code == 200
    conf = {"bootstrap.servers": node.bootstrap, "group.id": group,
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": 6000}
    first = Consumer(conf)
    first.subscribe([topic])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < 8 and time.monotonic() < deadline:
        msg = first.poll(0.5)
        if msg is not None and not msg.error():
            got.append(msg.value().decode())
    assert got == [f"v{i}" for i in range(8)]
    first.commit(asynchronous=False)

    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    listed = admin.list_consumer_groups().result(timeout=30)
    assert group in {g.group_id for g in listed.valid}
    described = admin.describe_consumer_groups([group])[group].result(timeout=30)
    assert str(described.state).upper().endswith("STABLE")
    assert len(described.members) == 1
    assert {tp.partition for tp in described.members[0].assignment.topic_partitions} == {0}
    # a non-empty group cannot be deleted
    with pytest.raises(Exception):
        admin.delete_consumer_groups([group])[group].result(timeout=30)
    first.close()

    # a new consumer of the group resumes at the committed offset
    second = Consumer(conf)
    second.subscribe([topic])
    rest = []
    deadline = time.monotonic() + 60
    while len(rest) < 12 and time.monotonic() < deadline:
        msg = second.poll(0.5)
        if msg is not None and not msg.error():
            rest.append(msg.value().decode())
    assert rest == [f"v{i}" for i in range(8, 20)]
    second.commit(asynchronous=False)
    second.close()

    admin.delete_consumer_groups([group])[group].result(timeout=30)
    listed = admin.list_consumer_groups().result(timeout=30)
    assert group not in {g.group_id for g in listed.valid}
    assert committed(node, group, topic)[0] < 0, "offsets survived the group's deletion"
