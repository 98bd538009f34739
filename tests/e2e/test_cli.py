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
