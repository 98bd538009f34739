#!/usr/bin/env python3
"""Reproduction of a chaos finding: a node whose metadata view has not yet
applied another node's commit answered a fetch just past its view's high
watermark with OFFSET_OUT_OF_RANGE (1); librdkafka then resets the
consumer to `auto.offset.reset`, and the group read its partitions again
from offset 0.

In the campaign (seed 21) node1 had just been restarted after a kill -9:
28 ms after it started serving, it told two group members that offsets
7750, 7909 and 7912 were out of range. Here the lag is made
deterministic as in repro_sequence_lag.py: node2 is SIGSTOPped while
node1 acknowledges a record at offset N, a Fetch for offset N+1 (the new
end of the log) is sent to node2, and node2 resumes after 0.2 s with both
the fetch and the watch event waiting.

    python3 tests/chaos/repro_fetch_lag.py [--binary PATH] [--rounds 10] [--out DIR]

Exit status 1 when a fetch inside the log was answered out of range.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "e2e")]

import kafka_wire as wire  # noqa: E402
from http_api import parse_concatenated_json  # noqa: E402
from processes import HOST  # noqa: E402
from repro_common import nodes, parse_args, servers, topic_everywhere  # noqa: E402

OFFSET_OUT_OF_RANGE = 1


def fetch_request(correlation: int, topic: str, offset: int) -> bytes:
    """Fetch v4 of one partition, no wait."""
    body = struct.pack(">iiiib", -1, 0, 0, 1 << 20, 0)
    body += struct.pack(">i", 1) + wire.string(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", 0, offset, 1 << 20)
    return wire.request(1, 4, body, correlation_id=correlation)


def fetch_error(sock: socket.socket, topic: str) -> int:
    """The partition error code of a one-partition FetchResponse v4."""
    body = wire.recv_response(sock)[4:]
    at = 4 + 4  # throttle time, topics array
    name_len = struct.unpack(">h", body[at:at + 2])[0]
    at += 2 + name_len + 4  # name, partitions array
    _partition, error = struct.unpack(">ih", body[at:at + 6])
    return error


def main() -> int:
    a = parse_args(__doc__, "fetchlag", rounds=(int, 10), stop_seconds=(float, 0.2))
    out = a.out
    refused = rounds = 0
    with servers(a, "fetchlag") as (factory, _):
        one, two = nodes(factory, 2, "20ms")
        topic = "fetchlag"
        topic_everywhere([one, two], topic)
        sock = socket.create_connection((HOST, two.kafka_port), timeout=30)
        for r in range(a.rounds):
            rounds += 1
            os.kill(two.pid, signal.SIGSTOP)
            try:
                resp = one.api.produce_stream(
                    topic, [{"partition_id": 0, "value": {"type": "STRING", "data": f"r{r}"}}])
                reports = parse_concatenated_json(resp.text)
                if resp.status_code != 200 or reports[0].get("error_code") != 200:
                    raise SystemExit(f"produce to node1: HTTP {resp.status_code} {resp.text[:200]}")
                end = reports[0]["offset"] + 1
                sock.sendall(fetch_request(r + 1, topic, end))
                time.sleep(a.stop_seconds)
            finally:
                os.kill(two.pid, signal.SIGCONT)
            error = fetch_error(sock, topic)
            if error == OFFSET_OUT_OF_RANGE:
                refused += 1
            elif error != 0:
                raise SystemExit(f"fetch at {end} on node2: error {error}")
            print(f"round {r}: offset {end - 1} acknowledged by node1; fetch at the end ({end}) "
                  f"on node2 (stopped meanwhile): "
                  + ("OFFSET_OUT_OF_RANGE" if error else "ok"), flush=True)
        sock.close()
        print(f"{refused} of {rounds} fetches inside the log answered OFFSET_OUT_OF_RANGE "
              f"(node logs in {out})")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
