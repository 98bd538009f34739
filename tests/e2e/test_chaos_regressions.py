"""Regression tests of violations the chaos campaign (tests/chaos) found,
each named after the fault and the seed that found it.

kill9 / seed 11: after a partition's leader moved, an idempotent producer's
next, gap-free batch reached a node whose metadata view had not yet applied
the previous batch's commit (made by another node); the node refused it
with OUT_OF_ORDER_SEQUENCE_NUMBER, which librdkafka takes as fatal. The
reproduction makes the lag deterministic (the second node is stopped while
the first acknowledges) and fails when any gap-free batch is refused.
"""

from __future__ import annotations

import subprocess
import sys

from harness import REPO_ROOT


def test_kill9_seed11_a_lagging_view_does_not_refuse_the_next_idempotent_batch(sluice_bin,
                                                                                 tmp_path):
    cmd = [sys.executable, str(REPO_ROOT / "tests" / "chaos" / "repro_sequence_lag.py"),
           "--binary", str(sluice_bin), "--rounds", "10", "--out", str(tmp_path / "seqlag")]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600, cwd=REPO_ROOT)
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "0 of 10 gap-free batches refused" in proc.stdout, proc.stdout[-3000:]
