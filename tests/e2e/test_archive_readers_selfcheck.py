"""Self-check of archive_readers: the four readers against a dataset written
here with pyarrow in the archive layout and uploaded to moto with boto3.

Needs only moto (the session `s3` fixture), no sluice binary.  Every dataset
goes to a bucket of its own, so an empty prefix cannot meet anything else
in the session bucket.
"""

from __future__ import annotations

import io
import random
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import archive_readers

READERS = [
    archive_readers.read_duckdb,
    archive_readers.read_pyarrow,
    archive_readers.read_polars,
    archive_readers.read_datafusion,
]

TOPIC = "orders"
# Its archive path starts with the first topic's ("archive/orders" is a prefix
# of "archive/orders-2"): a reader that lists by string prefix would pick it up.
OTHER_TOPIC = "orders-2"

# Partition 10 sorts before 2 as text: catches a partition read as a string.
PARTITIONS = (0, 2, 10)

HEADERS_TYPE = pa.list_(pa.field("item", pa.struct([
    pa.field("key", pa.string(), nullable=False),
    pa.field("value", pa.binary(), nullable=True),
])))


def archive_schema(tz: str | None) -> pa.Schema:
    return pa.schema([
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz=tz), nullable=False),
        pa.field("key", pa.binary(), nullable=True),
        pa.field("value", pa.binary(), nullable=True),
        pa.field("headers", HEADERS_TYPE, nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
    ])


def make_rows(rnd: random.Random, partition: int, first: int, count: int) -> list[tuple]:
    """Rows in the readers' format: (partition, offset, ts_ms, key, value, headers)."""
    rows = []
    for offset in range(first, first + count):
        i = offset - first
        # None, b"" and non-UTF-8 bytes (with NULs) for both key and value.
        key = (None if i % 7 == 0 else b"" if i % 11 == 0
               else bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 24))))
        value = (None if i % 5 == 0 else b"" if i % 13 == 0
                 else b"\xff\x00\xfe" + rnd.randbytes(rnd.randrange(0, 300)))
        headers = [] if i % 3 == 0 else [
            ("trace", None),                      # null header value
            ("h\u00e9\u2603", b"\x00\x80\xff"),   # non-ASCII key, non-UTF-8 value
            ("", b""),                            # empty key and empty value
            ("trace", rnd.randbytes(4)),          # repeated key, order matters
        ][: 1 + i % 4]
        # Milliseconds that are not whole seconds; the first row of every
        # partition before the epoch (-1 is Kafka's "no timestamp").
        ts = -1 if offset == 0 else 1_700_000_000_000 + offset * 1_001 + partition
        rows.append((partition, offset, ts, key, value, headers))
    return rows


def parquet_bytes(rows: list[tuple], tz: str | None) -> bytes:
    table = pa.table({
        "offset": [r[1] for r in rows],
        "timestamp": [r[2] for r in rows],
        "key": [r[3] for r in rows],
        "value": [r[4] for r in rows],
        "headers": [[{"key": k, "value": v} for k, v in r[5]] for r in rows],
        "partition": [r[0] for r in rows],
    }, schema=archive_schema(tz))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def upload(s3, bucket: str, prefix: str, topic: str, rows: list[tuple], tz: str | None) -> None:
    partition, first, last = rows[0][0], rows[0][1], rows[-1][1]
    key = f"{prefix}archive/{topic}/partition={partition}/{first}-{last}.parquet"
    s3.client.put_object(Bucket=bucket, Key=key, Body=parquet_bytes(rows, tz))


def new_bucket(s3) -> str:
    bucket = f"archive-selfcheck-{uuid.uuid4().hex[:12]}"
    s3.client.create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(scope="module", params=[("t1/", None), ("t1/", "UTC"), ("", None)],
                ids=["prefix-t1-naive", "prefix-t1-utc", "no-prefix-naive"])
def dataset(request, s3):
    """3 partitions x 2 files (~2,000 rows) of TOPIC, plus one OTHER_TOPIC file."""
    prefix, tz = request.param
    bucket = new_bucket(s3)
    rnd = random.Random(f"{prefix}{tz}")
    expected = []
    for n, partition in enumerate(PARTITIONS):
        first = 0
        for count in (300 + 40 * n, 350 - 20 * n):  # two files of different sizes
            rows = make_rows(rnd, partition, first, count)
            upload(s3, bucket, prefix, TOPIC, rows, tz)
            expected += rows
            first += count
    upload(s3, bucket, prefix, OTHER_TOPIC, make_rows(rnd, 0, 0, 50), tz)
    expected.sort(key=lambda r: (r[0], r[1]))
    return s3.endpoint, bucket, prefix, expected


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.__name__)
def test_reader_returns_exactly_the_rows_written(reader, dataset):
    endpoint, bucket, prefix, expected = dataset
    got = reader(endpoint, bucket, prefix, TOPIC)
    assert len(got) == len(expected)
    assert [type(x) for x in got[1]] == [int, int, int, bytes, bytes, list]
    for want, have in zip(expected, got):
        assert have == want, f"first difference at partition {want[0]} offset {want[1]}"
    assert got == expected


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.__name__)
def test_reader_sees_files_archived_after_a_previous_read(reader, s3):
    """No stale listing (fsspec and object stores can cache directory listings)."""
    bucket = new_bucket(s3)
    rnd = random.Random(7)
    first = make_rows(rnd, 2, 0, 10)
    upload(s3, bucket, "t1/", TOPIC, first, None)
    assert reader(s3.endpoint, bucket, "t1/", TOPIC) == first
    more = make_rows(rnd, 2, 10, 5), make_rows(rnd, 0, 0, 3)
    for rows in more:
        upload(s3, bucket, "t1/", TOPIC, rows, None)
    assert reader(s3.endpoint, bucket, "t1/", TOPIC) == more[1] + first + more[0]
