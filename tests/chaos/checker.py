"""The independent checker of a chaos run: pure functions over the operation
history (``history.jsonl``) and the final read (``final_read.json``).

It links nothing of sluice: what it knows comes from what the workload's
clients were told (delivery reports, commit results, admin answers) and what
they read back over Kafka and HTTP, and the Parquet archive files read
straight from the store.

History operations (one JSON object each; every op has ``process``, ``kind``,
``start``, ``end`` (wall clock, seconds) and ``outcome`` in ok|fail|info):

* ``send``    a produce of one record: ``client``, ``idempotent``,
              ``dup_allowed`` (a non-idempotent producer that retries may
              store a record twice), ``topic``, ``partition`` (where it was
              sent), ``value`` (unique), on ok ``ack_partition`` and
              ``offset``; on fail/info ``error``.
* ``consume`` a record a group member saw: ``group``, ``topic``,
              ``partition``, ``offset``, ``value``. With ``group`` None: a
              record the standalone consumer (assign, no group) was given,
              with its consumer ``instance``; its ops are in the order it was
              given them.
* ``consumer_restart`` the standalone consumer made a new consumer
              (``instance``, ``reason``) assigned at ``positions`` (its last
              offset + 1 per partition).
* ``standalone_end`` per partition when the standalone consumer stopped:
              ``position`` (last offset given + 1), ``target`` (the high
              watermark it waited for after the producers stopped, or None).
* ``admin``   one step of the admin worker on topic ``topic``: ``action``
              create (``partitions``) | add_partitions (``partitions``) |
              delete: the request's outcome (info = unknown: timed out,
              retriable, or an answer such as TOPIC_ALREADY_EXISTS that a
              retried request of ours may have caused); metadata: ``want``
              and ``polls``, every Metadata answer [{``t``, ``dt``, ``node``
              (who answered), ``adm`` {admin topic: partition count},
              ``truncated``} or {``t``, ``error``}]; produce: ``records``
              acknowledged [[partition, offset, value]], ``unacked``
              [[partition, value, outcome, error]]; read: ``partitions``
              {"p": {``records`` [[offset, value]] (at most 100), ``eof``
              (the highest partition-EOF offset, None if none)}}.
* ``node_exit`` a node exited by itself (the campaign restarts it).
* ``commit``  one partition of a synchronous commit: ``group``, ``topic``,
              ``partition``, ``offset`` (the next offset to read).
* ``resume``  after the run, a fresh member of the group: ``committed``
              (OffsetFetch, None when nothing is committed), ``first_offset``
              (the first record it was given, None if none), ``hw``.
* ``group_start`` optional: ``group``, ``topic``, ``partition``, ``offset``:
              where the group began (default 0: a new group, earliest).
* ``fault``   a nemesis fault: ``fault``, ``node``, ``start``, ``end``.
* ``settle``  the cluster after the faults: outcome fail = it did not heal.
* ``client_error`` an error a client reported on its own (error_cb); ``fatal``
              true (an idempotent producer the cluster made unusable) is a
              violation.
* ``harness_error`` a workload thread died: the run cannot be trusted.
* ``epoch_bump`` librdkafka bumped an idempotent producer's epoch:
              ``producer_id``, ``epoch``, ``reason`` (its log's words). A
              record stored twice by an idempotent producer is excused only
              when a bump for an in-flight message timeout happened while it
              was in flight (see ``timeout_bumps_during``), one copy per
              such bump.

The final read::

    {"kafka": {"topic/p": {"log_start": int, "hw": int,
                           "records": [[offset, value], ...], "error": str|None}},
     "http":  {"node1": {"topic/p": {...same...}}, ...},
     "archive": {"files": [{"key", "topic", "partition", "first", "last",
                            "records": [[offset, value], ...], "partition_values",
                            "error", "vanished", "skipped"}], "error": str|None}}

``archive`` (optional) holds every Parquet archive file present in the store,
published or not, each as read with pyarrow.

``check(history, final)`` returns a ``CheckResult`` with ``violations`` and
``stats``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

OUTCOMES = ("ok", "fail", "info")

# Violation kinds, in report order.
KINDS = (
    "harness_error",         # the workload itself broke: nothing below can be trusted
    "history_error",         # the same value was sent twice (a workload bug)
    "cluster_not_healed",    # after the faults, a node did not come back / rejoin
    "final_read_incomplete",  # a partition could not be read to its high watermark
    "lost",                  # an acknowledged record is not in the log
    "moved",                 # an acknowledged record is in the log, not at its acknowledged offset
    "ack_conflict",          # two records acknowledged at the same offset
    "ack_wrong_partition",   # acknowledged on another partition than it was sent to
    "misplaced",             # a record stored in another partition than it was sent to
    "unexpected",            # a record no producer sent
    "duplicate",             # a record stored twice that may be stored only once
    "producer_fatal",        # the cluster broke a producer's idempotence state (a fatal error
                             # such as OUT_OF_ORDER_SEQUENCE_NUMBER for gap-free sequences)
    "log_start_moved",       # the log does not start at 0 (no retention, no compaction)
    "offset_gap",            # an offset below the high watermark is missing
    "offset_repeat",         # an offset read twice / out of order / past the high watermark
    "read_mismatch",         # HTTP on some node disagrees with the Kafka read
    "consumed_not_in_log",   # a group member saw a record that is not in the final log there
    "commit_backwards",      # a successful commit below an earlier successful one
    "consumer_skip",         # an offset below the last commit that no member saw
    "resume_wrong_offset",   # a fresh member does not start at the last committed offset
    "resume_no_record",      # a fresh member got nothing although records were there
    "standalone_skip",       # the standalone consumer was not given offset previous + 1
                             # (from 0; across its own restarts, which seek to last + 1)
    "standalone_behind",     # it did not reach the high watermark after the run
    "admin_not_visible",     # a quiet node's Metadata lacks a topic created ADMIN_BOUND ago
    "admin_partitions_wrong",  # ... or shows a partition count no request asked for by then
    "admin_records_wrong",   # an acknowledged record on an admin topic not read back where
                             # it was acknowledged, or a record there that nobody sent
    "admin_not_deleted",     # a quiet node lists a topic deleted ADMIN_BOUND ago
    "admin_reappeared",      # ... after Metadata had already shown it gone
    "archive_mismatch",      # an archive file disagrees with the Kafka read (or another
                             # file), holds offsets outside its name, or cannot be read
)

# The admin rules: a node must show an acknowledged create / CreatePartitions /
# delete in its Metadata answers this long after the acknowledgement, when it
# has had no fault for this long before answering (a fault on a node that
# never answered counts against every node).
ADMIN_BOUND = 10.0
# A node that exited by itself counts as faulted for this long.
NODE_EXIT_FAULT_S = 30.0


@dataclass
class Violation:
    kind: str
    message: str
    time: float | None = None          # when it happened, as far as the history tells
    detail: dict = field(default_factory=dict)


@dataclass
class CheckResult:
    violations: list[Violation]
    stats: dict

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_kind(self) -> dict[str, list[Violation]]:
        out: dict[str, list[Violation]] = defaultdict(list)
        for v in self.violations:
            out[v.kind].append(v)
        return dict(out)

    def to_json(self) -> dict:
        return {"ok": self.ok, "stats": self.stats,
                "violations": [asdict(v) for v in self.violations]}


# --------------------------------------------------------------------------
# helpers

def tpkey(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def parse_tp(key: str) -> tuple[str, int]:
    topic, _, p = key.rpartition("/")
    return topic, int(p)


def ranges(nums: Iterable[int], limit: int = 12) -> str:
    """[1,2,3,7,9,10] -> '1-3,7,9-10' (at most ``limit`` runs, then '...')."""
    nums = sorted(set(nums))
    runs: list[str] = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        runs.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    if len(runs) > limit:
        return ",".join(runs[:limit]) + f",... ({len(runs)} runs, {len(nums)} offsets)"
    return ",".join(runs)


def load_history(path: str | Path) -> list[dict]:
    ops = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if line:
                try:
                    ops.append(json.loads(line))
                except ValueError as e:
                    raise ValueError(f"{path}:{n}: not JSON: {e}") from None
    return ops


def load_final(path: str | Path) -> dict:
    with open(path) as f:
        return json.load(f)


def faults_near(history: Iterable[dict], t: float | None, before: float = 15.0) -> list[dict]:
    """Faults active at ``t`` or that ended at most ``before`` seconds earlier."""
    if t is None:
        return []
    out = []
    for op in history:
        if op.get("kind") != "fault":
            continue
        start, end = op.get("start"), op.get("end") or op.get("start")
        if start is not None and start <= t and end >= t - before:
            out.append(op)
    return sorted(out, key=lambda o: o["start"])


# --------------------------------------------------------------------------
# the check

def timeout_bumps_during(bumps: dict[object, list[dict]], send: dict) -> list[dict]:
    """The epoch bumps librdkafka made while ``send`` was in flight because
    a message timed out in flight: the one case in which librdkafka itself
    may store an idempotent record again (it abandons the request, bumps
    the epoch and re-sends the request's other messages under the new
    epoch; documented in its INTRODUCTION.md). Each such bump can add one
    copy, when the abandoned request was stored after all. Bumps for other
    reasons excuse nothing."""
    return [bump for bump in bumps.get(send.get("process"), ())
            if "timed out" in (bump.get("reason") or "")
            and send.get("start", 0) <= bump.get("start", -1) <= send.get("end", 0)]


def check(history: list[dict], final: dict) -> CheckResult:
    violations: list[Violation] = []

    def violate(kind: str, message: str, time: float | None = None, **detail) -> None:
        assert kind in KINDS, kind
        violations.append(Violation(kind, message, time, detail))

    by_kind: dict[str, list[dict]] = defaultdict(list)
    for op in history:
        by_kind[op.get("kind", "?")].append(op)
    stats: dict = {
        "ops": dict(sorted(Counter(f"{op.get('kind')}/{op.get('outcome')}"
                                   for op in history).items())),
        "faults": dict(sorted(Counter(f"{op.get('fault')}/{op.get('outcome')}"
                                      for op in by_kind["fault"]).items())),
    }

    for op in by_kind["harness_error"]:
        violate("harness_error", f"{op.get('process')}: {op.get('error')}", op.get("start"),
                process=op.get("process"))
    for op in by_kind["client_error"]:
        if op.get("fatal"):
            violate("producer_fatal", f"{op.get('process')}: fatal {op.get('error')}: "
                    f"{op.get('message')}", op.get("start"), process=op.get("process"),
                    error=op.get("error"))
    for op in by_kind["settle"]:
        if op.get("outcome") != "ok":
            violate("cluster_not_healed", f"settle: {op.get('error')}", op.get("start"),
                    **{k: v for k, v in op.items() if k not in ("kind", "process")})

    # -- the log as read over Kafka -----------------------------------------
    kafka = final.get("kafka") or {}
    at: dict[tuple[str, int, int], object] = {}      # (topic, p, offset) -> value
    where: dict[object, list[tuple[str, int, int]]] = defaultdict(list)  # value -> places
    partitions = []
    for key in sorted(kafka, key=lambda k: parse_tp(k)):
        r = kafka[key]
        topic, p = parse_tp(key)
        records = r.get("records") or []
        hw, log_start = r.get("hw"), r.get("log_start")
        if r.get("error"):
            violate("final_read_incomplete", f"kafka read of {key}: {r['error']}", tp=key)
        offsets = [o for o, _ in records]
        for o, v in records:
            if (topic, p, o) not in at:
                at[(topic, p, o)] = v
            where[v].append((topic, p, o))
        row = {"tp": key, "log_start": log_start, "hw": hw, "read": len(records),
               "missing": 0, "repeats": 0, "dense": True}
        if log_start not in (0, None):
            violate("log_start_moved", f"{key}: log start {log_start}, expected 0", tp=key,
                    log_start=log_start)
            row["dense"] = False
        if hw is not None:
            missing = sorted(set(range(0, hw)) - set(offsets))
            if missing:
                row["missing"], row["dense"] = len(missing), False
                violate("offset_gap", f"{key}: offsets {ranges(missing)} below hw {hw} "
                        f"were not read", _neighbour_time(history, topic, p, missing[0]),
                        tp=key, missing=missing[:200], hw=hw)
        counts = Counter(offsets)
        repeats = sorted(o for o, c in counts.items() if c > 1)
        disorder = [b for a, b in zip(offsets, offsets[1:]) if b <= a]
        beyond = [o for o in offsets if hw is not None and (o >= hw or o < 0)]
        if repeats or disorder or beyond:
            row["repeats"], row["dense"] = len(repeats) + len(beyond), False
            violate("offset_repeat", f"{key}: offsets read twice {ranges(repeats)}, out of "
                    f"order {ranges(disorder)}, outside [0, {hw}) {ranges(beyond)}",
                    tp=key, repeats=repeats[:200], disorder=disorder[:200], beyond=beyond[:200])
        partitions.append(row)
    stats["partitions"] = partitions

    # -- sends against the log ----------------------------------------------
    sends: dict[object, dict] = {}
    for op in by_kind["send"]:
        v = op.get("value")
        if v in sends:
            violate("history_error", f"value {v!r} sent twice (by {sends[v].get('process')} "
                    f"and {op.get('process')})", op.get("start"), value=v)
            continue
        sends[v] = op
    s = Counter()
    per_client = Counter()
    bumps: dict[object, list[dict]] = defaultdict(list)
    for op in by_kind["epoch_bump"]:
        bumps[op.get("process")].append(op)
    bump_dups: list[dict] = []
    acked_at: dict[tuple[str, int, int], dict] = {}
    for v, op in sends.items():
        outcome = op.get("outcome")
        per_client[f"{op.get('process')}/{outcome}"] += 1
        places = where.get(v, [])
        if outcome == "ok":
            s["acked"] += 1
            place = (op.get("topic"), op.get("ack_partition"), op.get("offset"))
            if op.get("ack_partition") != op.get("partition"):
                violate("ack_wrong_partition", f"{v} sent to {op.get('topic')}/"
                        f"{op.get('partition')}, acknowledged on partition "
                        f"{op.get('ack_partition')}", op.get("end"), value=v)
            other = acked_at.get(place)
            if other is not None:
                violate("ack_conflict", f"{v} and {other.get('value')} both acknowledged at "
                        f"{tpkey(place[0], place[1])}@{place[2]}", op.get("end"),
                        values=[v, other.get("value")])
            else:
                acked_at[place] = op
            if not places:
                s["lost"] += 1
                there = at.get(place)
                hw = (kafka.get(tpkey(place[0], place[1])) or {}).get("hw")
                violate("lost", f"{v} ({op.get('process')}) acknowledged at "
                        f"{tpkey(place[0], place[1])}@{place[2]} is not in the log (that offset "
                        + (f"holds {there!r})" if there is not None else f"is not read; hw {hw})"),
                        op.get("end"), value=v, process=op.get("process"),
                        tp=tpkey(place[0], place[1]), offset=place[2], holds=there, hw=hw,
                        sent=op.get("start"), acked=op.get("end"))
            elif place not in places:
                s["moved"] += 1
                violate("moved", f"{v} acknowledged at {tpkey(place[0], place[1])}@{place[2]} "
                        f"but stored at {', '.join(f'{tpkey(t, p)}@{o}' for t, p, o in places)} "
                        f"(the acknowledged offset holds {at.get(place)!r})", op.get("end"),
                        value=v, acked=list(place), stored=[list(x) for x in places])
        else:
            s[f"{outcome}_present" if places else f"{outcome}_absent"] += 1
        for t, p, o in places:
            if (t, p) != (op.get("topic"), op.get("partition")):
                violate("misplaced", f"{v} sent to {op.get('topic')}/{op.get('partition')}, "
                        f"stored at {tpkey(t, p)}@{o}", op.get("end"), value=v)
        if len(places) > 1:
            timeouts = timeout_bumps_during(bumps, op)
            if op.get("dup_allowed"):
                s["duplicated_allowed"] += 1
            elif len(places) - 1 <= len(timeouts):
                s["duplicated_epoch_bump"] += 1
                if len(bump_dups) < 20:
                    bump_dups.append({"value": v, "places": [list(x) for x in places],
                                      "epochs": [b.get("epoch") for b in timeouts],
                                      "reasons": [b.get("reason") for b in timeouts]})
            else:
                s["duplicated"] += 1
                violate("duplicate", f"{v} ({op.get('process')}, idempotent="
                        f"{op.get('idempotent')}, outcome {outcome}) stored "
                        f"{len(places)} times: "
                        + ", ".join(f"{tpkey(t, p)}@{o}" for t, p, o in places),
                        op.get("end"), value=v, process=op.get("process"),
                        places=[list(x) for x in places], outcome=outcome)
    unexpected = [(v, pl) for v, pl in where.items() if v not in sends]
    s["unexpected"] = sum(len(pl) for _, pl in unexpected)
    for v, pl in unexpected[:200]:
        violate("unexpected", f"{v!r} is in the log at "
                f"{', '.join(f'{tpkey(t, p)}@{o}' for t, p, o in pl)} but no producer sent it",
                _neighbour_time(history, pl[0][0], pl[0][1], pl[0][2]), value=v,
                places=[list(x) for x in pl])
    if len(unexpected) > 200:
        violate("unexpected", f"... {len(unexpected)} unexpected values in all")
    stats["records"] = {k: s.get(k, 0) for k in (
        "acked", "lost", "moved", "duplicated", "duplicated_allowed",
        "duplicated_epoch_bump", "unexpected",
        "info_present", "info_absent", "fail_present", "fail_absent")}
    stats["records"]["sent"] = len(sends)
    stats["records"]["in_log"] = len(at)
    stats["sends"] = dict(sorted(per_client.items()))
    stats["epoch_bump_duplicates"] = bump_dups

    # -- HTTP reads against the Kafka read -----------------------------------
    for node, reads in sorted((final.get("http") or {}).items()):
        for key in sorted(set(kafka) | set(reads), key=lambda k: parse_tp(k)):
            h, k = reads.get(key), kafka.get(key)
            if h is None or k is None:
                violate("read_mismatch", f"{key}: read over {'HTTP on ' + node if h is None else 'Kafka'} "
                        f"missing", tp=key, node=node)
                continue
            if h.get("error"):
                violate("final_read_incomplete", f"HTTP read of {key} on {node}: {h['error']}",
                        tp=key, node=node)
                continue
            hr = [tuple(x) for x in h.get("records") or []]
            kr = [tuple(x) for x in k.get("records") or []]
            if h.get("hw") != k.get("hw") or h.get("log_start") != k.get("log_start") or hr != kr:
                first = next((i for i, (a, b) in enumerate(zip(hr, kr)) if a != b),
                             min(len(hr), len(kr)))
                violate("read_mismatch", f"{key}: HTTP on {node} (log start {h.get('log_start')}, "
                        f"hw {h.get('hw')}, {len(hr)} records) != Kafka (log start "
                        f"{k.get('log_start')}, hw {k.get('hw')}, {len(kr)} records); first "
                        f"difference at index {first}: HTTP "
                        f"{hr[first] if first < len(hr) else None} Kafka "
                        f"{kr[first] if first < len(kr) else None}", tp=key, node=node)

    # -- consumer group -------------------------------------------------------
    g = Counter()
    commits: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    for op in by_kind["commit"]:
        commits[(op.get("group"), op.get("topic"), op.get("partition"))].append(op)
        g[f"commits_{op.get('outcome')}"] += 1
    seen: dict[tuple[str, str, int], set[int]] = defaultdict(set)
    solo: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    for op in by_kind["consume"]:
        gk = (op.get("group"), op.get("topic"), op.get("partition"))
        if gk[0] is None:
            solo[(op.get("process"), gk[1], gk[2])].append(op)
        else:
            seen[gk].add(op.get("offset"))
            g["consumed"] += 1
        stored = at.get((op.get("topic"), op.get("partition"), op.get("offset")), _NOTHING)
        if stored != op.get("value"):
            key = tpkey(op.get("topic"), op.get("partition"))
            g["consumed_not_in_log" if gk[0] is not None else "standalone_not_in_log"] += 1
            violate("consumed_not_in_log", f"{op.get('process')} consumed {op.get('value')!r} at "
                    f"{key}@{op.get('offset')}, the final log has "
                    + ("nothing there" if stored is _NOTHING else f"{stored!r}")
                    + (f" (the value is at {where[op.get('value')]})" if where.get(op.get('value')) else ""),
                    op.get("start"), tp=key, offset=op.get("offset"), value=op.get("value"))
    starts = {(op.get("group"), op.get("topic"), op.get("partition")): op.get("offset") or 0
              for op in by_kind["group_start"]}
    last_ok: dict[tuple[str, str, int], dict] = {}
    group_rows = []
    for gk in sorted(set(commits) | set(seen), key=lambda k: (str(k[0]), str(k[1]), k[2])):
        ops = commits.get(gk, [])
        ok = sorted((c for c in ops if c.get("outcome") == "ok"), key=lambda c: c["start"])
        # Only commits that did not overlap in time are ordered: a commit must
        # not go below one that had already succeeded when it began.
        by_end = sorted(ok, key=lambda c: c["end"])
        i, best = 0, None
        for c in ok:
            while i < len(by_end) and by_end[i]["end"] < c["start"]:
                if best is None or by_end[i]["offset"] > best["offset"]:
                    best = by_end[i]
                i += 1
            if best is not None and c["offset"] < best["offset"]:
                g["commit_backwards"] += 1
                violate("commit_backwards", f"group {gk[0]} {tpkey(gk[1], gk[2])}: "
                        f"{c.get('process')} committed {c['offset']} at {c['start']:.3f} after "
                        f"{best.get('process')}'s commit of {best['offset']} had succeeded at "
                        f"{best['end']:.3f}", c["start"], group=gk[0], tp=tpkey(gk[1], gk[2]),
                        offset=c["offset"], earlier=best["offset"],
                        process=c.get("process"), earlier_process=best.get("process"))
        if ok:
            last_ok[gk] = max(ok, key=lambda c: c["end"])
        hi = max((c["offset"] for c in ok), default=0)
        lo = starts.get(gk, 0)
        skipped = sorted(set(range(lo, hi)) - seen.get(gk, set()))
        if skipped:
            g["skipped"] += len(skipped)
            first_cover = min((c for c in ok if c["offset"] > skipped[0]), key=lambda c: c["end"],
                              default=None)
            violate("consumer_skip", f"group {gk[0]} {tpkey(gk[1], gk[2])}: offsets "
                    f"{ranges(skipped)} below the last commit {hi} were never given to a member",
                    first_cover["start"] if first_cover else None, group=gk[0],
                    tp=tpkey(gk[1], gk[2]), skipped=skipped[:200], last_commit=hi)
        group_rows.append({"group": gk[0], "tp": tpkey(gk[1], gk[2]),
                           "commits_ok": len(ok), "commits_other": len(ops) - len(ok),
                           "last_commit": last_ok[gk]["offset"] if gk in last_ok else None,
                           "consumed": len(seen.get(gk, ()))})
    # -- resume --------------------------------------------------------------
    resume_rows = []
    for op in by_kind["resume"]:
        gk = (op.get("group"), op.get("topic"), op.get("partition"))
        key = tpkey(gk[1], gk[2])
        last = last_ok.get(gk)
        allowed = {last["offset"] if last else None}
        for c in commits.get(gk, []):
            if c is last:
                continue
            # An indeterminate commit may land at any time; any other commit
            # only if it overlapped the last success in time.
            if c.get("outcome") == "info" or (last is not None and c["end"] >= last["start"]):
                allowed.add(c["offset"])
        committed, first, hw = op.get("committed"), op.get("first_offset"), op.get("hw")
        row = {"group": gk[0], "tp": key, "last_commit": last["offset"] if last else None,
               "committed": committed, "first_offset": first, "hw": hw, "ok": True}
        if op.get("outcome") != "ok" and op.get("error"):
            row["ok"] = False
            violate("resume_no_record", f"group {gk[0]} {key}: resume check failed: "
                    f"{op.get('error')}", op.get("start"), group=gk[0], tp=key)
        elif committed not in allowed:
            row["ok"] = False
            violate("resume_wrong_offset", f"group {gk[0]} {key}: OffsetFetch says {committed}, "
                    f"the last successful commit was {row['last_commit']} (allowed "
                    f"{sorted(allowed, key=lambda x: -1 if x is None else x)})", op.get("start"),
                    group=gk[0], tp=key, committed=committed, allowed=sorted(
                        (a for a in allowed if a is not None)))
        else:
            begin = committed if committed is not None else 0
            if hw is not None and begin < hw:
                if first is None:
                    row["ok"] = False
                    violate("resume_no_record", f"group {gk[0]} {key}: a fresh member got no "
                            f"record; committed {committed}, hw {hw}", op.get("start"),
                            group=gk[0], tp=key)
                elif first != begin:
                    row["ok"] = False
                    violate("resume_wrong_offset", f"group {gk[0]} {key}: a fresh member "
                            f"started at {first}, the committed offset is {committed}",
                            op.get("start"), group=gk[0], tp=key, first=first,
                            committed=committed)
            elif first is not None and (hw is None or first < begin):
                row["ok"] = False
                violate("resume_wrong_offset", f"group {gk[0]} {key}: a fresh member got "
                        f"offset {first} although the committed offset {committed} is at hw {hw}",
                        op.get("start"), group=gk[0], tp=key, first=first, committed=committed)
        resume_rows.append(row)
    stats["group"] = {k: g.get(k, 0) for k in ("consumed", "commits_ok", "commits_fail",
                                                "commits_info", "commit_backwards", "skipped",
                                                "consumed_not_in_log")}
    stats["group"]["resume_checked"] = len(resume_rows)
    stats["group"]["resume_ok"] = sum(1 for r in resume_rows if r["ok"])
    stats["group_partitions"] = group_rows
    stats["resume"] = sorted(resume_rows, key=lambda r: (str(r["group"]), parse_tp(r["tp"])))
    healed = all(op.get("outcome") == "ok" for op in by_kind["settle"])
    stats["standalone"] = _check_standalone(solo, by_kind, healed, g["standalone_not_in_log"],
                                            violate)
    stats["admin"] = _check_admin(by_kind, violate)
    if final.get("archive") is not None:
        stats["archive"] = _check_archive(final["archive"], kafka, at, violate)
    stats["violations"] = dict(Counter(v.kind for v in violations))
    order = {k: i for i, k in enumerate(KINDS)}
    violations.sort(key=lambda v: (order.get(v.kind, 99), v.time or 0))
    return CheckResult(violations, stats)


_NOTHING = object()


def _check_standalone(solo: dict, by_kind: dict, healed: bool, not_in_log: int,
                      violate) -> dict:
    """The standalone consumer: on each partition the offsets it is given,
    in the order it was given them, are 0, 1, 2, ... -- across its own
    restarts too, since each new instance is assigned at the last offset it
    was given + 1. (Their values are held to the final log by the
    ``consumed_not_in_log`` rule with the group's records.)"""
    restarts: dict[object, dict[int, dict]] = defaultdict(dict)
    for op in by_kind["consumer_restart"]:
        restarts[op.get("process")][op.get("instance")] = op
    ends = {(op.get("process"), op.get("topic"), op.get("partition")): op
            for op in by_kind["standalone_end"]}
    rows, skips, total = [], 0, 0
    for key in sorted(set(solo) | set(ends), key=lambda k: (str(k[0]), str(k[1]), k[2])):
        proc, topic, p = key
        tp = tpkey(topic, p)
        ops = solo.get(key, [])
        total += len(ops)
        expect, prev, breaks = 0, None, 0
        for op in ops:
            o = op.get("offset")
            if o != expect:
                breaks += 1
                if breaks <= 20:
                    inst = op.get("instance")
                    restart = restarts[proc].get(inst) \
                        if prev is not None and prev.get("instance") != inst else None
                    how = (f"offsets {ranges(range(expect, o))} skipped" if o > expect else
                           f"back by {expect - o}")
                    after = (f"after {expect - 1}" if prev is not None else "as its first record")
                    context = (f"; the first record of instance {inst} after a restart "
                               f"({restart.get('reason')}) assigned at "
                               f"{(restart.get('positions') or {}).get(tp)}"
                               if restart is not None else f" (instance {inst})")
                    violate("standalone_skip", f"{proc} {tp}: given offset {o} ({op.get('value')!r}) "
                            f"{after}: {how}{context}", op.get("start"), process=proc, tp=tp,
                            offset=o, expected=expect, instance=inst,
                            previous_instance=prev.get("instance") if prev else None)
            expect = o + 1 if isinstance(o, int) else expect
            prev = op
        if breaks > 20:
            violate("standalone_skip", f"{proc} {tp}: ... {breaks} discontinuities in all",
                    process=proc, tp=tp)
        skips += breaks
        end = ends.get(key)
        position, target = (end or {}).get("position"), (end or {}).get("target")
        if healed and target is not None and position is not None and position < target:
            violate("standalone_behind", f"{proc} {tp}: at offset {position} when it stopped, "
                    f"the high watermark it waited for (bounded) was {target}",
                    end.get("start"), process=proc, tp=tp, position=position, target=target)
        rows.append({"process": proc, "tp": tp, "consumed": len(ops),
                     "last_offset": ops[-1].get("offset") if ops else None,
                     "instances": len({op.get("instance") for op in ops}),
                     "discontinuities": breaks, "position": position, "target": target})
    return {"consumed": total, "restarts": len(by_kind["consumer_restart"]),
            "discontinuities": skips, "not_in_log": not_in_log, "partitions": rows}


def _node_faults(by_kind: dict) -> list[tuple[object, float, float]]:
    out = []
    for op in by_kind["fault"]:
        start = op.get("start")
        if start is not None:
            out.append((op.get("node"), start, op.get("end") or start))
    for op in by_kind["node_exit"] + by_kind["etcd_exit"]:
        start = op.get("start")
        if start is not None:
            out.append((op.get("node"), start, start + NODE_EXIT_FAULT_S))
    return out


def _check_admin(by_kind: dict, violate) -> dict:
    """The admin worker's topics against the Metadata answers it got.

    A node's Metadata answer at ``t`` is held to the requests acknowledged at
    least ADMIN_BOUND before ``t`` when that node has had no fault since
    ``t - ADMIN_BOUND``: it lists a created topic, with 2 partitions -- 4 once
    a CreatePartitions to 4 was acknowledged (either while one is pending or
    unknown) -- and no longer lists a deleted one. Requests with an unknown
    outcome promise nothing; a change that has not been acknowledged for that
    long yet may or may not show. Acknowledged records on an admin topic must
    be read back at their offsets when the read got past them."""
    ops = by_kind["admin"]
    a = Counter()
    for op in ops:
        a[f"{op.get('action')}/{op.get('outcome')}"] += 1
    steps: dict[str, dict[str, dict]] = defaultdict(dict)
    for op in ops:
        if op.get("action") in ("create", "add_partitions", "delete"):
            steps[op.get("topic")].setdefault(op["action"], op)
    polls = []
    for op in ops:
        if op.get("action") == "metadata":
            for poll in op.get("polls") or []:
                if isinstance(poll.get("adm"), dict) and poll.get("t") is not None:
                    polls.append(poll)
    polls.sort(key=lambda x: x["t"])
    answering = {poll.get("node") for poll in polls}
    faults = _node_faults(by_kind)

    def quiet(node, t0: float, t1: float) -> bool:
        if node is None:
            return False
        return not any(start <= t1 and end >= t0 and (fnode == node or fnode not in answering)
                       for fnode, start, end in faults)

    def ok_end(op: dict | None) -> float | None:
        return op.get("end") if op is not None and op.get("outcome") == "ok" else None

    issues: dict[tuple[str, str], list[tuple[dict, str]]] = defaultdict(list)
    gone_seen: dict[str, float] = {}
    judged = 0
    for poll in polls:
        t = poll["t"]
        t_end = t + (poll.get("dt") or 0)
        adm = poll["adm"]
        truncated = poll.get("truncated")
        is_quiet = quiet(poll.get("node"), t - ADMIN_BOUND, t_end)
        judged += is_quiet
        for name, st in steps.items():
            shown = name in adm
            c, grow, d = st.get("create"), st.get("add_partitions"), st.get("delete")
            if d is not None and d.get("start", 0) <= t_end:
                if not shown and not truncated:
                    gone_seen.setdefault(name, t_end)
                d_end = ok_end(d)
                if shown and is_quiet and d_end is not None and t >= d_end + ADMIN_BOUND:
                    kind = "admin_reappeared" if gone_seen.get(name, t) < t else "admin_not_deleted"
                    issues[(kind, name)].append(
                        (poll, f"listed by {poll.get('node')} at {t:.3f}, "
                               f"{t - d_end:.1f} s after its delete was acknowledged"
                         + (f" and {t - gone_seen[name]:.1f} s after Metadata had shown it gone"
                            if kind == "admin_reappeared" else "")))
                continue
            if not is_quiet or c is None or c.get("end") is None or t < c["end"] + ADMIN_BOUND:
                continue
            if not shown:
                if not truncated and ok_end(c) is not None:
                    issues[("admin_not_visible", name)].append(
                        (poll, f"not listed by {poll.get('node')} at {t:.3f}, "
                               f"{t - c['end']:.1f} s after its create was acknowledged"))
                continue
            allowed = {2}
            if grow is not None and grow.get("start", 0) <= t_end:
                g_end = ok_end(grow)
                allowed = {4} if g_end is not None and t >= g_end + ADMIN_BOUND else {2, 4}
            if adm[name] not in allowed:
                issues[("admin_partitions_wrong", name)].append(
                    (poll, f"{adm[name]} partitions listed by {poll.get('node')} at {t:.3f}, "
                           f"expected {sorted(allowed)} (create {c.get('outcome')} "
                           f"{t - c['end']:.1f} s before"
                           + (f", CreatePartitions to 4 {grow.get('outcome')} "
                              f"{t - grow['end']:.1f} s before" if grow is not None and
                              grow.get("end") is not None and grow["end"] <= t else "") + ")"))
    for (kind, name), found in sorted(issues.items(), key=lambda x: x[1][0][0]["t"]):
        violate(kind, f"{name}: {found[0][1]}" + (f" ({len(found)} such answers)"
                                                  if len(found) > 1 else ""),
                found[0][0]["t"], topic=name, answers=[p for p, _ in found[:5]])

    # -- records on the admin topics --------------------------------------------
    sent: dict[str, set] = defaultdict(set)
    acked: dict[str, list[tuple[int, int, object, dict]]] = defaultdict(list)
    for op in ops:
        if op.get("action") == "produce":
            for p, o, v in op.get("records") or []:
                sent[op.get("topic")].add(v)
                acked[op.get("topic")].append((p, o, v, op))
            for u in op.get("unacked") or []:
                sent[op.get("topic")].add(u[1])
    checked = 0
    for op in ops:
        if op.get("action") != "read":
            continue
        name = op.get("topic")
        for pkey, pr in (op.get("partitions") or {}).items():
            p = int(pkey)
            records = pr.get("records") or []
            held = {o: v for o, v in records}
            eof = pr.get("eof")
            for ap, o, v, pop in acked.get(name, []):
                if ap != p or pop.get("end", 0) > op.get("start", 0):
                    continue
                if o in held and held[o] != v:
                    checked += 1
                    violate("admin_records_wrong", f"{name}/{p}: {v!r} acknowledged at offset {o}, "
                            f"read back there: {held[o]!r}", op.get("start"), topic=name,
                            partition=p, offset=o, value=v, read=held[o])
                elif o not in held and eof is not None and eof > o and len(records) < 100:
                    checked += 1
                    violate("admin_records_wrong", f"{name}/{p}: {v!r} acknowledged at offset {o}, "
                            f"not read back although the read reached the end of the partition "
                            f"at {eof} (read offsets {ranges(held)})", op.get("start"), topic=name,
                            partition=p, offset=o, value=v, eof=eof)
                elif o in held:
                    checked += 1
            for o, v in records:
                if v not in sent.get(name, ()):
                    violate("admin_records_wrong", f"{name}/{p}: read {v!r} at offset {o}, which "
                            f"nobody sent to this topic", op.get("start"), topic=name, partition=p,
                            offset=o, value=v)
    return {"steps": dict(sorted(a.items())), "topics": len(steps),
            "metadata_answers": len(polls), "answers_judged": judged,
            "records_acked": sum(len(x) for x in acked.values()), "records_read_back": checked}


def _check_archive(archive: dict, kafka: dict, at: dict, violate) -> dict:
    """Every archive file present must agree with the Kafka read wherever it
    holds an offset, and with every other file holding that offset; its rows
    must lie inside the offsets its name gives, in increasing order, every
    offset of that range the log holds, with the partition of its path. An
    archive behind the log is fine."""
    if archive.get("error"):
        violate("final_read_incomplete", f"archive read: {archive['error']}")
    copies: dict[tuple[str, int, int], dict[object, list[str]]] = defaultdict(dict)
    per_tp: dict[str, Counter] = defaultdict(Counter)
    reach: dict[str, int] = {}
    files = archive.get("files") or []
    bad_files = 0
    for f in files:
        key, topic, p = f.get("key"), f.get("topic"), f.get("partition")
        tp = tpkey(topic, p)
        c = per_tp[tp]
        c["files"] += 1
        if f.get("error"):
            if f.get("vanished") or f.get("skipped"):
                c["not_read"] += 1
            else:
                bad_files += 1
                violate("archive_mismatch", f"{key}: {f['error']}", tp=tp, file=key)
            continue
        records = f.get("records") or []
        c["rows"] += len(records)
        first, last = f.get("first"), f.get("last")
        offsets = [o for o, _ in records]
        problems = []
        pv = f.get("partition_values") or []
        if pv and pv != [p]:
            problems.append(f"its partition column holds {pv}, its path says {p}")
        outside = [o for o in offsets if not first <= o <= last]
        if outside:
            problems.append(f"offsets {ranges(outside)} outside its name's {first}-{last}")
        disorder = [b for a_, b in zip(offsets, offsets[1:]) if b <= a_]
        if disorder:
            problems.append(f"offsets not increasing at {ranges(disorder)}")
        kr = kafka.get(tp) or {}
        if last - first <= 10 * len(offsets) + 10000:
            have = set(offsets)
            lacking = [o for o in range(first, last + 1) if o not in have and (topic, p, o) in at]
            if lacking:
                problems.append(f"lacks offsets {ranges(lacking)} of its range that the log holds")
        elif offsets:
            problems.append(f"its name's range {first}-{last} is far wider than its "
                            f"{len(offsets)} rows")
        wrong, absent = [], []
        for o, v in records:
            copies[(topic, p, o)].setdefault(v, []).append(key)
            held = at.get((topic, p, o), _NOTHING)
            if held is _NOTHING:
                if not kr.get("error"):
                    absent.append(o)
            elif held != v:
                wrong.append((o, v, held))
        if wrong:
            problems.append(f"{len(wrong)} rows differ from the Kafka read, first at offset "
                            f"{wrong[0][0]}: archive {wrong[0][1]!r}, Kafka {wrong[0][2]!r}")
        if absent:
            problems.append(f"offsets {ranges(absent)} are not in the Kafka read (hw "
                            f"{kr.get('hw')})")
        if offsets:
            reach[tp] = max(reach.get(tp, 0), max(offsets) + 1)
        if problems:
            bad_files += 1
            violate("archive_mismatch", f"{key}: " + "; ".join(problems), tp=tp, file=key,
                    wrong=[list(w) for w in wrong[:20]], absent=absent[:50])
    disagree = [(k, vals) for k, vals in copies.items() if len(vals) > 1]
    for (topic, p, o), vals in sorted(disagree, key=lambda x: (x[0][0], x[0][1], x[0][2]))[:50]:
        violate("archive_mismatch", f"{tpkey(topic, p)}@{o}: archive files disagree: "
                + "; ".join(f"{v!r} in {', '.join(ks[:3])}" for v, ks in vals.items()),
                tp=tpkey(topic, p), offset=o, copies={str(v): ks[:5] for v, ks in vals.items()})
    if len(disagree) > 50:
        violate("archive_mismatch", f"... {len(disagree)} offsets whose archive copies disagree")
    for (topic, p, _o) in copies:
        per_tp[tpkey(topic, p)]["offsets"] += 1
    rows = []
    for tp in sorted(set(per_tp) | set(kafka), key=parse_tp):
        c = per_tp.get(tp, Counter())
        rows.append({"tp": tp, "files": c["files"], "not_read": c["not_read"], "rows": c["rows"],
                     "offsets": c["offsets"], "reach": reach.get(tp, 0),
                     "hw": (kafka.get(tp) or {}).get("hw")})
    return {"files": len(files), "bad_files": bad_files, "offsets": len(copies),
            "rows": sum(r["rows"] for r in rows), "disagreeing_offsets": len(disagree),
            "waited": archive.get("waited"), "partitions": rows}


def _neighbour_time(history: list[dict], topic: str, partition: int, offset: int) -> float | None:
    """When the records acknowledged next to ``offset`` were acknowledged: the
    best guess of when something happened to that offset."""
    best = None
    for op in history:
        if op.get("kind") == "send" and op.get("outcome") == "ok" and \
                op.get("topic") == topic and op.get("ack_partition") == partition and \
                isinstance(op.get("offset"), int) and abs(op["offset"] - offset) <= 2:
            if best is None or abs(op["offset"] - offset) < abs(best["offset"] - offset):
                best = op
    return best["end"] if best else None


# --------------------------------------------------------------------------
# the results table

def format_table(result: CheckResult) -> str:
    st = result.stats
    out: list[str] = []

    def section(title: str, rows: list[tuple], header: tuple | None = None) -> None:
        out.append(f"\n== {title}")
        if header:
            rows = [header] + rows
        if not rows:
            out.append("  (none)")
            return
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        for n, r in enumerate(rows):
            out.append("  " + "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                        for i, (c, w) in enumerate(zip(r, widths))))
            if header and n == 0:
                out.append("  " + "  ".join("-" * w for w in widths))

    ops: dict[str, Counter] = defaultdict(Counter)
    for k, n in st.get("ops", {}).items():
        kind, _, outcome = k.partition("/")
        ops[kind][outcome] += n
    section("operations by kind and outcome",
            [(k, c["ok"], c["fail"], c["info"], sum(c.values()) - c["ok"] - c["fail"] - c["info"])
             for k, c in sorted(ops.items())], ("kind", "ok", "fail", "info", "other"))
    sends: dict[str, Counter] = defaultdict(Counter)
    for k, n in st.get("sends", {}).items():
        proc, _, outcome = k.partition("/")
        sends[proc][outcome] += n
    section("sends by producer", [(p, c["ok"], c["fail"], c["info"]) for p, c in sorted(sends.items())],
            ("producer", "ok", "fail", "info"))
    faults: dict[str, Counter] = defaultdict(Counter)
    for k, n in st.get("faults", {}).items():
        kind, _, outcome = k.partition("/")
        faults[kind][outcome] += n
    section("faults injected", [(k, sum(c.values()), c["ok"], sum(c.values()) - c["ok"])
                                for k, c in sorted(faults.items())],
            ("fault", "injected", "healed ok", "heal problems"))
    rec = st.get("records", {})
    section("records", [
        ("sent", rec.get("sent", 0)),
        ("acknowledged (ok)", rec.get("acked", 0)),
        ("in the log (Kafka read)", rec.get("in_log", 0)),
        ("LOST (acked, not in log)", rec.get("lost", 0)),
        ("MOVED (acked, other offset)", rec.get("moved", 0)),
        ("DUPLICATED (must be once)", rec.get("duplicated", 0)),
        ("duplicated, allowed (plain producer retries)", rec.get("duplicated_allowed", 0)),
        ("duplicated, librdkafka epoch bump after an in-flight timeout",
         rec.get("duplicated_epoch_bump", 0)),
        ("UNEXPECTED (never sent)", rec.get("unexpected", 0)),
        ("indeterminate: present / absent", f"{rec.get('info_present', 0)} / {rec.get('info_absent', 0)}"),
        ("failed: present / absent", f"{rec.get('fail_present', 0)} / {rec.get('fail_absent', 0)}"),
    ])
    section("offset density per partition (Kafka read, 0..hw)",
            [(r["tp"], r["log_start"], r["hw"], r["read"], r["missing"], r["repeats"],
              "yes" if r["dense"] else "NO") for r in st.get("partitions", [])],
            ("partition", "log start", "hw", "read", "missing", "repeats", "dense"))
    grp = st.get("group", {})
    section("consumer group", [(k, v) for k, v in grp.items()])
    section("group resume (fresh member after the run)",
            [(r["tp"], r["last_commit"], r["committed"], r["first_offset"], r["hw"],
              "ok" if r["ok"] else "VIOLATION") for r in st.get("resume", [])],
            ("partition", "last ok commit", "OffsetFetch", "first record", "hw", "check"))
    solo = st.get("standalone") or {}
    if solo.get("partitions"):
        section("standalone consumer (assign, no group; offsets must be 0, 1, 2, ...)",
                [(f"{r['process']} {r['tp']}", r["consumed"], r["instances"],
                  r["discontinuities"], r["position"], r["target"])
                 for r in solo["partitions"]],
                ("partition", "given", "instances", "skips", "end position", "target hw"))
        out.append(f"  restarts {solo.get('restarts', 0)}, records not in the final log "
                   f"{solo.get('not_in_log', 0)}")
    adm = st.get("admin") or {}
    if adm.get("steps"):
        steps: dict[str, Counter] = defaultdict(Counter)
        for k, n in adm["steps"].items():
            action, _, outcome = k.partition("/")
            steps[action][outcome] += n
        section("admin operations (admin topics)",
                [(k, c["ok"], c["fail"], c["info"]) for k, c in sorted(steps.items())],
                ("action", "ok", "fail", "info"))
        out.append(f"  topics {adm.get('topics', 0)}, Metadata answers "
                   f"{adm.get('metadata_answers', 0)} ({adm.get('answers_judged', 0)} from "
                   f"quiet nodes, judged), records acknowledged {adm.get('records_acked', 0)}, "
                   f"checked against a read {adm.get('records_read_back', 0)}")
    arch = st.get("archive")
    if arch is not None:
        section("Parquet archive (every file in the store, read with pyarrow)",
                [(r["tp"], r["files"], r["not_read"], r["rows"], r["offsets"], r["reach"], r["hw"])
                 for r in arch.get("partitions", [])],
                ("partition", "files", "not read", "rows", "offsets", "reach", "hw"))
        out.append(f"  files {arch.get('files', 0)}, bad {arch.get('bad_files', 0)}, offsets "
                   f"whose copies disagree {arch.get('disagreeing_offsets', 0)}, waited "
                   f"{arch.get('waited')} s for a file per partition")
    counts = Counter(v.kind for v in result.violations)
    section("violations", [(k, counts[k]) for k in KINDS if counts.get(k)])
    out.append("\nRESULT: " + ("PASS (no violation)" if result.ok else
                               f"FAIL ({len(result.violations)} violations)"))
    return "\n".join(out)
