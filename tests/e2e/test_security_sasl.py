"""Kafka security with unmodified clients: TLS, mTLS and SASL listeners.

One distributed node (etcd + S3) serves the module on four listeners
(`--listeners`): PLAINTEXT, SSL with mTLS (`--tls-client-ca-file`: a client
certificate signed by the test CA is required), SASL_PLAINTEXT and SASL_SSL,
with the test PKI of tls_certs.py. Its users are created with
`sluice user add` (stored in etcd): `plain-user` (a SCRAM-SHA-256 credential,
logged in with PLAIN), `scram256-user` and `scram512-user`. Covered:

* kcat, confluent-kafka, kafka-python and kafkajs x PLAIN, SCRAM-SHA-256 and
  SCRAM-SHA-512 over SASL_SSL: keyed records produced to a fresh topic come
  back with their keys, values and offsets;
* a wrong password gets each client's authentication error (kcat's message,
  librdkafka's _AUTHENTICATION, kafka-python's SaslAuthenticationFailedError
  -- logged: its bootstrap then times out --, KafkaJSSASLAuthenticationError),
  nothing lands, and the node serves on;
* a client speaking the wrong protocol to a listener (no TLS to SASL_SSL, TLS
  to SASL_PLAINTEXT, no SASL to SASL_PLAINTEXT) cannot produce;
* Metadata on each listener advertises that listener's port;
* mTLS: a client certificate from the test CA produces and consumes; none,
  or one from another CA, is refused;
* SCRAM over SASL_PLAINTEXT;
* users through Kafka's admin API (AlterUserScramCredentials upsert and
  delete, DescribeUserScramCredentials) agree with `sluice user list`, and a
  deleted user can no longer log in;
* a user added with the CLI while the node runs logs in at once; one removed
  with the CLI cannot;
* KIP-368 (`--sasl-session-lifetime 2s`, a node of its own): SaslAuthenticate
  answers the lifetime, librdkafka re-authenticates and keeps producing
  without a reconnect, and a raw connection that does not re-authenticate is
  closed at its first request after the expiry (the module node, without the
  flag, answers a lifetime of 0);
* SIGHUP (a node of its own): the certificate files are reloaded, new TLS
  connections get the new certificate, an open one keeps working.

The raw SASL frame helpers here (SaslHandshake v1, SaslAuthenticate v1,
PLAIN bytes) are shared with test_security_bad_input.py.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition
from kafka.errors import KafkaTimeoutError, SaslAuthenticationFailedError

import kafka_wire as wire
from harness import HOST, Sluice, wait_until
from test_kafka_python import poll_n
from test_kafkajs import JS_DIR, node_bin  # noqa: F401 - node_bin is a fixture
from tls_certs import Certs, make_certs

MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
CLIENTS = ["kcat", "confluent-kafka", "kafka-python", "kafkajs"]
LISTENERS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
ITERATIONS = 4096


@dataclass(frozen=True)
class User:
    name: str
    mechanism: str  # the stored SCRAM credential
    password: str


# login mechanism -> the user that logs in with it
USERS = {
    "PLAIN": User("plain-user", "SCRAM-SHA-256", "plain-secret-1"),
    "SCRAM-SHA-256": User("scram256-user", "SCRAM-SHA-256", "scram256-secret-2"),
    "SCRAM-SHA-512": User("scram512-user", "SCRAM-SHA-512", "scram512-secret-3"),
}


def topic_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


# ---------------------------------------------------------------------------
# the node and its users

@dataclass
class Secure:
    """A node with TLS/SASL listeners, its certificates and a scratch dir."""
    node: Sluice
    certs: Certs
    workdir: Path

    def port(self, listener: str) -> int:
        return self.node.listener_ports[listener]

    def addr(self, listener: str) -> str:
        return f"{HOST}:{self.port(listener)}"


def user_cli(node: Sluice, *args: str) -> subprocess.CompletedProcess:
    """`sluice user ARGS` against the node's etcd namespace."""
    return node.cli("user", *args, "--etcd", node.cluster.etcd, "--cluster", node.cluster.name)


def cli_ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, (f"{done.args} exited {done.returncode}\n"
                                  f"stdout: {done.stdout.decode(errors='replace')[-2000:]}\n"
                                  f"stderr: {done.stderr.decode(errors='replace')[-2000:]}")
    return done.stdout.decode()


def add_user(node: Sluice, user: User, workdir: Path, iterations: int = ITERATIONS) -> None:
    """`sluice user add` (the password file holds the password, no newline)."""
    password_file = workdir / f"{user.name}.{user.mechanism}.password"
    password_file.write_text(user.password)
    cli_ok(user_cli(node, "add", user.name, "--mechanism", user.mechanism,
                    "--password-file", str(password_file), "--iterations", str(iterations)))


