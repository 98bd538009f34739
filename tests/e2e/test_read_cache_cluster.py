"""Peer-owned cache blocks across a cluster (issue 4), against real etcd and
the S3 server.

Every cache block has one owner among the live nodes (rendezvous hashing of
(segment id, block index)); a node that misses a block it does not own asks
the owner over `/internal/v1/blocks/...` before the object store. Counted
with the nodes' own `sluice_object_gets_total` (real object-store GETs):

* 5 readers ("consumer groups") spread over 3 nodes, each reading the whole
  topic from offset 0, cost at most 1.2x the GETs of 1 reader, and every
  read is byte-equal to what was produced. DATA_BYTES is the issue's
  1 GiB (4096 blocks of 256 KiB; `SLUICE_E2E_CACHE_BYTES` sets another
  size for a quicker local run). Each run is on a fresh 3-node cluster
  (empty caches). The data is produced through one node, whose write-through
  cache holds it all, so the single reader reads through *another* node;
  the 5 readers are spread over all three.
* killing the owner of blocks mid-read: the reader on a surviving node
  goes on (each request for a dead owner's block falls back to the object
  store) and reads byte-equal data.
* the internal endpoint validates its inputs, and answers only requests that
  carry the cluster's node credential (401 otherwise).
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import threading

import pytest
import requests

from harness import b64, unb64

DATA_BYTES = int(os.environ.get("SLUICE_E2E_CACHE_BYTES", str(1 << 30)))  # the issue: a 1 GiB topic
RECORD_BYTES = 16 << 10
RECORDS_PER_REQUEST = 64
BLOCK_BYTES = 256 << 10
NODE_ARGS = ["--cache-block-bytes", str(BLOCK_BYTES),
             "--cache-memory-bytes", str(max(256 << 20, 2 * DATA_BYTES)),
             "--cache-disk-bytes", "0",
             # a loaded 2-core machine: a slow owner must not look dead
             "--peer-fetch-timeout", "10s",
             # this test counts the GETs of readers: no compaction meanwhile
             # (a roll job's reads and archived offsets would change them)
             "--roles", "ingest,fetch"]
TOPIC = "cached"


def start_cluster(sluice, nodes: int = 3):
    cluster = sluice.new_cluster()
    return [sluice.distributed(cluster, extra_args=NODE_ARGS) for _ in range(nodes)]


def fill(api, topic: str, data_bytes: int) -> tuple[int, str]:
    """Produce about `data_bytes` of random records; (records, sha256 of values)."""
    api.create_topic(topic, 1)
    rng = random.Random(4)
    digest = hashlib.sha256()
    records = 0
    while records * RECORD_BYTES < data_bytes:
        values = [rng.randbytes(RECORD_BYTES) for _ in range(RECORDS_PER_REQUEST)]
        entries = [{"id": str(i), "partition_id": 0, "value": {"type": "BINARY", "data": b64(v)}}
                   for i, v in enumerate(values)]
        r = api.produce_batch_raw(topic, {"entries": entries})
        assert r.status_code == 200, f"produce: {r.status_code} {r.text[:300]}"
        for v in values:
            digest.update(v)
        records += len(values)
    api.wait_high_watermark(topic, 0, records)
    return records, digest.hexdigest()


def read_digest(api, topic: str, start: int, end: int, digest=None):
    """Read [start, end) in order, hashing the values; returns the hash object."""
    digest = digest or hashlib.sha256()
    offset = start
    while offset < end:
        lines = api.read_lines(topic, 0, offset=offset, format="binary",
                               max_records=min(256, end - offset))
        assert lines, f"empty read at {offset} below {end}"
        for line in lines:
            assert line["offset"] == offset, line
            digest.update(unb64(line["value"]))
            offset += 1
            if offset >= end:
                break
    return digest


def gets(nodes) -> float:
    return sum(n.api.metrics()["sluice_object_gets_total"] for n in nodes if n.running)


def labelled(node, name: str, **labels) -> float:
    text = requests.get(node.url + "/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def read_concurrently(readers: list, records: int) -> list[str]:
    results: list[str | None] = [None] * len(readers)
    errors: list[str] = []

    def run(i: int, api) -> None:
        try:
            results[i] = read_digest(api, TOPIC, 0, records).hexdigest()
        except Exception as e:  # noqa: BLE001 - reported by the test thread
            errors.append(f"reader {i}: {e!r}")

    threads = [threading.Thread(target=run, args=(i, api)) for i, api in enumerate(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    return [r or "" for r in results]


# two 1 GiB fills and six full reads: ~3.5 min on the 2-core machine
@pytest.mark.timeout(900)
def test_five_groups_on_three_nodes_cost_about_the_gets_of_one(sluice):
    # one group, reading through a node that did not produce the data
    nodes = start_cluster(sluice)
    records, expected = fill(nodes[0].api, TOPIC, DATA_BYTES)
    assert gets(nodes) == 0, "write-through: producing costs no GET"
    assert read_concurrently([nodes[1].api.with_new_session()], records) == [expected]
    one_group = gets(nodes)
    peer_hits = sum(labelled(n, "sluice_peer_fetches_total", result="hit") for n in nodes)
    assert one_group > 0
    assert peer_hits > 0, "the reader's node asked the owners of blocks"
    for node in nodes:
        node.stop()

    # five groups, spread over the three nodes of a fresh cluster
    nodes = start_cluster(sluice)
    records5, expected5 = fill(nodes[0].api, TOPIC, DATA_BYTES)
    assert (records5, expected5) == (records, expected)
    readers = [nodes[i % 3].api.with_new_session() for i in range(5)]
    assert read_concurrently(readers, records) == [expected] * 5
    five_groups = gets(nodes)
    fallbacks = sum(labelled(n, "sluice_peer_fetches_total", result="fallback") for n in nodes)
    blocks = DATA_BYTES // BLOCK_BYTES
    print(f"{DATA_BYTES >> 20} MiB (~{blocks} blocks): 1 group {one_group:.0f} GETs, "
          f"5 groups {five_groups:.0f} GETs, peer fallbacks {fallbacks:.0f}")
    assert five_groups <= 1.2 * one_group, \
        f"5 groups cost {five_groups} GETs, 1 group {one_group}"


def test_a_dead_owner_costs_a_fallback_never_an_error(sluice):
    nodes = start_cluster(sluice)
    producer, reader, owner = nodes
    records, expected = fill(producer.api, TOPIC, min(DATA_BYTES, 64 << 20))
    half = records // 2
    digest = read_digest(reader.api, TOPIC, 0, half)
    assert labelled(reader, "sluice_peer_fetches_total", result="hit") > 0
    owner_served = owner.api.metrics()["sluice_peer_served_blocks_total"]
    assert owner_served > 0, "the node to be killed owned blocks the reader asked for"
    owner.kill9()
    fallbacks = labelled(reader, "sluice_peer_fetches_total", result="fallback")
    # the dead node stays listed until its lease expires: its blocks fall back
    read_digest(reader.api, TOPIC, half, records, digest)
    assert digest.hexdigest() == expected
    assert labelled(reader, "sluice_peer_fetches_total", result="fallback") > fallbacks
    # and a fresh read of everything from the producer node is byte-equal too
    assert read_digest(producer.api, TOPIC, 0, records).hexdigest() == expected


def node_credential(node) -> str:
    """The cluster's node credential, read from etcd over its JSON gateway."""
    key = f"/sluice/{node.cluster.name}/node-secret"
    r = requests.post(f"{node.cluster.etcd}/v3/kv/range",
                      json={"key": base64.b64encode(key.encode()).decode()}, timeout=10)
    r.raise_for_status()
    kvs = r.json().get("kvs", [])
    assert kvs, f"no {key} in etcd"
    return base64.b64decode(kvs[0]["value"]).decode()


