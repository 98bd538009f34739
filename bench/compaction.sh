#!/usr/bin/env bash
# Compaction benchmark against etcd + an S3-compatible server (moto) on this
# machine: produce JSON-ish records at a steady rate for a while, and report
# compaction throughput (MB/s of segments per core), Parquet size against
# segment size, archive freshness (p50/p99 seconds from acknowledgement to
# visible in a published Parquet file) and offset-index entries (etcd keys)
# per partition over time.
# Usage: bash bench/compaction.sh [--seconds N] [--rate-mbps R] [--record-bytes N] [--partitions N]
# The node runs with the defaults (archive.max.lag 60 s) unless SLUICE_* says otherwise.
source "$(dirname "$0")/lib.sh"
start_cluster
python3 bench/compaction_bench.py --bootstrap "$KAFKA_BOOTSTRAP" --url "$HTTP_URL" \
    --log "$BENCH_WORK/node.log" "$@"
