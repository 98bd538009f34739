"""Fixtures for the sluice end-to-end suite.

Session scope (started once, shared by every test):
  sluice_bin   Path of the binary: $SLUICE_BIN or <repo>/target/debug/sluice.
  etcd         EtcdServer      .endpoint ("http://127.0.0.1:PORT")
  s3           MotoS3          .endpoint, .bucket, .client (boto3), .keys(prefix)

Function scope:
  s3_proxy     FaultProxy in front of moto: .endpoint, .stop(), .start()
  sluice       SluiceFactory:  .distributed(cluster=None, **kw) -> Sluice
                               .embedded(**kw) -> Sluice
                               .new_cluster(s3_endpoint=None) -> ClusterSpec
Module scope:
  module_node  one distributed Sluice shared by the tests of a module.

Every distributed node lives in its own `--cluster` (etcd namespace) and its
own store prefix unless a test passes the same ClusterSpec to several nodes,
so the session-wide etcd and bucket never leak state between tests.

On failure, the tail of every involved process log is attached to the report.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import REPO_ROOT, EtcdServer, FaultProxy, MotoS3, Sluice, SluiceFactory, tail


@pytest.fixture(scope="session")
def sluice_bin() -> Path:
    path = Path(os.environ.get("SLUICE_BIN") or REPO_ROOT / "target" / "debug" / "sluice")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"sluice binary not found at {path}: run `cargo build --workspace --bins` "
                    f"or set SLUICE_BIN", pytrace=False)
    return path


@pytest.fixture(scope="session")
def e2e_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sluice-e2e")


@pytest.fixture(scope="session")
def etcd(e2e_workdir):
    server = EtcdServer(e2e_workdir)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def s3(e2e_workdir):
    server = MotoS3(e2e_workdir)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def s3_proxy(s3):
    proxy = FaultProxy(s3.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def sluice(request, sluice_bin, tmp_path, etcd, s3):
    factory = SluiceFactory(sluice_bin, tmp_path, etcd, s3, request.node.name)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def module_factory(request, sluice_bin, tmp_path_factory, etcd, s3):
    factory = SluiceFactory(sluice_bin, tmp_path_factory.mktemp("module"), etcd, s3,
                            request.module.__name__)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def module_node(module_factory) -> Sluice:
    return module_factory.distributed()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    values = list(getattr(item, "funcargs", {}).values())
    nodes: list[Sluice] = []
    for value in values:
        if isinstance(value, SluiceFactory):
            nodes += value.nodes
        elif isinstance(value, Sluice):
            nodes.append(value)
    seen = set()
    for node in nodes:
        if id(node) not in seen:
            seen.add(id(node))
            rep.sections.append((f"sluice log {node.name} ({node.log})", node.log_tail()))
    for value in values:
        if isinstance(value, EtcdServer):
            rep.sections.append((f"etcd log ({value.log})", tail(value.log, 15)))
