"""A plain threaded TCP proxy whose link can be cut: modes ``pass`` and
``blackhole``. Every sluice node reaches each etcd member through its own
proxy, so that the nemesis can cut one node off from etcd (``cut_etcd``)
without root: see README.md, "Why proxies, not network namespaces".

``blackhole`` is packets being dropped, seen from the ends: connections
stay open but nothing is forwarded in either direction, and new
connections are accepted (the SYN got an answer) but never reach the
upstream. Healing closes every connection that lived through the
blackhole (RST) and goes back to ``pass``; the clients reconnect.

Bounded: at most ``max_conns`` connections (two pump threads each, 64 KiB
read buffer per pump); more are refused with a RST.
"""

from __future__ import annotations

import logging
import socket
import threading

from processes import HOST, close_quietly, hard_close, listen

MODES = ("pass", "blackhole")


class _Pair:
    __slots__ = ("client", "upstream", "closed")

    def __init__(self, client: socket.socket, upstream: socket.socket | None):
        self.client, self.upstream, self.closed = client, upstream, False

    def socks(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]


class ProxyBase:
    """What the proxies share: ``127.0.0.1:<port>`` in front of
    ``upstream``, one accept thread, a mode switched at runtime, at most
    ``max_conns`` connections."""

    thread_prefix = "proxy"

    def __init__(self, upstream: tuple[str, int], port: int, name: str,
                 log: logging.Logger, max_conns: int):
        self.upstream, self.port, self.name, self.log = upstream, port, name, log
        self.endpoint = f"http://{HOST}:{port}"
        self.max_conns = max_conns
        self._cond = threading.Condition()
        self._mode = "pass"
        self._closed = False
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.stats: dict = {}

    @property
    def mode(self) -> str:
        return self._mode

    def start(self):
        self._listener = listen(self.port)
        self._thread = threading.Thread(target=self._accept_loop,
                                        name=f"{self.thread_prefix}-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        ls = self._listener
        while not self._closed:
            try:
                client, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._admit(client)

    def _admit(self, client: socket.socket) -> None:
        """Take one accepted connection (serve, hold or refuse it)."""
        raise NotImplementedError


class TcpProxy(ProxyBase):
    """``127.0.0.1:<port>`` -> ``upstream``; ``set_mode`` switches at runtime."""

    def __init__(self, upstream: tuple[str, int], port: int, name: str,
                 log: logging.Logger, max_conns: int = 128, connect_timeout: float = 2.0):
        super().__init__(upstream, port, name, log, max_conns)
        self.connect_timeout = connect_timeout
        self._pairs: set[_Pair] = set()
        self.totals = {"connections": 0, "refused": 0, "upstream_down": 0}

    def set_mode(self, mode: str) -> dict:
        """Switch modes; returns what happened during the mode that ends."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        with self._cond:
            old, stats = self._mode, self.stats
            self.stats = {}
            to_close: list[_Pair] = []
            if old == "blackhole" and mode != "blackhole":
                to_close = list(self._pairs)
                for p in to_close:
                    p.closed = True
                self._pairs.clear()
            self._mode = mode
            self._cond.notify_all()
        for p in to_close:
            for s in p.socks():
                hard_close(s)
        if to_close:
            stats["closed_on_heal"] = len(to_close)
        self.log.info("%s: %s -> %s %s", self.name, old, mode, stats)
        return stats

    def close(self) -> None:
        with self._cond:
            self._closed = True
            pairs = list(self._pairs)
            self._pairs.clear()
            for p in pairs:
                p.closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        for p in pairs:
            for s in p.socks():
                hard_close(s)

    def _bump(self, key: str) -> None:  # under self._cond
        self.stats[key] = self.stats.get(key, 0) + 1

    def _admit(self, client: socket.socket) -> None:
        with self._cond:
            full = len(self._pairs) >= self.max_conns
            hole = self._mode == "blackhole"
            if full:
                self.totals["refused"] += 1
            elif hole:
                # accepted, never forwarded: held until the heal closes it
                self._pairs.add(_Pair(client, None))
                self._bump("held_new")
        if full:
            self.log.warning("%s: %d connections, refusing one", self.name, self.max_conns)
            hard_close(client)
            return
        if hole:
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=self.connect_timeout)
        except OSError:
            with self._cond:
                self.totals["upstream_down"] += 1
            hard_close(client)
            return
        client.settimeout(None)
        upstream.settimeout(None)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = _Pair(client, upstream)
        with self._cond:
            if self._closed:
                pair.closed = True
            else:
                self._pairs.add(pair)
                self.totals["connections"] += 1
        if pair.closed:
            for s in pair.socks():
                hard_close(s)
            return
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(pair, src, dst),
                             name=f"proxy-{self.name}-pump", daemon=True).start()

    def _gate(self, pair: _Pair) -> bool:
        """Wait while the link is a blackhole; False once the pair is closed."""
        with self._cond:
            if self._mode == "blackhole" and not pair.closed:
                self._bump("held_pumps")
            while self._mode == "blackhole" and not pair.closed and not self._closed:
                self._cond.wait(1.0)
            return not pair.closed and not self._closed

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not self._gate(pair):
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # gRPC (HTTP/2) and HTTP need no half-close: when one side is done
            # the pair is.
            with self._cond:
                self._pairs.discard(pair)
                already = pair.closed
                pair.closed = True
            if not already:
                for s in pair.socks():
                    close_quietly(s)
