"""Milvus (a server, or milvus-lite's local file) through ``MilvusClient``.

Rows come from ``query_iterator`` in primary-key order; position: the last
primary key read, so a resumed import asks for ``pk > last``. The metadata of
a row is every field except the primary key and the vector (dynamic fields
included), or, with ``metadata_field``, that one JSON field.
"""

from __future__ import annotations

import numpy as np
import orjson

from ..errors import SourceError
from ._run import Batch, Source

METRICS = {"COSINE": "cosine", "L2": "euclidean", "IP": "dot"}
VECTOR_TYPES = ("FLOAT_VECTOR", "FLOAT16_VECTOR", "BFLOAT16_VECTOR")


class MilvusSource(Source):
    kind = "milvus"

    def __init__(self, uri: str, collection: str, token: str | None = None, vector_field: str | None = None,
                 metadata_field: str | None = None):
        from pymilvus import MilvusClient

        try:
            self.client = MilvusClient(uri, token=token or "")
        except Exception as exc:  # pymilvus raises MilvusException subclasses, milvus-lite its own
            raise SourceError(f"cannot open Milvus at {uri!r}: {exc}") from None
        self.name, self.metadata_field = collection, metadata_field
        if not self.client.has_collection(collection):
            raise SourceError(f"Milvus at {uri!r} has no collection {collection!r}")
        self.client.load_collection(collection)  # a released collection answers no query (the guide's load())
        fields = self.client.describe_collection(collection)["fields"]
        self.pk = next(f["name"] for f in fields if f.get("is_primary"))
        self.pk_is_int = getattr(next(f["type"] for f in fields if f["name"] == self.pk), "name", "") == "INT64"
        vectors = [f for f in fields if getattr(f["type"], "name", "") in VECTOR_TYPES]
        if vector_field is not None:
            vectors = [f for f in vectors if f["name"] == vector_field]
        if len(vectors) != 1:
            raise SourceError(f"collection {collection!r} has dense vector fields {[f['name'] for f in vectors]}; "
                              "choose one with vector_field= (--vector-field)")
        self.vector = vectors[0]["name"]
        self.dim = int(vectors[0]["params"]["dim"])
        self.distance = None
        for index in self.client.list_indexes(collection, field_name=self.vector):
            metric = self.client.describe_index(collection, index).get("metric_type")
            self.distance = METRICS.get(str(metric).upper(), self.distance)
        self.description = {"kind": "milvus", "location": uri, "collection": collection, "vector": self.vector}

    def count(self) -> int:
        return int(self.client.query(self.name, filter="", output_fields=["count(*)"])[0]["count(*)"])

    def _record(self, row):
        vector = row[self.vector]
        if self.metadata_field is not None:
            meta = row.get(self.metadata_field) or {}
            meta = orjson.loads(meta) if isinstance(meta, (str, bytes)) else meta
        else:
            meta = {k: v for k, v in row.items() if k not in (self.pk, self.vector)}
        return str(row[self.pk]), vector, meta

    def _filter(self, last) -> str:
        if last is None:
            return ""
        return f"{self.pk} > {last}" if self.pk_is_int else f"{self.pk} > {orjson.dumps(last).decode()}"

    def batches(self, position, batch_size):
        last = position["last"] if position else None
        iterator = self.client.query_iterator(self.name, batch_size=batch_size, filter=self._filter(last),
                                              output_fields=["*"])
        try:
            while True:
                rows = iterator.next()
                if not rows:
                    return
                for row in rows:  # resuming at "pk > last" is exact only if pages come in key order
                    if last is not None and row[self.pk] <= last:
                        raise SourceError("Milvus returned rows out of primary-key order; cannot import resumably")
                    last = row[self.pk]
                ids, vectors, metas = zip(*(self._record(r) for r in rows))
                yield Batch(list(ids), np.asarray(vectors, dtype=np.float32), list(metas), {"last": last})
        finally:
            iterator.close()

    def fetch(self, ids):
        keys = [int(i) for i in ids] if self.pk_is_int else list(ids)
        rows = self.client.get(self.name, ids=keys, output_fields=["*"])
        return {i: (np.asarray(v, dtype=np.float32), m) for i, v, m in map(self._record, rows)}

    def search(self, vector, k):
        hits = self.client.search(self.name, data=[np.asarray(vector).tolist()], limit=k, anns_field=self.vector,
                                  output_fields=[self.pk])
        return [str(h["id"]) for h in hits[0]]

    def close(self):
        self.client.close()
