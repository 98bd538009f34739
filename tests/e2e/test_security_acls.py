"""ACLs (Kafka's model) enforced on Kafka and HTTP requests, with unmodified
clients.

One distributed node (etcd + S3) serves the module on PLAINTEXT (principal
`User:ANONYMOUS`) and SASL_PLAINTEXT (`User:<name>`), started with
`--authorizer --super-users User:admin`. Its users are created with
`sluice user add`; the super user `admin` grants and revokes through
confluent-kafka's AdminClient (CreateAcls / DescribeAcls / DeleteAcls) over
SASL, and waits until the node's DescribeAcls lists a grant before the test
relies on it. Every test makes its own topics and groups, so the grants of
one never cover another's resources. Covered:

* kcat, confluent-kafka, kafka-python and kafkajs each:
  - a principal with READ but no WRITE on a topic produces: the Produce
    answer TOPIC_AUTHORIZATION_FAILED (29) is the client's error (kcat's
    "Topic authorization failed", librdkafka's delivery error,
    TopicAuthorizationFailedError, KafkaJSProtocolError of that type), and
    nothing lands;
  - a principal with READ on the topic and DESCRIBE (not READ) on a group
    consumes in that group: JoinGroup answers GROUP_AUTHORIZATION_FAILED
    (30) and the client reports it (kcat -G, a subscribed Consumer,
    KafkaConsumer with group_id, a kafkajs consumer);
  - listing the topics (Metadata for all topics; kcat -L) shows a topic to a
    principal with DESCRIBE on it but not one it has no DESCRIBE on, and
    nothing at all to a principal without any ACL; asked for explicitly
    (kcat -L -t, librdkafka) the undescribable topic answers 29;
* without any ACL on the group, FindCoordinator (DESCRIBE group) already
  answers 30 to librdkafka;
* positive control: a principal granted WRITE + READ on a topic and READ on
  a group produces, consumes in the group and commits (confluent-kafka and
  kafkajs);
* HTTP without credentials (`User:ANONYMOUS`; Basic and Bearer are not
  tested here): produce, read and the archive listing of a topic are refused
  with a 401 asking for credentials (WWW-Authenticate: Basic and Bearer) and
  a JSON message naming the principal, the operation and the topic; after
  `User:ANONYMOUS` is granted READ on it, read, offsets and the archive
  listing answer 200 while produce (records and records-batch) and delete
  stay refused; the topic list holds only the topics ANONYMOUS may DESCRIBE;
  a refusal answered before the request body is read leaves the keep-alive
  connection usable (or says `Connection: close`);
* a PREFIXED grant covers exactly its prefix (`team-a.` covers `team-a.x`,
  not `team-ab` nor `team-b.x`); a LITERAL `*` grant covers every topic;
* a DENY beats an ALLOW: ALLOW WRITE on `*` and DENY WRITE on one topic
  refuses that topic only;
* the super user does everything without any ACL naming it; a principal
  without ALTER on the cluster cannot CreateAcls, DeleteAcls nor
  DescribeAcls (CLUSTER_AUTHORIZATION_FAILED, 31; DescribeAcls' refusal is
  read with kafka-python: librdkafka drops its error code), neither can
  ANONYMOUS; one granted ALTER on the cluster can do all three (ALTER
  implies DESCRIBE);
* admin requests need their ACL: CreateTopics (CREATE), DeleteTopics
  (DELETE), CreatePartitions (ALTER), DescribeConfigs (DESCRIBE_CONFIGS)
  answer 29 without it, and CREATE + DELETE on a prefix allow exactly the
  topics under it; DescribeCluster (raw: librdkafka answers it from
  Metadata) needs DESCRIBE on the cluster (31); InitProducerId needs
  IDEMPOTENT_WRITE on the cluster or WRITE on any topic (31 without);
* auto-creation needs CREATE: a producer's Metadata for a missing topic it
  may DESCRIBE but not CREATE creates nothing and answers 29, as Kafka's
  does; with CREATE on the prefix the first produce creates the topic;
* DeleteAcls removes a grant (it answers the deleted binding) and the very
  next produce of that principal is refused;
* three nodes of one cluster (a test of its own): an ACL created through
  node 1 takes effect on every node within 1 s of CreateAcls returning, and
  a DeleteAcls likewise (measured with HTTP reads as ANONYMOUS; the times
  are printed and named in the assertion messages);
* a node without `--authorizer` refuses nothing (anonymous Kafka and HTTP
  produce and read).
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                   AclPermissionType, AdminClient, ConfigResource, NewPartitions,
                                   NewTopic, ResourcePatternType, ResourceType)
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                         KafkaAdminClient, ResourcePatternFilter)
from kafka.admin import ResourceType as KpResourceType
from kafka.errors import (ClusterAuthorizationFailedError, GroupAuthorizationFailedError,
                          NoError, TopicAuthorizationFailedError)

import kafka_wire as wire
from harness import HOST, Sluice, wait_until
from http_api import Api, assert_error
from test_kafkajs import node_bin  # noqa: F401 - node_bin is a fixture
from test_security_sasl import (CLIENTS, User, add_user, assert_not_delivered, b64, ck_produce,
                                ck_try_produce, kcat_run, keyed_records, plain_login, run_js,
                                run_js_ok, topic_name, unb64)

AUTHORIZER_ARGS = ["--authorizer", "--super-users", "User:admin"]
LISTENERS = {"PLAINTEXT": None, "SASL_PLAINTEXT": None}
# every principal logs in with PLAIN over SASL_PLAINTEXT (its SCRAM-SHA-256
# credential checks the password); the admin with SCRAM-SHA-256 itself
ADMIN = User("admin", "SCRAM-SHA-256", "admin-secret")
USERS = {name: User(name, "SCRAM-SHA-256", f"{name}-secret") for name in (
    "reader",    # READ on the topics of the produce and group tests, DESCRIBE on groups
    "seer",      # DESCRIBE on the metadata tests' topics
    "nobody",    # never named by any ACL
    "writer",    # the positive control
    "prefixer",  # WRITE on the PREFIXED `team-a.`
    "star",      # WRITE on the LITERAL `*`
    "mixed",     # ALLOW WRITE on `*`, DENY WRITE on one topic
    "temp",      # granted, then the grant deleted
    "aclmgr",    # ALTER on the cluster
    "maker",     # CREATE and DELETE on the PREFIXED `made-by-maker.`
    "idem",      # IDEMPOTENT_WRITE on the cluster
    "onewriter",  # WRITE on one topic (which also allows InitProducerId)
    "autocreator",  # WRITE on the PREFIXED `auto-`, CREATE on `auto-made.`
    "hosted",    # WRITE on one topic from one host, then another
)}
# Kafka's CLUSTER resource (code 4) is ResourceType.BROKER in confluent-kafka
CLUSTER_TYPE, CLUSTER = ResourceType.BROKER, "kafka-cluster"
TIMEOUT = 5  # client-side timeouts: a refusal is answered at once


@dataclass
class AclNode:
    """The module's node, its scratch dir and the super user's AdminClient."""
    node: Sluice
    workdir: Path
    admin: AdminClient

    @property
    def sasl_addr(self) -> str:
        return f"{HOST}:{self.node.listener_ports['SASL_PLAINTEXT']}"


# ---------------------------------------------------------------------------
# client configurations

def login(user: User) -> str:
    return "SCRAM-SHA-256" if user.name == ADMIN.name else "PLAIN"


def ck_conf(addr: str, user: User | None, **extra) -> dict:
    """librdkafka: SASL_PLAINTEXT as `user`, or PLAINTEXT (ANONYMOUS) when None."""
    if user is None:
        return {"bootstrap.servers": addr, **extra}
    return {"bootstrap.servers": addr, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": login(user), "sasl.username": user.name,
            "sasl.password": user.password, **extra}


def kcat_base(an: AclNode, user: User) -> list[str]:
    return ["-b", an.sasl_addr, "-X", "security.protocol=SASL_PLAINTEXT",
            "-X", f"sasl.mechanisms={login(user)}", "-X", f"sasl.username={user.name}",
            "-X", f"sasl.password={user.password}"]


def kp_conf(an: AclNode, user: User) -> dict:
    return dict(bootstrap_servers=an.sasl_addr, security_protocol="SASL_PLAINTEXT",
                sasl_mechanism=login(user), sasl_plain_username=user.name,
                sasl_plain_password=user.password, request_timeout_ms=TIMEOUT * 1000)


def kjs_conf(an: AclNode, user: User) -> dict:
    return {"brokers": [an.sasl_addr],
            "sasl": {"mechanism": login(user).lower(), "username": user.name,
                     "password": user.password}}


# ---------------------------------------------------------------------------
# ACLs and topics, as the super user

def binding(resource_type, name: str, principal: str, operation,
            permission=AclPermissionType.ALLOW,
            pattern=ResourcePatternType.LITERAL) -> AclBinding:
    return AclBinding(resource_type, name, pattern, principal, "*", operation, permission)


def exact_filter(b: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                            b.operation, b.permission_type)


def described(admin: AdminClient, b: AclBinding) -> list:
    return admin.describe_acls(exact_filter(b)).result(timeout=TIMEOUT)


def create_acls(admin: AdminClient, bindings: list[AclBinding]) -> None:
    """CreateAcls; every binding stored."""
    for b, future in admin.create_acls(bindings).items():
        assert future.result(timeout=TIMEOUT) is None, b


def grant(an: AclNode, *bindings: AclBinding) -> None:
    """Create the bindings and wait until the node's view holds them."""
    create_acls(an.admin, list(bindings))
    for b in bindings:
        wait_until(lambda: described(an.admin, b) == [b], 5, f"{b} in DescribeAcls",
                   interval=0.02, proc=an.node.proc, log=an.node.log)


