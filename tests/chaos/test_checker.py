"""Unit tests of the chaos checker: hand-made histories and final reads, one
per violation kind, plus the histories it must accept.

    python3 -m pytest tests/chaos/test_checker.py
"""

from __future__ import annotations

import copy
import itertools

import pytest

from checker import KINDS, check, faults_near, format_table, ranges

T = "t"
_clock = itertools.count(1)


def tick() -> float:
    return float(next(_clock))


def send(value, partition=0, outcome="ok", offset=None, *, topic=T, process=None,
         idempotent=True, dup_allowed=None, ack_partition=None, start=None, end=None):
    s = tick() if start is None else start
    op = {"process": process or value.rsplit("-", 1)[0], "kind": "send", "client": "kafka",
          "idempotent": idempotent,
          "dup_allowed": (not idempotent) if dup_allowed is None else dup_allowed,
          "topic": topic, "partition": partition, "value": value, "start": s,
          "end": s + 0.5 if end is None else end, "outcome": outcome}
    if outcome == "ok":
        op["ack_partition"] = partition if ack_partition is None else ack_partition
        op["offset"] = offset
    else:
        op["error"] = "_MSG_TIMED_OUT"
    return op


def commit(offset, partition=0, outcome="ok", *, start, end, process="c0", topic=T, group="g"):
    return {"process": process, "kind": "commit", "group": group, "topic": topic,
            "partition": partition, "offset": offset, "start": start, "end": end,
            "outcome": outcome}


def consume(offset, value, partition=0, *, process="c0", topic=T, group="g", at=None):
    return {"process": process, "kind": "consume", "group": group, "topic": topic,
            "partition": partition, "offset": offset, "value": value,
            "start": tick() if at is None else at, "outcome": "ok"}


def resume(committed, first, hw, partition=0, *, topic=T, group="g", outcome="ok", error=None):
    op = {"process": "resume", "kind": "resume", "group": group, "topic": topic,
          "partition": partition, "committed": committed, "first_offset": first, "hw": hw,
          "start": 1000.0, "end": 1001.0, "outcome": outcome}
    if error:
        op["error"] = error
    return op


def final(logs: dict[int, list], *, topic=T, log_start=0, hw=None, http_nodes=("n1", "n2")):
    """logs: partition -> list of values (offset = index) or of (offset, value)."""
    kafka = {}
    for p, values in logs.items():
        recs = [list(v) if isinstance(v, tuple) else [i, v] for i, v in enumerate(values)]
        h = hw if hw is not None else (max((o for o, _ in recs), default=-1) + 1)
        kafka[f"{topic}/{p}"] = {"log_start": log_start, "hw": h, "records": recs, "error": None}
    return {"kafka": kafka, "http": {n: copy.deepcopy(kafka) for n in http_nodes}}


def kinds(result) -> set[str]:
    return {v.kind for v in result.violations}


def only(result, kind: str) -> None:
    assert kinds(result) == {kind}, [f"{v.kind}: {v.message}" for v in result.violations]


# --------------------------------------------------------------------------
# histories that must pass

def clean_history():
    h = [
        send("a-000000", 0, offset=0),
        send("a-000001", 0, offset=1),
        send("b-000000", 1, offset=0),
        send("b-000001", 1, "info"),                       # indeterminate, absent
        send("b-000002", 1, "info"),                       # indeterminate, present once
        send("p-000000", 0, offset=2, idempotent=False),   # plain producer, stored twice: allowed
        send("h-000000", 1, "fail", process="http0", idempotent=False, dup_allowed=False),
    ]
    h += [consume(0, "a-000000", at=10), consume(1, "a-000001", at=10.1),
          commit(2, start=11, end=12),
          consume(1, "a-000001", process="c1", at=12.5),   # redelivered after a rebalance
          consume(2, "p-000000", process="c1", at=13),
          commit(3, process="c1", start=14, end=15),
          commit(2, process="c0", start=14.5, end=14.9, outcome="fail"),  # refused, lower: fine
          consume(0, "b-000000", 1, at=16), commit(1, 1, start=17, end=18),
          resume(3, 3, 5), resume(1, 1, 2, partition=1)]
    f = final({0: ["a-000000", "a-000001", "p-000000", "p-000000", "tail-0"],
               1: ["b-000000", "b-000002"]})
    h.append(send("tail-0", 0, offset=4))
    return h, f


