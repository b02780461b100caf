"""Sparse dot-product search by posting-list accumulation (SPEC.md §5.7).

A query touches only the posting lists of its own indices: each entry adds
``value x query value`` to its slot's score, and a slot is recorded in
``hits`` the first time it is reached, so ranking looks at the reached slots
only, never at all ``n``. Scratch arrays (``scores``, ``marks``) are left
zeroed after ranking, so a caller can reuse them for the next query.
Kernels run one query (serial) or one query per task (``prange``).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from . import kernel
from .heaps import maxheap_replace_root


@kernel(inline="always")
def _accumulate_one(dims, list_offsets, slots, values, q_idx, q_val, scores, marks, hits, nhits):
    d = dims.shape[0]
    for j in range(q_idx.shape[0]):
        target = q_idx[j]
        lo, hi = 0, d
        while lo < hi:  # binary search: dims are strictly ascending
            mid = (lo + hi) >> 1
            if dims[mid] < target:
                lo = mid + 1
            else:
                hi = mid
        if lo == d or dims[lo] != target:
            continue
        qv = q_val[j]
        for e in range(list_offsets[lo], list_offsets[lo + 1]):
            s = slots[e]
            if marks[s] == 0:
                marks[s] = 1
                hits[nhits] = s
                nhits += 1
            scores[s] += qv * values[e]
    return nhits


@kernel(inline="always")
def _rank_one(scores, marks, hits, nhits, excluded, k, out_d, out_i):
    """Top-k reached slots by ``1 - score`` into ``out_d``/``out_i`` (ascending,
    padded with inf/-1); resets the scratch entries it read."""
    has_excluded = excluded.shape[0] > 0
    heap_d = np.full(k, np.inf, dtype=np.float32)
    heap_i = np.full(k, -1, dtype=np.int64)
    for h in range(nhits):
        s = hits[h]
        dist = np.float32(1.0) - scores[s]
        scores[s] = 0.0
        marks[s] = 0
        if has_excluded and (excluded[s >> 3] >> (s & 7)) & 1:
            continue
        if dist < heap_d[0]:
            maxheap_replace_root(heap_d, heap_i, k, dist, s)
    order = np.argsort(heap_d, kind="mergesort")
    for j in range(k):
        out_d[j] = heap_d[order[j]]
        out_i[j] = heap_i[order[j]] if heap_d[order[j]] < np.inf else -1


@kernel()
def accumulate_serial(dims, list_offsets, slots, values, q_off, q_idx, q_val, scores, marks, hits, nhits):
    for q in range(q_off.shape[0] - 1):
        a, b = q_off[q], q_off[q + 1]
        nhits[q] = _accumulate_one(dims, list_offsets, slots, values, q_idx[a:b], q_val[a:b], scores[q], marks[q],
                                   hits[q], nhits[q])


@kernel(parallel=True)
def accumulate_parallel(dims, list_offsets, slots, values, q_off, q_idx, q_val, scores, marks, hits, nhits):
    for q in prange(q_off.shape[0] - 1):
        a, b = q_off[q], q_off[q + 1]
        nhits[q] = _accumulate_one(dims, list_offsets, slots, values, q_idx[a:b], q_val[a:b], scores[q], marks[q],
                                   hits[q], nhits[q])


@kernel()
def rank_serial(scores, marks, hits, nhits, excluded, k, out_d, out_i):
    for q in range(nhits.shape[0]):
        _rank_one(scores[q], marks[q], hits[q], nhits[q], excluded, k, out_d[q], out_i[q])


@kernel(parallel=True)
def rank_parallel(scores, marks, hits, nhits, excluded, k, out_d, out_i):
    for q in prange(nhits.shape[0]):
        _rank_one(scores[q], marks[q], hits[q], nhits[q], excluded, k, out_d[q], out_i[q])


@kernel()
def check_chunk(dims, list_offsets, slots, start, count, dim) -> int:
    """0 if a posting chunk from a file is safe to search, else a problem code:
    1 dims not strictly ascending or >= dim, 2 list offsets not monotonic from 0
    to the entry count, 3 a slot outside the chunk's range."""
    for j in range(dims.shape[0]):
        if dims[j] >= dim or (j > 0 and dims[j] <= dims[j - 1]):
            return 1
    if list_offsets[0] != 0 or list_offsets[list_offsets.shape[0] - 1] != slots.shape[0]:
        return 2
    for j in range(dims.shape[0]):
        if list_offsets[j + 1] < list_offsets[j]:
            return 2
    for e in range(slots.shape[0]):
        if slots[e] < start or slots[e] >= start + count:
            return 3
    return 0


__all__ = ["accumulate_serial", "accumulate_parallel", "rank_serial", "rank_parallel", "check_chunk"]
