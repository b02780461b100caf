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


def _records(page) -> tuple[list[str], np.ndarray, list[dict]]:
    """Ids, vectors and metadata (the document merged in) of one ``get`` result."""
    ids = list(page["ids"])
    docs = page["documents"] or [None] * len(ids)
    metas = []
    for meta, document in zip(page["metadatas"] or [None] * len(ids), docs):
        meta = dict(meta or {})
        if document:
            meta["document"] = document
        metas.append(meta)
    vectors = np.asarray(page["embeddings"], dtype=np.float32) if ids else np.zeros((0, 0), np.float32)
    return ids, vectors, metas


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
            ids, vectors, metas = _records(page)
            if not ids:
                return
            offset += len(ids)
            yield Batch(ids, vectors, metas, offset)

    def fetch(self, ids):
        got_ids, vectors, metas = _records(self.coll.get(ids=list(ids), include=["embeddings", "metadatas", "documents"]))
        return {i: (v, m) for i, v, m in zip(got_ids, vectors, metas)}

    def search(self, vector, k):
        return self.coll.query(query_embeddings=[np.asarray(vector).tolist()], n_results=k, include=[])["ids"][0]
