"""HNSW graphs of segments: building and extending (writers), searching (readers).

The kernels live in ``_kernels/hnsw.py`` (reached through ``_kernels.api``,
ahead-of-time compiled or JIT); this module owns the arrays
around them: level draws, growing the adjacency arrays for new nodes, the
batch schedule of a build, the per-process pools of visited-marks buffers,
and the checks that turn a bad graph into ``CorruptFileError``.
"""

from __future__ import annotations

import math
import mmap
import os
import threading
from dataclasses import dataclass

import numpy as np

from .. import _progress
from .._format.catalog import MAX_LEVEL, HnswGraph
from .._format.segment import graph_problems
from .._kernels import STATUS_OK, readonly, scratch_width
from .._kernels import api as kernels
from ..errors import CorruptFileError
from .._storage.mapping import ask_huge_pages, memory_budget, random_access, release, will_need

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


# A float32 graph is built on its rows rounded to halves when no row's norm moves by more than this
# fraction. minilm-384 (unit rows) moved by at most ~1e-4 and built 1.4x faster on halves than on float32
# under load (the build waits on memory: BENCHMARKS "Builds under load"); siftsmall's integer rows are
# exact in halves. Rows of large or tiny magnitude (overflow, subnormals) fail the test: float32 then.
HALF_BUILD_ERROR = 1e-2


def _stacked(blocks: list[np.ndarray], n: int, dtype) -> np.ndarray:
    """``blocks`` stacked in order into one new build buffer of ``dtype``."""
    out = build_buffer((n, blocks[0].shape[1]), dtype)
    at = 0
    with np.errstate(over="ignore", under="ignore"):  # halves: judged by the caller
        for block in blocks:
            out[at:at + block.shape[0]] = block
            at += block.shape[0]
    return out


def _build_rows(blocks: list[np.ndarray], n: int, norms: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The build's copy of the rows and their norms: halves (as uint16 bits, what the
    kernels read as halves) where they are faithful (HALF_BUILD_ERROR), else float32."""
    halves = _stacked(blocks, n, np.float16)
    if dtype == "f16":
        return halves.view(np.uint16), norms
    half_norms = np.sqrt(np.einsum("ij,ij->i", halves, halves, dtype=np.float32))
    want = np.asarray(norms, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        faithful = bool((np.abs(half_norms - want) <= HALF_BUILD_ERROR * want).all())  # inf and NaN fail
    if faithful:
        return halves.view(np.uint16), half_norms
    del halves
    return _stacked(blocks, n, np.float32), norms


def extend_graph(old: Graph | None, blocks: list[np.ndarray], norms: np.ndarray, m: int, ef_construction: int,
                 metric: int, new_levels: np.ndarray, dtype: str = "f32") -> Graph:
    """``old``'s graph (over the first rows of the vectors) with the remaining rows added as nodes.

    The vectors are ``blocks`` stacked in order (e.g. a segment's committed
    rows, then new ones), copied once into the build's own memory
    (:func:`build_buffer`). ``old`` None means a new graph over all rows.
    The build reads its copy as halves, half the memory traffic of float32:
    ``dtype`` "f16" rows are float16 values already (the same distances:
    widening a half is exact); float32 rows are rounded to halves where that
    keeps every row's norm within HALF_BUILD_ERROR of its own (see
    :func:`_build_rows`), and the graph is built on those (searches still
    measure the stored float32 rows).
    """
    n = sum(b.shape[0] for b in blocks)
    vectors, norms = _build_rows(blocks, n, norms, dtype)
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
    threads = kernels.get_num_threads()
    visited = build_buffer((threads, n), np.uint16)
    tags = np.zeros(threads, dtype=np.uint16)
    heap_d = build_buffer((threads, n), np.float32)
    heap_i = build_buffer((threads, n), np.int32)
    vectors, norms = readonly(vectors), readonly(np.ascontiguousarray(norms, dtype=np.float32))
    _progress.expect(n - start)
    while start < n:
        stop = min(n, start + max(1, min(MAX_BATCH, start // 8)))
        entry, max_level = kernels.insert_batch(vectors, norms, metric, links0, levels, upper_offsets, upper_links,
                                                _EMPTY_PATCH, start, stop, entry, max_level, m, ef_construction, visited, tags,
                                                heap_d, heap_i)
        _progress.advance(stop - start)
        start = stop
    return Graph(levels, links0, upper_offsets, upper_links, int(entry), int(max_level))


# Graphs this process planned itself, by graph_key: a writer checks a
# committed graph before extending it (graph_problems reads all of it), but
# not again the one its own last commit wrote. Bounded: old keys are dropped.
_own_graphs: dict[tuple, None] = {}
_OWN_GRAPHS_KEPT = 256


def graph_key(path: str, descriptor) -> tuple:
    """What identifies a segment's committed graph: the file and every graph
    region's reference (offset, length, crc32) with the entry point."""
    refs = tuple(tuple(descriptor.regions[name].to_json()) for name in
                 ("hnsw_levels", "hnsw_links0", "hnsw_upper_offsets", "hnsw_upper_links"))
    return path, descriptor.segment_id, descriptor.n, refs, tuple(tuple(r.to_json()) for r in descriptor.graph_patches), \
        descriptor.hnsw.entry_point, descriptor.hnsw.max_level


