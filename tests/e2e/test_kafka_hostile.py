"""Requests crafted to exhaust memory: tiny frames that declare arrays of
2^31 elements. The Kafka codec sizes its vectors from such counts before
decoding anything; the node must answer with an error or close that
connection, never abort, and keep serving everyone else.
"""

from __future__ import annotations

import socket
import struct

import pytest
from confluent_kafka.admin import AdminClient

import kafka_wire as wire


def frame(api_key: int, version: int, body: bytes, client_id: bytes = b"hostile") -> bytes:
    return wire.request(api_key, version, body, correlation_id=7, client_id=client_id)


HUGE = struct.pack(">i", 0x7FFFFFFF)

CASES = {
    # Metadata v0: topics array
    "metadata-topics": frame(3, 0, HUGE),
    # Produce v3: transactional id (null), acks, timeout, then topic_data array
    "produce-topics": frame(0, 3, struct.pack(">hhi", -1, -1, 1000) + HUGE),
    # JoinGroup v1: group, session, rebalance, member, protocol type, protocols array
    "join-protocols": frame(11, 1, struct.pack(">h", 1) + b"g" + struct.pack(">ii", 6000, 6000)
                            + struct.pack(">h", 0) + struct.pack(">h", 8) + b"consumer" + HUGE),
    # OffsetCommit v2: group, generation, member, retention, topics array
    "offset-commit-topics": frame(8, 2, struct.pack(">h", 1) + b"g" + struct.pack(">i", -1)
                                  + struct.pack(">h", 0) + struct.pack(">q", -1) + HUGE),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_huge_array_counts_do_not_take_the_node_down(module_node, case):
    node = module_node
    host, port = node.bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(CASES[case])
        s.settimeout(10)
        try:
            answer = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            answer = b""
        # either an error response or a closed connection; both are fine
        assert answer == b"" or len(answer) >= 8
    assert node.running, f"the node died on {case}"
    metadata = AdminClient({"bootstrap.servers": node.bootstrap}).list_topics(timeout=10)
    assert node.node_id in metadata.brokers, "the node stopped serving Metadata"
