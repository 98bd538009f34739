"""One consumer-group member, run as its own process by test_kafka_groups.py
(so that the test can kill -9 it: a crash sends no LeaveGroup).

Usage: python group_member.py BOOTSTRAP GROUP TOPIC ASSIGNOR

Prints JSON lines on stdout:
  {"assigned": [partitions...]}               after every change of assignment
  {"p": partition, "o": offset, "v": value}   for every record consumed
Commits synchronously after every record, so a member that dies loses at
most the record it was handling. SIGTERM closes the consumer (LeaveGroup).
"""

from __future__ import annotations

import json
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaException


def main() -> None:
    bootstrap, group, topic, assignor = sys.argv[1:5]
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": f"member-{int(time.time() * 1000) % 100000}",
        "partition.assignment.strategy": assignor,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "topic.metadata.refresh.interval.ms": 2000,
    })
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer.subscribe([topic])
    shown = None
    while not stopping:
        msg = consumer.poll(0.2)
        current = sorted(tp.partition for tp in consumer.assignment())
        if current != shown:
            shown = current
            print(json.dumps({"assigned": current}), flush=True)
        if msg is None:
            continue
        if msg.error():
            print(json.dumps({"error": str(msg.error())}), flush=True)
            continue
        print(json.dumps({"p": msg.partition(), "o": msg.offset(),
                          "v": msg.value().decode()}), flush=True)
        try:
            consumer.commit(message=msg, asynchronous=False)
        except KafkaException as error:  # e.g. during a rebalance: the record may be redelivered
            print(json.dumps({"commit_error": str(error)}), flush=True)
        time.sleep(0.002)
    consumer.close()
    print(json.dumps({"closed": True}), flush=True)


if __name__ == "__main__":
    main()
