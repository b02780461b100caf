"""Search across everything a collection holds: committed segments + pending.

Each source yields its own top-k: a committed segment through its HNSW graph
(or brute force with ``exact=True``), the unsaved records of this process by
brute force; the per-source lists are merged exactly. Excluded records
(deleted, hidden by a pending write, or rejected by the filter) are a packed
bitmap per source, the one convention every kernel shares.
"""

from __future__ import annotations

from itertools import repeat
from typing import NamedTuple

import numpy as np

from .._kernels import METRIC_CODES, METRIC_EUCLIDEAN
from .._kernels.api import QUERY_IN_PLACE
from .._kernels.api import exact_topk
from .._index.metadata import ViewCache, segment_matches
from ..filters import Filter
from .._kernels import readonly
from .._index.hnsw import DEFAULT_RESCORE, one_query_kernel, search_segment
from .._index.inverted import sparse_topk
from ..results import SearchResult, SearchResults
from .state import CollectionState

_EMPTY = readonly(np.zeros(0, dtype=np.uint8))


def matching(source, flt: Filter) -> np.ndarray:
    """Bool[n]: records of one source the filter accepts (deleted ones included).

    Committed segments answer from their metadata columns (filter_eval);
    this process's unsaved records from the reference evaluator.
    """
    if source.descriptor is not None:
        return segment_matches(source, flt)
    return np.fromiter((flt(source.metadata_at(p)) for p in range(source.n)), dtype=bool,
                       count=source.n)


def live_mask(n: int, excluded: np.ndarray) -> np.ndarray:
    if not excluded.shape[0]:
        return np.ones(n, dtype=bool)
    return ~np.unpackbits(excluded, count=n, bitorder="little").astype(bool)


# A filtered source whose passing records are at most this many (or below
# EXACT_FRACTION of it) also gets their list, so exact search reads only them.
ROWS_LIMIT = 4096


class Filtered(NamedTuple):
    """A source under a filter: ``excluded`` (packed: deleted, hidden or
    rejected), how many records pass, and their slots when they are few."""

    excluded: np.ndarray
    passing: int
    rows: np.ndarray | None


def _filter_excluded(source, n: int, excluded: np.ndarray, flt: Filter) -> Filtered:
    """``excluded`` plus every record the filter rejects.

    A committed segment read with its own tombstones (nothing hidden by this
    process's unsaved writes) gives the same answer for the same filter every
    time, so it is cached on the segment view (views are immutable)."""
    cache = ViewCache(source, "_filtered_cache") if source.descriptor is not None and excluded is source.tombstones \
        else None
    if cache is not None:
        hit = cache.get(flt.key)
        if hit is not None:
            return hit
    passes = matching(source, flt) & live_mask(n, excluded)
    packed = readonly(np.packbits(~passes, bitorder="little"))
    passing = int(np.count_nonzero(passes))
    rows = None
    if passing <= ROWS_LIMIT or passing < EXACT_FRACTION * n:
        rows = readonly(np.flatnonzero(passes).astype(np.int64))
    result = Filtered(packed, passing, rows)
    return result if cache is None else cache.put(flt.key, result)


# Filtered search planner (measured with tools/bench_filters.py on 100k x 384):
# below EXACT_FRACTION of a segment passing, brute force over the passing
# records is exact and faster than any graph walk; below TWO_HOP_FRACTION the
# graph walk measures only passing nodes, reaching them through rejected
# neighbours (ACORN-style two hops); above it, the plain walk passes through
# rejected nodes and returns only passing ones. Widening ef instead cost
# 10x at 10 % passing for the same recall (measured). The two-hop walk's
# recall falls as more records pass (0.971 at 10 %, 0.966 at 14 %, 0.949 at
# 25 %), the plain walk's rises (0.991 at 16 %), hence 15 %.
EXACT_FRACTION = 0.02
TWO_HOP_FRACTION = 0.15


def _filtered_plan(n: int, passing: int, ef: int, k: int) -> tuple[bool, bool]:
    """(use the graph?, walk passing nodes through two-hop links?) for a filtered search of one segment."""
    fraction = passing / max(n, 1)
    if fraction < EXACT_FRACTION or passing <= 4 * max(k, ef):
        return False, False
    return True, fraction < TWO_HOP_FRACTION