def remember_own_graph(path: str, descriptor) -> None:
    _own_graphs[graph_key(path, descriptor)] = None
    while len(_own_graphs) > _OWN_GRAPHS_KEPT:
        del _own_graphs[next(iter(_own_graphs))]


def check_graph(view) -> None:
    """Refuse to extend a damaged graph (CorruptFileError); cheap for the graph
    this process's own last commit wrote."""
    if graph_key(view.path, view.descriptor) in _own_graphs:
        return
    problems = graph_problems(view)
    if problems:
        raise CorruptFileError(f"{view.path!r}: segment {view.descriptor.segment_id}: {problems[0]}; "
                               "no commit can extend it (run needle verify; needle rebuild makes a new graph)")


def effective_links(view) -> tuple[np.ndarray, np.ndarray]:
    """``(links0, upper_links)`` with every patch applied: new arrays when the
    segment has patches, else the committed (read-only) ones."""
    chunks = view.graph_patches()
    if not chunks:
        return view.hnsw_links0, view.hnsw_upper_links
    links0 = np.array(view.hnsw_links0)
    upper = np.array(view.hnsw_upper_links)
    for c in chunks:  # oldest first: newer rows win
        links0[c.keys0] = c.rows0
        upper[c.keys_upper] = c.rows_upper
    return links0, upper


def graph_of(view) -> Graph:
    """The committed graph of a segment view (patches applied), checked first:
    a damaged graph is refused, never extended."""
    check_graph(view)
    h = view.descriptor.hnsw
    links0, upper = effective_links(view)
    return Graph(view.hnsw_levels, links0, view.hnsw_upper_offsets, upper, h.entry_point, h.max_level)


_EMPTY_PATCH = (readonly(np.zeros(0, np.uint8)), readonly(np.zeros(0, np.int32)),
                readonly(np.zeros((0, 3), np.int64)), readonly(np.zeros((0, 3), np.int64)))


