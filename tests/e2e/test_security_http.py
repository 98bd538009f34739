"""HTTP authentication and authorization, and the CLI that manages them.

One distributed node (etcd + S3) with `--authorizer --super-users User:admin`.
Users are made with `sluice user add`, ACLs with `sluice acl add`, bearer
tokens with `sluice token create` (all written straight to etcd while the
node runs). Covered:

* Basic with a user's password and Bearer with a token act as that user;
  the same request without credentials acts as User:ANONYMOUS;
* missing credentials that would be needed: 401 with `WWW-Authenticate`
  offering Basic and Bearer; wrong password, unknown or revoked token,
  another scheme: 401; an authenticated principal denied: 403; every error
  a JSON body naming who may not do what;
* produce (WRITE), read and archive listing (READ), topic creation (CREATE)
  and topic listing (DESCRIBE) follow the ACLs;
* `sluice acl list/remove` and `sluice token list/revoke` round-trip, and a
  removed grant or revoked token stops working at once;
* the super user needs no ACL;
* `--http-tls`: HTTPS with the node's certificate, plain HTTP refused;
  nodes fetch cache blocks from each other over HTTPS, verifying each
  other against `--tls-ca-file` (without it a peer's certificate is not
  trusted and every block falls back to the object store).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

from harness import b64, unb64
from http_api import Api, assert_error

PASSWORD = "correct horse battery staple"
CHALLENGE = 'Basic realm="sluice", Bearer realm="sluice"'


def cli(node, *args: str) -> str:
    """`sluice <args>` against the node's metadata store; its stdout."""
    store = ["--etcd", node.cluster.etcd, "--cluster", node.cluster.name]
    done = node.cli(*args, *store)
    assert done.returncode == 0, f"sluice {' '.join(args)}: {done.stderr.decode()[-800:]}"
    return done.stdout.decode()


@pytest.fixture(scope="module")
def secured(sluice_bin, etcd, s3, tmp_path_factory):
    from sluice_node import SluiceFactory

    factory = SluiceFactory(sluice_bin, tmp_path_factory.mktemp("http-auth"), etcd, s3,
                            "http-auth")
    try:
        node = factory.distributed(start=False,
                                   extra_args=["--authorizer", "--super-users", "User:admin"])
        node.data_dir.mkdir(parents=True, exist_ok=True)
        password_file = node.data_dir.parent / "password"
        password_file.write_text(PASSWORD + "\n")
        for user in ("admin", "alice", "bob"):
            cli(node, "user", "add", user, "--password-file", str(password_file))
        node.start()
        yield node
    finally:
        factory.close()


def as_user(node, user: str | None = None, password: str = PASSWORD,
            token: str | None = None) -> Api:
    node.api.cluster_id  # asked once, without credentials
    api = node.api.with_new_session()
    if user is not None:
        api.s.auth = (user, password)
    if token is not None:
        api.s.headers["Authorization"] = f"Bearer {token}"
    return api


def record() -> str:
    return json.dumps({"value": {"type": "JSON", "data": {"at": time.time()}}})


def fresh_topic(node, prefix: str) -> str:
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    as_user(node, "admin").create_topic(name, 1)
    return name


def test_credentials_decide_who_a_request_is(secured):
    topic = fresh_topic(secured, "who-")
    cli(secured, "acl", "add", "--principal", "User:alice", "--operation", "WRITE",
        "--topic", topic)
    # alice by password: allowed
    r = as_user(secured, "alice").produce_raw(topic, record())
    assert r.status_code == 200, r.text
    assert r.json()["error_code"] == 200 and r.json()["offset"] == 0
    # nobody: 401 asking for credentials, naming the anonymous principal
    r = as_user(secured).produce_raw(topic, record())
    body = assert_error(r, 401, "anonymous produce")
    assert r.headers["WWW-Authenticate"] == CHALLENGE
    assert "User:ANONYMOUS may not WRITE" in body["message"], body
    # bob is someone, and is denied: 403, no challenge
    r = as_user(secured, "bob").produce_raw(topic, record())
    body = assert_error(r, 403, "bob's produce")
    assert "WWW-Authenticate" not in r.headers
    assert f'User:bob may not WRITE topic "{topic}"' in body["message"], body
    # wrong password, unknown user, malformed and foreign schemes: 401
    for api in (as_user(secured, "alice", "wrong"), as_user(secured, "mallory")):
        r = api.produce_raw(topic, record())
        assert_error(r, 401, "bad Basic credentials")
        assert r.headers["WWW-Authenticate"] == CHALLENGE
    for header in ("Basic !!!", "Basic " + "YWxpY2U=", "Digest x", "Bearer"):
        r = requests.post(f"{secured.api.topics_url(topic)}/records", data=record(),
                          headers={"Authorization": header, "Content-Type": "application/json"},
                          timeout=10)
        assert_error(r, 401, header)
    # only alice's one record landed
    admin = as_user(secured, "admin")
    lines = admin.read_lines(topic, 0, offset=0, max_wait_ms=0)
    assert [line["offset"] for line in lines] == [0], lines


