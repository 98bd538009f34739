#!/usr/bin/env bash
# What security costs: the same librdkafka load (confluent-kafka) over
# PLAINTEXT and over SASL_SSL with SCRAM-SHA-512, on one release node with
# both listeners, against etcd + an S3-compatible server (moto) on this
# machine. Prints produce and consume MB/s, the node's CPU-seconds per GB,
# and the time a new client takes to connect (TCP, TLS, SASL) and get its
# first Metadata, for each listener and their ratio.
# Usage: bash bench/security.sh [--megabytes N] [--record-bytes N] [--partitions N]
#                               [--rounds N] [--connections N]
source "$(dirname "$0")/lib.sh"
start_backends
certs="$BENCH_WORK/certs"
read -r cert key ca < <(python3 - "$certs" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "tests/e2e")
from tls_certs import make_certs
c = make_certs(Path(sys.argv[1]))
print(c.server_cert, c.server_key, c.ca_cert)
PY
)
printf 'bench-secret\n' >"$BENCH_WORK/password"
./target/release/sluice user add bench --mechanism SCRAM-SHA-512 \
    --password-file "$BENCH_WORK/password" --etcd "$BENCH_ETCD" >/dev/null
plain_port=$(free_port); tls_port=$(free_port)
start_node node --http-addr "127.0.0.1:$(free_port)" \
    --listeners "PLAINTEXT://127.0.0.1:$plain_port,SASL_SSL://127.0.0.1:$tls_port" \
    --tls-cert-file "$cert" --tls-key-file "$key"
python3 bench/security_bench.py --plaintext "127.0.0.1:$plain_port" \
    --sasl-ssl "127.0.0.1:$tls_port" --ca "$ca" --user bench --password bench-secret \
    --pid "$NODE_PID" "$@"
