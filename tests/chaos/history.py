"""The operation log of a chaos run: one JSON object per line, appended as
each operation completes (so nothing is held in memory but counters)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path


class History:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._f = open(self.path, "w", buffering=1)
        self._lock = threading.Lock()
        self.counts: Counter = Counter()

    def record(self, op: dict) -> None:
        op.setdefault("end", op.get("start"))
        line = json.dumps(op, separators=(",", ":"), default=str)
        with self._lock:
            if self._f.closed:
                return
            self._f.write(line + "\n")
            self.counts[(op.get("kind"), op.get("outcome"))] += 1

    def count(self, kind: str, outcome: str | None = None) -> int:
        with self._lock:
            return sum(n for (k, o), n in self.counts.items()
                       if k == kind and (outcome is None or o == outcome))

    def close(self) -> None:
        with self._lock:
            self._f.close()


def now() -> float:
    return time.time()
