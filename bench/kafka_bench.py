"""Produce then consume through sluice's Kafka listener with librdkafka
(confluent-kafka) and print throughput and latency. Started by
bench/kafka.sh, which brings up etcd, moto and sluice first."""

from __future__ import annotations

import argparse
import os
import time
import uuid

import requests
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, round(p / 100 * (len(sorted_values) - 1)))]


def scrape(url: str) -> dict[str, float]:
    out = {}
    for line in requests.get(url, timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--metrics", required=True)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--record-bytes", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rate-mbps", type=float, default=0,
                        help="pace producing at this rate (0 = as fast as possible)")
    args = parser.parse_args()

    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(topic, args.partitions)])[topic].result(timeout=30)
    count = args.megabytes * 1_000_000 // args.record_bytes
    payload = os.urandom(args.record_bytes)
    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", "linger.ms": 5,
                         "batch.size": 1_000_000, "queue.buffering.max.kbytes": 512 * 1024,
                         "compression.type": "none"})
    latencies: list[float] = []
    errors = []

    def delivered(err, msg, sent=None):
        if err is not None:
            errors.append(err)
        else:
            latencies.append((time.monotonic() - sent) * 1000)

    before = scrape(args.metrics)
    start = time.monotonic()
    for i in range(count):
        if args.rate_mbps > 0:
            due = start + i * args.record_bytes / (args.rate_mbps * 1e6)
            pause = due - time.monotonic()
            if pause > 0:
                producer.poll(pause)
        sent = time.monotonic()
        while True:
            try:
                producer.produce(topic, value=payload, key=str(i).encode(),
                                 on_delivery=lambda err, msg, sent=sent: delivered(err, msg, sent))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(300)
    produce_s = time.monotonic() - start
    after = scrape(args.metrics)
    assert not errors, errors[:5]
    latencies.sort()
    mb = count * args.record_bytes / 1e6
    flushes = max(1.0, after.get("sluice_flushes_total", 0) - before.get("sluice_flushes_total", 0))
    print(f"kafka produce: {count} records of {args.record_bytes} B to {args.partitions} partitions, "
          f"acks=all, linger.ms=5"
          + (f", paced at {args.rate_mbps} MB/s" if args.rate_mbps else ", unpaced"))
    print(f"  {mb / produce_s:.1f} MB/s, {count / produce_s:.0f} records/s")
    print(f"  delivery latency p50 {percentile(latencies, 50):.1f} ms, "
          f"p99 {percentile(latencies, 99):.1f} ms")
    print(f"  {flushes:.0f} flushes, "
          f"{(after.get('sluice_object_puts_total', 0) - before.get('sluice_object_puts_total', 0)) / flushes:.2f} PUTs and "
          f"{(after.get('sluice_commit_txns_total', 0) - before.get('sluice_commit_txns_total', 0)) / flushes:.2f} "
          f"commit txns per flush")

    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"bench-{topic}",
                         "enable.auto.commit": False, "fetch.max.bytes": 52428800,
                         "max.partition.fetch.bytes": 10485760})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(args.partitions)])
    got = 0
    start = time.monotonic()
    deadline = start + 600
    while got < count and time.monotonic() < deadline:
        for msg in consumer.consume(10_000, 1.0):
            if not msg.error():
                got += 1
    consume_s = time.monotonic() - start
    consumer.close()
    assert got == count, f"consumed {got} of {count}"
    print(f"kafka consume from earliest: {got} records in {consume_s:.1f} s, "
          f"{mb / consume_s:.1f} MB/s, {got / consume_s:.0f} records/s")


if __name__ == "__main__":
    main()
