"""Filters evaluated column-wise over a segment (SPEC.md §5.6), exactly as
the reference evaluator of :mod:`needle_mm.filters` would.

Each node of a filter's plan tree gives two boolean arrays over a column
chunk's records: ``match`` and ``unknown``. ``unknown`` marks records the
columns cannot answer (an operator they do not model, an array or object
literal, a record with complex metadata); those records, and only those, are
evaluated from the orjson log with the reference predicate. Negation and
boolean combinations keep ``unknown`` conservative (OR of the parts), so a
record's final answer is always the reference's.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict

import numpy as np

from .._kernels.api import csr_any, csr_length_is
from .._format.columns import (
    KIND_ARRAY,
    KIND_BOOL,
    KIND_MISSING,
    KIND_NOTHING,
    KIND_NULL,
    KIND_NUMBER,
    KIND_OBJECT,
    KIND_OTHER,
    KIND_STRING,
    ChunkView,
)
from ..filters import Filter, _is_number

_CMP = {"$gt": np.greater, "$gte": np.greater_equal, "$lt": np.less, "$lte": np.less_equal}


class _Field:
    """One path in one chunk: the effective kind per record and its columns."""

    def __init__(self, chunk: ChunkView, path: str):
        parts = path.split(".")
        n = chunk.count
        self.n = n
        self.chunk = chunk
        self.unknown = chunk.complex.astype(bool)
        if any(p.isdigit() for p in parts):  # array positions: left to the reference
            self.unknown = np.ones(n, dtype=bool)
        eff = None
        for i in range(len(parts)):
            col = chunk.fields.get(".".join(parts[: i + 1]))
            kind = col.kind if col is not None else np.zeros(n, dtype=np.uint8)
            if eff is None:
                eff = kind.copy()
            else:
                passthrough = (eff == KIND_MISSING) | (eff == KIND_OTHER)
                eff = np.where(eff == KIND_OBJECT, kind, np.where(passthrough, eff, KIND_NOTHING)).astype(np.uint8)
        self.kind = eff
        self.col = chunk.fields.get(path)
        self.unknown |= eff == KIND_OTHER

    def elements_any(self, element_mask: np.ndarray) -> np.ndarray:
        col = self.col
        if col is None or col.elem_offsets is None:
            return np.zeros(self.n, dtype=bool)
        return csr_any(col.elem_offsets, element_mask) & (self.kind == KIND_ARRAY)

    def code_of(self, s: str) -> int:
        strings = self.chunk.strings
        i = bisect.bisect_left(strings, s)
        return i if i < len(strings) and strings[i] == s else -1

    # ---------------------------------------------------------- operators

    def eq(self, v) -> tuple[np.ndarray, np.ndarray]:
        kind, col, none = self.kind, self.col, np.zeros(self.n, dtype=bool)
        if isinstance(v, (list, dict)):  # array / object equality: the reference decides
            return none, (kind == KIND_ARRAY) | (kind == KIND_OBJECT)
        if v is None:
            m = (kind == KIND_MISSING) | (kind == KIND_NULL)
            if col is not None and col.elem_offsets is not None:
                m |= self.elements_any(col.elem_kind == KIND_NULL)
            return m, none
        if col is None:
            return none, none
        if isinstance(v, bool):
            m = (kind == KIND_BOOL) & (col.flag == int(v))
            if col.elem_offsets is not None:
                m |= self.elements_any((col.elem_kind == KIND_BOOL) & (col.elem_flag == int(v)))
            return m, none
        if _is_number(v):
            m = (kind == KIND_NUMBER) & (col.num == float(v))
            if col.elem_offsets is not None:
                m |= self.elements_any((col.elem_kind == KIND_NUMBER) & (col.elem_num == float(v)))
            return m, none
        code = self.code_of(v)
        if code < 0:
            return none, none
        m = (kind == KIND_STRING) & (col.code == code)
        if col.elem_offsets is not None:
            m |= self.elements_any(col.elem_code == code)
        return m, none

    def compare(self, op: str, v) -> tuple[np.ndarray, np.ndarray]:
        none = np.zeros(self.n, dtype=bool)
        if v is None:
            return self.eq(None) if op in ("$gte", "$lte") else (none, none)
        col, kind = self.col, self.kind
        if col is None:
            return none, none
        cmp = _CMP[op]
        if isinstance(v, str):
            strings = self.chunk.strings
            # codes follow sorted order, so comparing strings is comparing codes
            lo, hi = bisect.bisect_left(strings, v), bisect.bisect_right(strings, v)
            bound = {"$gt": hi, "$gte": lo, "$lt": lo, "$lte": hi}[op]

            def test(codes, kinds, want):
                ok = (kinds == want) & (codes >= 0)
                return ok & (codes >= bound if op in ("$gt", "$gte") else codes < bound)
            m = test(col.code, kind, KIND_STRING)
            if col.elem_offsets is not None:
                m |= self.elements_any(test(col.elem_code, col.elem_kind, KIND_STRING))
            return m, none
        if isinstance(v, bool):
            m = (kind == KIND_BOOL) & cmp(col.flag.astype(np.int64), int(v))
            if col.elem_offsets is not None:
                m |= self.elements_any((col.elem_kind == KIND_BOOL) & cmp(col.elem_flag.astype(np.int64), int(v)))
            return m, none
        m = (kind == KIND_NUMBER) & cmp(col.num, float(v))
        if col.elem_offsets is not None:
            m |= self.elements_any((col.elem_kind == KIND_NUMBER) & cmp(col.elem_num, float(v)))
        return m, none

    def contains(self, s: str) -> tuple[np.ndarray, np.ndarray]:
        none = np.zeros(self.n, dtype=bool)
        col = self.col
        if col is None:
            return none, none
        hit = np.array([s in x for x in self.chunk.strings] + [False], dtype=bool)  # index -1 -> False
        m = (self.kind == KIND_STRING) & hit[col.code]
        if col.elem_offsets is not None:
            m |= self.elements_any((col.elem_kind == KIND_STRING) & hit[col.elem_code])
        return m, none

    def size(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        col = self.col
        if col is None or col.elem_offsets is None:
            return np.zeros(self.n, dtype=bool), np.zeros(self.n, dtype=bool)
        return csr_length_is(col.elem_offsets, length) & (self.kind == KIND_ARRAY), np.zeros(self.n, dtype=bool)


def _ops(field: _Field, ops: list) -> tuple[np.ndarray, np.ndarray]:
    match = np.ones(field.n, dtype=bool)
    unknown = np.zeros(field.n, dtype=bool)
    for op, arg in ops:
        if op == "$eq":
            m, u = field.eq(arg)
        elif op == "$ne":
            m, u = field.eq(arg)
            m = ~m
        elif op in _CMP:
            m, u = field.compare(op, arg)
        elif op in ("$in", "$nin"):
            m, u = np.zeros(field.n, dtype=bool), np.zeros(field.n, dtype=bool)
            for item in arg:
                mi, ui = field.eq(item)
                m |= mi
                u |= ui
            if op == "$nin":
                m = ~m
        elif op == "$exists":
            present = (field.kind != KIND_MISSING) & (field.kind != KIND_NOTHING)
            m, u = (present if arg else ~present), np.zeros(field.n, dtype=bool)
        elif op == "$not":
            m, u = _ops(field, arg)
            m = ~m
        elif op == "$contains":
            m, u = field.contains(arg)
        elif op == "$all":
            if not arg:
                m, u = np.zeros(field.n, dtype=bool), np.zeros(field.n, dtype=bool)
            else:
                m, u = np.ones(field.n, dtype=bool), np.zeros(field.n, dtype=bool)
                for item in arg:
                    mi, ui = field.eq(item)
                    m &= mi
                    u |= ui
        elif op == "$size":
            m, u = field.size(int(arg))
        else:  # $elemMatch and anything else: the reference evaluates every record
            m, u = np.zeros(field.n, dtype=bool), np.ones(field.n, dtype=bool)
        match &= m
        unknown |= u
    return match, unknown


def evaluate_chunk(tree, chunk: ChunkView) -> tuple[np.ndarray, np.ndarray]:
    kind = tree[0]
    if kind == "field":
        field = _Field(chunk, tree[1])
        match, unknown = _ops(field, tree[2])
        return match, unknown | field.unknown
    parts = [evaluate_chunk(t, chunk) for t in tree[1]]
    unknown = np.logical_or.reduce([u for _, u in parts])
    if kind == "and":
        match = np.logical_and.reduce([m for m, _ in parts])
    else:
        match = np.logical_or.reduce([m for m, _ in parts])
        if kind == "nor":
            match = ~match
    return match, unknown


# ----------------------------------------------------------------- per segment

_CACHE_SIZE = 32
_cache_lock = threading.Lock()


class ViewCache:
    """A small LRU map stored on an immutable segment view: the answers of the
    last few filters, which stay valid for as long as the view lives."""

    def __init__(self, view, name: str, size: int = _CACHE_SIZE):
        entries = view.caches.get(name)
        if entries is None:
            with _cache_lock:
                entries = view.caches.setdefault(name, OrderedDict())
        self.entries = entries
        self.size = size

    def get(self, key):
        return self.entries.get(key)

    def put(self, key, value):
        with _cache_lock:
            self.entries[key] = value
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return value


def segment_matches(view, flt: Filter) -> np.ndarray:
    """Bool[n]: which slots of a committed segment the filter accepts (tombstones ignored).

    Cached per segment view (views are immutable) for the last few filters.
    """
    cache = ViewCache(view, "_filter_cache")
    hit = cache.get(flt.key)
    if hit is not None:
        return hit
    n = view.n
    match = np.zeros(n, dtype=bool)
    unknown = np.ones(n, dtype=bool)
    for start, chunk in view.column_chunks():
        m, u = evaluate_chunk(flt.tree, chunk)
        match[start:start + chunk.count] = m
        unknown[start:start + chunk.count] = u
    for slot in np.flatnonzero(unknown).tolist():
        match[slot] = flt.predicate(view.metadata_at(slot))
    match.flags.writeable = False
    return cache.put(flt.key, match)
