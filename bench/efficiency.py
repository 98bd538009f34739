"""Produce then consume through one sluice node and print what it cost the
node: records/s, MB/s, CPU-seconds per GB and GiB of record values, and
peak RSS. Started by bench/efficiency.sh, which brings up etcd, moto and
sluice first."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import requests

from kafka_bench import scrape

TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process so far."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """Resets VmHWM to the current RSS (Linux: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def find_tool(choice: str) -> str | None:
    if choice == "python":
        return None
    for candidate in (os.environ.get("RDKAFKA_PERFORMANCE"),
                      str(ROOT / "target/tools/rdkafka_performance"),
                      shutil.which("rdkafka_performance")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if choice == "rdkafka":
        raise SystemExit("rdkafka_performance not found: bash bench/rdkafka_performance.sh builds it")
    return None


def run_tool(tool: str, args: list[str]) -> None:
    done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{tool} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    failed = re.search(r"(\d+) messages? (?:failed|in error)", done.stdout + done.stderr)
    if failed and int(failed.group(1)) > 0:
        raise SystemExit(f"{tool}: {failed.group(0)}")
    # the tool's own count, timed from its first message to its last (the
    # table's rate also counts its start, connection and final flush)
    for line in (done.stdout + done.stderr).splitlines():
        if "msgs/s" in line:
            print(f"  {Path(tool).name}: {line.strip().lstrip('%').strip()}")


def produce(tool: str | None, bootstrap: str, topic: str, records: int, record_bytes: int) -> None:
    if tool:
        run_tool(tool, ["-P", "-t", topic, "-p", "0", "-b", bootstrap, "-s", str(record_bytes),
                        "-c", str(records), "-a", "-1", "-X", "linger.ms=5", "-q"])
        return
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "queue.buffering.max.messages": 1_000_000})
    payload = os.urandom(record_bytes)
    failed = []

    def delivered(err, _msg):
        if err is not None:
            failed.append(err)

    for _ in range(records):
        while True:
            try:
                producer.produce(topic, payload, partition=0, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    if producer.flush(300) or failed:
        raise SystemExit(f"produce failed: {failed[:3]}")


def consume(tool: str | None, bootstrap: str, topic: str, records: int) -> None:
    if tool:
        run_tool(tool, ["-C", "-t", topic, "-p", "0", "-b", bootstrap, "-o", "beginning",
                        "-c", str(records), "-q"])
        return
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "efficiency",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = 0
    deadline = time.time() + 600
    while got < records and time.time() < deadline:
        for msg in consumer.consume(10000, 1.0):
            if not msg.error():
                got += 1
    consumer.close()
    if got < records:
        raise SystemExit(f"consumed {got} of {records}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--http", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--records", type=int, default=5_000_000)
    parser.add_argument("--record-bytes", type=int, default=100)
    parser.add_argument("--tool", choices=["auto", "rdkafka", "python"], default="auto")
    parser.add_argument("--perf", metavar="DIR",
                        help="record a perf profile of the node per phase into DIR/<phase>.data")
    args = parser.parse_args()
    tool = find_tool(args.tool)
    topic = "efficiency"
    cluster = requests.get(f"{args.http}/v3/clusters", timeout=10).json()["data"][0]["cluster_id"]
    r = requests.post(f"{args.http}/v3/clusters/{cluster}/topics", timeout=10,
                      json={"topic_name": topic, "partitions_count": 1})
    r.raise_for_status()
    print(f"load: {tool or 'confluent-kafka (Python)'}; {args.records:,} records of "
          f"{args.record_bytes} B, acks=all, linger.ms=5, one partition")
    payload_bytes = args.records * args.record_bytes
    rows = []
    for phase in ("produce", "consume"):
        reset_peak(args.pid)
        profiler = None
        if args.perf:
            Path(args.perf).mkdir(parents=True, exist_ok=True)
            profiler = subprocess.Popen(["perf", "record", "-F", "499", "--call-graph", "dwarf,16384", "-p", str(args.pid),
                                         "-o", f"{args.perf}/{phase}.data"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        cpu0, t0 = cpu_seconds(args.pid), time.monotonic()
        if phase == "produce":
            produce(tool, args.bootstrap, topic, args.records, args.record_bytes)
        else:
            consume(tool, args.bootstrap, topic, args.records)
        seconds = time.monotonic() - t0
        cpu = cpu_seconds(args.pid) - cpu0
        peak = status_kib(args.pid, "VmHWM") / 1024
        if profiler:
            profiler.send_signal(2)
            profiler.wait(60)
        if phase == "produce":
            offsets = requests.get(f"{args.http}/v1/topics/{topic}/partitions/0/offsets", timeout=10).json()
            if offsets["high_watermark"] != args.records:
                raise SystemExit(f"high watermark {offsets['high_watermark']}, produced {args.records}")
        rows.append((phase, args.records / seconds, payload_bytes / seconds / 1e6, cpu,
                     cpu / (payload_bytes / 1e9), cpu / (payload_bytes / 2**30), peak))
    print(f"{'phase':<8} {'records/s':>12} {'MB/s':>8} {'CPU-s':>7} {'CPU-s/GB':>9} "
          f"{'CPU-s/GiB':>10} {'peak RSS MiB':>13}")
    for phase, rate, mbps, cpu, per_gb, per_gib, peak in rows:
        print(f"{phase:<8} {rate:>12,.0f} {mbps:>8.1f} {cpu:>7.2f} {per_gb:>9.2f} "
              f"{per_gib:>10.2f} {peak:>13.0f}")
    used = {k: v for k, v in scrape(f"{args.http}/metrics").items()
            if k.startswith("sluice_memory_")}
    for name, value in sorted(used.items()):
        print(f"{name} {value / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
