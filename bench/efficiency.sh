#!/usr/bin/env bash
# Efficiency benchmark: one node on etcd + an S3-compatible server (moto),
# one partition, 100 B records, acks=all, linger 5 ms. Produces, then
# consumes from the beginning, and prints for each phase: records/s, MB/s,
# the node's CPU-seconds (from /proc/<pid>/stat) per GB and per GiB of
# record values, and its peak RSS (VmHWM, reset before each phase).
# The load comes from librdkafka's C tool rdkafka_performance when it is
# found ($RDKAFKA_PERFORMANCE, target/tools/ — `bash bench/rdkafka_performance.sh`
# builds it — or PATH), else from the Python client (confluent-kafka).
# Usage: bash bench/efficiency.sh [--records N] [--record-bytes N] [--tool rdkafka|python]
# Node flags go through SLUICE_* variables, e.g. SLUICE_MEMORY_MAX=512MiB.
source "$(dirname "$0")/lib.sh"
start_cluster
python3 bench/efficiency.py --bootstrap "$KAFKA_BOOTSTRAP" --http "$HTTP_URL" --pid "$HTTP_PID" "$@"
