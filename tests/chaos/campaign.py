"""One chaos campaign: etcd, an S3 server (moto) and K sluice nodes in one
cluster; a seeded workload (producers, a consumer group) and a seeded
nemesis for the duration; then heal, settle, read everything back and run
the checker. ``main(argv)`` returns the exit status: 0 no violation, 1
violations, 2 the harness could not run.

Files in the output directory: history.jsonl (every operation),
final_read.json, results.json (stats and violations), results.txt (the
table), node logs (node1.log ...), etcd-m1.log ... (etcd.log with one member),
moto.log, proxies.log (the S3 and etcd proxies of the nodes).
"""

from __future__ import annotations

import argparse
import dataclasses
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
from etcd_cluster import EtcdCluster, get_key, get_prefix  # noqa: E402
from history import History, now  # noqa: E402
from nemesis import ALL_FAULTS, Nemesis, make_faults  # noqa: E402
from processes import HOST, REPO_ROOT, EtcdServer, MotoS3, free_port, tail  # noqa: E402
from proxy import TcpProxy  # noqa: E402
from s3proxy import S3Proxy  # noqa: E402
from sluice_node import SluiceFactory  # noqa: E402
import workload  # noqa: E402
from workload import (AdminWorker, GroupMember, GroupState, HttpProducerProc,  # noqa: E402
                      KafkaProducerProc, StandaloneConsumer, final_read_archive,
                      final_read_http, final_read_kafka, resume_check)

