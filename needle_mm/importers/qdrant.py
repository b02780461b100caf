"""Qdrant: local mode (a directory) or a server, ``scroll`` paging.

Point ids (unsigned ints or UUIDs) become strings, the payload becomes the
metadata. Position: Qdrant's next-page offset (a point id; scroll walks ids
in order) plus rows read.
"""

from __future__ import annotations

import uuid

import numpy as np

from ..errors import SourceError
from ._run import Batch, Source

DISTANCES = {"Cosine": "cosine", "Euclid": "euclidean", "Dot": "dot"}


def _point_id(id: str):
    """A Needle id back to the Qdrant id it came from (an int or a UUID string)."""
    if id.isdigit():
        return int(id)
    return str(uuid.UUID(id))


class QdrantSource(Source):
    kind = "qdrant"

    def __init__(self, collection: str, path: str | None = None, url: str | None = None,
                 api_key: str | None = None, vector_name: str | None = None, client=None):
        from qdrant_client import QdrantClient

        self._owned = client is None  # close only a client this source opened
        if client is None:
            if (path is None) == (url is None):
                raise SourceError("give the Qdrant local directory (path=, --path) or a server (url=, --url)")
            client = QdrantClient(path=path) if path is not None else QdrantClient(url=url, api_key=api_key)
        self.client, self.name, self.vector_name = client, collection, vector_name
        try:
            info = client.get_collection(collection)
        except Exception as exc:  # local mode raises ValueError, a server UnexpectedResponse
            raise SourceError(f"Qdrant has no collection {collection!r}: {exc}") from None
        params = info.config.params.vectors
        if isinstance(params, dict):
            if vector_name not in params:
                raise SourceError(f"collection {collection!r} has named vectors {sorted(params)}; "
                                  "choose one with vector_name= (--vector-name)")
            params = params[vector_name]
        elif vector_name is not None:
            raise SourceError(f"collection {collection!r} has one unnamed vector; drop --vector-name")
        self.dim = params.size
        self.distance = DISTANCES.get(getattr(params.distance, "value", str(params.distance)))
        self.description = {"kind": "qdrant", "location": path or url, "collection": collection,
                            "vector": vector_name}

    def count(self) -> int:
        return self.client.count(self.name, exact=True).count

    def _vector(self, point):
        v = point.vector
        return v[self.vector_name] if self.vector_name is not None else v

    def batches(self, position, batch_size):
        offset = position["offset"] if position else None
        rows = position["rows"] if position else 0
        if position is not None and offset is None:
            return
        while True:
            points, offset = self.client.scroll(self.name, limit=batch_size, offset=offset, with_payload=True,
                                                with_vectors=[self.vector_name] if self.vector_name else True)
            rows += len(points)
            yield Batch([str(p.id) for p in points], np.asarray([self._vector(p) for p in points], dtype=np.float32),
                        [p.payload or {} for p in points], {"offset": offset, "rows": rows})
            if offset is None:
                return

    def fetch(self, ids):
        points = self.client.retrieve(self.name, ids=[_point_id(i) for i in ids], with_payload=True,
                                      with_vectors=[self.vector_name] if self.vector_name else True)
        return {str(p.id): (np.asarray(self._vector(p), dtype=np.float32), p.payload or {}) for p in points}

    def search(self, vector, k):
        result = self.client.query_points(self.name, query=np.asarray(vector).tolist(), using=self.vector_name,
                                          limit=k, with_payload=False)
        return [str(p.id) for p in result.points]

    def close(self):
        if self._owned:
            self.client.close()
