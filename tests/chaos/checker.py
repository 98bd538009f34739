"""The independent checker of a chaos run: pure functions over the operation
history (``history.jsonl``) and the final read (``final_read.json``).

It links nothing of sluice: what it knows comes from what the workload's
clients were told (delivery reports, commit results) and what they read back
over Kafka and HTTP.

History operations (one JSON object each; every op has ``process``, ``kind``,
``start``, ``end`` (wall clock, seconds) and ``outcome`` in ok|fail|info):

* ``send``    a produce of one record: ``client``, ``idempotent``,
              ``dup_allowed`` (a non-idempotent producer that retries may
              store a record twice), ``topic``, ``partition`` (where it was
              sent), ``value`` (unique), on ok ``ack_partition`` and
              ``offset``; on fail/info ``error``.
* ``consume`` a record a group member saw: ``group``, ``topic``,
              ``partition``, ``offset``, ``value``.
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
              was in flight (see ``timeout_bump_during``).

The final read::

    {"kafka": {"topic/p": {"log_start": int, "hw": int,
                           "records": [[offset, value], ...], "error": str|None}},
     "http":  {"node1": {"topic/p": {...same...}}, ...}}

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
)


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

def timeout_bump_during(bumps: dict[object, list[dict]], send: dict) -> dict | None:
    """The epoch bump, if any, that librdkafka made while ``send`` was in
    flight because a message timed out in flight: the one case in which
    librdkafka itself may store an idempotent record twice (it re-sends the
    abandoned request's other messages under the new epoch; documented in
    its INTRODUCTION.md). Bumps for other reasons excuse nothing."""
    for bump in bumps.get(send.get("process"), ()):
        if ("timed out" in (bump.get("reason") or "")
                and send.get("start", 0) <= bump.get("start", -1) <= send.get("end", 0)):
            return bump
    return None


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
            bump = timeout_bump_during(bumps, op) if len(places) == 2 else None
            if op.get("dup_allowed"):
                s["duplicated_allowed"] += 1
            elif bump is not None:
                s["duplicated_epoch_bump"] += 1
                if len(bump_dups) < 20:
                    bump_dups.append({"value": v, "places": [list(x) for x in places],
                                      "epoch": bump.get("epoch"), "reason": bump.get("reason")})
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
    for op in by_kind["consume"]:
        gk = (op.get("group"), op.get("topic"), op.get("partition"))
        seen[gk].add(op.get("offset"))
        g["consumed"] += 1
        stored = at.get((op.get("topic"), op.get("partition"), op.get("offset")), _NOTHING)
        if stored != op.get("value"):
            key = tpkey(op.get("topic"), op.get("partition"))
            g["consumed_not_in_log"] += 1
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
    stats["violations"] = dict(Counter(v.kind for v in violations))
    order = {k: i for i, k in enumerate(KINDS)}
    violations.sort(key=lambda v: (order.get(v.kind, 99), v.time or 0))
    return CheckResult(violations, stats)


_NOTHING = object()


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
    counts = Counter(v.kind for v in result.violations)
    section("violations", [(k, counts[k]) for k in KINDS if counts.get(k)])
    out.append("\nRESULT: " + ("PASS (no violation)" if result.ok else
                               f"FAIL ({len(result.violations)} violations)"))
    return "\n".join(out)
