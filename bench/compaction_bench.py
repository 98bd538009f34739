"""Driver of bench/compaction.sh: steady JSON-ish produce, then figures from
the node's archive listing, /metrics and its log (one line per published
archive file)."""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time

import requests
from confluent_kafka import Producer

TOPIC = "compaction-bench"


def json_record(i: int, size: int, rng: random.Random) -> bytes:
    """A JSON-ish event of about `size` bytes: repeated field names, a few
    enumerations, numbers and some free text, like application logs."""
    doc = {
        "event_id": i,
        "ts": int(time.time() * 1000),
        "user": f"user-{rng.randrange(5000)}",
        "action": rng.choice(["view", "click", "purchase", "login", "logout"]),
        "country": rng.choice(["DE", "FR", "US", "JP", "BR", "IN"]),
        "amount": round(rng.random() * 100, 2),
        "tags": [rng.choice(["a", "b", "c", "d"]) for _ in range(3)],
    }
    text = json.dumps(doc)
    pad = max(0, size - len(text) - 12)
    words = " ".join(rng.choice(["lorem", "ipsum", "dolor", "sit", "amet", "sluice", "kafka"])
                     for _ in range(pad // 6 + 1))[:pad]
    doc["note"] = words
    return json.dumps(doc).encode()


def metric(url: str, name: str) -> float:
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--rate-mbps", type=float, default=2.0)
    ap.add_argument("--record-bytes", type=int, default=400)
    ap.add_argument("--partitions", type=int, default=6)
    args = ap.parse_args()

    requests.post(f"{args.url}/v3/clusters/{cluster_id(args.url)}/topics",
                  json={"topic_name": TOPIC, "partitions_count": args.partitions},
                  timeout=10).raise_for_status()
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5,
                         "compression.type": "none", "acks": "all",
                         "queue.buffering.max.messages": 500000})
    rng = random.Random(7)
    acked: dict[int, list[tuple[int, float]]] = {p: [] for p in range(args.partitions)}

    def on_delivery(err, msg):
        if err is None and msg.offset() % 50 == 0:  # a sample of the records
            acked[msg.partition()].append((msg.offset(), time.monotonic()))

    freshness: list[float] = []
    pending = {p: 0 for p in range(args.partitions)}  # next sample index per partition
    keys_samples: list[tuple[float, float, float]] = []
    bytes_per_s = args.rate_mbps * 1e6
    started = time.monotonic()
    sent = 0
    i = 0
    next_poll = started
    next_keys = started + 10
    while time.monotonic() - started < args.seconds:
        while sent < (time.monotonic() - started) * bytes_per_s:
            value = json_record(i, args.record_bytes, rng)
            while True:
                try:
                    producer.produce(TOPIC, value=value, partition=i % args.partitions,
                                     on_delivery=on_delivery)
                    break
                except BufferError:  # the client's queue is full: let it drain
                    producer.poll(0.05)
            sent += len(value)
            i += 1
        producer.poll(0)
        now = time.monotonic()
        if now >= next_poll:
            next_poll = now + 0.25
            observe(args.url, acked, pending, freshness)
        if now >= next_keys:
            next_keys = now + 10
            keys_samples.append((now - started,
                                 metric(args.url, "sluice_index_entries_partition_max"),
                                 metric(args.url, "sluice_index_entries") / args.partitions))
        time.sleep(0.005)
    producer.flush(60)
    produced_s = time.monotonic() - started
    # let the last records reach the archive
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        observe(args.url, acked, pending, freshness)
        if all(pending[p] >= len(acked[p]) for p in acked):
            break
        time.sleep(0.25)

    jobs = [m.groupdict() for m in re.finditer(
        r'archive file published kind="(?P<kind>\w+)".*? input_bytes=(?P<input>\d+) '
        r'file_bytes=(?P<file>\d+) .*?elapsed_ms=(?P<ms>\d+)', open(args.log).read())]
    rolls = [j for j in jobs if j["kind"] == "roll"]
    merges = [j for j in jobs if j["kind"] == "merge"]
    roll_in = sum(int(j["input"]) for j in rolls)
    roll_out = sum(int(j["file"]) for j in rolls)
    roll_ms = sum(int(j["ms"]) for j in rolls)
    listing = requests.get(f"{args.url}/v1/topics/{TOPIC}/archive", timeout=10).json()
    archive_bytes = sum(f["bytes"] for f in listing["files"])
    print(f"produced {sent / 1e6:.1f} MB ({i} records of ~{args.record_bytes} B JSON) "
          f"over {produced_s:.0f} s at {args.rate_mbps} MB/s, {args.partitions} partitions")
    print(f"roll jobs: {len(rolls)}, {roll_in / 1e6:.1f} MB of segments in {roll_ms / 1000:.1f} "
          f"job-seconds = {roll_in / 1e6 / max(roll_ms / 1000, 1e-9):.1f} MB/s per job "
          f"(one job runs on one core)")
    print(f"merge jobs: {len(merges)}")
    print(f"parquet vs segment size: rolled files {roll_out / max(roll_in, 1):.3f}, "
          f"archive now {archive_bytes / 1e6:.2f} MB in {len(listing['files'])} files = "
          f"{archive_bytes / max(roll_in, 1):.3f} of the segment bytes")
    print(f"freshness (ack -> in a published Parquet file) over {len(freshness)} samples: "
          f"p50 {percentile(freshness, 0.5):.1f} s, p99 {percentile(freshness, 0.99):.1f} s, "
          f"max {max(freshness, default=float('nan')):.1f} s")
    for t, most, mean in keys_samples[:: max(1, len(keys_samples) // 10)] + keys_samples[-1:]:
        print(f"  t={t:5.0f} s  index entries: fullest partition {most:.0f}, "
              f"mean per partition {mean:.1f}")


def observe(url, acked, pending, freshness) -> None:
    try:
        listing = requests.get(f"{url}/v1/topics/{TOPIC}/archive", timeout=5).json()
    except requests.RequestException:
        return
    now = time.monotonic()
    for part in listing["partitions"]:
        p = part["partition"]
        end = part["archived_end_offset"]
        samples = acked[p]
        while pending[p] < len(samples) and samples[pending[p]][0] < end:
            freshness.append(now - samples[pending[p]][1])
            pending[p] += 1


def cluster_id(url: str) -> str:
    return requests.get(f"{url}/v3/clusters", timeout=10).json()["data"][0]["cluster_id"]


if __name__ == "__main__":
    main()
