"""One node stays within its memory budget under a soak of mixed load.

A node with the default budget (`--memory-max 256MiB`) takes produce from
two unpaced idempotent producers (acks=all), about 1 GB in 30 s, while five
consumer groups read the topic from the beginning: three at the tail, and
two that join half way through and read, from offset 0, what the compactor
has archived by then (Parquet row groups decoded on the read path) and
what left the cache's memory tier. Shown: the process's peak resident
memory (VmHWM, read from /proc) stays within the budget plus 10 %; each
share reported in /metrics stays within its size; the late groups were
served archived row groups; every group reads every acknowledged record
once, in order. SLUICE_SOAK_LATE_GROUPS sets how many groups join late.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import requests
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from harness import wait_until

TOPIC = "soak"
PARTITIONS = 3
GROUPS = 5
BUDGET = 256 << 20
SOAK_SECONDS = 30
RECORD_BYTES = 512


def status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def shares(url: str) -> tuple[dict[str, float], dict[str, float]]:
    """`sluice_memory_share_bytes` and `sluice_memory_used_bytes` by share."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    out: tuple[dict[str, float], dict[str, float]] = ({}, {})
    for line in text.splitlines():
        m = re.match(r'^sluice_memory_(share|used)_bytes\{share="(\w+)"\} (\S+)$', line)
        if m:
            out[0 if m.group(1) == "share" else 1][m.group(2)] = float(m.group(3))
    return out


class Soak:
    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self.stop_producing = threading.Event()
        self.stop_consuming = threading.Event()
        self.lock = threading.Lock()
        self.acked = [0] * PARTITIONS
        self.errors: list[str] = []
        # group -> partition -> next offset expected
        self.positions = [[0] * PARTITIONS for _ in range(GROUPS)]

    def fail(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)

    def produce(self, name: str) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                             "linger.ms": 5, "batch.size": 1_000_000,
                             "message.timeout.ms": 120000,
                             "queue.buffering.max.kbytes": 64 * 1024})

        def delivered(err, msg):
            if err is not None:
                self.fail(f"producer {name}: {err}")
            else:
                with self.lock:
                    self.acked[msg.partition()] += 1

        pad = b"x" * RECORD_BYTES
        n = 0
        while not self.stop_producing.is_set():
            value = (b"%s-%d-" % (name.encode(), n) + pad)[:RECORD_BYTES]
            try:
                producer.produce(TOPIC, value=value, partition=n % PARTITIONS,
                                 on_delivery=delivered)
                n += 1
            except BufferError:
                producer.poll(0.01)
            producer.poll(0)
        if producer.flush(120):
            self.fail(f"producer {name}: records never answered")

    def consume(self, group: int, delay: float) -> None:
        # a late group starts from the beginning of what left memory long ago
        if self.stop_consuming.wait(delay):
            return
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"soak-{group}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": True,
                             "enable.partition.eof": False})
        consumer.subscribe([TOPIC])
        positions = self.positions[group]
        try:
            while not self.stop_consuming.is_set():
                for msg in consumer.consume(1000, 0.5):
                    if msg.error():
                        if msg.error().code() != KafkaError._PARTITION_EOF:
                            self.fail(f"group {group}: {msg.error()}")
                        continue
                    p = msg.partition()
                    if msg.offset() != positions[p]:
                        self.fail(f"group {group} partition {p}: offset {msg.offset()} "
                                  f"where {positions[p]} was next")
                    positions[p] = msg.offset() + 1
        finally:
            consumer.close()


def test_the_node_stays_within_its_memory_budget(sluice):
    node = sluice.distributed(extra_args=["--memory-max", "256MiB"])
    node.api.create_topic(TOPIC, PARTITIONS)
    soak = Soak(node.bootstrap)
    peaks: dict[str, float] = {}
    limits: dict[str, float] = {}
    rss_peak: dict[str, float] = {}
    sampling = threading.Event()

    def sample():
        while not sampling.wait(0.5):
            try:
                share, used = shares(node.url)
            except requests.RequestException:
                continue
            limits.update(share)
            for name, value in used.items():
                peaks[name] = max(peaks.get(name, 0.0), value)
            rss = status_bytes(node.pid, "VmRSS")
            if rss > rss_peak.get("rss", 0):
                rss_peak.update(rss=rss, at=time.monotonic() - started, shares=sum(used.values()))

    threads = [threading.Thread(target=soak.produce, args=(f"p{i}",), daemon=True)
               for i in range(2)]
    # groups read at the tail; SLUICE_SOAK_LATE_GROUPS of them (2) join
    # half way through instead and read what left memory (see the module)
    late = int(os.environ.get("SLUICE_SOAK_LATE_GROUPS", "2"))
    threads += [threading.Thread(target=soak.consume,
                                 args=(g, SOAK_SECONDS / 2 if g >= GROUPS - late else 0),
                                 daemon=True)
                for g in range(GROUPS)]
    threads.append(threading.Thread(target=sample, daemon=True))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(SOAK_SECONDS)
    soak.stop_producing.set()
    for thread in threads[:2]:
        thread.join(150)
    produced_seconds = time.monotonic() - started
    ends = [node.api.offsets(TOPIC, p)["high_watermark"] for p in range(PARTITIONS)]
    assert ends == soak.acked, f"high watermarks {ends}, acknowledged {soak.acked}"

    def caught_up() -> bool:
        return all(soak.positions[g] == ends for g in range(GROUPS))

    wait_until(caught_up, 240, "every group read every record", interval=0.5)
    soak.stop_consuming.set()
    sampling.set()
    for thread in threads[2:]:
        thread.join(60)
    assert not soak.errors, "\n".join(soak.errors[:20])

    peak = status_bytes(node.pid, "VmHWM")
    row_groups = node.api.metrics().get("sluice_archive_row_group_reads_total", 0)
    anon, file = status_bytes(node.pid, "RssAnon"), status_bytes(node.pid, "RssFile")
    records = sum(ends)
    megabytes = records * RECORD_BYTES / 1e6
    print(f"\nmemory soak: {records:,} records ({megabytes:.0f} MB) produced in "
          f"{produced_seconds:.0f} s, read by {GROUPS} groups ({late} late, served "
          f"{row_groups:.0f} archived row groups); peak RSS (VmHWM) "
          f"{peak / 2**20:.0f} MiB of a {BUDGET >> 20} MiB budget (at the end: "
          f"{anon / 2**20:.0f} MiB anonymous, {file / 2**20:.0f} MiB of the binary; sampled "
          f"peak {rss_peak.get('rss', 0) / 2**20:.0f} MiB at {rss_peak.get('at', 0):.0f} s, the "
          f"shares then holding {rss_peak.get('shares', 0) / 2**20:.0f} MiB); "
          "share peaks (MiB): "
          + ", ".join(f"{name} {peaks.get(name, 0) / 2**20:.1f} of {limits[name] / 2**20:.1f}"
                      for name in sorted(limits)))
    assert peak <= BUDGET * 1.10, f"peak RSS {peak / 2**20:.0f} MiB"
    # the load was big enough to matter: more than the cache's memory tier
    assert records * RECORD_BYTES > limits["cache"], records
    assert set(peaks) == set(limits), f"shares reporting use: {sorted(peaks)}"
    for name, value in peaks.items():
        assert value <= limits[name], f"{name} held {value:.0f} of {limits[name]:.0f} bytes"
    assert peaks.get("cache", 0) > 0 and peaks.get("writer", 0) > 0, peaks
    if late:
        # the late groups' reads went through the archive path
        assert row_groups > 0, "no archived row group was read"