def test_clean_history_passes():
    h, f = clean_history()
    r = check(h, f)
    assert r.ok, [f"{v.kind}: {v.message}" for v in r.violations]
    rec = r.stats["records"]
    assert rec["acked"] == 5 and rec["lost"] == 0 and rec["duplicated"] == 0
    assert rec["duplicated_allowed"] == 1 and rec["info_present"] == 1 and rec["info_absent"] == 1
    assert rec["fail_absent"] == 1
    assert r.stats["group"]["resume_ok"] == 2
    assert all(row["dense"] for row in r.stats["partitions"])
    assert "PASS" in format_table(r)


def test_overlapping_commits_are_not_ordered():
    # c1's commit of 5 overlaps c0's commit of 7 in time: either may land last.
    h = [send(f"a-{i:06d}", 0, offset=i) for i in range(8)]
    h += [consume(i, f"a-{i:06d}") for i in range(8)]
    h += [commit(7, start=20, end=22, process="c0"), commit(5, start=21, end=23, process="c1")]
    h += [resume(5, 5, 8)]
    r = check(h, final({0: [f"a-{i:06d}" for i in range(8)]}))
    assert r.ok, [v.message for v in r.violations]


def test_resume_may_land_on_an_indeterminate_commit():
    h = [send(f"a-{i:06d}", 0, offset=i) for i in range(4)]
    h += [consume(i, f"a-{i:06d}") for i in range(4)]
    h += [commit(2, start=20, end=21), commit(4, start=22, end=30, outcome="info"),
          resume(4, None, 4)]
    assert check(h, final({0: [f"a-{i:06d}" for i in range(4)]})).ok


# --------------------------------------------------------------------------
# each violation kind

def test_lost_acknowledged_record():
    h = [send("a-000000", 0, offset=0), send("a-000001", 0, offset=1)]
    r = check(h, final({0: ["a-000000"]}))
    only(r, "lost")
    v = r.violations[0]
    assert v.detail["value"] == "a-000001" and v.detail["offset"] == 1
    assert r.stats["records"]["lost"] == 1


def test_lost_when_its_offset_holds_another_record():
    h = [send("a-000000", 0, offset=0), send("b-000000", 0, "info")]
    r = check(h, final({0: ["b-000000"]}))
    only(r, "lost")
    assert r.violations[0].detail["holds"] == "b-000000"


def test_moved_record():
    h = [send("a-000000", 0, offset=0), send("a-000001", 0, offset=1), send("x-000000", 0, "info")]
    r = check(h, final({0: ["a-000000", "x-000000", "a-000001"]}))
    only(r, "moved")
    assert r.violations[0].detail["stored"] == [[T, 0, 2]]


def test_ack_conflict():
    h = [send("a-000000", 0, offset=0), send("b-000000", 0, offset=0)]
    r = check(h, final({0: ["a-000000", "b-000000"]}))
    assert "ack_conflict" in kinds(r)


def test_acknowledged_on_another_partition():
    h = [send("a-000000", 0, offset=0, ack_partition=1)]
    r = check(h, final({0: [], 1: ["a-000000"]}))
    assert "ack_wrong_partition" in kinds(r) and "misplaced" in kinds(r)


def test_misplaced_record():
    h = [send("a-000000", 0, "info")]
    only(check(h, final({0: [], 1: ["a-000000"]})), "misplaced")


def test_unexpected_record():
    h = [send("a-000000", 0, offset=0)]
    r = check(h, final({0: ["a-000000", "zz-999999"]}))
    only(r, "unexpected")
    assert r.stats["records"]["unexpected"] == 1


@pytest.mark.parametrize("outcome", ["ok", "info", "fail"])
def test_duplicate_of_idempotent_producer(outcome):
    h = [send("a-000000", 0, outcome, offset=0 if outcome == "ok" else None)]
    r = check(h, final({0: ["a-000000", "a-000000"]}))
    only(r, "duplicate")
    assert r.stats["records"]["duplicated"] == 1


def bump(at, reason, process="a"):
    return {"process": process, "kind": "epoch_bump", "start": at, "end": at, "outcome": "ok",
            "producer_id": 1, "epoch": 2, "reason": reason}


