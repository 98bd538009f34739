"""The nemesis: a seeded schedule of faults, one at a time, each healed after
a few seconds. It must run on the main thread: nodes restarted here are
children that die with the thread that forked them (PR_SET_PDEATHSIG).

A fault kind is a small class with ``name``, ``duration(rng)``,
``targets(cluster)``, ``inject(cluster, node) -> dict`` and
``heal(cluster, node, state) -> dict``; add one to ``FAULTS`` and it can be
picked with ``--faults``. (Store-proxy and etcd faults come later.)
"""

from __future__ import annotations

import os
import random
import signal
import time
import traceback

from history import History, now


class Fault:
    name = "?"

    def duration(self, rng: random.Random) -> float:
        raise NotImplementedError

    def targets(self, cluster) -> list:
        """Nodes this fault may hit now: by default every running node."""
        return [n for n in cluster.nodes if n.running]

    def inject(self, cluster, node) -> dict:
        raise NotImplementedError

    def heal(self, cluster, node, state: dict) -> dict:
        raise NotImplementedError


class Kill9(Fault):
    """kill -9 a node, leave it down for a few seconds, start it again."""
    name = "kill9"

    def duration(self, rng):
        return rng.uniform(1.0, 6.0)

    def inject(self, cluster, node):
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

    def inject(self, cluster, node):
        os.kill(node.pid, signal.SIGSTOP)
        return {"pid": node.pid}

    def heal(self, cluster, node, state):
        if node.running:
            os.kill(node.pid, signal.SIGCONT)
        else:
            state["exited_while_paused"] = node.proc.returncode
        return cluster.ensure_up(node)


def make_faults(names: list[str], lease_ttl: float) -> list[Fault]:
    known = {"kill9": lambda: Kill9(), "pause": lambda: Pause(lease_ttl)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown fault kinds {unknown}; known: {sorted(known)}")
    return [known[n]() for n in names]


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
            targets = fault.targets(self.cluster)
            length = fault.duration(self.rng)
            gap = self.rng.uniform(*self.gap)
            if targets:
                node = self.rng.choice(targets)
                self.one(fault, node, length)
                if progress:
                    progress()
            time.sleep(max(0.0, min(gap, deadline - time.monotonic())))

    def one(self, fault: Fault, node, length: float) -> None:
        op = {"process": "nemesis", "kind": "fault", "fault": fault.name, "node": node.name,
              "planned_s": round(length, 2), "start": now()}
        try:
            op["inject"] = fault.inject(self.cluster, node)
        except Exception as e:  # noqa: BLE001
            op.update(end=now(), outcome="fail", error=f"inject: {e!r}")
            self.history.record(op)
            return
        time.sleep(length)
        op["heal_start"] = now()
        try:
            healed = fault.heal(self.cluster, node, op)
            op.update(healed)
            op["outcome"] = "ok" if healed.get("ready") else "fail"
        except Exception as e:  # noqa: BLE001
            op.update(outcome="fail", error=f"heal: {e!r}", traceback=traceback.format_exc()[-2000:])
        op["end"] = now()
        self.injected += 1
        self.history.record(op)
        print(f"  [{time.strftime('%H:%M:%S')}] fault {self.injected}: {fault.name} {node.name} "
              f"{length:.1f}s -> {op['outcome']}{' (' + str(op.get('error') or op.get('note')) + ')' if op['outcome'] != 'ok' or op.get('note') else ''}",
              flush=True)
