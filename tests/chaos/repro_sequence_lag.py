#!/usr/bin/env python3
"""Reproduction of a chaos finding: a node whose metadata view has not yet
applied another node's commit refuses the next, gap-free batch of an
idempotent producer with OUT_OF_ORDER_SEQUENCE_NUMBER (45) -- an error
that librdkafka treats as fatal -- instead of a retriable one; the same
batch is accepted a moment later.

In the campaign (seed 11) this happened when a partition's leader moved:
batch seq N was acknowledged by one node, seq N+1 went to the new leader
within milliseconds and was refused; idem0 died with a fatal error. Here
the lag is made deterministic: node2 is SIGSTOPped while node1
acknowledges seq N, seq N+1 is sent to node2, node2 resumes after 0.2 s
(its socket and its etcd watch both have data; the produce is admitted
against the stale view).

    python3 tests/chaos/repro_sequence_lag.py [--binary PATH] [--rounds 20] [--out DIR]

Exit status 1 when a gap-free batch was refused.
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
from processes import HOST  # noqa: E402
from repro_common import nodes, parse_args, servers, topic_everywhere  # noqa: E402
from test_kafka_idempotent import init_producer_id, produce_request, record_batch  # noqa: E402

OUT_OF_ORDER_SEQUENCE_NUMBER = 45


class Conn:
    """One kept-open Kafka connection to a node."""

    def __init__(self, node):
        self.sock = socket.create_connection((HOST, node.kafka_port), timeout=30)

    def send(self, frame: bytes) -> None:
        self.sock.sendall(frame)

    def answer(self) -> tuple[int, int]:
        """(error code, base offset) of a one-partition ProduceResponse v3."""
        body = wire.recv_response(self.sock)[4:]
        at = 6 + struct.unpack(">h", body[4:6])[0]
        _partitions, _index, error, base_offset = struct.unpack(">iihq", body[at:at + 18])
        return error, base_offset


def main() -> int:
    a = parse_args(__doc__, "seqlag", rounds=(int, 20), stop_seconds=(float, 0.2))
    out = a.out
    refused = rounds = 0
    with servers(a, "seqlag") as (factory, _):
        one, two = nodes(factory, 2, "50ms")
        topic = "seqlag"
        topic_everywhere([one, two], topic)
        error, pid, epoch = init_producer_id(one)
        assert error == 0, f"InitProducerId: error {error}"
        c1, c2 = Conn(one), Conn(two)

        def batch(seq: int, correlation: int) -> bytes:
            return produce_request(correlation, topic, 0,
                                   record_batch([(b"k", b"v%d" % seq)], pid, epoch, seq))

        correlation = iter(range(1, 1 << 30))

        def retry(conn: Conn, name: str, seq: int) -> str:
            """After a refusal: the same batch again every 0.2 s (at most 5 s)."""
            nonlocal refused
            refused += 1
            deadline = time.monotonic() + 5
            while True:
                time.sleep(0.2)
                conn.send(batch(seq, next(correlation)))
                error, offset = conn.answer()
                if error != OUT_OF_ORDER_SEQUENCE_NUMBER or time.monotonic() > deadline:
                    if error != 0:
                        raise SystemExit(f"seq {seq} on {name}: error {error}; stopping")
                    return f"REFUSED with 45; the same batch again -> offset {offset}"

        seq = 0
        for r in range(a.rounds):
            rounds += 1
            os.kill(two.pid, signal.SIGSTOP)
            try:
                c1.send(batch(seq, next(correlation)))
                error, offset = c1.answer()
                first = f"offset {offset}" if error == 0 else None
                if error == OUT_OF_ORDER_SEQUENCE_NUMBER:
                    # node1 has not seen node2's last commit yet (no SIGSTOP needed)
                    first = retry(c1, "node1", seq)
                elif error != 0:
                    raise SystemExit(f"seq {seq} on node1: error {error}; stopping")
                c2.send(batch(seq + 1, next(correlation)))
                time.sleep(a.stop_seconds)
            finally:
                os.kill(two.pid, signal.SIGCONT)
            error, offset = c2.answer()
            second = f"offset {offset}" if error == 0 else None
            if error == OUT_OF_ORDER_SEQUENCE_NUMBER:
                second = retry(c2, "node2", seq + 1)
            elif error != 0:
                raise SystemExit(f"seq {seq + 1} on node2: error {error}; stopping")
            print(f"round {r}: seq {seq} -> node1: {first}; seq {seq + 1} -> node2 (stopped "
                  f"{a.stop_seconds}s while node1 answered): {second}", flush=True)
            seq += 2
        print(f"{refused} of {rounds} gap-free batches refused with OUT_OF_ORDER_SEQUENCE_NUMBER "
              f"(node logs in {out})")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
