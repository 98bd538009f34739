"""Hostile bytes against the SASL and TLS listeners: each is refused with the
Kafka error a broker gives (or the connection is closed), and the node keeps
serving.

Raw sockets, frames built like kafka_wire.py: SaslHandshake (api key 17, v1)
and SaslAuthenticate (api key 36; v1 unless a case says otherwise), with a
SCRAM client written here from RFC 5802 (hashlib/hmac) so that any message
of the exchange can be tampered with. One distributed node per module
(test_security_sasl.start_secure_node: PLAINTEXT, SSL with mTLS,
SASL_PLAINTEXT, SASL_SSL; users added with `sluice user add`). Covered:

* the untampered exchanges work (control): SCRAM-SHA-256/512 with the
  server's signature checked, PLAIN over SaslAuthenticate v0, v1 and v2;
* before authentication only ApiVersions (which lists SaslHandshake v1 and
  SaslAuthenticate v0-2), SaslHandshake and SaslAuthenticate are answered:
  Metadata closes the connection (SASL_PLAINTEXT and SASL_SSL), and so does
  a request in the middle of a SCRAM exchange;
* SaslHandshake with GSSAPI: UNSUPPORTED_SASL_MECHANISM (33) and the enabled
  mechanisms; SaslHandshake v0 is not served;
* SaslAuthenticate before any handshake;
* malformed PLAIN (no NULs, too many, empty, an authorization id naming
  another user): SASL_AUTHENTICATION_FAILED (58), then closed;
* malformed SCRAM client-first messages (missing n=, bad gs2 headers,
  channel binding, non-UTF-8, attributes out of order, a mandatory extension,
  a bad username escape): 58 or closed; the gs2 flag `y` (valid in RFC 5802)
  is refused at once or binds the client-final to it;
* SCRAM for an unknown user, or for a user without a credential of that
  mechanism: 58 (at the first or the final message);
* SCRAM client-final with a tampered nonce, a flipped proof bit or a wrong
  channel binding (also over SASL_SSL): 58, then closed; a complete exchange
  replayed on a new connection: 58;
* 1 MiB of auth bytes (PLAIN and SCRAM) and a frame over the request size
  limit before authentication: refused;
* random bytes and a plaintext ApiVersions to the SASL_SSL and SSL ports, and
  a truncated ClientHello: closed, and TLS still works there.

After every case the node must still answer ApiVersions on PLAINTEXT and
complete a raw SCRAM login on SASL_PLAINTEXT; at the end a confluent-kafka
client produces and consumes over SASL_SSL with SCRAM-SHA-512.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import random
import socket
import ssl
import struct

import pytest

import kafka_wire as wire
from harness import HOST
from test_security_sasl import (USERS, Secure, authenticate_request, ck_conf, ck_consume,
                                ck_produce, keyed_records, metadata_answered, metadata_request,
                                new_topic, parse_authenticate, parse_handshake, plain_bytes,
                                sasl_authenticate, sasl_handshake, start_secure_node, tls_socket)

SCRAM_USER = USERS["SCRAM-SHA-256"]
ENABLED = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
SASL_AUTHENTICATION_FAILED = 58
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
UNSUPPORTED_VERSION = 35


@pytest.fixture(scope="module")
def secure(module_factory, tmp_path_factory) -> Secure:
    return start_secure_node(module_factory, tmp_path_factory.mktemp("security-bad-input"))


# ---------------------------------------------------------------------------
# connections and what comes back

def connect(secure: Secure, listener: str) -> socket.socket:
    """A connection to `listener`: TLS (with alice's certificate on SSL) where due."""
    port = secure.port(listener)
    if listener == "SASL_SSL":
        return tls_socket(port, secure.certs.ca_cert)
    if listener == "SSL":
        return tls_socket(port, secure.certs.ca_cert, secure.certs.client_cert,
                          secure.certs.client_key)
    return socket.create_connection((HOST, port), timeout=10)


def answer_or_closed(sock) -> bytes | None:
    """One response frame, or None when the connection is closed instead."""
    try:
        return wire.recv_response(sock)
    except (ConnectionError, ssl.SSLError):
        return None


def peer_closed(sock, timeout: float = 10) -> bool:
    """Whether the peer closes the connection (without sending anything more)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionError, ssl.SSLError):
        return True
    except socket.timeout:
        return False


def send_quietly(sock, data: bytes) -> bool:
    """sendall; False when the peer has already closed."""
    try:
        sock.sendall(data)
        return True
    except (ConnectionError, ssl.SSLError):
        return False


def assert_auth_failed(sock, what: str, may_close_without_answer: bool = False) -> None:
    """The SaslAuthenticate just sent is answered SASL_AUTHENTICATION_FAILED
    and the connection then closed (or, when allowed, closed at once)."""
    resp = answer_or_closed(sock)
    if resp is None:
        assert may_close_without_answer, \
            f"{what}: closed without a SASL_AUTHENTICATION_FAILED answer"
        return
    _, answer = parse_authenticate(resp)
    assert answer.error_code == SASL_AUTHENTICATION_FAILED, f"{what}: {answer}"
    assert peer_closed(sock), f"{what}: connection left open after a failed authentication"


def assert_not_authenticated(sock, what: str) -> None:
    """Closed, or at least a Metadata request is not answered."""
    assert not metadata_answered(sock, 99), f"{what}: Metadata answered without a login"


def assert_serving(secure: Secure) -> None:
    node = secure.node
    assert node.running, "node died"
    with socket.create_connection((HOST, secure.port("PLAINTEXT")), timeout=10) as sock:
        sock.sendall(wire.api_versions(77))
        assert struct.unpack(">ih", wire.recv_response(sock)[:6]) == (77, 0)
    with connect(secure, "SASL_PLAINTEXT") as sock:
        scram_login(sock, Scram("SCRAM-SHA-256", SCRAM_USER.name, SCRAM_USER.password))
        assert metadata_answered(sock)


# ---------------------------------------------------------------------------
# SCRAM (RFC 5802), client side

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def attributes(message: bytes) -> dict[str, str]:
    return dict(part.split("=", 1) for part in message.decode().split(","))


class Scram:
    """One SCRAM exchange: client-first, then client-final for a server-first."""

    def __init__(self, mechanism: str, user: str, password: str, nonce: str | None = None):
        self.mechanism = mechanism
        self.hash = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
        self.password = password.encode()
        self.nonce = nonce or os.urandom(16).hex()
        self.bare = f"n={user},r={self.nonce}"
        self.server_signature = b""

    def client_first(self) -> bytes:
        return ("n,," + self.bare).encode()

    def _hmac(self, key: bytes, msg: bytes) -> bytes:
        return hmac.new(key, msg, self.hash).digest()

    def client_final(self, server_first: bytes, *, nonce: str | None = None,
                     channel_binding: str = "biws", flip_proof_bit: bool = False) -> bytes:
        attrs = attributes(server_first)
        salted = hashlib.pbkdf2_hmac(self.hash, self.password, base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self.hash, client_key).digest()
        without_proof = f"c={channel_binding},r={nonce or attrs['r']}"
        auth_message = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        proof = bytes(a ^ b for a, b in zip(client_key, self._hmac(stored_key, auth_message)))
        if flip_proof_bit:
            proof = bytes([proof[0] ^ 0x01]) + proof[1:]
        self.server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={b64(proof)}".encode()


def scram_first(sock, scram: Scram) -> bytes:
    """Handshake + client-first; the server-first message (checked)."""
    error_code, mechanisms = sasl_handshake(sock, scram.mechanism)
    assert error_code == 0, (error_code, mechanisms)
    answer = sasl_authenticate(sock, scram.client_first(), 3)
    assert answer.error_code == 0, answer
    attrs = attributes(answer.auth_bytes)
    assert attrs["r"].startswith(scram.nonce) and len(attrs["r"]) > len(scram.nonce), attrs
    assert base64.b64decode(attrs["s"]) and int(attrs["i"]) >= 4096, attrs
    return answer.auth_bytes


def scram_login(sock, scram: Scram) -> tuple[bytes, bytes]:
    """A complete exchange; (client-first, client-final) as sent."""
    server_first = scram_first(sock, scram)
    final = scram.client_final(server_first)
    answer = sasl_authenticate(sock, final, 4)
    assert answer.error_code == 0, answer
    assert attributes(answer.auth_bytes) == {"v": b64(scram.server_signature)}, answer
    return scram.client_first(), final


# ---------------------------------------------------------------------------
# SaslAuthenticate v0 and v2 (v1 is in test_security_sasl)

def uvarint(n: int) -> bytes:
    out = b""
    while True:
        byte = n & 0x7f
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7f) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def authenticate_v0(sock, auth: bytes, correlation_id: int) -> tuple[int, bytes]:
    sock.sendall(wire.request(36, 0, struct.pack(">i", len(auth)) + auth,
                              correlation_id=correlation_id))
    cid, answer = parse_authenticate(wire.recv_response(sock), version=0)
    assert cid == correlation_id
    return answer.error_code, answer.auth_bytes


def authenticate_v2(sock, auth: bytes, correlation_id: int) -> tuple[int, int]:
    """Flexible version: request header v2, compact bytes, tagged fields."""
    client = b"raw-test"
    header = struct.pack(">hhih", 36, 2, correlation_id, len(client)) + client + b"\0"
    sock.sendall(wire.frame(header + uvarint(len(auth) + 1) + auth + b"\0"))
    resp = wire.recv_response(sock)
    cid = struct.unpack(">i", resp[:4])[0]
    assert cid == correlation_id and resp[4] == 0  # response header v1: no tagged fields
    error_code = struct.unpack(">h", resp[5:7])[0]
    n, pos = read_uvarint(resp, 7)  # error message: 0 = null
    pos += max(n - 1, 0)
    n, pos = read_uvarint(resp, pos)  # auth bytes
    pos += max(n - 1, 0)
    lifetime = struct.unpack(">q", resp[pos:pos + 8])[0]
    return error_code, lifetime


# ---------------------------------------------------------------------------
# controls: the untampered exchanges

@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_raw_scram_exchange_succeeds(secure, mechanism):
    user = USERS[mechanism]
    with connect(secure, "SASL_PLAINTEXT") as sock:
        scram_login(sock, Scram(mechanism, user.name, user.password))
        assert metadata_answered(sock)


@pytest.mark.parametrize("version", [0, 1, 2])
def test_raw_plain_over_every_sasl_authenticate_version(secure, version):
    user = USERS["PLAIN"]
    auth = plain_bytes(user.name, user.password)
    with connect(secure, "SASL_PLAINTEXT") as sock:
        assert sasl_handshake(sock, "PLAIN")[0] == 0
        if version == 0:
            assert authenticate_v0(sock, auth, 5)[0] == 0
        elif version == 1:
            assert sasl_authenticate(sock, auth, 5).error_code == 0
        else:
            assert authenticate_v2(sock, auth, 5) == (0, 0)
        assert metadata_answered(sock)


# ---------------------------------------------------------------------------
# before authentication

@pytest.mark.parametrize("listener", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_only_sasl_requests_are_served_before_authentication(secure, listener):
    with connect(secure, listener) as sock:
        sock.sendall(wire.api_versions(21))
        resp = wire.recv_response(sock)
        correlation_id, error_code, count = struct.unpack(">ihi", resp[:10])
        assert (correlation_id, error_code) == (21, 0)
        versions = {}
        for i in range(count):
            key, low, high = struct.unpack(">hhh", resp[10 + 6 * i:16 + 6 * i])
            versions[key] = (low, high)
        sock.sendall(metadata_request(22))
        assert answer_or_closed(sock) is None, "Metadata answered before authentication"
    assert_serving(secure)
    assert versions.get(36) == (0, 2), versions  # SaslAuthenticate v0-2
    # SaslHandshake 0-1: librdkafka looks for v0 before it uses v1; v0 itself
    # is refused when sent (test_sasl_handshake_v0_is_not_served)
    assert versions.get(17) == (0, 1), versions


def test_handshake_with_an_unsupported_mechanism(secure):
    with connect(secure, "SASL_PLAINTEXT") as sock:
        error_code, mechanisms = sasl_handshake(sock, "GSSAPI")
        assert error_code == UNSUPPORTED_SASL_MECHANISM
        assert set(mechanisms) == ENABLED
        assert_not_authenticated(sock, "after an unsupported mechanism")
    assert_serving(secure)


def test_sasl_handshake_v0_is_not_served(secure):
    with connect(secure, "SASL_PLAINTEXT") as sock:
        sock.sendall(wire.request(17, 0, wire.string("PLAIN"), correlation_id=31))
        resp = answer_or_closed(sock)
        assert resp is not None, "SaslHandshake v0 unanswered"
        cid, error_code, _ = parse_handshake(resp)
        assert (cid, error_code) == (31, UNSUPPORTED_VERSION), (cid, error_code)
        assert_not_authenticated(sock, "after SaslHandshake v0")
    assert_serving(secure)


def test_authenticate_before_any_handshake(secure):
    user = USERS["PLAIN"]
    with connect(secure, "SASL_PLAINTEXT") as sock:
        sock.sendall(authenticate_request(plain_bytes(user.name, user.password), 41))
        resp = answer_or_closed(sock)
        if resp is not None:
            _, answer = parse_authenticate(resp)
            assert answer.error_code in (SASL_AUTHENTICATION_FAILED, ILLEGAL_SASL_STATE), answer
            assert_not_authenticated(sock, "after SaslAuthenticate without a handshake")
    assert_serving(secure)


def test_request_in_the_middle_of_a_scram_exchange_closes(secure):
    with connect(secure, "SASL_PLAINTEXT") as sock:
        scram_first(sock, Scram("SCRAM-SHA-256", SCRAM_USER.name, SCRAM_USER.password))
        sock.sendall(metadata_request(51))
        assert answer_or_closed(sock) is None, "Metadata answered mid-exchange"
    assert_serving(secure)


# ---------------------------------------------------------------------------
# PLAIN

@pytest.mark.parametrize("auth", [
    pytest.param(b"plain-user plain-secret-1", id="no-nuls"),
    pytest.param(b"\0plain-user\0plain-secret-1\0extra", id="too-many-nuls"),
    pytest.param(b"", id="empty"),
    pytest.param(b"\0\0", id="empty-user-and-password"),
    pytest.param(b"\0plain-user\0", id="empty-password"),
    pytest.param(b"scram256-user\0plain-user\0plain-secret-1", id="authzid-of-another-user"),
    pytest.param(b"\0plain-user\0plain-secret-\xff", id="non-utf8-password"),
])
def test_malformed_plain_is_refused(secure, auth):
    with connect(secure, "SASL_PLAINTEXT") as sock:
        assert sasl_handshake(sock, "PLAIN")[0] == 0
        sock.sendall(authenticate_request(auth, 61))
        assert_auth_failed(sock, f"PLAIN {auth!r}")
    assert_serving(secure)


# ---------------------------------------------------------------------------
# SCRAM

@pytest.mark.parametrize("client_first", [
    pytest.param(b"n,,r=0123456789abcdef", id="missing-username"),
    pytest.param(b"q,,n=scram256-user,r=0123456789abcdef", id="bad-gs2-flag"),
    pytest.param(b"n,n=scram256-user,r=0123456789abcdef", id="gs2-header-one-comma"),
    pytest.param(b"p=tls-server-end-point,,n=scram256-user,r=0123456789abcdef",
                 id="channel-binding"),
    pytest.param(b"n,,n=scram\xff\xfe256-user,r=0123456789abcdef", id="non-utf8"),
    pytest.param(b"n,,r=0123456789abcdef,n=scram256-user", id="out-of-order"),
    pytest.param(b"n,,m=ext,n=scram256-user,r=0123456789abcdef", id="mandatory-extension"),
    pytest.param(b"n,,n=scram=256-user,r=0123456789abcdef", id="bad-username-escape"),
    pytest.param(b"n,,n=scram256-user,r=", id="empty-nonce"),
    pytest.param(b"n,,n=scram256-user", id="missing-nonce"),
    pytest.param(b"", id="empty"),
])
def test_malformed_scram_client_first_is_refused(secure, client_first):
    with connect(secure, "SASL_PLAINTEXT") as sock:
        assert sasl_handshake(sock, "SCRAM-SHA-256")[0] == 0
        sock.sendall(authenticate_request(client_first, 71))
        assert_auth_failed(sock, f"client-first {client_first!r}", may_close_without_answer=True)
    assert_serving(secure)


def test_gs2_flag_y_binds_the_client_final(secure):
    """`y,,`: "I support channel binding but think you do not". RFC 5802 lets a
    server that offers no -PLUS mechanism go on (Kafka refuses it at once);
    either is accepted, but going on, the client-final must carry that header
    (c=eSws) and not c=biws ("n,,")."""
    for binding, accepted in (("biws", False), (b64(b"y,,"), True)):
        scram = Scram("SCRAM-SHA-256", SCRAM_USER.name, SCRAM_USER.password)
        with connect(secure, "SASL_PLAINTEXT") as sock:
            assert sasl_handshake(sock, "SCRAM-SHA-256")[0] == 0
            sock.sendall(authenticate_request(b"y,," + scram.bare.encode(), 121))
            resp = answer_or_closed(sock)
            if resp is None:
                continue  # refused at once
            _, answer = parse_authenticate(resp)
            if answer.error_code == SASL_AUTHENTICATION_FAILED:
                assert peer_closed(sock)
                continue
            assert answer.error_code == 0, answer
            final = scram.client_final(answer.auth_bytes, channel_binding=binding)
            sock.sendall(authenticate_request(final, 122))
            if accepted:
                _, answer = parse_authenticate(wire.recv_response(sock))
                assert answer.error_code == 0, answer
                assert attributes(answer.auth_bytes) == {"v": b64(scram.server_signature)}
                assert metadata_answered(sock)
            else:
                assert_auth_failed(sock, "gs2 flag y, then c=biws")
    assert_serving(secure)


@pytest.mark.parametrize("user,mechanism", [
    ("nobody", "SCRAM-SHA-256"),
    (USERS["SCRAM-SHA-512"].name, "SCRAM-SHA-256"),  # has only a SCRAM-SHA-512 credential
], ids=["unknown-user", "no-credential-for-the-mechanism"])
def test_scram_without_a_credential_is_refused(secure, user, mechanism):
    scram = Scram(mechanism, user, USERS["SCRAM-SHA-512"].password)
    with connect(secure, "SASL_PLAINTEXT") as sock:
        assert sasl_handshake(sock, mechanism)[0] == 0
        sock.sendall(authenticate_request(scram.client_first(), 81))
        resp = answer_or_closed(sock)
        assert resp is not None, "closed without an answer"
        _, answer = parse_authenticate(resp)
        if answer.error_code == 0:  # a made-up salt; refused at the final message
            sock.sendall(authenticate_request(scram.client_final(answer.auth_bytes), 82))
            assert_auth_failed(sock, f"{user} with {mechanism}, client-final")
        else:
            assert answer.error_code == SASL_AUTHENTICATION_FAILED, answer
            assert peer_closed(sock)
    assert_serving(secure)


@pytest.mark.parametrize("tamper,listener", [
    pytest.param({"nonce": "0123456789abcdef-not-the-servers"}, "SASL_PLAINTEXT", id="nonce"),
    pytest.param("server-nonce-changed", "SASL_PLAINTEXT", id="nonce-one-char"),
    pytest.param({"flip_proof_bit": True}, "SASL_PLAINTEXT", id="proof-bit"),
    pytest.param({"channel_binding": b64(b"y,,")}, "SASL_PLAINTEXT", id="channel-binding"),
    pytest.param({"channel_binding": b64(b"n,a=other,")}, "SASL_PLAINTEXT", id="gs2-authzid"),
    pytest.param({"flip_proof_bit": True}, "SASL_SSL", id="proof-bit-over-sasl-ssl"),
])
def test_tampered_scram_client_final_is_refused(secure, tamper, listener):
    scram = Scram("SCRAM-SHA-256", SCRAM_USER.name, SCRAM_USER.password)
    with connect(secure, listener) as sock:
        server_first = scram_first(sock, scram)
        if tamper == "server-nonce-changed":
            r = attributes(server_first)["r"]
            tamper = {"nonce": r[:-1] + ("A" if r[-1] != "A" else "B")}
        sock.sendall(authenticate_request(scram.client_final(server_first, **tamper), 91))
        assert_auth_failed(sock, f"client-final tampered {tamper}")
    assert_serving(secure)


def test_replayed_scram_exchange_is_refused(secure):
    scram = Scram("SCRAM-SHA-256", SCRAM_USER.name, SCRAM_USER.password)
    with connect(secure, "SASL_PLAINTEXT") as sock:
        first, final = scram_login(sock, scram)
        original_nonce = attributes(final)["r"]
    with connect(secure, "SASL_PLAINTEXT") as sock:
        assert sasl_handshake(sock, "SCRAM-SHA-256")[0] == 0
        answer = sasl_authenticate(sock, first, 101)
        assert answer.error_code == 0, answer
        assert attributes(answer.auth_bytes)["r"] != original_nonce, "server nonce reused"
        sock.sendall(authenticate_request(final, 102))
        assert_auth_failed(sock, "replayed client-final")
    assert_serving(secure)


# ---------------------------------------------------------------------------
# sizes

MIB = 1 << 20


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_a_mebibyte_of_auth_bytes_is_refused(secure, mechanism):
    if mechanism == "PLAIN":
        auth = plain_bytes(USERS["PLAIN"].name, "x" * MIB)
    else:
        auth = f"n,,n={SCRAM_USER.name},r={'x' * MIB}".encode()
    with connect(secure, "SASL_PLAINTEXT") as sock:
        assert sasl_handshake(sock, mechanism)[0] == 0
        if send_quietly(sock, authenticate_request(auth, 111)):
            assert_auth_failed(sock, f"1 MiB of {mechanism}", may_close_without_answer=True)
    assert_serving(secure)


@pytest.mark.parametrize("listener", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_frame_over_the_request_limit_before_authentication(secure, listener):
    with connect(secure, listener) as sock:
        send_quietly(sock, struct.pack(">i", 0x7ffffff0) + b"\0" * 64)
        assert answer_or_closed(sock) is None
    assert_serving(secure)


# ---------------------------------------------------------------------------
# TLS

def read_until_closed(sock, timeout: float = 10) -> tuple[bool, bytes]:
    """(closed within `timeout`, the bytes that came before)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionError:
            return True, data
        except socket.timeout:
            return False, data
        if not chunk:
            return True, data
        data += chunk


def client_hello() -> bytes:
    """A real TLS ClientHello, as a client would send it first."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:  # waits for the ServerHello, the ClientHello is out
        pass
    return outgoing.read()


# 0xff first: not a TLS content type, so no server waits for the rest of a "record"
GARBAGE = b"\xff" + random.Random(5).randbytes(4095)


@pytest.mark.parametrize("payload", [
    pytest.param(GARBAGE, id="random-bytes"),
    pytest.param(wire.api_versions(1), id="plaintext-api-versions"),
])
@pytest.mark.parametrize("listener", ["SASL_SSL", "SSL"])
def test_non_tls_bytes_to_a_tls_listener_are_refused(secure, listener, payload):
    with socket.create_connection((HOST, secure.port(listener)), timeout=10) as sock:
        send_quietly(sock, payload)
        closed, data = read_until_closed(sock)
        assert closed, f"connection left open; got {data[:64]!r}"
        # nothing but (at most) a TLS alert record: no Kafka answer
        assert data == b"" or data[0] == 0x15, data[:64]
    with connect(secure, listener) as sock:
        sock.sendall(wire.api_versions(2))
        assert struct.unpack(">ih", wire.recv_response(sock)[:6]) == (2, 0)
    assert_serving(secure)


@pytest.mark.parametrize("listener", ["SASL_SSL", "SSL"])
def test_truncated_client_hello_then_close(secure, listener):
    hello = client_hello()
    assert hello[0] == 0x16 and len(hello) > 40
    with socket.create_connection((HOST, secure.port(listener)), timeout=10) as sock:
        sock.sendall(hello[:len(hello) // 2])
    with connect(secure, listener) as sock:
        sock.sendall(wire.api_versions(3))
        assert struct.unpack(">ih", wire.recv_response(sock)[:6]) == (3, 0)
    assert_serving(secure)


# ---------------------------------------------------------------------------

def test_clients_still_work_after_the_hostile_input(secure):
    user = USERS["SCRAM-SHA-512"]
    conf = ck_conf(secure, "SASL_SSL", "SCRAM-SHA-512", user)
    topic = new_topic(secure, "after-hostile")
    records = keyed_records("after hostile input")
    assert ck_produce(conf, topic, records) == list(range(5))
    assert ck_consume(conf, topic, 5) == [(k, v, i) for i, (k, v) in enumerate(records)]
    assert_serving(secure)
