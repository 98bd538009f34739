# Shared by the benchmark scripts: start etcd, an S3-compatible server (moto)
# and a release build of sluice on this machine, all on free ports, and stop
# them on exit. After `start_cluster`: $HTTP_URL, $KAFKA_BOOTSTRAP.
# `SLUICE_*` variables in the environment reach the node.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for tool in etcd moto_server python3; do
    command -v "$tool" >/dev/null || { echo "$tool missing: run tests/run.sh once (it installs it)"; exit 1; }
done

BENCH_WORK=$(mktemp -d)
BENCH_PIDS=()
bench_cleanup() {
    for pid in "${BENCH_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$BENCH_WORK"
}
trap bench_cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() {  # wait_for URL: up to 10 s
    for _ in $(seq 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done
    echo "not up: $1"; exit 1
}

start_cluster() {
    start_backends
    start_node node --http-addr "127.0.0.1:$(free_port)" --kafka-addr "127.0.0.1:$(free_port)"
    HTTP_URL=$NODE_URL
    HTTP_PID=$NODE_PID
    KAFKA_BOOTSTRAP=$(printf '%s\n' "${NODE_ARGS[@]}" | grep -A1 -x -- --kafka-addr | tail -1)
}

# start_backends: a release build of sluice, etcd and moto (with a bucket);
# sets $BENCH_ETCD and $BENCH_S3.
start_backends() {
    cargo build --release --bin sluice
    local etcd_port peer_port s3_port
    etcd_port=$(free_port); peer_port=$(free_port); s3_port=$(free_port)
    etcd --data-dir "$BENCH_WORK/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
        --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "default=http://127.0.0.1:$peer_port" >"$BENCH_WORK/etcd.log" 2>&1 &
    BENCH_PIDS+=($!)
    moto_server -H 127.0.0.1 -p "$s3_port" >"$BENCH_WORK/moto.log" 2>&1 &
    BENCH_PIDS+=($!)
    export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
    wait_for "http://127.0.0.1:$s3_port/"
    curl -sf -X PUT "http://127.0.0.1:$s3_port/bench" >/dev/null
    wait_for "http://127.0.0.1:$etcd_port/health"
    BENCH_ETCD="http://127.0.0.1:$etcd_port"
    BENCH_S3="http://127.0.0.1:$s3_port"
}

# start_node NAME [serve flags]: one more node of the same cluster (data in
# $BENCH_WORK/NAME, log in $BENCH_WORK/NAME.log); sets $NODE_URL, $NODE_PID
# and $NODE_ARGS (the flags it was given).
start_node() {
    local name=$1; shift
    local args=("$@")
    if [[ " ${args[*]} " != *" --http-addr "* ]]; then
        args+=(--http-addr "127.0.0.1:$(free_port)" --kafka-addr "127.0.0.1:$(free_port)")
    fi
    NODE_ARGS=("${args[@]}")
    ./target/release/sluice serve --data-dir "$BENCH_WORK/$name" --etcd "$BENCH_ETCD" \
        --store s3://bench/sluice --s3-endpoint "$BENCH_S3" "${args[@]}" \
        >"$BENCH_WORK/$name.log" 2>&1 &
    NODE_PID=$!
    BENCH_PIDS+=("$NODE_PID")
    local addr
    addr=$(printf '%s\n' "${args[@]}" | grep -A1 -x -- --http-addr | tail -1)
    NODE_URL="http://$addr"
    wait_for "$NODE_URL/health/ready"
}

rss_mib() {  # rss_mib PID: resident set size in MiB
    awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"
}