def revoke(admin: AdminClient, b: AclBinding) -> list:
    """DeleteAcls with the binding's exact filter; the bindings it deleted."""
    (future,) = admin.delete_acls([exact_filter(b)]).values()
    return future.result(timeout=TIMEOUT)


def create_topics(an: AclNode, *names: str, partitions: int = 1) -> None:
    futures = an.admin.create_topics([NewTopic(n, partitions) for n in names],
                                     operation_timeout=10)
    for name, future in futures.items():
        assert future.result(timeout=15) is None, name


def new_topic(an: AclNode, prefix: str, records: list[tuple] = ()) -> str:
    """A fresh topic created by the admin, holding `records` produced by it."""
    topic = topic_name(prefix)
    create_topics(an, topic)
    if records:
        assert ck_produce(ck_conf(an.sasl_addr, ADMIN), topic, list(records)) == \
            list(range(len(records)))
    return topic


def high_watermark(an: AclNode, topic: str, partition: int = 0) -> int:
    """As the super user, over Kafka (HTTP would be ANONYMOUS)."""
    consumer = Consumer(ck_conf(an.sasl_addr, ADMIN, **{"group.id": "watermarks"}))
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                              timeout=TIMEOUT)[1]
    finally:
        consumer.close()


def topic_read(topic: str, user: str) -> AclBinding:
    return binding(ResourceType.TOPIC, topic, f"User:{user}", AclOperation.READ)


# ---------------------------------------------------------------------------
# each client: produce, consume in a group, list topics

