#!/usr/bin/env bash
# Builds the sluice container image with podman, offline, and saves it as an
# OCI archive:
#   bash infra/image/build.sh [--binary PATH] [TAG]   # default tag: the crate version
# Output: target/image/sluice-TAG.oci.tar (load with `podman load -i`).
#
# Without --binary (production): builds the static release binary
#   RUSTFLAGS="-C target-feature=+crt-static" cargo build --release \
#     --target x86_64-unknown-linux-gnu --bin sluice
# and puts it alone on the empty base.
# With --binary PATH: uses an already-built binary. A static one goes in as
# is; a dynamically linked one (e.g. target/debug/sluice, what the infra
# checks use: a static release build takes ~20 min) goes in with exactly
# the shared libraries `ldd` reports, the dynamic loader included, at their
# absolute paths.
#
# Needs podman and runc (Debian: apt-get install podman runc), cargo without
# --binary, and a CA bundle at /etc/ssl/certs/ca-certificates.crt (Debian's
# ca-certificates). No base image is pulled: the image is FROM scratch.
# podman keeps its storage, state and configuration under
# target/image/podman/ (nothing in /var/lib/containers); to look at the
# built image afterwards:
#   CONTAINERS_CONF=target/image/podman/containers.conf \
#   CONTAINERS_STORAGE_CONF=target/image/podman/storage.conf podman images
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

usage() {
    echo "usage: bash infra/image/build.sh [--binary PATH] [TAG]" >&2
    exit 2
}

given_binary=""
tag=""
while (($#)); do
    case $1 in
    --binary) (($# >= 2)) || usage; given_binary=$2; shift 2 ;;
    --binary=*) given_binary=${1#--binary=}; shift ;;
    -h | --help) usage ;;
    -*) echo "build.sh: unknown option $1" >&2; usage ;;
    *) [[ -z $tag ]] || usage; tag=$1; shift ;;
    esac
done

target=x86_64-unknown-linux-gnu
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
tag=${tag:-$version}
image=localhost/sluice:$tag
out_dir=$root/target/image
podman_dir=$out_dir/podman
ca_bundle=/etc/ssl/certs/ca-certificates.crt

die() {
    echo "build.sh: $*" >&2
    exit 1
}

command -v podman >/dev/null || die "podman is not on PATH (apt-get install podman runc)"
command -v runc >/dev/null || die "runc is not on PATH (apt-get install runc)"
[[ -r $ca_bundle ]] || die "no CA bundle at $ca_bundle (apt-get install ca-certificates)"

# Static: ldd finds no shared library to load (glibc's ldd says "not a
# dynamic executable" for a static binary, "statically linked" for a static
# PIE).
is_static() {
    local out
    out=$(ldd "$1" 2>&1) && ! grep -qE 'statically linked|not a dynamic executable' <<<"$out" && return 1
    return 0
}

if [[ -z $given_binary ]]; then
    command -v cargo >/dev/null || die "cargo is not on PATH"
    # A static binary: it must run on an empty base image.
    RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --target "$target" --bin sluice
    binary=$root/target/$target/release/sluice
    if ! is_static "$binary"; then
        die "$binary is dynamically linked; the image has no libc"
    fi
    linkage=static
else
    binary=$(realpath -e -- "$given_binary") || die "--binary $given_binary: no such file"
    [[ -f $binary && -x $binary ]] || die "--binary $given_binary is not an executable file"
    [[ $(head -c 4 "$binary" | od -An -c | tr -d ' ') == '177ELF' ]] || die "--binary $given_binary is not an ELF file"
    if is_static "$binary"; then linkage=static; else linkage=dynamic; fi
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/sluice"
cp "$ca_bundle" "$context/ca-certificates.crt"
cp infra/image/Containerfile "$context/Containerfile"
# The empty /tmp and /var/lib/sluice, with their modes (see the Containerfile).
mkdir -p "$context/dirs/tmp" "$context/dirs/var/lib" "$context/data/sluice"
chmod 0755 "$context/dirs" "$context/dirs/var" "$context/dirs/var/lib" "$context/data"
chmod 1777 "$context/dirs/tmp"
chmod 0700 "$context/data/sluice"
# rootfs/ is copied to / by the Containerfile: empty for a static binary,
# the shared libraries and the loader for a dynamic one.
mkdir -m 0755 "$context/rootfs"

if [[ $linkage == static ]]; then
    echo "build.sh: $binary is statically linked: the image holds it alone (no shared libraries)"
else
    # ldd's lines: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`,
    # the loader as `/lib64/ld-linux-x86-64.so.2 (0x...)`, the kernel's
    # `linux-vdso.so.1 (0x...)` (no file), and `libx.so => not found`.
    libraries=()
    while read -r line; do
        case $line in
        *"=> not found"*) die "$binary needs a library ldd cannot find: $line" ;;
        /*" => /"*) # the loader, found elsewhere: keep the name it is asked by too
            path=${line%% =>*}
            libraries+=("$path")
            path=${line#*=> }; path=${path%% (*} ;;
        *"=> /"*) path=${line#*=> }; path=${path%% (*} ;;
        /*) path=${line%% (*} ;;
        *) continue ;;
        esac
        libraries+=("$path")
    done < <(ldd "$binary")
    ((${#libraries[@]})) || die "ldd reports no library for the dynamically linked $binary"
    for path in "${libraries[@]}"; do
        # At the path the binary and the loader look for, as a regular file
        # (/lib64/ld-linux-x86-64.so.2 is a symlink on Debian).
        mkdir -p "$context/rootfs$(dirname "$path")"
        cp -L "$path" "$context/rootfs$path"
    done
    chmod -R u=rwX,go=rX "$context/rootfs"
    echo "build.sh: $binary is dynamically linked: the image carries the ${#libraries[@]} files ldd reports:"
    printf '  %s\n' "${libraries[@]}"
fi

# podman settings that work on this machine kind: runc under cgroupfs and
# ulimits that an unprivileged container may have. Storage (overlay),
# run state and libpod's temporary files stay under target/image/podman.
mkdir -p "$podman_dir"
cat >"$podman_dir/containers.conf" <<CONF
[containers]
default_ulimits=["nofile=1024:1024","nproc=1024:1024"]
[engine]
runtime="runc"
cgroup_manager="cgroupfs"
events_logger="file"
tmp_dir="$podman_dir/tmp"
image_copy_tmp_dir="$podman_dir/tmp"
[network]
network_config_dir="$podman_dir/network"
CONF
cat >"$podman_dir/storage.conf" <<CONF
[storage]
driver="overlay"
graphroot="$podman_dir/storage"
runroot="$podman_dir/run"
CONF
export CONTAINERS_CONF=$podman_dir/containers.conf
export CONTAINERS_STORAGE_CONF=$podman_dir/storage.conf
mkdir -p "$podman_dir/tmp" "$podman_dir/network"
export TMPDIR=$podman_dir/tmp

# No intermediate images (--layers=false): a step's cache would only keep
# old binaries' layers in target/image/podman.
podman build --network=none --runtime runc --layers=false \
    --file "$context/Containerfile" --tag "$image" "$context"

# The image must start and answer: the entrypoint runs and prints its version.
podman run --rm --network=none --runtime runc "$image" --version

mkdir -p "$out_dir"
archive=$out_dir/sluice-$tag.oci.tar
rm -f "$archive"
podman save --format oci-archive --output "$archive" "$image"
# The image this tag named before, if any, is dangling now: drop it.
podman image prune --force >/dev/null
echo "build.sh: saved $image ($linkage binary) to $archive"
