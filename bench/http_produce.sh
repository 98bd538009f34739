#!/usr/bin/env bash
# HTTP produce benchmark against etcd + an S3-compatible server (moto) on
# this machine: a release build of sluice with the default flush interval,
# then `sluice bench http-produce`, which prints the figures.
# Usage: bash bench/http_produce.sh [extra `bench http-produce` flags]
source "$(dirname "$0")/lib.sh"
start_cluster
./target/release/sluice bench http-produce --url "$HTTP_URL" "$@"