def assert_describable(an: AclNode, user: User, topic: str) -> None:
    """Metadata for `topic` answers its partition to `user` (librdkafka)."""
    meta = AdminClient(ck_conf(an.sasl_addr, user)).list_topics(topic=topic, timeout=TIMEOUT)
    assert meta.topics[topic].error is None and list(meta.topics[topic].partitions) == [0], \
        f"{user.name} cannot describe {topic}: {meta.topics[topic].error}"


def ck_refused_delivery(conf: dict, topic: str) -> KafkaError:
    """Produce one record that must be refused; its delivery error."""
    delivered, errors = ck_try_produce(conf, topic, timeout=TIMEOUT + 3)
    assert_not_delivered(delivered, errors)
    assert delivered, f"no delivery report within {TIMEOUT + 3}s; client errors {errors}"
    return delivered[0]


def ck_group_error(conf: dict, topic: str, group: str) -> KafkaError | None:
    """Subscribe in `group`; the first consumer error within TIMEOUT s (None if none)."""
    consumer = Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is not None:
                return msg.error()
            assert msg is None, f"consumed {msg.topic()}/{msg.partition()}@{msg.offset()}"
        return None
    finally:
        consumer.close()


def ck_group_consume(conf: dict, topic: str, group: str, count: int) -> tuple[list, int]:
    """Subscribe in `group`, read `count` records (key, value, offset) of
    partition 0 and commit them; (the records, the committed offset)."""
    consumer = Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    got: list = []
    deadline = time.monotonic() + 20
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append((msg.key(), msg.value(), msg.offset()))
        assert len(got) == count, f"read {got} of {count} records"
        consumer.commit(asynchronous=False)
        (committed,) = consumer.committed([TopicPartition(topic, 0)], timeout=TIMEOUT)
        assert committed.error is None, committed
        return got, committed.offset
    finally:
        consumer.close()


def kcat_topics(an: AclNode, user: User, topic: str | None = None) -> dict[str, str]:
    """`kcat -L` (for `topic` only when given): {topic: the rest of its line}."""
    args = [*kcat_base(an, user), "-L", "-m", str(TIMEOUT)]
    if topic is not None:
        args += ["-t", topic]
    done = kcat_run(args, timeout=30)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return {m.group(1): m.group(2) for m in re.finditer(r'^\s*topic "([^"]+)" (.*)$', out, re.M)}


def listed_topics(an: AclNode, client: str, user: User, node_exe: str) -> set[str]:
    """The topics `user` sees listing all topics (Metadata with no topic named)."""
    if client == "kcat":
        return set(kcat_topics(an, user))
    if client == "confluent-kafka":
        return set(AdminClient(ck_conf(an.sasl_addr, user)).list_topics(timeout=TIMEOUT).topics)
    if client == "kafka-python":
        consumer = KafkaConsumer(**kp_conf(an, user))
        try:
            return set(consumer.topics())
        finally:
            consumer.close()
    return set(run_js_ok(node_exe, {**kjs_conf(an, user), "command": "listTopics"})["topics"])


# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def acls(module_factory, tmp_path_factory) -> AclNode:
    workdir = tmp_path_factory.mktemp("acls")
    node = module_factory.distributed(listeners=LISTENERS, extra_args=AUTHORIZER_ARGS)
    for user in (ADMIN, *USERS.values()):
        add_user(node, user, workdir)
    admin = AdminClient(ck_conf(f"{HOST}:{node.listener_ports['SASL_PLAINTEXT']}", ADMIN))
    return AclNode(node, workdir, admin)


@pytest.mark.parametrize("client", CLIENTS)
def test_produce_without_write_is_topic_authorization_failed(acls, node_bin, client):  # noqa: F811
    reader = USERS["reader"]
    topic = new_topic(acls, f"no-write-{client}")
    # READ implies DESCRIBE: Metadata answers, the Produce itself is refused
    grant(acls, topic_read(topic, "reader"))
    assert_describable(acls, reader, topic)
    if client == "kcat":
        done = kcat_run([*kcat_base(acls, reader), "-t", topic, "-p", "0", "-P",
                         "-X", f"message.timeout.ms={TIMEOUT * 1000}"],
                        input=b"must-not-land\n", timeout=30)
        stderr = done.stderr.decode()
        assert done.returncode != 0, stderr[-2000:]
        assert "Topic authorization failed" in stderr, stderr[-2000:]
    elif client == "confluent-kafka":
        err = ck_refused_delivery(ck_conf(acls.sasl_addr, reader), topic)
        assert err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    elif client == "kafka-python":
        producer = KafkaProducer(**kp_conf(acls, reader), enable_idempotence=False,
                                 max_block_ms=TIMEOUT * 1000)
        try:
            future = producer.send(topic, key=b"k", value=b"must-not-land", partition=0)
            with pytest.raises(TopicAuthorizationFailedError) as refused:
                future.get(timeout=TIMEOUT + 5)
        finally:
            producer.close(timeout=TIMEOUT)
        assert topic in str(refused.value), refused.value
    else:
        code, result = run_js(node_bin, {
            **kjs_conf(acls, reader), "command": "produce", "topic": topic, "codec": "none",
            "acks": -1, "partition": 0,
            "records": [{"key": b64(b"k"), "value": b64(b"must-not-land"), "headers": []}]})
        assert code != 0, result
        assert "TOPIC_AUTHORIZATION_FAILED" in result["types"], \
            {k: v for k, v in result.items() if k != "error"} | {"error": result["error"][:1500]}
    assert high_watermark(acls, topic) == 0


