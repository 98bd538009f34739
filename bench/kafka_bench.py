"""Produce then consume through sluice's Kafka listener with librdkafka
(confluent-kafka) and print throughput and latency. Started by
bench/kafka.sh, which brings up etcd, moto and sluice first."""

from __future__ import annotations

import argparse
import threading
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


def histogram_quantile(before: dict, after: dict, name: str, q: float) -> float | None:
    """The upper bound of the bucket holding quantile `q` of what `name`
    observed between two scrapes (Prometheus' `le` buckets)."""
    buckets = []
    for key, value in after.items():
        if key.startswith(name + "_bucket{") and 'le="' in key:
            le = key.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), value - before.get(key, 0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    return next(le for le, count in buckets if count >= q * total)


class Sampler(threading.Thread):
    """Scrapes /metrics every half second; keeps the largest value seen of
    each gauge asked for."""

    def __init__(self, url: str, names: list[str]):
        super().__init__(daemon=True)
        self.url, self.names = url, names
        self.peak = {name: 0.0 for name in names}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            try:
                now = scrape(self.url)
            except requests.RequestException:
                continue
            for name in self.names:
                self.peak[name] = max(self.peak[name], now.get(name, 0.0))


def produce(conf: dict, topic: str, count: int, record_bytes: int,
            rate_mbps: float = 0) -> dict:
    """Produce `count` records of `record_bytes` to `topic` (acks=all,
    linger.ms=5), paced at `rate_mbps` if given: seconds taken and the
    delivery latencies (ms, sorted)."""
    payload = os.urandom(record_bytes)
    producer = Producer({**conf, "acks": "all", "linger.ms": 5,
                         "batch.size": 1_000_000, "queue.buffering.max.kbytes": 512 * 1024,
                         "compression.type": "none"})
    latencies: list[float] = []
    errors = []

    def delivered(err, msg, sent=None):
        if err is not None:
            errors.append(err)
        else:
            latencies.append((time.monotonic() - sent) * 1000)

    start = time.monotonic()
    for i in range(count):
        if rate_mbps > 0:
            due = start + i * record_bytes / (rate_mbps * 1e6)
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
    seconds = time.monotonic() - start
    assert not errors, errors[:5]
    latencies.sort()
    return {"seconds": seconds, "latencies": latencies}


def consume(conf: dict, topic: str, partitions: int, count: int) -> float:
    """Read `count` records of `topic` from the earliest offsets: seconds taken."""
    consumer = Consumer({**conf, "group.id": f"bench-{topic}-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "fetch.max.bytes": 52428800,
                         "max.partition.fetch.bytes": 10485760})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = 0
    start = time.monotonic()
    deadline = start + 600
    while got < count and time.monotonic() < deadline:
        for msg in consumer.consume(10_000, 1.0):
            if not msg.error():
                got += 1
    seconds = time.monotonic() - start
    consumer.close()
    assert got == count, f"consumed {got} of {count}"
    return seconds


def create_topic(conf: dict, partitions: int) -> str:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, partitions)])[topic].result(timeout=30)
    return topic


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

    conf = {"bootstrap.servers": args.bootstrap}
    topic = create_topic(conf, args.partitions)
    count = args.megabytes * 1_000_000 // args.record_bytes
    before = scrape(args.metrics)
    sampler = Sampler(args.metrics, ["sluice_writer_buffered_bytes"])
    sampler.start()
    produced = produce(conf, topic, count, args.record_bytes, args.rate_mbps)
    sampler.done.set()
    after = scrape(args.metrics)
    produce_s, latencies = produced["seconds"], produced["latencies"]
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
    # the scaling signals an autoscaler would see during this produce
    queued = after.get("sluice_request_queue_seconds_count", 0) - before.get("sluice_request_queue_seconds_count", 0)
    queue_sum = after.get("sluice_request_queue_seconds_sum", 0) - before.get("sluice_request_queue_seconds_sum", 0)
    queue_p99 = histogram_quantile(before, after, "sluice_request_queue_seconds", 0.99)
    produced_bytes = after.get("sluice_produce_bytes_total", 0) - before.get("sluice_produce_bytes_total", 0)
    buffer_max = after.get("sluice_writer_buffer_max_bytes", 0) or 1
    print(f"  scaling signals: produce {produced_bytes / produce_s / 1e6:.1f} MB/s into the node; "
          f"request queue time mean {queue_sum / max(queued, 1) * 1000:.2f} ms, "
          f"p99 <= {queue_p99 * 1000 if queue_p99 is not None else float('nan'):g} ms "
          f"over {queued:.0f} requests; writer buffer peak "
          f"{sampler.peak['sluice_writer_buffered_bytes'] / 1e6:.1f} MB of {buffer_max / 1e6:.0f} MB "
          f"({sampler.peak['sluice_writer_buffered_bytes'] / buffer_max:.0%})")
    consume_s = consume(conf, topic, args.partitions, count)
    print(f"kafka consume from earliest: {count} records in {consume_s:.1f} s, "
          f"{mb / consume_s:.1f} MB/s, {count / consume_s:.0f} records/s")


if __name__ == "__main__":
    main()
