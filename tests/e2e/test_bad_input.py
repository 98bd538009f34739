"""Bad input gets the documented error, and the node keeps serving.

All tests share one distributed node (module scope).  After every bad request
``Canary.check()`` produces a good record and re-reads everything produced so
far, so "nothing earlier changed" is checked after each case.
"""

from __future__ import annotations

import os
import random

import pytest

from harness import (ProduceLog, assert_error, b64, line_matches, parse_concatenated_json,
                     random_record, send_batch, send_single, verify_log)


class Canary:
    def __init__(self, node, topic: str, partitions: int = 2):
        self.node, self.topic, self.partitions = node, topic, partitions
        self.log = ProduceLog("canary")
        self.rng = random.Random(1)
        node.api.create_topic(topic, partitions)

    def check(self) -> None:
        rec = random_record(self.log, self.rng, self.partitions)
        r = send_single(self.node.api, self.topic, self.log, rec)
        assert r is not None and r.status_code == 200, \
            f"good produce after bad input failed: {r.status_code if r is not None else None} " \
            f"{r.text[:300] if r is not None else ''}"
        verify_log(self.node.api, self.topic, self.partitions, self.log, exact=True)
        assert self.node.running, "node died"
        assert self.node.api.s.get(self.node.url + "/health/ready", timeout=5).status_code == 200


@pytest.fixture(scope="module")
def canary(module_node):
    c = Canary(module_node, "canary")
    c.check()
    return c


@pytest.fixture(scope="module")
def topic(module_node):
    module_node.api.create_topic("bad-input", 3)
    return "bad-input"


GOOD = {"value": {"type": "STRING", "data": "hello"}}


def test_malformed_json(module_node, canary, topic):
    api = module_node.api
    for body in ['{"value": {"type": "STRING", "data": "x"}',  # truncated
                 'not json at all',
                 '[{"value": {"type": "STRING", "data": "x"}}]',  # an array is not a record
                 '']:
        assert_error(api.produce_raw(topic, body), 400, f"records body {body!r}")
        canary.check()
    # A stream whose tail is garbage: the good record before it is answered
    # (and kept), the garbage gets its own 400 report, in order.
    before = [api.offsets(topic, p)["high_watermark"] for p in range(3)]
    r = api.produce_raw(topic, '{"partition_id": 0, "value": {"type": "STRING", "data": "x"}} }')
    assert r.status_code == 200, r.text[:300]
    reports = parse_concatenated_json(r.text)
    assert [rep.get("error_code") for rep in reports] == [200, 400], reports
    assert reports[0]["partition_id"] == 0 and reports[0]["offset"] == before[0], reports
    lines = api.read_lines(topic, 0, offset=before[0], format="string")
    assert [ln["value"] for ln in lines] == ["x"], lines
    canary.check()
    for body in ['{"entries": [', '[1,2', '{"entries": 5}']:
        assert_error(api.produce_batch_raw(topic, body), 400, f"records-batch body {body!r}")
        canary.check()
    assert_error(api.create_topic_raw('{"topic_name": '), 400, "create topic malformed")
    canary.check()


@pytest.mark.parametrize("record", [
    {"value": {"type": "BINARY", "data": "!!! not base64 !!!"}},
    {"value": {"type": "BINARY", "data": 12345}},
    {"partition_id": "1", "value": {"type": "STRING", "data": "x"}},
    {"partition_id": 1.5, "value": {"type": "STRING", "data": "x"}},
    {"value": {"type": "NO_SUCH_TYPE", "data": "x"}},
    {"value": "bare string instead of an object"},
    {"key": {"type": "BINARY", "data": "%%%"}, "value": {"type": "STRING", "data": "x"}},
    {"headers": [{"name": "h", "value": "not base64 !"}], "value": {"type": "STRING", "data": "x"}},
    {"timestamp": "yesterday-ish", "value": {"type": "STRING", "data": "x"}},
], ids=["binary-not-base64", "binary-number", "partition-string", "partition-float",
        "unknown-type", "value-not-object", "key-not-base64", "header-not-base64",
        "bad-timestamp"])