def sources(state: CollectionState, predicate: Filter | None):
    """(source, Filtered) for every non-empty source: committed segments, then
    this process's unsaved records. Without a predicate, ``passing`` counts
    records not excluded only where that is free (-1 otherwise) and ``rows`` is None."""
    out = []
    for view, excluded in zip(state.views, state.excluded):
        if predicate is not None:
            out.append((view, _filter_excluded(view, view.n, excluded, predicate)))
        else:
            out.append((view, Filtered(readonly(excluded), -1, None)))
    pending = state.pending
    if pending.index:
        n = pending.n
        excluded = pending.dead[: (n + 7) // 8]
        if not excluded.any():
            excluded = _EMPTY
        if predicate is not None:
            out.append((pending, _filter_excluded(pending, n, excluded, predicate)))
        else:
            out.append((pending, Filtered(readonly(excluded), -1, None)))
    return out


def search_dense(state: CollectionState, queries: np.ndarray, qnorms: np.ndarray, k: int, metric: int,
                 predicate: Filter | None, include_vector: bool, ef: int | None, as_arrays: bool = False,
                 rescore: int = 0):
    """Top-k over every source of a dense collection; ``ef`` None means exact search everywhere.

    This is the per-query hot path: one kernel call per source, one merge,
    ids gathered per source in bulk, metadata left undecoded.
    """
    m = queries.shape[0]
    srcs, found = dense_topk(state, queries, qnorms, k, metric, predicate, ef, rescore)
    if not srcs or k == 0:
        return empty_arrays(m, k) if as_arrays else no_results(m)
    return merge_arrays(srcs, found, k) if as_arrays else merge(srcs, found, k, include_vector)


def dense_topk(state: CollectionState, queries: np.ndarray, qnorms: np.ndarray, k: int, metric: int,
               predicate: Filter | None, ef: int | None, rescore: int = 0):
    """``(sources, found)``: every source with ``(distances[m, w], slots[m, w])``, its own
    top-k of each query (ascending, slot -1 past its last hit), as :func:`merge` takes them."""
    srcs = sources(state, predicate)
    if k == 0:
        return srcs, []
    found = []
    for source, f in srcs:
        graph = ef is not None and source.descriptor is not None and source.descriptor.hnsw is not None
        two_hop = False
        if graph and predicate is not None:
            graph, two_hop = _filtered_plan(source.n, f.passing, ef, k)
        if graph:
            dist, slot = search_segment(source, queries, qnorms, metric, f.excluded, k, ef, two_hop, rescore)
        else:
            vectors, norms = source.dense_arrays()
            dist, slot = exact_topk(vectors, norms, queries, qnorms, metric, f.excluded, k, f.rows)
            if metric == METRIC_EUCLIDEAN:  # this kernel ranks by squared L2; users get the distance
                dist = np.sqrt(dist.astype(np.float64))
        found.append((dist, slot))
    return srcs, found


def ranked(srcs, found, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The merged top ``k`` of each query as ``(source[m, k] int64, slot[m, k] int64,
    distance[m, k] float64)``: positions in ``srcs``, slot -1 and distance +inf past the last
    hit; the order :func:`merge` gives its result lists."""
    m = found[0][1].shape[0]
    if len(found) == 1:
        dist, slot = found[0]
        src = np.zeros(slot.shape, dtype=np.int64)
    else:
        dist = np.concatenate([f[0] for f in found], axis=1)
        slot = np.concatenate([f[1] for f in found], axis=1)
        src = np.repeat(np.arange(len(found), dtype=np.int64), [f[1].shape[1] for f in found])
        src = np.broadcast_to(src[None, :], slot.shape)
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        dist, slot, src = (np.take_along_axis(a, order, axis=1) for a in (dist, slot, src))
    out_src = np.zeros((m, k), dtype=np.int64)
    out_slot = np.full((m, k), -1, dtype=np.int64)
    out_dist = np.full((m, k), np.inf, dtype=np.float64)
    width = min(k, slot.shape[1])
    hit = slot[:, :width] >= 0
    out_src[:, :width][hit] = src[:, :width][hit]
    out_slot[:, :width][hit] = slot[:, :width][hit]
    out_dist[:, :width][hit] = dist[:, :width][hit]
    return out_src, out_slot, out_dist


_FLOAT32 = np.dtype(np.float32)
QUICK_LIMIT = 4096  # k and ef above this take the checked path (which clamps them)


class QuickSearch:
    """The lean call: one query of the commonest shape answered by one kernel
    call, with no per-hit numpy and no argument conversion.

    The shape: a dense collection whose live records are all in one committed
    segment with a graph (nothing unsaved in this process), no filter, and a
    float32 C-contiguous aligned writable query of the collection's dimension
    (the one numpy makes by default), k and ef plain ints. Bound to that
    segment and the exclusion bitmap it was built with; :meth:`__call__`
    returns None for anything else, for a query the checked path refuses (not
    finite, or all zeros for cosine) and for a damaged graph, and the caller
    then takes the checked path, which answers the same (or names the
    problem). Built once per state
    and segment (:func:`quick`); its kernel takes its scratch and outputs from
    the segment's per-thread pool, so threads share it safely."""

    __slots__ = ("view", "source_excluded", "excluded", "shape", "fn", "head", "pool", "ef_search", "rescore",
                 "quantized")

    def __init__(self, view, source_excluded, excluded, bound, ef_search: int, rescore: int):
        self.view = view
        self.source_excluded = source_excluded
        self.excluded = excluded  # read-only view of source_excluded, as the kernel was chosen for
        self.shape = (view.dim,)
        self.fn, self.head, self.pool = bound
        self.ef_search = ef_search
        self.quantized = view.quantized
        self.rescore = rescore

    @classmethod
    def of(cls, state: CollectionState):
        meta = state.descriptor
        if meta.kind == "sparse" or len(state.views) != 1 or state.pending.index:
            return None
        view = state.views[0]
        if view.descriptor is None or view.descriptor.hnsw is None or view.n == 0:
            return None
        source_excluded = state.excluded[0]
        excluded = readonly(source_excluded)
        bound = one_query_kernel(view, METRIC_CODES[meta.distance], excluded)
        if bound is None:
            return None
        view.check_ids()  # (its results decode ids when read)
        return cls(view, source_excluded, excluded, bound, meta.hnsw.ef_search, DEFAULT_RESCORE.get(meta.quantization, 0))

    def fits(self, state: CollectionState) -> bool:
        """Whether ``state`` still holds exactly what this was bound to."""
        views = state.views
        return (len(views) == 1 and views[0] is self.view and state.excluded[0] is self.source_excluded
                and not state.pending.index)

    def __call__(self, query, k, ef, rescore, as_arrays: bool):
        if (query.shape != self.shape or query.dtype is not _FLOAT32
                or query.flags.num & QUERY_IN_PLACE != QUERY_IN_PLACE
                or type(k) is not int or not 0 < k <= QUICK_LIMIT):
            return None
        if ef is None:
            ef = self.ef_search
        elif type(ef) is not int or not 0 < ef <= QUICK_LIMIT:
            return None
        if rescore is None:
            rescore = self.rescore
        elif type(rescore) is not int or not 0 <= rescore <= QUICK_LIMIT:
            return None
        # (the kernel computes the query's norm as the checked path does, _input.queries, and refuses what
        # that path refuses: a norm not finite, or zero for cosine)
        visited, tags, cand_d, cand_i, out_d, out_i, row_d, row_i = self.pool.one(k)
        width = ef if ef > k else k
        if self.quantized:
            if k * rescore > width:
                width = k * rescore
            hits = self.fn(*self.head, query, self.excluded, k, width, rescore, visited, tags, cand_d, cand_i,
                           out_d, out_i)
        else:  # (rescore applies to quantized segments only)
            hits = self.fn(*self.head, query, self.excluded, k, width, visited, tags, cand_d, cand_i, out_d, out_i)
        if hits < 0:  # the graph is damaged, or the query refused: the checked path names the problem
            return None
        slots = row_i.tolist()
        if hits < k:
            del slots[hits:]
        if as_arrays:
            names = np.empty(k, dtype=object)
            names[:hits] = self.view.ids_at(slots)
            return names, row_d.astype(np.float32)  # inf past the last hit, as the kernel left them
        dists = row_d.tolist()
        if hits < k:
            del dists[hits:]
        return SearchResults(self.view, slots, dists)  # ids and objects made when read


def quick(state: CollectionState, query, k, ef, rescore, as_arrays: bool):
    """:class:`QuickSearch` of ``state`` (built or rebuilt as needed) on one
    query, or None: not that shape, take the checked path."""
    found = state.quick
    if found is None or not found.fits(state):
        found = state.quick = QuickSearch.of(state)
        if found is None:
            return None
    return found(query, k, ef, rescore, as_arrays)


def search_sparse(state: CollectionState, qs: list, k: int, predicate: Filter | None,
                  include_vector: bool, as_arrays: bool = False):
    """Exact top-k by dot product over every source of a sparse collection (``qs``: SparseVectors)."""
    srcs = sources(state, predicate)
    if not srcs or k == 0:
        return empty_arrays(len(qs), k) if as_arrays else no_results(len(qs))
    found = [sparse_topk(source.posting_chunks(), source.n, qs, f.excluded, k) for source, f in srcs]
    return merge_arrays(srcs, found, k) if as_arrays else merge(srcs, found, k, include_vector)


def no_results(m: int) -> list[SearchResults]:
    """The answers of ``m`` queries that found nothing."""
    return [SearchResults.of([]) for _ in range(m)]


def empty_arrays(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, distances)`` of ``m`` queries that found nothing: ``None`` ids, ``inf`` distances."""
    return np.full((m, k), None, dtype=object), np.full((m, k), np.inf, dtype=np.float32)


def merge_arrays(srcs, found, k: int) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`merge`, but ``(ids[m, k] object, distances[m, k] float32)`` arrays,
    ``None`` / ``inf`` past each query's last hit: no result objects at all."""
    m = found[0][1].shape[0]
    if len(found) == 1:
        return _arrays_of_one_source(srcs[0][0], *found[0], k)
    src, slot, dist = ranked(srcs, found, k)
    ids = np.full((m, k), None, dtype=object)
    hit = slot >= 0
    for j, (source, _) in enumerate(srcs):
        mine = hit & (src == j)
        if mine.any():
            ids[mine] = source.ids_at(slot[mine].tolist())
    return ids, dist.astype(np.float32)


def _arrays_of_one_source(source, dist: np.ndarray, slot: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`merge_arrays` of one source's ``(distances[m, w], slots[m, w])``
    (ascending, slot -1 past each query's last hit): the common case, with
    every id gathered at once and no per-source masks (measured: 2x faster
    for one query, 1.5x for a batch)."""
    m, w = slot.shape
    width = min(k, w)
    ids = np.empty((m, k), dtype=object)  # None everywhere
    if m == 1:  # one query: its hits are a prefix of its row (slot -1 after the last)
        slots = slot[0, :width].tolist()
        if -1 in slots:
            slots = slots[:slots.index(-1)]
        hits = len(slots)
        ids[0, :hits] = source.ids_at(slots)  # slicing ids in Python beats a kernel call's fixed cost (measured)
        if hits == k:
            return ids, dist.astype(np.float32)[:, :k]
        dists = np.full((1, k), np.inf, dtype=np.float32)
        dists[0, :hits] = dist[0, :hits]
        return ids, dists
    slot = slot[:, :width]
    found = slot >= 0
    full = bool(found.all())
    names = source.ids_of(np.ascontiguousarray(slot))
    if full:
        ids[:, :width] = np.array(names, dtype=object).reshape(m, width)
        if width == k:
            return ids, dist.astype(np.float32)[:, :k]
    else:
        ids[:, :width][found] = np.array(names, dtype=object).reshape(m, width)[found]
    dists = np.full((m, k), np.inf, dtype=np.float32)
    dists[:, :width][found] = dist[:, :width][found]
    return ids, dists


def merge(srcs, found, k: int, include_vector: bool) -> list[SearchResults]:
    """One result list per query from each source's ``(distances[m, k], slots[m, k])``
    (ascending, slot -1 past the end): merged exactly, ids gathered in bulk."""
    if len(found) == 1:
        return _rows_of_one_source(srcs[0][0], *found[0], include_vector)
    src, slot, dist = ranked(srcs, found, k)
    dists, slots = dist.tolist(), slot.tolist()
    results = []
    for drow, srow, irow in zip(dists, slots, src.tolist()):
        count = k - srow.count(-1)
        row = []
        for j in range(count):
            source, s = srcs[irow[j]][0], srow[j]
            if include_vector:
                row.append(SearchResult.with_vector(source.id_at(s), drow[j], source, s, source.vector_at(s)))
            else:
                row.append(SearchResult(source.id_at(s), drow[j], source, s))
        results.append(SearchResults.of(row))
    return results


def _rows_of_one_source(source, dist: np.ndarray, slot: np.ndarray, include_vector: bool) -> list[SearchResults]:
    """The result lists of one source's ``(distances[m, w], slots[m, w])`` (slot -1
    past each query's last hit). A committed segment is immutable, and held while
    results refer to it: its results keep only slots and distances, and make ids and
    objects when read. This process's unsaved records change: theirs are made now."""
    rows = list(zip(slot.tolist(), dist.tolist()))  # a list per query row, made in C
    for srow, drow in rows:
        if srow and srow[-1] == -1:  # fewer hits than the row holds: slots of -1 pad its tail
            count = srow.index(-1)
            del srow[count:], drow[count:]
    if include_vector:
        return [SearchResults.of([SearchResult.with_vector(i, d, source, s, source.vector_at(s))
                                  for i, d, s in zip(source.ids_at(srow), drow, srow)]) for srow, drow in rows]
    if source.descriptor is None:
        return [SearchResults.of(list(map(SearchResult, source.ids_at(srow), drow, repeat(source), srow)))
                for srow, drow in rows]
    source.check_ids()
    return list(map(SearchResults, repeat(source), *zip(*rows))) if rows else []
