"""HNSW graphs of segments: building and extending (writers), searching (readers).

The numba kernels live in ``_kernels/hnsw.py``; this module owns the arrays
around them: level draws, growing the adjacency arrays for new nodes, the
batch schedule of a build, the per-process pools of visited-marks buffers,
and the checks that turn a bad graph into ``CorruptFileError``.
"""

from __future__ import annotations

import math
import mmap
import threading
from dataclasses import dataclass

import numba
import numpy as np

from .._format.catalog import MAX_LEVEL, HnswGraph
from .._format.segment import graph_problems
from .._kernels import hnsw as kernels
from .._kernels import readonly
from ..errors import CorruptFileError
from .._storage.mapping import ask_huge_pages

MAX_BATCH = 64  # nodes per parallel batch (measured: 64 builds 1.7x faster than 1024 on 2 cores)


@dataclass
class Graph:
    """A segment's graph, writable, as a writer builds it."""

    levels: np.ndarray  # u8 [n]
    links0: np.ndarray  # i32 [n, 2M]
    upper_offsets: np.ndarray  # u32 [n + 1], in rows of upper_links
    upper_links: np.ndarray  # i32 [rows, M]
    entry_point: int
    max_level: int

    @property
    def descriptor(self) -> HnswGraph:
        return HnswGraph(self.entry_point, self.max_level)


HUGE_PAGE = 2 << 20


def build_buffer(shape: tuple, dtype) -> np.ndarray:
    """A zeroed array for the graph build, in anonymous memory the OS is asked
    to back with transparent huge pages (2 MB) where it can (Linux).

    The build reads vector rows and link rows of random nodes; with 4 KB
    pages nearly every such read also misses the TLB. Measured on 100k x 384:
    2,498-2,779 rec/s on ordinary memory, 3,092-3,159 on huge pages. Small
    arrays get ordinary memory; where huge pages are refused, the results
    are the same (the graph does not depend on where its arrays live).
    """
    dt = np.dtype(dtype)
    count = math.prod(shape)
    if count * dt.itemsize < HUGE_PAGE:
        return np.zeros(shape, dtype=dt)
    area = mmap.mmap(-1, count * dt.itemsize)  # anonymous: zero-filled, freed with the last array using it
    ask_huge_pages(area)
    return np.frombuffer(area, dtype=dt, count=count).reshape(shape)


def draw_levels(count: int, m: int, seed: int, segment_id: int, start: int) -> np.ndarray:
    """Levels of nodes ``start .. start+count-1``: floor(-ln(U) / ln(M)), reproducible."""
    rng = np.random.default_rng([seed, segment_id, start])
    u = 1.0 - rng.random(count)  # (0, 1]
    levels = np.floor(-np.log(u) / math.log(m)).astype(np.int64)
    return np.minimum(levels, MAX_LEVEL).astype(np.uint8)


