"""Read sluice's Parquet archive back with four independent Arrow tools.

The archive is a hive-partitioned Parquet dataset in S3 (moto in the tests):

    s3://<bucket>/<prefix>archive/<topic>/partition=<p>/<first>-<last>.parquet

with the columns, in this order,

    offset     int64 not null
    timestamp  timestamp[ms] not null
    key        binary
    value      binary
    headers    list<struct<key: utf8 not null, value: binary>> not null
    partition  int32 not null

Every reader returns the same thing, a list of

    (partition, offset, timestamp_ms, key, value, [(header_key, header_value), ...])

sorted by (partition, offset), where key, value and header values are bytes or
None (b"" and None stay distinct).  Each reader reads the data as a
hive-partitioned dataset with the tool's own Parquet reader and sorts inside the
tool; only the final Arrow -> Python conversion (`_to_rows`) is shared.

`partition` is stored twice: as a column in each file and as the hive key of the
directory.  All four tools resolve that to ONE `partition` column whose values
come from the directory name (checked with a file whose in-file value disagreed
with its directory: every tool returned the directory's value).  Each reader
declares the hive key's type as int32, the in-file type, so both agree:

  * DuckDB: would infer BIGINT for the hive key; `hive_types={'partition': INTEGER}`.
  * pyarrow: an explicit hive partitioning schema `partition: int32`.
  * polars: `hive_schema={"partition": pl.Int32}`.
  * DataFusion: refuses the duplicate ("Schema contains duplicate qualified field
    name"), so the table is registered with the file schema minus `partition`
    (inferred from the files by DataFusion itself) plus
    `table_partition_cols=[("partition", int32)]`; the in-file column is then
    simply not read.

Timestamps: all four tools read both `timestamp[ms]` (no time zone) and
`timestamp[ms, tz="UTC"]`; `_to_rows` turns either into epoch milliseconds.

Nothing here needs network access beyond the S3 endpoint: DuckDB's httpfs
extension would be downloaded at run time, so DuckDB reads through an fsspec
filesystem (s3fs) registered on its connection instead.

Each reader raises (the tool's own error) when the topic has no archive files.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pyarrow as pa

ACCESS_KEY = "test"
SECRET_KEY = "test"
REGION = "us-east-1"

Header = tuple[str, "bytes | None"]
Row = tuple[int, int, int, "bytes | None", "bytes | None", list[Header]]

COLUMNS = ["partition", "offset", "timestamp", "key", "value", "headers"]


def _topic_path(bucket: str, prefix: str, topic: str) -> str:
    """`<bucket>/<prefix>archive/<topic>/`; the trailing slash keeps topic "a"
    from matching a topic "ab"."""
    return f"{bucket}/{prefix}archive/{topic}/"


# --------------------------------------------------------------------------
# Arrow -> Python
# --------------------------------------------------------------------------

def _headers_to_py(column: pa.ChunkedArray) -> list:
    """A list<struct<key, value>> column (list, large_list, any field names)
    as one Python list of (key, value) tuples per row, without a Python
    object per struct: the keys and values are converted as two flat columns
    and cut up by the list offsets."""
    out: list = []
    for chunk in column.chunks:
        if chunk.null_count:  # not expected (headers is not null): keep the Nones visible
            out += [None if h is None else [(e["key"], e["value"]) for e in h]
                    for h in chunk.to_pylist()]
            continue
        offsets = chunk.offsets.to_pylist()
        entries = chunk.flatten()  # honours the chunk's slice offset
        names = [entries.type.field(i).name for i in range(entries.type.num_fields)]
        fields = dict(zip(names, entries.flatten()))
        pairs = list(zip(fields["key"].to_pylist(), fields["value"].to_pylist()))
        base = offsets[0]
        out += [pairs[offsets[i] - base:offsets[i + 1] - base] for i in range(len(chunk))]
    return out


def _epoch_ms(column: pa.ChunkedArray) -> list[int]:
    """timestamp[any unit, any tz] -> epoch milliseconds.  A safe cast: it
    raises instead of silently truncating a sub-millisecond value."""
    ts = column.type
    if not pa.types.is_timestamp(ts):
        raise TypeError(f"timestamp column has type {ts}")
    return column.cast(pa.timestamp("ms", tz=ts.tz)).cast(pa.int64()).to_pylist()


def _to_rows(table: pa.Table) -> list[Row]:
    """The shared converter: an Arrow table with (at least) COLUMNS, already
    sorted by (partition, offset), as a list of Row tuples."""
    table = table.select(COLUMNS)
    return list(zip(
        table.column("partition").to_pylist(),
        table.column("offset").to_pylist(),
        _epoch_ms(table.column("timestamp")),
        table.column("key").to_pylist(),
        table.column("value").to_pylist(),
        _headers_to_py(table.column("headers")),
    ))


# --------------------------------------------------------------------------
# DuckDB
# --------------------------------------------------------------------------

def read_duckdb(endpoint: str, bucket: str, prefix: str, topic: str) -> list[Row]:
    """DuckDB's Parquet reader over an fsspec filesystem (s3fs).

    The httpfs extension is not bundled with the duckdb wheel and INSTALL
    downloads it from DuckDB's own extension host, which is unreachable
    here; `register_filesystem` makes `s3://` go through s3fs instead.
    """
    import duckdb
    import s3fs

    fs = s3fs.S3FileSystem(
        key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=endpoint,
        client_kwargs={"region_name": REGION},
        config_kwargs={"s3": {"addressing_style": "path"}},
        # fsspec caches instances and directory listings: a second read after
        # more files were archived must list the bucket again.
        skip_instance_cache=True, use_listings_cache=False,
    )
    con = duckdb.connect()
    try:
        con.register_filesystem(fs)
        url = f"s3://{_topic_path(bucket, prefix, topic)}partition=*/*.parquet"
        # The hive key would be inferred as BIGINT; INTEGER matches the file.
        # The directory's value replaces the in-file `partition` column.
        rel = con.sql(
            'SELECT "partition", "offset", "timestamp", "key", "value", "headers" '
            f"FROM read_parquet('{url.replace(chr(39), chr(39) * 2)}', "
            "hive_partitioning = true, hive_types = {'partition': INTEGER}) "
            'ORDER BY "partition", "offset"')
        # duckdb >= 1.4 names it to_arrow_table (fetch_arrow_table is deprecated).
        fetch = getattr(rel, "to_arrow_table", None) or rel.fetch_arrow_table
        # DuckDB hands timestamps out as timestamp[us]; _to_rows casts to ms.
        return _to_rows(fetch())
    finally:
        con.close()


# --------------------------------------------------------------------------
# pyarrow.dataset
# --------------------------------------------------------------------------

def read_pyarrow(endpoint: str, bucket: str, prefix: str, topic: str) -> list[Row]:
    """pyarrow.dataset over pyarrow's own (AWS SDK based) S3 filesystem."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    url = urlsplit(endpoint)
    fs = pafs.S3FileSystem(
        access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION,
        endpoint_override=url.netloc, scheme=url.scheme or "http",
        force_virtual_addressing=False,
    )
    # An explicit hive schema instead of partitioning="hive": inference would
    # pick int32 too, but an explicit type cannot drift.  The directory's value
    # replaces the in-file `partition` column.
    partitioning = ds.partitioning(pa.schema([("partition", pa.int32())]), flavor="hive")
    dataset = ds.dataset(_topic_path(bucket, prefix, topic), filesystem=fs,
                         format="parquet", partitioning=partitioning)
    table = dataset.to_table(columns=COLUMNS)
    return _to_rows(table.sort_by([("partition", "ascending"), ("offset", "ascending")]))


