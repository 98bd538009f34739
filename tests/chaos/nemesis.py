"""The nemesis: a seeded schedule of faults, one at a time, each healed after
a few seconds. It must run on the main thread: nodes and etcd members
restarted here are children that die with the thread that forked them
(PR_SET_PDEATHSIG).

A fault kind is a small class with ``name``, ``duration(rng)``,
``plan(rng) -> dict`` (seeded parameters, recorded), ``pick(cluster, rng)
-> (target, info)`` (by default a random node of ``targets(cluster)``; the
info is recorded), ``inject(cluster, target, plan) -> dict`` and
``heal(cluster, target, state) -> dict`` (with ``ready``); ``needs`` names
the plumbing it runs through (``s3_proxy``, ``etcd_proxy``,
``etcd_cluster``). Add one to ``make_faults`` and it can be picked with
``--faults``.

Kinds:

* ``kill9``, ``pause``: any running node (kill -9 and restart; SIGSTOP past
  the lease, SIGCONT).
* ``kill9_controller``, ``kill9_coordinator``, ``kill9_compactor``: kill -9
  the node that holds that role now (the ``controller`` key, the
  coordinator of ``chaos-group``, a ``compaction/claims/`` key); a random
  node, with ``role: none found``, when nobody does.
* ``s3_error``, ``s3_slow``, ``s3_stall``, ``s3_reset``, ``s3_lost_put``:
  a mode of one node's S3 proxy (s3proxy.py).
* ``cut_etcd``, ``cut_store``: one node's etcd proxies / S3 proxy become a
  blackhole for longer than the node lease (proxy.py, s3proxy.py).
* ``etcd_leader_kill``, ``etcd_member_kill``: kill -9 the etcd leader / a
  follower, restart it on its data dir after 2-8 s (etcd_cluster.py).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import traceback

from history import History, now


def log(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Fault:
    name = "?"
    needs: frozenset = frozenset()

    def duration(self, rng: random.Random) -> float:
        raise NotImplementedError

    def plan(self, rng: random.Random) -> dict:
        """Seeded parameters of one injection (drawn after the duration)."""
        return {}

    def targets(self, cluster) -> list:
        """Nodes this fault may hit now: by default every running node."""
        return [n for n in cluster.nodes if n.running]

    def pick(self, cluster, rng: random.Random) -> tuple[object | None, dict]:
        targets = self.targets(cluster)
        return (rng.choice(targets), {}) if targets else (None, {})

    def inject(self, cluster, node, plan: dict) -> dict:
        raise NotImplementedError

    def heal(self, cluster, node, state: dict) -> dict:
        raise NotImplementedError


# -- node processes ---------------------------------------------------------------

class Kill9(Fault):
    """kill -9 a node, leave it down for a few seconds, start it again."""
    name = "kill9"

    def duration(self, rng):
        return rng.uniform(1.0, 6.0)

    def inject(self, cluster, node, plan):
        pid = node.pid
        rc = node.kill9()
        return {"pid": pid, "exit": rc}

    def heal(self, cluster, node, state):
        return cluster.ensure_up(node)


class Pause(Fault):
    """SIGSTOP a node for longer than the node lease, then SIGCONT: its lease
    expires and its partitions and groups move while it is frozen."""
    name = "pause"

    def __init__(self, lease_ttl: float):
        self.lease_ttl = lease_ttl

    def duration(self, rng):
        return self.lease_ttl + rng.uniform(1.0, 4.0)

    def inject(self, cluster, node, plan):
        os.kill(node.pid, signal.SIGSTOP)
        return {"pid": node.pid}

    def heal(self, cluster, node, state):
        if node.running:
            os.kill(node.pid, signal.SIGCONT)
        else:
            state["exited_while_paused"] = node.proc.returncode
        return cluster.ensure_up(node)


class Kill9Role(Kill9):
    """kill -9 the node that holds ``role`` now; a random running node (and
    ``role: none found``) when nobody holds it. ``cluster.role_holders(role)``
    answers ``(node ids, how it was found)``."""

    def __init__(self, role: str):
        self.role = role
        self.name = f"kill9_{role}"

    def pick(self, cluster, rng):
        running = [n for n in cluster.nodes if n.running]
        if not running:
            return None, {}
        try:
            ids, how = cluster.role_holders(self.role)
        except Exception as e:  # noqa: BLE001
            ids, how = [], {"lookup_error": f"{type(e).__name__}: {str(e)[:300]}"}
        holders = [n for n in running if n.node_id in ids]
        if holders:
            node = rng.choice(holders)
            return node, {"role": self.role, "holders": sorted(ids), **how}
        return rng.choice(running), {"role": "none found", "wanted_role": self.role,
                                     "holders": sorted(ids), **how}


# -- the object store, through the node's S3 proxy ---------------------------------

class S3Fault(Fault):
    """One node's S3 proxy in ``mode`` for the fault's duration, then ``pass``."""
    needs = frozenset({"s3_proxy"})

    def __init__(self, name: str, mode: str, length: tuple[float, float],
                 fraction: tuple[float, float] | None = None):
        self.name, self.mode, self.length, self.fraction = name, mode, length, fraction

    def duration(self, rng):
        return rng.uniform(*self.length)

    def plan(self, rng):
        p = {"mode": self.mode, "seed": rng.randrange(2 ** 31)}
        if self.fraction:
            p["fraction"] = round(rng.uniform(*self.fraction), 2)
        return p

    def inject(self, cluster, node, plan):
        proxy = cluster.s3_proxies[node.name]
        proxy.set_mode(self.mode, seed=plan["seed"], fraction=plan.get("fraction", 1.0))
        return {**plan, "proxy": proxy.endpoint}

    def heal(self, cluster, node, state):
        stats = cluster.s3_proxies[node.name].set_mode("pass")
        return {"proxy_stats": stats, **cluster.ensure_up(node)}


class CutStore(S3Fault):
    """The node's S3 proxy drops everything for longer than the node lease."""

    def __init__(self, lease_ttl: float):
        super().__init__("cut_store", "blackhole", (lease_ttl + 1.0, lease_ttl + 7.0))


