"""Writing a collection out of Needle: ``needle export`` (nobody is locked in).

Formats:

- ``jsonl``: one JSON object per line, ``{"id", "vector", "metadata"}``
  (a sparse collection's vectors as ``{"indices": [...], "values": [...]}``);
- ``parquet``: columns ``id`` (string), ``vector`` (fixed-size list of
  float32) and ``metadata`` (JSON text), written in row groups as it reads
  (needs pyarrow: ``pip install "needle_mm[parquet]"``);
- ``npy``: a directory with ``vectors.npy`` (float32 ``[n, dim]``),
  ``ids.jsonl`` (one JSON string per line: ids may hold any character) and
  ``metadata.jsonl`` (one JSON object per line), rows in the same order.

Each format also records the collection's configuration (distance,
dimension, dtype, HNSW parameters), so ``needle import`` recreates it with no
flags: jsonl as a first line ``{"needle_collection": {...}}``, npy as
``collection.json`` in the directory, parquet in the schema's metadata
(key ``needle_collection``).

Sparse collections export to jsonl only (npy and parquet hold dense
matrices). Records come out in storage order, live records only, from one snapshot.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterator

import numpy as np
import orjson

from .._format.csr import SparseVector
from ..errors import InvalidArgumentError

FORMATS = ("jsonl", "npy", "parquet")


def records(collection, batch: int = 4096) -> Iterator[tuple[list[str], Any, list[bytes]]]:
    """``(ids, vectors, metadata JSON bytes)`` of every live record, in batches;
    vectors are a float32 ``[m, dim]`` array, or a list of SparseVector for a
    sparse collection."""
    return collection.engine.live_batches(collection.name, batch)


HEADER_KEY = "needle_collection"


def collection_header(collection) -> dict:
    """The configuration an export records, as ``importers.files`` reads it back."""
    c = collection.config
    return {"name": collection.name, "dimension": c.dimension, "distance": c.distance.value, "dtype": c.dtype,
            "sparse": c.sparse, "m": c.m, "ef_construction": c.ef_construction, "ef_search": c.ef_search,
            "seed": c.seed}


def export(collection, fmt: str, out: str | None) -> int:
    """Write ``collection`` to ``out`` in ``fmt``; returns the number of records.
    ``out`` None: jsonl to standard output."""
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt != "jsonl" and collection.sparse:
        raise InvalidArgumentError(f"collection {collection.name!r} is sparse: export it with --format jsonl "
                                   f"({fmt} holds dense matrices only)")
    if out is None and fmt != "jsonl":
        raise InvalidArgumentError(f"--format {fmt} writes files: give --out (only jsonl goes to standard output)")
    count = 0
    header = collection_header(collection)
    if fmt == "jsonl":
        f = getattr(sys.stdout, "buffer", None) if out is None else open(out, "wb")
        if f is None:  # a notebook's or redirect_stdout's text stream
            raise InvalidArgumentError("standard output takes no bytes here (a notebook or a redirected stream): "
                                       "give out= a file path")
        try:
            f.write(orjson.dumps({HEADER_KEY: header}) + b"\n")
            for ids, vectors, metas in records(collection):
                f.writelines(b'{"id":' + orjson.dumps(i) + b',"vector":'
                             + orjson.dumps(v.to_dict() if isinstance(v, SparseVector) else v.tolist())
                             + b',"metadata":' + m + b"}\n" for i, v, m in zip(ids, vectors, metas))
                count += len(ids)
            f.flush()
        finally:
            if out is not None:
                f.close()
        return count
    if fmt == "parquet":
        return _export_parquet(collection, out)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "collection.json"), "wb") as f:
        f.write(orjson.dumps(header, option=orjson.OPT_INDENT_2) + b"\n")
    parts = []
    with open(os.path.join(out, "ids.jsonl"), "wb") as fi, open(os.path.join(out, "metadata.jsonl"), "wb") as fm:
        for ids, vectors, metas in records(collection):
            fi.writelines(orjson.dumps(i) + b"\n" for i in ids)
            fm.writelines(m + b"\n" for m in metas)
            parts.append(vectors)
            count += len(ids)
    dim = collection.dimension
    np.save(os.path.join(out, "vectors.npy"), np.concatenate(parts) if parts else np.zeros((0, dim), np.float32))
    return count


def _export_parquet(collection, out: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = collection.dimension
    schema = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32(), dim)), ("metadata", pa.string())],
                       metadata={HEADER_KEY: orjson.dumps(collection_header(collection))})
    count = 0
    with pq.ParquetWriter(out, schema) as writer:
        for ids, vectors, metas in records(collection, batch=65536):
            flat = pa.array(np.ascontiguousarray(vectors).reshape(-1), type=pa.float32())
            writer.write_batch(pa.record_batch(
                [pa.array(ids, pa.string()), pa.FixedSizeListArray.from_arrays(flat, dim),
                 pa.array([m.decode() for m in metas], pa.string())], schema=schema))
            count += len(ids)
    return count
