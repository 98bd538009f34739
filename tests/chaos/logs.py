#!/usr/bin/env python3
"""Node log lines of a chaos run around a moment, merged in time order.

    python3 tests/chaos/logs.py OUT --at 1795679121.06 [--before 5] [--after 5]
                                [--grep REGEX] [--level WARN]

``--at`` takes the epoch seconds of history.jsonl (or HH:MM:SS[.fff], UTC,
the node logs' own clock). Lines without a timestamp (panics, the harness's
start banner) are kept with the previous line's time.
"""

from __future__ import annotations

import argparse
import calendar
import re
import sys
import time
from pathlib import Path

TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z\s")
LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]


def parse_ts(line: str) -> float | None:
    m = TS.match(line)
    if not m:
        return None
    t = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    return t + (float(m.group(2)) if m.group(2) else 0.0)


def node_logs(out: Path) -> list[Path]:
    return sorted(out.glob("node*/node*.log"))


def lines_between(out: Path, t0: float, t1: float, pattern: str | None = None,
                  level: str | None = None, limit: int = 400) -> list[str]:
    rx = re.compile(pattern) if pattern else None
    min_level = LEVELS.index(level) if level else 0
    found: list[tuple[float, str, str]] = []
    for path in node_logs(out):
        last = None
        with open(path, errors="replace") as f:
            for line in f:
                t = parse_ts(line)
                if t is None:
                    t = last
                else:
                    last = t
                if t is None or t < t0 or t > t1:
                    continue
                if rx and not rx.search(line):
                    continue
                if min_level:
                    lv = next((x for x in LEVELS if f" {x} " in line[:60]), None)
                    if lv is not None and LEVELS.index(lv) < min_level:
                        continue
                found.append((t, path.stem, line.rstrip()))
    found.sort(key=lambda x: x[0])
    return [f"{name}: {line}" for _, name, line in found[:limit]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--at", required=True)
    ap.add_argument("--before", type=float, default=5)
    ap.add_argument("--after", type=float, default=5)
    ap.add_argument("--grep")
    ap.add_argument("--level", choices=LEVELS)
    ap.add_argument("--limit", type=int, default=400)
    a = ap.parse_args()
    if ":" in a.at:
        first = next((parse_ts(l) for p in node_logs(a.out) for l in open(p, errors="replace")
                      if parse_ts(l)), None)
        if first is None:
            print("no timestamps in the node logs", file=sys.stderr)
            return 2
        day = time.strftime("%Y-%m-%d", time.gmtime(first))
        hms, _, frac = a.at.partition(".")
        at = calendar.timegm(time.strptime(f"{day}T{hms}", "%Y-%m-%dT%H:%M:%S"))
        at += float("0." + frac) if frac else 0.0
    else:
        at = float(a.at)
    for line in lines_between(a.out, at - a.before, at + a.after, a.grep, a.level, a.limit):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
