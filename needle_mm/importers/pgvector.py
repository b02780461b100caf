"""PostgreSQL with pgvector: keyset pages over the id column, binary transfer.

Position: the last id read (ids must be unique and orderable: a primary key).
Vectors arrive in pgvector's binary form (``int16 dim, int16 unused, dim x
float32`` big-endian) unless ``binary=False``, which reads their text form.
The metadata column (``json``/``jsonb``, optional) is read as text and parsed
by orjson.
"""

from __future__ import annotations

import numpy as np
import orjson

from ..errors import SourceError
from ._run import Batch, Source

OPERATORS = {"cosine": "<=>", "euclidean": "<->", "dot": "<#>"}


def _ident(name: str) -> str:
    from psycopg import sql

    return sql.Identifier(*name.split(".")).as_string(None)


def parse_vector(value) -> np.ndarray:
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        dim = int.from_bytes(raw[:2], "big")
        return np.frombuffer(raw, dtype=">f4", count=dim, offset=4).astype(np.float32)
    if isinstance(value, str):
        return np.array(orjson.loads(value), dtype=np.float32)  # '[1,2,3]' is JSON
    return np.asarray(value, dtype=np.float32)  # real[] / float8[] columns arrive as lists


class PgvectorSource(Source):
    kind = "pgvector"

    def __init__(self, dsn: str, table: str, id_column: str = "id", vector_column: str = "embedding",
                 metadata_column: str | None = "metadata", distance: str | None = None, binary: bool = True):
        import psycopg

        try:
            self.conn = psycopg.connect(dsn, autocommit=True)
        except psycopg.Error as exc:
            raise SourceError(f"cannot connect to PostgreSQL: {exc}") from None
        self.binary = binary
        self.t, self.i, self.v = _ident(table), _ident(id_column), _ident(vector_column)
        self.m = _ident(metadata_column) if metadata_column else None
        meta = f"{self.m}::text" if self.m else "NULL"
        vec = self.v if binary else f"{self.v}::text"
        self.select = f"SELECT {self.i}, {vec}, {meta} FROM {self.t}"
        try:
            row = self.conn.execute(f"SELECT {self.v} FROM {self.t} LIMIT 1", binary=True).fetchone()
        except psycopg.Error as exc:
            raise SourceError(f"cannot read {table}.{vector_column}: {exc}") from None
        self.dim = 0 if row is None else parse_vector(row[0]).shape[0]
        self.distance = distance  # pgvector columns do not record one
        self.description = {"kind": "pgvector", "table": table, "id": id_column, "vector": vector_column,
                            "metadata": metadata_column}

    def count(self) -> int:
        return self.conn.execute(f"SELECT count(*) FROM {self.t}").fetchone()[0]

    def _rows(self, rows):
        ids = [str(r[0]) for r in rows]
        vectors = np.stack([parse_vector(r[1]) for r in rows]) if rows else np.zeros((0, self.dim), np.float32)
        metas = [orjson.loads(r[2]) if r[2] is not None else {} for r in rows]
        return ids, vectors, metas

    def batches(self, position, batch_size):
        last = position["last"] if position else None
        while True:
            if last is None:
                sql, args = f"{self.select} ORDER BY {self.i} LIMIT %s", (batch_size,)
            else:
                sql, args = f"{self.select} WHERE {self.i} > %s ORDER BY {self.i} LIMIT %s", (last, batch_size)
            rows = self.conn.execute(sql, args, binary=self.binary).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            if isinstance(last, bytes):
                last = last.decode()
            ids, vectors, metas = self._rows(rows)
            yield Batch(ids, vectors, metas, {"last": last})

    def fetch(self, ids):
        rows = self.conn.execute(f"{self.select} WHERE {self.i}::text = ANY(%s)", (list(ids),),
                                 binary=self.binary).fetchall()
        got_ids, vectors, metas = self._rows(rows)
        return {i: (v, m) for i, v, m in zip(got_ids, vectors, metas)}

    def search(self, vector, k):
        op = OPERATORS.get(self.distance or "")
        if op is None:
            return None
        literal = "[" + ",".join(repr(float(x)) for x in vector) + "]"
        rows = self.conn.execute(f"SELECT {self.i} FROM {self.t} ORDER BY {self.v} {op} %s::vector LIMIT %s",
                                 (literal, k)).fetchall()
        return [str(r[0]) for r in rows]

    def close(self):
        self.conn.close()