def test_bearer_tokens_act_as_their_principal_until_revoked(secured):
    topic = fresh_topic(secured, "token-")
    cli(secured, "acl", "add", "--principal", "User:bob", "--operation", "READ",
        "--topic", topic)
    token = cli(secured, "token", "create", "--principal", "User:bob",
                "--description", "dashboards").strip()
    assert token.startswith("sluice_"), token
    listed = cli(secured, "token", "list")
    digest = next(line.split()[0] for line in listed.splitlines() if "dashboards" in line)
    assert "User:bob" in listed and token not in listed, "the secret is never listed"
    bob = as_user(secured, token=token)
    assert bob.read(topic, 0, offset=0, max_wait_ms=0).status_code == 200
    r = bob.s.get(f"{secured.url}/v1/topics/{topic}/archive", timeout=10)
    assert r.status_code == 200, r.text
    # bob may read, not write
    assert_error(bob.produce_raw(topic, record()), 403, "bob produces with his token")
    # an unknown token, then the revoked one: 401
    assert_error(as_user(secured, token="sluice_" + "A" * 43).read(topic, 0, max_wait_ms=0),
                 401, "unknown token")
    cli(secured, "token", "revoke", digest)
    assert digest not in cli(secured, "token", "list")
    r = bob.read(topic, 0, offset=0, max_wait_ms=0)
    assert_error(r, 401, "revoked token")
    assert r.headers["WWW-Authenticate"] == CHALLENGE


def test_read_archive_listing_topic_listing_and_creation_follow_the_acls(secured):
    topic = fresh_topic(secured, "acl-")
    hidden = fresh_topic(secured, "hidden-")
    alice = as_user(secured, "alice")
    archive = f"{secured.url}/v1/topics/{topic}/archive"
    # nothing granted yet: read and archive listing refused, nothing listed
    assert_error(alice.read(topic, 0, offset=0, max_wait_ms=0), 403, "read")
    assert_error(alice.s.get(archive, timeout=10), 403, "archive listing")
    assert topic not in alice.list_topics()
    # READ granted: read and archive listing answer, the topic is listed
    # (READ implies DESCRIBE), the other one stays invisible
    cli(secured, "acl", "add", "--principal", "User:alice", "--operation", "READ",
        "--topic", topic)
    assert alice.read(topic, 0, offset=0, max_wait_ms=0).status_code == 200
    assert alice.s.get(archive, timeout=10).status_code == 200
    listed = alice.list_topics()
    assert topic in listed and hidden not in listed, listed
    # creation needs CREATE, here on a prefix
    wanted = f"alice-{uuid.uuid4().hex[:8]}"
    r = alice.create_topic_raw({"topic_name": wanted, "partitions_count": 1})
    assert_error(r, 403, "create without CREATE")
    cli(secured, "acl", "add", "--principal", "User:alice", "--operation", "CREATE",
        "--topic", "alice-", "--prefixed")
    alice.create_topic(wanted, 1)
    r = alice.create_topic_raw({"topic_name": "bob-x", "partitions_count": 1})
    assert_error(r, 403, "create outside the prefix")
    # the ACLs as the CLI lists them, and a removal that takes effect at once
    lines = cli(secured, "acl", "list", "--principal", "User:alice").splitlines()
    assert f"User:alice ALLOW READ TOPIC:LITERAL:{topic} host=*" in lines, lines
    assert "User:alice ALLOW CREATE TOPIC:PREFIXED:alice- host=*" in lines, lines
    cli(secured, "acl", "remove", "--principal", "User:alice", "--operation", "READ",
        "--topic", topic)
    deadline = time.monotonic() + 2
    while alice.read(topic, 0, offset=0, max_wait_ms=0).status_code != 403:
        assert time.monotonic() < deadline, "a removed READ still reads after 2 s"
        time.sleep(0.05)


