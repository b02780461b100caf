"""Chroma: a PersistentClient directory (or a running server), paged ``get``.

Chroma keeps documents beside metadata; as the migration guide does, a
record's document goes into ``metadata["document"]``. Position: rows read
(Chroma's ``get`` pages in insertion order).
"""

from __future__ import annotations

import numpy as np

from ..errors import SourceError
from ._run import Batch, Source

SPACES = {"cosine": "cosine", "l2": "euclidean", "ip": "dot"}


def _metadata(meta, document) -> dict:
    meta = dict(meta or {})
    if document:
        meta["document"] = document
    return meta


class ChromaSource(Source):
    kind = "chroma"

    def __init__(self, collection: str, path: str | None = None, host: str | None = None, port: int = 8000,
                 client=None):
        import chromadb

        if client is None:
            if (path is None) == (host is None):
                raise SourceError("give the Chroma directory (path=, --path) or a server (host=, --host)")
            client = chromadb.PersistentClient(path) if path is not None else chromadb.HttpClient(host=host, port=port)
        try:
            self.coll = client.get_collection(collection)
        except Exception as exc:  # chromadb raises its own NotFoundError / ValueError by version
            raise SourceError(f"Chroma has no collection {collection!r}: {exc}") from None
        self.description = {"kind": "chroma", "location": path or f"{host}:{port}", "collection": collection}
        space = (getattr(self.coll, "configuration", None) or {}).get("hnsw", {}) or {}
        space = space.get("space") or (self.coll.metadata or {}).get("hnsw:space", "l2")
        self.distance = SPACES.get(space)
        first = self.coll.get(limit=1, include=["embeddings"])
        self.dim = len(first["embeddings"][0]) if first["ids"] else 0

    def count(self) -> int:
        return self.coll.count()

    def batches(self, position, batch_size):
        offset = position or 0
        while True:
            page = self.coll.get(limit=batch_size, offset=offset, include=["embeddings", "metadatas", "documents"])
            ids = page["ids"]
            if not ids:
                return
            docs = page["documents"] or [None] * len(ids)
            metas = page["metadatas"] or [None] * len(ids)
            offset += len(ids)
            yield Batch(list(ids), np.asarray(page["embeddings"], dtype=np.float32),
                        [_metadata(m, d) for m, d in zip(metas, docs)], offset)

    def fetch(self, ids):
        page = self.coll.get(ids=list(ids), include=["embeddings", "metadatas", "documents"])
        docs = page["documents"] or [None] * len(page["ids"])
        metas = page["metadatas"] or [None] * len(page["ids"])
        return {i: (np.asarray(v, dtype=np.float32), _metadata(m, d))
                for i, v, m, d in zip(page["ids"], page["embeddings"], metas, docs)}

    def search(self, vector, k):
        return self.coll.query(query_embeddings=[np.asarray(vector).tolist()], n_results=k, include=[])["ids"][0]
