"""The client subcommands against a running node's HTTP API (embedded mode)."""

from __future__ import annotations

import json
import re
from collections import Counter

LINES = [f"line {i} of the cli test" for i in range(40)] + [
    "ünïcødé ✓", "with \"quotes\" and {braces}", "tab\tseparated", "   leading spaces"]


def run_ok(node, *args, input=None):
    p = node.cli(*args, input=input)
    assert p.returncode == 0, (f"sluice {' '.join(args)} exited {p.returncode}\n"
                               f"stdout: {p.stdout.decode(errors='replace')[-2000:]}\n"
                               f"stderr: {p.stderr.decode(errors='replace')[-2000:]}")
    return p.stdout.decode("utf-8")


def describes_three_partitions(out: str) -> bool:
    try:
        obj = json.loads(out)
        if isinstance(obj, dict) and obj.get("partitions_count") == 3:
            return True
    except ValueError:
        pass
    return re.search(r"partitions?(_count)?\W{0,5}3\b", out, re.IGNORECASE) is not None


def test_cli_topic_produce_consume(sluice):
    node = sluice.embedded()
    url = node.url
    name = "cli-topic"

    run_ok(node, "topic", "create", name, "--partitions", "3", "--url", url)
    assert node.api.get_topic(name).json()["partitions_count"] == 3

    dup = node.cli("topic", "create", name, "--partitions", "3", "--url", url)
    assert dup.returncode != 0, "creating an existing topic must fail"

    out = run_ok(node, "topic", "list", "--url", url)
    assert name in out.split() or re.search(rf"\b{re.escape(name)}\b", out), out

    out = run_ok(node, "topic", "describe", name, "--url", url)
    assert name in out and describes_three_partitions(out), out

    run_ok(node, "produce", name, "--url", url, input="\n".join(LINES) + "\n")

    hws = {p: node.api.offsets(name, p)["high_watermark"] for p in range(3)}
    assert sum(hws.values()) == len(LINES), hws
    assert sum(1 for n in hws.values() if n > 0) >= 2, f"keyless lines not spread: {hws}"

    consumed = []
    for p, n in hws.items():
        if n == 0:
            continue
        out = run_ok(node, "consume", name, "--partition", str(p), "--offset", "0",
                     "--max", str(n), "--url", url)
        values = out.split("\n")
        if values and values[-1] == "":
            values.pop()
        assert len(values) == n, f"partition {p}: expected {n} lines, got {values!r}"
        # Same values, same order as the HTTP read endpoint gives.
        http_values = [ln["value"] for ln in node.api.read_lines(name, p, offset=0, format="string")]
        assert values == http_values, (values, http_values)
        consumed += values
    assert Counter(consumed) == Counter(LINES)

    # --offset and --max are honoured.
    p = max(hws, key=hws.get)
    if hws[p] >= 2:
        out = run_ok(node, "consume", name, "--partition", str(p), "--offset", "1", "--max", "1",
                     "--url", url)
        http = node.api.read_lines(name, p, offset=1, max_records=1, format="string")
        assert out.rstrip("\n") == http[0]["value"], (out, http)

    run_ok(node, "topic", "delete", name, "--url", url)
    assert node.api.get_topic(name).status_code == 404
    out = run_ok(node, "topic", "list", "--url", url)
    assert not re.search(rf"\b{re.escape(name)}\b", out), out


def lags(node, group: str) -> dict:
    """(topic, partition) -> (current offset, log end, lag) from the HTTP API."""
    cid = node.api.cluster_id
    r = node.api.s.get(f"{node.url}/v3/clusters/{cid}/consumer-groups/{group}/lags", timeout=10)
    assert r.status_code == 200, r.text
    return {(p["topic_name"], p["partition_id"]): (p["current_offset"], p["log_end_offset"], p["lag"])
            for p in r.json()["data"]}


def table_rows(out: str) -> list[list[str]]:
    """The rows of a printed table (header first), split on runs of spaces."""
    return [line.split() for line in out.splitlines() if line.strip()]