def test_wrong_types(module_node, canary, topic, record):
    api = module_node.api
    before = [api.offsets(topic, p)["high_watermark"] for p in range(3)]
    assert_error(api.produce_one(topic, record), 400, f"record {record!r}")
    assert [api.offsets(topic, p)["high_watermark"] for p in range(3)] == before, \
        "a rejected record moved a high watermark"
    canary.check()


def test_partition_out_of_range(module_node, canary, topic):
    api = module_node.api
    for pid in (3, 99, -1):
        assert_error(api.produce_one(topic, {"partition_id": pid, **GOOD}), (400, 404),
                     f"partition_id {pid}")
    canary.check()


def test_oversize_record(module_node, canary):
    api = module_node.api
    api.create_topic("small-msgs", 1, {"max.message.bytes": 1024})
    big = os.urandom(4096)
    r = api.produce_one("small-msgs", {"value": {"type": "BINARY", "data": b64(big)}})
    assert_error(r, 413, "record over max.message.bytes")
    canary.check()

    # A record well under the limit is fine; in a batch only the big one fails.
    log = ProduceLog("small")
    ok = log.new(os.urandom(200))
    r = send_single(api, "small-msgs", log, ok)
    assert r.status_code == 200, r.text
    small, large = log.new(os.urandom(100)), log.new(os.urandom(5000))
    r = send_batch(api, "small-msgs", log, [small, large])
    assert r.status_code == 207, f"{r.status_code} {r.text[:300]}"
    assert small.rid in log.acked and log.failed.get(large.rid, (None,))[0] == 413, r.text[:500]
    # Oversize inside a multi-record stream: its own report says 413.
    too_big, fine = log.new(os.urandom(5000)), log.new(os.urandom(10))
    r = api.produce_stream("small-msgs", [too_big.to_json(), fine.to_json()])
    assert r.status_code == 200, r.text[:300]
    reports = parse_concatenated_json(r.text)
    assert [rep.get("error_code") for rep in reports] == [413, 200], reports
    log.fail(too_big.rid, 413)
    log.ack(fine.rid, reports[1].get("partition_id"), reports[1].get("offset"))
    verify_log(api, "small-msgs", 1, log, exact=True)
    canary.check()


def test_unknown_topic(module_node, canary):
    api = module_node.api
    assert_error(api.produce_one("no-such-topic", GOOD), 404, "produce to unknown topic")
    assert_error(api.produce_batch_raw("no-such-topic", {"entries": [{"id": "1", **GOOD}]}), 404,
                 "records-batch to unknown topic")
    assert_error(api.read("no-such-topic", 0, offset=0), 404, "read unknown topic")
    assert_error(api.offsets_raw("no-such-topic", 0), 404, "offsets of unknown topic")
    assert_error(api.get_topic("no-such-topic"), 404, "describe unknown topic")
    assert_error(api.delete_topic("no-such-topic"), 404, "delete unknown topic")
    assert_error(api.read("canary", 7, offset=0), 404, "read unknown partition")
    assert_error(api.offsets_raw("canary", 7), 404, "offsets of unknown partition")
    r = api.s.get(f"{api.url}/v3/clusters/not-the-cluster-id/topics", timeout=10)
    assert_error(r, 404, "unknown cluster id")
    canary.check()


@pytest.mark.parametrize("params", [
    {"offset": -1},
    {"offset": "abc"},
    {"offset": 0, "max_records": 0},
    {"offset": 0, "max_records": -5},
    {"offset": 0, "max_records": "lots"},
    {"offset": 0, "timeout_ms": "soon"},
    {"offset": 0, "format": "xml"},
], ids=["negative-offset", "offset-garbage", "max-zero", "max-negative", "max-garbage",
        "timeout-garbage", "format-unknown"])
def test_bad_read_params(module_node, canary, params):
    assert_error(module_node.api.read("canary", 0, **params), 400, f"read {params}")
    canary.check()


def test_read_past_high_watermark(module_node, canary):
    api = module_node.api
    hw = api.offsets("canary", 0)["high_watermark"]
    assert_error(api.read("canary", 0, offset=hw + 1), 416, "offset beyond high watermark")
    r = api.read("canary", 0, offset=hw, timeout_ms=0)
    assert r.status_code == 200 and r.text.strip() == "", (r.status_code, r.text[:200])
    canary.check()


