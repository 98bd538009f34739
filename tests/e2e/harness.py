"""Process and protocol helpers for the sluice end-to-end suite.

Everything here drives real processes on 127.0.0.1:

* ``EtcdServer``   -- a single-member etcd (Debian ``etcd-server``) on free ports.
* ``MotoS3``       -- ``moto_server`` (moto[server]) as the S3-compatible store.
* ``FaultProxy``   -- a TCP forwarder in front of moto that can be stopped and
                      started again on the same port (see its docstring).
* ``Sluice``       -- one ``sluice serve`` process (distributed or embedded).
* ``Api``          -- a thin ``requests`` client for sluice's HTTP API.
* ``Rec`` / ``ProduceLog`` / ``produce_worker`` / ``verify_log`` -- the
  bookkeeping that lets every test state precisely what was sent, what was
  acknowledged at which offset, what failed, and what is unknown (the client
  never got an answer), and then check a read-back against it.

Child processes get ``PR_SET_PDEATHSIG=SIGKILL`` so that nothing outlives a
crashed or killed pytest.  Linux delivers that signal when the *thread* that
forked the child exits, so start processes from the test's main thread only.
"""

from __future__ import annotations

import base64
import ctypes
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

# Fake credentials: moto accepts anything; sluice must still sign requests.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    # object_store refuses plain http endpoints unless told otherwise.
    "AWS_ALLOW_HTTP": "true",
    "AWS_EC2_METADATA_DISABLED": "true",
}


# --------------------------------------------------------------------------
# ports and processes
# --------------------------------------------------------------------------