def patch_arguments(view) -> tuple:
    """The kernels' ``patch`` argument for a segment view (``kernels.links0_of``),
    built once per view: a bitmap of patched layer-0 nodes, the file as int32
    words, and the chunks' tables, newest first."""
    chunks = view.graph_patches()
    if not chunks:
        return _EMPTY_PATCH
    bits = np.zeros((view.n + 7) // 8, dtype=np.uint8)
    for c in chunks:
        keys = c.keys0.astype(np.int64)
        np.bitwise_or.at(bits, keys >> 3, (1 << (keys & 7)).astype(np.uint8))
    words = np.frombuffer(view._buf, dtype=np.int32, count=len(view._buf) // 4)
    table0 = np.array([(c.keys0_word, c.keys0.shape[0], c.rows0_word) for c in reversed(chunks)], dtype=np.int64)
    table_upper = np.array([(c.keys_upper_word, c.keys_upper.shape[0], c.rows_upper_word) for c in reversed(chunks)
                            if c.keys_upper.shape[0]], dtype=np.int64).reshape(-1, 3)
    return readonly(bits), readonly(words), readonly(table0), readonly(table_upper)


@dataclass
class GraphDelta:
    """What adding nodes to a committed graph changes (SPEC §5.9): rows of the
    new nodes, and copies of the committed rows that gained reverse links."""

    links0: np.ndarray  # i32 [b, 2M]: the new nodes' layer-0 rows
    upper_offsets: np.ndarray  # u32 [b]: upper_offsets[n + 1 .. n + b]
    upper_links: np.ndarray  # i32 [rows, M]: the new nodes' upper rows
    keys0: np.ndarray  # i32: committed nodes whose layer-0 row changed, ascending
    rows0: np.ndarray  # i32 [len(keys0), 2M]
    keys_upper: np.ndarray  # i32: committed upper rows that changed, ascending
    rows_upper: np.ndarray  # i32 [len(keys_upper), M]
    entry_point: int
    max_level: int

    @property
    def descriptor(self) -> HnswGraph:
        return HnswGraph(self.entry_point, self.max_level)


MAX_DELTA = 1024  # new nodes one delta insertion takes (each brute-forces the ones before it)


def can_extend_in_place(n: int, added: int) -> bool:
    """Whether :func:`extend_committed` may add ``added`` nodes to a graph of
    ``n``: the new nodes of one call see each other by brute force only, so
    they must be few against the graph (as the first batches of a build are)."""
    return 1 <= added <= MAX_DELTA and n >= 8 * added


def extend_committed(view, vectors: np.ndarray, norms: np.ndarray, m: int, ef_construction: int, metric: int,
                     new_levels: np.ndarray) -> GraphDelta:
    """Insert ``vectors`` (in the collection's storage dtype) as new nodes
    into ``view``'s committed graph without copying or changing it: O(new
    nodes) memory besides the search scratch."""
    check_graph(view)
    h = view.descriptor.hnsw
    b = vectors.shape[0]
    _progress.expect(b)
    base_vectors, base_norms = view.dense_arrays()
    new_vectors = np.ascontiguousarray(vectors)
    if view.dtype == "f16":
        new_vectors = new_vectors.astype(np.float16, copy=False).view(np.uint16)
    levels = np.concatenate([view.hnsw_levels, new_levels]).astype(np.uint8)
    rows_old = view.hnsw_upper_links.shape[0]
    new_offsets = (rows_old + np.cumsum(new_levels, dtype=np.int64)).astype(np.uint32)
    upper_offsets = np.concatenate([view.hnsw_upper_offsets, new_offsets])
    new_links0 = np.full((b, 2 * m), -1, dtype=np.int32)
    new_upper = np.full((int(new_offsets[-1]) - rows_old, m), -1, dtype=np.int32)
    pool, _, _, _ = _searcher(view)
    threads = kernels.get_num_threads()
    visited, tags, heap_d, heap_i = pool.get(threads)
    entry, max_level, keys0, rows0, keys_up, rows_up = kernels.insert_into_committed(
        base_vectors, base_norms, readonly(new_vectors), readonly(np.ascontiguousarray(norms, dtype=np.float32)),
        metric, view.hnsw_links0, readonly(levels), readonly(upper_offsets), view.hnsw_upper_links,
        patch_arguments(view), h.entry_point, h.max_level, m, ef_construction, visited, tags, heap_d, heap_i,
        new_links0, new_upper)
    _progress.advance(b)
    return GraphDelta(new_links0, new_offsets, new_upper, keys0, rows0, keys_up, rows_up, int(entry),
                      int(max_level))


class VisitedPool(threading.local):
    """Search scratch of one segment, one set per thread (searches in several
    threads run concurrently: the kernels release the GIL): visited marks
    with their tags, and the rows a walk keeps its heaps in (candidates,
    results, two-hop batch: ``kernels.scratch_width``).

    Allocated lazily (untouched pages cost nothing) and reused with tags, so
    no search clears n entries.
    """

    def __init__(self, n: int, width: int):
        self.n = n
        self.row = scratch_width(n, width)
        self.buffers: tuple[np.ndarray, ...] | None = None
        self.single: tuple[np.ndarray, ...] | None = None

    def get(self, rows: int) -> tuple[np.ndarray, ...]:
        buffers = self.buffers
        if buffers is None or buffers[0].shape[0] < rows:
            buffers = self.buffers = (np.zeros((rows, self.n), dtype=np.uint16), np.zeros(rows, dtype=np.uint16),
                                      np.empty((rows, self.row), dtype=np.float32),
                                      np.empty((rows, self.row), dtype=np.int32))
        return buffers

    def one(self, k: int) -> tuple[np.ndarray, ...]:
        """The lean call's buffers (:class:`needle_mm._engine.search.QuickSearch`):
        the scratch of one walk, then outputs ``[1, k]`` (float64 distances,
        int64 slots) and their rows, which this thread's next call overwrites (the caller copies
        what it returns). Always these dtypes, C-contiguous and writable: the
        extension's signature, so nothing here is checked per call."""
        found = self.single
        if found is None or found[5].shape[1] != k:
            out_d, out_i = np.empty((1, k), dtype=np.float64), np.empty((1, k), dtype=np.int64)
            found = self.single = (*self.get(1)[:4], out_d, out_i, out_d[0], out_i[0])
        return found


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
            graph = (view.hnsw_links0, view.hnsw_levels, offsets, view.hnsw_upper_links, patch_arguments(view),
                     h.entry_point, h.max_level)
            vectors, norms = view.dense_arrays()
            bound = kernels.GraphSearch(vectors, norms, graph, *((view.quant_codes, view.quant_params)
                                                                 if view.quantized else ()))
            rows_may_fault(view)  # decided (and the vectors advised) once per view, before any walk
            pool = VisitedPool(view.n, view.hnsw_links0.shape[1])
            found = view.caches.setdefault("searcher", (pool, (vectors, norms), graph, bound))
    return found


PARALLEL_MIN_QUERIES = 4
# NEEDLE_MM_PREFETCH_ROWS=1 / 0 forces the two-step rescoring of quantized
# searches on or off (else: on where the file exceeds half the memory budget).
_PREFETCH_ROWS = os.environ.get("NEEDLE_MM_PREFETCH_ROWS", "").strip()


def rows_may_fault(view) -> bool:
    """Whether a quantized search should fetch its rows to rescore together:
    the file is larger than half of what this process may keep in memory (its
    cgroup's limit, or the memory available), so rows are likely on disk.
    Decided once per view; the vectors are then marked as read at random (an
    unquantized walk reads them so too: each fault then reads its own page,
    not a read-ahead window of rows no search asked for)."""
    found = view.caches.get("rows_may_fault")
    if found is None:
        if _PREFETCH_ROWS in ("0", "1"):
            found = _PREFETCH_ROWS == "1"
        else:
            budget = memory_budget()
            found = budget is not None and len(view._buf) > budget // 2
        if found:
            ref = view.descriptor.regions["vectors"]
            random_access(view._buf, ref.offset, ref.length)
        view.caches["rows_may_fault"] = found
    return found


# A quantized search rescores the best k x this many candidates (SPEC §5.10), by quantization. int8: on
# both real sets 2 reached the recall of 4 at the default ef (minilm-100k 0.954, siftsmall 0.999) while
# reading half the rows. binary: Hamming distances of 384 bits rank coarsely; minilm-10k needed 16 for
# recall 0.95 (8: 0.90, 4: 0.81); siftsmall's 128 bits reach 0.86 at 16 (int8 suits it better).
DEFAULT_RESCORE = {"int8": 2, "binary": 16}


def one_query_kernel(view, metric: int, excluded: np.ndarray):
    """``(fn, head, pool)`` for the lean call of one query on this segment
    (``kernels.GraphSearch.one``, scratch from ``pool.one``), or None where a
    one-query search takes :func:`search_segment`'s two steps (a quantized
    segment whose rows to rescore are likely on disk)."""
    pool, _, _, bound = _searcher(view)
    if bound.codes is not None and rows_may_fault(view):
        return None
    fn, head = bound.one(metric, excluded)
    return fn, head, pool


def search_segment(view, queries: np.ndarray, qnorms: np.ndarray, metric: int, excluded: np.ndarray,
                   k: int, ef: int, two_hop: bool = False, rescore: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """HNSW top-k of each query in one segment: (distances[m, k], slots[m, k]),
    float64 distances as users get them (see ``kernels.search_knn``).

    ``two_hop``: the filter behind ``excluded`` rejects most nodes; walk the
    passing ones through two-hop links (``search_layer0_two_hop``).
    A quantized segment (SPEC §5.10) is walked on its codes and the best
    ``k * rescore`` candidates are ranked by their exact distances (``rescore``
    0: code distances, as found); the beam is at least that wide."""
    pool, _, _, bound = _searcher(view)
    m = queries.shape[0]
    if m >= PARALLEL_MIN_QUERIES:
        rows = min(kernels.get_num_threads(), m)
        scratch = tuple(b[:rows] for b in pool.get(rows))
    else:
        scratch = pool.get(1)
    quantized = bound.codes is not None
    width = max(ef, k, k * rescore) if quantized else max(ef, k)
    if quantized and rescore > 0 and rows_may_fault(view):
        # The rows to rescore are likely on disk: find them all first, ask for
        # them all at once, then rank them (the same answers as one call).
        status, _, cand = bound.search(metric, queries, qnorms, excluded, k * rescore, width, 0, two_hop, scratch)
        if status == STATUS_OK:
            ref, row = view.descriptor.regions["vectors"], view.dim * view.vectors.itemsize
            offsets = (ref.offset + np.unique(cand[cand >= 0]) * row).tolist()
            will_need(view._buf, offsets, row)
            status, d, i = bound.rescore(metric, queries, qnorms, cand, k)
            release(view._buf, offsets, row)  # read once: keep the codes and the graph in memory instead
    else:
        status, d, i = bound.search(metric, queries, qnorms, excluded, k, width, rescore, two_hop, scratch)
    if status != STATUS_OK:
        raise CorruptFileError(f"{view.path!r}: segment {view.descriptor.segment_id}: the HNSW graph names a node "
                               f"or layer that does not exist")
    return d, i
