"""Roles decide what a node runs.

A `--roles compactor` node opens no Kafka port, answers client HTTP
endpoints with 404 and a reason, is not a broker in Kafka's Metadata, and
runs the compaction jobs; a `--roles ingest,fetch` node serves clients and
runs none.
"""

from __future__ import annotations

import socket
import time

import requests
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from harness import wait_until

FAST_ARCHIVE = ["--archive-max-lag", "2s", "--gc-interval", "1s", "--gc-grace", "2s"]


def jobs_run(node) -> float:
    return node.api.metrics().get("sluice_compaction_jobs_total", 0.0)


def test_client_and_compactor_roles_split_the_work(sluice):
    cluster = sluice.new_cluster()
    front = sluice.distributed(cluster, node_id=1, extra_args=["--roles", "ingest,fetch", *FAST_ARCHIVE])
    back = sluice.distributed(cluster, node_id=2, extra_args=["--roles", "compactor", *FAST_ARCHIVE])

    # the compactor node refuses clients: no Kafka port, 404 with a reason over HTTP
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex(("127.0.0.1", back.kafka_port)) != 0, "compactor node opened its Kafka port"
    for path in ["/v3/clusters", "/v1/topics/t/partitions/0/offsets"]:
        resp = requests.get(back.url + path, timeout=10)
        assert resp.status_code == 404, resp.text
        assert "serves no clients" in resp.json()["message"]
    assert requests.get(back.url + "/health/ready", timeout=10).status_code == 200
    assert "sluice_compaction_jobs_total" in requests.get(back.url + "/metrics", timeout=10).text

    # Metadata lists the client node only (the compactor node registered
    # before it was ready; the watch brings that to the client node in ms)
    time.sleep(1)
    admin = AdminClient({"bootstrap.servers": front.bootstrap})
    brokers = admin.list_topics(timeout=10).brokers
    assert sorted(brokers) == [1], brokers

    # records produced through the client node are archived by the compactor node alone
    front.api.create_topic("roles", 2)
    producer = Producer({"bootstrap.servers": front.bootstrap, "linger.ms": 5})
    failures = []
    for i in range(2000):
        producer.produce("roles", value=b"v%d" % i, partition=i % 2,
                         on_delivery=lambda err, _m: err and failures.append(err))
    assert producer.flush(30) == 0 and not failures, failures

    def archived() -> bool:
        doc = front.api.s.get(f"{front.url}/v1/topics/roles/archive", timeout=10).json()
        return all(p["segment_runs"] == 0 and p["archived_end_offset"] == p["high_watermark"] == 1000
                   for p in doc["partitions"])

    wait_until(archived, 60, "the topic archived", interval=0.5)
    assert jobs_run(back) >= 2
    assert jobs_run(front) == 0
    # and the client node serves the archived records
    assert [r["value"] for r in front.api.read_all("roles", 0, fmt="string")] == \
        ["v%d" % i for i in range(0, 2000, 2)]
