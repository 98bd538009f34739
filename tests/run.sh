#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine with Rust, Python 3
# and Node.js:
#
#     bash tests/run.sh
#
# 1. installs what is missing: gcc, g++, etcd-server, kcat, curl, npm,
#    podman and runc (apt), the Python test dependencies incl. moto[server],
#    confluent-kafka, kafka-python and the Arrow readers (pip), the kafkajs driver's node
#    modules (npm ci), rustfmt, clippy, cargo-nextest and cargo-fuzz;
#    nothing else: the build brings its own protoc (.cargo/protoc);
# 2. cargo fmt --check, clippy -D warnings, build, cargo nextest (unit and
#    integration tests; they start their own etcd), every fuzz target, the
#    chaos checker's unit tests, the offline checks of infra/ (Helm lint and
#    render, kubernetes-validate, checkov, Terraform; their tools go into
#    target/infra-venv; the container image built by podman from the debug
#    binary and run), then the end-to-end pytest suite in tests/e2e
#    (real `sluice` binary, real etcd, real S3 server).
#
# Environment knobs:
#   PYTHON=python3.11         interpreter for the e2e suite (default python3)
#   E2E_ARGS="-k restart -x"  extra pytest arguments
#   SKIP_INSTALL=1            do not try to install anything
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}

declare -a STEP_NAMES=() STEP_TIMES=()
CURRENT_STEP=""
STEP_START=0
SUITE_START=$SECONDS

begin() {
    CURRENT_STEP=$1
    STEP_START=$SECONDS
    printf '\n\033[1m==== %s\033[0m\n' "$1"
}

end() {
    local took=$((SECONDS - STEP_START))
    STEP_NAMES+=("$CURRENT_STEP")
    STEP_TIMES+=("$took")
    printf -- '---- %s: ok (%ss)\n' "$CURRENT_STEP" "$took"
    CURRENT_STEP=""
}

summary() {
    local rc=$?
    printf '\n==== summary\n'
    local i
    for i in "${!STEP_NAMES[@]}"; do
        printf '  ok    %5ss  %s\n' "${STEP_TIMES[$i]}" "${STEP_NAMES[$i]}"
    done
    if [[ -n $CURRENT_STEP ]]; then
        printf '  FAIL  %5ss  %s (exit %s)\n' "$((SECONDS - STEP_START))" "$CURRENT_STEP" "$rc"
    fi
    printf '  total %5ss  %s\n' "$((SECONDS - SUITE_START))" "$([[ $rc == 0 ]] && echo PASSED || echo FAILED)"
    # a full disk fails a build or a link far from its cause: say how full
    printf '  disk: %s free of %s here at the end (the suite needs about %s GB)\n' \
        "$(df -h --output=avail . | tail -n 1 | tr -d ' ')" \
        "$(df -h --output=size . | tail -n 1 | tr -d ' ')" "$DISK_GB_NEEDED"
    exit "$rc"
}
trap summary EXIT

# What a run from a fresh clone writes: the debug build and its test
# binaries, the fuzz builds, the infra checkers' virtualenv, the container
# image and the tests' scratch data (measured, see README "Testing").
DISK_GB_NEEDED=16
free_gb=$(($(df -k --output=avail . | tail -n 1) / 1024 / 1024))
echo "disk: ${free_gb} GB free here; a run from a fresh clone needs about ${DISK_GB_NEEDED} GB"
if ((free_gb < DISK_GB_NEEDED)); then
    echo "warning: less than ${DISK_GB_NEEDED} GB free; a build or link may fail with 'No space left on device'"
fi

externally_managed() {  # PEP 668: Debian's system python refuses `pip install`
    "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))' 2>/dev/null
}

as_root() {
    if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi
}

