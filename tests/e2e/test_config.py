"""`sluice serve --config FILE`: a TOML file with every section, refused
when it has an unknown key (named in the error), overridden by `SLUICE_*`
variables and those by flags; `sluice config show` prints the result."""

from __future__ import annotations

import os
import subprocess
import tomllib

import requests

from harness import free_port, spawn, wait_until, kill_proc, tail


def size(text: str) -> int:
    """Bytes of a size as `config show` prints it (`52428KiB`, `8MiB`, `512`)."""
    for unit, bytes_ in (("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40)):
        if text.endswith(unit):
            return int(text[:-len(unit)]) * bytes_
    return int(text)


def config_show(sluice_bin, *args, env=None) -> dict:
    done = subprocess.run([str(sluice_bin), "config", "show", *args], capture_output=True,
                          timeout=60, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr.decode()
    return tomllib.loads(done.stdout.decode())


def every_section(tmp_path, http_port: int, kafka_port: int) -> str:
    """A file that sets at least one key of every section."""
    return f"""
[node]
data_dir = "{tmp_path / 'data'}"
node_id = 7
cluster = "from-file"
roles = ["ingest", "fetch"]

[store]
request_timeout = "20s"
max_retries = 2

[metadata]
etcd = []
node_lease_ttl = "6s"

[http]
addr = "127.0.0.1:{http_port}"

[kafka]
listen_addr = "127.0.0.1:{kafka_port}"
default_partitions = 3

[writer]
flush_interval = "40ms"
segment_max_bytes = "2MiB"

[groups]
initial_rebalance_delay = "200ms"

[cache]
memory_bytes = "32MiB"
disk_bytes = 0

[peer]
enabled = false

[compactor]
archive_max_lag = "30s"
gc_grace = "5m"
"""


def test_config_show_prints_the_defaults(sluice_bin):
    config = config_show(sluice_bin)
    assert config["writer"]["flush_interval"] == "250ms"
    assert config["writer"]["segment_max_bytes"] == "8MiB"
    assert config["node"]["roles"] == ["ingest", "fetch", "compactor"]
    assert config["cache"]["dir"] == "./sluice-data/cache"
    assert set(config) == {"node", "store", "metadata", "http", "kafka", "tls", "security",
                           "writer", "groups", "cache", "peer", "compactor", "memory"}
    # one memory budget, and the sizes its shares give the components
    assert config["memory"] == {"max": "256MiB", "cache": 0.35, "writer": 0.2, "requests": 0.1,
                                "fetch": 0.15, "compaction": 0.1}
    mib = 1 << 20
    assert size(config["writer"]["buffer_max_bytes"]) == int(256 * mib * 0.2) // 1024 * 1024
    assert size(config["kafka"]["in_flight_bytes_max"]) == int(256 * mib * 0.1) // 1024 * 1024
    # reads: half for Fetch responses, half for index entries being read
    assert size(config["kafka"]["fetch_bytes_max"]) == int(256 * mib * 0.15) // 1024 * 1024 // 2
    assert size(config["cache"]["read_bytes_max"]) == int(256 * mib * 0.15) // 1024 * 1024 // 2
    # the cache's share less four readahead blocks of 4 MiB in flight and
    # the disk tier's two write buffers of one disk block each (four 4 MiB
    # cache blocks with room for headers: 16.25 MiB)
    disk_buffers = 4 * 4 * mib + 2 * (4 * (4 * mib + 64 * 1024))
    assert size(config["cache"]["memory_bytes"]) == int(256 * mib * 0.35) // 1024 * 1024 - disk_buffers
    assert config["security"] == {"authorizer": False, "super_users": []}
    assert config["kafka"]["sasl_mechanisms"] == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def test_memory_max_scales_the_shares_and_a_size_of_its_own_wins(sluice_bin):
    small = config_show(sluice_bin)
    large = config_show(sluice_bin, "--memory-max", "1GiB", "--buffer-max-bytes", "20MiB")
    assert large["memory"]["max"] == "1GiB"
    assert size(large["kafka"]["fetch_bytes_max"]) == int((1 << 30) * 0.15) // 1024 * 1024 // 2
    assert size(large["kafka"]["fetch_bytes_max"]) >= 4 * size(small["kafka"]["fetch_bytes_max"])
    assert size(large["cache"]["memory_bytes"]) > 4 * size(small["cache"]["memory_bytes"])
    assert large["writer"]["buffer_max_bytes"] == "20MiB"
    env = {"SLUICE_MEMORY_MAX": "512MiB"}
    assert config_show(sluice_bin, env=env)["memory"]["max"] == "512MiB"


def test_a_file_sets_every_section_and_variables_and_flags_override_it(sluice_bin, tmp_path):
    path = tmp_path / "sluice.toml"
    path.write_text(every_section(tmp_path, 1, 2))
    config = config_show(sluice_bin, "--config", str(path))
    assert config["node"]["cluster"] == "from-file"
    assert config["node"]["node_id"] == 7
    assert config["store"]["max_retries"] == 2
    assert config["metadata"]["node_lease_ttl"] == "6s"
    assert config["kafka"]["default_partitions"] == 3
    assert config["writer"]["flush_interval"] == "40ms"
    assert config["writer"]["segment_max_bytes"] == "2MiB"
    assert config["groups"]["initial_rebalance_delay"] == "200ms"
    assert config["cache"]["disk_bytes"] == "0"
    assert config["cache"]["dir"] == str(tmp_path / "data" / "cache")
    assert config["peer"]["enabled"] is False
    assert config["compactor"]["gc_grace"] == "5m"
    # a variable beats the file, a flag beats both
    env = {"SLUICE_FLUSH_INTERVAL": "77ms", "SLUICE_CLUSTER": "from-env"}
    config = config_show(sluice_bin, "--config", str(path), env=env)
    assert (config["writer"]["flush_interval"], config["node"]["cluster"]) == ("77ms", "from-env")
    config = config_show(sluice_bin, "--config", str(path), "--flush-interval", "88ms", env=env)
    assert (config["writer"]["flush_interval"], config["node"]["cluster"]) == ("88ms", "from-env")
    # the file given by variable
    config = config_show(sluice_bin, env={"SLUICE_CONFIG": str(path)})
    assert config["node"]["cluster"] == "from-file"


def test_an_unknown_key_is_refused_with_its_name(sluice_bin, tmp_path):
    for text, name in [('[writer]\nflush_intervall = "1s"\n', "flush_intervall"),
                       ('[nodes]\ncluster = "x"\n', "nodes"),
                       ('top_level = 1\n', "top_level")]:
        path = tmp_path / "bad.toml"
        path.write_text(text)
        done = subprocess.run([str(sluice_bin), "serve", "--config", str(path)],
                              capture_output=True, timeout=60, cwd=tmp_path)
        assert done.returncode != 0
        assert name in done.stderr.decode(), done.stderr.decode()
    # a bad value names its key too
    path.write_text('[writer]\nsegment_max_bytes = "lots"\n')
    done = subprocess.run([str(sluice_bin), "serve", "--config", str(path)],
                          capture_output=True, timeout=60, cwd=tmp_path)
    assert done.returncode != 0 and "segment_max_bytes" in done.stderr.decode(), done.stderr.decode()


def test_serve_runs_with_the_file(sluice_bin, tmp_path):
    http_port, kafka_port = free_port(), free_port()
    path = tmp_path / "sluice.toml"
    path.write_text(every_section(tmp_path, http_port, kafka_port))
    log = tmp_path / "serve.log"
    proc = spawn([str(sluice_bin), "serve", "--config", str(path)], log)
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_until(lambda: requests.get(url + "/health/ready", timeout=1).status_code == 200,
                   30, "sluice ready", proc=proc, log=log)
        # default_partitions = 3 from the file: an auto-created topic has 3
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{kafka_port}"})
        metadata = admin.list_topics(topic="auto-from-file", timeout=10)
        wait_until(lambda: len(admin.list_topics(topic="auto-from-file", timeout=10)
                               .topics["auto-from-file"].partitions) == 3, 10, "auto-created topic")
        assert list(metadata.brokers) == [7], "node_id from the file"
        cluster_id = requests.get(url + "/v3/clusters", timeout=10).json()["data"][0]["cluster_id"]
        assert cluster_id
    finally:
        kill_proc(proc)
        print(tail(log))