@pytest.mark.parametrize("client", CLIENTS)
def test_consume_without_read_on_the_group_is_group_authorization_failed(  # noqa: F811
        acls, node_bin, client):
    reader = USERS["reader"]
    topic = new_topic(acls, f"no-group-{client}", keyed_records(client, 2))
    group = topic_name(f"group-{client}")
    # DESCRIBE on the group: FindCoordinator answers, JoinGroup (READ) refuses
    grant(acls, topic_read(topic, "reader"),
          binding(ResourceType.GROUP, group, "User:reader", AclOperation.DESCRIBE))
    if client == "kcat":
        done = kcat_run([*kcat_base(acls, reader), "-G", group, topic, "-o", "beginning", "-e",
                         "-X", "session.timeout.ms=6000"], timeout=30)
        stderr = done.stderr.decode()
        assert done.returncode != 0, stderr[-2000:]
        assert "Group authorization failed" in stderr, stderr[-2000:]
        assert done.stdout == b"", done.stdout[:500]
    elif client == "confluent-kafka":
        err = ck_group_error(ck_conf(acls.sasl_addr, reader), topic, group)
        assert err is not None, f"no consumer error within {TIMEOUT}s"
        assert err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err
    elif client == "kafka-python":
        consumer = KafkaConsumer(topic, **kp_conf(acls, reader), group_id=group,
                                 auto_offset_reset="earliest", session_timeout_ms=6000)
        try:
            with pytest.raises(GroupAuthorizationFailedError) as refused:
                got = consumer.poll(timeout_ms=TIMEOUT * 1000)
                assert not got, f"consumed {got}"
                pytest.fail(f"no error within {TIMEOUT}s")
        finally:
            consumer.close()
        assert group in str(refused.value), refused.value
    else:
        code, result = run_js(node_bin, {
            **kjs_conf(acls, reader), "command": "consume", "topic": topic, "groupId": group,
            "count": 2, "fromBeginning": True, "timeoutMs": TIMEOUT * 1000})
        assert code != 0, result
        assert "GROUP_AUTHORIZATION_FAILED" in result["types"], \
            {k: v for k, v in result.items() if k != "error"} | {"error": result["error"][:1500]}


def test_find_coordinator_without_any_group_acl_is_group_authorization_failed(acls):
    topic = new_topic(acls, "no-group-acl", keyed_records("no group acl", 1))
    grant(acls, topic_read(topic, "reader"))
    err = ck_group_error(ck_conf(acls.sasl_addr, USERS["reader"]), topic,
                         topic_name("never-granted"))
    assert err is not None, f"no consumer error within {TIMEOUT}s"
    assert err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err


@pytest.mark.parametrize("client", CLIENTS)
def test_metadata_lists_only_describable_topics(acls, node_bin, client):  # noqa: F811
    visible = new_topic(acls, f"visible-{client}")
    hidden = new_topic(acls, f"hidden-{client}")
    grant(acls, binding(ResourceType.TOPIC, visible, "User:seer", AclOperation.DESCRIBE))
    seen = listed_topics(acls, client, USERS["seer"], node_bin)
    assert visible in seen and hidden not in seen, sorted(seen)
    # no ACL names `nobody` (nor User:*): it sees no topic at all
    assert listed_topics(acls, client, USERS["nobody"], node_bin) == set()
    # asked for by name, a topic without DESCRIBE answers TOPIC_AUTHORIZATION_FAILED
    if client == "kcat":
        assert "Topic authorization failed" in kcat_topics(acls, USERS["seer"], hidden)[hidden]
        assert "Topic authorization failed" not in \
            kcat_topics(acls, USERS["seer"], visible)[visible]
    elif client == "confluent-kafka":
        meta = AdminClient(ck_conf(acls.sasl_addr, USERS["seer"])).list_topics(
            topic=hidden, timeout=TIMEOUT)
        assert meta.topics[hidden].error is not None and \
            meta.topics[hidden].error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, \
            meta.topics[hidden].error


def test_granted_principal_produces_and_consumes(acls, node_bin):  # noqa: F811
    writer = USERS["writer"]
    topic = new_topic(acls, "granted")
    group = topic_name("granted-group")
    grant(acls,
          binding(ResourceType.TOPIC, topic, "User:writer", AclOperation.WRITE),
          topic_read(topic, "writer"),
          binding(ResourceType.GROUP, group, "User:writer", AclOperation.READ))
    conf = ck_conf(acls.sasl_addr, writer)
    records = keyed_records("granted")
    assert ck_produce(conf, topic, records) == list(range(5))

    assert ck_group_consume(conf, topic, group, 5) == \
        ([(k, v, i) for i, (k, v) in enumerate(records)], 5)

    # kafkajs: the same principal, its own group (READ on it too)
    kjs_group = topic_name("granted-kjs")
    grant(acls, binding(ResourceType.GROUP, kjs_group, "User:writer", AclOperation.READ))
    base = kjs_conf(acls, writer)
    res = run_js_ok(node_bin, {**base, "command": "produce", "topic": topic, "codec": "none",
                               "acks": -1, "partition": 0,
                               "records": [{"key": b64(b"kjs"), "value": b64(b"from kafkajs"),
                                            "headers": []}]})
    assert [(r["errorCode"], r["baseOffset"]) for r in res["results"]] == [(0, "5")]
    got_js = run_js_ok(node_bin, {**base, "command": "consume", "topic": topic,
                                  "groupId": kjs_group, "count": 6, "fromBeginning": True,
                                  "timeoutMs": 20000})
    assert [(unb64(r["key"]), unb64(r["value"]), r["offset"]) for r in got_js["records"]] == \
        [(k, v, i) for i, (k, v) in enumerate([*records, (b"kjs", b"from kafkajs")])]
    assert got_js["committed"] == [{"partition": 0, "offset": 6}]


# ---------------------------------------------------------------------------
# HTTP, as User:ANONYMOUS