class CutEtcd(Fault):
    """Every etcd proxy of the node drops everything for longer than the node
    lease: the node loses its lease while the rest of the cluster goes on."""
    name = "cut_etcd"
    needs = frozenset({"etcd_proxy"})

    def __init__(self, lease_ttl: float):
        self.length = (lease_ttl + 1.0, lease_ttl + 7.0)

    def duration(self, rng):
        return rng.uniform(*self.length)

    def inject(self, cluster, node, plan):
        proxies = cluster.etcd_proxies[node.name]
        for p in proxies:
            p.set_mode("blackhole")
        return {"proxies": [p.endpoint for p in proxies]}

    def heal(self, cluster, node, state):
        stats = {p.name: p.set_mode("pass") for p in cluster.etcd_proxies[node.name]}
        return {"proxy_stats": stats, **cluster.ensure_up(node)}


# -- etcd members -------------------------------------------------------------------

class EtcdKill(Fault):
    """kill -9 the etcd leader (``leader``) or a follower, start it again on
    its data dir after 2-8 s. The target is a member, not a node."""
    needs = frozenset({"etcd_cluster"})

    def __init__(self, leader: bool):
        self.leader = leader
        self.name = "etcd_leader_kill" if leader else "etcd_member_kill"

    def duration(self, rng):
        return rng.uniform(2.0, 8.0)

    def pick(self, cluster, rng):
        etcd = cluster.etcd
        if not all(m.running for m in etcd.members):
            return None, {}
        leader, said = etcd.leader()
        if leader is None:
            return None, {}
        if self.leader:
            return leader, {"leader": leader.name, "status": said}
        followers = [m for m in etcd.members if m is not leader]
        return rng.choice(followers), {"leader": leader.name, "status": said}

    def inject(self, cluster, member, plan):
        pid = member.pid
        rc = member.kill9()
        return {"pid": pid, "exit": rc, "member_id": member.member_id}

    def heal(self, cluster, member, state):
        out = cluster.etcd.restart(member)
        leader, said = cluster.etcd.leader()
        out["leader_after"] = leader.name if leader else None
        return out


ALL_FAULTS = ["kill9", "pause", "kill9_controller", "kill9_coordinator", "kill9_compactor",
              "s3_error", "s3_slow", "s3_stall", "s3_reset", "s3_lost_put",
              "cut_etcd", "cut_store", "etcd_leader_kill", "etcd_member_kill"]


