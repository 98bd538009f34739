"""A fault-injecting HTTP proxy between one sluice node and the S3 server
(moto). It parses just enough HTTP/1.x to know where requests and responses
begin and end (request line, headers, Content-Length or chunked bodies;
aws-chunked uploads travel as a Content-Length body and pass through
untouched) and forwards bytes as they come, so keep-alive and streaming
bodies work as they do without it.

Modes, switched at runtime by the nemesis (``set_mode``):

``pass``       forward everything.
``error``      answer a ``fraction`` of the requests itself with 503 SlowDown
               or 500 InternalError (an S3 XML error body); moto never sees them.
``slow``       delay every response by a seeded 0.2-2 s.
``stall``      hold every request (and every response not yet forwarded)
               without answering; when healed, close those connections (RST).
``reset``      RST every connection and every new one.
``lost_put``   forward a ``fraction`` of the writes (PUT, upload part,
               CompleteMultipartUpload) to moto, read moto's answer, then RST
               the client connection without it: the write happened but the
               node never learns it.
``blackhole``  (``cut_store``) forward nothing in either direction, accept
               new connections without reading them; when healed, close every
               connection that lived through it (RST).

Bounded: at most ``max_conns`` client connections (one thread each, 64 KiB
reads, heads up to 64 KiB); more are refused with a RST.
"""

from __future__ import annotations

import itertools
import logging
import random
import socket
import threading
import time

from processes import close_quietly, hard_close
from proxy import ProxyBase

MODES = ("pass", "error", "slow", "stall", "reset", "lost_put", "blackhole")
HEAD_MAX = 64 * 1024
LINE_MAX = 8 * 1024
CHUNK = 64 * 1024
HOLDING = ("stall", "blackhole")


class ProtocolError(Exception):
    pass


class Hold(Exception):
    """The connection is to be closed with a RST (held, reset, lost answer)."""


