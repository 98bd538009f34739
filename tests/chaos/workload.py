"""The clients of a chaos run: producers (idempotent and plain Kafka, HTTP),
one consumer group, and the reads after the run (final read over Kafka and
HTTP, a fresh member of the group). Everything they are told goes to the
history; nothing here judges it (that is checker.py's job).

Every value is unique and names its producer: ``<process>-<seq:06d>``.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
import uuid
from functools import partial

import requests
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from checker import tpkey
from history import History, now

# A delivery error after which the record may or may not be stored.
INDETERMINATE = {
    KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
    KafkaError.REQUEST_TIMED_OUT, KafkaError.NETWORK_EXCEPTION, KafkaError._PURGE_INFLIGHT,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT_QUEUE, KafkaError._FATAL, KafkaError._DESTROY,
    KafkaError.UNKNOWN_PRODUCER_ID, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    KafkaError.INVALID_PRODUCER_EPOCH, KafkaError._INCONSISTENT,
}
# A commit error that means the commit was refused.
COMMIT_REFUSED = {
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID, KafkaError.FENCED_INSTANCE_ID, KafkaError._NO_OFFSET,
    KafkaError._ASSIGNMENT_LOST,
}
MAX_CLIENT_ERRORS_LOGGED = 40  # per process and error name; the rest are only counted

# librdkafka's own log lines go here (campaign.py points it at a file), not to stderr.
CLIENT_LOGGER = None


class EpochBumps(logging.Handler):
    """Files librdkafka's idempotent epoch bumps (its ``eos`` debug lines) in
    the history as ``epoch_bump`` ops with the reason librdkafka gave.

    The checker needs them: when a message times out while its request is in
    flight, librdkafka bumps the producer epoch and sends the request's other
    messages again under the new epoch with new sequence numbers. If the
    abandoned request was stored after all, those messages are stored twice,
    on Kafka as on sluice; librdkafka documents this (INTRODUCTION.md,
    "message timeouts" with the idempotent producer)."""

    DRAIN = re.compile(r"\[([^#\]]+)#producer-\d+\].*Beginning partition drain .*epoch bump"
                       r"[^:]*: (.*)$")
    BUMPED = re.compile(r"\[([^#\]]+)#producer-\d+\].*bumped epoch to "
                        r"PID\{Id:(\d+),Epoch:(\d+)\}")

    def __init__(self, history: History):
        super().__init__(logging.DEBUG)
        self.history = history
        self.reason: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = record.getMessage()
        except Exception:  # noqa: BLE001 - a line we cannot format is not ours
            return
        if m := self.DRAIN.search(line):
            self.reason[m.group(1)] = m.group(2)[:200]
        elif m := self.BUMPED.search(line):
            t = now()
            self.history.record({"process": m.group(1), "kind": "epoch_bump", "start": t,
                                 "end": t, "outcome": "ok", "producer_id": int(m.group(2)),
                                 "epoch": int(m.group(3)),
                                 "reason": self.reason.pop(m.group(1), "")})


def client_conf(conf: dict) -> dict:
    if CLIENT_LOGGER is not None:
        conf["logger"] = CLIENT_LOGGER
    return conf


def send_outcome(err: KafkaError) -> str:
    return "info" if err.code() in INDETERMINATE or err.retriable() else "fail"


class Worker(threading.Thread):
    """A daemon thread that files its own crash as a ``harness_error``."""

    def __init__(self, name: str, history: History):
        super().__init__(name=name, daemon=True)
        self.history = history
        self.error_counts: dict[str, int] = {}

    def run(self) -> None:
        try:
            self.body()
        except BaseException as e:  # noqa: BLE001
            import traceback
            self.history.record({"process": self.name, "kind": "harness_error", "start": now(),
                                 "outcome": "fail", "error": f"{e!r}",
                                 "traceback": traceback.format_exc()[-3000:]})
            self.on_crash()

    def body(self) -> None:
        raise NotImplementedError

    def on_crash(self) -> None:
        """File what the crashed thread still owed to the history."""

    def client_error(self, err: KafkaError) -> None:
        name = err.name()
        n = self.error_counts[name] = self.error_counts.get(name, 0) + 1
        if n <= MAX_CLIENT_ERRORS_LOGGED or err.fatal():
            self.history.record({"process": self.name, "kind": "client_error", "start": now(),
                                 "outcome": "fail" if err.fatal() else "info", "error": name,
                                 "fatal": err.fatal(), "message": str(err)[:300], "n": n})


# --------------------------------------------------------------------------
# producers

class KafkaProducerProc(Worker):
    """One confluent-kafka producer sending unique values at a seeded pace."""

    def __init__(self, name: str, history: History, bootstrap: str, topics: list[str],
                 partitions: int, seed: int, stop: threading.Event, *, idempotent: bool,
                 pace: tuple[float, float] = (0.01, 0.05),
                 plan: list[tuple[str, int]] | None = None, message_timeout_ms: int = 20000):
        super().__init__(name, history)
        self.message_timeout_ms = message_timeout_ms
        self.plan = list(plan) if plan is not None else None  # send exactly these, then stop
        self.bootstrap, self.topics, self.partitions = bootstrap, topics, partitions
        self.rng = random.Random(f"{seed}/{name}")
        self.stop, self.idempotent, self.pace = stop, idempotent, pace
        self.pending: dict[str, tuple[str, int, float]] = {}  # bounded by the client's queue
        self.fatal = False
        self.producers = 0

    def conf(self) -> dict:
        c = {
            "bootstrap.servers": self.bootstrap,
            "client.id": self.name,
            "acks": "all",
            "enable.idempotence": self.idempotent,
            "linger.ms": 5,
            # A short message timeout turns some sends during a fault into
            # indeterminate outcomes (the checker's "may appear once" path).
            "message.timeout.ms": self.message_timeout_ms,
            "request.timeout.ms": min(5000, self.message_timeout_ms // 2),
            "retry.backoff.ms": 100,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 1000,
            "topic.metadata.refresh.interval.ms": 2000,
            "queue.buffering.max.messages": 5000,
            "error_cb": self.on_error,
        }
        client_conf(c)
        if self.idempotent:
            c["debug"] = "eos"  # idempotence state changes, to clients.log
        if not self.idempotent:
            c["retries"] = 1000000  # a retried send may be stored twice: allowed
            c["max.in.flight.requests.per.connection"] = 5
        return c

    def on_error(self, err: KafkaError) -> None:
        if err.fatal():
            if self.fatal:
                return  # already filed for this producer instance
            self.fatal = True
        self.client_error(err)

    def raised(self, e: KafkaException) -> None:
        """poll()/flush() raise a fatal error (as well as, or instead of, error_cb)."""
        err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
        if err is not None and err.fatal():
            self.on_error(err)
        else:
            raise e

    def on_crash(self) -> None:
        self.unreported("producer thread crashed")

    def report(self, value: str, topic: str, partition: int, start: float,
               err: KafkaError | None, msg) -> None:
        self.pending.pop(value, None)
        op = {"process": self.name, "kind": "send", "client": "kafka",
              "idempotent": self.idempotent, "dup_allowed": not self.idempotent,
              "producer": self.producers, "topic": topic, "partition": partition,
              "value": value, "start": start, "end": now()}
        if err is None:
            op.update(outcome="ok", ack_partition=msg.partition(), offset=msg.offset())
        else:
            op.update(outcome=send_outcome(err), error=err.name(), code=err.code(),
                      message=str(err)[:200])
        self.history.record(op)

    def unreported(self, why: str) -> None:
        for value, (topic, partition, start) in list(self.pending.items()):
            self.history.record({"process": self.name, "kind": "send", "client": "kafka",
                                 "idempotent": self.idempotent, "dup_allowed": not self.idempotent,
                                 "producer": self.producers, "topic": topic,
                                 "partition": partition, "value": value, "start": start,
                                 "end": now(), "outcome": "info", "error": why})
        self.pending.clear()

    def drain(self, producer: Producer, timeout: float) -> None:
        """Wait (bounded) for every delivery report; purge what is left (its
        reports say indeterminate); file anything never reported."""
        deadline = time.monotonic() + timeout
        purged_at = None
        while len(producer) > 0:
            if purged_at is None and (self.fatal or time.monotonic() > deadline):
                producer.purge(in_queue=True, in_flight=True, blocking=False)
                purged_at = time.monotonic()
            if purged_at is not None and time.monotonic() > purged_at + 10:
                break
            try:
                producer.poll(0.2)
            except KafkaException as e:
                self.raised(e)
        self.unreported("no delivery report")

    def body(self) -> None:
        producer = Producer(self.conf())
        self.producers = 1
        seq = 0
        while not self.stop.is_set() and (self.plan is None or self.plan):
            if self.fatal:
                # The idempotent producer is unusable: file it, start another one.
                self.history.record({"process": self.name, "kind": "producer_reset",
                                     "start": now(), "outcome": "info",
                                     "instance": self.producers})
                self.drain(producer, 5)
                producer = Producer(self.conf())
                self.producers += 1
                self.fatal = False
            if self.plan is not None:
                topic, partition = self.plan.pop(0)
            else:
                topic = self.rng.choice(self.topics)
                partition = self.rng.randrange(self.partitions)
            value = f"{self.name}-{seq:06d}"
            seq += 1
            start = now()
            self.pending[value] = (topic, partition, start)
            while True:
                try:
                    producer.produce(topic, value=value.encode(), partition=partition,
                                     on_delivery=partial(self.report, value, topic, partition,
                                                         start))
                    break
                except BufferError:
                    try:
                        producer.poll(0.2)
                    except KafkaException as e:
                        self.raised(e)
                    if self.stop.is_set():
                        self.pending.pop(value, None)
                        self.history.record({
                            "process": self.name, "kind": "send", "client": "kafka",
                            "idempotent": self.idempotent, "dup_allowed": not self.idempotent,
                            "producer": self.producers, "topic": topic, "partition": partition,
                            "value": value, "start": start, "end": now(), "outcome": "fail",
                            "error": "queue full, never enqueued"})
                        break
                except KafkaException as e:
                    self.pending.pop(value, None)
                    self.history.record({
                        "process": self.name, "kind": "send", "client": "kafka",
                        "idempotent": self.idempotent, "dup_allowed": not self.idempotent,
                        "producer": self.producers, "topic": topic, "partition": partition,
                        "value": value, "start": start, "end": now(), "outcome": "fail",
                        "error": f"produce() raised {e!r}"[:300]})
                    time.sleep(0.2)
                    break
            try:
                producer.poll(0)
            except KafkaException as e:
                self.raised(e)
            if self.plan is None:
                self.stop.wait(self.rng.uniform(*self.pace))
        self.drain(producer, 60)


class HttpProducerProc(Worker):
    """POSTs small records-batch requests to a random node; never retries."""

    def __init__(self, name: str, history: History, urls: list[str], cluster_id: str,
                 topics: list[str], partitions: int, seed: int, stop: threading.Event,
                 pace: tuple[float, float] = (0.1, 0.4), read_timeout: float = 5.0):
        super().__init__(name, history)
        self.read_timeout = read_timeout
        self.urls, self.cluster_id, self.topics, self.partitions = urls, cluster_id, topics, partitions
        self.rng = random.Random(f"{seed}/{name}")
        self.stop, self.pace = stop, pace

    def body(self) -> None:
        seq = 0
        while not self.stop.is_set():
            url = self.rng.choice(self.urls)
            topic = self.rng.choice(self.topics)
            recs = []
            for _ in range(self.rng.randint(1, 10)):
                recs.append((f"{self.name}-{seq:06d}", self.rng.randrange(self.partitions)))
                seq += 1
            self.send(url, topic, recs)
            self.stop.wait(self.rng.uniform(*self.pace))

    def send(self, url: str, topic: str, recs: list[tuple[str, int]]) -> None:
        body = {"entries": [{"id": str(i), "partition_id": p,
                             "value": {"type": "STRING", "data": v}}
                            for i, (v, p) in enumerate(recs)]}
        start = now()
        base = {"process": self.name, "kind": "send", "client": "http", "idempotent": False,
                "dup_allowed": False, "topic": topic, "node": url, "start": start}
        results: dict[int, dict] = {}
        try:
            # A new connection each time: a pooled one to a killed node would
            # turn "never sent" into "indeterminate".
            r = requests.post(f"{url}/v3/clusters/{self.cluster_id}/topics/{topic}/records-batch",
                              data=json.dumps(body), timeout=(2, self.read_timeout),
                              headers={"Content-Type": "application/json", "Connection": "close"})
        except requests.ConnectTimeout as e:
            results = {i: {"outcome": "fail", "error": f"connect timeout: {e}"[:200]} for i in range(len(recs))}
        except requests.ConnectionError as e:
            refused = "refused" in str(e).lower() or "NewConnectionError" in repr(e)
            results = {i: {"outcome": "fail" if refused else "info",
                           "error": f"{type(e).__name__}: {e}"[:200]} for i in range(len(recs))}
        except requests.RequestException as e:
            results = {i: {"outcome": "info", "error": f"{type(e).__name__}: {e}"[:200]}
                       for i in range(len(recs))}
        else:
            if r.status_code in (200, 207):
                try:
                    answer = r.json()
                except ValueError:
                    answer = {}
                for s in answer.get("successes") or []:
                    results[int(s["id"])] = {"outcome": "ok", "ack_partition": s.get("partition_id"),
                                             "offset": s.get("offset")}
                for f in answer.get("failures") or []:
                    results[int(f["id"])] = {"outcome": "fail", "error": f.get("error_code"),
                                             "message": str(f.get("message"))[:200]}
                for i in range(len(recs)):
                    results.setdefault(i, {"outcome": "info",
                                           "error": f"HTTP {r.status_code}: no answer for id {i}"})
            else:
                results = {i: {"outcome": "fail", "error": r.status_code,
                               "message": r.text[:200]} for i in range(len(recs))}
        end = now()
        for i, (value, partition) in enumerate(recs):
            self.history.record({**base, "partition": partition, "value": value, "end": end,
                                 **results[i]})


# --------------------------------------------------------------------------
# the consumer group

class GroupState:
    """Last successful commit per partition, shared by the group's members."""

    def __init__(self):
        self.lock = threading.Lock()
        self.committed: dict[str, int] = {}

    def ok(self, key: str, offset: int) -> None:
        with self.lock:
            self.committed[key] = max(offset, self.committed.get(key, 0))

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.committed)


