"""What reads return: :class:`Entry` from ``get``, :class:`SearchResult` from ``search``."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

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
    """

    __slots__ = ("id", "distance", "vector", "_source", "_slot", "_meta")

    def __init__(self, id: str, distance: float, source: Any, slot: int,
                 vector: np.ndarray | None = None):
        self.id = id
        self.distance = distance
        self.vector = vector
        self._source = source  # anything with meta_bytes_at(slot)
        self._slot = slot
        self._meta = None

    @property
    def metadata(self) -> dict[str, Any]:
        if self._meta is None:
            self._meta = orjson.loads(self._source.meta_bytes_at(self._slot))
        return self._meta

    def __repr__(self) -> str:
        return f"SearchResult(id={self.id!r}, distance={self.distance:.6g})"
