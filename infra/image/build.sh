#!/usr/bin/env bash
# Builds the sluice container image with podman, offline, and saves it as an
# OCI archive:
#   bash infra/image/build.sh [TAG]          # default tag: the crate version
# Output: target/image/sluice-TAG.oci.tar (load with `podman load -i`).
#
# Needs cargo, podman (with runc) and a CA bundle at
# /etc/ssl/certs/ca-certificates.crt (Debian's ca-certificates). No base
# image is pulled: the image is FROM scratch.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

target=x86_64-unknown-linux-gnu
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
tag=${1:-$version}
image=localhost/sluice:$tag
out_dir=$root/target/image
ca_bundle=/etc/ssl/certs/ca-certificates.crt

die() {
    echo "build.sh: $*" >&2
    exit 1
}

command -v cargo >/dev/null || die "cargo is not on PATH"
command -v podman >/dev/null || die "podman is not on PATH (apt-get install podman runc)"
[[ -r $ca_bundle ]] || die "no CA bundle at $ca_bundle (apt-get install ca-certificates)"

# A static binary: it must run on an empty base image.
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --target "$target" --bin sluice
binary=$root/target/$target/release/sluice
if ldd "$binary" 2>&1 | grep -q '=>'; then
    die "$binary is dynamically linked; the image has no libc"
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/sluice"
cp "$ca_bundle" "$context/ca-certificates.crt"
cp infra/image/Containerfile "$context/Containerfile"
mkdir "$context/data" "$context/tmp"

# podman settings that work on this machine kind: runc under cgroupfs and
# ulimits that an unprivileged container may have.
cat >"$context/containers.conf" <<'CONF'
[containers]
default_ulimits=["nofile=1024:1024","nproc=1024:1024"]
[engine]
runtime="runc"
cgroup_manager="cgroupfs"
CONF
export CONTAINERS_CONF=$context/containers.conf

podman build --network=none --file "$context/Containerfile" --tag "$image" "$context"

# The image must start and answer: the entrypoint runs and prints its version.
podman run --rm --network=none "$image" --version

mkdir -p "$out_dir"
archive=$out_dir/sluice-$tag.oci.tar
rm -f "$archive"
podman save --format oci-archive --output "$archive" "$image"
echo "build.sh: saved $image to $archive"
