"""sluice-lambda under `cargo lambda watch`, invoked with `cargo lambda invoke`.

The function runs against the session's real etcd and S3 server, next to a
node (`--roles ingest,fetch`: it plans compaction jobs as controller but runs
none). Records produced through Lambda invocations (batch, streaming and
single) and through the node's Kafka port go to the same topic; a Kafka
consumer reads them all back byte-equal, in order, with dense offsets. Each
invocation wrote one segment object and one commit. Then the compactor mode,
invoked with a schedule event, archives them.

Cold and warm invocation latencies are printed (`-s` shows them).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path

import requests
from confluent_kafka import Consumer, Producer, TopicPartition

from harness import REPO_ROOT, free_port, wait_until
from processes import AWS_ENV

TOPIC = "through-lambda"
PARTITIONS = 2
ROUNDS = 8
PER_ROUND = 40
# the function's name in the emulator
FUNCTION = "sluice-lambda"


def cargo_lambda() -> str:
    path = shutil.which("cargo-lambda")
    assert path, "cargo-lambda is not installed: tests/run.sh installs it (pip cargo-lambda)"
    return path


class LambdaWatch:
    """`cargo lambda watch --only-lambda-apis` (the Lambda runtime and invoke
    APIs) with the workspace's sluice-lambda binary polling it with `env`,
    as the Lambda service runs a function: the binary the suite built, not
    one `cargo run` would build again with the package's own features."""

    def __init__(self, workdir: Path, name: str, env: dict[str, str]):
        self.port = free_port()
        self.log = workdir / f"{name}.log"
        binary = REPO_ROOT / "target" / "debug" / "sluice-lambda"
        assert binary.is_file(), f"{binary} is not built: cargo build --workspace --bins"
        argv = [cargo_lambda(), "lambda", "watch", "--only-lambda-apis", "--quiet",
                "--invoke-address", "127.0.0.1", "--invoke-port", str(self.port),
                "--timeout", "120"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **env}, start_new_session=True)
        self.function = None
        wait_until(self.listening, 60, f"cargo lambda watch on :{self.port} ({self.log})")
        function_env = {**os.environ, **env,
                        "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{self.port}/.rt/{FUNCTION}",
                        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION,
                        "AWS_LAMBDA_FUNCTION_VERSION": "1",
                        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"}
        self.binary, self.function_env = binary, function_env

    def start_function(self) -> None:
        """Start the function process (the cold start)."""
        with open(self.log, "ab") as out:
            self.function = subprocess.Popen([str(self.binary)], cwd=REPO_ROOT, stdout=out,
                                             stderr=subprocess.STDOUT, env=self.function_env,
                                             start_new_session=True)

    def listening(self) -> bool:
        # a TCP connect only: any HTTP request to the emulator's root is an
        # invocation of the function
        assert self.proc.poll() is None, f"cargo lambda watch exited: {self.log_tail()}"
        with socket.socket() as probe:
            probe.settimeout(2)
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def invoke(self, event: dict, tmp: Path) -> tuple[dict, float]:
        """`cargo lambda invoke` with `event`; the answer and the seconds it took."""
        data = tmp / f"event-{time.monotonic_ns()}.json"
        data.write_text(json.dumps(event))
        started = time.monotonic()
        done = subprocess.run([cargo_lambda(), "lambda", "invoke", FUNCTION,
                               "--invoke-address", "127.0.0.1", "--invoke-port", str(self.port),
                               "--data-file", str(data), "--output-format", "json"],
                              capture_output=True, text=True, timeout=300)
        took = time.monotonic() - started
        assert done.returncode == 0, f"invoke failed: {done.stdout}{done.stderr}\n{self.log_tail()}"
        return json.loads(done.stdout), took

    def invoke_timed(self, event: dict) -> tuple[dict, float]:
        """The same through the emulator's Invoke API (no CLI start-up in the figure)."""
        started = time.monotonic()
        r = requests.post(f"http://127.0.0.1:{self.port}/2015-03-31/functions/{FUNCTION}/invocations",
                          json=event, timeout=300)
        took = time.monotonic() - started
        assert r.status_code == 200, r.text[:500]
        return r.json(), took

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        for proc in (self.function, self.proc):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)


