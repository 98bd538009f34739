#!/usr/bin/env bash
# Builds librdkafka's C load tool, rdkafka_performance, into
# target/tools/rdkafka_performance, for bench/efficiency.sh. librdkafka's
# source comes from the npm registry (the node-rdkafka package carries it,
# examples included); it is built static with no TLS or SASL, so it needs
# only gcc, make and zlib's headers. Nothing of it is kept in the repo.
# Usage: bash bench/rdkafka_performance.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=target/tools/rdkafka_performance
if [[ -x $out ]]; then echo "$out is there"; exit 0; fi
for tool in npm gcc make; do
    command -v "$tool" >/dev/null || { echo "$tool missing"; exit 1; }
done
[[ -f /usr/include/zlib.h ]] || { echo "zlib.h missing: apt-get install zlib1g-dev"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent node-rdkafka@2.18.0 >/dev/null && tar xzf node-rdkafka-2.18.0.tgz)
src=$work/package/deps/librdkafka
chmod +x "$src/configure"
(cd "$src" && ./configure --disable-ssl --disable-gssapi --disable-sasl --disable-zstd \
    --disable-lz4-ext --disable-curl >"$work/configure.log" 2>&1 \
    && make -j"$(nproc)" libs >"$work/make.log" 2>&1 \
    && make -C examples rdkafka_performance >"$work/examples.log" 2>&1) \
    || { tail -20 "$work"/*.log; exit 1; }
mkdir -p target/tools
cp "$src/examples/rdkafka_performance" "$out"
"$out" -h 2>&1 | grep -m1 "librdkafka version"
echo "built $out"
