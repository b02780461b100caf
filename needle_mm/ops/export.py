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

Sparse collections export to jsonl only (npy and parquet hold dense
matrices). Records come out in storage order, live records only, from one snapshot.
"""

from __future__ import annotations

import os
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


def export(collection, fmt: str, out: str) -> int:
    """Write ``collection`` to ``out`` in ``fmt``; returns the number of records."""
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt != "jsonl" and collection.sparse:
        raise InvalidArgumentError(f"collection {collection.name!r} is sparse: export it with --format jsonl "
                                   f"({fmt} holds dense matrices only)")
    count = 0
    if fmt == "jsonl":
        with open(out, "wb") as f:
            for ids, vectors, metas in records(collection):
                for i, v, m in zip(ids, vectors, metas):
                    vector = v.to_dict() if isinstance(v, SparseVector) else v.tolist()
                    f.write(b'{"id":' + orjson.dumps(i) + b',"vector":' + orjson.dumps(vector)
                            + b',"metadata":' + m + b"}\n")
                count += len(ids)
        return count
    if fmt == "parquet":
        return _export_parquet(collection, out)
    os.makedirs(out, exist_ok=True)
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
    schema = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32(), dim)), ("metadata", pa.string())])
    count = 0
    with pq.ParquetWriter(out, schema) as writer:
        for ids, vectors, metas in records(collection, batch=65536):
            flat = pa.array(np.ascontiguousarray(vectors).reshape(-1), type=pa.float32())
            writer.write_batch(pa.record_batch(
                [pa.array(ids, pa.string()), pa.FixedSizeListArray.from_arrays(flat, dim),
                 pa.array([m.decode() for m in metas], pa.string())], schema=schema))
            count += len(ids)
    return count
