#!/usr/bin/env bash
# Kafka benchmark with librdkafka (confluent-kafka) against etcd + an
# S3-compatible server (moto) on this machine: produce 1 KiB records with
# acks=all and linger.ms=5 (MB/s, p50/p99 delivery latency), then consume
# them from the earliest offset (MB/s).
# Usage: bash bench/kafka.sh [--megabytes N] [--record-bytes N] [--partitions N] [--rate-mbps R]
source "$(dirname "$0")/lib.sh"
start_cluster
python3 bench/kafka_bench.py --bootstrap "$KAFKA_BOOTSTRAP" --metrics "$HTTP_URL/metrics" "$@"
