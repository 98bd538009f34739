"""HTTP API shapes and semantics on one distributed node (module scope):
v3 cluster/topic resources, record formats, streaming produce, the default
partitioner, explicit timestamps, offsets and long-poll."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone

from harness import b64, kafka_partition, parse_concatenated_json, unb64


def test_cluster_and_topic_resources(module_node):
    api = module_node.api
    body = api.clusters()
    assert body["kind"] == "KafkaClusterList", body
    assert len(body["data"]) == 1 and body["data"][0]["kind"] == "KafkaCluster", body
    cid = body["data"][0]["cluster_id"]
    assert isinstance(cid, str) and cid

    r = api.create_topic_raw({"topic_name": "api-topic", "partitions_count": 4,
                              "configs": [{"name": "max.message.bytes", "value": "2048"}]})
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["kind"] == "KafkaTopic" and t["cluster_id"] == cid, t
    assert t["topic_name"] == "api-topic" and t["partitions_count"] == 4, t
    assert t["is_internal"] is False and isinstance(t["replication_factor"], int), t

    got = api.get_topic("api-topic")
    assert got.status_code == 200 and got.json()["partitions_count"] == 4, got.text
    assert "api-topic" in api.list_topics()
    for p in range(4):
        o = api.offsets("api-topic", p)
        assert o["topic"] == "api-topic" and o["partition"] == p, o
        assert o["log_start_offset"] == 0 and o["high_watermark"] == 0, o

    r = api.delete_topic("api-topic")
    assert r.status_code == 204, r.text
    assert api.get_topic("api-topic").status_code == 404
    assert "api-topic" not in api.list_topics()
    # The name can be used again, and the new topic starts empty.
    api.create_topic("api-topic", 2)
    assert api.offsets("api-topic", 0)["high_watermark"] == 0


def test_single_record_delivery_report_and_formats(module_node):
    api = module_node.api
    api.create_topic("formats", 1)
    cid = api.cluster_id
    ts = "2024-01-02T03:04:05.678Z"
    ts_ms = round(datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc).timestamp() * 1000)
    rec = {"partition_id": 0,
           "key": {"type": "STRING", "data": "user-1"},
           "value": {"type": "JSON", "data": {"a": 1, "b": [True, None, "x"]}},
           "headers": [{"name": "trace", "value": b64(b"\x00\x01abc")}],
           "timestamp": ts}
    r = api.produce_one("formats", rec)
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["error_code"] == 200 and rep["cluster_id"] == cid, rep
    assert rep["topic_name"] == "formats" and rep["partition_id"] == 0 and rep["offset"] == 0, rep
    assert rep["key"]["type"] == "STRING" and rep["key"]["size"] == len(b"user-1"), rep
    assert rep["value"]["type"] == "JSON" and rep["value"]["size"] > 0, rep

    raw = bytes(range(256))
    r = api.produce_one("formats", {"partition_id": 0,
                                    "value": {"type": "BINARY", "data": b64(raw)}})
    assert r.status_code == 200 and r.json()["offset"] == 1, r.text
    assert r.json()["key"] is None and r.json()["value"]["size"] == 256, r.text
    r = api.produce_one("formats", {"partition_id": 0, "key": {"type": "BINARY", "data": b64(b"k")}})
    assert r.status_code == 200 and r.json()["offset"] == 2, r.text
    assert r.json()["value"] is None, r.text

    binary = api.read_lines("formats", 0, offset=0, format="binary")
    assert [ln["offset"] for ln in binary] == [0, 1, 2]
    first = binary[0]
    assert unb64(first["key"]) == b"user-1"
    assert json.loads(unb64(first["value"])) == {"a": 1, "b": [True, None, "x"]}
    assert first["timestamp"] == ts_ms, first
    assert [h["name"] for h in first["headers"]] == ["trace"]
    assert unb64(first["headers"][0]["value"]) == b"\x00\x01abc"
    assert binary[1]["key"] is None and unb64(binary[1]["value"]) == raw
    assert binary[1]["headers"] == []
    assert unb64(binary[2]["key"]) == b"k" and binary[2]["value"] is None

    string = api.read_lines("formats", 0, offset=0, max_records=1, format="string")
    assert len(string) == 1
    assert string[0]["key"] == "user-1" and json.loads(string[0]["value"]) == {"a": 1, "b": [True, None, "x"]}
    # format=json needs JSON key and value: a record produced with JSON types.
    r = api.produce_one("formats", {"partition_id": 0, "key": {"type": "JSON", "data": [1, "k"]},
                                    "value": {"type": "JSON", "data": {"n": 2.5, "s": "x"}}})
    assert r.status_code == 200 and r.json()["offset"] == 3, r.text
    as_json = api.read_lines("formats", 0, offset=3, max_records=1, format="json")
    assert len(as_json) == 1 and as_json[0]["offset"] == 3, as_json
    assert as_json[0]["key"] == [1, "k"] and as_json[0]["value"] == {"n": 2.5, "s": "x"}, as_json
    # a string key beside a JSON value: key_format reads the key apart
    refused = api.read("formats", 0, offset=0, max_records=1, format="json")
    assert refused.status_code == 422, refused.text
    mixed = api.read_lines("formats", 0, offset=0, max_records=1, format="json",
                           key_format="string")
    assert mixed[0]["key"] == "user-1" and mixed[0]["value"] == {"a": 1, "b": [True, None, "x"]}
    bad = api.read("formats", 0, offset=0, format="json", key_format="yaml")
    assert bad.status_code == 400 and "key_format" in bad.json()["message"], bad.text

    # max_records and offsets in the middle.
    two = api.read_lines("formats", 0, offset=1, max_records=1, format="binary")
    assert [ln["offset"] for ln in two] == [1]


def test_streaming_produce_reports_in_order(module_node):
    api = module_node.api
    api.create_topic("stream", 2)
    body = "\n".join(json.dumps({"partition_id": i % 2,
                                 "value": {"type": "STRING", "data": f"v{i}"}}) for i in range(10))
    body += "  " + json.dumps({"partition_id": 1, "value": {"type": "STRING", "data": "v10"}})
    r = api.produce_raw("stream", body)
    assert r.status_code == 200, r.text
    reports = parse_concatenated_json(r.text)
    assert len(reports) == 11, reports
    assert all(rep["error_code"] == 200 for rep in reports), reports
    assert [rep["partition_id"] for rep in reports] == [0, 1] * 5 + [1]
    assert [rep["offset"] for rep in reports if rep["partition_id"] == 0] == list(range(5))
    assert [rep["offset"] for rep in reports if rep["partition_id"] == 1] == list(range(6))
    vals = [ln["value"] for ln in api.read_lines("stream", 1, offset=0, format="string")]
    assert vals == ["v1", "v3", "v5", "v7", "v9", "v10"]


def test_default_partitioner(module_node):
    api = module_node.api
    parts = 6
    api.create_topic("partitioner", parts)
    keys = [f"key-{i}" for i in range(60)] + ["key-1", "key-2"]
    for k in keys:
        r = api.produce_one("partitioner", {"key": {"type": "STRING", "data": k},
                                            "value": {"type": "STRING", "data": k}})
        assert r.status_code == 200, r.text
        assert r.json()["partition_id"] == kafka_partition(k.encode(), parts), \
            f"key {k!r}: partition {r.json()['partition_id']}, Kafka's murmur2 says " \
            f"{kafka_partition(k.encode(), parts)}"
    used = set()
    for _ in range(12):
        r = api.produce_one("partitioner", {"value": {"type": "STRING", "data": "keyless"}})
        assert r.status_code == 200, r.text
        used.add(r.json()["partition_id"])
    assert used == set(range(parts)), f"keyless records not spread round-robin: {used}"


def test_long_poll(module_node):
    api = module_node.api
    api.create_topic("longpoll", 1)
    t0 = time.monotonic()
    r = api.read("longpoll", 0, offset=0, timeout_ms=600)
    took = time.monotonic() - t0
    assert r.status_code == 200 and r.text.strip() == "", r.text
    assert 0.4 <= took < 10, f"empty long-poll returned after {took:.2f}s"

    def later():
        time.sleep(0.7)
        api.with_new_session().produce_one(
            "longpoll", {"value": {"type": "STRING", "data": "wake"}})

    th = threading.Thread(target=later)
    th.start()
    t0 = time.monotonic()
    r = api.read("longpoll", 0, offset=0, timeout_ms=8000, format="string")
    took = time.monotonic() - t0
    th.join()
    assert r.status_code == 200, r.text
    lines = parse_concatenated_json(r.text)
    assert [ln["value"] for ln in lines] == ["wake"], r.text
    assert took < 7, f"long-poll did not wake on the commit ({took:.2f}s)"
