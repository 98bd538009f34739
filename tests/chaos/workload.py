"""The clients of a chaos run: producers (idempotent and plain Kafka, HTTP),
one consumer group, a standalone consumer (assign, no group), an admin
worker (create / grow / delete topics during the load), and the reads after
the run (final read over Kafka, HTTP and the Parquet archive straight from
the store, a fresh member of the group). Everything they are told goes to
the history; nothing here judges it (that is checker.py's job).

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
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

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
            # drains that overlap end in one bump: keep every reason
            before = self.reason.get(m.group(1))
            self.reason[m.group(1)] = (f"{before}; " if before else "") + m.group(2)[:200]
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
# the standalone consumer

class StandaloneConsumer(Worker):
    """Tails every partition from offset 0 with ``assign`` (no group, no
    commits) for the whole run, filing each record it is given as a
    ``consume`` op with ``group: None``.

    It keeps its own position (last offset given + 1) per partition. When it
    recreates its consumer (a fatal error, OFFSET_OUT_OF_RANGE -- it runs
    with ``auto.offset.reset=error`` so that the client never jumps on its
    own -- or a seeded restart every 10-40 s) the new one is assigned at those
    positions: the offsets it is given stay consecutive across instances,
    which is what the checker's ``standalone_skip`` rule holds it to."""

    RESTART_EVERY = (10.0, 40.0)

    def __init__(self, name: str, history: History, bootstrap: str,
                 tps: list[tuple[str, int]], seed: int, stop: threading.Event):
        super().__init__(name, history)
        self.bootstrap, self.tps, self.stop = bootstrap, list(tps), stop
        self.rng = random.Random(f"{seed}/{name}")
        self.lock = threading.Lock()
        self.next: dict[tuple[str, int], int] = {tp: 0 for tp in self.tps}
        self.instance = 0
        self.targets: dict[tuple[str, int], int] = {}
        self.closed = threading.Event()

    def positions(self) -> dict[tuple[str, int], int]:
        with self.lock:
            return dict(self.next)

    def wait_caught_up(self, hws: dict[tuple[str, int], int], timeout: float) -> dict:
        """Wait (bounded) until the position on every partition reaches ``hws``;
        returns {tpkey: (position, hw)} of the partitions still behind."""
        self.targets = dict(hws)
        deadline = time.monotonic() + timeout
        while True:
            pos = self.positions()
            behind = {tpkey(*tp): (pos.get(tp, 0), hw) for tp, hw in hws.items()
                      if pos.get(tp, 0) < hw}
            if not behind or time.monotonic() > deadline or not self.is_alive():
                return behind
            time.sleep(0.2)

    def new_consumer(self) -> Consumer:
        c = Consumer(client_conf({
            "bootstrap.servers": self.bootstrap,
            # librdkafka wants a group id; assign() never joins it, nothing is committed
            "group.id": f"chaos-solo-{uuid.uuid4().hex[:8]}",
            "client.id": self.name,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",
            "fetch.wait.max.ms": 200,
            "queued.max.messages.kbytes": 4096,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 1000,
            "topic.metadata.refresh.interval.ms": 2000,
            "error_cb": self.client_error,
        }))
        pos = self.positions()
        c.assign([TopicPartition(t, p, pos[(t, p)]) for t, p in self.tps])
        self.instance += 1
        return c

    def restart(self, consumer: Consumer, reason: str) -> Consumer:
        try:
            consumer.close()
        except Exception:  # noqa: BLE001 - the old instance is gone either way
            pass
        consumer = self.new_consumer()
        self.history.record({"process": self.name, "kind": "consumer_restart", "group": None,
                             "start": now(), "outcome": "info", "instance": self.instance,
                             "reason": reason[:300],
                             "positions": {tpkey(*tp): o for tp, o in self.positions().items()}})
        return consumer

    def body(self) -> None:
        consumer = self.new_consumer()
        next_restart = time.monotonic() + self.rng.uniform(*self.RESTART_EVERY)
        try:
            while not self.stop.is_set():
                reason = None
                for m in consumer.consume(num_messages=500, timeout=0.5):
                    err = m.error()
                    if err is not None:
                        if err.fatal():
                            self.client_error(err)
                            reason = f"fatal {err.name()}"
                        elif err.code() in (KafkaError._AUTO_OFFSET_RESET,
                                            KafkaError.OFFSET_OUT_OF_RANGE):
                            # The partition stops fetching until we seek: a
                            # new instance at our own positions does that.
                            self.client_error(err)
                            reason = (f"{err.name()} on {tpkey(m.topic(), m.partition())} "
                                      f"at {self.positions().get((m.topic(), m.partition()))}")
                        else:
                            self.client_error(err)
                        continue
                    v = m.value()
                    self.history.record({"process": self.name, "kind": "consume", "group": None,
                                         "instance": self.instance, "topic": m.topic(),
                                         "partition": m.partition(), "offset": m.offset(),
                                         "value": v.decode() if v is not None else None,
                                         "start": now(), "outcome": "ok"})
                    with self.lock:
                        self.next[(m.topic(), m.partition())] = m.offset() + 1
                if reason is not None:
                    self.stop.wait(1.0)  # no tight loop against a node that keeps refusing
                elif time.monotonic() > next_restart:
                    reason = "scheduled restart"
                if reason is not None and not self.stop.is_set():
                    consumer = self.restart(consumer, reason)
                    next_restart = time.monotonic() + self.rng.uniform(*self.RESTART_EVERY)
        finally:
            try:
                consumer.close()
            finally:
                self.on_crash()

    def on_crash(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        pos = self.positions()
        t = now()
        for tp in self.tps:
            self.history.record({"process": self.name, "kind": "standalone_end", "group": None,
                                 "topic": tp[0], "partition": tp[1], "start": t,
                                 "outcome": "ok", "position": pos.get(tp, 0),
                                 "target": self.targets.get(tp), "instances": self.instance})


# --------------------------------------------------------------------------
# admin operations during the load

# Admin errors after which the change may or may not have been made.
ADMIN_INDETERMINATE = {
    KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT, KafkaError._TRANSPORT,
    KafkaError.NETWORK_EXCEPTION, KafkaError.NOT_CONTROLLER, KafkaError._ALL_BROKERS_DOWN,
    KafkaError._DESTROY, KafkaError.COORDINATOR_NOT_AVAILABLE,
}


class AdminWorker(Worker):
    """Topic administration alongside the load, on a seeded schedule: create
    ``<prefix>-<n>`` (2 partitions), wait until Metadata shows it, produce a
    few records and read them back, CreatePartitions to 4, wait for Metadata
    to show 4, produce to a new partition and read it back; CONFIRM_AFTER
    seconds after the acknowledgements ask every node once more (``confirm``:
    the topic with 4 partitions, the earlier admin topics gone); delete the
    topic, wait until Metadata no longer lists it. Every step is an ``admin``
    op (``action`` create | add_partitions | delete | metadata | produce |
    read).

    The ``metadata`` ops carry every Metadata answer the worker got
    (``polls``: when, which node answered, and the ``<prefix>-*`` topics it
    listed with their partition counts): the checker judges them against the
    acknowledged creates, CreatePartitions and deletes, excusing nodes that
    were faulted recently (checker.ADMIN_BOUND). Metadata is asked of each
    node in turn (one client per node, bootstrapped with that node only; the
    answer says which broker gave it)."""

    POLL_BOUND = 30.0      # how long a metadata step waits for the change to show
    CONFIRM_AFTER = 10.5   # checker.ADMIN_BOUND and a little
    RECORDS = 3            # records per partition written to an admin topic
    MAX_LISTED = 20        # admin topics kept per Metadata answer (the newest)
    MAX_POLLS = 200        # Metadata answers kept per metadata step

    def __init__(self, name: str, history: History, bootstrap: str, node_names: dict[int, str],
                 node_bootstraps: dict[str, str], seed: int, stop: threading.Event, *,
                 prefix: str = "chaos-adm", gap: tuple[float, float] = (2.0, 6.0)):
        super().__init__(name, history)
        self.bootstrap, self.node_names, self.stop = bootstrap, dict(node_names), stop
        self.node_bootstraps = dict(node_bootstraps)
        self.rng = random.Random(f"{seed}/{name}")
        self.prefix, self.gap = prefix, gap
        self.admin: AdminClient | None = None
        self.md_clients: list[tuple[str, AdminClient]] = []
        self.md_turn = 0
        self.cycles = 0

    def body(self) -> None:
        def conf(bootstrap: str) -> dict:
            return client_conf({"bootstrap.servers": bootstrap, "client.id": self.name,
                                "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 1000,
                                "error_cb": self.client_error})
        self.admin = AdminClient(conf(self.bootstrap))
        self.md_clients = [(name, AdminClient(conf(b)))
                           for name, b in sorted(self.node_bootstraps.items())] \
            or [("all", self.admin)]
        self.stop.wait(self.rng.uniform(*self.gap))
        while not self.stop.is_set():
            self.cycle(self.cycles)
            self.cycles += 1
            self.stop.wait(self.rng.uniform(*self.gap))

    def op(self, action: str, topic: str, start: float, outcome: str, **extra) -> None:
        self.history.record({"process": self.name, "kind": "admin", "action": action,
                             "topic": topic, "start": start, "end": now(), "outcome": outcome,
                             **extra})

    def step(self, action: str, topic: str, call, indeterminate: set, **extra) -> str:
        """One admin request; its outcome: ok, fail (refused), info (unknown)."""
        start = now()
        error = None
        try:
            call().result(timeout=20)
            outcome = "ok"
        except KafkaException as e:
            err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
            error = err.name() if err is not None else repr(e)[:200]
            outcome = "info" if err is None or err.code() in ADMIN_INDETERMINATE | indeterminate \
                or err.retriable() else "fail"
            extra["message"] = str(err)[:200] if err is not None else None
        except Exception as e:  # noqa: BLE001 - no answer within the bound
            outcome, error = "info", f"{type(e).__name__}: {e}"[:200]
        if error:
            extra["error"] = error
        self.op(action, topic, start, outcome, **extra)
        return outcome

    def listed(self, md) -> tuple[dict[str, int], bool]:
        adm = {}
        for name, tm in md.topics.items():
            if not name.startswith(self.prefix + "-"):
                continue
            if tm.error is not None and tm.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue
            adm[name] = len(tm.partitions)
        if len(adm) <= self.MAX_LISTED:
            return adm, False

        def number(name: str) -> int:
            tail = name.rsplit("-", 1)[-1]
            return int(tail) if tail.isdigit() else -1
        keep = sorted(adm, key=number)[-self.MAX_LISTED:]
        return {k: adm[k] for k in keep}, True

    def poll_once(self, topic: str, test) -> tuple[dict, bool | None]:
        """One Metadata request to the next node in turn: the answer as filed,
        and whether ``test(partitions of topic or None)`` held (None: no answer)."""
        asked, client = self.md_clients[self.md_turn % len(self.md_clients)]
        self.md_turn += 1
        t = now()
        poll: dict = {"t": t, "asked": asked}
        met = None
        try:
            md = client.list_topics(timeout=5)
            adm, truncated = self.listed(md)
            poll.update(node=self.node_names.get(md.orig_broker_id, md.orig_broker_name),
                        adm=adm)
            if truncated:
                poll["truncated"] = True
            met = bool(test(adm.get(topic)))
        except Exception as e:  # noqa: BLE001 - a Metadata request that got no answer
            poll["error"] = f"{type(e).__name__}: {e}"[:200]
        poll["dt"] = round(now() - t, 3)
        return poll, met

    def await_metadata(self, topic: str, want: str, test, bound: float) -> bool:
        """Ask Metadata (each node in turn) every 0.5 s until ``test(partitions
        or None)`` holds or ``bound`` seconds pass; files every answer."""
        start = now()
        deadline = time.monotonic() + bound
        polls: list[dict] = []
        met = False
        while True:
            poll, met = self.poll_once(topic, test)
            if len(polls) < self.MAX_POLLS:
                polls.append(poll)
            if met or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.op("metadata", topic, start, "ok" if met else "info", want=want, polls=polls)
        return bool(met)

    def confirm(self, topic: str, want: str, test) -> None:
        """Every node once: the answers are what the checker judges."""
        start = now()
        polls, results = [], []
        for _ in range(len(self.md_clients)):
            poll, met = self.poll_once(topic, test)
            polls.append(poll)
            results.append(met)
        self.op("metadata", topic, start, "ok" if all(results) else "info", want=want,
                polls=polls, confirm=True)

    def produce(self, topic: str, partitions: list[int], seq: int) -> tuple[list, int]:
        """A few records per partition (idempotent, acks=all); returns the
        acknowledged [partition, offset, value] and the next sequence number."""
        start = now()
        reports: dict[str, tuple] = {}
        sent: list[tuple[int, str]] = []

        def on_delivery(err, msg, value=None, partition=None):
            if err is None:
                reports[value] = ("ok", msg.partition(), msg.offset())
            else:
                reports[value] = ("info" if err.code() in INDETERMINATE or err.retriable()
                                  else "fail", partition, err.name())
        producer = Producer(client_conf({
            "bootstrap.servers": self.bootstrap, "client.id": self.name, "acks": "all",
            "enable.idempotence": True, "linger.ms": 5, "message.timeout.ms": 10000,
            "request.timeout.ms": 5000, "retry.backoff.ms": 100,
            "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 1000,
            "topic.metadata.refresh.interval.ms": 1000, "error_cb": self.client_error}))
        try:
            for p in partitions:
                for _ in range(self.RECORDS):
                    value = f"{topic}-{seq:04d}"
                    seq += 1
                    sent.append((p, value))
                    producer.produce(topic, value=value.encode(), partition=p,
                                     on_delivery=partial(on_delivery, value=value, partition=p))
            if producer.flush(15) > 0:
                producer.purge(in_queue=True, in_flight=True, blocking=False)
                producer.flush(5)
        except KafkaException as e:
            for p, value in sent:
                reports.setdefault(value, ("info", p, f"produce raised {e!r}"[:200]))
        acked, unacked = [], []
        for p, value in sent:
            outcome, part, what = reports.get(value, ("info", p, "no delivery report"))
            if outcome == "ok":
                acked.append([part, what, value])
            else:
                unacked.append([p, value, outcome, what])
        outcome = "ok" if not unacked else \
            "fail" if all(u[2] == "fail" for u in unacked) else "info"
        self.op("produce", topic, start, outcome, partitions=partitions, records=acked,
                unacked=unacked)
        return acked, seq

    def read_back(self, topic: str, partitions: list[int], acked: list,
                  timeout: float = 20.0) -> None:
        """Read the partitions from 0 until partition EOF at or past every
        acknowledged record (bounded); files what was read and where it ended."""
        start = now()
        want = {p: 0 for p in partitions}
        for p, o, _ in acked:
            want[p] = max(want[p], o + 1)
        parts = {p: {"records": [], "eof": None, "errors": []} for p in partitions}
        c = Consumer(client_conf({
            "bootstrap.servers": self.bootstrap, "client.id": self.name,
            "group.id": f"chaos-adm-read-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
            "enable.partition.eof": True, "auto.offset.reset": "error",
            "fetch.wait.max.ms": 100, "topic.metadata.refresh.interval.ms": 1000,
            "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 1000}))

        def done() -> bool:
            return all(r["eof"] is not None and r["eof"] >= want[p] for p, r in parts.items())
        try:
            c.assign([TopicPartition(topic, p, 0) for p in partitions])
            deadline = time.monotonic() + timeout
            while not done() and time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is None or m.partition() not in parts:
                    continue
                r = parts[m.partition()]
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        r["eof"] = max(r["eof"] or 0, m.offset())
                        continue
                    if len(r["errors"]) < 5:
                        r["errors"].append(str(err)[:200])
                    if err.code() in (KafkaError._AUTO_OFFSET_RESET,
                                      KafkaError.OFFSET_OUT_OF_RANGE):
                        nxt = r["records"][-1][0] + 1 if r["records"] else 0
                        time.sleep(0.5)
                        try:
                            c.seek(TopicPartition(topic, m.partition(), nxt))
                        except KafkaException as e:
                            if len(r["errors"]) < 5:
                                r["errors"].append(f"seek: {e}"[:200])
                    continue
                if len(r["records"]) < 100:
                    v = m.value()
                    r["records"].append([m.offset(), v.decode() if v is not None else None])
        except Exception as e:  # noqa: BLE001 - filed as an incomplete read
            parts[partitions[0]]["errors"].append(f"{type(e).__name__}: {e}"[:200])
        finally:
            c.close()
        for r in parts.values():
            if not r["errors"]:
                del r["errors"]
        self.op("read", topic, start, "ok" if done() else "info",
                partitions={str(p): r for p, r in parts.items()})

    def cycle(self, n: int) -> None:
        topic = f"{self.prefix}-{n}"
        created = self.step("create", topic, lambda: self.admin.create_topics(
            [NewTopic(topic, num_partitions=2)], operation_timeout=10, request_timeout=15)[topic],
            {KafkaError.TOPIC_ALREADY_EXISTS}, partitions=2)
        if created == "fail":
            return  # refused: there is nothing to grow or delete
        seq = 0
        if self.await_metadata(topic, "visible", lambda st: st is not None, self.POLL_BOUND) \
                and not self.stop.is_set():
            acked, seq = self.produce(topic, [0, 1], seq)
            self.read_back(topic, [0, 1], acked)
            grown = self.step("add_partitions", topic, lambda: self.admin.create_partitions(
                [NewPartitions(topic, 4)], request_timeout=15)[topic],
                {KafkaError.INVALID_PARTITIONS}, partitions=4)
            grow_end = now()
            if grown != "fail" and not self.stop.is_set() and self.await_metadata(
                    topic, "partitions=4", lambda st: st == 4, self.POLL_BOUND) \
                    and not self.stop.is_set():
                p = self.rng.choice([2, 3])
                acked, seq = self.produce(topic, [p], seq)
                self.read_back(topic, [p], acked)
                # Long enough after the acknowledgements for every quiet node
                # to show them (and the earlier topics' deletes).
                self.stop.wait(max(0.0, grow_end + self.CONFIRM_AFTER - now()))
                if not self.stop.is_set():
                    self.confirm(topic, "partitions=4", lambda st: st == 4)
        self.step("delete", topic, lambda: self.admin.delete_topics(
            [topic], operation_timeout=10, request_timeout=15)[topic],
            {KafkaError.UNKNOWN_TOPIC_OR_PART})
        self.await_metadata(topic, "gone", lambda st: st is None,
                            10.0 if self.stop.is_set() else self.POLL_BOUND)


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


ARCHIVE_KEY = re.compile(r"^(?P<topic>[^/]+)/partition=(?P<partition>\d+)/"
                         r"(?P<first>\d+)-(?P<last>\d+)(?:\.(?P<unique>[0-9A-Za-z]+))?\.parquet$")


def final_read_archive(endpoint: str, bucket: str, prefix: str, topics: list[str],
                       tps: list[tuple[str, int]], wait: float = 30.0,
                       max_file_bytes: int = 256 << 20, max_total_bytes: int = 2 << 30) -> dict:
    """Every Parquet archive file of ``topics`` straight from the S3 server
    (boto3 + pyarrow; nothing of sluice): ``<prefix>/archive/<topic>/
    partition=<p>/<first>-<last>[.<ulid>].parquet``. Lists every file present,
    published or not (a merge's inputs and a crashed compactor's leftovers
    stay until GC): each must agree with the log where it holds offsets.
    Waits (bounded) until every partition has a file; an archive that is
    behind is fine, the checker compares what is there.

    Returns {"files": [{"key", "topic", "partition", "first", "last",
    "unique", "bytes", "rows", "partition_values", "records": [[offset,
    value], ...], "error"}], "waited": s, "error": str|None, "other_keys": [...]}.
    """
    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                      aws_secret_access_key="test", region_name="us-east-1",
                      config=Config(retries={"max_attempts": 3}, connect_timeout=5,
                                    read_timeout=60))
    root = f"{prefix.strip('/')}/archive/" if prefix.strip("/") else "archive/"
    out: dict = {"files": [], "waited": 0.0, "error": None, "other_keys": [], "root": root}

    def listing() -> list[tuple[str, int]]:
        keys = []
        for topic in topics:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                 Prefix=f"{root}{topic}/")
            for page in pages:
                keys += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
        return keys

    started = time.monotonic()
    try:
        while True:
            keys = listing()
            have = set()
            for key, _ in keys:
                m = ARCHIVE_KEY.match(key[len(root):])
                if m:
                    have.add((m["topic"], int(m["partition"])))
            if set(tps) <= have or time.monotonic() - started > wait:
                break
            time.sleep(2)
        out["waited"] = round(time.monotonic() - started, 1)
        total = 0
        for key, size in sorted(keys):
            m = ARCHIVE_KEY.match(key[len(root):])
            if not m:
                if len(out["other_keys"]) < 50:
                    out["other_keys"].append(key)
                continue
            f = {"key": key, "topic": m["topic"], "partition": int(m["partition"]),
                 "first": int(m["first"]), "last": int(m["last"]), "unique": m["unique"],
                 "bytes": size, "rows": None, "partition_values": [], "records": [],
                 "error": None}
            out["files"].append(f)
            if size > max_file_bytes or total + size > max_total_bytes:
                f["error"] = f"not read: {size} bytes (read {total} bytes so far; bounds " \
                             f"{max_file_bytes} per file, {max_total_bytes} in all)"
                f["skipped"] = True
                continue
            try:
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except s3.exceptions.NoSuchKey:
                f["error"], f["vanished"] = "gone before it was read (GC)", True
                continue
            except Exception as e:  # noqa: BLE001 - the store, not the file
                f["error"], f["skipped"] = f"get: {type(e).__name__}: {e}"[:300], True
                continue
            total += len(body)
            try:
                table = pq.read_table(pa.BufferReader(body), columns=["offset", "value", "partition"])
            except Exception as e:  # noqa: BLE001 - a file sluice wrote that Parquet cannot read
                f["error"] = f"unreadable: {type(e).__name__}: {e}"[:300]
                continue
            f["rows"] = table.num_rows
            f["partition_values"] = sorted(set(table.column("partition").to_pylist()))[:10]
            offsets = table.column("offset").to_pylist()
            values = table.column("value").to_pylist()
            f["records"] = [[o, v.decode("utf-8", "backslashreplace") if v is not None else None]
                            for o, v in zip(offsets, values)]
    except Exception as e:  # noqa: BLE001 - filed as an incomplete read
        out["error"] = f"{type(e).__name__}: {e}"[:300]
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