_used_ports: set[int] = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and never handed out twice."""
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((HOST, 0))
                port = s.getsockname()[1]
            if port not in _used_ports:
                _used_ports.add(port)
                return port
    raise RuntimeError("could not find a free port")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def spawn(argv: list[str], log_path: Path, env: dict | None = None,
          cwd: Path | None = None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab", buffering=0)
    log.write(f"\n===== {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=full_env,
                                cwd=str(cwd) if cwd else None,
                                preexec_fn=_die_with_parent)
    finally:
        log.close()


def tail(path: Path, lines: int = 80) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        return f"<no log at {path}: {e}>"
    text = data[-64 * 1024:].decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def kill_proc(proc: subprocess.Popen | None, sig: int = signal.SIGKILL,
              timeout: float = 10) -> int | None:
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


def wait_until(pred: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.05, proc: subprocess.Popen | None = None,
               log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{what}: process exited with {proc.returncode}\n"
                + (f"--- log tail ({log}) ---\n{tail(log)}" if log else ""))
        try:
            if pred():
                return
            last_exc = None
        except Exception as e:  # noqa: BLE001 - connection refused etc.
            last_exc = e
        time.sleep(interval)
    raise TimeoutError(
        f"{what}: not ready after {timeout}s (last error: {last_exc!r})\n"
        + (f"--- log tail ({log}) ---\n{tail(log)}" if log else ""))


# --------------------------------------------------------------------------
# etcd
# --------------------------------------------------------------------------

class EtcdServer:
    """A single-member etcd on free client and peer ports.

    The data dir goes to /dev/shm when available: etcd fsyncs its WAL on
    every commit and sluice commits once per flush, so a tmpfs keeps the
    suite fast without changing any semantics under test.
    """

    def __init__(self, workdir: Path, binary: str | None = None):
        self.binary = binary or shutil.which("etcd")
        if not self.binary:
            raise RuntimeError("etcd not found on PATH (Debian: apt-get install etcd-server; "
                               "tests/run.sh installs it)")
        self.client_port = free_port()
        self.peer_port = free_port()
        self.endpoint = f"http://{HOST}:{self.client_port}"
        base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.data_dir = Path(tempfile.mkdtemp(prefix="sluice-e2e-etcd-", dir=base))
        self.log = workdir / "etcd.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> "EtcdServer":
        peer = f"http://{HOST}:{self.peer_port}"
        argv = [
            self.binary,
            "--name", "e2e",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"e2e={peer}",
            "--initial-cluster-state", "new",
            "--auto-compaction-mode", "revision",
            "--auto-compaction-retention", "100000",
            "--quota-backend-bytes", str(4 * 1024 ** 3),
            "--log-level", "warn",
        ]
        # etcd 3.4 refuses to run on unsupported arches without this; harmless elsewhere.
        self.proc = spawn(argv, self.log, env={"ETCD_UNSUPPORTED_ARCH": os.uname().machine})

        def healthy() -> bool:
            r = requests.get(f"{self.endpoint}/health", timeout=1)
            return r.status_code == 200 and r.json().get("health") in ("true", True)

        wait_until(healthy, timeout, f"etcd at {self.endpoint}", interval=0.1,
                   proc=self.proc, log=self.log)
        return self

    def close(self) -> None:
        kill_proc(self.proc, signal.SIGTERM)
        shutil.rmtree(self.data_dir, ignore_errors=True)


# --------------------------------------------------------------------------
# S3 (moto) and the fault proxy
# --------------------------------------------------------------------------

def boto3_client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
        config=Config(s3={"addressing_style": "path"},
                      retries={"max_attempts": 1, "mode": "standard"},
                      connect_timeout=2, read_timeout=10),
    )


class MotoS3:
    """moto's standalone server; one bucket for the whole session.

    Tests isolate themselves with a unique key prefix, not a bucket each.
    """

    def __init__(self, workdir: Path, bucket: str = "sluice-e2e"):
        self.port = free_port()
        self.endpoint = f"http://{HOST}:{self.port}"
        self.bucket = bucket
        self.log = workdir / "moto.log"
        self.proc: subprocess.Popen | None = None
        self.client = None

    def start(self, timeout: float = 60) -> "MotoS3":
        # `python -m moto.server` is what the `moto_server` script runs; using
        # this interpreter guarantees the moto that requirements.txt installed.
        argv = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]
        self.proc = spawn(argv, self.log, env={**AWS_ENV})

        def up() -> bool:
            # moto answers "/" with 200 once Flask is serving.
            return requests.get(self.endpoint + "/", timeout=1).status_code < 500

        wait_until(up, timeout, f"moto_server at {self.endpoint}", interval=0.1,
                   proc=self.proc, log=self.log)
        self.client = boto3_client(self.endpoint)
        self.client.create_bucket(Bucket=self.bucket)
        return self

    def keys(self, prefix: str) -> list[str]:
        out: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out

    def close(self) -> None:
        kill_proc(self.proc, signal.SIGTERM)


class FaultProxy:
    """A TCP forwarder in front of moto whose endpoint can vanish and return.

    Why a proxy and not stopping moto itself: moto keeps every object in
    memory, so killing and restarting moto would also lose objects that sluice
    already had acknowledged -- the test could then no longer tell "sluice lost
    an acknowledged record" from "the fake S3 lost it".  Instead sluice talks to
    this proxy; ``stop()`` closes the listening socket *and* every live
    connection (so pooled keep-alive connections die and new connects are
    refused, exactly what a crashed S3 endpoint looks like) while moto and its
    data stay intact.  ``start()`` listens again on the SAME port.
    """

    def __init__(self, upstream_port: int, port: int | None = None):
        self.upstream = (HOST, upstream_port)
        self.port = port or free_port()
        self.endpoint = f"http://{HOST}:{self.port}"
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._running = threading.Event()
        self.connections_total = 0

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def start(self) -> "FaultProxy":
        if self.running:
            return self
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:
            try:
                ls.bind((HOST, self.port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    ls.close()
                    raise
                time.sleep(0.05)
        ls.listen(128)
        ls.settimeout(0.1)
        self._listener = ls
        self._running.set()
        self._accept_thread = threading.Thread(target=self._accept_loop, args=(ls,),
                                               name=f"proxy-accept-{self.port}", daemon=True)
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every live connection; new connects are refused."""
        self._running.clear()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
            self._accept_thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            _hard_close(c)

    close = stop

    def _accept_loop(self, ls: socket.socket) -> None:
        while self._running.is_set():
            try:
                client, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if not self._running.is_set():
                _hard_close(client)
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _hard_close(client)
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._conns.update((client, upstream))
                self.connections_total += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # HTTP needs no half-close: when either side is done, so is the pair.
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            for s in (src, dst):
                _close(s)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)  # wakes the other pump blocked in recv()
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


def _hard_close(s: socket.socket) -> None:
    try:
        # RST instead of FIN: the peer sees the endpoint die, not a polite close.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    _close(s)


# --------------------------------------------------------------------------
# sluice
# --------------------------------------------------------------------------