def test_a_deny_wins_and_the_super_user_needs_no_acl(secured):
    topic = fresh_topic(secured, "deny-")
    cli(secured, "acl", "add", "--principal", "User:*", "--operation", "WRITE",
        "--topic", "deny-", "--prefixed")
    cli(secured, "acl", "add", "--principal", "User:alice", "--operation", "WRITE",
        "--topic", topic, "--deny")
    assert as_user(secured, "bob").produce_raw(topic, record()).status_code == 200
    body = assert_error(as_user(secured, "alice").produce_raw(topic, record()), 403,
                        "a denied alice")
    assert "User:alice may not WRITE" in body["message"]
    admin = as_user(secured, "admin")
    assert admin.produce_raw(topic, record()).status_code == 200
    assert len(admin.read_lines(topic, 0, offset=0, max_wait_ms=0)) == 2
    assert secured.running


def https_node(sluice, tmp_path, certs=None, cluster=None, extra_args=()):
    """A node serving HTTPS (`--http-tls`) with a test CA's certificate,
    ready: (node, its https base URL, the certificates)."""
    from processes import spawn, wait_until
    from tls_certs import make_certs

    certs = certs or make_certs(tmp_path / "pki")
    node = sluice.distributed(cluster, start=False, extra_args=[
        "--http-tls", "--tls-cert-file", str(certs.server_cert),
        "--tls-key-file", str(certs.server_key), *extra_args])
    node.data_dir.mkdir(parents=True, exist_ok=True)
    node.proc = spawn([str(node.binary), *node.args], node.log, env=node.env)
    https = f"https://127.0.0.1:{node.port}"

    def ready() -> bool:
        return requests.get(f"{https}/health/ready", verify=str(certs.ca_cert),
                            timeout=2).status_code == 200

    wait_until(ready, 30, "sluice over https", proc=node.proc, log=node.log)
    return node, https, certs


def test_https_with_the_nodes_certificate(sluice, tmp_path):
    """`--http-tls`: the HTTP API over TLS with the node's certificate; plain
    HTTP to that port is refused and the node keeps serving."""
    node, https, certs = https_node(sluice, tmp_path)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{node.port}/health/ready", timeout=5)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{https}/health/ready", timeout=5)  # not the test CA: untrusted
    cid = requests.get(f"{https}/v3/clusters", verify=str(certs.ca_cert),
                       timeout=10).json()["data"][0]["cluster_id"]
    r = requests.post(f"{https}/v3/clusters/{cid}/topics", verify=str(certs.ca_cert),
                      json={"topic_name": "over-tls", "partitions_count": 1}, timeout=10)
    assert r.status_code == 201, r.text
    r = requests.post(f"{https}/v3/clusters/{cid}/topics/over-tls/records", data=record(),
                      headers={"Content-Type": "application/json"},
                      verify=str(certs.ca_cert), timeout=10)
    assert r.status_code == 200 and r.json()["offset"] == 0, r.text
    assert node.running