# a request without credentials that the ACLs refuse is asked for them (an
# authenticated principal's refusal would be a 403)
REFUSED = 401


def assert_forbidden(resp, operation: str, topic: str, what: str) -> None:
    """The refusal of an anonymous request: 401, a challenge for Basic and
    Bearer credentials, a JSON reason naming principal, operation and topic."""
    body = assert_error(resp, REFUSED, what)
    challenge = resp.headers.get("WWW-Authenticate", "")
    assert "Basic" in challenge and "Bearer" in challenge, \
        f"{what}: WWW-Authenticate {challenge!r}"
    message = body["message"]
    assert "User:ANONYMOUS" in message and operation in message and topic in message, \
        f"{what}: {message!r}"


def refused_post(api: Api, post) -> requests.Response:
    """`post(api)` on a connection of its own: after a refusal that did not read
    the request body the node may close the connection (see
    test_http_refusal_keeps_the_connection_usable), which must not fail the
    next request of the checks here."""
    once = api.with_new_session()
    try:
        return post(once)
    finally:
        once.s.close()


def test_http_as_anonymous(acls):
    node, api = acls.node, acls.node.api
    topic = new_topic(acls, "http-granted", keyed_records("http", 2))
    other = new_topic(acls, "http-other", keyed_records("http other", 1))
    record = {"partition_id": 0, "value": {"type": "STRING", "data": "must-not-land"}}
    archive = f"{node.url}/v1/topics/{topic}/archive"

    assert_forbidden(refused_post(api, lambda a: a.produce_one(topic, record)), "WRITE", topic,
                     "produce")
    assert_forbidden(api.read(topic, 0, offset=0, timeout_ms=0), "READ", topic, "read")
    assert_forbidden(api.s.get(archive, timeout=10), "READ", topic, "archive")
    assert_forbidden(api.offsets_raw(topic, 0), "DESCRIBE", topic, "offsets")
    assert_forbidden(api.get_topic(topic), "DESCRIBE", topic, "get topic")
    listed = api.list_topics()
    assert topic not in listed and other not in listed, listed

    grant(acls, topic_read(topic, "ANONYMOUS"))
    lines = api.read_lines(topic, 0, offset=0, timeout_ms=0, format="string")
    assert [(r["offset"], r["key"], r["value"]) for r in lines] == \
        [(i, k.decode(), v.decode()) for i, (k, v) in enumerate(keyed_records("http", 2))]
    resp = api.s.get(archive, timeout=10)
    assert resp.status_code == 200, resp.text[:500]
    assert [p["partition"] for p in resp.json()["partitions"]] == [0], resp.json()
    assert api.offsets(topic, 0)["high_watermark"] == 2  # READ implies DESCRIBE
    assert api.get_topic(topic).status_code == 200
    # READ is not WRITE, nor DELETE
    assert_forbidden(refused_post(api, lambda a: a.produce_one(topic, record)), "WRITE", topic,
                     "produce after READ")
    assert_forbidden(refused_post(api, lambda a: a.produce_batch_raw(
        topic, {"entries": [{"id": "1", **record}]})), "WRITE", topic, "records-batch after READ")
    assert_forbidden(api.delete_topic(topic), "DELETE", topic, "delete after READ")
    # the other topic stays out of reach and out of the list
    assert_forbidden(api.read(other, 0, offset=0, timeout_ms=0), "READ", other, "other read")
    listed = api.list_topics()
    assert topic in listed and other not in listed, listed
    assert high_watermark(acls, topic) == 2 and high_watermark(acls, other) == 1


def http_exchange(sock: socket.socket, head: bytes,
                  body: bytes = b"") -> tuple[bytes, bytes] | None:
    """Send a request (the body in a segment of its own, as urllib3 sends
    it) and read its response: (status line + headers, body), or None when
    the node closed the connection instead of answering."""
    data = b""
    try:
        sock.sendall(head)
        if body:
            time.sleep(0.05)
            try:
                sock.sendall(body)
            except BrokenPipeError:
                pass  # answered and closed already: read the answer
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        headers, rest = data.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"(?im)^content-length:\s*(\d+)", headers).group(1))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            rest += chunk
    except (ConnectionResetError, BrokenPipeError):
        return None
    return headers, rest


