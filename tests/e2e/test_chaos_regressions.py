"""Regression tests of violations the chaos campaign (tests/chaos) found,
each named after the fault and the seed that found it.

kill9 / seed 11: after a partition's leader moved, an idempotent producer's
next, gap-free batch reached a node whose metadata view had not yet applied
the previous batch's commit (made by another node); the node refused it
with OUT_OF_ORDER_SEQUENCE_NUMBER, which librdkafka takes as fatal. The
reproduction makes the lag deterministic (the second node is stopped while
the first acknowledges) and fails when any gap-free batch is refused.

kill9 / seed 21: two nodes committed to one partition back to back; the
second node applied its own commit to its metadata view before the watch
brought the first node's, so for a moment its index had a hole below the
high watermark, and a consumer fetching at the hole was handed the batch
after it (it read 4387, then 4390). The reproduction has both nodes take
HTTP produces for one partition while a consumer tails it, and fails when
any offset is skipped. (Also in the campaign's duplicates of that seed:
librdkafka's own epoch bump after an in-flight timeout, counted apart by
the checker; see tests/chaos/README.md.)

kill9 / seed 21 (second finding): a node that had just restarted answered
fetches just past its view's high watermark with OFFSET_OUT_OF_RANGE
while the watch was still bringing the last commits of other nodes;
librdkafka reset the group's members to offset 0 and they read everything
again (commits went backwards). The reproduction stops the fetching node
while another acknowledges, as for seed 11.

cut_store / seed 11: while a node could not reach the object store,
librdkafka (3 s message timeout) abandoned its requests and bumped its
epoch again and again, re-sending the same messages; the node held every
epoch's batches and committed them all once the store came back (records
stored three times). A batch of a newer epoch now fences the older-epoch
batches of its producer and partition still in flight on the node. The
reproduction stalls one node's store proxy for 6 s under such a producer.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness import REPO_ROOT


# (test id: fault, seed, what must hold), reproduction script, its
# arguments, what its last line says when the bug is gone
REGRESSIONS = [
    ("kill9_seed11_a_lagging_view_does_not_refuse_the_next_idempotent_batch",
     "repro_sequence_lag.py", ["--rounds", "10"], "0 of 10 gap-free batches refused"),
    ("kill9_seed21_a_consumer_is_never_handed_past_offsets_its_node_has_not_seen",
     "repro_hole_read.py", ["--seconds", "15"], " 0 offset skips"),
    ("kill9_seed21_a_fetch_past_a_lagging_view_is_not_out_of_range",
     "repro_fetch_lag.py", ["--rounds", "8"],
     "0 of 8 fetches inside the log answered OFFSET_OUT_OF_RANGE"),
    ("cut_store_seed11_an_abandoned_producer_epoch_is_not_committed",
     "repro_store_stall_epoch.py", [], " 0 three times or more, 0 acknowledged but lost"),
]


@pytest.mark.parametrize("script, args, fixed", [r[1:] for r in REGRESSIONS],
                         ids=[r[0] for r in REGRESSIONS])
def test_chaos_regression(sluice_bin, tmp_path, script, args, fixed):
    cmd = [sys.executable, str(REPO_ROOT / "tests" / "chaos" / script),
           "--binary", str(sluice_bin), "--out", str(tmp_path / "out"), *args]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600, cwd=REPO_ROOT)
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert fixed in proc.stdout, proc.stdout[-3000:]
