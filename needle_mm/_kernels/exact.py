"""Exact (brute-force) k-nearest-neighbour search, fused in numba.

Why this shape: distances and top-k are computed in one pass, never
materialising an n-long distance array. Work is split into tasks of
(a tile of up to 8 queries) x (a chunk of rows): each row is loaded once per
tile and dotted with every query of the tile while it sits in L1, which cuts
memory traffic by the tile size for batches. Tasks run under ``prange``
(or, on the ahead-of-time kernels, on Python threads over ``_scan``); for
small jobs the serial kernel avoids thread start-up cost. The driver that
picks between them is ``api.exact_topk``.

We do not call BLAS here on purpose: OpenBLAS's worker threads and numba's
spin against each other on a small machine (measured: a 3,000 x 384 query
went from 0.08 ms to 8.7 ms when the two alternated).

Each task keeps a max-heap per query (root = current worst) in its own slice
of ``heap_d``/``heap_i``; a final pass merges the chunks per query.
Euclidean distances are squared here; the caller takes the root.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from . import FASTMATH, METRIC_COSINE, METRIC_EUCLIDEAN, QUERY_TILE, kernel
from .halves import as_f32
from .heaps import maxheap_replace_root

_ALL_ROWS = np.zeros(0, dtype=np.int64)  # "no row list": scan rows in order


@kernel(fastmath=FASTMATH)
def _scan(vectors, norms, queries, qnorms, metric, excluded, rows, q0, q1, r0, r1, heap_d, heap_i, c):
    """Rows ``r0 .. r1-1`` into the heaps of queries ``q0 .. q1-1`` (slot ``c``);
    with a non-empty ``rows``, positions ``r0 .. r1-1`` of that list instead."""
    d = vectors.shape[1]
    has_excluded = excluded.shape[0] > 0
    listed = rows.shape[0] > 0
    for t in range(r0, r1):
        r = rows[t] if listed else t
        if has_excluded and (excluded[r >> 3] >> (r & 7)) & 1:
            continue
        xn = norms[r]
        for q in range(q0, q1):
            acc = np.float32(0.0)
            if metric == METRIC_EUCLIDEAN:
                for j in range(d):
                    t = as_f32(vectors[r, j]) - queries[q, j]
                    acc += t * t
                dist = acc
            else:
                for j in range(d):
                    acc += as_f32(vectors[r, j]) * queries[q, j]
                if metric == METRIC_COSINE:
                    dist = np.float32(1.0) - acc / (xn * qnorms[q])
                else:
                    dist = np.float32(1.0) - acc
            # a distance that is not finite (NaN, or a zero norm in a damaged file) is never a result
            if abs(dist) < np.float32(np.inf) and dist < heap_d[q, c, 0]:
                maxheap_replace_root(heap_d[q, c], heap_i[q, c], heap_d.shape[2], dist, r)


@kernel()
def _merge(heap_d, heap_i, k, out_d, out_i, q):
    flat_d = heap_d[q].ravel()
    flat_i = heap_i[q].ravel()
    order = np.argsort(flat_d, kind="mergesort")
    for j in range(k):
        out_d[q, j] = flat_d[order[j]]
        out_i[q, j] = flat_i[order[j]]


@kernel()
def exact_topk_serial(vectors, norms, queries, qnorms, metric, excluded, k, rows):
    m = queries.shape[0]
    n = rows.shape[0] if rows.shape[0] > 0 else vectors.shape[0]
    heap_d = np.full((m, 1, k), np.inf, dtype=np.float32)
    heap_i = np.full((m, 1, k), -1, dtype=np.int64)
    for q0 in range(0, m, QUERY_TILE):
        _scan(vectors, norms, queries, qnorms, metric, excluded, rows, q0, min(m, q0 + QUERY_TILE), 0, n,
              heap_d, heap_i, 0)
    out_d = np.empty((m, k), dtype=np.float32)
    out_i = np.empty((m, k), dtype=np.int64)
    for q in range(m):
        _merge(heap_d, heap_i, k, out_d, out_i, q)
    return out_d, out_i


@kernel(parallel=True)
def exact_topk_parallel(vectors, norms, queries, qnorms, metric, excluded, k, n_chunks):
    m = queries.shape[0]
    n = vectors.shape[0]
    n_tiles = (m + QUERY_TILE - 1) // QUERY_TILE
    chunk = (n + n_chunks - 1) // n_chunks
    heap_d = np.full((m, n_chunks, k), np.inf, dtype=np.float32)
    heap_i = np.full((m, n_chunks, k), -1, dtype=np.int64)
    for task in prange(n_tiles * n_chunks):
        tile = task // n_chunks
        c = task % n_chunks
        q0 = tile * QUERY_TILE
        r0 = c * chunk
        _scan(vectors, norms, queries, qnorms, metric, excluded, _ALL_ROWS, q0, min(m, q0 + QUERY_TILE),
              r0, min(n, r0 + chunk), heap_d, heap_i, c)
    out_d = np.empty((m, k), dtype=np.float32)
    out_i = np.empty((m, k), dtype=np.int64)
    for q in prange(m):
        _merge(heap_d, heap_i, k, out_d, out_i, q)
    return out_d, out_i


__all__ = ["exact_topk_serial", "exact_topk_parallel"]
