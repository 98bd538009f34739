"""A thin ``requests`` client for sluice's HTTP API and its JSON error bodies."""

from __future__ import annotations

import base64
import json
import re
import time

import requests

# --------------------------------------------------------------------------
# HTTP API client
# --------------------------------------------------------------------------

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


def parse_concatenated_json(text: str) -> list:
    """Parse whitespace/newline separated JSON values (NDJSON or concatenated)."""
    dec = json.JSONDecoder()
    out, i, n = [], 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            return out
        obj, i = dec.raw_decode(text, i)
        out.append(obj)


def error_body(resp: requests.Response) -> dict:
    """The JSON error body; asserts the documented shape."""
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"HTTP {resp.status_code} error body is not JSON: {resp.text[:500]!r}")
    assert isinstance(body, dict) and "error_code" in body and "message" in body, \
        f"error body lacks error_code/message: {body!r}"
    return body


def assert_error(resp: requests.Response, status: int | tuple[int, ...],
                 what: str = "") -> dict:
    statuses = (status,) if isinstance(status, int) else status
    assert resp.status_code in statuses, (
        f"{what}: expected HTTP {statuses}, got {resp.status_code}: {resp.text[:500]!r}")
    body = error_body(resp)
    assert body["error_code"] == resp.status_code, (
        f"{what}: error_code {body['error_code']} != HTTP status {resp.status_code}")
    return body


