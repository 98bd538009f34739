#!/usr/bin/env python3
"""Reproduction of a chaos finding: a consumer tailing a partition was
handed offset N+2 when it asked for N, and never saw N and N+1.

Two nodes commit to the same partition. Node A's own commit is applied to
its metadata view at once, but node B's commit just before it arrives by
the watch a moment later; in that moment A's view had a hole (N, N+1)
below a high watermark that already counted A's batch, and a fetch at N
was answered with the next batch the index held. In the campaign (seed 21,
after two kill -9s) a group member read 4387 and then 4390.

Here both nodes take HTTP produces for one partition as fast as they
answer while a confluent-kafka consumer tails it; every offset the
consumer is given must follow the one before it.

    python3 tests/chaos/repro_hole_read.py [--binary PATH] [--seconds 20] [--out DIR]

Exit status 1 when the consumer skipped an offset.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "e2e")]

from confluent_kafka import Consumer, KafkaError, TopicPartition  # noqa: E402

from http_api import parse_concatenated_json  # noqa: E402
from repro_common import nodes, parse_args, servers, topic_everywhere  # noqa: E402

RECORDS_PER_POST = 3


def produce(node, topic: str, stop: threading.Event, name: str, sent: list) -> None:
    api = node.api.with_new_session()
    n = 0
    while not stop.is_set():
        records = [{"partition_id": 0, "value": {"type": "STRING", "data": f"{name}-{n + i}"}}
                   for i in range(RECORDS_PER_POST)]
        resp = api.produce_stream(topic, records)
        reports = parse_concatenated_json(resp.text) if resp.status_code == 200 else []
        if len(reports) != len(records) or any(r.get("error_code") != 200 for r in reports):
            raise SystemExit(f"{name}: HTTP {resp.status_code}: {resp.text[:300]}")
        n += RECORDS_PER_POST
    sent.append(n)


def main() -> int:
    a = parse_args(__doc__, "holeread", seconds=(float, 20))
    out = a.out
    skips: list[tuple[int, int]] = []
    with servers(a, "holeread") as (factory, _):
        two = nodes(factory, 2, "5ms")
        topic = "holeread"
        topic_everywhere(two, topic)
        consumer = Consumer({"bootstrap.servers": ",".join(n.bootstrap for n in two),
                             "group.id": "holeread", "enable.auto.commit": False,
                             "fetch.wait.max.ms": 50, "fetch.min.bytes": 1})
        consumer.assign([TopicPartition(topic, 0, 0)])
        stop = threading.Event()
        sent: list[int] = []
        producers = [threading.Thread(target=produce, args=(n, topic, stop, n.name, sent),
                                      daemon=True) for n in two]
        for t in producers:
            t.start()
        expected, received = 0, 0
        end = time.monotonic() + a.seconds
        try:
            while time.monotonic() < end or (stop.set() or any(t.is_alive() for t in producers)):
                for m in consumer.consume(500, 0.2):
                    if m.error():
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            raise SystemExit(f"consumer: {m.error()}")
                        continue
                    if m.offset() != expected:
                        skips.append((expected, m.offset()))
                        print(f"asked for offset {expected}, given {m.offset()}", flush=True)
                    expected = m.offset() + 1
                    received += 1
            total = sum(sent)
            drain_end = time.monotonic() + 30
            while expected < total and time.monotonic() < drain_end:
                for m in consumer.consume(500, 0.2):
                    if not m.error():
                        if m.offset() != expected:
                            skips.append((expected, m.offset()))
                        expected = m.offset() + 1
                        received += 1
        finally:
            stop.set()
            consumer.close()
        print(f"{total} records produced through 2 nodes, {received} consumed, "
              f"{len(skips)} offset skips (node logs in {out})")
        if received != total and not skips:
            print(f"the consumer did not reach the end ({expected} of {total})")
            return 1
    return 1 if skips else 0


if __name__ == "__main__":
    sys.exit(main())
