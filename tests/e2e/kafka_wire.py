"""Raw Kafka wire protocol for the tests that must send bytes no client
would: size-prefixed frames, request headers (v1: api key, version,
correlation id, client id), reading a response back, and the primitive
encodings those requests use."""

from __future__ import annotations

import socket
import struct

from processes import HOST


def frame(body: bytes) -> bytes:
    """A size-prefixed frame of `body` (a request header and body)."""
    return struct.pack(">i", len(body)) + body


def string(text: str) -> bytes:
    """A Kafka STRING (int16 length, UTF-8)."""
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def request(api_key: int, version: int, body: bytes, *, correlation_id: int = 7,
            client_id: bytes | None = b"raw-test") -> bytes:
    """A framed request with a v1 header (client id null when None)."""
    client = struct.pack(">h", -1) if client_id is None else struct.pack(">h", len(client_id)) + client_id
    return frame(struct.pack(">hhi", api_key, version, correlation_id) + client + body)


def api_versions(correlation_id: int, version: int = 0) -> bytes:
    """ApiVersions with no body (v0-v2), null client id."""
    return request(18, version, b"", correlation_id=correlation_id, client_id=None)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def recv_response(sock: socket.socket) -> bytes:
    """One response frame, without its size (correlation id first)."""
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    return recv_exact(sock, size)


def closed(sock: socket.socket) -> bool:
    """Whether the peer closes the connection (waits up to 10 s)."""
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def call(node, request_frame: bytes) -> bytes:
    """Send one request on a fresh connection to `node`; the response body
    after the correlation id."""
    with socket.create_connection((HOST, node.kafka_port), timeout=30) as sock:
        sock.sendall(request_frame)
        return recv_response(sock)[4:]
