"""kafkajs (Node.js Kafka client) against sluice's Kafka listener.

kafkajs runs in node through tests/e2e/js/client.js (one command in as JSON on
stdin, one JSON result out; binary data as base64), with its dependencies
pinned in tests/e2e/js/package-lock.json and installed by tests/run.sh
(`npm ci --prefix tests/e2e/js`). Covered: produce keyed records with headers
under none/gzip/snappy/lz4/zstd (kafkajs-snappy, kafkajs-lz4, and a zstd
codec over @mongodb-js/zstd because @kafkajs/zstd does not build on Node 20),
consume from the earliest offset with a consumer group (`fromBeginning`),
the group's committed offsets (OffsetFetch through the admin client) and a
second member resuming there, offsets by timestamp
(admin.fetchTopicOffsetsByTimestamp) and consuming from that offset.
Missing node or node_modules fail the tests; they never skip.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from harness import kafka_partition

JS_DIR = Path(__file__).resolve().parent / "js"
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def topic_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def node_bin() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH (tests/run.sh expects Node.js >= 18)", pytrace=False)
    lock = JS_DIR / "package-lock.json"
    installed = JS_DIR / "node_modules" / ".package-lock.json"
    if not installed.is_file() or installed.stat().st_mtime < lock.stat().st_mtime:
        pytest.fail(f"{JS_DIR}/node_modules is missing or older than package-lock.json: "
                    f"run `npm ci --prefix tests/e2e/js` (tests/run.sh does)", pytrace=False)
    return node


def js(node_bin: str, node, command: str, timeout: float = 60, **args) -> dict:
    """Run one client.js command against `node`; return its JSON result."""
    cmd = {"command": command, "brokers": [node.bootstrap], **args}
    done = subprocess.run([node_bin, str(JS_DIR / "client.js")], input=json.dumps(cmd).encode(),
                          capture_output=True, timeout=timeout, cwd=JS_DIR)
    out = done.stdout.decode().strip().splitlines()
    assert out, f"client.js {command}: no output (exit {done.returncode}): " \
                f"{done.stderr.decode()[-3000:]}"
    result = json.loads(out[-1])
    assert done.returncode == 0 and "error" not in result, \
        f"client.js {command} failed: {result.get('error', result)}\n{done.stderr.decode()[-3000:]}"
    return result


def records(n: int, seed: int) -> list[tuple]:
    """(key, value, headers); kafkajs headers are an object: names are unique."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = None if i % 7 == 3 else rng.randbytes(rng.randrange(1, 40))
        value = None if i % 11 == 5 and key is not None else rng.randbytes(rng.randrange(0, 2000))
        headers = [(f"h{j}", rng.randbytes(rng.randrange(0, 20))) for j in range(i % 3)]
        out.append((key, value, headers))
    return out


def wire(recs: list[tuple], timestamps: list[int] | None = None) -> list[dict]:
    out = []
    for i, (key, value, headers) in enumerate(recs):
        r = {"key": b64(key), "value": b64(value), "headers": [[n, b64(v)] for n, v in headers]}
        if timestamps is not None:
            r["timestamp"] = timestamps[i]
        out.append(r)
    return out


def decoded(rec: dict) -> tuple:
    return (unb64(rec["key"]), unb64(rec["value"]), [(n, unb64(v)) for n, v in rec["headers"]])


def produce(node_bin, node, topic, recs, codec, partition=None, timestamps=None) -> list[dict]:
    res = js(node_bin, node, "produce", topic=topic, codec=codec, acks=-1,
             partition=partition, records=wire(recs, timestamps))
    assert res["codec"] == codec
    for r in res["results"]:
        assert r["topicName"] == topic and r["errorCode"] == 0, r
    return res["results"]


# ---------------------------------------------------------------------------

@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_under_every_codec_with_a_group(module_node, node_bin, codec):
    node = module_node
    topic = topic_name(f"kjs-{codec}")
    group = topic_name(f"kjs-g-{codec}")
    node.api.create_topic(topic, 2)
    recs = records(150, seed=hash(codec) & 0xffff)
    results = produce(node_bin, node, topic, recs, codec, partition=1)
    assert [(r["partition"], r["baseOffset"]) for r in results] == [(1, "0")]
    got = js(node_bin, node, "consume", topic=topic, groupId=group, count=150,
             fromBeginning=True)
    assert [(r["partition"], r["offset"]) for r in got["records"]] == \
        [(1, i) for i in range(150)]
    assert [decoded(r) for r in got["records"]] == recs
    assert all(r["timestamp"] > 0 for r in got["records"])
    committed = {c["partition"]: c["offset"] for c in got["committed"]}
    assert committed[1] == 150
    assert committed.get(0, -1) == -1  # nothing consumed there: no committed offset
    # HTTP sees the same bytes (kafkajs -> sluice store -> HTTP)
    lines = node.api.read_lines(topic, 1, offset=0, max_records=200, format="binary")
    assert [line["offset"] for line in lines] == list(range(150))
    assert [(unb64(line["key"]), unb64(line["value"])) for line in lines] == \
        [(k, v) for k, v, _ in recs]


