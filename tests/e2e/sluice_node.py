"""One ``sluice serve`` process (``Sluice``), and the factory that starts a
test's nodes in their own cluster namespace (``SluiceFactory``)."""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import requests

from http_api import Api
from processes import AWS_ENV, HOST, EtcdServer, MotoS3, free_port, kill_proc, spawn, tail, wait_until

# --------------------------------------------------------------------------
# sluice
# --------------------------------------------------------------------------

def partition_leader(node_ids: Iterable[int], topic: str, partition: int) -> int:
    """The node a cluster of `node_ids` names leader of `(topic, partition)`,
    as `partition_leader` (metadata/src/membership.rs) computes it: the
    highest FNV-1a score, with its 64-bit finalizer, of node id and key.
    Lets a test pick a topic name whose leaders spread as it needs."""
    def score(node: int) -> int:
        h = 0xcbf29ce484222325
        for b in node.to_bytes(4, "big", signed=True) + topic.encode() \
                + partition.to_bytes(4, "big", signed=True):
            h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 33
        h = (h * 0xff51afd7ed558ccd) & 0xFFFFFFFFFFFFFFFF
        return h ^ (h >> 33)
    return max(node_ids, key=lambda node: (score(node), node))


class Sluice:
    """One ``sluice serve`` process.  ``restart()`` reuses args, port and data dir."""

    def __init__(self, binary: Path, data_dir: Path, node_id: int, *,
                 etcd: str | None = None, store: str | None = None,
                 s3_endpoint: str | None = None, cluster: str | None = None,
                 flush_interval: str | None = "50ms", extra_args: Iterable[str] = (),
                 name: str | None = None, port: int | None = None,
                 kafka_port: int | None = None, listeners: dict[str, int | None] | None = None):
        self.binary = Path(binary)
        self.data_dir = Path(data_dir)
        self.node_id = node_id
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        if listeners:
            # `--listeners` (security protocol -> port; None picks a free port)
            # replaces `--kafka-addr`; the bootstrap is the PLAINTEXT listener
            # when there is one, else the first listener
            assert kafka_port is None, "give the Kafka port in listeners"
            self.listener_ports = {proto.upper(): p or free_port()
                                   for proto, p in listeners.items()}
            first = "PLAINTEXT" if "PLAINTEXT" in self.listener_ports \
                else next(iter(self.listener_ports))
            self.kafka_port = self.listener_ports[first]
            kafka_args = ["--listeners", ",".join(
                f"{proto}://{HOST}:{p}" for proto, p in self.listener_ports.items())]
        else:
            # always a free Kafka port: nodes of one test must not share :9092
            self.kafka_port = kafka_port or free_port()
            self.listener_ports = {"PLAINTEXT": self.kafka_port}
            kafka_args = ["--kafka-addr", f"{HOST}:{self.kafka_port}"]
        self.bootstrap = f"{HOST}:{self.kafka_port}"
        self.name = name or f"node{node_id}"
        self.log = self.data_dir.parent / f"{self.name}.log"
        self.args = ["serve", "--http-addr", f"{HOST}:{self.port}", *kafka_args,
                     "--data-dir", str(self.data_dir), "--node-id", str(node_id)]
        if etcd:
            self.args += ["--etcd", etcd]
        if store:
            self.args += ["--store", store]
        if s3_endpoint:
            self.args += ["--s3-endpoint", s3_endpoint]
        if cluster:
            self.args += ["--cluster", cluster]
        if flush_interval:
            self.args += ["--flush-interval", flush_interval]
        self.args += list(extra_args)
        self.env = {**AWS_ENV,
                    "RUST_LOG": os.environ.get("SLUICE_E2E_RUST_LOG", "info"),
                    "RUST_BACKTRACE": "1"}
        self.proc: subprocess.Popen | None = None
        self.api = Api(self.url)

    def __repr__(self) -> str:
        return f"Sluice({self.name} {self.url})"

    # -- lifecycle ---------------------------------------------------------
    def start(self, timeout: float = 30) -> "Sluice":
        assert self.proc is None or self.proc.poll() is not None, f"{self} already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn([str(self.binary), *self.args], self.log, env=self.env)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            return requests.get(self.url + "/health/ready", timeout=1).status_code == 200

        wait_until(ready, timeout, f"sluice {self.name} /health/ready",
                   proc=self.proc, log=self.log)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> int | None:
        """SIGKILL and reap; returns the exit status (-9)."""
        return kill_proc(self.proc, signal.SIGKILL)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit code.  Raises if it hangs."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"{self} did not exit within {timeout}s of SIGTERM\n"
                                 f"--- log tail ---\n{tail(self.log)}")

    def restart(self, timeout: float = 30) -> "Sluice":
        if self.running:
            self.stop()
        return self.start(timeout)

    def close(self) -> None:
        kill_proc(self.proc, signal.SIGKILL)

    def log_tail(self, lines: int = 120) -> str:
        return tail(self.log, lines)

    def cli(self, *args: str, input: str | bytes | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``sluice <args>`` (a client subcommand) and capture its output."""
        if isinstance(input, str):
            input = input.encode()
        return subprocess.run([str(self.binary), *args], input=input, capture_output=True,
                              timeout=timeout, env={**os.environ, **self.env})


@dataclass
class ClusterSpec:
    """Where a set of distributed nodes meet: etcd namespace + store prefix."""
    name: str
    prefix: str
    etcd: str
    bucket: str
    s3_endpoint: str

    @property
    def store(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


class SluiceFactory:
    """Starts sluice nodes for one test (or one module) and tears them down."""

    _seq = itertools.count(1)

    def __init__(self, binary: Path, workdir: Path, etcd: EtcdServer | None,
                 s3: MotoS3 | None, label: str):
        self.binary = binary
        self.workdir = Path(workdir)
        self.etcd = etcd
        self.s3 = s3
        self.label = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[-40:] or "t"
        self.nodes: list[Sluice] = []
        self._node_ids = itertools.count(1)

    def new_cluster(self, s3_endpoint: str | None = None) -> ClusterSpec:
        assert self.etcd and self.s3, "distributed mode needs the etcd and s3 fixtures"
        uniq = f"{self.label}-{os.getpid()}-{next(self._seq)}-{random.randrange(16**6):06x}"
        return ClusterSpec(name=f"e2e-{uniq}", prefix=f"e2e/{uniq}", etcd=self.etcd.endpoint,
                           bucket=self.s3.bucket,
                           s3_endpoint=s3_endpoint or self.s3.endpoint)

    def distributed(self, cluster: ClusterSpec | None = None, *, start: bool = True,
                    s3_endpoint: str | None = None, **kw) -> Sluice:
        cluster = cluster or self.new_cluster()
        node_id = kw.pop("node_id", None) or next(self._node_ids)
        name = kw.pop("name", None) or f"node{node_id}-{len(self.nodes)}"
        node = Sluice(self.binary, self.workdir / name / "data", node_id,
                      etcd=cluster.etcd, store=cluster.store,
                      s3_endpoint=s3_endpoint or cluster.s3_endpoint,
                      cluster=cluster.name, name=name, **kw)
        node.cluster = cluster  # type: ignore[attr-defined]
        self.nodes.append(node)
        return node.start() if start else node

    def embedded(self, *, start: bool = True, **kw) -> Sluice:
        node_id = kw.pop("node_id", None) or next(self._node_ids)
        name = kw.pop("name", None) or f"embedded{node_id}-{len(self.nodes)}"
        node = Sluice(self.binary, self.workdir / name / "data", node_id, name=name, **kw)
        self.nodes.append(node)
        return node.start() if start else node

    def log_sections(self) -> list[tuple[str, str]]:
        return [(f"sluice log {n.name} ({n.log})", n.log_tail()) for n in self.nodes]

    def close(self) -> None:
        for n in self.nodes:
            n.close()