class Sluice:
    """One ``sluice serve`` process.  ``restart()`` reuses args, port and data dir."""

    def __init__(self, binary: Path, data_dir: Path, node_id: int, *,
                 etcd: str | None = None, store: str | None = None,
                 s3_endpoint: str | None = None, cluster: str | None = None,
                 flush_interval: str | None = "50ms", extra_args: Iterable[str] = (),
                 name: str | None = None, port: int | None = None,
                 kafka_port: int | None = None):
        self.binary = Path(binary)
        self.data_dir = Path(data_dir)
        self.node_id = node_id
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        # always a free Kafka port: nodes of one test must not share :9092
        self.kafka_port = kafka_port or free_port()
        self.bootstrap = f"{HOST}:{self.kafka_port}"
        self.name = name or f"node{node_id}"
        self.log = self.data_dir.parent / f"{self.name}.log"
        self.args = ["serve", "--http-addr", f"{HOST}:{self.port}",
                     "--kafka-addr", self.bootstrap,
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


# --------------------------------------------------------------------------
# HTTP API client
# --------------------------------------------------------------------------

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


def parse_concatenated_json(text: str) -> list:
    """Parse whitespace/newline separated JSON values (NDJSON or concatenated)."""
    dec = json.JSONDecoder()
    out, i, n = [], 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            return out
        obj, i = dec.raw_decode(text, i)
        out.append(obj)


def error_body(resp: requests.Response) -> dict:
    """The JSON error body; asserts the documented shape."""
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"HTTP {resp.status_code} error body is not JSON: {resp.text[:500]!r}")
    assert isinstance(body, dict) and "error_code" in body and "message" in body, \
        f"error body lacks error_code/message: {body!r}"
    return body


def assert_error(resp: requests.Response, status: int | tuple[int, ...],
                 what: str = "") -> dict:
    statuses = (status,) if isinstance(status, int) else status
    assert resp.status_code in statuses, (
        f"{what}: expected HTTP {statuses}, got {resp.status_code}: {resp.text[:500]!r}")
    body = error_body(resp)
    assert body["error_code"] == resp.status_code, (
        f"{what}: error_code {body['error_code']} != HTTP status {resp.status_code}")
    return body


