"""One chaos campaign: etcd, an S3 server (moto) and K sluice nodes in one
cluster; a seeded workload (producers, a consumer group) and a seeded
nemesis for the duration; then heal, settle, read everything back and run
the checker. ``main(argv)`` returns the exit status: 0 no violation, 1
violations, 2 the harness could not run.

Files in the output directory: history.jsonl (every operation),
final_read.json, results.json (stats and violations), results.txt (the
table), node logs (node1.log ...), etcd.log, moto.log.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
E2E = HERE.parent / "e2e"
for p in (str(HERE), str(E2E)):
    if p not in sys.path:
        sys.path.insert(0, p)

from confluent_kafka.admin import AdminClient  # noqa: E402

from checker import check, faults_near, format_table, load_history, tpkey  # noqa: E402
from history import History, now  # noqa: E402
from nemesis import Nemesis, make_faults  # noqa: E402
from processes import REPO_ROOT, EtcdServer, MotoS3, tail  # noqa: E402
from sluice_node import SluiceFactory  # noqa: E402
import workload  # noqa: E402
from workload import (GroupMember, GroupState, HttpProducerProc, KafkaProducerProc,  # noqa: E402
                      final_read_http, final_read_kafka, resume_check)

TOPICS = ["chaos-a", "chaos-b"]
PARTITIONS = 4
GROUP = "chaos-group"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Cluster:
    """etcd + moto + K nodes of one sluice cluster (one --cluster, one prefix)."""

    def __init__(self, binary: Path, out: Path, k: int, lease_ttl: float, history: History):
        self.out, self.history, self.lease_ttl = out, history, lease_ttl
        self.etcd = EtcdServer(out)
        self.s3 = MotoS3(out)
        self.factory: SluiceFactory | None = None
        self.nodes = []
        self.binary, self.k = binary, k
        self.faulted: set[str] = set()

    def start(self) -> None:
        self.etcd.start()
        self.s3.start()
        self.factory = SluiceFactory(self.binary, self.out, self.etcd, self.s3, "chaos")
        spec = self.factory.new_cluster()
        extra = ["--node-lease-ttl", f"{self.lease_ttl:g}s",
                 "--group-initial-rebalance-delay", "200ms"]
        for i in range(1, self.k + 1):
            self.nodes.append(self.factory.distributed(spec, node_id=i, name=f"node{i}",
                                                       flush_interval="50ms", extra_args=extra,
                                                       start=False))
        for n in self.nodes:
            n.start(timeout=90)
        self.spec = spec

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def brokers(self) -> dict[int, str]:
        md = AdminClient(workload.client_conf({"bootstrap.servers": self.bootstrap})
                         ).list_topics(timeout=5)
        return {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()}

    def wait_brokers(self, timeout: float) -> tuple[bool, dict]:
        want = {n.node_id: n.bootstrap for n in self.nodes}
        deadline = time.monotonic() + timeout
        got: dict = {}
        while time.monotonic() < deadline:
            try:
                got = self.brokers()
                if got == want:
                    return True, got
            except Exception as e:  # noqa: BLE001
                got = {"error": repr(e)}
            time.sleep(0.5)
        return False, got

    def ensure_up(self, node, timeout: float = 90) -> dict:
        """Make ``node`` run and be ready: restart it if it is down. Notes an
        exit that nobody caused (anything but our SIGKILL)."""
        deadline = time.monotonic() + timeout
        notes, attempts = [], 0
        while True:
            try:
                if node.running:
                    node.wait_ready(timeout=max(1.0, min(30.0, deadline - time.monotonic())))
                else:
                    rc = node.proc.returncode if node.proc is not None else None
                    if rc not in (None, -9):
                        notes.append(f"{node.name} had exited by itself with status {rc}")
                        self.history.record({"process": "nemesis", "kind": "node_exit",
                                             "node": node.name, "start": now(), "outcome": "fail",
                                             "exit": rc})
                    attempts += 1
                    node.start(timeout=max(1.0, min(60.0, deadline - time.monotonic())))
                out = {"ready": True, "starts": attempts}
                if notes:
                    out["note"] = "; ".join(notes)
                return out
            except Exception as e:  # noqa: BLE001
                notes.append(f"{type(e).__name__}: {str(e)[:300]}")
                if time.monotonic() > deadline:
                    return {"ready": False, "starts": attempts, "error": "; ".join(notes)[-2000:]}
                time.sleep(1)

    def watch(self) -> None:
        """Between faults: a node that died on its own is filed and restarted."""
        for n in self.nodes:
            if not n.running and n.proc is not None and n.proc.returncode not in (None, -9):
                rc = n.proc.returncode
                log(f"!! {n.name} exited by itself with status {rc}")
                self.history.record({"process": "watch", "kind": "node_exit", "node": n.name,
                                     "start": now(), "outcome": "fail", "exit": rc,
                                     "log_tail": tail(n.log, 30)})
                res = self.ensure_up(n)
                log(f"   restarted {n.name}: {res}")

    def close(self) -> None:
        if self.factory:
            self.factory.close()
        self.s3.close()
        self.etcd.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="tests/chaos/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.0, help="how long faults are injected")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: a new temp dir)")
    ap.add_argument("--binary", type=Path,
                    default=Path(os.environ.get("SLUICE_BIN") or REPO_ROOT / "target" / "debug" / "sluice"))
    ap.add_argument("--faults", default="kill9,pause", help="fault kinds, comma separated")
    ap.add_argument("--lease-ttl", type=float, default=3.0, help="--node-lease-ttl of the nodes (s)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="sluice-chaos-"))
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.binary.is_file() or not os.access(args.binary, os.X_OK):
        print(f"sluice binary not found at {args.binary} (--binary, $SLUICE_BIN)", file=sys.stderr)
        return 2
    faults = make_faults([f for f in args.faults.split(",") if f], args.lease_ttl)
    log(f"chaos: seed {args.seed}, {args.minutes} min, {args.nodes} nodes, faults "
        f"{[f.name for f in faults]}, binary {args.binary}, out {out}")
    history = History(out / "history.jsonl")
    client_log = logging.getLogger("chaos.librdkafka")
    client_log.propagate = False
    client_log.setLevel(logging.DEBUG)  # librdkafka debug contexts (eos) arrive at DEBUG
    handler = logging.FileHandler(out / "clients.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    client_log.addHandler(handler)
    client_log.addHandler(workload.EpochBumps(history))
    workload.CLIENT_LOGGER = client_log
    cluster = Cluster(args.binary, out, args.nodes, args.lease_ttl, history)
    (out / "run.json").write_text(json.dumps({**{k: str(v) for k, v in vars(args).items()},
                                              "out": str(out), "started": now()}, indent=1))
    workers: list = []
    stop_send, stop_consume = threading.Event(), threading.Event()
    try:
        try:
            cluster.start()
            ok, got = cluster.wait_brokers(60)
            if not ok:
                raise RuntimeError(f"Metadata does not list the {args.nodes} nodes: {got}")
            api = cluster.nodes[0].api
            for t in TOPICS:
                api.create_topic(t, PARTITIONS)
            for n in cluster.nodes:
                for t in TOPICS:
                    deadline = time.monotonic() + 30
                    while n.api.get_topic(t).status_code != 200:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{n.name} does not see topic {t}")
                        time.sleep(0.2)
            cluster_id = api.cluster_id
        except Exception:
            traceback.print_exc()
            for n in cluster.nodes:
                print(f"--- {n.name} log tail ---\n{n.log_tail(40)}", file=sys.stderr)
            return 2
        tps = [(t, p) for t in TOPICS for p in range(PARTITIONS)]
        t0 = now()
        for t, p in tps:
            history.record({"process": "setup", "kind": "group_start", "group": GROUP, "topic": t,
                            "partition": p, "offset": 0, "start": t0, "outcome": "ok"})
        bootstrap = cluster.bootstrap
        state = GroupState()
        members = [GroupMember(f"c{i}", history, bootstrap, GROUP, TOPICS, state, stop_consume)
                   for i in range(2)]
        producers = [
            KafkaProducerProc("idem0", history, bootstrap, TOPICS, PARTITIONS, args.seed,
                              stop_send, idempotent=True),
            KafkaProducerProc("idem1", history, bootstrap, TOPICS, PARTITIONS, args.seed,
                              stop_send, idempotent=True, message_timeout_ms=3000),
            KafkaProducerProc("plain0", history, bootstrap, TOPICS, PARTITIONS, args.seed,
                              stop_send, idempotent=False, message_timeout_ms=10000),
            HttpProducerProc("http0", history, [n.url for n in cluster.nodes], cluster_id,
                             TOPICS, PARTITIONS, args.seed, stop_send),
        ]
        workers = members + producers
        for w in workers:
            w.start()
        deadline = time.monotonic() + 30
        while history.count("send", "ok") < 50 and time.monotonic() < deadline:
            time.sleep(0.2)
        log(f"workload running: {history.count('send', 'ok')} acknowledged; nemesis for "
            f"{args.minutes} min")

        def progress():
            cluster.watch()
            log(f"   sends ok={history.count('send', 'ok')} fail={history.count('send', 'fail')} "
                f"info={history.count('send', 'info')}; consumed={history.count('consume')} "
                f"commits ok={history.count('commit', 'ok')}")

        nemesis = Nemesis(cluster, history, faults, args.seed)
        nemesis.run(time.monotonic() + args.minutes * 60, progress)

        # -- heal and settle --------------------------------------------------
        log("nemesis stopped; restarting every node that is down")
        settle = {"process": "settle", "kind": "settle", "start": now()}
        problems = []
        for n in cluster.nodes:
            r = cluster.ensure_up(n)
            if not r.get("ready"):
                problems.append(f"{n.name}: {r.get('error')}")
        ok, got = cluster.wait_brokers(60)
        if not ok:
            problems.append(f"Metadata does not list every node after 60 s: {got}")
        settle.update(end=now(), outcome="fail" if problems else "ok")
        if problems:
            settle["error"] = "; ".join(problems)
        history.record(settle)
        log(f"cluster settled: {settle['outcome']} {settle.get('error', '')}")
        time.sleep(5)  # a few seconds of workload without faults
        stop_send.set()
        for w in producers:
            w.join(timeout=120)
            if w.is_alive():
                history.record({"process": w.name, "kind": "harness_error", "start": now(),
                                "outcome": "fail", "error": "producer did not stop within 120 s"})
        log(f"producers stopped: sends ok={history.count('send', 'ok')} "
            f"fail={history.count('send', 'fail')} info={history.count('send', 'info')}")

        # -- let the group catch up, then stop it -------------------------------
        hws = {}
        for t, p in tps:
            try:
                hws[tpkey(t, p)] = cluster.nodes[0].api.high_watermark(t, p)
            except Exception:  # noqa: BLE001
                pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = state.snapshot()
            if all(done.get(k, 0) >= hw for k, hw in hws.items()):
                break
            time.sleep(0.5)
        behind = {k: (state.snapshot().get(k, 0), hw) for k, hw in hws.items()
                  if state.snapshot().get(k, 0) < hw}
        log(f"group caught up{'' if not behind else ' EXCEPT (committed, hw): ' + str(behind)}")
        stop_consume.set()
        for w in members:
            w.join(timeout=60)
            if w.is_alive():
                history.record({"process": w.name, "kind": "harness_error", "start": now(),
                                "outcome": "fail", "error": "group member did not stop within 60 s"})
        # A few records past every committed offset, so that a fresh member
        # has something to start at (the resume check).
        tail_plan = [tp for tp in tps for _ in range(3)]
        tail = KafkaProducerProc("tail0", history, bootstrap, TOPICS, PARTITIONS, args.seed,
                                 threading.Event(), idempotent=True, plan=tail_plan)
        tail.start()
        tail.join(timeout=120)
        time.sleep(2)

        # -- final read -------------------------------------------------------
        log("final read over Kafka")
        final = {"kafka": final_read_kafka(bootstrap, tps)}
        want = {k: r["hw"] for k, r in final["kafka"].items()}
        final["http"] = {}
        for n in cluster.nodes:
            log(f"final read over HTTP on {n.name}")
            final["http"][n.name] = final_read_http(n.url, tps, want)
        log("resume check: a fresh member of the group")
        resume_check(history, bootstrap, GROUP, tps)
        history.close()
        (out / "final_read.json").write_text(json.dumps(final))
    except KeyboardInterrupt:
        log("interrupted")
        return 2
    except Exception:  # noqa: BLE001 - the harness failed, not necessarily sluice
        traceback.print_exc()
        return 2
    finally:
        stop_send.set()
        stop_consume.set()
        for w in workers:
            w.join(timeout=5)
        history.close()
        log("stopping the cluster")
        cluster.close()

    ops = load_history(out / "history.jsonl")
    result = check(ops, final)
    table = format_table(result)
    details = describe_violations(result, ops, t0)
    text = (f"sluice chaos: seed {args.seed}, {args.minutes} min, {args.nodes} nodes, "
            f"out {out}\n{table}\n{details}")
    print(text, flush=True)
    (out / "results.txt").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(result.to_json(), indent=1, default=str))
    return 0 if result.ok else 1


def describe_violations(result, ops: list[dict], t0: float, per_kind: int = 25) -> str:
    if result.ok:
        return ""
    lines = ["\n== violation details (times: seconds since the workload began; UTC)"]
    for kind, vs in result.by_kind().items():
        lines.append(f"\n-- {kind}: {len(vs)}")
        for v in vs[:per_kind]:
            when = ""
            if v.time is not None:
                when = (f" [t+{v.time - t0:.2f}s "
                        f"{time.strftime('%H:%M:%S', time.gmtime(v.time))}.{int(v.time % 1 * 1000):03d}Z]")
            lines.append(f"  * {v.message}{when}")
            for f in faults_near(ops, v.time):
                lines.append(f"      fault: {f.get('fault')} {f.get('node')} "
                             f"t+{f['start'] - t0:.2f}s .. t+{f['end'] - t0:.2f}s "
                             f"({f.get('outcome')})")
        if len(vs) > per_kind:
            lines.append(f"  ... {len(vs) - per_kind} more (results.json)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