# --------------------------------------------------------------------------
# polars
# --------------------------------------------------------------------------

def read_polars(endpoint: str, bucket: str, prefix: str, topic: str) -> list[Row]:
    """polars' native cloud reader (Rust object_store), no pyarrow or fsspec
    in the read path: it works against moto with the options below."""
    import polars as pl

    storage_options = {
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
        "aws_region": REGION,
        "aws_endpoint_url": endpoint,
        "aws_allow_http": "true",                     # moto speaks plain http
        "aws_virtual_hosted_style_request": "false",  # path-style addressing
    }
    url = f"s3://{_topic_path(bucket, prefix, topic)}partition=*/*.parquet"
    frame = (
        pl.scan_parquet(url, hive_partitioning=True,
                        # int32 like the in-file column; the directory's value wins.
                        hive_schema={"partition": pl.Int32},
                        storage_options=storage_options)
        .select(COLUMNS)
        .sort(["partition", "offset"])
        .collect()
    )
    return _to_rows(frame.to_arrow())


# --------------------------------------------------------------------------
# DataFusion
# --------------------------------------------------------------------------

def read_datafusion(endpoint: str, bucket: str, prefix: str, topic: str) -> list[Row]:
    """Apache DataFusion's listing table over its object_store S3 client."""
    from datafusion import SessionContext, object_store

    store = object_store.AmazonS3(
        bucket_name=bucket, region=REGION, access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY, endpoint=endpoint, allow_http=True,
    )  # object_store addresses buckets path-style unless told otherwise
    ctx = SessionContext()
    ctx.register_object_store("s3://", store, None)
    url = f"s3://{_topic_path(bucket, prefix, topic)}"
    # DataFusion rejects a partition column that is also a file column
    # ("Schema contains duplicate qualified field name"), so: infer the file
    # schema (no partition columns), drop `partition` from it, and let the
    # directory supply `partition` as an int32 table partition column.
    file_schema = ctx.read_parquet(url).schema()
    if (i := file_schema.get_field_index("partition")) >= 0:
        file_schema = file_schema.remove(i)
    ctx.register_parquet("archive", url, schema=file_schema,
                         table_partition_cols=[("partition", pa.int32())])
    frame = ctx.sql(
        'SELECT "partition", "offset", "timestamp", "key", "value", "headers" '
        'FROM archive ORDER BY "partition", "offset"')
    return _to_rows(frame.to_arrow_table())