def test_duplicate_across_a_timeout_epoch_bump_in_flight_is_counted_apart():
    # librdkafka abandons a request whose message timed out in flight, bumps
    # the epoch and sends the request's other messages again: Kafka stores
    # them twice too when the abandoned request landed after all.
    h = [send("a-000000", 0, offset=1, start=10.0, end=13.0),
         bump(12.0, "1 message(s) timed out on t [0]")]
    r = check(h, final({0: ["a-000000", "a-000000"]}))
    assert r.ok, [v.message for v in r.violations]
    assert r.stats["records"]["duplicated_epoch_bump"] == 1
    assert r.stats["records"]["duplicated"] == 0


def test_each_timeout_bump_in_flight_excuses_one_more_copy():
    h = [send("a-000000", 0, offset=1, start=10.0, end=13.0),
         bump(11.0, "2 message(s) timed out on t [0]"),
         bump(12.0, "skipped sequence numbers; 1 message(s) timed out on t [1]")]
    r = check(h, final({0: ["a-000000"] * 3}))
    assert r.ok, [v.message for v in r.violations]
    assert r.stats["records"]["duplicated_epoch_bump"] == 1


@pytest.mark.parametrize("why", ["bump for another reason", "bump outside the send",
                                 "bump of another producer", "stored three times"])
def test_duplicate_of_idempotent_producer_not_excused_by_the_bump(why):
    h = [send("a-000000", 0, offset=1, start=10.0, end=13.0)]
    h.append({"bump for another reason": bump(12.0, "skipped sequence numbers"),
              "bump outside the send": bump(14.0, "1 message(s) timed out on t [0]"),
              "bump of another producer": bump(12.0, "1 message(s) timed out", process="b"),
              "stored three times": bump(12.0, "2 message(s) timed out")}[why])
    copies = 3 if why == "stored three times" else 2
    r = check(h, final({0: ["a-000000"] * copies}))
    only(r, "duplicate")


def test_duplicate_of_http_producer_that_never_retries():
    h = [send("h-000000", 0, "info", process="http0", idempotent=False, dup_allowed=False)]
    only(check(h, final({0: ["h-000000", "h-000000"]})), "duplicate")


def test_duplicate_of_retrying_plain_producer_is_allowed_but_counted():
    h = [send("p-000000", 0, offset=1, idempotent=False)]
    r = check(h, final({0: ["p-000000", "p-000000"]}))
    assert r.ok and r.stats["records"]["duplicated_allowed"] == 1


def test_plain_producer_duplicate_still_needs_its_acknowledged_copy():
    h = [send("p-000000", 0, offset=5, idempotent=False)]
    only(check(h, final({0: ["p-000000", "p-000000"]})), "moved")


def test_log_start_moved():
    h = [send("a-000001", 0, offset=1)]
    r = check(h, final({0: [(1, "a-000001")]}, log_start=1))
    assert kinds(r) == {"log_start_moved", "offset_gap"}


def test_offset_gap():
    h = [send("a-000000", 0, offset=0), send("a-000002", 0, offset=2)]
    r = check(h, final({0: [(0, "a-000000"), (2, "a-000002")]}))
    only(r, "offset_gap")
    assert r.violations[0].detail["missing"] == [1]
    assert not r.stats["partitions"][0]["dense"]


def test_gap_at_the_end_below_hw():
    h = [send("a-000000", 0, offset=0)]
    only(check(h, final({0: ["a-000000"]}, hw=3)), "offset_gap")


def test_offset_read_twice():
    h = [send("a-000000", 0, offset=0), send("a-000001", 0, offset=1)]
    r = check(h, final({0: [(0, "a-000000"), (1, "a-000001"), (1, "a-000001")]}))
    assert "offset_repeat" in kinds(r)


def test_http_read_disagrees_with_kafka():
    h = [send("a-000000", 0, offset=0), send("a-000001", 0, offset=1)]
    f = final({0: ["a-000000", "a-000001"]})
    f["http"]["n2"]["t/0"]["records"][1][1] = "a-000000"
    r = check(h, f)
    only(r, "read_mismatch")
    assert r.violations[0].detail["node"] == "n2"


def test_http_high_watermark_disagrees():
    h = [send("a-000000", 0, offset=0)]
    f = final({0: ["a-000000"]})
    f["http"]["n1"]["t/0"].update(hw=0, records=[])
    only(check(h, f), "read_mismatch")