def test_http_refusal_keeps_the_connection_usable(acls):
    """A refusal answered before the request body is read: the keep-alive
    connection either serves the next request or the refusal says
    `Connection: close` (else a client reusing it, like requests, fails its
    next request with RemoteDisconnected)."""
    api = acls.node.api
    topic = new_topic(acls, "http-keepalive")
    body = json.dumps({"partition_id": 0, "value": {"type": "STRING", "data": "no"}}).encode()
    path = f"/v3/clusters/{api.cluster_id}/topics/{topic}/records"
    post = (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    get = f"GET /v3/clusters HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    port = int(acls.node.url.rsplit(":", 1)[1])
    outcomes = []
    for _ in range(3):
        with socket.create_connection((HOST, port), timeout=10) as sock:
            refused = http_exchange(sock, post, body)
            assert refused is not None and \
                refused[0].startswith(f"HTTP/1.1 {REFUSED} ".encode()), refused
            says_close = re.search(rb"(?im)^connection:\s*close", refused[0]) is not None
            after = http_exchange(sock, get)
            outcomes.append((says_close, None if after is None else after[0].split(b"\r\n")[0]))
    assert all(says_close or after == b"HTTP/1.1 200 OK" for says_close, after in outcomes), \
        f"(the refusal said Connection: close, the next request's status line): " \
        f"{outcomes}"
    assert high_watermark(acls, topic) == 0


# ---------------------------------------------------------------------------
# patterns, deny, super user, managing ACLs

def assert_produces(conf: dict, topic: str) -> None:
    assert ck_produce(conf, topic, [(b"k", f"to {topic}".encode())]) == [0], topic


def assert_produce_refused(an: AclNode, conf: dict, topic: str) -> None:
    err = ck_refused_delivery(conf, topic)
    assert err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, f"{topic}: {err}"
    assert high_watermark(an, topic) == 0, topic


def test_prefixed_acl_covers_exactly_its_prefix(acls):
    create_topics(acls, "team-a.x", "team-ab", "team-b.x")
    grant(acls, binding(ResourceType.TOPIC, "team-a.", "User:prefixer", AclOperation.WRITE,
                        pattern=ResourcePatternType.PREFIXED))
    conf = ck_conf(acls.sasl_addr, USERS["prefixer"])
    assert_produces(conf, "team-a.x")
    assert_produce_refused(acls, conf, "team-ab")
    assert_produce_refused(acls, conf, "team-b.x")


def test_literal_wildcard_covers_every_topic(acls):
    grant(acls, binding(ResourceType.TOPIC, "*", "User:star", AclOperation.WRITE))
    conf = ck_conf(acls.sasl_addr, USERS["star"])
    for prefix in ("star-one", "star-two"):
        assert_produces(conf, new_topic(acls, prefix))
    # but not what WRITE does not imply
    topic = new_topic(acls, "star-read", keyed_records("star", 1))
    err = ck_group_error(conf, topic, topic_name("star-group"))
    assert err is not None and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err


def test_deny_beats_allow(acls):
    refused, allowed = new_topic(acls, "denied"), new_topic(acls, "allowed")
    grant(acls,
          binding(ResourceType.TOPIC, "*", "User:mixed", AclOperation.WRITE),
          binding(ResourceType.TOPIC, refused, "User:mixed", AclOperation.WRITE,
                  AclPermissionType.DENY))
    conf = ck_conf(acls.sasl_addr, USERS["mixed"])
    assert_produce_refused(acls, conf, refused)
    assert_produces(conf, allowed)


def test_host_bound_acls_apply_to_kafka_and_http(acls):
    """An ACL's host is the client's address on both paths: a grant from
    another host grants nothing, one from the client's own does, and a deny
    from it beats an allow from everywhere."""
    topic = new_topic(acls, "hosted")
    user = USERS["hosted"]
    conf = ck_conf(acls.sasl_addr, user)
    session = requests.Session()
    session.auth = (user.name, user.password)
    api = Api(acls.node.url, session)
    record = {"partition_id": 0, "value": {"type": "STRING", "data": "from a host"}}

    def write_from(host: str, permission=AclPermissionType.ALLOW) -> AclBinding:
        return AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL,
                          f"User:{user.name}", host, AclOperation.WRITE, permission)

    # granted from another host only: refused on both paths
    grant(acls, write_from("10.99.0.7"))
    assert_produce_refused(acls, conf, topic)
    refused = api.with_new_session().produce_one(topic, record)
    body = assert_error(refused, 403, "HTTP produce with an ACL of another host")
    assert "WRITE" in body["message"] and topic in body["message"], body

    # granted from this host: allowed on both
    grant(acls, write_from(HOST))
    assert_produces(conf, topic)
    resp = api.produce_one(topic, record)
    assert resp.status_code == 200 and resp.json()["error_code"] == 200, resp.text
    assert high_watermark(acls, topic) == 2

    # an allow from every host, a deny from this one: refused on both
    grant(acls, write_from("*"), write_from(HOST, AclPermissionType.DENY))
    assert_error(api.with_new_session().produce_one(topic, record), 403,
                 "HTTP produce denied from this host")
    err = ck_refused_delivery(conf, topic)
    assert err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    assert high_watermark(acls, topic) == 2


def acl_error_code(exc: KafkaException) -> int:
    return exc.args[0].code()


def kp_describe_all(conf: dict) -> list:
    """DescribeAcls of every binding with kafka-python (raises its error)."""
    admin = KafkaAdminClient(**conf)
    try:
        everything = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                               permission_type=ACLPermissionType.ANY,
                               resource_pattern=ResourcePatternFilter(
                                   KpResourceType.ANY, None, ACLResourcePatternType.ANY))
        bindings, error = admin.describe_acls(everything)
        assert error is NoError, error
        return bindings
    finally:
        admin.close()


