"""The chaos campaign (tests/chaos) at CI size: three nodes, about two
minutes of kill -9 and SIGSTOP-beyond-the-lease faults under a seeded
workload of idempotent, plain and HTTP producers and a consumer group, then
the independent checker (tests/chaos/checker.py) over the operation history
and a final read over Kafka and HTTP. Any violation fails the test; the
results table and the violation details are printed either way.

The campaign runs as its own process (tests/chaos/run) with its own etcd and
S3 server: its nodes are restarted from that process's main thread, which
they must not outlive.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness import REPO_ROOT

MINUTES = 2
SEED = 11
NODES = 3


@pytest.mark.timeout(1500)
def test_chaos_campaign_finds_no_violation(sluice_bin, tmp_path):
    out = tmp_path / "chaos"
    cmd = [sys.executable, str(REPO_ROOT / "tests" / "chaos" / "run"),
           "--minutes", str(MINUTES), "--seed", str(SEED), "--nodes", str(NODES),
           "--out", str(out), "--binary", str(sluice_bin)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=1400, cwd=REPO_ROOT)
    results = out / "results.txt"
    table = results.read_text() if results.exists() else "(no results.txt)"
    print(table)
    assert proc.returncode == 0, (
        f"chaos campaign (seed {SEED}, {MINUTES} min, {NODES} nodes) exited with "
        f"{proc.returncode}; output kept in {out}\n{table}\n--- output tail ---\n"
        + "\n".join(proc.stdout.splitlines()[-60:]))