@pytest.mark.parametrize("where", ["kafka", "http"])
def test_incomplete_final_read(where):
    h = [send("a-000000", 0, offset=0)]
    f = final({0: ["a-000000"]})
    if where == "kafka":
        for part in [f["kafka"]] + list(f["http"].values()):
            part["t/0"]["error"] = "no end of partition within 180s"
    else:
        f["http"]["n1"]["t/0"]["error"] = "ConnectionError"
    assert "final_read_incomplete" in kinds(check(h, f))


def test_consumed_record_not_in_final_log():
    h = [send("a-000000", 0, offset=0), send("a-000001", 0, "info"),
         consume(0, "a-000000"), consume(1, "a-000001")]
    r = check(h, final({0: ["a-000000"]}))
    only(r, "consumed_not_in_log")


def test_commit_goes_backwards():
    h = [send(f"a-{i:06d}", 0, offset=i) for i in range(6)]
    h += [consume(i, f"a-{i:06d}") for i in range(6)]
    h += [commit(6, start=20, end=21, process="c0"), commit(3, start=22, end=23, process="c1")]
    r = check(h, final({0: [f"a-{i:06d}" for i in range(6)]}))
    only(r, "commit_backwards")
    assert r.violations[0].detail["offset"] == 3 and r.violations[0].detail["earlier"] == 6


def test_failed_commit_going_backwards_is_not_a_violation():
    h = [send(f"a-{i:06d}", 0, offset=i) for i in range(6)]
    h += [consume(i, f"a-{i:06d}") for i in range(6)]
    h += [commit(6, start=20, end=21), commit(3, start=22, end=23, outcome="fail")]
    assert check(h, final({0: [f"a-{i:06d}" for i in range(6)]})).ok


def test_consumer_skip():
    h = [send(f"a-{i:06d}", 0, offset=i) for i in range(6)]
    h += [consume(i, f"a-{i:06d}") for i in (0, 1, 2, 4, 5)]
    h += [commit(6, start=20, end=21)]
    r = check(h, final({0: [f"a-{i:06d}" for i in range(6)]}))
    only(r, "consumer_skip")
    assert r.violations[0].detail["skipped"] == [3]


def test_consumer_skip_respects_group_start():
    h = [send(f"a-{i:06d}", 0, offset=i) for i in range(6)]
    h += [{"process": "setup", "kind": "group_start", "group": "g", "topic": T, "partition": 0,
           "offset": 4, "start": 0.0, "outcome": "ok"}]
    h += [consume(i, f"a-{i:06d}") for i in (4, 5)] + [commit(6, start=20, end=21)]
    assert check(h, final({0: [f"a-{i:06d}" for i in range(6)]})).ok


def test_resume_at_wrong_committed_offset():
    h = [send(f"a-{i:06d}", 0, offset=i) for i in range(6)]
    h += [consume(i, f"a-{i:06d}") for i in range(4)]
    h += [commit(4, start=20, end=21), resume(2, 2, 6)]
    r = check(h, final({0: [f"a-{i:06d}" for i in range(6)]}))
    only(r, "resume_wrong_offset")


def test_resume_fetch_position_differs_from_committed():
    h = [send(f"a-{i:06d}", 0, offset=i) for i in range(6)]
    h += [consume(i, f"a-{i:06d}") for i in range(4)]
    h += [commit(4, start=20, end=21), resume(4, 0, 6)]
    only(check(h, final({0: [f"a-{i:06d}" for i in range(6)]})), "resume_wrong_offset")


def test_resume_without_any_commit_starts_at_earliest():
    h = [send("a-000000", 0, offset=0), resume(None, 0, 1)]
    assert check(h, final({0: ["a-000000"]})).ok
    h = [send("a-000000", 0, offset=0), resume(1, 0, 1)]
    only(check(h, final({0: ["a-000000"]})), "resume_wrong_offset")


def test_resume_gets_nothing():
    h = [send(f"a-{i:06d}", 0, offset=i) for i in range(3)]
    h += [consume(0, "a-000000"), commit(1, start=20, end=21), resume(1, None, 3)]
    only(check(h, final({0: [f"a-{i:06d}" for i in range(3)]})), "resume_no_record")
    h[-1] = resume(None, None, None, outcome="fail", error="OffsetFetch: timed out")
    only(check(h, final({0: [f"a-{i:06d}" for i in range(3)]})), "resume_no_record")


