"""What reads return: :class:`Entry` from ``get``, :class:`SearchResults` of :class:`SearchResult` from ``search``."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np

__all__ = ["Entry", "SearchResult", "SearchResults"]


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


class SearchResults(Sequence):
    """The hits of one search, closest first: a read-only sequence of
    :class:`SearchResult` (indexing, slicing into a list, ``len``, iteration,
    ``==`` against any list of hits).

    A search of one segment keeps only each hit's slot and distance; the ids
    and the :class:`SearchResult` objects are made when first read, all at
    once. Reading :attr:`ids` or :attr:`distances` makes no objects at all.
    The segment view they are read from stays valid (its generation stays
    held in the reader table, SPEC §7.3) for as long as these results exist.
    """

    __slots__ = ("_source", "_slots", "_distances", "_items")

    def __init__(self, source: Any, slots: list[int], distances: list[float]):
        self._source = source  # anything with ids_at(slots) and metadata_at(slot)
        self._slots = slots
        self._distances = distances
        self._items = None

    @classmethod
    def of(cls, items: list) -> "SearchResults":
        """Results made already (several sources merged, vectors included, hybrid, remote)."""
        made = cls.__new__(cls)
        made._source = made._slots = made._distances = None
        made._items = items
        return made

    def _list(self) -> list:
        items = self._items
        if items is None:
            source, slots = self._source, self._slots
            items = self._items = list(map(SearchResult, source.ids_at(slots), self._distances,
                                           repeat(source, len(slots)), slots))
        return items

    @property
    def ids(self) -> list[str]:
        """The hits' ids, closest first."""
        items = self._items
        if items is None:
            return self._source.ids_at(self._slots)
        return [r.id for r in items]

    @property
    def distances(self) -> list[float]:
        """The hits' distances, ascending."""
        items = self._items
        return list(self._distances) if items is None else [r.distance for r in items]

    def __len__(self) -> int:
        items = self._items
        return len(self._slots) if items is None else len(items)

    def __getitem__(self, index):
        return self._list()[index]

    def __iter__(self):
        return iter(self._list())

    def __reversed__(self):
        return reversed(self._list())

    def __eq__(self, other) -> bool:
        if isinstance(other, SearchResults):
            return self._list() == other._list()
        if isinstance(other, (list, tuple)):
            return self._list() == list(other)
        return NotImplemented

    __hash__ = None  # like a list

    def __add__(self, other):
        return self._list() + list(other)

    def __radd__(self, other):
        return list(other) + self._list()

    def __reduce__(self):
        return (SearchResults.of, (self._list(),))

    def __repr__(self) -> str:
        return repr(self._list())