def http_event(method: str, path: str, body: str, content_type: str = "application/json") -> dict:
    """A Function URL (API Gateway HTTP API, payload 2.0) event."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": content_type, "host": "sluice.lambda-url.us-east-1.on.aws"},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "sluice",
            "domainName": "sluice.lambda-url.us-east-1.on.aws",
            "domainPrefix": "sluice",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "e2e"},
            "requestId": f"req-{time.monotonic_ns()}",
            "routeKey": "$default",
            "stage": "$default",
            "time": "26/Nov/2026:00:00:00 +0000",
            "timeEpoch": int(time.time() * 1000),
        },
        "body": body,
        "isBase64Encoded": False,
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def record_json(value: bytes, partition: int, key: bytes | None = None) -> dict:
    doc = {"partition_id": partition, "value": {"type": "BINARY", "data": b64(value)}}
    if key is not None:
        doc["key"] = {"type": "BINARY", "data": b64(key)}
    return doc


def etcd_range(etcd: str, prefix: str) -> list[dict]:
    start = prefix.encode()
    end = start[:-1] + bytes([start[-1] + 1])
    r = requests.post(f"{etcd}/v3/kv/range", json={"key": b64(start), "range_end": b64(end)},
                      timeout=10)
    r.raise_for_status()
    return r.json().get("kvs", [])


def segment_objects(s3, cluster) -> set[str]:
    return {k for k in s3.keys(cluster.prefix + "/segments/") if k.endswith(".seg")}


def commits_of(etcd: str, cluster, segment_key: str) -> set[int]:
    """The mod revisions of the index entries pointing into one segment."""
    ulid = segment_key.rsplit("/", 1)[-1].removesuffix(".seg")
    revisions = set()
    for kv in etcd_range(etcd, f"/sluice/{cluster.name}/index/"):
        if ulid in base64.b64decode(kv["value"]).decode(errors="replace"):
            revisions.add(int(kv["mod_revision"]))
    return revisions


def test_lambda_produces_next_to_a_node_and_compacts(sluice, s3, tmp_path):
    cluster = sluice.new_cluster()
    node = sluice.distributed(cluster, node_id=1, extra_args=[
        "--roles", "ingest,fetch", "--archive-max-lag", "3s"])
    node.api.create_topic(TOPIC, PARTITIONS)
    cluster_id = node.api.cluster_id
    records_path = f"/v3/clusters/{cluster_id}/topics/{TOPIC}/records"
    batch_path = records_path + "-batch"
    env = {**AWS_ENV,
           "SLUICE_ETCD": cluster.etcd, "SLUICE_CLUSTER": cluster.name,
           "SLUICE_STORE": cluster.store, "SLUICE_S3_ENDPOINT": cluster.s3_endpoint,
           "SLUICE_DATA_DIR": str(tmp_path / "lambda-data"), "SLUICE_ARCHIVE_MAX_LAG": "3s",
           "RUST_LOG": "info"}

    expected: dict[int, dict[int, bytes]] = {p: {} for p in range(PARTITIONS)}
    kafka = Producer({"bootstrap.servers": node.bootstrap, "linger.ms": 5, "enable.idempotence": True})
    watch = LambdaWatch(tmp_path, "lambda-produce", {**env, "SLUICE_LAMBDA_MODE": "produce"})
    timings: list[float] = []
    try:
        for rnd in range(ROUNDS):
            # the node takes records too, between the invocations
            acked: list = []
            for i in range(PER_ROUND):
                value = b"kafka-%d-%d" % (rnd, i)
                kafka.produce(TOPIC, value=value, partition=i % PARTITIONS,
                              on_delivery=lambda err, msg: acked.append((err, msg)))
            assert kafka.flush(30) == 0
            for err, msg in acked:
                assert err is None, err
                expected[msg.partition()][msg.offset()] = msg.value()

            before = segment_objects(s3, cluster)
            values = [b"lambda-%d-%d-" % (rnd, i) + bytes(range(256)) for i in range(PER_ROUND)]
            if rnd % 3 == 2:
                # streaming: concatenated record objects on /records
                body = "".join(json.dumps(record_json(v, i % PARTITIONS)) for i, v in enumerate(values))
                event = http_event("POST", records_path, body)
            else:
                entries = [{"id": str(i), **record_json(v, i % PARTITIONS)} for i, v in enumerate(values)]
                event = http_event("POST", batch_path, json.dumps({"entries": entries}))
            if rnd == 0:
                # the cold start: the process starts, connects and loads the view
                started = time.monotonic()
                watch.start_function()
                answer, took = watch.invoke_timed(event)
                took = time.monotonic() - started
            elif rnd % 2:
                answer, took = watch.invoke(event, tmp_path)
            else:
                answer, took = watch.invoke_timed(event)
            timings.append((took, rnd % 2))
            assert answer["statusCode"] == 200, answer
            body = answer["body"]
            if rnd % 3 == 2:
                reports = parse_concatenated(body)
            else:
                reports = json.loads(body)["successes"]
                assert [int(s["id"]) for s in reports] == list(range(PER_ROUND))
            assert len(reports) == PER_ROUND, body[:500]
            for i, (report, value) in enumerate(zip(reports, values)):
                assert report.get("error_code", 200) == 200, report
                assert report["partition_id"] == i % PARTITIONS
                expected[report["partition_id"]][report["offset"]] = value

            # one invocation: one new segment object, its index entries of one commit
            new = segment_objects(s3, cluster) - before
            assert len(new) == 1, f"invocation {rnd} wrote {len(new)} segment objects: {new}"
            (segment,) = new
            revisions = commits_of(cluster.etcd, cluster, segment)
            assert len(revisions) == 1, f"segment {segment} committed in {revisions}"

        # a single record (v3 /records with one object) works too
        answer, _ = watch.invoke_timed(http_event("POST", records_path,
                                                  json.dumps(record_json(b"single", 0, b"k"))))
        assert answer["statusCode"] == 200, answer
        single = json.loads(answer["body"])
        expected[0][single["offset"]] = b"single"

        # endpoints the front door does not serve answer 404 with a reason
        answer, _ = watch.invoke_timed(http_event("GET", f"/v1/topics/{TOPIC}/partitions/0/records", ""))
        assert answer["statusCode"] == 404
        assert "produce only" in json.loads(answer["body"])["message"]
        # and bad input is a 4xx with a JSON reason, the function still serving
        answer, _ = watch.invoke_timed(http_event("POST", batch_path, "{not json"))
        assert 400 <= answer["statusCode"] < 500, answer
        assert json.loads(answer["body"])["message"]
    finally:
        watch.close()
    cold = timings[0][0]
    api = [t for t, cli in timings[1:] if not cli]
    cli = [t for t, cli in timings[1:] if cli]
    print(f"\nsluice-lambda produce of {PER_ROUND} records: cold {cold * 1000:.0f} ms "
          f"(process start, etcd and S3 connect, view load); warm, "
          f"Invoke API: median {statistics.median(api) * 1000:.0f} ms of {len(api)}; "
          f"warm, cargo lambda invoke CLI: median {statistics.median(cli) * 1000:.0f} ms of {len(cli)}")

    # every record over Kafka: byte-equal, in order, dense offsets
    consumer = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "lambda-check",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        for partition in range(PARTITIONS):
            want = expected[partition]
            assert sorted(want) == list(range(len(want))), f"offsets not dense on {partition}"
            consumer.assign([TopicPartition(TOPIC, partition, 0)])
            got: list = []
            deadline = time.time() + 60
            while len(got) < len(want) and time.time() < deadline:
                msg = consumer.poll(1)
                if msg is None or msg.error():
                    continue
                got.append((msg.offset(), msg.value()))
            assert [o for o, _ in got] == list(range(len(want)))
            assert all(v == want[o] for o, v in got), f"partition {partition} differs"
    finally:
        consumer.close()

    # the scheduled compactor invocation archives them (the node plans the
    # jobs as controller; only the function runs them)
    time.sleep(2)
    compactor = LambdaWatch(tmp_path, "lambda-compactor", {**env, "SLUICE_LAMBDA_MODE": "compactor"})
    compactor.start_function()
    schedule = {"version": "0", "id": "e2e", "detail-type": "Scheduled Event", "source": "aws.events",
                "account": "123456789012", "time": "2026-11-26T00:00:00Z", "region": "us-east-1",
                "resources": ["arn:aws:events:us-east-1:123456789012:rule/sluice-compactor"],
                "detail": {}, "seconds": 60}
    try:
        def archived() -> bool:
            doc = node.api.s.get(f"{node.url}/v1/topics/{TOPIC}/archive", timeout=10).json()
            return all(p["segment_runs"] == 0 and p["archived_end_offset"] == p["high_watermark"]
                       == len(expected[p["partition"]]) for p in doc["partitions"])

        summaries = []
        for _ in range(4):
            summary, _ = compactor.invoke(schedule, tmp_path)
            summaries.append(summary)
            assert summary["bound_seconds"] > 10, summary
            assert summary["seconds"] <= summary["bound_seconds"] + 15, summary
            if archived():
                break
        assert archived(), f"not archived after {summaries}: " + \
            node.api.s.get(f"{node.url}/v1/topics/{TOPIC}/archive", timeout=10).text
        assert sum(s["archive_bytes_written"] for s in summaries) > 0, summaries
        print(f"compactor invocations: {summaries}")
    finally:
        compactor.close()
    # the node ran no job, and the function's member ids never took the node's
    assert node.api.metrics().get("sluice_compaction_jobs_total", 0.0) == 0
    assert all(s["node_id"] != node.node_id for s in summaries), summaries


def parse_concatenated(text: str) -> list[dict]:
    decoder = json.JSONDecoder()
    out, i = [], 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        doc, i = decoder.raw_decode(text, i)
        out.append(doc)
    return out