class GroupMember(Worker):
    """Consumes a batch, files every record, commits synchronously, repeats."""

    def __init__(self, name: str, history: History, bootstrap: str, group: str,
                 topics: list[str], state: GroupState, stop: threading.Event):
        super().__init__(name, history)
        self.bootstrap, self.group, self.topics, self.state, self.stop = \
            bootstrap, group, topics, state, stop
        self.assigned: set[tuple[str, int]] = set()
        self.closed = threading.Event()

    def _assignment_op(self, kind: str, partitions) -> None:
        tps = sorted((tp.topic, tp.partition) for tp in partitions)
        if kind == "assign":
            self.assigned = set(tps)
        else:
            self.assigned -= set(tps)
        self.history.record({"process": self.name, "kind": kind, "group": self.group,
                             "start": now(), "outcome": "ok",
                             "partitions": [tpkey(t, p) for t, p in tps]})

    def body(self) -> None:
        consumer = Consumer(client_conf({
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "client.id": self.name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "max.poll.interval.ms": 120000,
            "topic.metadata.refresh.interval.ms": 2000,
            "fetch.wait.max.ms": 200,
            "queued.max.messages.kbytes": 4096,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 1000,
            "error_cb": self.client_error,
        }))
        consumer.subscribe(self.topics,
                           on_assign=lambda c, ps: self._assignment_op("assign", ps),
                           on_revoke=lambda c, ps: self._assignment_op("revoke", ps),
                           on_lost=lambda c, ps: self._assignment_op("lost", ps))
        try:
            while not self.stop.is_set():
                msgs = consumer.consume(num_messages=200, timeout=0.5)
                positions: dict[tuple[str, int], int] = {}
                t = now()
                for m in msgs:
                    if m.error():
                        self.client_error(m.error())
                        continue
                    v = m.value()
                    self.history.record({"process": self.name, "kind": "consume",
                                         "group": self.group, "topic": m.topic(),
                                         "partition": m.partition(), "offset": m.offset(),
                                         "value": v.decode() if v is not None else None,
                                         "start": t, "outcome": "ok"})
                    positions[(m.topic(), m.partition())] = m.offset() + 1
                # Commit only what this member still owns (a partition revoked
                # inside consume() goes to the next owner uncommitted).
                owned = {tp: o for tp, o in positions.items() if tp in self.assigned}
                if owned:
                    self.commit(consumer, owned)
        finally:
            try:
                consumer.close()
            finally:
                self.history.record({"process": self.name, "kind": "member_close",
                                     "group": self.group, "start": now(), "outcome": "ok"})
                self.closed.set()

    def commit(self, consumer: Consumer, positions: dict[tuple[str, int], int]) -> None:
        tps = [TopicPartition(t, p, o) for (t, p), o in sorted(positions.items())]
        start = now()
        results: dict[tuple[str, int], tuple[str, str | None]] = {}
        try:
            answer = consumer.commit(offsets=tps, asynchronous=False)
            for tp in answer or []:
                if tp.error is None:
                    results[(tp.topic, tp.partition)] = ("ok", None)
                else:
                    outcome = "fail" if tp.error.code() in COMMIT_REFUSED else "info"
                    results[(tp.topic, tp.partition)] = (outcome, tp.error.name())
        except KafkaException as e:
            err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
            outcome = "fail" if err is not None and err.code() in COMMIT_REFUSED else "info"
            for tp in tps:
                results[(tp.topic, tp.partition)] = (outcome, err.name() if err else repr(e))
        end = now()
        for (t, p), o in sorted(positions.items()):
            outcome, error = results.get((t, p), ("info", "not in the commit answer"))
            op = {"process": self.name, "kind": "commit", "group": self.group, "topic": t,
                  "partition": p, "offset": o, "start": start, "end": end, "outcome": outcome}
            if error:
                op["error"] = error
            self.history.record(op)
            if outcome == "ok":
                self.state.ok(tpkey(t, p), o)


