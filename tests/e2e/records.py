"""Kafka's default partitioner, and the bookkeeping that lets a test state
precisely what was sent, what was acknowledged at which offset, what failed
and what is unknown, and check a read-back against it."""

from __future__ import annotations

import itertools
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import requests

from http_api import Api, b64, unb64, parse_concatenated_json

# --------------------------------------------------------------------------
# Kafka's default partitioner
# --------------------------------------------------------------------------

def murmur2(data: bytes) -> int:
    """Kafka's Utils.murmur2 (signed 32-bit result)."""
    m, r = 0x5BD1E995, 24
    mask = 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(0, length - length % 4, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    rem = length % 4
    base = length - rem
    if rem == 3:
        h ^= data[base + 2] << 16
    if rem >= 2:
        h ^= data[base + 1] << 8
    if rem >= 1:
        h ^= data[base]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def kafka_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


# --------------------------------------------------------------------------
# records and bookkeeping
# --------------------------------------------------------------------------

RID_HEADER = "rid"


@dataclass
class Rec:
    """One record as sent.  Every record carries its unique id in header 'rid'."""
    rid: str
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int | None = None  # explicit partition_id, if any

    def all_headers(self) -> list[tuple[str, bytes]]:
        return [(RID_HEADER, self.rid.encode())] + self.headers

    def to_json(self) -> dict:
        d: dict = {}
        if self.partition is not None:
            d["partition_id"] = self.partition
        if self.key is not None:
            d["key"] = {"type": "BINARY", "data": b64(self.key)}
        if self.value is not None:
            d["value"] = {"type": "BINARY", "data": b64(self.value)}
        d["headers"] = [{"name": n, "value": b64(v)} for n, v in self.all_headers()]
        return d


def _header_bytes(v) -> list[bytes]:
    """Candidate decodings of a header value in a binary-format read line."""
    if v is None:
        return [b""]
    out = []
    if isinstance(v, str):
        try:
            out.append(unb64(v))
        except ValueError:
            pass
        out.append(v.encode())
    return out


_RID_RE = re.compile(r"^[A-Za-z0-9_.]+-[0-9]{7}$")


def line_rid(line: dict) -> str | None:
    for h in line.get("headers") or []:
        if h.get("name") == RID_HEADER:
            for cand in _header_bytes(h.get("value")):
                s = cand.decode("ascii", "replace")
                if _RID_RE.match(s):
                    return s
    return None


def line_matches(line: dict, rec: Rec) -> str | None:
    """None if the binary-format read line holds exactly ``rec``; else why not."""
    def dec(v):
        return None if v is None else unb64(v)
    try:
        if dec(line.get("key")) != rec.key:
            return f"key {line.get('key')!r} != {rec.key!r}"
        if dec(line.get("value")) != rec.value:
            want = None if rec.value is None else b64(rec.value)
            return f"value {str(line.get('value'))[:80]!r} != {str(want)[:80]!r}"
    except ValueError as e:
        return f"undecodable base64 in {line!r:.200}: {e}"
    got = line.get("headers") or []
    want = rec.all_headers()
    if len(got) != len(want):
        return f"headers {got!r} != {want!r}"
    for g, (name, value) in zip(got, want):
        if g.get("name") != name or value not in _header_bytes(g.get("value")):
            return f"header {g!r} != ({name!r}, {value!r})"
    if not isinstance(line.get("timestamp"), int):
        return f"timestamp {line.get('timestamp')!r} is not an int (ms)"
    return None


class ProduceLog:
    """Thread-safe record of what was sent and what happened to it.

    * acked:   rid -> (partition, offset)  (sluice said it is stored)
    * failed:  rid -> (error_code, message) (sluice said it is NOT stored)
    * unknown: rids whose request got no answer (connection died, timeout)
    """

    def __init__(self, prefix: str = "r"):
        self.prefix = prefix
        self._ids = itertools.count()
        self.lock = threading.Lock()
        self.sent: dict[str, Rec] = {}
        self.acked: dict[str, tuple[int, int]] = {}
        self.failed: dict[str, tuple[int, str]] = {}
        self.unknown: set[str] = set()
        self.by_offset: dict[tuple[int, int], str] = {}
        self.problems: list[str] = []
        self.events: list[tuple[float, str, int]] = []  # (monotonic, kind, http status)

    def new(self, value: bytes | None, key: bytes | None = None,
            headers: list[tuple[str, bytes]] | None = None,
            partition: int | None = None) -> Rec:
        rid = f"{self.prefix}-{next(self._ids):07d}"
        rec = Rec(rid, value, key, headers or [], partition)
        with self.lock:
            self.sent[rid] = rec
        return rec

    def ack(self, rid: str, partition, offset) -> None:
        with self.lock:
            if not isinstance(partition, int) or not isinstance(offset, int):
                self.problems.append(f"{rid}: ack without int partition/offset: {partition!r} {offset!r}")
                return
            rec = self.sent[rid]
            if rec.partition is not None and rec.partition != partition:
                self.problems.append(f"{rid}: sent to partition {rec.partition}, acked on {partition}")
            prev = self.by_offset.get((partition, offset))
            if prev is not None:
                self.problems.append(f"{rid} and {prev} both acknowledged at {partition}/{offset}")
            if rid in self.acked or rid in self.failed:
                self.problems.append(f"{rid}: answered twice")
            self.by_offset[(partition, offset)] = rid
            self.acked[rid] = (partition, offset)

    def fail(self, rid: str, code, message: str = "") -> None:
        with self.lock:
            if rid in self.acked or rid in self.failed:
                self.problems.append(f"{rid}: answered twice")
            self.failed[rid] = (code, message)

    def lost(self, rid: str) -> None:
        with self.lock:
            self.unknown.add(rid)

    def event(self, kind: str, status: int) -> None:
        with self.lock:
            self.events.append((time.monotonic(), kind, status))

    def acked_per_partition(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for p, _ in self.acked.values():
            out[p] = out.get(p, 0) + 1
        return out

    def assert_no_problems(self) -> None:
        assert not self.problems, "acknowledgement problems:\n" + "\n".join(self.problems[:30])


def random_record(log: ProduceLog, rng: random.Random, partitions: int, *,
                  p_explicit: float = 0.25, p_keyless: float = 0.1,
                  p_null_value: float = 0.03, p_extra_header: float = 0.3,
                  max_value: int = 200) -> Rec:
    partition = rng.randrange(partitions) if rng.random() < p_explicit else None
    key = None if rng.random() < p_keyless else rng.randbytes(rng.randint(1, 16))
    value = None if rng.random() < p_null_value else rng.randbytes(rng.randint(0, max_value))
    headers = []
    if rng.random() < p_extra_header:
        headers.append((f"h{rng.randrange(3)}", rng.randbytes(rng.randint(0, 24))))
    return log.new(value, key, headers, partition)


def send_batch(api: Api, topic: str, log: ProduceLog, recs: list[Rec],
               timeout: float = 60) -> requests.Response | None:
    """POST records-batch and file every record as acked/failed/unknown."""
    entries = []
    for i, rec in enumerate(recs):
        e = rec.to_json()
        e["id"] = str(i)
        entries.append(e)
    try:
        r = api.produce_batch_raw(topic, {"entries": entries}, timeout=timeout)
    except requests.RequestException:
        for rec in recs:
            log.lost(rec.rid)
        log.event("batch", 0)
        return None
    log.event("batch", r.status_code)
    if r.status_code in (200, 207):
        try:
            body = r.json()
        except ValueError:
            with log.lock:
                log.problems.append(f"batch {r.status_code} body is not JSON: {r.text[:300]!r}")
            for rec in recs:
                log.lost(rec.rid)
            return r
        answered = set()
        for s in body.get("successes") or []:
            i = int(s["id"])
            answered.add(i)
            log.ack(recs[i].rid, s.get("partition_id"), s.get("offset"))
        for f in body.get("failures") or []:
            i = int(f["id"])
            answered.add(i)
            log.fail(recs[i].rid, f.get("error_code"), f.get("message", ""))
        missing = set(range(len(recs))) - answered
        if missing:
            with log.lock:
                log.problems.append(f"batch answer lacks ids {sorted(missing)[:10]}")
            for i in missing:
                log.lost(recs[i].rid)
        if r.status_code == 200 and body.get("failures"):
            with log.lock:
                log.problems.append("records-batch HTTP 200 with failures")
        if r.status_code == 207 and not body.get("failures"):
            with log.lock:
                log.problems.append("records-batch HTTP 207 without failures")
    else:
        code, msg = r.status_code, r.text[:200]
        for rec in recs:
            log.fail(rec.rid, code, msg)
    return r


def send_single(api: Api, topic: str, log: ProduceLog, rec: Rec,
                timeout: float = 60) -> requests.Response | None:
    try:
        r = api.produce_one(topic, rec.to_json(), timeout=timeout)
    except requests.RequestException:
        log.lost(rec.rid)
        log.event("single", 0)
        return None
    log.event("single", r.status_code)
    try:
        body = r.json()
    except ValueError:
        body = {}
    if r.status_code == 200:
        if body.get("error_code") != 200:
            with log.lock:
                log.problems.append(f"HTTP 200 with report {body!r:.300}")
        log.ack(rec.rid, body.get("partition_id"), body.get("offset"))
    else:
        if body.get("error_code") != r.status_code:
            with log.lock:
                log.problems.append(f"HTTP {r.status_code} with error_code {body.get('error_code')!r}")
        log.fail(rec.rid, r.status_code, body.get("message", r.text[:200]))
    return r


def send_stream(api: Api, topic: str, log: ProduceLog, recs: list[Rec],
                timeout: float = 60) -> requests.Response | None:
    """Several concatenated record objects in one /records body."""
    try:
        r = api.produce_stream(topic, [rec.to_json() for rec in recs], timeout=timeout)
    except requests.RequestException:
        for rec in recs:
            log.lost(rec.rid)
        log.event("stream", 0)
        return None
    log.event("stream", r.status_code)
    if r.status_code != 200:
        for rec in recs:
            log.fail(rec.rid, r.status_code, r.text[:200])
        return r
    try:
        reports = parse_concatenated_json(r.text)
    except ValueError:
        with log.lock:
            log.problems.append(f"stream answer is not concatenated JSON: {r.text[:300]!r}")
        for rec in recs:
            log.lost(rec.rid)
        return r
    if len(reports) != len(recs):
        with log.lock:
            log.problems.append(f"stream of {len(recs)} records got {len(reports)} reports")
    for rec, rep in zip(recs, reports):
        if rep.get("error_code") == 200:
            log.ack(rec.rid, rep.get("partition_id"), rep.get("offset"))
        else:
            log.fail(rec.rid, rep.get("error_code"), rep.get("message", ""))
    for rec in recs[len(reports):]:
        log.lost(rec.rid)
    return r


class Workers:
    """Run producer loops in threads; re-raise their exceptions on join."""

    def __init__(self):
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def spawn(self, fn: Callable[..., None], *args, **kw) -> None:
        def run():
            try:
                fn(*args, **kw)
            except BaseException as e:  # noqa: BLE001
                self.errors.append(e)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self, timeout: float = 120) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        alive = [t for t in self.threads if t.is_alive()]
        assert not alive, f"{len(alive)} producer threads still running after {timeout}s"
        if self.errors:
            raise self.errors[0]


def produce_loop(api: Api, topic: str, log: ProduceLog, stop: threading.Event, *,
                 partitions: int, seed: int, mode: str = "batch", batch: int = 50,
                 max_requests: int | None = None, explicit_only: bool = False,
                 pause: float = 0.0, give_up_after_errors: int | None = None) -> None:
    """Produce until ``stop`` is set (or ``max_requests``), filing every result."""
    api = api.with_new_session()
    rng = random.Random(seed)
    n = 0
    conn_errors = 0
    while not stop.is_set() and (max_requests is None or n < max_requests):
        kw = {"p_explicit": 1.0} if explicit_only else {}
        if mode == "single":
            r = send_single(api, topic, log, random_record(log, rng, partitions, **kw))
        else:
            recs = [random_record(log, rng, partitions, **kw) for _ in range(batch)]
            sender = send_batch if mode == "batch" else send_stream
            r = sender(api, topic, log, recs)
        n += 1
        conn_errors = conn_errors + 1 if r is None else 0
        if give_up_after_errors and conn_errors >= give_up_after_errors:
            return
        if r is None:
            time.sleep(0.05)
        elif pause:
            time.sleep(pause)


def verify_log(api: Api, topic: str, partitions: int, log: ProduceLog, *,
               exact: bool = False, hw_timeout: float = 20) -> dict[int, list[dict]]:
    """Read every partition back and check it against ``log``.

    * offsets are dense from 0 up to the high watermark (log start 0);
    * every record read carries a rid that was sent, is byte-equal to what was
      sent, appears once, and sits at its acknowledged (partition, offset);
    * a record read that was not acknowledged must be 'unknown' (never one
      that sluice answered with an error);
    * every acknowledged record is read back;
    * explicit partition_ids and keyed records land where they must;
    * ``exact``: nothing but acknowledged records (no unknowns expected).
    """
    log.assert_no_problems()
    need: dict[int, int] = {}
    for p, off in log.acked.values():
        need[p] = max(need.get(p, 0), off + 1)
    problems: list[str] = []
    seen: dict[str, tuple[int, int]] = {}
    reads: dict[int, list[dict]] = {}
    for p in range(partitions):
        o = api.offsets(topic, p)
        assert o["log_start_offset"] == 0, f"{topic}/{p}: log_start_offset {o}"
        hw = api.wait_high_watermark(topic, p, need.get(p, 0), timeout=hw_timeout)
        lines = api.read_range(topic, p, 0, hw)
        reads[p] = lines
        for line in lines:
            off = line["offset"]
            rid = line_rid(line)
            if rid is None or rid not in log.sent:
                problems.append(f"{p}/{off}: record with no known rid: {line!r:.300}")
                continue
            if rid in seen:
                problems.append(f"{rid} read twice: at {seen[rid]} and {(p, off)}")
            seen[rid] = (p, off)
            rec = log.sent[rid]
            why = line_matches(line, rec)
            if why:
                problems.append(f"{p}/{off} ({rid}) content differs: {why}")
            if rec.partition is not None and rec.partition != p:
                problems.append(f"{rid}: sent to partition {rec.partition}, read on {p}")
            if rec.partition is None and rec.key is not None and \
                    kafka_partition(rec.key, partitions) != p:
                problems.append(f"{rid}: key {rec.key!r} belongs on partition "
                                f"{kafka_partition(rec.key, partitions)} (murmur2), read on {p}")
            if rid in log.acked:
                if log.acked[rid] != (p, off):
                    problems.append(f"{rid} acknowledged at {log.acked[rid]}, read at {(p, off)}")
            elif rid in log.failed:
                problems.append(f"{rid} was answered with error {log.failed[rid]} "
                                f"but is readable at {(p, off)}")
            elif rid not in log.unknown:
                problems.append(f"{rid} readable at {(p, off)} but never answered nor lost")
            elif exact:
                problems.append(f"{rid} (unanswered) readable at {(p, off)}")
    missing = [rid for rid in log.acked if rid not in seen]
    for rid in missing[:20]:
        problems.append(f"acknowledged {rid} at {log.acked[rid]} is missing")
    if len(missing) > 20:
        problems.append(f"... {len(missing)} acknowledged records missing in total")
    assert not problems, (f"{topic}: {len(problems)} problems (acked={len(log.acked)} "
                          f"failed={len(log.failed)} unknown={len(log.unknown)}):\n"
                          + "\n".join(problems[:40]))
    return reads