def test_the_cli_authenticates_and_trusts_the_ca_it_is_given(secured, tmp_path):
    """`--user`/`--password-file`, `--token-file` and `--ca` on the CLI's
    commands that talk to a node."""
    topic = fresh_topic(secured, "cli-")
    hidden = fresh_topic(secured, "cli-hidden-")
    cli(secured, "acl", "add", "--principal", "User:alice", "--operation", "ALL",
        "--topic", topic)
    password = tmp_path / "alice.pw"
    password.write_text(PASSWORD + "\n")
    url = ["--url", secured.url]

    def run(*args: str, stdin: str | None = None):
        return secured.cli(*args, input=stdin)

    # anonymous: refused, with the node's reason
    done = run("produce", topic, *url, stdin="one\n")
    assert done.returncode != 0 and "User:ANONYMOUS may not WRITE" in done.stderr.decode()
    # as alice by password: produce and consume
    alice = [*url, "--user", "alice", "--password-file", str(password)]
    done = run("produce", topic, *alice, stdin="one\ntwo\n")
    assert done.returncode == 0, done.stderr.decode()
    done = run("consume", topic, "--partition", "0", "--offset", "0", "--max", "2", *alice)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == ["one", "two"]
    # a --user without its password file is a usage error
    assert run("topic", "list", *url, "--user", "alice").returncode != 0
    # by token: alice's topic is listed, the hidden one is not
    token = cli(secured, "token", "create", "--principal", "User:alice").strip()
    token_file = tmp_path / "alice.token"
    token_file.write_text(token + "\n")
    done = run("topic", "list", *url, "--token-file", str(token_file))
    assert done.returncode == 0, done.stderr.decode()
    listed = done.stdout.decode().split()
    assert topic in listed and hidden not in listed, listed


def test_the_cli_talks_https_with_its_ca(sluice, tmp_path):
    node, https, certs = https_node(sluice, tmp_path)
    done = node.cli("topic", "create", "tls-cli", "--url", https, "--ca", str(certs.ca_cert))
    assert done.returncode == 0, done.stderr.decode()
    done = node.cli("topic", "list", "--url", https, "--ca", str(certs.ca_cert))
    assert done.stdout.decode().split() == ["tls-cli"], done.stderr.decode()
    # without the CA the certificate is not trusted
    done = node.cli("topic", "list", "--url", https)
    assert done.returncode != 0


def peer_fetches(node, https, certs, result: str) -> float:
    import re
    text = requests.get(f"{https}/metrics", verify=str(certs.ca_cert), timeout=10).text
    m = re.search(rf'^sluice_peer_fetches_total{{result="{result}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.parametrize("trusted", [True, False], ids=["with-ca", "without-ca"])
def test_nodes_fetch_blocks_from_each_other_over_https(sluice, tmp_path, trusted):
    """Two HTTPS nodes: records produced through one are read through the
    other, whose cache misses ask their owner over HTTPS. With the CA the
    peer is trusted and serves blocks; without it every block falls back to
    the store. Either way the reads are byte-equal."""
    from tls_certs import make_certs

    certs = make_certs(tmp_path / "pki")
    cluster = sluice.new_cluster()
    args = ["--cache-block-bytes", "65536", "--cache-disk-bytes", "0",
            "--roles", "ingest,fetch", "--peer-fetch-timeout", "10s"]
    if trusted:
        args += ["--tls-ca-file", str(certs.ca_cert)]
    writer, writer_url, _ = https_node(sluice, tmp_path, certs, cluster, args)
    reader, reader_url, _ = https_node(sluice, tmp_path, certs, cluster, args)
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides `verify`
    session.verify = str(certs.ca_cert)
    to_writer, to_reader = Api(writer_url, session), Api(reader_url, session)
    to_writer.create_topic("over-https", 1)
    values = [uuid.uuid4().bytes * 512 for _ in range(128)]  # 8 KiB each, 1 MiB
    for i in range(0, len(values), 16):
        body = {"entries": [{"id": str(j), "partition_id": 0,
                             "value": {"type": "BINARY", "data": b64(v)}}
                            for j, v in enumerate(values[i:i + 16])]}
        assert to_writer.produce_batch_raw("over-https", body).status_code == 200
    to_reader.wait_high_watermark("over-https", 0, len(values))
    read = []
    while len(read) < len(values):
        lines = to_reader.read_lines("over-https", 0, offset=len(read), format="binary")
        assert lines, f"nothing at {len(read)}"
        read += [unb64(line["value"]) for line in lines]
    assert read == values
    hits = peer_fetches(reader, reader_url, certs, "hit")
    fallbacks = peer_fetches(reader, reader_url, certs, "fallback")
    print(f"{'with' if trusted else 'without'} the CA: {hits:.0f} blocks from the peer, "
          f"{fallbacks:.0f} fallbacks")
    if trusted:
        assert hits > 0 and fallbacks == 0, (hits, fallbacks)
    else:
        assert hits == 0 and fallbacks > 0, (hits, fallbacks)