# --------------------------------------------------------------------------
# after the run

def _retry(fn, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except KafkaException as e:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {e}") from None
            time.sleep(0.5)


def final_read_kafka(bootstrap: str, tps: list[tuple[str, int]], timeout: float = 180) -> dict:
    """Every partition from offset 0 to its end over Kafka (assign, partition EOF)."""
    c = Consumer(client_conf({
        "bootstrap.servers": bootstrap, "group.id": f"chaos-final-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False, "enable.partition.eof": True,
        "auto.offset.reset": "earliest", "queued.max.messages.kbytes": 16384,
        "fetch.wait.max.ms": 100}))
    out: dict[str, dict] = {}
    try:
        marks = {}
        for t, p in tps:
            lo, hi = _retry(lambda: c.get_watermark_offsets(TopicPartition(t, p), timeout=10),
                            f"watermarks of {tpkey(t, p)}", 60)
            marks[(t, p)] = (lo, hi)
            out[tpkey(t, p)] = {"log_start": lo, "hw": hi, "records": [], "error": None}
        c.assign([TopicPartition(t, p, 0) for t, p in tps])
        done: set[tuple[str, int]] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(tps) and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            key = (m.topic(), m.partition())
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    if m.offset() >= marks[key][1]:
                        done.add(key)
                        out[tpkey(*key)]["eof"] = m.offset()
                elif tpkey(*key) in out:
                    errs = out[tpkey(*key)].setdefault("client_errors", [])
                    if len(errs) < 20:
                        errs.append(str(m.error())[:200])
                continue
            v = m.value()
            out[tpkey(*key)]["records"].append([m.offset(), v.decode() if v is not None else None])
        for t, p in tps:
            r = out[tpkey(t, p)]
            if (t, p) not in done:
                last = r["records"][-1][0] if r["records"] else None
                r["error"] = (f"no end of partition within {timeout}s (read {len(r['records'])} "
                              f"records, last offset {last}, hw {r['hw']})")
            elif r.get("eof", r["hw"]) > r["hw"]:
                r["hw_grew_to"] = r["eof"]
    finally:
        c.close()
    return out


def final_read_http(url: str, tps: list[tuple[str, int]], want_hw: dict[str, int],
                    timeout: float = 120) -> dict:
    """Every partition from 0 to the node's high watermark over HTTP. Waits
    (bounded) for the node's view to reach the Kafka read's high watermark."""
    s = requests.Session()
    out: dict[str, dict] = {}
    for t, p in tps:
        key = tpkey(t, p)
        r = {"log_start": None, "hw": None, "records": [], "error": None}
        out[key] = r
        try:
            deadline = time.monotonic() + 20
            while True:
                o = s.get(f"{url}/v1/topics/{t}/partitions/{p}/offsets", timeout=10).json()
                r["log_start"], r["hw"] = o["log_start_offset"], o["high_watermark"]
                if r["hw"] >= want_hw.get(key, 0) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            nxt, hw = 0, r["hw"]
            read_deadline = time.monotonic() + timeout
            empty_since = None
            while nxt < hw:
                if time.monotonic() > read_deadline:
                    raise TimeoutError(f"read stuck at offset {nxt} < hw {hw}")
                resp = s.get(f"{url}/v1/topics/{t}/partitions/{p}/records",
                             params={"offset": nxt, "max_records": min(1000, hw - nxt),
                                     "format": "string", "timeout_ms": 0}, timeout=30)
                if resp.status_code != 200:
                    raise RuntimeError(f"HTTP {resp.status_code} at offset {nxt}: {resp.text[:200]}")
                lines = [json.loads(x) for x in resp.text.splitlines() if x.strip()]
                if not lines:
                    empty_since = empty_since or time.monotonic()
                    if time.monotonic() - empty_since > 10:
                        raise TimeoutError(f"empty reads at offset {nxt} < hw {hw} for 10 s")
                    time.sleep(0.2)
                    continue
                empty_since = None
                for line in lines:
                    if line["offset"] >= hw:
                        break
                    r["records"].append([line["offset"], line.get("value")])
                    nxt = line["offset"] + 1
        except Exception as e:  # noqa: BLE001 - filed as an incomplete read
            r["error"] = f"{type(e).__name__}: {e}"[:300]
    return out


def resume_check(history: History, bootstrap: str, group: str, tps: list[tuple[str, int]],
                 timeout: float = 60) -> None:
    """A fresh member of the group: where does it start on each partition?"""
    start = now()
    c = Consumer(client_conf({
        "bootstrap.servers": bootstrap, "group.id": group, "client.id": "resume",
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
        "topic.metadata.refresh.interval.ms": 2000}))
    committed: dict[tuple[str, int], int | None] = {}
    hws: dict[tuple[str, int], int] = {}
    first: dict[tuple[str, int], int] = {}
    error = None
    try:
        answer = _retry(lambda: c.committed([TopicPartition(t, p) for t, p in tps], timeout=10),
                        "OffsetFetch", 60)
        for tp in answer:
            committed[(tp.topic, tp.partition)] = None if tp.offset == OFFSET_INVALID or tp.offset < 0 \
                else tp.offset
        for t, p in tps:
            hws[(t, p)] = _retry(lambda: c.get_watermark_offsets(TopicPartition(t, p), timeout=10),
                                 "watermarks", 60)[1]
        want = {tp for tp in tps if (committed.get(tp) or 0) < hws[tp]}
        c.subscribe(sorted({t for t, _ in tps}))
        deadline = time.monotonic() + timeout
        while not want <= set(first) and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            first.setdefault((m.topic(), m.partition()), m.offset())
        if not want <= set(first):
            error = f"no record within {timeout}s on {sorted(tpkey(*x) for x in want - set(first))}"
    except Exception as e:  # noqa: BLE001
        error = f"{type(e).__name__}: {e}"[:300]
    finally:
        c.close()
    for t, p in tps:
        op = {"process": "resume", "kind": "resume", "group": group, "topic": t, "partition": p,
              "start": start, "end": now(), "committed": committed.get((t, p)),
              "first_offset": first.get((t, p)), "hw": hws.get((t, p)),
              "outcome": "ok" if (t, p) in first or (t, p) in hws and
              (committed.get((t, p)) or 0) >= hws[(t, p)] else "fail"}
        if error and op["outcome"] != "ok":
            op["error"] = error
        history.record(op)