def test_cli_groups_and_topic_describe(sluice):
    from confluent_kafka import Consumer

    node = sluice.embedded()
    url = node.url
    topic, group = "cli-groups", "cli-readers"
    run_ok(node, "topic", "create", topic, "--partitions", "3", "--url", url)
    run_ok(node, "produce", topic, "--url", url,
           input="\n".join(f"r{i}" for i in range(30)) + "\n")
    hws = {p: node.api.offsets(topic, p)["high_watermark"] for p in range(3)}

    def consumer():
        return Consumer({"bootstrap.servers": node.bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000})

    # a member reads everything and commits
    c = consumer()
    c.subscribe([topic])
    seen = 0
    for _ in range(200):
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            seen += 1
        if seen == 30:
            break
    assert seen == 30
    c.commit(asynchronous=False)

    # while it is a member: listed as stable, reset and delete are refused
    out = run_ok(node, "group", "list", "--url", url)
    assert [group, "STABLE", "1"] == table_rows(out)[1][:3], out
    refused = node.cli("group", "reset-offsets", group, "--to-earliest", "--execute", "--url", url)
    assert refused.returncode != 0 and b"inactive" in refused.stderr, refused.stderr
    refused = node.cli("group", "delete", group, "--url", url)
    assert refused.returncode != 0 and b"active members" in refused.stderr, refused.stderr
    c.close()

    out = run_ok(node, "group", "describe", group, "--url", url)
    rows = table_rows(out)
    assert rows[1][:6] == ["TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
                           "CONSUMER-ID"], out
    described = {(r[0], int(r[1])): (int(r[2]), int(r[3]), int(r[4])) for r in rows[2:]}
    assert described == {(topic, p): (hws[p], hws[p], 0) for p in range(3)}, out

    # five more records: the lag shows them
    run_ok(node, "produce", topic, "--partition", "1", "--url", url,
           input="\n".join(f"late{i}" for i in range(5)) + "\n")
    assert lags(node, group)[(topic, 1)] == (hws[1], hws[1] + 5, 5)

    # a dry run changes nothing; --execute commits
    out = run_ok(node, "group", "reset-offsets", group, "--topic", topic, "--to-earliest",
                 "--url", url)
    assert "dry run" in out and lags(node, group)[(topic, 0)][0] == hws[0], out
    run_ok(node, "group", "reset-offsets", group, "--topic", topic, "--to-earliest", "--execute",
           "--url", url)
    assert {k: v[0] for k, v in lags(node, group).items()} == {(topic, p): 0 for p in range(3)}
    run_ok(node, "group", "reset-offsets", group, "--topic", topic, "--partitions", "1",
           "--shift-by", "2", "--execute", "--url", url)
    assert lags(node, group)[(topic, 1)][0] == 2
    run_ok(node, "group", "reset-offsets", group, "--shift-by", "-5", "--execute", "--url", url)
    assert lags(node, group)[(topic, 1)][0] == 0, "clamped at the log start"
    run_ok(node, "group", "reset-offsets", group, "--to-datetime", "2100-01-01T00:00:00Z",
           "--execute", "--url", url)
    assert {k: v[0] for k, v in lags(node, group).items()} == \
        {(topic, 0): hws[0], (topic, 1): hws[1] + 5, (topic, 2): hws[2]}
    run_ok(node, "group", "reset-offsets", group, "--topic", topic, "--to-offset", "1",
           "--execute", "--url", url)
    # a consumer of the group resumes where the reset put it
    c = consumer()
    c.assign([__import__("confluent_kafka").TopicPartition(topic, 1)])
    committed = c.committed([__import__("confluent_kafka").TopicPartition(topic, 1)], timeout=10)
    assert committed[0].offset == 1
    c.close()

    # topic describe: per partition offsets, archive reach and runs
    out = run_ok(node, "topic", "describe", topic, "--url", url)
    table = [r for r in table_rows(out) if r and r[0].isdigit()]
    assert len(table) == 3, out
    for row in table:
        p = int(row[0])
        end = hws[p] + (5 if p == 1 else 0)
        assert (int(row[1]), int(row[2])) == (0, end), out

    # delete: then it is gone
    run_ok(node, "group", "delete", group, "--url", url)
    out = run_ok(node, "group", "list", "--url", url)
    assert group not in out, out
    missing = node.cli("group", "describe", group, "--url", url)
    assert missing.returncode != 0 and b"404" in missing.stderr, missing.stderr