def make_faults(names: list[str], lease_ttl: float) -> list[Fault]:
    known = {
        "kill9": lambda: Kill9(),
        "pause": lambda: Pause(lease_ttl),
        "kill9_controller": lambda: Kill9Role("controller"),
        "kill9_coordinator": lambda: Kill9Role("coordinator"),
        "kill9_compactor": lambda: Kill9Role("compactor"),
        "s3_error": lambda: S3Fault("s3_error", "error", (2.0, 8.0), fraction=(0.3, 1.0)),
        "s3_slow": lambda: S3Fault("s3_slow", "slow", (3.0, 8.0)),
        "s3_stall": lambda: S3Fault("s3_stall", "stall", (2.0, 8.0)),
        "s3_reset": lambda: S3Fault("s3_reset", "reset", (1.0, 5.0)),
        "s3_lost_put": lambda: S3Fault("s3_lost_put", "lost_put", (2.0, 6.0),
                                       fraction=(0.3, 1.0)),
        "cut_etcd": lambda: CutEtcd(lease_ttl),
        "cut_store": lambda: CutStore(lease_ttl),
        "etcd_leader_kill": lambda: EtcdKill(leader=True),
        "etcd_member_kill": lambda: EtcdKill(leader=False),
    }
    assert sorted(known) == sorted(ALL_FAULTS)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown fault kinds {unknown}; known: {ALL_FAULTS}")
    return [known[n]() for n in names]


def target_name(target) -> str:
    return getattr(target, "label", None) or target.name


class Nemesis:
    def __init__(self, cluster, history: History, faults: list[Fault], seed: int,
                 gap: tuple[float, float] = (2.0, 6.0), first_after: float = 5.0):
        self.cluster, self.history, self.faults = cluster, history, faults
        self.rng = random.Random(f"{seed}/nemesis")
        self.gap, self.first_after = gap, first_after
        self.injected = 0

    def run(self, deadline: float, progress=None) -> None:
        """Inject faults until ``deadline`` (time.monotonic()); the last one is
        healed even if that runs past it."""
        time.sleep(max(0.0, min(self.first_after, deadline - time.monotonic())))
        while time.monotonic() < deadline:
            fault = self.rng.choice(self.faults)
            length = fault.duration(self.rng)
            gap = self.rng.uniform(*self.gap)
            plan = fault.plan(self.rng)
            try:
                target, info = fault.pick(self.cluster, self.rng)
            except Exception as e:  # noqa: BLE001
                target, info = None, {"error": repr(e)}
            if target is not None:
                self.one(fault, target, length, plan, info)
                if progress:
                    progress()
            else:
                log(f"no target for {fault.name} now {json.dumps(info, default=str)[:200]}")
            time.sleep(max(0.0, min(gap, deadline - time.monotonic())))

    def one(self, fault: Fault, target, length: float, plan: dict | None = None,
            info: dict | None = None) -> None:
        op = {"process": "nemesis", "kind": "fault", "fault": fault.name,
              "node": target_name(target), "planned_s": round(length, 2), "start": now()}
        op.update(info or {})
        try:
            op["inject"] = fault.inject(self.cluster, target, plan or {})
        except Exception as e:  # noqa: BLE001
            op.update(outcome="fail", error=f"inject: {e!r}")
            # whatever the inject did, undo it before the next fault
            try:
                op["heal_after_failed_inject"] = fault.heal(self.cluster, target, op)
            except Exception as e2:  # noqa: BLE001
                op["heal_after_failed_inject"] = repr(e2)
            op["end"] = now()
            self.history.record(op)
            log(f"fault {fault.name} {op['node']}: {op['error']}")
            return
        time.sleep(length)
        op["heal_start"] = now()
        try:
            healed = fault.heal(self.cluster, target, op)
            op.update(healed)
            op["outcome"] = "ok" if healed.get("ready") else "fail"
        except Exception as e:  # noqa: BLE001
            op.update(outcome="fail", error=f"heal: {e!r}", traceback=traceback.format_exc()[-2000:])
        op["end"] = now()
        self.injected += 1
        self.history.record(op)
        role = f" [{op['role']}]" if "role" in op else ""
        extra = ""
        if op["outcome"] != "ok" or op.get("note"):
            extra = f" ({op.get('error') or op.get('note')})"
        log(f"fault {self.injected}: {fault.name}{role} {op['node']} {length:.1f}s -> "
            f"{op['outcome']}{extra}")
