#!/usr/bin/env bash
# HTTP produce benchmark against etcd + an S3-compatible server (moto) on
# this machine: starts both, a release build of sluice with the default
# flush interval, then runs `sluice bench http-produce` and prints figures.
# Usage: bash bench/http_produce.sh [extra `bench http-produce` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v etcd >/dev/null || { echo "etcd missing: run tests/run.sh once (it installs it)"; exit 1; }
command -v moto_server >/dev/null || { echo "moto_server missing: run tests/run.sh once (it installs it)"; exit 1; }
cargo build --release --bin sluice
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
etcd_port=$(free_port); peer_port=$(free_port); s3_port=$(free_port); http_port=$(free_port)
etcd --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "default=http://127.0.0.1:$peer_port" >"$work/etcd.log" 2>&1 &
pids+=($!)
moto_server -H 127.0.0.1 -p "$s3_port" >"$work/moto.log" 2>&1 &
pids+=($!)
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$s3_port/" >/dev/null && break; sleep 0.1; done
curl -sf -X PUT "http://127.0.0.1:$s3_port/bench" >/dev/null
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$etcd_port/health" >/dev/null && break; sleep 0.1; done
./target/release/sluice serve --data-dir "$work/node" --etcd "http://127.0.0.1:$etcd_port" \
  --store s3://bench/sluice --s3-endpoint "http://127.0.0.1:$s3_port" \
  --http-addr "127.0.0.1:$http_port" >"$work/sluice.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$http_port/health/ready" >/dev/null && break; sleep 0.1; done
./target/release/sluice bench http-produce --url "http://127.0.0.1:$http_port" "$@"