def test_harness_and_history_errors_and_unhealed_cluster():
    h = [send("a-000000", 0, offset=0), send("a-000000", 0, "info"),
         {"process": "idem0", "kind": "harness_error", "start": 1.0, "outcome": "fail",
          "error": "boom"},
         {"process": "settle", "kind": "settle", "start": 2.0, "end": 3.0, "outcome": "fail",
          "error": "node2 not ready"}]
    r = check(h, final({0: ["a-000000"]}))
    assert kinds(r) == {"history_error", "harness_error", "cluster_not_healed"}


def test_fatal_producer_error():
    h = [send("a-000000", 0, offset=0),
         {"process": "idem0", "kind": "client_error", "start": 5.0, "outcome": "info",
          "error": "_TRANSPORT", "fatal": False, "message": "connection refused"},
         {"process": "idem0", "kind": "client_error", "start": 6.0, "outcome": "fail",
          "error": "OUT_OF_ORDER_SEQUENCE_NUMBER", "fatal": True, "message": "desync"}]
    r = check(h, final({0: ["a-000000"]}))
    only(r, "producer_fatal")
    assert r.violations[0].detail["process"] == "idem0"


# --------------------------------------------------------------------------
# the standalone consumer

def solo(offset, value, partition=0, *, instance=1, process="solo0", topic=T, at=None):
    return {"process": process, "kind": "consume", "group": None, "instance": instance,
            "topic": topic, "partition": partition, "offset": offset, "value": value,
            "start": tick() if at is None else at, "outcome": "ok"}


def solo_restart(instance, positions, *, reason="scheduled restart", process="solo0"):
    return {"process": process, "kind": "consumer_restart", "group": None, "start": tick(),
            "outcome": "info", "instance": instance, "reason": reason, "positions": positions}


def solo_end(position, target, partition=0, *, process="solo0", topic=T):
    return {"process": process, "kind": "standalone_end", "group": None, "topic": topic,
            "partition": partition, "start": tick(), "outcome": "ok", "position": position,
            "target": target, "instances": 2}


def values(n, name="a"):
    return [f"{name}-{i:06d}" for i in range(n)]


def test_standalone_consumer_in_order_across_restarts_passes():
    h = [send(v, 0, offset=i) for i, v in enumerate(values(5))]
    h += [solo(0, "a-000000"), solo(1, "a-000001"), solo(2, "a-000002"),
          solo_restart(2, {"t/0": 3}),
          solo(3, "a-000003", instance=2), solo(4, "a-000004", instance=2),
          solo_end(5, 5), solo_end(0, 0, partition=1)]
    r = check(h, final({0: values(5), 1: []}))
    assert r.ok, [v.message for v in r.violations]
    st = r.stats["standalone"]
    assert st["consumed"] == 5 and st["discontinuities"] == 0 and st["restarts"] == 1
    # the standalone consumer is no group member: nothing for the group rules
    assert r.stats["group"]["consumed"] == 0 and r.stats["group_partitions"] == []
    assert "standalone consumer" in format_table(r)


def test_standalone_skip():
    h = [send(v, 0, offset=i) for i, v in enumerate(values(4))]
    h += [solo(0, "a-000000"), solo(1, "a-000001"), solo(3, "a-000003")]
    r = check(h, final({0: values(4)}))
    only(r, "standalone_skip")
    v = r.violations[0]
    assert v.detail["offset"] == 3 and v.detail["expected"] == 2
    assert "offsets 2 skipped" in v.message


def test_standalone_skip_after_a_restart():
    # the new instance was assigned at 2 (last given + 1) and was given 3 first
    h = [send(v, 0, offset=i) for i, v in enumerate(values(4))]
    h += [solo(0, "a-000000"), solo(1, "a-000001"), solo_restart(2, {"t/0": 2}),
          solo(3, "a-000003", instance=2)]
    r = check(h, final({0: values(4)}))
    only(r, "standalone_skip")
    assert "after a restart" in r.violations[0].message
    assert r.violations[0].detail["previous_instance"] == 1


@pytest.mark.parametrize("case", ["back", "repeat", "not from 0"])
def test_standalone_offsets_back_repeated_or_not_from_zero(case):
    h = [send(v, 0, offset=i) for i, v in enumerate(values(3))]
    order = {"back": [0, 1, 2, 1], "repeat": [0, 1, 1, 2], "not from 0": [1, 2]}[case]
    h += [solo(o, f"a-{o:06d}") for o in order]
    only(check(h, final({0: values(3)})), "standalone_skip")


