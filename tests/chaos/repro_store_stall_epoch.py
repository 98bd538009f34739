#!/usr/bin/env python3
"""Reproduction of a chaos finding: while a node cannot reach the object
store, an idempotent librdkafka producer with a short message timeout
abandons its requests, bumps its epoch and sends the same messages again,
more than once; the node held every copy in its buffer and, once the store
came back, committed them all (records stored three times).

In the campaign (cut_store, seed 11) 113 records of `idem1` were stored
two or three times. A batch of a newer epoch now fences the older-epoch
batches of the same producer and partition still in flight on the node:
their chunk is not committed (they were never acknowledged).

Here one node reaches the store through the campaign's S3 proxy, which
holds every request for a few seconds while the producer keeps sending;
then no value may be in the log more than twice (twice is librdkafka's
own doing, see the exit status below), and no acknowledged value lost.

    python3 tests/chaos/repro_store_stall_epoch.py [--binary PATH] [--stall 6] [--out DIR]

Exit status 1 when a value is stored three times or more, or lost.
"""

from __future__ import annotations

import logging
import struct
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "e2e")]

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition  # noqa: E402

import kafka_wire as wire  # noqa: E402
from processes import HOST, free_port  # noqa: E402
from repro_common import nodes, parse_args, servers  # noqa: E402
from s3proxy import S3Proxy  # noqa: E402


def read_all(bootstrap: str, topic: str, end: int) -> list[str]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "stall-read",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, 0, 0)])
    values: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF and m.offset() >= end:
                    return values
                continue
            values.append(m.value().decode())
    finally:
        c.close()
    raise SystemExit(f"could not read to the end ({len(values)} of {end})")


def batches(node, topic: str, end: int) -> list[tuple[int, int, int, int]]:
    """(base offset, producer epoch, base sequence, records) of every
    stored batch, by raw Fetch v4 (what no client API shows)."""
    out, offset = [], 0
    while offset < end:
        body = struct.pack(">iiiib", -1, 0, 0, 1 << 20, 0)
        body += struct.pack(">i", 1) + wire.string(topic)
        body += struct.pack(">i", 1) + struct.pack(">iqi", 0, offset, 1 << 20)
        resp = wire.call(node, wire.request(1, 4, body))
        at = 8 + 2 + len(topic) + 4 + 4 + 2 + 8 + 8
        aborted = struct.unpack(">i", resp[at:at + 4])[0]
        at += 4 + max(aborted, 0) * 16
        size = struct.unpack(">i", resp[at:at + 4])[0]
        records = resp[at + 4:at + 4 + size]
        i, moved = 0, False
        while i + 61 <= len(records):
            base, length = struct.unpack(">qi", records[i:i + 12])
            if i + 12 + length > len(records):
                break
            last_delta = struct.unpack(">i", records[i + 23:i + 27])[0]
            epoch, base_seq, count = struct.unpack(">hii", records[i + 51:i + 61])
            if base >= offset:
                out.append((base, epoch, base_seq, count))
                offset, moved = base + last_delta + 1, True
            i += 12 + length
        if not moved:
            break
    return out


def main() -> int:
    a = parse_args(__doc__, "stall", stall=(float, 6.0))
    out = a.out
    log = logging.getLogger("stall.proxy")
    log.addHandler(logging.FileHandler(out / "proxy.log"))
    log.setLevel(logging.INFO)
    log.propagate = False
    with servers(a, "stall") as (factory, s3):
        proxy = S3Proxy((HOST, s3.port), free_port(), "node1-s3", log).start()
        try:
            return run(a, out, proxy, nodes(factory, 1, "20ms", s3_endpoint=proxy.endpoint)[0])
        finally:
            proxy.close()


def run(a, out: Path, proxy: S3Proxy, node) -> int:
    """Produce through the stall; the exit status."""
    topic = "stall"
    node.api.create_topic(topic, 1)
    bumps: list[str] = []

    class Bumps(logging.Handler):
        def emit(self, record):
            if "bumped epoch" in record.getMessage():
                bumps.append(record.getMessage())

    client_log = logging.getLogger("stall.librdkafka")
    client_log.addHandler(Bumps())
    client_log.addHandler(logging.FileHandler(out / "client.log"))
    client_log.setLevel(logging.DEBUG)
    client_log.propagate = False
    producer = Producer({"bootstrap.servers": node.bootstrap, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 5, "message.timeout.ms": 3000,
                         "request.timeout.ms": 1500, "retry.backoff.ms": 100,
                         "debug": "eos", "logger": client_log})
    acked, failed = Counter(), Counter()

    def report(err, msg):
        (failed if err else acked)[msg.value().decode()] += 1

    sent = 0
    start = time.monotonic()
    stalled = healed = False
    while time.monotonic() - start < a.stall + 8:
        elapsed = time.monotonic() - start
        if not stalled and elapsed > 2:
            proxy.set_mode("stall")
            stalled = True
        if stalled and not healed and elapsed > 2 + a.stall:
            proxy.set_mode("pass")
            healed = True
        try:
            producer.produce(topic, f"v{sent:06d}".encode(), partition=0, on_delivery=report)
            sent += 1
        except BufferError:
            pass
        producer.poll(0.01)
    producer.flush(30)
    lo, hi = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "wm"}) \
        .get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    values = read_all(node.bootstrap, topic, hi)
    copies = Counter(values)
    twice = sorted(v for v, n in copies.items() if n > 1)
    lost = sorted(v for v in acked if v not in copies)
    thrice = sorted(v for v, n in copies.items() if n > 2)
    print(f"{sent} sent, {sum(acked.values())} acknowledged, {sum(failed.values())} failed; "
          f"{len(bumps)} epoch bumps while the store stalled {a.stall:g} s; "
          f"{len(values)} in the log, {len(twice)} stored twice or more, "
          f"{len(thrice)} three times or more, "
          f"{len(lost)} acknowledged but lost (logs in {out})")
    if twice:
        print("stored more than once:", ", ".join(f"{v} x{copies[v]}" for v in twice[:10]))
        where = {}
        for o, v in enumerate(values):
            where.setdefault(v, []).append(o)
        stored = batches(node, topic, hi)
        for v in twice[:3]:
            for o in where[v]:
                b = next((b for b in stored if b[0] <= o < b[0] + b[3]), None)
                print(f"  {v} at {o}: batch (base, epoch, base seq, records) {b}")
    if not bumps:
        print("no epoch bump: the stall did not make the producer abandon a request")
        return 1
    # Two copies are librdkafka's own (a request abandoned when its
    # messages timed out, committed after all, its other messages sent
    # again under the next epoch: Kafka stores them twice too). More
    # copies mean the node committed batches of an epoch the producer
    # had abandoned before the next epoch's batch reached it.
    return 1 if thrice or lost else 0


if __name__ == "__main__":
    sys.exit(main())
