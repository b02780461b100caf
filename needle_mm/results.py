"""What reads return: :class:`Entry` from ``get``, :class:`SearchResult` from ``search``."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Entry", "SearchResult"]


class Entry:
    """One stored record: ``id``, ``vector`` (float32 numpy array, or a
    :class:`~needle_mm.sparse.SparseVector` in a sparse collection) and ``metadata`` (dict)."""

    __slots__ = ("id", "vector", "metadata")

    def __init__(self, id: str, vector: np.ndarray, metadata: dict):
        self.id = id
        self.vector = vector
        self.metadata = metadata

    def __repr__(self) -> str:
        shown = f"<{self.vector.shape[0]} floats>" if isinstance(self.vector, np.ndarray) else repr(self.vector)
        return f"Entry(id={self.id!r}, vector={shown}, metadata={self.metadata!r})"

    def __eq__(self, other) -> bool:
        if not (isinstance(other, Entry) and self.id == other.id and self.metadata == other.metadata):
            return False
        if isinstance(self.vector, np.ndarray):
            return isinstance(other.vector, np.ndarray) and np.array_equal(self.vector, other.vector)
        return self.vector == other.vector


class SearchResult:
    """One search hit: ``id``, ``distance`` (smaller is closer) and ``metadata``.

    Metadata is decoded on first access, so callers that only read ids and
    distances never pay for JSON decoding. ``vector`` is set when the search
    was asked for vectors (``include_vector=True``), else ``None``.

    Built once per hit on the search hot path, so construction sets only what
    every hit has (``_meta`` stays unset until read; ``vector`` is a class
    default, carried per instance by :meth:`with_vector`'s subclass).
    """

    __slots__ = ("id", "distance", "_source", "_slot", "_meta")
    vector: np.ndarray | None = None

    def __init__(self, id: str, distance: float, source: Any, slot: int):
        self.id = id
        self.distance = distance
        self._source = source  # anything with meta_bytes_at(slot)
        self._slot = slot

    @staticmethod
    def with_vector(id: str, distance: float, source: Any, slot: int, vector) -> "SearchResult":
        return _SearchResultWithVector(id, distance, source, slot, vector)

    @property
    def metadata(self) -> dict[str, Any]:
        try:
            return self._meta
        except AttributeError:
            meta = self._meta = self._source.metadata_at(self._slot)
            return meta

    def __repr__(self) -> str:
        return f"SearchResult(id={self.id!r}, distance={self.distance:.6g})"


class GivenMetadata:
    """The source behind a SearchResult whose metadata arrived already decoded
    (over HTTP, from a shard's actor): ``metadata_at`` returns it."""

    __slots__ = ("metadata",)

    def __init__(self, metadata: dict):
        self.metadata = metadata

    def metadata_at(self, slot: int) -> dict:
        return self.metadata


class _SearchResultWithVector(SearchResult):
    __slots__ = ("vector",)

    def __init__(self, id: str, distance: float, source: Any, slot: int, vector):
        SearchResult.__init__(self, id, distance, source, slot)
        self.vector = vector