class Api:
    def __init__(self, url: str, session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.s = session or requests.Session()
        self._cid: str | None = None

    def with_new_session(self) -> "Api":
        api = Api(self.url, requests.Session())
        api._cid = self._cid
        return api

    # -- v3 admin ------------------------------------------------------------
    def clusters(self) -> dict:
        r = self.s.get(f"{self.url}/v3/clusters", timeout=10)
        assert r.status_code == 200, f"GET /v3/clusters -> {r.status_code} {r.text[:300]}"
        return r.json()

    @property
    def cluster_id(self) -> str:
        if self._cid is None:
            body = self.clusters()
            data = body.get("data") or []
            assert len(data) == 1 and data[0].get("cluster_id"), f"bad cluster list {body!r}"
            self._cid = data[0]["cluster_id"]
        return self._cid

    def topics_url(self, topic: str | None = None) -> str:
        base = f"{self.url}/v3/clusters/{self.cluster_id}/topics"
        return f"{base}/{topic}" if topic is not None else base

    def create_topic_raw(self, body) -> requests.Response:
        if isinstance(body, (dict, list)):
            return self.s.post(self.topics_url(), json=body, timeout=30)
        return self.s.post(self.topics_url(), data=body, timeout=30,
                           headers={"Content-Type": "application/json"})

    def create_topic(self, name: str, partitions: int, configs: dict | None = None) -> dict:
        body = {"topic_name": name, "partitions_count": partitions}
        if configs:
            body["configs"] = [{"name": k, "value": str(v)} for k, v in configs.items()]
        r = self.create_topic_raw(body)
        assert r.status_code == 201, f"create topic {name}: {r.status_code} {r.text[:500]}"
        t = r.json()
        assert t.get("topic_name") == name and t.get("partitions_count") == partitions, t
        return t

    def get_topic(self, name: str) -> requests.Response:
        return self.s.get(self.topics_url(name), timeout=10)

    def list_topics(self) -> list[str]:
        r = self.s.get(self.topics_url(), timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body.get("kind") == "KafkaTopicList", body
        return [t["topic_name"] for t in body["data"]]

    def delete_topic(self, name: str) -> requests.Response:
        return self.s.delete(self.topics_url(name), timeout=30)

    # -- produce -------------------------------------------------------------
    def produce_raw(self, topic: str, body: bytes | str, timeout: float = 60) -> requests.Response:
        if isinstance(body, str):
            body = body.encode()
        return self.s.post(f"{self.topics_url(topic)}/records", data=body, timeout=timeout,
                           headers={"Content-Type": "application/json"})

    def produce_one(self, topic: str, record: dict, timeout: float = 60) -> requests.Response:
        return self.produce_raw(topic, json.dumps(record), timeout)

    def produce_stream(self, topic: str, records: list[dict],
                       timeout: float = 60) -> requests.Response:
        return self.produce_raw(topic, "\n".join(json.dumps(r) for r in records), timeout)

    def produce_batch_raw(self, topic: str, body, timeout: float = 60) -> requests.Response:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        return self.s.post(f"{self.topics_url(topic)}/records-batch", data=body,
                           timeout=timeout, headers={"Content-Type": "application/json"})

    # -- read ----------------------------------------------------------------
    def read(self, topic: str, partition, *, timeout: float = 60,
             **params) -> requests.Response:
        return self.s.get(f"{self.url}/v1/topics/{topic}/partitions/{partition}/records",
                          params=params, timeout=timeout)

    def read_lines(self, topic: str, partition, **params) -> list[dict]:
        r = self.read(topic, partition, **params)
        assert r.status_code == 200, f"read {topic}/{partition} {params}: {r.status_code} {r.text[:500]}"
        return parse_concatenated_json(r.text)

    def offsets_raw(self, topic: str, partition) -> requests.Response:
        return self.s.get(f"{self.url}/v1/topics/{topic}/partitions/{partition}/offsets",
                          timeout=10)

    def offsets(self, topic: str, partition: int) -> dict:
        r = self.offsets_raw(topic, partition)
        assert r.status_code == 200, f"offsets {topic}/{partition}: {r.status_code} {r.text[:300]}"
        o = r.json()
        for k in ("log_start_offset", "high_watermark"):
            assert isinstance(o.get(k), int), f"offsets body lacks int {k}: {o!r}"
        return o

    def high_watermark(self, topic: str, partition: int) -> int:
        return self.offsets(topic, partition)["high_watermark"]

    def wait_high_watermark(self, topic: str, partition: int, at_least: int,
                            timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while True:
            hw = self.high_watermark(topic, partition)
            if hw >= at_least or time.monotonic() > deadline:
                assert hw >= at_least, (f"{self.url} {topic}/{partition}: high watermark {hw} "
                                        f"< {at_least} after {timeout}s")
                return hw
            time.sleep(0.1)

    def read_range(self, topic: str, partition: int, start: int, end: int,
                   fmt: str = "binary", max_records: int = 1000) -> list[dict]:
        """Records [start, end) -- asserts the node returns each offset in order."""
        out: list[dict] = []
        nxt = start
        empty_deadline: float | None = None
        while nxt < end:
            lines = self.read_lines(topic, partition, offset=nxt,
                                    max_records=min(max_records, end - nxt), format=fmt)
            if not lines:
                # The node said hw >= end; allow its index a moment to catch up.
                empty_deadline = empty_deadline or time.monotonic() + 10
                assert time.monotonic() < empty_deadline, \
                    f"{topic}/{partition}: empty read at offset {nxt} below {end}"
                time.sleep(0.1)
                continue
            empty_deadline = None
            assert len(lines) <= max_records, f"max_records={max_records} but got {len(lines)}"
            for line in lines:
                if line.get("offset") != nxt:
                    raise AssertionError(f"{topic}/{partition}: expected offset {nxt}, "
                                         f"got {line.get('offset')} ({line!r:.300})")
                out.append(line)
                nxt += 1
                if nxt >= end:
                    break
        return out

    def read_all(self, topic: str, partition: int, fmt: str = "binary",
                 at_least: int = 0) -> list[dict]:
        hw = self.wait_high_watermark(topic, partition, at_least) if at_least else \
            self.high_watermark(topic, partition)
        return self.read_range(topic, partition, 0, hw, fmt)

    # -- ops -----------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Prometheus text -> {metric name: sum over all label sets}."""
        r = self.s.get(f"{self.url}/metrics", timeout=10)
        assert r.status_code == 200, r.text[:300]
        out: dict[str, float] = {}
        for line in r.text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
            if m:
                try:
                    out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
                except ValueError:
                    pass
        return out


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