def test_keyed_records_use_the_java_compatible_partitioner(module_node, node_bin):
    node = module_node
    topic = topic_name("kjs-keyed")
    partitions = 4
    node.api.create_topic(topic, partitions)
    rng = random.Random(9)
    recs = [(f"user-{rng.randrange(30)}".encode(), rng.randbytes(rng.randrange(1, 300)),
             [("seq", str(i).encode())]) for i in range(120)]
    results = produce(node_bin, node, topic, recs, "snappy")
    expected: dict[int, list] = {}
    for rec in recs:
        expected.setdefault(kafka_partition(rec[0], partitions), []).append(rec)
    assert sorted(r["partition"] for r in results) == sorted(expected)
    assert all(r["baseOffset"] == "0" for r in results)
    got = js(node_bin, node, "consume", topic=topic, groupId=topic_name("kjs-gk"),
             count=len(recs), fromBeginning=True)
    by_partition: dict[int, list] = {}
    for r in got["records"]:
        by_partition.setdefault(r["partition"], []).append(r)
    assert sorted(by_partition) == sorted(expected)
    for p, want in expected.items():
        assert [r["offset"] for r in by_partition[p]] == list(range(len(want)))
        assert [decoded(r) for r in by_partition[p]] == want, f"partition {p}"
    assert {c["partition"]: c["offset"] for c in got["committed"]} == \
        {p: len(want) for p, want in expected.items()}


def test_offsets_by_timestamp_then_consume_from_there(module_node, node_bin):
    node = module_node
    topic = topic_name("kjs-ts")
    node.api.create_topic(topic, 1)
    base = int(time.time() * 1000) - 60_000
    recs = [(b"k", f"t{i}".encode(), [("i", str(i).encode())]) for i in range(10)]
    stamps = [base + i * 1000 for i in range(10)]
    produce(node_bin, node, topic, recs, "zstd", partition=0, timestamps=stamps)
    off = js(node_bin, node, "topicOffsets", topic=topic)["offsets"]
    assert off == [{"partition": 0, "offset": 10, "low": 0, "high": 10}]
    found = js(node_bin, node, "offsetsByTimestamp", topic=topic, timestamp=base + 4500)
    assert found["offsets"] == [{"partition": 0, "offset": 5}]
    exact = js(node_bin, node, "offsetsByTimestamp", topic=topic, timestamp=base + 3000)
    assert exact["offsets"] == [{"partition": 0, "offset": 3}]
    # past the last timestamp ListOffsets answers -1; kafkajs maps that to the high watermark
    past = js(node_bin, node, "offsetsByTimestamp", topic=topic, timestamp=base + 100_000)
    assert past["offsets"] == [{"partition": 0, "offset": 10}]
    got = js(node_bin, node, "consume", topic=topic, groupId=topic_name("kjs-gts"), count=5,
             fromBeginning=True, seek={"partition": 0, "offset": 5})
    assert [(r["offset"], r["timestamp"]) for r in got["records"]] == \
        [(i, stamps[i]) for i in range(5, 10)]
    assert [decoded(r) for r in got["records"]] == recs[5:]


def test_second_group_member_resumes_at_the_committed_offset(module_node, node_bin):
    node = module_node
    topic = topic_name("kjs-resume")
    group = topic_name("kjs-gr")
    node.api.create_topic(topic, 1)
    recs = records(60, seed=17)
    produce(node_bin, node, topic, recs[:40], "gzip", partition=0)
    first = js(node_bin, node, "consume", topic=topic, groupId=group, count=25,
               fromBeginning=True)
    assert [r["offset"] for r in first["records"]] == list(range(25))
    assert [decoded(r) for r in first["records"]] == recs[:25]
    assert first["committed"] == [{"partition": 0, "offset": 25}]
    produce(node_bin, node, topic, recs[40:], "lz4", partition=0)
    second = js(node_bin, node, "consume", topic=topic, groupId=group, count=35,
                fromBeginning=True)
    assert [r["offset"] for r in second["records"]] == list(range(25, 60))
    assert [decoded(r) for r in second["records"]] == recs[25:]
    assert second["committed"] == [{"partition": 0, "offset": 60}]