TOPICS = ["chaos-a", "chaos-b"]
PARTITIONS = 4
GROUP = "chaos-group"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Cluster:
    """etcd (one member or an N-member cluster) + moto + K nodes of one
    sluice cluster (one --cluster, one prefix). With ``s3_proxies`` every
    node reaches moto through its own S3Proxy, with ``etcd_proxies`` each
    etcd member through its own TcpProxy (the nemesis switches their modes);
    the harness itself always talks to etcd and moto directly."""

    def __init__(self, binary: Path, out: Path, k: int, lease_ttl: float, history: History,
                 etcd_members: int = 3, s3_proxies: bool = False, etcd_proxies: bool = False):
        self.out, self.history, self.lease_ttl = out, history, lease_ttl
        self.etcd = EtcdCluster(out, etcd_members) if etcd_members > 1 else EtcdServer(out)
        self.s3 = MotoS3(out)
        self.factory: SluiceFactory | None = None
        self.nodes = []
        self.binary, self.k = binary, k
        self.faulted: set[str] = set()
        self.use_s3_proxies, self.use_etcd_proxies = s3_proxies, etcd_proxies
        self.s3_proxies: dict[str, S3Proxy] = {}
        self.etcd_proxies: dict[str, list[TcpProxy]] = {}
        self.proxy_log = logging.getLogger("chaos.proxies")
        self.proxy_log.propagate = False
        self.proxy_log.setLevel(logging.INFO)
        self._proxy_handler = logging.FileHandler(out / "proxies.log")
        self._proxy_handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(message)s"))
        self.proxy_log.addHandler(self._proxy_handler)

    @property
    def etcd_members(self) -> list:
        return list(getattr(self.etcd, "members", [self.etcd]))

    def etcd_endpoints(self) -> list[str]:
        """Client URLs of the running members (the harness's own view)."""
        return [m.endpoint for m in self.etcd_members
                if getattr(m, "running", True)]

    def start(self) -> None:
        self.etcd.start()
        self.s3.start()
        self.factory = SluiceFactory(self.binary, self.out, self.etcd, self.s3, "chaos")
        spec = self.factory.new_cluster()
        extra = ["--node-lease-ttl", f"{self.lease_ttl:g}s",
                 "--group-initial-rebalance-delay", "200ms"]
        for i in range(1, self.k + 1):
            name = f"node{i}"
            node_spec, s3_endpoint = spec, None
            if self.use_s3_proxies:
                p = S3Proxy((HOST, self.s3.port), free_port(), f"{name}-s3", self.proxy_log)
                self.s3_proxies[name] = p.start()
                s3_endpoint = p.endpoint
            if self.use_etcd_proxies:
                ps = [TcpProxy((HOST, m.client_port), free_port(),
                               f"{name}-etcd-{getattr(m, 'name', 'e2e')}", self.proxy_log,
                               max_conns=32).start()
                      for m in self.etcd_members]
                self.etcd_proxies[name] = ps
                node_spec = dataclasses.replace(spec, etcd=",".join(p.endpoint for p in ps))
            self.nodes.append(self.factory.distributed(node_spec, node_id=i, name=name,
                                                       s3_endpoint=s3_endpoint,
                                                       flush_interval="50ms", extra_args=extra,
                                                       start=False))
        for n in self.nodes:
            n.start(timeout=90)
        self.spec = spec

    # -- roles, read from etcd (metadata/src/keys.rs: /sluice/<cluster>/...) ---
    def key(self, rest: str) -> str:
        return f"/sluice/{self.spec.name}/{rest}"

    def role_holders(self, role: str) -> tuple[list[int], dict]:
        """Node ids that hold ``role`` now and how that was found."""
        eps = self.etcd_endpoints()
        if role == "controller":
            raw = get_key(eps, self.key("controller"))  # {"node_id": N}, on its lease
            return ([int(json.loads(raw)["node_id"])] if raw else []), {"source": "etcd controller key"}
        if role == "coordinator":
            how: dict = {}
            try:
                admin = AdminClient(workload.client_conf({"bootstrap.servers": self.bootstrap}))
                fut = admin.describe_consumer_groups([GROUP], request_timeout=5)[GROUP]
                desc = fut.result(timeout=10)
                if desc.coordinator is not None and desc.coordinator.id >= 0:
                    return [desc.coordinator.id], {"source": "DescribeGroups",
                                                   "group_state": str(desc.state)}
                how["describe"] = "no coordinator"
            except Exception as e:  # noqa: BLE001
                how["describe_error"] = f"{type(e).__name__}: {str(e)[:200]}"
            raw = get_key(eps, self.key(f"groups/{GROUP}/coordinator"))  # decimal node id
            how["source"] = "etcd coordinator key"
            return ([int(raw)] if raw else []), how
        if role == "compactor":
            # claims live only while a job runs (a roll job per partition
            # about every archive_max_lag / 2): look for up to 10 s
            deadline = time.monotonic() + 10.0
            polls = 0
            while True:
                polls += 1
                kvs = get_prefix(eps, self.key("compaction/claims/"))
                ids = sorted({int(json.loads(v)["node_id"]) for _, v in kvs})
                if ids or time.monotonic() > deadline:
                    return ids, {"source": "etcd compaction claims", "claims": len(kvs),
                                 "polls": polls}
                time.sleep(0.05)
        raise ValueError(f"unknown role {role}")

    def heal_all(self) -> list[str]:
        """Every proxy back to pass, every etcd member running (after the
        nemesis, in case a heal failed)."""
        notes = []
        for name, p in self.s3_proxies.items():
            if p.mode != "pass":
                notes.append(f"{p.name} was {p.mode}")
                p.set_mode("pass")
        for ps in self.etcd_proxies.values():
            for p in ps:
                if p.mode != "pass":
                    notes.append(f"{p.name} was {p.mode}")
                    p.set_mode("pass")
        if isinstance(self.etcd, EtcdCluster):
            for m in self.etcd.members:
                if not m.running:
                    notes.append(f"etcd {m.name} was down")
                    try:
                        self.etcd.restart(m)
                    except Exception as e:  # noqa: BLE001
                        notes.append(f"etcd {m.name} restart: {e!r}"[:500])
        return notes

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
        if isinstance(self.etcd, EtcdCluster):
            for m in self.etcd.members:
                rc = m.proc.returncode if m.proc is not None else None
                if not m.running and rc not in (None, -9):
                    log(f"!! etcd {m.name} exited by itself with status {rc}")
                    self.history.record({"process": "watch", "kind": "etcd_exit",
                                         "node": m.label, "start": now(), "outcome": "fail",
                                         "exit": rc, "log_tail": tail(m.log, 30)})
                    try:
                        log(f"   restarted etcd {m.name}: {self.etcd.restart(m)}")
                    except Exception as e:  # noqa: BLE001
                        log(f"   etcd {m.name} did not restart: {e!r}")

    def close(self) -> None:
        if self.factory:
            self.factory.close()
        for p in self.s3_proxies.values():
            p.close()
        for ps in self.etcd_proxies.values():
            for p in ps:
                p.close()
        self.s3.close()
        self.etcd.close()
        self.proxy_log.removeHandler(self._proxy_handler)
        self._proxy_handler.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="tests/chaos/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.0, help="how long faults are injected")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: a new temp dir)")
    ap.add_argument("--binary", type=Path,
                    default=Path(os.environ.get("SLUICE_BIN") or REPO_ROOT / "target" / "debug" / "sluice"))
    ap.add_argument("--faults", default=None,
                    help=f"fault kinds, comma separated (default: all of {','.join(ALL_FAULTS)}; "
                         "without the etcd_* kinds when --etcd-members is 1)")
    ap.add_argument("--lease-ttl", type=float, default=3.0, help="--node-lease-ttl of the nodes (s)")
    ap.add_argument("--etcd-members", type=int, default=3,
                    help="etcd cluster size (1: the single member of the e2e suite)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="sluice-chaos-"))
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.binary.is_file() or not os.access(args.binary, os.X_OK):
        print(f"sluice binary not found at {args.binary} (--binary, $SLUICE_BIN)", file=sys.stderr)
        return 2
    if args.etcd_members < 1:
        print("--etcd-members must be at least 1", file=sys.stderr)
        return 2
    if args.faults is None:
        names = [f for f in ALL_FAULTS
                 if args.etcd_members >= 3 or not f.startswith("etcd_")]
    else:
        names = [f for f in args.faults.split(",") if f]
    faults = make_faults(names, args.lease_ttl)
    needs = set().union(*(f.needs for f in faults)) if faults else set()
    if "etcd_cluster" in needs and args.etcd_members < 3:
        print("etcd_leader_kill / etcd_member_kill need --etcd-members 3 or more",
              file=sys.stderr)
        return 2
    log(f"chaos: seed {args.seed}, {args.minutes} min, {args.nodes} nodes, "
        f"{args.etcd_members} etcd member(s), faults {[f.name for f in faults]}, "
        f"proxies {sorted(n for n in needs if n.endswith('proxy')) or 'none'}, "
        f"binary {args.binary}, out {out}")
    history = History(out / "history.jsonl")
    client_log = logging.getLogger("chaos.librdkafka")
    client_log.propagate = False
    client_log.setLevel(logging.DEBUG)  # librdkafka debug contexts (eos) arrive at DEBUG
    handler = logging.FileHandler(out / "clients.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    client_log.addHandler(handler)
    client_log.addHandler(workload.EpochBumps(history))
    workload.CLIENT_LOGGER = client_log
    cluster = Cluster(args.binary, out, args.nodes, args.lease_ttl, history,
                      etcd_members=args.etcd_members, s3_proxies="s3_proxy" in needs,
                      etcd_proxies="etcd_proxy" in needs)
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
        solo = StandaloneConsumer("solo0", history, bootstrap, tps, args.seed, stop_consume)
        admin = AdminWorker("admin0", history, bootstrap,
                            {n.node_id: n.name for n in cluster.nodes},
                            {n.name: n.bootstrap for n in cluster.nodes}, args.seed, stop_consume)
        workers = members + producers + [solo, admin]
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
        healed = cluster.heal_all()
        if healed:
            settle["healed"] = healed
            problems += [h for h in healed if "restart:" in h]
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
        behind = solo.wait_caught_up({(t, p): hws[tpkey(t, p)] for t, p in tps
                                      if tpkey(t, p) in hws}, 60)
        log(f"standalone consumer caught up{'' if not behind else ' EXCEPT: ' + str(behind)}")
        stop_consume.set()
        for w in (solo, admin):
            w.join(timeout=120)
            if w.is_alive():
                history.record({"process": w.name, "kind": "harness_error", "start": now(),
                                "outcome": "fail", "error": f"{w.name} did not stop within 120 s"})
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
        log("final read of the Parquet archive files in the store")
        final["archive"] = final_read_archive(cluster.s3.endpoint, cluster.spec.bucket,
                                              cluster.spec.prefix, TOPICS, tps)
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
