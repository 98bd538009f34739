"""HTTP bodies and reads take their bytes from the node's memory budget.

A node's HTTP request bodies take from the same budget as its Kafka request
frames (`kafka.in_flight_bytes_max`, the `requests` share of
`--memory-max`), and its NDJSON reads from the same budget as Kafka Fetch
responses (`kafka.fetch_bytes_max`). Shown on a node with a 1 MiB budget of
each:

- a body larger than the budget is a 413 with a JSON reason, and the node
  keeps serving;
- a body being uploaded holds its bytes of the budget (reported as
  `sluice_memory_used_bytes{share="requests"}`), a second body waits until
  the first is answered (back-pressure, not growth), and both are
  acknowledged and read back;
- a read returns at most `max_bytes` of NDJSON (always one record, never
  more than half the node's budget, as a Kafka Fetch) and its next offset
  leads on to every record once.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import requests

from harness import wait_until
from http_api import assert_error, b64, unb64

BUDGET = 1 << 20


def used(url: str, share: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    m = re.search(rf'^sluice_memory_used_bytes{{share="{share}"}} (\S+)$', text, re.M)
    assert m, f"no sluice_memory_used_bytes for share {share}"
    return float(m.group(1))


def budgeted_node(sluice):
    return sluice.distributed(extra_args=["--kafka-in-flight-bytes-max", "1MiB",
                                          "--kafka-fetch-bytes-max", "1MiB"])


def record_body(value: bytes) -> bytes:
    return json.dumps({"value": {"type": "BINARY", "data": b64(value)}}).encode()


def test_http_bodies_take_from_the_request_budget(sluice):
    node = budgeted_node(sluice)
    api = node.api
    topic = "http-budget"
    api.create_topic(topic, 1)

    path = f"/v3/clusters/{api.cluster_id}/topics/{topic}/records"

    def post_head(length: int) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", node.port), timeout=30)
        conn.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
                      "Connection: close\r\n\r\n").encode())
        return conn

    def answer(conn: socket.socket) -> tuple[int, bytes]:
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        conn.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    # larger than the whole budget: refused on its declared length, unread
    status, body = answer(post_head(BUDGET + 1))
    assert status == 413, (status, body[:300])
    reason = json.loads(body)
    assert reason["error_code"] == 413 and "in_flight_bytes_max" in reason["message"], reason
    small = api.produce_one(topic, {"value": {"type": "STRING", "data": "still serving"}})
    assert small.status_code == 200, small.text

    # a body mid-upload holds its declared bytes of the budget
    first_value = bytes(range(256)) * 2800  # 700 KiB
    first = record_body(first_value)
    upload = post_head(len(first))
    upload.sendall(first[:4096])
    wait_until(lambda: used(node.url, "requests") >= len(first), timeout=10,
               what="the upload's bytes reported in the requests share")

    # a second body does not fit beside it: it waits, unanswered
    second_value = b"\x07" * (400 << 10)
    second: dict = {}

    def post_second() -> None:
        second["response"] = api.with_new_session().produce_raw(topic, record_body(second_value))

    waiter = threading.Thread(target=post_second)
    waiter.start()
    time.sleep(1.5)
    assert "response" not in second, \
        f"a body was taken past the budget: {second['response'].status_code}"

    # the first body completes and is answered; then the second goes through
    upload.sendall(first[4096:])
    status, body = answer(upload)
    assert status == 200, (status, body[:300])
    waiter.join(timeout=30)
    assert second["response"].status_code == 200, second["response"].text[:300]
    wait_until(lambda: used(node.url, "requests") == 0, timeout=10,
               what="the request budget given back")

    # (the two large ones do not fit one 1 MiB response: read_range goes on)
    values = [unb64(line["value"]) for line in api.read_range(topic, 0, 0, 3)]
    assert values == [b"still serving", first_value, second_value]


def test_http_reads_are_bounded_by_max_bytes_and_the_budget(sluice):
    node = budgeted_node(sluice)
    api = node.api
    topic = "http-read-budget"
    api.create_topic(topic, 1)
    values = [bytes([i]) * 10_000 for i in range(150)]  # about 2 MB of NDJSON
    for at in range(0, len(values), 50):
        r = api.produce_stream(topic, [{"value": {"type": "BINARY", "data": b64(v)}}
                                       for v in values[at:at + 50]])
        assert r.status_code == 200, r.text[:300]
    api.wait_high_watermark(topic, 0, len(values))

    r = api.read(topic, 0, offset=0, max_bytes=0)
    assert_error(r, 400, "max_bytes=0")

    # one record even when it is larger than max_bytes
    r = api.read(topic, 0, offset=3, max_bytes=1, format="binary")
    assert r.status_code == 200, r.text[:300]
    assert [line["offset"] for line in map(json.loads, r.text.splitlines())] == [3]
    assert r.headers["x-sluice-next-offset"] == "4"

    # never more than max_bytes, and the next offset leads on to every record
    read: list[bytes] = []
    while len(read) < len(values):
        r = api.read(topic, 0, offset=len(read), max_bytes=40_000, max_records=10_000,
                     format="binary")
        assert r.status_code == 200, r.text[:300]
        assert len(r.content) <= 40_000, len(r.content)
        # said, not guessed: without a charset requests once read a body as UTF-16
        assert r.headers["content-type"] == "application/x-ndjson; charset=utf-8"
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert lines and [line["offset"] for line in lines] == \
            list(range(len(read), len(read) + len(lines)))
        read.extend(unb64(line["value"]) for line in lines)
        assert r.headers["x-sluice-next-offset"] == str(len(read))
    assert read == values

    # a read asking for more than the node's response budget gets at most half
    # of it, as a Kafka Fetch does, so two readers can always run
    r = api.read(topic, 0, offset=0, max_bytes=64 << 20, max_records=10_000, format="binary")
    assert r.status_code == 200, r.text[:300]
    assert BUDGET // 4 < len(r.content) <= BUDGET // 2, len(r.content)
    assert len(r.text.splitlines()) < len(values)