def test_standalone_record_not_in_the_log():
    h = [send(v, 0, offset=i) for i, v in enumerate(values(2))]
    h += [solo(0, "a-000000"), solo(1, "a-000000")]
    r = check(h, final({0: values(2)}))
    only(r, "consumed_not_in_log")
    assert r.stats["standalone"]["not_in_log"] == 1


def test_standalone_behind_after_the_run():
    h = [send(v, 0, offset=i) for i, v in enumerate(values(3))]
    h += [solo(0, "a-000000"), solo_end(1, 3)]
    only(check(h, final({0: values(3)})), "standalone_behind")
    # not when the cluster did not heal (that is the violation then)
    h.append({"process": "settle", "kind": "settle", "start": 2.0, "end": 3.0, "outcome": "fail",
              "error": "node2 not ready"})
    only(check(h, final({0: values(3)})), "cluster_not_healed")


# --------------------------------------------------------------------------
# admin operations

X, Y = "chaos-adm-0", "chaos-adm-1"


def adm(action, topic, outcome="ok", *, start, end, **extra):
    return {"process": "admin0", "kind": "admin", "action": action, "topic": topic,
            "start": start, "end": end, "outcome": outcome, **extra}


def poll(t, node, listed, **extra):
    return {"t": t, "dt": 0.1, "node": node, "adm": listed, **extra}


def metadata(topic, want, *polls, outcome="ok"):
    return adm("metadata", topic, outcome, start=polls[0]["t"], end=polls[-1]["t"] + 0.1,
               want=want, polls=list(polls))


def fault(node, start, end, kind="kill9"):
    return {"process": "nemesis", "kind": "fault", "fault": kind, "node": node, "start": start,
            "end": end, "outcome": "ok"}


def admin_cycle(topic=X, t0=100.0):
    """A clean cycle: create, visible, records, grow, records, delete, gone."""
    v = [f"{topic}-{i:04d}" for i in range(3)]
    return [
        adm("create", topic, start=t0, end=t0 + 1, partitions=2),
        metadata(topic, "visible", poll(t0 + 1.2, "n2", {}),  # not yet: fine so soon
                 poll(t0 + 1.8, "n1", {topic: 2})),
        adm("produce", topic, start=t0 + 2, end=t0 + 3, partitions=[0, 1],
            records=[[0, 0, v[0]], [1, 0, v[1]]], unacked=[[1, "never-acked", "info", "x"]]),
        adm("read", topic, start=t0 + 3, end=t0 + 4,
            partitions={"0": {"records": [[0, v[0]]], "eof": 1},
                        "1": {"records": [[0, v[1]], [1, "never-acked"]], "eof": 2}}),
        adm("add_partitions", topic, start=t0 + 5, end=t0 + 6, partitions=4),
        metadata(topic, "partitions=4", poll(t0 + 6.1, "n2", {topic: 2}),  # lagging: fine
                 poll(t0 + 7, "n1", {topic: 4})),
        adm("produce", topic, start=t0 + 8, end=t0 + 9, partitions=[3], records=[[3, 0, v[2]]],
            unacked=[]),
        adm("read", topic, start=t0 + 9, end=t0 + 10,
            partitions={"3": {"records": [[0, v[2]]], "eof": 1}}),
        adm("delete", topic, start=t0 + 20, end=t0 + 21),
        metadata(topic, "gone", poll(t0 + 21.5, "n1", {topic: 4}),  # not yet: fine
                 poll(t0 + 22, "n2", {})),
    ]


def test_admin_cycles_pass():
    h = admin_cycle(X, 100.0) + admin_cycle(Y, 140.0)
    # later answers, long after: they list Y (4 partitions once grown) and not X
    h.append(metadata(Y, "listing", poll(152.0, "n1", {Y: 2}), poll(170.0, "n2", {Y: 4})))
    r = check(h, final({}))
    assert r.ok, [v.message for v in r.violations]
    st = r.stats["admin"]
    assert st["topics"] == 2 and st["records_acked"] == 6 and st["records_read_back"] == 6
    assert st["answers_judged"] > 0
    assert "admin operations" in format_table(r)


def late_listing(t, node, listed):
    return metadata(Y, "visible", poll(t, node, listed))


@pytest.mark.parametrize("excuse", [None, "fault on the answering node",
                                    "fault on a node that never answers", "create unknown",
                                    "too soon", "delete pending"])
