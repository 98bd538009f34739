"""An etcd cluster of N members (3 by default) for the chaos campaign, on the
argv of tests/e2e's single-member ``EtcdServer``. Each member keeps its data
dir (under /dev/shm when writable) across ``kill9`` + ``restart``, so a
killed member rejoins as itself.

The harness talks to etcd over its JSON gateway (``/v3/...``): etcdctl is
not needed. ``leader()`` asks each member ``/v3/maintenance/status``.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import requests

from processes import HOST, free_port, kill_proc, spawn, tail, wait_until


class EtcdMember:
    def __init__(self, name: str, workdir: Path, binary: str, base: str | None):
        self.name = name
        self.binary = binary
        self.client_port, self.peer_port = free_port(), free_port()
        self.endpoint = f"http://{HOST}:{self.client_port}"
        self.peer = f"http://{HOST}:{self.peer_port}"
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"sluice-chaos-etcd-{name}-", dir=base))
        self.log = workdir / f"etcd-{name}.log"
        self.proc: subprocess.Popen | None = None
        self.member_id: str | None = None  # from /v3/maintenance/status
        self.starts = 0

    def __repr__(self) -> str:
        return f"EtcdMember({self.name} {self.endpoint})"

    @property
    def label(self) -> str:
        return f"etcd-{self.name}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def spawn(self, initial_cluster: str, token: str) -> None:
        assert not self.running, f"{self} already running"
        argv = [
            self.binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", self.peer,
            "--initial-advertise-peer-urls", self.peer,
            "--initial-cluster", initial_cluster,
            # ignored once the data dir holds a member: a restart rejoins
            "--initial-cluster-state", "new",
            "--initial-cluster-token", token,
            "--auto-compaction-mode", "revision",
            "--auto-compaction-retention", "100000",
            "--quota-backend-bytes", str(4 * 1024 ** 3),
            "--log-level", "warn",
        ]
        self.starts += 1
        self.proc = spawn(argv, self.log, env={"ETCD_UNSUPPORTED_ARCH": os.uname().machine})

    def healthy(self) -> bool:
        """This member answers and the cluster has a leader (etcd's /health)."""
        r = requests.get(f"{self.endpoint}/health", timeout=1)
        return r.status_code == 200 and r.json().get("health") in ("true", True)

    def status(self, timeout: float = 1.0) -> dict:
        r = requests.post(f"{self.endpoint}/v3/maintenance/status", json={}, timeout=timeout)
        r.raise_for_status()
        st = r.json()
        self.member_id = str(st.get("header", {}).get("member_id")) or self.member_id
        return st

    def kill9(self) -> int | None:
        return kill_proc(self.proc, signal.SIGKILL)


class EtcdCluster:
    """``size`` members on free ports; ``endpoint`` is the comma-separated
    client URLs (what ``--etcd`` takes)."""

    def __init__(self, workdir: Path, size: int = 3, binary: str | None = None):
        self.binary = binary or shutil.which("etcd")
        if not self.binary:
            raise RuntimeError("etcd not found on PATH (Debian: apt-get install etcd-server)")
        base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.members = [EtcdMember(f"m{i}", Path(workdir), self.binary, base)
                        for i in range(1, size + 1)]
        self.initial_cluster = ",".join(f"{m.name}={m.peer}" for m in self.members)
        self.token = f"sluice-chaos-{uuid.uuid4().hex[:12]}"

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def endpoint(self) -> str:
        return ",".join(self.endpoints)

    @property
    def log(self) -> Path:
        return self.members[0].log

    def start(self, timeout: float = 60) -> "EtcdCluster":
        for m in self.members:
            m.spawn(self.initial_cluster, self.token)
        for m in self.members:
            wait_until(m.healthy, timeout, f"etcd member {m.name} at {m.endpoint}",
                       interval=0.1, proc=m.proc, log=m.log)
        for m in self.members:
            m.status()
        return self

    def restart(self, member: EtcdMember, timeout: float = 30) -> dict:
        """Start a stopped member again on its data dir; wait until healthy."""
        if not member.running:
            member.spawn(self.initial_cluster, self.token)
        t0 = time.monotonic()
        wait_until(member.healthy, timeout, f"etcd member {member.name} at {member.endpoint}",
                   interval=0.1, proc=member.proc, log=member.log)
        return {"ready": True, "member_healthy_after_s": round(time.monotonic() - t0, 2),
                "starts": member.starts}

    def leader(self) -> tuple[EtcdMember | None, dict]:
        """The member that leads now (asked of every running member; the
        answer of a majority), and what each said."""
        said: dict[str, str] = {}
        votes: dict[str, int] = {}
        for m in self.members:
            if not m.running:
                said[m.name] = "down"
                continue
            try:
                st = m.status()
            except Exception as e:  # noqa: BLE001
                said[m.name] = f"error: {type(e).__name__}"
                continue
            lead = str(st.get("leader"))
            said[m.name] = lead
            if lead and lead != "0":
                votes[lead] = votes.get(lead, 0) + 1
        by_id = {m.member_id: m for m in self.members if m.member_id}
        if votes:
            lead, n = max(votes.items(), key=lambda kv: kv[1])
            if n * 2 > len(self.members) and lead in by_id and by_id[lead].running:
                return by_id[lead], said
        return None, said

    def get_prefix(self, prefix: str, timeout: float = 2.0) -> list[tuple[str, bytes]]:
        return get_prefix([m.endpoint for m in self.members if m.running], prefix, timeout)

    def get(self, key: str, timeout: float = 2.0) -> bytes | None:
        return get_key([m.endpoint for m in self.members if m.running], key, timeout)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"--- {m.name} ---\n{tail(m.log, lines)}" for m in self.members)

    def close(self) -> None:
        for m in self.members:
            kill_proc(m.proc, signal.SIGTERM)
        for m in self.members:
            shutil.rmtree(m.data_dir, ignore_errors=True)


# -- etcd's JSON gateway -------------------------------------------------------

def get_prefix(endpoints: list[str], prefix: str, timeout: float = 2.0) -> list[tuple[str, bytes]]:
    """Every key under ``prefix`` with its value, asked of the first of
    ``endpoints`` that answers."""
    key = prefix.encode()
    end = bytearray(key)
    end[-1] += 1
    return _range(endpoints, {"key": base64.b64encode(key).decode(),
                              "range_end": base64.b64encode(bytes(end)).decode()}, timeout)


def get_key(endpoints: list[str], key: str, timeout: float = 2.0) -> bytes | None:
    kvs = _range(endpoints, {"key": base64.b64encode(key.encode()).decode()}, timeout)
    return kvs[0][1] if kvs else None


def _range(endpoints: list[str], body: dict, timeout: float) -> list[tuple[str, bytes]]:
    last: Exception | None = None
    for ep in endpoints:
        try:
            r = requests.post(f"{ep}/v3/kv/range", json=body, timeout=timeout)
            r.raise_for_status()
            return [(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")))
                    for kv in r.json().get("kvs", [])]
        except Exception as e:  # noqa: BLE001
            last = e
    raise RuntimeError(f"no etcd member answered a range: {last!r}")
