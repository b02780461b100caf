"""The Ray actor that serves one shard file.

It opens its shard read-only, and reopens it for writing only when the first
write routed to it arrives (a serving set of actors never takes a writer
lock). Everything it returns is plain data (numpy arrays, lists, dicts,
:class:`~needle_mm.results.Entry`), so Ray pickles it without Needle's
segments crossing a process boundary. Ray runs one method of an actor at a
time, so the Database needs no lock of its own here.
"""

from __future__ import annotations

import numpy as np

from ..database import Database
from ..errors import ReadOnlyError


class ShardServer:
    def __init__(self, path: str, collection: str, read_only: bool):
        self._path = path
        self._name = collection
        self._read_only = read_only
        self._db: Database | None = None

    def open(self) -> dict:
        """Open the shard; what it holds, for the driver to check against the manifest."""
        self._db = Database.open(self._path, read_only=True)
        collection = self._db.collection(self._name)
        config = collection.config
        return {"dimension": config.dimension, "distance": config.distance.value, "count": collection.count(),
                "generation": self._db.generation}

    def _collection(self):
        return self._db.collection(self._name)

    def _writable(self):
        if self._read_only:
            raise ReadOnlyError("this ShardedCollection was opened read_only=True")
        if self._db.read_only:
            self._db.close()
            self._db = Database.open(self._path)
        return self._collection()

    # ---------------------------------------------------------------- reads

    def search_arrays(self, queries: np.ndarray, k: int, filter, ef, exact: bool, rescore):
        return self._collection().search_batch(queries, k, filter, ef=ef, exact=exact, rescore=rescore,
                                               as_arrays=True)

    def search_hits(self, queries: np.ndarray, k: int, filter, ef, exact: bool, rescore, include_vector: bool):
        """Per query, its hits as ``(id, distance, metadata, vector or None)``."""
        rows = self._collection().search_batch(queries, k, filter, ef=ef, exact=exact, rescore=rescore,
                                               include_vector=include_vector)
        return [[(r.id, r.distance, r.metadata, r.vector) for r in row] for row in rows]

    def count(self, filter) -> int:
        return self._collection().count(filter)

    def get_many(self, ids: list[str]) -> list:
        return self._collection().get_many(ids)

    def live_among(self, ids: list[str]) -> list[str]:
        collection = self._collection()
        return [i for i in ids if i in collection]

    def ids(self, filter) -> list[str]:
        return list(self._collection().ids(filter))

    # ---------------------------------------------------------------- writes

    def insert_many(self, ids, vectors, metadatas) -> None:
        self._writable().insert_many(ids, vectors, metadatas)

    def upsert_many(self, ids, vectors, metadatas) -> None:
        self._writable().upsert_many(ids, vectors, metadatas)

    def delete(self, ids, filter) -> int:
        return self._writable().delete(ids, filter=filter)

    def update_metadata(self, id: str, metadata) -> None:
        self._writable().update_metadata(id, metadata)

    def save(self) -> int:
        """Commit this shard's writes; the generation it is at afterwards."""
        if not self._db.read_only:
            self._db.save()
        return self._db.generation

    def dirty(self) -> bool:
        return not self._db.read_only and self._db.dirty

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