def test_topic_admin_errors(module_node, canary):
    api = module_node.api
    api.create_topic("dup-topic", 2)
    r = api.create_topic_raw({"topic_name": "dup-topic", "partitions_count": 2})
    assert_error(r, 409, "create existing topic")
    for body in ({"topic_name": "bad name!", "partitions_count": 1},
                 {"topic_name": "", "partitions_count": 1},
                 {"topic_name": "x" * 300, "partitions_count": 1},
                 {"topic_name": "zero-parts", "partitions_count": 0},
                 {"topic_name": "neg-parts", "partitions_count": -2},
                 {"topic_name": "str-parts", "partitions_count": "three"},
                 {"partitions_count": 1}):
        assert_error(api.create_topic_raw(body), 400, f"create topic {body!r:.80}")
    names = api.list_topics()
    for bad in ("bad name!", "zero-parts", "neg-parts", "str-parts"):
        assert bad not in names
    assert api.get_topic("dup-topic").json()["partitions_count"] == 2
    canary.check()


def test_garbage_segment_object(module_node, module_factory, canary, s3):
    """A corrupted segment object is detected (500, checksum/corrupt), never served."""
    api = module_node.api
    prefix = module_node.cluster.prefix
    api.create_topic("corrupt-me", 1)
    seg_prefix = f"{prefix}/segments/"
    before = set(s3.keys(seg_prefix))
    log = ProduceLog("victim")
    victim = log.new(b"precious-value-" + os.urandom(16), key=b"k")
    r = send_single(api, "corrupt-me", log, victim)
    assert r.status_code == 200, r.text
    new = sorted(set(s3.keys(seg_prefix)) - before)
    assert len(new) == 1, f"expected exactly one new segment object under {seg_prefix}: {new}"
    assert all(k.endswith(".seg") for k in new), new
    key = new[0]
    original = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    garbage = random.Random(5).randbytes(len(original))
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=garbage)

    def check_corrupt_read(node, allow_cached: bool) -> None:
        r = node.api.read("corrupt-me", 0, offset=0, format="binary")
        if allow_cached and r.status_code == 200:
            # The writer may still hold its own segment in cache: then it must
            # serve the ORIGINAL record, never the garbage.
            lines = parse_concatenated_json(r.text)
            assert lines and line_matches(lines[0], victim) is None, r.text[:300]
            return
        body = assert_error(r, 500, f"read of corrupted segment via {node.name}")
        assert "checksum" in body["message"].lower() or "corrupt" in body["message"].lower(), body

    # A fresh node in the same cluster has no cache: it must read the object
    # (with peer fetch on it could ask the writer, whose cache still holds
    # the original bytes of the blocks it owns).
    other = module_factory.distributed(module_node.cluster,
                                       extra_args=["--peer-fetch", "false"])
    check_corrupt_read(other, allow_cached=False)
    check_corrupt_read(module_node, allow_cached=True)
    # And both keep serving: other topics, new produces, even the corrupt topic's tail.
    for node in (other, module_node):
        assert node.running
        verify_log(node.api, "canary", canary.partitions, canary.log, exact=True)
        after = log.new(b"after-" + node.name.encode())
        r = send_single(node.api, "corrupt-me", log, after)
        assert r.status_code == 200, r.text
        off = log.acked[after.rid][1]
        assert off >= 1, off
        # Offsets stored in other (healthy) segments are still served.
        other.api.wait_high_watermark("corrupt-me", 0, off + 1)
        lines = other.api.read_lines("corrupt-me", 0, offset=off, max_records=1)
        assert len(lines) == 1 and line_matches(lines[0], after) is None, lines
        check_corrupt_read(other, allow_cached=False)
    canary.check()
    other.close()


def test_after_all_bad_input_node_still_healthy(module_node, canary):
    canary.check()
    m = module_node.api.metrics()
    assert m.get("sluice_produce_records_total", 0) >= len(canary.log.acked)