def list_users(node: Sluice) -> set[tuple[str, str, int]]:
    """`sluice user list` as {(name, mechanism, iterations)}."""
    out = set()
    for line in cli_ok(user_cli(node, "list")).splitlines():
        if not line.strip():
            continue
        name, mechanism, iterations = line.split()
        assert iterations.startswith("iterations="), line
        out.add((name, mechanism, int(iterations.removeprefix("iterations="))))
    return out


def start_secure_node(factory, workdir: Path, *, listeners=LISTENERS, mtls: bool = True,
                      extra_args=(), certs: Certs | None = None) -> Secure:
    """A distributed node on `listeners` with the test certificates (and the
    client CA when `mtls`), and the three USERS added with the CLI."""
    certs = certs or make_certs(workdir / "certs")
    args = ["--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key)]
    if mtls:
        args += ["--tls-client-ca-file", str(certs.ca_cert)]
    node = factory.distributed(listeners={name: None for name in listeners},
                               extra_args=[*args, *extra_args])
    for user in USERS.values():
        add_user(node, user, workdir)
    return Secure(node, certs, workdir)


@pytest.fixture(scope="module")
def secure(module_factory, tmp_path_factory) -> Secure:
    return start_secure_node(module_factory, tmp_path_factory.mktemp("security"))


def keyed_records(label: str, n: int = 5) -> list[tuple[bytes, bytes]]:
    return [(f"key-{i}".encode(), f"value {i} of {label}".encode()) for i in range(n)]


def new_topic(secure: Secure, prefix: str) -> str:
    topic = topic_name(prefix)
    secure.node.api.create_topic(topic, 1)
    return topic


def high_watermark(secure: Secure, topic: str) -> int:
    return secure.node.api.offsets(topic, 0)["high_watermark"]


# ---------------------------------------------------------------------------
# raw SASL frames (shared with test_security_bad_input.py)

@dataclass
class AuthAnswer:
    error_code: int
    error_message: str | None
    auth_bytes: bytes
    session_lifetime_ms: int | None


def metadata_request(correlation_id: int) -> bytes:
    """Metadata v1 for all topics."""
    return wire.request(3, 1, struct.pack(">i", -1), correlation_id=correlation_id)


def plain_bytes(user: str, password: str, authzid: str = "") -> bytes:
    return f"{authzid}\0{user}\0{password}".encode()


def parse_handshake(resp: bytes) -> tuple[int, int, list[str]]:
    """SaslHandshake v0/v1 response: (correlation id, error code, mechanisms)."""
    correlation_id, error_code, count = struct.unpack(">ihi", resp[:10])
    pos, mechanisms = 10, []
    for _ in range(count):
        n = struct.unpack(">h", resp[pos:pos + 2])[0]
        mechanisms.append(resp[pos + 2:pos + 2 + n].decode())
        pos += 2 + n
    return correlation_id, error_code, mechanisms


def sasl_handshake(sock, mechanism: str, correlation_id: int = 1) -> tuple[int, list[str]]:
    """SaslHandshake v1; (error code, enabled mechanisms)."""
    sock.sendall(wire.request(17, 1, wire.string(mechanism), correlation_id=correlation_id))
    cid, error_code, mechanisms = parse_handshake(wire.recv_response(sock))
    assert cid == correlation_id
    return error_code, mechanisms


def authenticate_request(auth_bytes: bytes, correlation_id: int = 2) -> bytes:
    """SaslAuthenticate v1 (auth_bytes as BYTES)."""
    return wire.request(36, 1, struct.pack(">i", len(auth_bytes)) + auth_bytes,
                        correlation_id=correlation_id)


def parse_authenticate(resp: bytes, version: int = 1) -> tuple[int, AuthAnswer]:
    """SaslAuthenticate v0/v1 response (non-flexible): (correlation id, answer)."""
    correlation_id, error_code, n = struct.unpack(">ihh", resp[:8])
    pos = 8
    message = None
    if n >= 0:
        message = resp[pos:pos + n].decode(errors="replace")
        pos += n
    size = struct.unpack(">i", resp[pos:pos + 4])[0]
    pos += 4
    auth = resp[pos:pos + max(size, 0)]
    pos += max(size, 0)
    lifetime = struct.unpack(">q", resp[pos:pos + 8])[0] if version >= 1 else None
    return correlation_id, AuthAnswer(error_code, message, auth, lifetime)


def sasl_authenticate(sock, auth_bytes: bytes, correlation_id: int = 2) -> AuthAnswer:
    """SaslAuthenticate v1; raises ConnectionError when closed instead of answered."""
    sock.sendall(authenticate_request(auth_bytes, correlation_id))
    cid, answer = parse_authenticate(wire.recv_response(sock))
    assert cid == correlation_id
    return answer


def plain_login(sock, user: User) -> AuthAnswer:
    error_code, mechanisms = sasl_handshake(sock, "PLAIN")
    assert error_code == 0, (error_code, mechanisms)
    return sasl_authenticate(sock, plain_bytes(user.name, user.password))


def metadata_answered(sock, correlation_id: int = 9) -> bool:
    """Send Metadata; True if answered, False if the connection is closed instead."""
    try:
        sock.sendall(metadata_request(correlation_id))
        resp = wire.recv_response(sock)
    except (ConnectionError, ssl.SSLError):
        return False
    assert struct.unpack(">i", resp[:4])[0] == correlation_id
    return True


def tls_socket(port: int, ca: Path, cert: Path | None = None, key: Path | None = None,
               timeout: float = 10) -> ssl.SSLSocket:
    """A TLS connection to 127.0.0.1:port verifying the server against `ca`."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    raw = socket.create_connection((HOST, port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=HOST)
    except BaseException:
        raw.close()
        raise


def api_versions_answered(sock, correlation_id: int = 33) -> bool:
    sock.sendall(wire.api_versions(correlation_id))
    return struct.unpack(">ih", wire.recv_response(sock)[:6]) == (correlation_id, 0)


# ---------------------------------------------------------------------------
# confluent-kafka (librdkafka)

def ck_conf(secure: Secure, listener: str, mechanism: str | None = None,
            user: User | None = None, **extra) -> dict:
    conf = {"bootstrap.servers": secure.addr(listener), "security.protocol": listener}
    if listener in ("SSL", "SASL_SSL"):
        conf["ssl.ca.location"] = str(secure.certs.ca_cert)
    if mechanism is not None:
        conf.update({"sasl.mechanism": mechanism, "sasl.username": user.name,
                     "sasl.password": user.password})
    conf.update(extra)
    return conf


def ck_produce(conf: dict, topic: str, records: list[tuple]) -> list[int]:
    """Produce keyed records to partition 0 in order; their offsets."""
    errors: list = []
    producer = Producer({**conf, "acks": "all", "linger.ms": 5, "enable.idempotence": False,
                         "message.timeout.ms": 30000, "error_cb": errors.append})
    offsets: list = [None] * len(records)
    failed: list = []

    def report(i):
        def on_delivery(err, msg):
            if err is not None:
                failed.append((i, err))
            else:
                offsets[i] = msg.offset()
        return on_delivery

    for i, (key, value) in enumerate(records):
        producer.produce(topic, value=value, key=key, partition=0, on_delivery=report(i))
        producer.poll(0)
    assert producer.flush(40) == 0, f"records left unflushed; client errors: {errors}"
    assert not failed, f"{failed[:3]}; client errors: {errors}"
    return offsets


def ck_consume(conf: dict, topic: str, count: int, timeout: float = 30) -> list[tuple]:
    """(key, value, offset) of `count` records of partition 0 from the beginning."""
    consumer = Consumer({**conf, "group.id": "unused-assign-only", "enable.auto.commit": False,
                         "auto.offset.reset": "error", "fetch.wait.max.ms": 200})
    consumer.assign([TopicPartition(topic, 0, -2)])  # OFFSET_BEGINNING
    out: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None or msg.error().code() == KafkaError._PARTITION_EOF, \
                msg.error()
            if msg.error() is None:
                out.append((msg.key(), msg.value(), msg.offset()))
    finally:
        consumer.close()
    assert len(out) == count, f"read {len(out)} of {count} records"
    return out


def ck_try_produce(conf: dict, topic: str, wait_for: int | None = None,
                   timeout: float = 8) -> tuple[list, list]:
    """Try to produce one record that must not land: (delivery outcomes, client
    errors), after its delivery report, or once a client error of code
    `wait_for` is seen, or after `timeout` s."""
    errors: list = []
    delivered: list = []
    producer = Producer({**conf, "message.timeout.ms": 4000,
                         "socket.connection.setup.timeout.ms": 3000,
                         "reconnect.backoff.ms": 200, "enable.idempotence": False,
                         "error_cb": errors.append})
    producer.produce(topic, value=b"must-not-land", partition=0,
                     on_delivery=lambda err, msg: delivered.append(err if err else msg.offset()))
    deadline = time.monotonic() + timeout
    while not delivered and time.monotonic() < deadline:
        producer.poll(0.2)
        if wait_for is not None and any(e.code() == wait_for for e in errors):
            break
    producer.purge()
    producer.poll(0)
    return delivered, errors


def assert_not_delivered(delivered: list, errors: list) -> None:
    assert not any(isinstance(d, int) for d in delivered), \
        f"delivered at offset {delivered}; client errors {errors}"


def assert_plaintext_serves(secure: Secure) -> None:
    """A PLAINTEXT produce + consume still works."""
    assert secure.node.running, "node died"
    topic = new_topic(secure, "still-serving")
    records = keyed_records("plaintext check", 2)
    conf = ck_conf(secure, "PLAINTEXT")
    assert ck_produce(conf, topic, records) == [0, 1]
    assert ck_consume(conf, topic, 2) == [(k, v, i) for i, (k, v) in enumerate(records)]


# ---------------------------------------------------------------------------
# kcat, kafka-python, kafkajs

def kcat_args(secure: Secure, mechanism: str, user: User) -> list[str]:
    return ["-b", secure.addr("SASL_SSL"), "-X", "security.protocol=SASL_SSL",
            "-X", f"sasl.mechanisms={mechanism}", "-X", f"sasl.username={user.name}",
            "-X", f"sasl.password={user.password}",
            "-X", f"ssl.ca.location={secure.certs.ca_cert}"]


def kcat_run(args: list[str], input: bytes | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["kcat", *args], input=input, capture_output=True, timeout=timeout)


def kcat_round_trip(secure, mechanism, user, topic, records) -> list[tuple]:
    base = kcat_args(secure, mechanism, user)
    lines = b"".join(k + b":" + v + b"\n" for k, v in records)
    done = kcat_run([*base, "-t", topic, "-p", "0", "-P", "-K:"], input=lines)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    done = kcat_run([*base, "-t", topic, "-p", "0", "-C", "-o", "beginning", "-e",
                     "-f", "%k:%s:%o\n"])
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    out = []
    for line in done.stdout.decode().splitlines():
        key, value, offset = line.split(":")
        out.append((key.encode(), value.encode(), int(offset)))
    return out


def kp_conf(secure: Secure, mechanism: str, user: User, listener: str = "SASL_SSL") -> dict:
    return dict(bootstrap_servers=secure.addr(listener), security_protocol=listener,
                sasl_mechanism=mechanism, sasl_plain_username=user.name,
                sasl_plain_password=user.password, ssl_cafile=str(secure.certs.ca_cert),
                request_timeout_ms=20000)


def kp_round_trip(secure, mechanism, user, topic, records) -> list[tuple]:
    conf = kp_conf(secure, mechanism, user)
    producer = KafkaProducer(**conf, acks="all", enable_idempotence=False, max_block_ms=20000)
    try:
        futures = [producer.send(topic, key=k, value=v, partition=0) for k, v in records]
        producer.flush(timeout=30)
        assert [f.get(timeout=30).offset for f in futures] == list(range(len(records)))
    finally:
        producer.close(timeout=10)
    consumer = KafkaConsumer(**conf, group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=200, consumer_timeout_ms=1000)
    try:
        tp = KpTopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got = poll_n(consumer, len(records))
    finally:
        consumer.close()
    return [(m.key, m.value, m.offset) for m in got]


def kjs_security(secure: Secure, mechanism: str, user: User) -> dict:
    return {"brokers": [secure.addr("SASL_SSL")],
            "ssl": {"ca": secure.certs.ca_cert.read_text()},
            "sasl": {"mechanism": mechanism.lower(), "username": user.name,
                     "password": user.password}}


def run_js(node_exe: str, cmd: dict, timeout: float = 60) -> tuple[int, dict]:
    """Run one client.js command; (exit code, its JSON result)."""
    done = subprocess.run([node_exe, str(JS_DIR / "client.js")], input=json.dumps(cmd).encode(),
                          capture_output=True, timeout=timeout, cwd=JS_DIR)
    out = done.stdout.decode().strip().splitlines()
    assert out, f"client.js {cmd['command']}: no output (exit {done.returncode}): " \
                f"{done.stderr.decode()[-3000:]}"
    return done.returncode, json.loads(out[-1])


def run_js_ok(node_exe: str, cmd: dict) -> dict:
    code, result = run_js(node_exe, cmd)
    assert code == 0 and "error" not in result, \
        f"client.js {cmd['command']} failed: {result.get('error', result)}"
    return result


def kjs_round_trip(node_exe, secure, mechanism, user, topic, records) -> list[tuple]:
    base = kjs_security(secure, mechanism, user)
    res = run_js_ok(node_exe, {**base, "command": "produce", "topic": topic, "codec": "none",
                               "acks": -1, "partition": 0,
                               "records": [{"key": b64(k), "value": b64(v), "headers": []}
                                           for k, v in records]})
    assert [(r["partition"], r["errorCode"], r["baseOffset"]) for r in res["results"]] == \
        [(0, 0, "0")]
    got = run_js_ok(node_exe, {**base, "command": "consume", "topic": topic,
                               "groupId": f"{topic}-g", "count": len(records),
                               "fromBeginning": True})
    return [(unb64(r["key"]), unb64(r["value"]), r["offset"]) for r in got["records"]]


# ---------------------------------------------------------------------------

@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("client", CLIENTS)
def test_sasl_ssl_round_trip(secure, node_bin, client, mechanism):  # noqa: F811
    user = USERS[mechanism]
    topic = new_topic(secure, f"{client}-{mechanism}".lower())
    records = keyed_records(f"{client}/{mechanism}")
    if client == "kcat":
        got = kcat_round_trip(secure, mechanism, user, topic, records)
    elif client == "confluent-kafka":
        conf = ck_conf(secure, "SASL_SSL", mechanism, user)
        assert ck_produce(conf, topic, records) == list(range(len(records)))
        got = ck_consume(conf, topic, len(records))
    elif client == "kafka-python":
        got = kp_round_trip(secure, mechanism, user, topic, records)
    else:
        got = kjs_round_trip(node_bin, secure, mechanism, user, topic, records)
    assert got == [(k, v, i) for i, (k, v) in enumerate(records)]


# each client with a wrong password, over a different mechanism each
WRONG_PASSWORD_MECHANISM = {"kcat": "PLAIN", "confluent-kafka": "SCRAM-SHA-256",
                            "kafka-python": "SCRAM-SHA-512", "kafkajs": "SCRAM-SHA-256"}


@pytest.mark.parametrize("client", CLIENTS)
def test_wrong_password_is_an_authentication_error(secure, node_bin, client,  # noqa: F811
                                                   caplog):
    mechanism = WRONG_PASSWORD_MECHANISM[client]
    user = replace(USERS[mechanism], password="not-the-password")
    topic = new_topic(secure, f"wrong-pw-{client}")
    if client == "kcat":
        done = kcat_run([*kcat_args(secure, mechanism, user), "-L", "-m", "3"], timeout=30)
        stderr = done.stderr.decode()
        assert done.returncode != 0, stderr
        assert "authentication" in stderr.lower(), stderr[-2000:]
    elif client == "confluent-kafka":
        delivered, errors = ck_try_produce(ck_conf(secure, "SASL_SSL", mechanism, user), topic,
                                           wait_for=KafkaError._AUTHENTICATION)
        assert_not_delivered(delivered, errors)
        assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    elif client == "kafka-python":
        # kafka-python 3.0.12 retries a failed bootstrap until bootstrap_timeout_ms
        # and then raises KafkaTimeoutError; it logs the SaslAuthenticationFailedError
        # of each attempt whose answer it read. It drops an answer read together
        # with the connection's end ("socket disconnected"): Kafka closes a failed
        # connection only after connection.failed.authentication.delay.ms (100 ms)
        with caplog.at_level(logging.INFO, logger="kafka"):
            with pytest.raises((SaslAuthenticationFailedError, KafkaTimeoutError)):
                producer = KafkaProducer(**kp_conf(secure, mechanism, user),
                                         max_block_ms=5000, bootstrap_timeout_ms=5000,
                                         enable_idempotence=False)
                try:
                    producer.send(topic, key=b"k", value=b"must-not-land", partition=0).get(5)
                finally:
                    producer.close(timeout=5)
        seen = [r.getMessage() for r in caplog.records]
        assert any("SaslAuthenticationFailedError" in m for m in seen), \
            "kafka-python never saw SASL_AUTHENTICATION_FAILED: " + \
            "; ".join(m for m in seen if "ootstrap connection" in m)[:2000]
    else:
        code, result = run_js(node_bin, {
            **kjs_security(secure, mechanism, user), "command": "produce", "topic": topic,
            "codec": "none", "acks": -1, "partition": 0,
            "records": [{"key": b64(b"k"), "value": b64(b"must-not-land"), "headers": []}]})
        assert code != 0, result
        names = {result.get("name"), (result.get("cause") or {}).get("name")}
        assert "KafkaJSSASLAuthenticationError" in names, result
        assert "SASL_AUTHENTICATION_FAILED" in result["error"] \
            or "authentication failed" in result["error"].lower(), result["error"][:2000]
    assert high_watermark(secure, topic) == 0
    assert_plaintext_serves(secure)


@pytest.mark.parametrize("client_protocol,listener", [
    ("SASL_PLAINTEXT", "SASL_SSL"),  # skips TLS
    ("SASL_SSL", "SASL_PLAINTEXT"),  # TLS to a plain TCP listener
    ("PLAINTEXT", "SASL_PLAINTEXT"),  # skips SASL
], ids=["no-tls-to-sasl-ssl", "tls-to-sasl-plaintext", "no-sasl-to-sasl-plaintext"])
def test_wrong_protocol_for_the_listener_cannot_produce(secure, client_protocol, listener):
    user = USERS["SCRAM-SHA-512"]
    topic = new_topic(secure, "wrong-protocol")
    conf = {"bootstrap.servers": secure.addr(listener), "security.protocol": client_protocol,
            "ssl.ca.location": str(secure.certs.ca_cert)}
    if client_protocol.startswith("SASL"):
        conf.update({"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user.name,
                     "sasl.password": user.password})
    if client_protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        del conf["ssl.ca.location"]
    delivered, errors = ck_try_produce(conf, topic)
    assert_not_delivered(delivered, errors)
    assert high_watermark(secure, topic) == 0
    assert_plaintext_serves(secure)


@pytest.mark.parametrize("listener", LISTENERS)
def test_metadata_advertises_the_listener_it_is_asked_on(secure, listener):
    extra = {}
    if listener == "SSL":
        extra = {"ssl.certificate.location": str(secure.certs.client_cert),
                 "ssl.key.location": str(secure.certs.client_key)}
    mechanism = "SCRAM-SHA-256" if listener.startswith("SASL") else None
    admin = AdminClient(ck_conf(secure, listener, mechanism, USERS["SCRAM-SHA-256"], **extra))
    meta = admin.list_topics(timeout=15)
    node = secure.node
    assert list(meta.brokers) == [node.node_id]
    broker = meta.brokers[node.node_id]
    assert (broker.host, broker.port) == (HOST, secure.port(listener)), \
        f"{listener}: advertised {broker.host}:{broker.port}, " \
        f"listeners {node.listener_ports}"


def test_mtls_client_certificate_produces_and_consumes(secure):
    conf = ck_conf(secure, "SSL", **{"ssl.certificate.location": str(secure.certs.client_cert),
                                     "ssl.key.location": str(secure.certs.client_key)})
    topic = new_topic(secure, "mtls")
    records = keyed_records("mtls alice")
    assert ck_produce(conf, topic, records) == list(range(5))
    assert ck_consume(conf, topic, 5) == [(k, v, i) for i, (k, v) in enumerate(records)]


@pytest.mark.parametrize("certificate", ["none", "other-ca"])
def test_mtls_listener_refuses_a_client_without_a_trusted_certificate(secure, certificate):
    extra = {}
    if certificate == "other-ca":
        extra = {"ssl.certificate.location": str(secure.certs.stranger_cert),
                 "ssl.key.location": str(secure.certs.stranger_key)}
    topic = new_topic(secure, f"mtls-{certificate}")
    delivered, errors = ck_try_produce(ck_conf(secure, "SSL", **extra), topic)
    assert_not_delivered(delivered, errors)
    assert high_watermark(secure, topic) == 0
    # and at the TLS level: no Kafka request is answered on such a connection
    cert = key = None
    if certificate == "other-ca":
        cert, key = secure.certs.stranger_cert, secure.certs.stranger_key
    try:
        sock = tls_socket(secure.port("SSL"), secure.certs.ca_cert, cert, key)
    except (ssl.SSLError, ConnectionError):
        pass  # TLS 1.2: refused in the handshake itself
    else:
        with sock:
            assert not metadata_answered(sock), "Metadata answered without a client certificate"
    assert_plaintext_serves(secure)


def test_sasl_plaintext_with_scram(secure):
    user = USERS["SCRAM-SHA-512"]
    conf = ck_conf(secure, "SASL_PLAINTEXT", "SCRAM-SHA-512", user)
    topic = new_topic(secure, "sasl-plaintext")
    records = keyed_records("sasl plaintext")
    assert ck_produce(conf, topic, records) == list(range(5))
    assert ck_consume(conf, topic, 5) == [(k, v, i) for i, (k, v) in enumerate(records)]


def test_sessions_do_not_expire_without_a_lifetime(secure):
    with socket.create_connection((HOST, secure.port("SASL_PLAINTEXT")), timeout=10) as sock:
        answer = plain_login(sock, USERS["PLAIN"])
        assert (answer.error_code, answer.session_lifetime_ms) == (0, 0), answer
        assert metadata_answered(sock)


def test_scram_users_through_the_kafka_admin_api(secure):
    node = secure.node
    admin = AdminClient(ck_conf(secure, "SASL_SSL", "SCRAM-SHA-512", USERS["SCRAM-SHA-512"]))
    dave = User("dave", "SCRAM-SHA-512", "dave-secret-4")
    upsert = UserScramCredentialUpsertion(
        "dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), dave.password.encode())
    assert admin.alter_user_scram_credentials([upsert])["dave"].result(timeout=15) is None

    described = admin.describe_user_scram_credentials(["dave"])["dave"].result(timeout=15)
    assert described.user == "dave"
    assert [(i.mechanism, i.iterations) for i in described.scram_credential_infos] == \
        [(ScramMechanism.SCRAM_SHA_512, 8192)]
    assert ("dave", "SCRAM-SHA-512", 8192) in list_users(node)

    dave_conf = ck_conf(secure, "SASL_SSL", "SCRAM-SHA-512", dave)
    topic = new_topic(secure, "dave")
    assert ck_produce(dave_conf, topic, keyed_records("dave", 3)) == [0, 1, 2]

    delete = UserScramCredentialDeletion("dave", ScramMechanism.SCRAM_SHA_512)
    assert admin.alter_user_scram_credentials([delete])["dave"].result(timeout=15) is None
    with pytest.raises(KafkaException) as gone:
        admin.describe_user_scram_credentials(["dave"])["dave"].result(timeout=15)
    assert gone.value.args[0].code() == KafkaError.RESOURCE_NOT_FOUND, gone.value
    assert not {u for u in list_users(node) if u[0] == "dave"}
    delivered, errors = ck_try_produce(dave_conf, topic, wait_for=KafkaError._AUTHENTICATION)
    assert_not_delivered(delivered, errors)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert high_watermark(secure, topic) == 3
    # no user named: every user (Kafka treats a null or empty list alike)
    everyone = admin.describe_user_scram_credentials().result(timeout=15)
    assert {"plain-user", "scram256-user", "scram512-user"} <= set(everyone), everyone
    assert "dave" not in everyone
    assert [(i.mechanism, i.iterations) for i in everyone["plain-user"].scram_credential_infos] \
        == [(ScramMechanism.SCRAM_SHA_256, ITERATIONS)]


def test_user_added_with_the_cli_logs_in_at_once(secure):
    node = secure.node
    erin = User("erin", "SCRAM-SHA-256", "erin-secret-5")
    topic = new_topic(secure, "erin")
    conf = ck_conf(secure, "SASL_SSL", "SCRAM-SHA-256", erin)
    # unknown yet: refused like a wrong password
    delivered, errors = ck_try_produce(conf, topic, wait_for=KafkaError._AUTHENTICATION)
    assert_not_delivered(delivered, errors)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors

    add_user(node, erin, secure.workdir)
    add_user(node, replace(erin, mechanism="SCRAM-SHA-512"), secure.workdir, iterations=5000)
    assert {u for u in list_users(node) if u[0] == "erin"} == \
        {("erin", "SCRAM-SHA-256", ITERATIONS), ("erin", "SCRAM-SHA-512", 5000)}
    records = keyed_records("erin")
    assert ck_produce(conf, topic, records) == list(range(5))
    plain = ck_conf(secure, "SASL_SSL", "PLAIN", erin)
    assert ck_consume(plain, topic, 5) == [(k, v, i) for i, (k, v) in enumerate(records)]

    cli_ok(user_cli(node, "remove", "erin", "--mechanism", "SCRAM-SHA-256"))
    assert {u for u in list_users(node) if u[0] == "erin"} == {("erin", "SCRAM-SHA-512", 5000)}
    delivered, errors = ck_try_produce(conf, topic, wait_for=KafkaError._AUTHENTICATION)
    assert_not_delivered(delivered, errors)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    # the SCRAM-SHA-512 credential still logs in, until the user is removed
    conf512 = ck_conf(secure, "SASL_SSL", "SCRAM-SHA-512", erin)
    assert ck_produce(conf512, topic, keyed_records("erin 512", 1)) == [5]
    cli_ok(user_cli(node, "remove", "erin"))
    assert not {u for u in list_users(node) if u[0] == "erin"}
    delivered, errors = ck_try_produce(conf512, topic, wait_for=KafkaError._AUTHENTICATION)
    assert_not_delivered(delivered, errors)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def test_session_lifetime_librdkafka_reauthenticates(sluice, tmp_path):
    s = start_secure_node(sluice, tmp_path, mtls=False,
                          listeners=("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"),
                          extra_args=["--sasl-session-lifetime", "2s"])
    topic = new_topic(s, "reauth")
    # a raw connection that logs in once and never re-authenticates
    idle = socket.create_connection((HOST, s.port("SASL_PLAINTEXT")), timeout=10)
    # and one that re-authenticates before its session ends (KIP-368: a new
    # SaslHandshake + SaslAuthenticate on the authenticated connection)
    renewing = socket.create_connection((HOST, s.port("SASL_PLAINTEXT")), timeout=10)
    with idle, renewing:
        for sock in (idle, renewing):
            answer = plain_login(sock, USERS["PLAIN"])
            assert answer.error_code == 0, answer
            assert 0 < answer.session_lifetime_ms <= 2000, answer
            assert metadata_answered(sock)
        logged_in = time.monotonic()

        errors: list = []
        stats: list = []
        offsets: list = []
        failed: list = []
        producer = Producer({**ck_conf(s, "SASL_SSL", "SCRAM-SHA-512", USERS["SCRAM-SHA-512"]),
                             "linger.ms": 0, "enable.idempotence": False,
                             "message.timeout.ms": 20000, "statistics.interval.ms": 500,
                             "error_cb": errors.append, "stats_cb": stats.append})

        def on_delivery(err, msg):
            if err is not None:
                failed.append(err)
            else:
                offsets.append(msg.offset())

        sent = 0
        renewed = checked_renewed = False
        start = time.monotonic()
        while time.monotonic() - start < 6.5:
            producer.produce(topic, value=f"m{sent}".encode(), partition=0,
                             on_delivery=on_delivery)
            sent += 1
            producer.poll(0.1)
            since_login = time.monotonic() - logged_in
            if not renewed and since_login > 1.0:
                error_code, _ = sasl_handshake(renewing, "PLAIN", correlation_id=11)
                assert error_code == 0
                answer = sasl_authenticate(renewing, plain_bytes(USERS["PLAIN"].name,
                                                                 USERS["PLAIN"].password), 12)
                assert answer.error_code == 0 and answer.session_lifetime_ms > 0, answer
                renewed = True
            if renewed and not checked_renewed and since_login > 2.6:
                assert metadata_answered(renewing, 13), \
                    "a re-authenticated connection was closed at its first session's end"
                checked_renewed = True
        assert producer.flush(20) == 0
        producer.poll(0.6)  # one more statistics report
        assert checked_renewed
        assert not failed, failed[:3]
        assert sorted(offsets) == list(range(sent)), f"{len(offsets)} of {sent} delivered"
        assert not errors, f"client errors while the sessions expired: {errors}"
        # librdkafka re-authenticated on its connection instead of reconnecting
        last = json.loads(stats[-1])
        brokers = [b for b in last["brokers"].values() if b.get("nodeid") == s.node.node_id]
        assert brokers and all(b["disconnects"] == 0 for b in brokers), \
            [(b["name"], b["connects"], b["disconnects"]) for b in brokers]
        # the connection that did not re-authenticate is closed at its next request
        assert time.monotonic() - logged_in > 2.5
        assert not metadata_answered(idle, 14), "request served on an expired session"
    assert s.node.running
    assert_plaintext_serves(s)


def peer_certificate(port: int, ca: Path) -> bytes:
    with tls_socket(port, ca) as sock:
        return sock.getpeercert(binary_form=True)


def replace_file(path: Path, data: bytes) -> None:
    """Atomically: a reader sees the old content or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_sighup_reloads_the_certificate(sluice, tmp_path):
    certs = make_certs(tmp_path / "certs")
    live = tmp_path / "live"
    live.mkdir()
    cert_file, key_file = live / "server.pem", live / "server.key"
    shutil.copyfile(certs.server_cert, cert_file)
    shutil.copyfile(certs.server_key, key_file)
    node = sluice.distributed(listeners={"PLAINTEXT": None, "SSL": None},
                              extra_args=["--tls-cert-file", str(cert_file),
                                          "--tls-key-file", str(key_file)])
    port = node.listener_ports["SSL"]
    assert peer_certificate(port, certs.ca_cert) == certs.server_der
    with tls_socket(port, certs.ca_cert) as before:
        assert api_versions_answered(before, 1)
        replace_file(cert_file, certs.server2_cert.read_bytes())
        replace_file(key_file, certs.server2_key.read_bytes())
        os.kill(node.pid, signal.SIGHUP)

        def reloaded() -> bool:
            return peer_certificate(port, certs.ca2_cert) == certs.server2_der

        wait_until(reloaded, 10, "the new certificate after SIGHUP", interval=0.2,
                   proc=node.proc, log=node.log)
        # a client that trusts only the old CA now fails verification
        with pytest.raises(ssl.SSLCertVerificationError):
            peer_certificate(port, certs.ca_cert)
        # the connection made before the reload is untouched
        assert api_versions_answered(before, 2)
    with tls_socket(port, certs.ca2_cert) as after:
        assert api_versions_answered(after, 3)
    assert node.running
    topic = topic_name("after-sighup")
    node.api.create_topic(topic, 1)
    conf = {"bootstrap.servers": node.bootstrap}
    records = keyed_records("after sighup", 2)
    assert ck_produce(conf, topic, records) == [0, 1]
    assert ck_consume(conf, topic, 2) == [(k, v, i) for i, (k, v) in enumerate(records)]
