"""What the reproductions (repro_*.py) share: their command line (--binary,
--out, their own options), an etcd and an S3 server in a work directory,
sluice nodes of one cluster, and a topic every node sees."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from processes import REPO_ROOT, EtcdServer, MotoS3
from sluice_node import SluiceFactory


def parse_args(doc: str, prefix: str, **options: tuple[type, object]) -> argparse.Namespace:
    """--binary and --out, plus ``options`` (``name=(type, default)``,
    ``stop_seconds`` becomes ``--stop-seconds``). ``out`` is created (a
    fresh directory named after ``prefix`` when not given)."""
    ap = argparse.ArgumentParser(description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", type=Path,
                    default=Path(os.environ.get("SLUICE_BIN") or REPO_ROOT / "target/debug/sluice"))
    ap.add_argument("--out", type=Path, default=None)
    for name, (kind, default) in options.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)
    a = ap.parse_args()
    a.out = (a.out or Path(tempfile.mkdtemp(prefix=f"sluice-{prefix}-"))).resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    return a


@contextmanager
def servers(a: argparse.Namespace, cluster: str):
    """etcd, the S3 server and a SluiceFactory under ``a.out``, all closed
    on the way out."""
    etcd, s3 = EtcdServer(a.out), MotoS3(a.out)
    factory = None
    try:
        etcd.start()
        s3.start()
        factory = SluiceFactory(a.binary, a.out, etcd, s3, cluster)
        yield factory, s3
    finally:
        if factory:
            factory.close()
        s3.close()
        etcd.close()


def nodes(factory: SluiceFactory, count: int, flush_interval: str, **kw) -> list:
    """``count`` distributed nodes of one new cluster, node1..nodeN."""
    spec = factory.new_cluster()
    return [factory.distributed(spec, node_id=i, name=f"node{i}", flush_interval=flush_interval,
                                **kw) for i in range(1, count + 1)]


def topic_everywhere(nodes: list, topic: str, partitions: int = 1, timeout: float = 30) -> None:
    """Create ``topic`` through the first node; wait until every node sees it."""
    nodes[0].api.create_topic(topic, partitions)
    deadline = time.monotonic() + timeout
    for node in nodes[1:]:
        while node.api.get_topic(topic).status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit(f"{node.name} does not see topic {topic}")
            time.sleep(0.1)
