"""Search across everything a collection holds: committed segments + pending.

Each source (a segment, or the pending records) yields its own top-k with the
exact kernel; the per-source lists are merged exactly. Excluded records (deleted,
hidden by a pending write, or rejected by the filter) are a packed bitmap per
source, the one convention every kernel shares.
"""

from __future__ import annotations

import numpy as np

from ._kernels import METRIC_COSINE, METRIC_EUCLIDEAN
from ._kernels.exact import exact_topk
from .filters import Predicate
from .index import readonly, search_segment
from .results import SearchResult
from .state import CollectionState

_EMPTY = readonly(np.zeros(0, dtype=np.uint8))


def _filter_excluded(source, n: int, excluded: np.ndarray, predicate: Predicate) -> np.ndarray:
    """``excluded`` plus every record the predicate rejects."""
    import orjson

    if excluded.shape[0]:
        candidates = np.flatnonzero(~np.unpackbits(excluded, bitorder="little")[:n].astype(bool))
    else:
        candidates = range(n)
    allowed = np.zeros(n, dtype=bool)
    for slot in candidates:
        if predicate(orjson.loads(source.meta_bytes_at(int(slot)))):
            allowed[slot] = True
    return np.packbits(~allowed, bitorder="little")


def sources(state: CollectionState, predicate: Predicate | None):
    """(source, vectors, norms, excluded) for every non-empty source."""
    out = []
    for view, excluded in zip(state.views, state.excluded):
        if predicate is not None:
            excluded = _filter_excluded(view, view.n, excluded, predicate)
        out.append((view, view.vectors, view.norms, readonly(excluded)))
    pending = state.pending
    if pending.index:
        n = pending.n
        excluded = pending.dead[: (n + 7) // 8]
        if not excluded.any():
            excluded = _EMPTY
        if predicate is not None:
            excluded = _filter_excluded(pending, n, excluded, predicate)
        out.append((pending, readonly(pending.vectors[:n]), readonly(pending.norms[:n]), readonly(excluded)))
    return out


def search(state: CollectionState, queries: np.ndarray, qnorms: np.ndarray, k: int, metric: int,
           predicate: Predicate | None, include_vector: bool, ef: int | None) -> list[list[SearchResult]]:
    """Top-k over every source; ``ef`` None means exact search everywhere."""
    m = queries.shape[0]
    srcs = sources(state, predicate)
    if not srcs or k == 0:
        return [[] for _ in range(m)]
    all_d, all_s, all_src = [], [], []
    for index, (source, vectors, norms, excluded) in enumerate(srcs):
        if ef is not None and getattr(getattr(source, "meta", None), "hnsw", None) is not None:
            d, s = search_segment(source, queries, qnorms, metric, excluded, k, ef)
        else:
            d, s = exact_topk(vectors, norms, queries, qnorms, metric, excluded, k)
        all_d.append(d)
        all_s.append(s)
        all_src.append(np.full(s.shape, index, dtype=np.int32))
    dist = np.concatenate(all_d, axis=1)
    slot = np.concatenate(all_s, axis=1)
    src = np.concatenate(all_src, axis=1)
    if len(srcs) > 1:
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        dist = np.take_along_axis(dist, order, axis=1)
        slot = np.take_along_axis(slot, order, axis=1)
        src = np.take_along_axis(src, order, axis=1)
    if metric == METRIC_EUCLIDEAN:
        dist = np.sqrt(np.maximum(dist, 0.0))
    results = []
    for q in range(m):
        row = []
        for d, s, i in zip(dist[q].tolist(), slot[q].tolist(), src[q].tolist()):
            if s < 0:
                break
            source, vectors = srcs[i][0], srcs[i][1]
            vec = np.array(vectors[s], dtype=np.float32) if include_vector else None
            row.append(SearchResult(source.id_at(s), d, source, s, vec))
        results.append(row)
    return results


def query_norms(queries: np.ndarray, metric: int) -> np.ndarray:
    from . import validation

    qn = validation.norms(queries, "query")
    if metric == METRIC_COSINE:
        validation.require_nonzero(qn, "query")
    return qn
