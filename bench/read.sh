#!/usr/bin/env bash
# Read benchmark against etcd + an S3-compatible server (moto) on this
# machine: node A fills a topic with BENCH_READ_MB (default 1024) MB of 1 KiB
# records through `sluice bench http-produce`; then node B, which has not
# seen the data (empty cache, peer fetch off, so every block comes from the
# object store), reads the whole topic from offset 0 cold, then again warm,
# then with 5 readers warm, each with `sluice bench read`. Prints each run's
# figures and node B's RSS (VmRSS) after it.
# Usage: bash bench/read.sh [extra `bench read` flags]
source "$(dirname "$0")/lib.sh"
EXTRA=("$@")
MB=${BENCH_READ_MB:-1024}
start_cluster
echo "== fill: $MB MB through node A"
./target/release/sluice bench http-produce --url "$HTTP_URL" --topic read --clients 32 \
    --megabytes "$MB" | sed 's/^/  /'
start_node reader --peer-fetch false
B_URL=$NODE_URL B_PID=$NODE_PID
echo "== node B: memory cache ${SLUICE_CACHE_MEMORY_BYTES:-268435456} B, RSS before reading $(rss_mib "$B_PID") MiB"
for run in "cold 1" "warm 1" "warm 5"; do
    set -- $run
    echo "== $1, $2 reader(s)"
    ./target/release/sluice bench read --url "$B_URL" --topic read --readers "$2" ${EXTRA[@]+"${EXTRA[@]}"} | sed 's/^/  /'
    echo "  node B RSS: $(rss_mib "$B_PID") MiB"
done
