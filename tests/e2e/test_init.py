"""`sluice init` against the S3 server: the bucket, the lifecycle rule for
abandoned multipart uploads, the conditional-PUT probe (aws-sdk-s3, where
object_store does not reach)."""

from __future__ import annotations

import random
import subprocess

from processes import AWS_ENV


def init(sluice_bin, s3, store: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(sluice_bin), "init", "--store", store, "--s3-endpoint", s3.endpoint, *args],
                          env=AWS_ENV, capture_output=True, text=True, timeout=60)


def test_init_creates_the_bucket_and_its_lifecycle_rule(sluice_bin, s3):
    bucket = f"init-{random.randrange(16**8):08x}"
    store = f"s3://{bucket}/team-a/logs"

    # a missing bucket is reported, and nothing is created without --create-bucket
    for args in (["--check"], []):
        done = init(sluice_bin, s3, store, *args)
        assert done.returncode != 0, done.stdout
        assert f"bucket {bucket}: missing" in done.stdout
        assert "--create-bucket" in done.stderr
    assert bucket not in [b["Name"] for b in s3.client.list_buckets()["Buckets"]]

    done = init(sluice_bin, s3, store, "--create-bucket")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"bucket {bucket}: created" in done.stdout
    assert "conditional PUT (If-None-Match): honoured" in done.stdout
    rules = s3.client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert len(rules) == 1, rules
    (rule,) = rules
    assert rule["Status"] == "Enabled"
    assert rule["Filter"] == {"Prefix": "team-a/logs/"}
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    # the probe object is gone
    assert s3.client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0

    # idempotent: a second run adds nothing; --check passes
    for args in ([], ["--check"]):
        done = init(sluice_bin, s3, store, *args)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "bucket %s: exists" % bucket in done.stdout
        assert "aborts incomplete uploads under" in done.stdout
    assert len(s3.client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]) == 1

    # another prefix of the same bucket gets its own rule; other rules are kept
    s3.client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        *s3.client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"],
        {"ID": "someone-elses", "Status": "Enabled", "Filter": {"Prefix": "reports/"},
         "Expiration": {"Days": 30}},
    ]})
    other = f"s3://{bucket}/team-b"
    done = init(sluice_bin, s3, other, "--check")
    assert done.returncode != 0 and "no rule aborts incomplete uploads" in done.stdout, done.stdout
    done = init(sluice_bin, s3, other, "--abort-incomplete-uploads-days", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    rules = {r["ID"]: r for r in s3.client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert set(rules) == {"sluice-abort-incomplete-uploads-team-a-logs",
                          "sluice-abort-incomplete-uploads-team-b", "someone-elses"}, rules
    assert rules["sluice-abort-incomplete-uploads-team-b"]["Filter"] == {"Prefix": "team-b/"}
    assert rules["sluice-abort-incomplete-uploads-team-b"]["AbortIncompleteMultipartUpload"] == \
        {"DaysAfterInitiation": 3}
    assert rules["someone-elses"]["Expiration"] == {"Days": 30}


def test_init_refuses_what_it_cannot_prepare(sluice_bin, s3):
    for store, reason in [("file:///tmp/x", "prepares s3:// stores"), ("s3:///p", "names no bucket")]:
        done = init(sluice_bin, s3, store)
        assert done.returncode != 0
        assert reason in done.stderr, done.stderr
    done = init(sluice_bin, s3, f"s3://{s3.bucket}/x", "--abort-incomplete-uploads-days", "0")
    assert done.returncode != 0 and "0 is not in 1..=3650" in done.stderr, done.stderr
