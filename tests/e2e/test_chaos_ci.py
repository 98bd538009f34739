"""The chaos campaign (tests/chaos) at CI size: three nodes on a 3-member
etcd, two minutes of every fault kind the nemesis has (kill -9, also of
the controller, the group coordinator and a compactor mid-job; pauses past
the node lease; etcd leader and member kills; object-store errors, slow
answers, stalls, resets and lost PUT answers; a node cut off from etcd or
from the store) under idempotent, plain and HTTP producers, a consumer
group, a standalone consumer and admin operations, then the independent
checker over the operation history and the final reads (Kafka, HTTP on
every node, the Parquet archive). Any violation fails the test; the
results table and the violation details are printed either way.

The campaign runs as its own process (tests/chaos/run) with its own etcd
and S3 server: its nodes are restarted from that process's main thread,
which they must not outlive.
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
    assert "RESULT: PASS" in table, table
