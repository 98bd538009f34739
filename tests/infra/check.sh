#!/usr/bin/env bash
# Offline checks of the deployment files under infra/: the Helm chart (lint,
# render, Kubernetes schemas, policy), the Terraform (checkov, structure,
# format), the Grafana dashboard and the image (built by podman from
# target/debug/sluice, then run). Run from anywhere:
#   bash tests/infra/check.sh
# Needs python3 with venv (Debian: python3 python3-venv), PyPI, podman and
# runc (Debian: podman runc; the image check fails without them) and a
# built target/debug/sluice. The tools go into target/infra-venv,
# reinstalled only when the requirements change.
# Ends with `N passed, M failed`; exits non-zero on any failure.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
VENV=$ROOT/target/infra-venv
HCL2_DIR=$VENV/python-hcl2
STAMP=$VENV/.requirements.sha256
REQUIREMENTS=(tests/infra/requirements.txt tests/infra/requirements-hcl2.txt)

die() {
    echo "check.sh: $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

command -v python3 >/dev/null || die "python3 is not on PATH (Debian: apt-get install python3 python3-venv)"

if [[ -x $VENV/bin/python ]] && ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    echo "check.sh: $VENV is broken (its python does not start); making it anew"
    rm -rf "$VENV"
fi
if [[ ! -x $VENV/bin/python ]]; then
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
fi

# The stamp: the requirement files and the venv's interpreter.
want=$( { cat "${REQUIREMENTS[@]}"; "$VENV/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
if [[ ! -f $STAMP || $(cat "$STAMP") != "$want" ]]; then
    echo "check.sh: installing ${REQUIREMENTS[*]} into $VENV"
    rm -f "$STAMP"
    pip=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check --no-input)
    "${pip[@]}" install -r tests/infra/requirements.txt ||
        die "pip install -r tests/infra/requirements.txt failed"
    # python-hcl2 apart: checkov's bc-python-hcl2 installs the same package.
    rm -rf "$HCL2_DIR"
    "${pip[@]}" install --target "$HCL2_DIR" -r tests/infra/requirements-hcl2.txt ||
        die "pip install --target $HCL2_DIR -r tests/infra/requirements-hcl2.txt failed"
    echo "$want" >"$STAMP"
fi

exec "$VENV/bin/python" tests/infra/checks.py --hcl2-dir "$HCL2_DIR"
