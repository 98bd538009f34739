"""Ports and child processes, and the services the suite runs: a
single-member etcd, moto as the S3 server, and the fault proxy in front of
it. Child processes die with pytest (``PR_SET_PDEATHSIG``)."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

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
        ls = listen(self.port, accept_timeout=0.1)
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
            hard_close(c)

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
                hard_close(client)
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                hard_close(client)
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
                close_quietly(s)


def listen(port: int, accept_timeout: float = 0.2) -> socket.socket:
    """A listening socket on ``HOST:port`` (retrying the bind for up to 10 s:
    the port may still be in TIME_WAIT); accept() times out so that an
    accept loop can notice it should stop."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    deadline = time.monotonic() + 10
    while True:
        try:
            ls.bind((HOST, port))
            break
        except OSError:
            if time.monotonic() > deadline:
                ls.close()
                raise
            time.sleep(0.05)
    ls.listen(128)
    ls.settimeout(accept_timeout)
    return ls


def close_quietly(s: socket.socket) -> None:
    """Shut down and close, ignoring errors."""
    try:
        s.shutdown(socket.SHUT_RDWR)  # wakes the other pump blocked in recv()
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


def hard_close(s: socket.socket) -> None:
    """Close with a RST (SO_LINGER 0) instead of a FIN."""
    try:
        # RST instead of FIN: the peer sees the endpoint die, not a polite close.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    close_quietly(s)