def test_super_user_needs_no_acl_and_others_cannot_manage_acls(acls):
    admin = acls.admin
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    assert not [b for b in admin.describe_acls(everything).result(timeout=TIMEOUT)
                if b.principal == "User:admin"], "an ACL names the super user"
    # the super user: create, produce, consume in a group, delete
    records = keyed_records("super", 3)
    topic = new_topic(acls, "super", records)
    assert ck_group_consume(ck_conf(acls.sasl_addr, ADMIN), topic, topic_name("super-group"),
                            3) == ([(k, v, i) for i, (k, v) in enumerate(records)], 3)
    for future in admin.delete_topics([topic], operation_timeout=10).values():
        assert future.result(timeout=15) is None
    assert topic not in admin.list_topics(timeout=TIMEOUT).topics

    wanted = binding(ResourceType.TOPIC, topic_name("wanted"), "User:nobody", AclOperation.ALL)
    nobody = USERS["nobody"]
    for who, conf, kp in (
            ("nobody", ck_conf(acls.sasl_addr, nobody), kp_conf(acls, nobody)),
            ("ANONYMOUS", ck_conf(acls.node.bootstrap, None),
             dict(bootstrap_servers=acls.node.bootstrap, request_timeout_ms=TIMEOUT * 1000))):
        other = AdminClient(conf)
        with pytest.raises(KafkaException) as refused:
            create_acls(other, [wanted])
        assert acl_error_code(refused.value) == KafkaError.CLUSTER_AUTHORIZATION_FAILED, \
            f"{who} CreateAcls: {refused.value}"
        with pytest.raises(KafkaException) as refused:
            revoke(other, wanted)
        assert acl_error_code(refused.value) == KafkaError.CLUSTER_AUTHORIZATION_FAILED, \
            f"{who} DeleteAcls: {refused.value}"
        # librdkafka drops DescribeAcls' top-level error code (an empty list
        # comes back), so the refusal is read with kafka-python
        with pytest.raises(ClusterAuthorizationFailedError) as refused:
            kp_describe_all(kp)
        assert who in str(refused.value), refused.value
    assert described(admin, wanted) == []

    # ALTER on the cluster is what managing ACLs takes (and implies DESCRIBE)
    grant(acls, binding(CLUSTER_TYPE, CLUSTER, "User:aclmgr", AclOperation.ALTER))
    mgr = AdminClient(ck_conf(acls.sasl_addr, USERS["aclmgr"]))
    create_acls(mgr, [wanted])
    assert mgr.describe_acls(exact_filter(wanted)).result(timeout=TIMEOUT) == [wanted]
    assert [(b.principal, b.resource_pattern.resource_name) for b in
            kp_describe_all(kp_conf(acls, USERS["aclmgr"]))
            if b.resource_pattern.resource_name == wanted.name] == [("User:nobody", wanted.name)]
    assert revoke(mgr, wanted) == [wanted]


def test_delete_acls_refuses_the_principal_again(acls):
    topic = new_topic(acls, "revoked")
    write = binding(ResourceType.TOPIC, topic, "User:temp", AclOperation.WRITE)
    grant(acls, write)
    conf = ck_conf(acls.sasl_addr, USERS["temp"])
    assert_produces(conf, topic)
    assert revoke(acls.admin, write) == [write]
    # at once: no wait for the node's view
    err = ck_refused_delivery(conf, topic)
    assert err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    assert described(acls.admin, write) == []
    assert high_watermark(acls, topic) == 1
    # deleting it again deletes nothing
    assert revoke(acls.admin, write) == []


def raw_sasl_call(an: AclNode, user: User, request_frame: bytes) -> bytes:
    """Log in with PLAIN on a fresh SASL_PLAINTEXT connection, send one
    request; its response after the correlation id."""
    with socket.create_connection((HOST, an.node.listener_ports["SASL_PLAINTEXT"]),
                                  timeout=10) as sock:
        answer = plain_login(sock, user)
        assert answer.error_code == 0, answer
        sock.sendall(request_frame)
        return wire.recv_response(sock)[4:]


def describe_cluster_error(an: AclNode, user: User) -> int:
    """DescribeCluster v0 (flexible: request header v2, response header v1)."""
    header = struct.pack(">hhi", 60, 0, 21) + struct.pack(">h", 4) + b"test" + b"\0"
    body = b"\0" + b"\0"  # include_cluster_authorized_operations=false, no tagged fields
    resp = raw_sasl_call(an, user, wire.frame(header + body))
    # header tagged fields (none), throttle_time_ms, error_code
    assert resp[0] == 0, resp[:16]
    return struct.unpack(">ih", resp[1:7])[1]


def init_producer_id_error(an: AclNode, user: User) -> int:
    """InitProducerId v0 for an idempotent producer (no transactional id)."""
    body = struct.pack(">hi", -1, 60000)
    resp = raw_sasl_call(an, user, wire.request(22, 0, body, correlation_id=22))
    return struct.unpack(">ih", resp[:6])[1]


def admin_error(future) -> int:
    with pytest.raises(KafkaException) as refused:
        future.result(timeout=TIMEOUT + 5)
    return acl_error_code(refused.value)


def test_admin_requests_need_their_acl(acls):
    topic = new_topic(acls, "admin-ops")
    nobody = AdminClient(ck_conf(acls.sasl_addr, USERS["nobody"]))
    wanted = topic_name("made-by-nobody")
    assert admin_error(nobody.create_topics([NewTopic(wanted, 1)])[wanted]) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert admin_error(nobody.delete_topics([topic])[topic]) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert admin_error(nobody.create_partitions([NewPartitions(topic, 2)])[topic]) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    (configs,) = nobody.describe_configs([ConfigResource("topic", topic)]).values()
    assert admin_error(configs) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    meta = acls.admin.list_topics(timeout=TIMEOUT)
    assert wanted not in meta.topics and len(meta.topics[topic].partitions) == 1

    # CREATE and DELETE on a prefix: topics under it only
    grant(acls,
          binding(ResourceType.TOPIC, "made-by-maker.", "User:maker", AclOperation.CREATE,
                  pattern=ResourcePatternType.PREFIXED),
          binding(ResourceType.TOPIC, "made-by-maker.", "User:maker", AclOperation.DELETE,
                  pattern=ResourcePatternType.PREFIXED))
    maker = AdminClient(ck_conf(acls.sasl_addr, USERS["maker"]))
    made = topic_name("made-by-maker.t")
    assert maker.create_topics([NewTopic(made, 2)])[made].result(timeout=15) is None
    assert admin_error(maker.create_topics([NewTopic(wanted, 1)])[wanted]) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert len(acls.admin.list_topics(timeout=TIMEOUT).topics[made].partitions) == 2
    assert maker.delete_topics([made])[made].result(timeout=15) is None
    assert admin_error(maker.delete_topics([topic])[topic]) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED

    # DescribeCluster needs DESCRIBE on the cluster (librdkafka answers
    # describe_cluster from Metadata, so the request is sent raw)
    assert describe_cluster_error(acls, USERS["nobody"]) == \
        KafkaError.CLUSTER_AUTHORIZATION_FAILED
    assert describe_cluster_error(acls, ADMIN) == 0
    # InitProducerId: IDEMPOTENT_WRITE on the cluster, or WRITE on any topic
    grant(acls,
          binding(CLUSTER_TYPE, CLUSTER, "User:idem", AclOperation.IDEMPOTENT_WRITE),
          binding(ResourceType.TOPIC, topic, "User:onewriter", AclOperation.WRITE))
    assert init_producer_id_error(acls, USERS["nobody"]) == \
        KafkaError.CLUSTER_AUTHORIZATION_FAILED
    assert init_producer_id_error(acls, USERS["idem"]) == 0
    assert init_producer_id_error(acls, USERS["onewriter"]) == 0