# ---------------------------------------------------------------------------
if [[ -z ${SKIP_INSTALL:-} ]]; then
    begin "install system packages"
    # Each package is checked by the file the build or the suite uses, never
    # by a neighbour. The build needs no protoc: .cargo/protoc runs the one
    # Cargo downloads (docs/decisions.md, "Build").
    pkgs=()
    need() {  # need FILE PACKAGE: FILE is a command on PATH, or an absolute path
        local file=$1 pkg=$2
        if [[ $file == /* ]]; then
            [[ -e $file ]] && return
        else
            command -v "$file" >/dev/null 2>&1 && return
        fi
        echo "missing $file: installing $pkg"
        pkgs+=("$pkg")
    }
    need cc gcc            # the C parts of -sys crates (zstd, lz4, ring)
    need c++ g++           # libFuzzer, built by cargo fuzz
    need etcd etcd-server  # the metadata store of the tests
    need kcat kcat         # librdkafka's command-line client (e2e, README quick start)
    need curl curl         # the README quick start (e2e test_readme)
    need npm npm           # installs kafkajs
    need podman podman     # builds and runs the container image (tests/infra)
    need runc runc         # the runtime podman runs it with (infra/image/build.sh)
    need /etc/ssl/certs/ca-certificates.crt ca-certificates  # the CA bundle the image carries
    # virtualenvs: the e2e dependencies on Debian's python (PEP 668), and
    # the infra checkers always (tests/infra/check.sh)
    if ! python3 -c 'import ensurepip' >/dev/null 2>&1 \
        || { externally_managed && ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; }; then
        pkgs+=(python3-venv)
    fi
    if ((${#pkgs[@]})); then
        echo "installing: ${pkgs[*]}"
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}"
    fi
    echo "cc: $(cc --version | head -1)"
    echo "c++: $(c++ --version | head -1)"
    echo "etcd: $(etcd --version 2>/dev/null | head -1)"
    echo "kcat: $(kcat -V 2>&1 | sed -n 's/^Version \([^ ]*\).*/\1/p')"
    echo "curl: $(curl --version | head -1)"
    echo "npm: $(npm --version)"
    echo "podman: $(podman --version)"
    echo "runc: $(runc --version | head -1)"
    end

    begin "install python test dependencies"
    if externally_managed; then
        venv="$ROOT/target/e2e-venv"
        [[ -x $venv/bin/python ]] || "$PYTHON" -m venv "$venv"
        PYTHON="$venv/bin/python"
        export PATH="$venv/bin:$PATH"
        echo "using virtualenv $venv"
    fi
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --disable-pip-version-check -q -r tests/requirements.txt
    "$PYTHON" -m pytest --version
    end

    begin "install node test dependencies (kafkajs, tests/e2e/js)"
    command -v node >/dev/null 2>&1 || { echo "node not found: the kafkajs tests need Node.js >= 18"; exit 1; }
    js=tests/e2e/js
    # npm ci wipes and reinstalls node_modules: only when it is missing or stale
    if [[ ! -f $js/node_modules/.package-lock.json || $js/package-lock.json -nt $js/node_modules/.package-lock.json ]]; then
        npm ci --prefix "$js" --no-audit --no-fund
    fi
    echo "node $(node --version), kafkajs $(node -p 'require("./'"$js"'/node_modules/kafkajs/package.json").version')"
    end

    begin "install rust tools (rustfmt, clippy, cargo-nextest)"
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        rustup component add rustfmt clippy
    fi
    if ! cargo nextest --version >/dev/null 2>&1; then
        cargo install cargo-nextest --locked
    fi
    cargo nextest --version | head -1
    if ! cargo fuzz --version >/dev/null 2>&1; then
        cargo install cargo-fuzz --locked
    fi
    cargo fuzz --version
    end
elif [[ -x $ROOT/target/e2e-venv/bin/python ]]; then
    PYTHON="$ROOT/target/e2e-venv/bin/python"
    export PATH="$ROOT/target/e2e-venv/bin:$PATH"
fi

# ---------------------------------------------------------------------------
begin "cargo fmt --all --check"
cargo fmt --all --check
end

begin "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
end

begin "cargo build --workspace --bins"
cargo build --workspace --bins
end

begin "cargo nextest run --workspace"
cargo nextest run --workspace
end

# cargo fuzz needs nightly-only flags; RUSTC_BOOTSTRAP lets the stable
# toolchain (the only one this machine has) accept them. No sanitizer: the
# targets check for panics and aborts; --dev keeps the build short.
begin "fuzz: every decoder of network and stored bytes, ${FUZZ_SECONDS:=10} s each"
for target in kafka_request segment_object produced_batches http_records consumer_protocol archive_row_group sasl_messages; do
    log="$ROOT/fuzz/fuzz-$target.log"
    status=0
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none --dev "$target" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=4096) >"$log" 2>&1 || status=$?
    grep -E "^Done [0-9]+ runs" "$log" | sed "s/^/$target: /" || true
    if [[ $status != 0 ]]; then
        # What the target said (the panic or libFuzzer's report), not
        # cargo-fuzz's own backtrace, and the input itself: a CI clone is
        # gone after the run, so the input must be in the log to be replayed.
        grep -n -m1 -A40 -E "panicked at|ERROR: libFuzzer|deadly signal" "$log" || tail -n 60 "$log"
        # last, so that a short excerpt of the log still holds them
        grep -m1 -A1 "panicked at" "$log" || true
        for input in fuzz/artifacts/"$target"/*; do
            [[ -f $input ]] || continue
            echo "crashing input $input, base64 (replay: base64 -d > x; cargo fuzz run $target x):"
            base64 -w 0 "$input" | head -c 8000
            echo
        done
        echo "fuzz target $target failed (exit $status); the crashing input is in fuzz/artifacts/$target/"
        exit 1
    fi
done
end

begin "the chaos checker's own tests: pytest tests/chaos"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/chaos/test_checker.py
end

begin "infra: Helm chart, Kubernetes schemas, checkov, Terraform, image (tests/infra/check.sh)"
bash tests/infra/check.sh
end

begin "e2e: pytest tests/e2e"
export SLUICE_BIN=${SLUICE_BIN:-$ROOT/target/debug/sluice}
# pytest exits 5 when it collected no tests: with `set -e` that fails the run too.
# shellcheck disable=SC2086
"$PYTHON" -m pytest tests/e2e ${E2E_ARGS:-}
end