def test_admin_not_visible(excuse):
    h = [adm("create", X, "info" if excuse == "create unknown" else "ok", start=10.0, end=11.0),
         late_listing(15.0 if excuse == "too soon" else 22.0, "n1", {})]
    if excuse == "fault on the answering node":
        h.append(fault("n1", 14.0, 16.0))
    if excuse == "fault on a node that never answers":
        h.append(fault("n3", 14.0, 16.0, kind="pause"))
    if excuse == "delete pending":
        h.append(adm("delete", X, "info", start=21.0, end=40.0))
    r = check(h, final({}))
    if excuse is None:
        only(r, "admin_not_visible")
        assert r.violations[0].detail["topic"] == X
    else:
        assert r.ok, [v.message for v in r.violations]


def test_admin_not_visible_after_a_node_exit_is_excused():
    h = [adm("create", X, start=10.0, end=11.0), late_listing(22.0, "n1", {}),
         {"process": "watch", "kind": "node_exit", "node": "n1", "start": 5.0, "outcome": "fail",
          "exit": 101}]
    assert check(h, final({})).ok


@pytest.mark.parametrize("case", ["still 2 after the grow", "3 without a grow",
                                  "5 after the grow"])
def test_admin_partitions_wrong(case):
    h = [adm("create", X, start=10.0, end=11.0)]
    if case != "3 without a grow":
        h.append(adm("add_partitions", X, start=20.0, end=21.0, partitions=4))
    listed = {"still 2 after the grow": 2, "3 without a grow": 3, "5 after the grow": 5}[case]
    h.append(late_listing(35.0, "n1", {X: listed}))
    only(check(h, final({})), "admin_partitions_wrong")


def test_admin_partitions_either_while_the_grow_is_unknown():
    h = [adm("create", X, start=10.0, end=11.0),
         adm("add_partitions", X, "info", start=20.0, end=35.0, error="_TIMED_OUT"),
         late_listing(40.0, "n1", {X: 2}), late_listing(41.0, "n2", {X: 4}),
         late_listing(42.0, "n1", {X: 2})]
    assert check(h, final({})).ok


def test_admin_not_deleted_and_reappeared():
    base = [adm("create", X, start=10.0, end=11.0), adm("delete", X, start=20.0, end=21.0)]
    r = check(base + [late_listing(32.0, "n1", {X: 2})], final({}))
    only(r, "admin_not_deleted")
    r = check(base + [late_listing(22.0, "n2", {}), late_listing(40.0, "n1", {X: 2}),
                      late_listing(41.0, "n1", {X: 2})], final({}))
    only(r, "admin_reappeared")
    assert "2 such answers" in r.violations[0].message
    # an unknown delete promises nothing; a faulted node is excused
    base[1]["outcome"] = "info"
    assert check(base + [late_listing(32.0, "n1", {X: 2})], final({})).ok
    base[1]["outcome"] = "ok"
    assert check(base + [late_listing(32.0, "n1", {X: 2}), fault("n1", 25.0, 26.0)],
                 final({})).ok


def test_admin_listing_truncated_judges_nothing_absent():
    h = [adm("create", X, start=10.0, end=11.0),
         late_listing(22.0, "n1", {})]
    h[-1]["polls"][0]["truncated"] = True
    assert check(h, final({})).ok


@pytest.mark.parametrize("case", ["lost below the end", "other value", "never sent"])
def test_admin_records_wrong(case):
    h = [adm("create", X, start=10.0, end=11.0),
         adm("produce", X, start=12.0, end=13.0, partitions=[0],
             records=[[0, 0, "v0"], [0, 1, "v1"]], unacked=[])]
    read = {"lost below the end": {"records": [[0, "v0"]], "eof": 2},
            "other value": {"records": [[0, "v0"], [1, "v0"]], "eof": 2},
            "never sent": {"records": [[0, "v0"], [1, "v1"], [2, "zz"]], "eof": 3}}[case]
    h.append(adm("read", X, start=14.0, end=15.0, partitions={"0": read}))
    only(check(h, final({})), "admin_records_wrong")


def test_admin_read_that_did_not_get_there_is_not_judged():
    h = [adm("create", X, start=10.0, end=11.0),
         adm("produce", X, start=12.0, end=13.0, partitions=[0],
             records=[[0, 0, "v0"], [0, 1, "v1"]], unacked=[]),
         adm("read", X, "info", start=14.0, end=34.0,
             partitions={"0": {"records": [[0, "v0"]], "eof": None}})]
    assert check(h, final({})).ok