class Api:
    def __init__(self, url: str, session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.s = session or requests.Session()
        self._cid: str | None = None

    def with_new_session(self) -> "Api":
        api = Api(self.url, requests.Session())
        api.s.auth = self.s.auth
        api.s.verify = self.s.verify
        api._cid = self._cid
        return api

    # -- v3 admin ------------------------------------------------------------
    def clusters(self) -> dict:
        r = self.s.get(f"{self.url}/v3/clusters", timeout=10)
        assert r.status_code == 200, f"GET /v3/clusters -> {r.status_code} {r.text[:300]}"
        return r.json()

    @property
    def cluster_id(self) -> str:
        if self._cid is None:
            body = self.clusters()
            data = body.get("data") or []
            assert len(data) == 1 and data[0].get("cluster_id"), f"bad cluster list {body!r}"
            self._cid = data[0]["cluster_id"]
        return self._cid

    def topics_url(self, topic: str | None = None) -> str:
        base = f"{self.url}/v3/clusters/{self.cluster_id}/topics"
        return f"{base}/{topic}" if topic is not None else base

    def create_topic_raw(self, body) -> requests.Response:
        if isinstance(body, (dict, list)):
            return self.s.post(self.topics_url(), json=body, timeout=30)
        return self.s.post(self.topics_url(), data=body, timeout=30,
                           headers={"Content-Type": "application/json"})

    def create_topic(self, name: str, partitions: int, configs: dict | None = None) -> dict:
        body = {"topic_name": name, "partitions_count": partitions}
        if configs:
            body["configs"] = [{"name": k, "value": str(v)} for k, v in configs.items()]
        r = self.create_topic_raw(body)
        assert r.status_code == 201, f"create topic {name}: {r.status_code} {r.text[:500]}"
        t = r.json()
        assert t.get("topic_name") == name and t.get("partitions_count") == partitions, t
        return t

    def get_topic(self, name: str) -> requests.Response:
        return self.s.get(self.topics_url(name), timeout=10)

    def list_topics(self) -> list[str]:
        r = self.s.get(self.topics_url(), timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body.get("kind") == "KafkaTopicList", body
        return [t["topic_name"] for t in body["data"]]

    def delete_topic(self, name: str) -> requests.Response:
        return self.s.delete(self.topics_url(name), timeout=30)

    # -- produce -------------------------------------------------------------
    def produce_raw(self, topic: str, body: bytes | str, timeout: float = 60) -> requests.Response:
        if isinstance(body, str):
            body = body.encode()
        return self.s.post(f"{self.topics_url(topic)}/records", data=body, timeout=timeout,
                           headers={"Content-Type": "application/json"})

    def produce_one(self, topic: str, record: dict, timeout: float = 60) -> requests.Response:
        return self.produce_raw(topic, json.dumps(record), timeout)

    def produce_stream(self, topic: str, records: list[dict],
                       timeout: float = 60) -> requests.Response:
        return self.produce_raw(topic, "\n".join(json.dumps(r) for r in records), timeout)

    def produce_batch_raw(self, topic: str, body, timeout: float = 60) -> requests.Response:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        return self.s.post(f"{self.topics_url(topic)}/records-batch", data=body,
                           timeout=timeout, headers={"Content-Type": "application/json"})

    # -- read ----------------------------------------------------------------
    def read(self, topic: str, partition, *, timeout: float = 60,
             **params) -> requests.Response:
        return self.s.get(f"{self.url}/v1/topics/{topic}/partitions/{partition}/records",
                          params=params, timeout=timeout)

    def read_lines(self, topic: str, partition, **params) -> list[dict]:
        r = self.read(topic, partition, **params)
        assert r.status_code == 200, f"read {topic}/{partition} {params}: {r.status_code} {r.text[:500]}"
        return parse_concatenated_json(r.text)

    def offsets_raw(self, topic: str, partition) -> requests.Response:
        return self.s.get(f"{self.url}/v1/topics/{topic}/partitions/{partition}/offsets",
                          timeout=10)

    def offsets(self, topic: str, partition: int) -> dict:
        r = self.offsets_raw(topic, partition)
        assert r.status_code == 200, f"offsets {topic}/{partition}: {r.status_code} {r.text[:300]}"
        o = r.json()
        for k in ("log_start_offset", "high_watermark"):
            assert isinstance(o.get(k), int), f"offsets body lacks int {k}: {o!r}"
        return o

    def high_watermark(self, topic: str, partition: int) -> int:
        return self.offsets(topic, partition)["high_watermark"]

    def wait_high_watermark(self, topic: str, partition: int, at_least: int,
                            timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while True:
            hw = self.high_watermark(topic, partition)
            if hw >= at_least or time.monotonic() > deadline:
                assert hw >= at_least, (f"{self.url} {topic}/{partition}: high watermark {hw} "
                                        f"< {at_least} after {timeout}s")
                return hw
            time.sleep(0.1)

    def read_range(self, topic: str, partition: int, start: int, end: int,
                   fmt: str = "binary", max_records: int = 1000) -> list[dict]:
        """Records [start, end) -- asserts the node returns each offset in order."""
        out: list[dict] = []
        nxt = start
        empty_deadline: float | None = None
        while nxt < end:
            lines = self.read_lines(topic, partition, offset=nxt,
                                    max_records=min(max_records, end - nxt), format=fmt)
            if not lines:
                # The node said hw >= end; allow its index a moment to catch up.
                empty_deadline = empty_deadline or time.monotonic() + 10
                assert time.monotonic() < empty_deadline, \
                    f"{topic}/{partition}: empty read at offset {nxt} below {end}"
                time.sleep(0.1)
                continue
            empty_deadline = None
            assert len(lines) <= max_records, f"max_records={max_records} but got {len(lines)}"
            for line in lines:
                if line.get("offset") != nxt:
                    raise AssertionError(f"{topic}/{partition}: expected offset {nxt}, "
                                         f"got {line.get('offset')} ({line!r:.300})")
                out.append(line)
                nxt += 1
                if nxt >= end:
                    break
        return out

    def read_all(self, topic: str, partition: int, fmt: str = "binary",
                 at_least: int = 0) -> list[dict]:
        hw = self.wait_high_watermark(topic, partition, at_least) if at_least else \
            self.high_watermark(topic, partition)
        return self.read_range(topic, partition, 0, hw, fmt)

    # -- ops -----------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Prometheus text -> {metric name: sum over all label sets}."""
        r = self.s.get(f"{self.url}/metrics", timeout=10)
        assert r.status_code == 200, r.text[:300]
        out: dict[str, float] = {}
        for line in r.text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
            if m:
                try:
                    out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
                except ValueError:
                    pass
        return out