def extend_graph(old: Graph | None, blocks: list[np.ndarray], norms: np.ndarray, m: int, ef_construction: int,
                 metric: int, new_levels: np.ndarray, dtype: str = "f32") -> Graph:
    """``old``'s graph (over the first rows of the vectors) with the remaining rows added as nodes.

    The vectors are ``blocks`` stacked in order (e.g. a segment's committed
    rows, then new ones), copied once into the build's own memory
    (:func:`build_buffer`). ``old`` None means a new graph over all rows.
    ``dtype`` "f16": the rows are float16 values (as an f16 collection stores
    them) and the build reads them as halves, half the memory traffic of
    float32 (the same distances: widening a half is exact).
    """
    n = sum(b.shape[0] for b in blocks)
    dim = blocks[0].shape[1]
    vectors = build_buffer((n, dim), np.float16 if dtype == "f16" else np.float32)
    at = 0
    for block in blocks:
        vectors[at:at + block.shape[0]] = block
        at += block.shape[0]
    if dtype == "f16":
        vectors = vectors.view(np.uint16)
    n_old = 0 if old is None else old.levels.shape[0]
    assert n_old + new_levels.shape[0] == n and norms.shape[0] == n
    levels = np.empty(n, dtype=np.uint8)
    levels[n_old:] = new_levels
    links0 = build_buffer((n, 2 * m), np.int32)
    links0.fill(-1)
    if old is not None:
        levels[:n_old] = old.levels
        links0[:n_old] = old.links0
    upper_offsets = np.zeros(n + 1, dtype=np.uint32)
    np.cumsum(levels, dtype=np.uint32, out=upper_offsets[1:])
    upper_links = build_buffer((int(upper_offsets[-1]), m), np.int32)
    upper_links.fill(-1)
    if old is not None:
        upper_links[: old.upper_links.shape[0]] = old.upper_links
        entry, max_level, start = old.entry_point, old.max_level, n_old
    else:
        entry, max_level, start = 0, int(levels[0]), 1
    threads = numba.get_num_threads()
    visited = build_buffer((threads, n), np.uint16)
    tags = np.zeros(threads, dtype=np.uint16)
    heap_d = build_buffer((threads, n), np.float32)
    heap_i = build_buffer((threads, n), np.int32)
    vectors, norms = readonly(vectors), readonly(np.ascontiguousarray(norms, dtype=np.float32))
    while start < n:
        stop = min(n, start + max(1, min(MAX_BATCH, start // 8)))
        entry, max_level = kernels.insert_batch(vectors, norms, metric, links0, levels, upper_offsets, upper_links,
                                                start, stop, entry, max_level, m, ef_construction, visited, tags,
                                                heap_d, heap_i)
        start = stop
    return Graph(levels, links0, upper_offsets, upper_links, int(entry), int(max_level))


def graph_of(view) -> Graph:
    """The committed graph of a segment view (read-only arrays), checked first:
    a damaged graph is refused, never extended."""
    problems = graph_problems(view)
    if problems:
        raise CorruptFileError(f"{view.path!r}: segment {view.descriptor.segment_id}: {problems[0]}; "
                               "no commit can extend it (run needle verify; needle rebuild makes a new graph)")
    h = view.descriptor.hnsw
    return Graph(view.hnsw_levels, view.hnsw_links0, view.hnsw_upper_offsets, view.hnsw_upper_links,
                 h.entry_point, h.max_level)


class VisitedPool(threading.local):
    """Search scratch of one segment, one set per thread (searches in several
    threads run concurrently: the kernels release the GIL): visited marks
    with their tags, and the candidate heap (capacity n, see search_layer).

    Allocated lazily (untouched pages cost nothing) and reused with tags, so
    no search clears n entries.
    """

    def __init__(self, n: int):
        self.n = n
        self.buffers: tuple[np.ndarray, ...] | None = None

    def get(self, rows: int) -> tuple[np.ndarray, ...]:
        buffers = self.buffers
        if buffers is None or buffers[0].shape[0] < rows:
            buffers = self.buffers = (np.zeros((rows, self.n), dtype=np.uint16), np.zeros(rows, dtype=np.uint16),
                                      np.empty((rows, self.n), dtype=np.float32),
                                      np.empty((rows, self.n), dtype=np.int32))
        return buffers


_pools_lock = threading.Lock()


def _searcher(view) -> tuple[VisitedPool, tuple]:
    """The search scratch pool of a segment view and the graph arguments every
    search kernel call starts with, checked and built once per view (views are
    immutable)."""
    found = view.caches.get("searcher")
    if found is None:
        with _pools_lock:
            h = view.descriptor.hnsw
            if int(view.hnsw_levels[h.entry_point]) < h.max_level:
                raise CorruptFileError(f"{view.path!r}: segment {view.descriptor.segment_id}: the HNSW entry point's "
                                       f"level is below max_level {h.max_level}")
            offsets = view.hnsw_upper_offsets
            if int(offsets[-1]) != view.hnsw_upper_links.shape[0]:
                raise CorruptFileError(f"{view.path!r}: segment {view.descriptor.segment_id}: HNSW upper-layer offsets "
                                       f"do not match the upper links region")
            # the kernels' signature: vectors, norms, metric, then the graph
            graph = (view.hnsw_links0, view.hnsw_levels, offsets, view.hnsw_upper_links, h.entry_point,
                     h.max_level)
            found = view.caches.setdefault("searcher", (VisitedPool(view.n), view.dense_arrays(), graph))
    return found


PARALLEL_MIN_QUERIES = 4


def search_segment(view, queries: np.ndarray, qnorms: np.ndarray, metric: int, excluded: np.ndarray,
                   k: int, ef: int, two_hop: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """HNSW top-k of each query in one segment: (distances[m, k], slots[m, k]),
    float64 distances as users get them (see ``kernels.search_knn``).

    ``two_hop``: the filter behind ``excluded`` rejects most nodes; walk the
    passing ones through two-hop links (``search_layer0_two_hop``)."""
    pool, (vectors, norms), graph = _searcher(view)
    m = queries.shape[0]
    d, i = np.empty((m, k), dtype=np.float64), np.empty((m, k), dtype=np.int64)
    if m >= PARALLEL_MIN_QUERIES:
        rows = min(numba.get_num_threads(), m)
        visited, tags, cand_d, cand_i = pool.get(rows)
        status = kernels.search_knn_parallel(vectors, norms, metric, *graph, queries, qnorms, excluded, k,
                                             max(ef, k), visited[:rows], tags[:rows], cand_d[:rows], cand_i[:rows],
                                             two_hop, d, i)
    else:
        visited, tags, cand_d, cand_i = pool.get(1)
        status = kernels.search_knn(vectors, norms, metric, *graph, queries, qnorms, excluded, k, max(ef, k),
                                    visited, tags, cand_d, cand_i, two_hop, d, i)
    if status != kernels.STATUS_OK:
        raise CorruptFileError(f"{view.path!r}: segment {view.descriptor.segment_id}: the HNSW graph names a node "
                               f"or layer that does not exist")
    return d, i
