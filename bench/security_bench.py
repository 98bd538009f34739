"""The same Kafka load over PLAINTEXT and over SASL_SSL (SCRAM-SHA-512),
alternating, with the node's CPU time read from /proc: what TLS and SASL
cost in throughput, CPU and connection set-up. Started by
bench/security.sh, which brings up etcd, moto and a node with both
listeners first."""

from __future__ import annotations

import argparse
import os
import statistics
import time

from confluent_kafka import Producer

from kafka_bench import consume, create_topic, produce

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def connect_ms(conf: dict, connections: int) -> list[float]:
    """Milliseconds from a new client to its first Metadata answer, each of
    `connections` times on a connection of its own."""
    times = []
    for _ in range(connections):
        start = time.monotonic()
        client = Producer(conf)
        client.list_topics(timeout=10)
        times.append((time.monotonic() - start) * 1000)
        del client
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plaintext", required=True)
    parser.add_argument("--sasl-ssl", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--pid", type=int, required=True, help="the node's process")
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--record-bytes", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()

    confs = {
        "PLAINTEXT": {"bootstrap.servers": args.plaintext},
        "SASL_SSL": {"bootstrap.servers": args.sasl_ssl, "security.protocol": "SASL_SSL",
                     "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": args.user,
                     "sasl.password": args.password, "ssl.ca.location": args.ca},
    }
    count = args.megabytes * 1_000_000 // args.record_bytes
    gb = count * args.record_bytes / 1e9
    figures: dict[str, dict[str, list[float]]] = {
        name: {"produce": [], "consume": [], "produce_cpu": [], "consume_cpu": []}
        for name in confs}
    for _ in range(args.rounds):
        for name, conf in confs.items():
            topic = create_topic(conf, args.partitions)
            cpu = cpu_seconds(args.pid)
            seconds = produce(conf, topic, count, args.record_bytes)["seconds"]
            figures[name]["produce"].append(gb * 1000 / seconds)
            figures[name]["produce_cpu"].append((cpu_seconds(args.pid) - cpu) / gb)
            cpu = cpu_seconds(args.pid)
            seconds = consume(conf, topic, args.partitions, count)
            figures[name]["consume"].append(gb * 1000 / seconds)
            figures[name]["consume_cpu"].append((cpu_seconds(args.pid) - cpu) / gb)
    setup = {name: connect_ms(conf, args.connections) for name, conf in confs.items()}

    mean = statistics.mean
    print(f"{count} records of {args.record_bytes} B to {args.partitions} partitions, "
          f"acks=all, linger.ms=5, {args.rounds} rounds each, alternating; "
          f"connection set-up over {args.connections} new clients")
    print(f"{'listener':<10} {'produce MB/s':>13} {'CPU-s/GB':>9} {'consume MB/s':>13} "
          f"{'CPU-s/GB':>9} {'connect p50 ms':>15} {'p90 ms':>7}")
    for name in confs:
        f = figures[name]
        times = sorted(setup[name])
        print(f"{name:<10} {mean(f['produce']):>13.1f} {mean(f['produce_cpu']):>9.2f} "
              f"{mean(f['consume']):>13.1f} {mean(f['consume_cpu']):>9.2f} "
              f"{statistics.median(times):>15.1f} {times[int(0.9 * (len(times) - 1))]:>7.1f}")
    p, s = figures["PLAINTEXT"], figures["SASL_SSL"]
    print(f"SASL_SSL / PLAINTEXT: produce {mean(s['produce']) / mean(p['produce']):.2f}x, "
          f"consume {mean(s['consume']) / mean(p['consume']):.2f}x; node CPU per GB "
          f"produce {mean(s['produce_cpu']) / mean(p['produce_cpu']):.2f}x, "
          f"consume {mean(s['consume_cpu']) / mean(p['consume_cpu']):.2f}x; connection set-up "
          f"+{statistics.median(setup['SASL_SSL']) - statistics.median(setup['PLAINTEXT']):.1f} ms "
          f"(median)")


if __name__ == "__main__":
    main()