def test_auto_creation_needs_create(acls):
    who = USERS["autocreator"]
    grant(acls, binding(ResourceType.TOPIC, "auto-", "User:autocreator", AclOperation.WRITE,
                        pattern=ResourcePatternType.PREFIXED))
    # a producer's Metadata allows auto-creation
    producer = Producer(ck_conf(acls.sasl_addr, who))
    missing = topic_name("auto-not-made")
    refused = producer.list_topics(topic=missing, timeout=TIMEOUT).topics[missing].error
    assert missing not in acls.admin.list_topics(timeout=TIMEOUT).topics

    grant(acls, binding(ResourceType.TOPIC, "auto-made.", "User:autocreator",
                        AclOperation.CREATE, pattern=ResourcePatternType.PREFIXED))
    made = topic_name("auto-made.t")
    assert ck_produce(ck_conf(acls.sasl_addr, who), made, [(b"k", b"auto")]) == [0]
    assert made in acls.admin.list_topics(timeout=TIMEOUT).topics
    # Kafka answers a topic it may not create with TOPIC_AUTHORIZATION_FAILED
    # (KafkaApis.handleTopicMetadataRequest: unauthorizedForCreateTopics), so
    # a producer fails at once instead of waiting for the topic
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, \
        f"Metadata for {missing} (DESCRIBE, no CREATE): {refused}"


# ---------------------------------------------------------------------------
# a cluster of three

def poll_until(nodes: list[Sluice], topic: str, status: int, since: float,
               limit: float = 3.0) -> dict[str, float]:
    """Read `topic` over HTTP (ANONYMOUS) from each node until it answers
    `status`; {node name: seconds after `since`} (nodes never seen are left out)."""
    seen: dict[str, float] = {}
    while len(seen) < len(nodes) and time.monotonic() - since < limit:
        for n in nodes:
            if n.name not in seen and \
                    n.api.read(topic, 0, offset=0, timeout_ms=0, timeout=5).status_code == status:
                seen[n.name] = time.monotonic() - since
        time.sleep(0.01)
    return seen


def test_acl_changes_reach_every_node_within_a_second(sluice, tmp_path):
    cluster = sluice.new_cluster()
    nodes = [sluice.distributed(cluster, listeners=LISTENERS, extra_args=AUTHORIZER_ARGS)
             for _ in range(3)]
    add_user(nodes[0], ADMIN, tmp_path)
    admin = AdminClient(ck_conf(f"{HOST}:{nodes[0].listener_ports['SASL_PLAINTEXT']}", ADMIN))
    an = AclNode(nodes[0], tmp_path, admin)
    topic = new_topic(an, "everywhere", keyed_records("everywhere", 1))
    # every node knows the topic (Metadata as the super user on each)
    for n in nodes:
        each = AdminClient(ck_conf(f"{HOST}:{n.listener_ports['SASL_PLAINTEXT']}", ADMIN))
        wait_until(lambda: each.list_topics(topic=topic, timeout=TIMEOUT).topics[topic].error
                   is None, 10, f"{topic} on {n.name}", interval=0.1)
    for n in nodes:
        assert n.api.read(topic, 0, offset=0, timeout_ms=0).status_code == REFUSED, n.name

    read = topic_read(topic, "ANONYMOUS")
    create_acls(admin, [read])
    created = time.monotonic()
    granted = poll_until(nodes, topic, 200, created)
    print(f"CreateAcls -> 200 on each node after (s): {granted}")
    assert len(granted) == 3 and max(granted.values()) <= 1.0, \
        f"READ granted through {nodes[0].name}: first 200 after (s) {granted}"
    lines = nodes[2].api.read_lines(topic, 0, offset=0, timeout_ms=0, format="string")
    assert [r["value"] for r in lines] == ["value 0 of everywhere"]

    assert revoke(admin, read) == [read]
    deleted = time.monotonic()
    revoked = poll_until(nodes, topic, REFUSED, deleted)
    print(f"DeleteAcls -> {REFUSED} on each node after (s): {revoked}")
    assert len(revoked) == 3 and max(revoked.values()) <= 1.0, \
        f"READ revoked through {nodes[0].name}: first {REFUSED} after (s) {revoked}"


# ---------------------------------------------------------------------------

def test_without_the_authorizer_nothing_is_refused(sluice):
    node = sluice.distributed()
    topic = topic_name("open")
    node.api.create_topic(topic, 1)
    assert ck_produce({"bootstrap.servers": node.bootstrap}, topic,
                      keyed_records("open", 2)) == [0, 1]
    r = node.api.produce_one(topic, {"partition_id": 0, "value": {"type": "STRING",
                                                                    "data": "over http"}})
    assert r.status_code == 200, r.text[:500]
    lines = node.api.read_lines(topic, 0, offset=0, timeout_ms=0, format="string")
    assert [r["value"] for r in lines] == ["value 0 of open", "value 1 of open", "over http"]
    assert topic in node.api.list_topics()