class Reader:
    """Buffered reads from a socket; the buffer never exceeds HEAD_MAX + CHUNK."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(CHUNK)
        if not data:
            return False
        self.buf += data
        return True

    def head(self) -> bytes | None:
        """The next head (through the blank line); None on a clean EOF."""
        start = 0
        while True:
            while self.buf.startswith(b"\r\n"):  # stray CRLF between messages
                del self.buf[:2]
            i = self.buf.find(b"\r\n\r\n", max(0, start - 3))
            if i >= 0:
                out = bytes(self.buf[:i + 4])
                del self.buf[:i + 4]
                return out
            if len(self.buf) > HEAD_MAX:
                raise ProtocolError("head too long")
            start = len(self.buf)
            if not self._fill():
                if not self.buf:
                    return None
                raise ProtocolError("EOF inside a head")

    def line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self.buf[:i + 2])
                del self.buf[:i + 2]
                return out
            if len(self.buf) > LINE_MAX:
                raise ProtocolError("line too long")
            if not self._fill():
                raise EOFError("EOF inside a chunked body")

    def some(self, n: int) -> bytes:
        if not self.buf and not self._fill():
            raise EOFError("EOF inside a body")
        k = min(n, len(self.buf))
        out = bytes(self.buf[:k])
        del self.buf[:k]
        return out


class Message:
    def __init__(self, head: bytes):
        self.head = head
        lines = head[:-4].decode("latin-1").split("\r\n")
        self.first = lines[0]
        self.headers: list[tuple[str, str]] = []
        for ln in lines[1:]:
            name, sep, value = ln.partition(":")
            if not sep:
                raise ProtocolError(f"bad header line {ln[:80]!r}")
            self.headers.append((name.strip().lower(), value.strip()))

    def get(self, name: str) -> str | None:
        vals = [v for k, v in self.headers if k == name]
        return ",".join(vals) if vals else None

    def tokens(self, name: str) -> list[str]:
        v = self.get(name)
        return [t.strip().lower() for t in v.split(",")] if v else []

    def framing(self, no_body: bool, default_eof: bool) -> tuple[str, int]:
        if no_body:
            return ("none", 0)
        te = self.tokens("transfer-encoding")
        if te:
            return ("chunked", 0) if te[-1] == "chunked" else ("eof", 0)
        cl = self.get("content-length")
        if cl is not None:
            try:
                n = int(cl.split(",")[0])
            except ValueError:
                raise ProtocolError(f"bad content-length {cl!r}") from None
            return ("length", n)
        return ("eof", 0) if default_eof else ("none", 0)

    def keep_alive(self, version: str) -> bool:
        conn = self.tokens("connection")
        if "close" in conn:
            return False
        return version == "HTTP/1.1" or "keep-alive" in conn


class Request(Message):
    def __init__(self, head: bytes):
        super().__init__(head)
        parts = self.first.split(" ")
        if len(parts) != 3:
            raise ProtocolError(f"bad request line {self.first[:120]!r}")
        self.method, self.target, self.version = parts
        self.body = self.framing(no_body=False, default_eof=False)
        self.expect_continue = "100-continue" in self.tokens("expect")

    def without_expect(self) -> bytes:
        lines = self.head[:-4].decode("latin-1").split("\r\n")
        keep = [lines[0]] + [ln for ln in lines[1:]
                             if ln.partition(":")[0].strip().lower() != "expect"]
        return ("\r\n".join(keep) + "\r\n\r\n").encode("latin-1")

    @property
    def is_write(self) -> bool:
        """PUT (object, upload part, copy) or CompleteMultipartUpload."""
        return self.method == "PUT" or (self.method == "POST" and "uploadId=" in self.target)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


class Response(Message):
    def __init__(self, head: bytes, request: Request):
        super().__init__(head)
        parts = self.first.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {self.first[:120]!r}")
        self.version, self.status = parts[0], int(parts[1])
        no_body = (request.method == "HEAD" or 100 <= self.status < 200
                   or self.status in (204, 304))
        self.body = self.framing(no_body=no_body, default_eof=True)


def copy_body(r: Reader, framing: tuple[str, int], out) -> None:
    """Copy one body from ``r`` to ``out(bytes)`` (``out`` None: discard)."""
    kind, n = framing
    send = out or (lambda _d: None)
    if kind == "length":
        left = n
        while left > 0:
            d = r.some(min(left, CHUNK))
            left -= len(d)
            send(d)
    elif kind == "chunked":
        while True:
            line = r.line()
            send(line)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                while True:  # trailers, then the blank line
                    t = r.line()
                    send(t)
                    if t == b"\r\n":
                        return
            left = size + 2  # the data and its CRLF
            while left > 0:
                d = r.some(min(left, CHUNK))
                left -= len(d)
                send(d)
    elif kind == "eof":
        while True:
            try:
                d = r.some(CHUNK)
            except EOFError:
                return
            send(d)


ERRORS = [(503, "Slow Down", "SlowDown", "Please reduce your request rate."),
          (500, "Internal Server Error", "InternalError",
           "We encountered an internal error. Please try again.")]


def error_response(req: Request, status: int, reason: str, code: str, message: str,
                   request_id: str, close: bool) -> bytes:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><Resource>{req.path}</Resource>"
            f"<RequestId>{request_id}</RequestId></Error>").encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nx-amz-request-id: {request_id}\r\n"
            f"Server: sluice-chaos-s3proxy\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n").encode()
    return head if req.method == "HEAD" else head + body


class _Conn:
    __slots__ = ("client", "upstream", "held")

    def __init__(self, client: socket.socket):
        self.client, self.upstream, self.held = client, None, False


class S3Proxy(ProxyBase):
    """``http://127.0.0.1:<port>`` -> the S3 server at ``upstream``."""

    thread_prefix = "s3proxy"

    def __init__(self, upstream: tuple[str, int], port: int, name: str,
                 log: logging.Logger, max_conns: int = 256):
        super().__init__(upstream, port, name, log, max_conns)
        self._fraction = 1.0
        self._delay = (0.2, 2.0)
        self._rng = random.Random(0)
        self._conns: set[_Conn] = set()
        self._held_new: list[socket.socket] = []
        self._ids = itertools.count(1)
        self.totals = {"connections": 0, "requests": 0, "refused": 0}

    def set_mode(self, mode: str, seed: int = 0, fraction: float = 1.0,
                 delay: tuple[float, float] = (0.2, 2.0)) -> dict:
        """Switch modes; returns the counters of the mode that ends."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        to_close: list[socket.socket] = []
        with self._cond:
            old, stats = self._mode, self.stats
            self.stats = {}
            self._mode, self._fraction, self._delay = mode, fraction, delay
            self._rng = random.Random(f"{seed}/{self.name}/{mode}")
            if mode == "reset" or old == "blackhole":
                # reset: every connection now; blackhole healed: every
                # connection that lived through it
                for c in self._conns:
                    to_close += [s for s in (c.client, c.upstream) if s is not None]
                to_close += self._held_new
                n = len(self._conns) + len(self._held_new)
                self._held_new = []
                if mode == "reset":
                    self._bump("reset_connections", n)
                else:
                    stats["closed_on_heal"] = n
            self._cond.notify_all()
        for s in to_close:
            hard_close(s)
        self.log.info("%s: %s -> %s (fraction %.2f) %s", self.name, old, mode, fraction, stats)
        return stats

    def close(self) -> None:
        with self._cond:
            self._closed = True
            socks = [s for c in self._conns for s in (c.client, c.upstream) if s is not None]
            socks += self._held_new
            self._held_new = []
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        for s in socks:
            hard_close(s)

    # -- internals -----------------------------------------------------------
    def _bump(self, key: str, n: int = 1) -> None:  # under self._cond
        self.stats[key] = self.stats.get(key, 0) + n

    def _active(self) -> int:
        return len(self._conns) + len(self._held_new)

    def _admit(self, client: socket.socket) -> None:
        with self._cond:
            if self._closed:
                action = "rst"
            elif self._active() >= self.max_conns:
                action = "full"
                self.totals["refused"] += 1
            elif self._mode == "reset":
                action = "rst"
                self._bump("refused_connections")
            elif self._mode == "blackhole":
                action = "hold"
                self._held_new.append(client)
                self._bump("held_new_connections")
            else:
                action = "serve"
                conn = _Conn(client)
                self._conns.add(conn)
                self.totals["connections"] += 1
        if action == "full":
            self.log.warning("%s: %d connections, refusing one", self.name, self.max_conns)
        if action in ("rst", "full"):
            hard_close(client)
        elif action == "serve":
            threading.Thread(target=self._serve, args=(conn,),
                             name=f"s3proxy-{self.name}-conn", daemon=True).start()

    def _gate(self, conn: _Conn) -> None:
        """Before forwarding anything: hold while stalled or cut off, then
        raise Hold (the heal closes the connection); raise Hold on reset."""
        with self._cond:
            if self._mode == "reset" or self._closed:
                raise Hold()
            if self._mode in HOLDING:
                if not conn.held:
                    conn.held = True
                    self._bump("held_connections")
                while self._mode in HOLDING and not self._closed:
                    self._cond.wait(1.0)
                raise Hold()

    def _send(self, conn: _Conn, sock: socket.socket, data: bytes) -> None:
        self._gate(conn)
        sock.sendall(data)

    def _draw(self) -> float:
        with self._cond:
            return self._rng.random()

    def _serve(self, conn: _Conn) -> None:
        client = conn.client
        hard = False
        try:
            client.settimeout(600)
            cin = Reader(client)
            uin: Reader | None = None
            while True:
                head = cin.head()
                if head is None:
                    return
                req = Request(head)
                with self._cond:
                    mode, fraction = self._mode, self._fraction
                    self.totals["requests"] += 1
                    self._bump("requests")
                if mode in HOLDING or mode == "reset":
                    self._gate(conn)  # raises Hold
                if req.expect_continue:
                    self._send(conn, client, b"HTTP/1.1 100 Continue\r\n\r\n")
                    head = req.without_expect()
                if mode == "error" and self._draw() < fraction:
                    with self._cond:
                        status, reason, code, message = self._rng.choice(ERRORS)
                        self._bump(f"error_{status}")
                    copy_body(cin, req.body, None)
                    close = not req.keep_alive(req.version)
                    self._send(conn, client, error_response(
                        req, status, reason, code, message,
                        f"chaos-{self.name}-{next(self._ids)}", close))
                    if close:
                        return
                    continue
                lose = mode == "lost_put" and req.is_write and self._draw() < fraction
                if conn.upstream is None:
                    conn.upstream = socket.create_connection(self.upstream, timeout=5)
                    conn.upstream.settimeout(120)
                    uin = Reader(conn.upstream)
                up = conn.upstream
                self._send(conn, up, head)
                copy_body(cin, req.body, lambda d: self._send(conn, up, d))
                while True:
                    rhead = uin.head()
                    if rhead is None:
                        raise EOFError("the S3 server closed the connection before answering")
                    resp = Response(rhead, req)
                    if 100 <= resp.status < 200:
                        self._send(conn, client, rhead)  # interim (100 Continue)
                        continue
                    break
                if lose:
                    copy_body(uin, resp.body, None)
                    with self._cond:
                        self._bump("lost_writes")
                        lost = self.stats.setdefault("lost", [])
                        if len(lost) < 20:
                            lost.append(f"{req.method} {req.target[:200]} -> {resp.status}")
                    self.log.info("%s: lost the answer %d to %s %s", self.name, resp.status,
                                  req.method, req.target[:300])
                    raise Hold()
                with self._cond:
                    delay = self._rng.uniform(*self._delay) if self._mode == "slow" else 0.0
                    if delay:
                        self._bump("delayed")
                        self.stats["delay_s"] = round(self.stats.get("delay_s", 0.0) + delay, 2)
                if delay:
                    time.sleep(delay)
                self._send(conn, client, rhead)
                copy_body(uin, resp.body, lambda d: self._send(conn, client, d))
                if (resp.body[0] == "eof" or not req.keep_alive(req.version)
                        or not resp.keep_alive(resp.version)):
                    return
        except Hold:
            hard = True
        except (OSError, EOFError, ProtocolError) as e:
            hard = True
            self.log.debug("%s: connection ends: %r", self.name, e)
        except Exception:  # noqa: BLE001 - never let a proxy thread die loudly
            hard = True
            self.log.exception("%s: proxy connection failed", self.name)
        finally:
            with self._cond:
                self._conns.discard(conn)
            for s in (client, conn.upstream):
                if s is not None:
                    (hard_close if hard else close_quietly)(s)
