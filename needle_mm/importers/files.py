"""Files: JSON lines, numpy ``.npy`` (+ id and metadata side files), Parquet.

The formats ``needle export`` writes, so an export imports back unchanged:

- ``jsonl``: one object per line, ``{"id", "vector", "metadata"}``
  (``values``/``embedding`` and ``payload`` are accepted as other names);
  vectors ``{"indices": [...], "values": [...]}`` make a sparse collection;
- ``npy``: a ``[n, dim]`` array; ids one per line in a text file (or JSON
  strings in a ``.jsonl`` file; default: row numbers); metadata one JSON
  object per line. A directory written by ``needle export --format npy``
  (``vectors.npy``, ``ids.jsonl``, ``metadata.jsonl``) works as is;
- ``parquet``: columns ``id``, ``vector`` (list of floats) and ``metadata``
  (a JSON string or a struct); without a ``metadata`` column, every other
  column is metadata.

Position: rows read.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import orjson

from ..errors import SourceError
from ._run import Batch, Source

HEADER_KEY = "needle_collection"  # what `needle export` records of the collection (ops/export.py)


def _header(raw, where: str) -> dict:
    """The collection configuration an export recorded (``{}`` if none)."""
    if raw is None:
        return {}
    try:
        header = orjson.loads(raw) if isinstance(raw, (bytes, str)) else raw
    except orjson.JSONDecodeError:
        header = None
    if not isinstance(header, dict):
        raise SourceError(f"{where}: the recorded collection configuration is not a JSON object")
    dim = header.get("dimension")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 0):
        raise SourceError(f"{where}: the recorded dimension {dim!r} is not a non-negative integer")
    return header


def _lines(path: str):
    try:
        with open(path, "rb") as f:
            yield from (line for line in f if line.strip())
    except OSError as exc:
        raise SourceError(f"cannot read {path!r}: {exc}") from None


def read_ids(path: str, n: int) -> list[str]:
    """Ids of a side file: JSON strings in ``.jsonl`` files, else one per line as text."""
    as_json = path.endswith(".jsonl")
    ids = [str(orjson.loads(line)) if as_json else line.rstrip(b"\r\n").decode("utf-8") for line in _lines(path)]
    if len(ids) != n:
        raise SourceError(f"{path!r} holds {len(ids)} ids for {n} vectors")
    return ids


def read_metadata(path: str, n: int) -> list[dict]:
    try:
        metas = [orjson.loads(line) for line in _lines(path)]
    except orjson.JSONDecodeError as exc:
        raise SourceError(f"{path!r} is not JSON lines: {exc}") from None
    if len(metas) != n:
        raise SourceError(f"{path!r} holds {len(metas)} metadata lines for {n} vectors")
    return metas


class _RowsSource(Source):
    """A source whose position is a row number and whose records fit an id -> row map."""

    def fetch(self, ids):
        return {i: self.record(self.row[i]) for i in ids if i in self.row}


class NpySource(_RowsSource):
    kind = "npy"

    def __init__(self, vectors: str, ids: str | None = None, metadata: str | None = None,
                 distance: str | None = None):
        if os.path.isdir(vectors):  # a `needle export --format npy` directory
            folder = vectors
            vectors = os.path.join(folder, "vectors.npy")
            ids = ids or os.path.join(folder, "ids.jsonl")
            metadata = metadata or os.path.join(folder, "metadata.jsonl")
            recorded = os.path.join(folder, "collection.json")
            if os.path.exists(recorded):
                with open(recorded, "rb") as f:
                    self.config = _header(f.read(), recorded)
        try:
            self.vectors = np.load(vectors, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SourceError(f"cannot read {vectors!r} as .npy: {exc}") from None
        if self.vectors.ndim != 2:
            raise SourceError(f"{vectors!r} holds a {self.vectors.ndim}-D array; expected [n, dim]")
        n, self.dim = self.vectors.shape
        self.ids = read_ids(ids, n) if ids else [str(i) for i in range(n)]
        self.metadata = read_metadata(metadata, n) if metadata else None
        self.row = {id: r for r, id in enumerate(self.ids)}
        self.distance = distance or self.config.get("distance")
        self.description = {"kind": "npy", "vectors": os.path.abspath(vectors), "ids": ids, "metadata": metadata}

    def count(self):
        return self.vectors.shape[0]

    def record(self, r):
        return np.asarray(self.vectors[r], dtype=np.float32), (self.metadata[r] if self.metadata else {})

    def batches(self, position, batch_size):
        n = self.vectors.shape[0]
        for start in range(position or 0, n, batch_size):
            stop = min(start + batch_size, n)
            metas = self.metadata[start:stop] if self.metadata else [None] * (stop - start)
            yield Batch(self.ids[start:stop], self.vectors[start:stop], metas, stop)


class JsonlSource(_RowsSource):
    kind = "jsonl"

    def __init__(self, path: str, distance: str | None = None, dim: int | None = None):
        self.path = path
        self.skip = 0  # a first line holding the exported collection's configuration
        head = next(iter(_lines(path)), None)
        if head is not None and HEADER_KEY.encode() in head:
            try:
                doc = orjson.loads(head)
            except orjson.JSONDecodeError:
                doc = None  # reported as a bad record below
            if isinstance(doc, dict) and set(doc) == {HEADER_KEY}:  # only that key: a record has an id
                self.config = _header(doc[HEADER_KEY], f"{path!r} line 1")
                self.skip = 1
        first = next(iter(self._records(0)), None)
        # Sparse records ({"indices", "values"}, as a sparse collection exports)
        # go into a sparse collection, whose dimension the lines do not carry:
        # `dim`, else one past the largest index in the file.
        self.sparse = first is not None and isinstance(first[1], dict)
        distance = distance or self.config.get("distance")
        self.distance = "dot" if self.sparse and distance is None else distance
        if self.sparse:
            self.dim = dim or self.config.get("dimension") or 1 + max(
                (max(v["indices"], default=-1) for _, v, _ in self._records(0)
                 if isinstance(v, dict) and isinstance(v.get("indices"), list)), default=0)
        else:
            self.dim = len(first[1]) if first is not None else int(self.config.get("dimension") or 0)
        self.description = {"kind": "jsonl", "path": os.path.abspath(path)}
        self._index = None

    def _records(self, start: int):
        for number, line in enumerate(itertools.islice(_lines(self.path), start + self.skip, None),
                                      start + self.skip + 1):
            try:
                doc = orjson.loads(line)
                vector = next(doc[k] for k in ("vector", "values", "embedding") if k in doc)
                yield str(doc["id"]), vector, doc.get("metadata", doc.get("payload")) or {}
            except (orjson.JSONDecodeError, KeyError, StopIteration, TypeError):
                raise SourceError(f"{self.path!r} line {number} is not an object with id and vector") from None

    def count(self):
        return sum(1 for _ in _lines(self.path)) - self.skip

    @property
    def row(self):
        if self._index is None:
            self._records_list = list(self._records(0))
            self._index = {r[0]: i for i, r in enumerate(self._records_list)}
        return self._index

    def record(self, r):
        _, vector, meta = self._records_list[r]
        return (vector if self.sparse else np.asarray(vector, dtype=np.float32)), meta

    def batches(self, position, batch_size):
        rows = position or 0
        records = self._records(rows)
        while True:
            chunk = list(itertools.islice(records, batch_size))
            if not chunk:
                return
            rows += len(chunk)
            ids, vectors, metas = zip(*chunk)
            yield Batch(list(ids), list(vectors), list(metas), rows)


class ParquetSource(_RowsSource):
    kind = "parquet"

    def __init__(self, path: str, id_column: str = "id", vector_column: str = "vector",
                 metadata_column: str | None = "metadata", distance: str | None = None):
        import pyarrow.parquet as pq

        try:
            self.file = pq.ParquetFile(path)
        except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
            raise SourceError(f"cannot read {path!r} as Parquet: {exc}") from None
        names = self.file.schema_arrow.names
        for column in (id_column, vector_column):
            if column not in names:
                raise SourceError(f"{path!r} has no column {column!r} (columns: {names})")
        self.path, self.id_column, self.vector_column = path, id_column, vector_column
        self.metadata_column = metadata_column if metadata_column in names else None
        self.other = [c for c in names if c not in (id_column, vector_column)] if self.metadata_column is None else []
        first = next(self.file.iter_batches(batch_size=1, columns=[vector_column]), None)
        recorded = (self.file.schema_arrow.metadata or {}).get(HEADER_KEY.encode())
        self.config = _header(recorded, f"{path!r} schema metadata")
        if first is None or first.num_rows == 0:
            self.dim = int(self.config.get("dimension") or 0)
        else:
            self.dim = len(first.column(0)[0])
        self.distance = distance or self.config.get("distance")
        self.description = {"kind": "parquet", "path": os.path.abspath(path)}
        self._table = None

    def count(self):
        return self.file.metadata.num_rows

    def _convert(self, table):
        ids = [str(i) for i in table.column(self.id_column).to_pylist()]
        column = table.column(self.vector_column)
        if hasattr(column, "combine_chunks"):  # a Table's column; a RecordBatch's is one array already
            column = column.combine_chunks()
        flat = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        vectors = flat.reshape(len(ids), -1) if len(ids) else np.zeros((0, self.dim), np.float32)
        if self.metadata_column is not None:
            raw = table.column(self.metadata_column).to_pylist()
            metas = [orjson.loads(m) if isinstance(m, (str, bytes)) else (m or {}) for m in raw]
        else:
            cols = {c: table.column(c).to_pylist() for c in self.other}
            metas = [{c: cols[c][r] for c in self.other} for r in range(len(ids))]
        return ids, vectors, metas

    @property
    def row(self):
        if self._table is None:
            self._table = self._convert(self.file.read())
            self._index = {id: r for r, id in enumerate(self._table[0])}
        return self._index

    def record(self, r):
        return self._table[1][r], self._table[2][r]

    def batches(self, position, batch_size):
        skip = rows = position or 0
        for part in self.file.iter_batches(batch_size=batch_size):
            if skip >= part.num_rows:
                skip -= part.num_rows
                continue
            part = part.slice(skip)
            skip = 0
            rows += part.num_rows
            ids, vectors, metas = self._convert(part)
            yield Batch(ids, vectors, metas, rows)