def test_the_internal_block_endpoint_refuses_requests_without_the_node_credential(sluice):
    node = sluice.distributed(extra_args=NODE_ARGS)
    url = f"{node.url}/internal/v1/blocks/01J00000000000000000000000/0?object_bytes=10"
    for headers in ({}, {"x-sluice-node-credential": "guess"},
                    {"x-sluice-node-credential": node_credential(node)[:-1]}):
        r = requests.get(url, headers=headers, timeout=10)
        assert r.status_code == 401, (headers, r.status_code, r.text[:200])
        assert "node credential" in r.json()["message"]
    # with it: past the check (a well-formed request of a missing object)
    r = requests.get(url, headers={"x-sluice-node-credential": node_credential(node)}, timeout=10)
    assert r.status_code == 404, r.text[:200]
    assert node.running


def test_the_internal_block_endpoint_validates_its_input(sluice):
    node = sluice.distributed(extra_args=NODE_ARGS)
    base = node.url + "/internal/v1/blocks"
    credential = {"x-sluice-node-credential": node_credential(node)}
    segment = "01J00000000000000000000000"
    cases = [
        (f"{base}/not-a-ulid/0?object_bytes=10", 400),
        (f"{base}/{segment}/x?object_bytes=10", 400),
        (f"{base}/{segment}/-1?object_bytes=10", 400),
        (f"{base}/{segment}/0", 400),
        (f"{base}/{segment}/0?object_bytes=0", 400),
        (f"{base}/{segment}/0?object_bytes=abc", 400),
        (f"{base}/{segment}/0?object_bytes=99999999999999999999999", 400),
        (f"{base}/{segment}/1?object_bytes={BLOCK_BYTES}", 400),
        # a well-formed request for an object that does not exist
        (f"{base}/{segment}/0?object_bytes=10", 404),
    ]
    for url, status in cases:
        r = requests.get(url, headers=credential, timeout=10)
        assert r.status_code == status, f"{url}: {r.status_code} {r.text[:200]}"
        body = r.json()
        assert body["error_code"] == status and body["message"], body
    assert node.api.metrics()["sluice_object_gets_total"] <= 1