# --------------------------------------------------------------------------
# the Parquet archive

def afile(first, last, records, *, topic=T, partition=0, key=None, **extra):
    return {"key": key or f"pre/archive/{topic}/partition={partition}/{first}-{last}.parquet",
            "topic": topic, "partition": partition, "first": first, "last": last,
            "unique": None, "bytes": 100, "rows": len(records), "partition_values": [partition],
            "records": [list(r) for r in records], "error": None, **extra}


def with_archive(f, *files, error=None):
    f["archive"] = {"files": list(files), "error": error, "waited": 0.0}
    return f


def archived_log():
    vals = values(6)
    h = [send(v, 0, offset=i) for i, v in enumerate(vals)]
    return h, final({0: vals, 1: []}), vals


def test_archive_that_agrees_passes_even_behind_and_with_copies():
    h, f, vals = archived_log()
    with_archive(f, afile(0, 2, [(i, vals[i]) for i in range(3)]),
                 afile(3, 4, [(i, vals[i]) for i in range(3, 5)]),
                 # a merge's output beside its inputs, not yet collected
                 afile(0, 4, [(i, vals[i]) for i in range(5)]),
                 afile(5, 5, [], error="gone before it was read (GC)", vanished=True))
    r = check(h, f)
    assert r.ok, [v.message for v in r.violations]
    st = r.stats["archive"]
    assert st["offsets"] == 5 and st["rows"] == 10 and st["disagreeing_offsets"] == 0
    row = next(x for x in st["partitions"] if x["tp"] == "t/0")
    assert row["reach"] == 5 and row["hw"] == 6 and row["not_read"] == 1
    assert "Parquet archive" in format_table(r)


@pytest.mark.parametrize("case", ["value differs", "not in the log", "outside its name",
                                  "lacks offsets", "not increasing", "partition column",
                                  "unreadable"])
def test_archive_mismatch(case):
    h, f, vals = archived_log()
    recs = [(i, vals[i]) for i in range(3)]
    first, last = 0, 2
    extra = {}
    if case == "value differs":
        recs[1] = (1, "a-000002")
    elif case == "not in the log":
        recs, first, last = [(6, "a-000006")], 6, 6
    elif case == "outside its name":
        last = 1
    elif case == "lacks offsets":
        recs = [recs[0], recs[2]]
    elif case == "not increasing":
        recs = [recs[0], recs[2], recs[1]]
    elif case == "partition column":
        extra["partition_values"] = [1]
    elif case == "unreadable":
        extra["error"] = "unreadable: ArrowInvalid: not a Parquet file"
    with_archive(f, afile(first, last, recs, **extra))
    r = check(h, f)
    only(r, "archive_mismatch")


def test_archive_copies_disagree():
    h, f, vals = archived_log()
    with_archive(f, afile(0, 1, [(0, vals[0]), (1, vals[1])]),
                 afile(1, 2, [(1, "a-000005"), (2, vals[2])]))
    r = check(h, f)
    only(r, "archive_mismatch")
    assert any("disagree" in v.message for v in r.violations)
    assert r.stats["archive"]["disagreeing_offsets"] == 1


def test_archive_listing_failed():
    h, f, _ = archived_log()
    with_archive(f, error="EndpointConnectionError")
    only(check(h, f), "final_read_incomplete")


def test_every_kind_is_covered_by_a_test():
    import sys
    src = open(sys.modules[__name__].__file__).read()
    untested = [k for k in KINDS if f'"{k}"' not in src]
    assert not untested, untested


def test_faults_near_and_ranges():
    h = [{"kind": "fault", "fault": "kill9", "node": "n1", "start": 10.0, "end": 15.0},
         {"kind": "fault", "fault": "pause", "node": "n2", "start": 40.0, "end": 47.0}]
    assert [f["fault"] for f in faults_near(h, 16.0)] == ["kill9"]
    assert [f["fault"] for f in faults_near(h, 45.0)] == ["pause"]
    assert faults_near(h, 5.0) == [] and faults_near(h, None) == []
    assert ranges([1, 2, 3, 7, 9, 10]) == "1-3,7,9-10"
    r = check([send("a-000000", 0, offset=0)], final({0: []}))
    assert "FAIL" in format_table(r)
