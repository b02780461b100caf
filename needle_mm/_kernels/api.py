"""The one way to the kernels: every caller outside ``_kernels`` imports them from here.

The read path's kernels run from the ahead-of-time extension ``_aot`` (built
by setup.py from ``aot_build.EXPORTS``) when it is there and was built from
these very kernel sources for a CPU like this one; anything else runs on
numba's JIT, the modules beside this one, imported on first use. So a
process that only reads and searches never imports numba (its start and its
memory are those of numpy and the extension), and a writer imports it when
it first builds a graph. ``NEEDLE_MM_JIT=1`` forces the JIT everywhere.

The extension's functions check nothing: an array of another dtype, rank,
layout or alignment than the exported signature, or a read-only array where
the kernel writes, is read as if it were right (wrong answers or a
segfault). So every call is checked here against the same table the
extension was built from, and any argument that does not fit goes to the
JIT kernel, which compiles for what it gets.

The extension cannot hold ``prange`` kernels, so their AOT form is the
serial kernel on a small pool of Python threads, one share of the work
each (the kernels release the GIL); results are the same as numba's
parallel kernels give (the work is split the same way, each piece computed
the same way).
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import json
import logging
import os
import sys
import threading
from typing import NamedTuple

import numpy as np

from . import QUERY_TILE, STATUS_OK
from .aot_build import DTYPES, EXPORTS, EXTENSION, PATCH, cpu_flags, export_names, record_path, source_hash

_log = logging.getLogger("needle_mm")

SERIAL_WORK = 1 << 21  # queries x rows x dim below which one thread is faster (exact search)
_ALL_ROWS = np.zeros(0, dtype=np.int64)  # "no row list": scan rows in order

# ----------------------------------------------------------------- which backend

# numpy's array flag bits (NPY_ARRAY_C_CONTIGUOUS, NPY_ARRAY_ALIGNED, NPY_ARRAY_WRITEABLE; ABI constants)
_C_CONTIGUOUS, _ALIGNED, _WRITEABLE = 0x1, 0x100, 0x400
# A query the kernels read in place, with no copy: what _input.queries and the lean call
# (_engine.search.QuickSearch) both test.
QUERY_IN_PLACE = _C_CONTIGUOUS | _ALIGNED | _WRITEABLE
_VARIANT = {np.dtype(np.float32): "f32", np.dtype(np.uint16): "u16"}
_BY_VECTORS = frozenset(name for name, (_, _, _, args) in EXPORTS.items() if args[0].startswith("V:"))


def _check_of(spec: str):
    """What an argument of this spec must be: None (a scalar, converted by the
    extension itself), a list of checks (the patch tuple), or (dtype, ndim, flags)."""
    if spec in ("i64", "f64", "bool"):
        return None
    if spec == "patch":
        return [_check_of(p) for p in PATCH]
    dtype, _, rank = spec.partition(":")
    required = _C_CONTIGUOUS | _ALIGNED | (_WRITEABLE if rank.endswith("w") else 0)
    return np.dtype(DTYPES[dtype]), int(rank.rstrip("w")), required


def _fits_array(a, check) -> bool:
    """One array argument against its (dtype, ndim, flags) check: the per-call test of the search hot path."""
    dtype, ndim, required = check
    return isinstance(a, np.ndarray) and a.ndim == ndim and a.flags.num & required == required and \
        (a.dtype is dtype or a.dtype == dtype)


def _fits(args, checks) -> bool:
    if len(args) != len(checks):
        return False
    for a, check in zip(args, checks):
        if check is None:
            continue
        if type(check) is list:  # the patch tuple
            if type(a) is not tuple or not _fits(a, check):
                return False
            continue
        dtype, ndim, required = check
        # (a built-in dtype is one object: `is` settles most comparisons without dtype.__eq__)
        if not isinstance(a, np.ndarray) or a.ndim != ndim or a.flags.num & required != required or \
                (a.dtype is not dtype and a.dtype != dtype):
            return False
    return True


class _Backend(NamedTuple):
    name: str  # "aot" or "jit"
    reason: str
    table: dict  # export name -> (function, checks); empty on the JIT
    record: dict | None  # the extension's build record
    path: str | None


def _jit_forced() -> bool:
    return os.environ.get("NEEDLE_MM_JIT", "").strip().lower() not in ("", "0", "false", "no", "off")


def _open_extension() -> _Backend:
    def jit(reason: str, record=None, path=None) -> _Backend:
        return _Backend("jit", reason, {}, record, path)

    if _jit_forced():
        return jit("NEEDLE_MM_JIT is set")
    here = os.path.dirname(os.path.abspath(__file__))
    not_built = "the ahead-of-time kernels are not built (pip install . builds them; NEEDLE_MM_AOT=0 skips them)"
    try:
        spec = importlib.util.find_spec(f"{__package__}.{EXTENSION}")  # finds the file, runs nothing
    except (ImportError, ValueError) as exc:
        return jit(f"the ahead-of-time kernels cannot be looked for ({exc})")
    if spec is None or not spec.origin:
        return jit(not_built)
    path = spec.origin
    try:
        with open(record_path(path), encoding="utf-8") as f:
            record = json.load(f)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return jit(not_built + f" ({os.path.basename(path)} has no build record)", None, path)
    except (OSError, ValueError) as exc:
        return jit(f"the ahead-of-time kernels' build record is unreadable ({exc})", None, path)
    # everything the extension could get wrong is checked before it is even loaded
    try:
        sources = source_hash(here)
    except OSError as exc:
        return jit(f"the kernel sources cannot be read to check the ahead-of-time kernels ({exc})", record, path)
    if record.get("sources") != sources:
        _log.info("needle_mm: the ahead-of-time kernels were built from other kernel sources than these; "
                  "running on the JIT (rebuild: pip install -e . or python setup.py build_ext --inplace)")
        return jit("the ahead-of-time kernels are stale: built from other kernel sources (rebuild them)", record, path)
    built_on = record.get("cpu_flags")
    if built_on:
        here_flags = cpu_flags()
        missing = sorted(set(built_on) - set(here_flags)) if here_flags is not None else []
        if missing:
            return jit(f"the ahead-of-time kernels were built for a CPU with {', '.join(missing[:8])}, "
                       "which this one lacks", record, path)
    try:
        module = importlib.import_module(f"{__package__}.{EXTENSION}")
        embedded = json.loads(bytes(module.build_info()))
    except Exception as exc:  # a broken or foreign file: the JIT still works
        return jit(f"the ahead-of-time kernels do not load ({type(exc).__name__}: {exc})", record, path)
    if embedded != record:
        return jit("the ahead-of-time kernels' build record belongs to another build of them", record, path)
    table = {}
    for name, (_, _, args) in export_names().items():
        fn = getattr(module, name, None)
        if fn is None:
            return jit(f"the ahead-of-time kernels lack {name}", record, path)
        table[name] = (fn, tuple(_check_of(a) for a in args))
    return _Backend("aot", f"ahead-of-time kernels built for CPU {record.get('cpu')!r}", table, record, path)


_state: _Backend | None = None
_state_lock = threading.Lock()
_fallbacks: dict[str, int] = {}


def _backend() -> _Backend:
    global _state
    if _state is None:
        with _state_lock:
            if _state is None:
                _state = _open_extension()
    return _state


def backend() -> str:
    """``"aot"``: the read path runs on the ahead-of-time extension; ``"jit"``: on numba."""
    return _backend().name


def backend_info() -> dict:
    """For diagnostics: the backend, why, the extension's file and build record,
    and how many calls of each kernel went to the JIT because their arguments
    did not fit the extension."""
    b = _backend()
    return {"backend": b.name, "reason": b.reason, "extension": b.path, "build": b.record, "fallbacks": dict(_fallbacks)}


def _aot(name: str, args):
    """The extension's function for ``name`` if every argument fits it, else None."""
    table = (_state or _backend()).table
    if not table:
        return None
    export = name
    if name in _BY_VECTORS:
        vectors = args[0]
        tag = _VARIANT.get(vectors.dtype) if isinstance(vectors, np.ndarray) else None
        if tag is None:
            _fallbacks[name] = _fallbacks.get(name, 0) + 1
            return None
        export = f"{name}__{tag}"
    fn, checks = table[export]
    if _fits(args, checks):
        return fn
    _fallbacks[name] = _fallbacks.get(name, 0) + 1
    return None


def _jit(module: str):
    """A JIT kernel module (imports numba on first use)."""
    return importlib.import_module(f"{__package__}.{module}")


def _kernel_for(export: str, module: str, name: str, args):
    """The extension's ``export`` if the arguments fit it, else ``module.name`` on the JIT."""
    fn = _aot(export, args)
    return getattr(_jit(module), name) if fn is None else fn


def _call(export: str, module: str, name: str, args):
    """One call of the serial kernel :func:`_kernel_for` picks."""
    return _kernel_for(export, module, name, args)(*args)


# ----------------------------------------------------------------- threads

def get_num_threads() -> int:
    """How many threads a parallel kernel uses: numba's setting once its
    threading layer runs, else what numba would start with (NUMBA_NUM_THREADS,
    or the CPUs this process may run on), without importing numba."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is not None and getattr(parallel, "_is_initialized", False):
        return parallel.get_num_threads()
    config = sys.modules.get("numba.core.config")
    if config is not None:
        return config.NUMBA_NUM_THREADS
    try:
        return max(1, int(os.environ["NUMBA_NUM_THREADS"]))
    except (KeyError, ValueError):
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


class _Worker:
    """One kernel thread: it waits on ``go`` for a job, runs it, and signals
    ``done``. A plain pair of locks per thread, not an executor's queue and
    futures: handing a share of a batch to a thread and taking it back cost
    50-90 us that way on this project's 2-core machine, a tenth of a
    100-query batch (measured)."""

    __slots__ = ("go", "done", "job", "result", "error", "thread")

    def __init__(self):
        self.go, self.done = threading.Lock(), threading.Lock()
        self.go.acquire()
        self.done.acquire()
        self.job = self.result = self.error = None
        self.thread = threading.Thread(target=self._run, name="needle-kernels", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            self.go.acquire()
            job = self.job
            if job is None:  # stop_threads
                return
            task, i = job
            try:
                self.result = task(i)
            except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
                self.error = exc
            self.done.release()

    def start(self, task, i: int) -> None:
        self.job = (task, i)
        self.go.release()

    def wait(self) -> tuple:
        """``(result, error)`` of the job, once it is over; the worker is idle again."""
        self.done.acquire()
        out = self.result, self.error
        self.job = self.result = self.error = None
        return out

    def stop(self) -> None:
        self.job = None
        self.go.release()


_idle: list[_Worker] = []  # workers waiting for a job
_workers = 0  # started and not stopped (at most get_num_threads())
_pool_lock = threading.Lock()


def _forget_pool() -> None:  # in a forked child: the parent's threads do not exist there
    global _idle, _workers, _pool_lock
    _idle, _workers, _pool_lock = [], 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def stop_threads() -> None:
    """End the idle kernel threads (a call in flight keeps its own until it
    returns them); the next parallel call starts new ones. ``preload()`` calls
    it, so a server that built an index before forking forks no threads."""
    global _workers
    with _pool_lock:
        idle, _idle[:] = list(_idle), []
        _workers -= len(idle)
    for worker in idle:
        worker.stop()
    for worker in idle:  # ended before this returns (a fork may follow)
        worker.thread.join()


def _take_workers(count: int) -> list[_Worker]:
    """Up to ``count`` idle workers, started as needed while fewer than
    get_num_threads() exist: with none free (other threads' calls hold them),
    the caller runs the shares itself, so concurrent calls never queue behind
    one another nor start more threads than cores."""
    global _workers
    with _pool_lock:
        taken = [_idle.pop() for _ in range(min(count, len(_idle)))]
        new = max(0, min(count - len(taken), get_num_threads() - _workers))
        _workers += new
    return taken + [_Worker() for _ in range(new)]


def _give_back(workers: list[_Worker]) -> None:
    with _pool_lock:
        _idle.extend(workers)


def _on_shares(export: str, module: str, name: str, args, per_row: tuple[int, ...], offsets_at: int | None = None):
    """A parallel kernel over rows of queries: the JIT's own (``module.name``),
    or on the extension the serial ``export`` on the threads, one share of the
    rows each. The arguments at ``per_row`` hold a row per query and are
    sliced to the share; the one at ``offsets_at`` (if any) is a ``q_off``
    array of row bounds into whole arrays, sliced to the share's bounds (one
    longer). The rows are those of ``per_row[0]``, or ``q_off``'s count."""
    fn = _aot(export, args)
    if fn is None:
        return getattr(_jit(module), name)(*args)
    rows = args[offsets_at].shape[0] - 1 if offsets_at is not None else args[per_row[0]].shape[0]
    shares = _shares(rows, get_num_threads())

    def share(w):
        a, b = shares[w]
        part = list(args)
        if offsets_at is not None:
            part[offsets_at] = args[offsets_at][a:b + 1]
        for i in per_row:
            part[i] = args[i][a:b]
        fn(*part)

    _on_threads(share, len(shares))


def on_threads(task, count: int) -> list:
    """``[task(0), ..., task(count - 1)]`` at once, task 0 on the calling thread and
    the others on the kernel threads (for callers that share out work themselves)."""
    return _on_threads(task, count)


def _on_threads(task, count: int) -> list:
    """``[task(0), ..., task(count - 1)]``, run concurrently: task 0 on the
    calling thread, the others on idle kernel threads, or on the calling thread
    after task 0 where none is idle. Returns only when every task has finished
    (they write into the caller's arrays); a task's exception is raised here,
    task 0's first."""
    if count <= 1:
        return [task(0)] if count == 1 else []
    workers = _take_workers(count - 1)
    for i, worker in enumerate(workers, 1):
        worker.start(task, i)
    try:
        mine = [task(0)]
        mine.extend(task(i) for i in range(len(workers) + 1, count))
    finally:
        # (a wait cut short by KeyboardInterrupt leaves its worker out of the pool: it is not known idle)
        theirs = [worker.wait() for worker in workers]
        _give_back(workers)
    for _, error in theirs:
        if error is not None:
            raise error
    return [mine[0], *(result for result, _ in theirs), *mine[1:]]


def _shares(n: int, parts: int) -> list[tuple[int, int]]:
    """``n`` items as at most ``parts`` contiguous ranges (the first ones one longer)."""
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    out, at = [], 0
    for p in range(parts):
        size = base + (p < extra)
        out.append((at, at + size))
        at += size
    return out


# ----------------------------------------------------------------- HNSW

class GraphSearch:
    """The HNSW search kernels bound to one segment's arrays (vectors, norms,
    the graph; the codes and their parameters for a quantized segment),
    checked once when bound: a call then checks only what changes from call
    to call (the queries, their norms, the exclusion bitmap), allocates its
    own outputs and takes its scratch from the caller's pool, checked once
    per set of buffers. That is what keeps a one-query call's fixed cost
    small (the full check of ~20 arrays took several microseconds, measured).
    Arguments that do not fit the extension go to the JIT, as everywhere."""

    def __init__(self, vectors, norms, graph: tuple, codes=None, params=None):
        self.vectors, self.norms, self.graph = vectors, norms, graph
        self.codes, self.params = codes, params
        self.export = "search_knn" if codes is None else \
            "search_knn_bits" if codes.dtype == np.uint64 else "search_knn_codes"
        # every call's first arguments but the metric, and the scalars after the per-call arrays
        self._static = (vectors, norms) if codes is None else (vectors, norms, codes, params)
        head = (*self._static, 0, *graph)
        self._heads: dict[int, tuple] = {}  # metric -> the kernel's leading arguments
        self._fn, self._per_call = None, ()
        table = (_state or _backend()).table
        tag = _VARIANT.get(vectors.dtype) if isinstance(vectors, np.ndarray) else None
        if table and tag is not None:
            fn, checks = table[f"{self.export}__{tag}"]
            if _fits(head, checks[:len(head)]):
                self._fn = fn
                # after the head: queries, qnorms, excluded, k, ef[, rescore], visited, tags, cand_d, cand_i,
                # two_hop, out_d, out_i (the outputs are made by search() itself)
                rest = checks[len(head):]
                scalars = 2 if codes is None else 3
                self._per_call = rest[:2]
                self._excluded_check = rest[2:3]
                self._scratch_checks = rest[3 + scalars:7 + scalars]
        # The last exclusion bitmap and scratch buffers that passed their checks: both
        # are usually the same objects call after call (a view's tombstones, a thread's pool).
        self._excluded = self._scratch = None

    def _head(self, metric: int) -> tuple:
        head = self._heads.get(metric)
        if head is None:
            head = self._heads[metric] = (*self._static, metric, *self.graph)
        return head

    def _kernel(self, queries, qnorms, excluded, scratch):
        """The extension's function if this call's arguments fit it, else None (the JIT)."""
        fn = self._fn
        if fn is None:
            return None
        if not (_fits_array(queries, self._per_call[0]) and _fits_array(qnorms, self._per_call[1])):
            _fallbacks[self.export] = _fallbacks.get(self.export, 0) + 1
            return None
        if excluded is not self._excluded:
            if not _fits((excluded,), self._excluded_check):
                _fallbacks[self.export] = _fallbacks.get(self.export, 0) + 1
                return None
            self._excluded = excluded
        if scratch is not self._scratch:
            if not _fits(scratch, self._scratch_checks):
                return None
            self._scratch = scratch
        return fn

    def one(self, metric: int, excluded) -> tuple:
        """The lean call's kernel for these arrays and this exclusion bitmap:
        ``(fn, head)`` with ``fn(*head, query, excluded, k, ef[, rescore],
        visited, tags, cand_d, cand_i, out_d, out_i)`` searching one 1-D query
        (``hnsw.search_one``). The extension's function when the bitmap fits it
        (the bound arrays were checked when bound), else the JIT's. The caller
        guarantees the rest fits the signature: a float32 C-contiguous aligned
        writable query, scratch from the segment's pool, outputs ``[1, k]``
        float64 and int64 of its own."""
        export = "search_one" if self.codes is None else \
            "search_one_bits" if self.codes.dtype == np.uint64 else "search_one_codes"
        head = self._head(metric)
        if self._fn is not None:
            fn, checks = (_state or _backend()).table[f"{export}__{_VARIANT[self.vectors.dtype]}"]
            if _fits((excluded,), checks[len(head) + 2:len(head) + 3]):
                return fn, head
        return getattr(_jit("hnsw"), "search_one" if self.codes is None else "search_one_codes"), head

    def search(self, metric, queries, qnorms, excluded, k, ef, rescore, two_hop, scratch):
        """Top ``k`` of each query: ``(distances[m, k] float64, slots[m, k] int64)`` and
        the kernel's status; ``scratch`` = (visited, tags, cand_d, cand_i) with
        one row per thread to use (one thread for a single query)."""
        m = queries.shape[0]
        out_d, out_i = np.empty((m, k), dtype=np.float64), np.empty((m, k), dtype=np.int64)
        visited, tags, cand_d, cand_i = scratch
        fn = self._kernel(queries, qnorms, excluded, scratch)
        head = self._head(metric)
        tail = (k, ef) if self.codes is None else (k, ef, rescore)
        rows = visited.shape[0]
        if fn is None:  # the JIT: its own parallel kernel, or the serial one on the threads
            if self.codes is None:
                kernel = getattr(_jit("hnsw"), "search_knn_parallel" if rows > 1 and m > 1 else "search_knn")
                return kernel(*head, queries, qnorms, excluded, *tail, visited, tags, cand_d, cand_i, two_hop, out_d,
                              out_i), out_d, out_i
            fn = _jit("hnsw").search_knn_codes
        if rows <= 1 or m <= 1:
            return fn(*head, queries, qnorms, excluded, *tail, visited, tags, cand_d, cand_i, two_hop, out_d,
                      out_i), out_d, out_i
        per = (m + rows - 1) // rows  # as the parallel kernel splits them

        def chunk(c):
            a, b = c * per, min(m, (c + 1) * per)
            if a >= b:
                return STATUS_OK
            return fn(*head, queries[a:b], qnorms[a:b], excluded, *tail, visited[c:c + 1], tags[c:c + 1],
                      cand_d[c:c + 1], cand_i[c:c + 1], two_hop, out_d[a:b], out_i[a:b])

        return max(_on_threads(chunk, rows)), out_d, out_i

    def rescore(self, metric, queries, qnorms, cand, k):
        """``hnsw.rescore_knn``: each query's candidates (``cand[m, w]``, from
        :meth:`search` with ``rescore`` 0) ranked by exact distance; returns
        (status, distances[m, k], slots[m, k])."""
        m = queries.shape[0]
        out_d, out_i = np.empty((m, k), dtype=np.float64), np.empty((m, k), dtype=np.int64)
        status = _call("rescore_knn", "hnsw", "rescore_knn",
                       (self.vectors, self.norms, queries, qnorms, metric, cand, k, out_d, out_i))
        return status, out_d, out_i


# ----------------------------------------------------------------- HNSW construction

# Items of a build phase (hnsw.py, "A build inserts nodes in batches") one
# thread takes from the shared counter at a time: small enough that a thread
# the machine's other work slows down holds up the batch by little, large
# enough that the call costs little beside the work.
GRAIN_CANDIDATES = 2  # new nodes: a graph search each
GRAIN_SELECT = 16  # new nodes: a neighbour selection each
GRAIN_REVERSE = 64  # edge groups: a row update each


def _pulled(count: int, grain: int, workers: int, work) -> None:
    """``work(worker, lo, hi)`` over ``0 .. count-1`` in ranges of ``grain``,
    which up to ``workers`` threads pull from one counter until none is left
    (any order: the build phases' items are independent)."""
    if count <= 0:
        return
    ranges = -(-count // grain)
    workers = max(1, min(workers, ranges))
    if workers == 1:
        work(0, 0, count)
        return
    counter = itertools.count()  # next() is atomic under the GIL

    def worker(w):
        while True:
            r = next(counter)
            if r >= ranges:
                return
            work(w, r * grain, min(count, (r + 1) * grain))

    _on_threads(worker, workers)


def _candidate_heaps(new_levels, efc: int):
    """Per new node and layer, room for ``efc`` candidates and one spare."""
    b = new_levels.shape[0]
    top = int(new_levels.max()) if b else 0
    return (np.empty((b, top + 1, efc + 1), dtype=np.float32), np.empty((b, top + 1, efc + 1), dtype=np.int32),
            np.zeros((b, top + 1), dtype=np.int64))


def _insert(base_vectors, base_norms, new_vectors, new_norms, n_store, metric, links0, levels, upper_offsets,
            upper_links, patch, n_graph, first_id, entry, max_level, m, efc, visited, tags, heap_d, heap_i,
            out_links0, out_offsets, out_upper, row_base, committed):
    """Insert new nodes ``first_id ..`` (vectors ``new_vectors``) into the graph
    of nodes < ``n_graph``: the four phases of hnsw.py, each shared by up to
    one thread per visited row. Their rows go to the out arrays (node
    ``first_id + j`` at row ``row_base + j``). ``committed``: the graph's own
    rows are read-only, so those that gain reverse links are copied
    (``hnsw.plan_copies``). Returns (entry, max_level, copies or None)."""
    b = new_vectors.shape[0]
    if b == 0:
        return entry, max_level, None
    workers = visited.shape[0]
    new_levels = levels[first_id:first_id + b]
    cand_d, cand_i, cand_n = _candidate_heaps(new_levels, efc)

    args = (base_vectors, base_norms, new_vectors, new_norms, metric, links0, levels, upper_offsets, upper_links,
            patch, n_graph, first_id, entry, max_level, efc, visited, 0, tags, heap_d, heap_i, cand_d, cand_i, cand_n,
            0, 0)
    candidates = _kernel_for("build_candidates", "hnsw", "build_candidates", args)
    _pulled(b, GRAIN_CANDIDATES, workers, lambda w, lo, hi: candidates(
        *args[:16], w, *args[17:23], lo, hi))

    args = (base_vectors, base_norms, new_vectors, new_norms, n_store, metric, levels, first_id, m, cand_d, cand_i,
            cand_n, out_links0, out_offsets, out_upper, row_base, 0, 0)
    select = _kernel_for("build_select", "hnsw", "build_select", args)
    _pulled(b, GRAIN_SELECT, workers, lambda w, lo, hi: select(*args[:16], lo, hi))

    keys, srcs, order, bounds, n_groups = _call("reverse_edges", "hnsw", "reverse_edges", (
        row_base, b, levels[first_id - row_base:], out_links0, out_offsets, out_upper))
    if committed:
        copies = _call("plan_copies", "hnsw", "plan_copies", (
            keys, order, bounds, n_groups, n_graph, levels, links0, upper_offsets, upper_links, patch))
        copy_of, rows0, rows_upper = copies[4], copies[1], copies[3]
    else:
        copies = None
        copy_of = np.full(n_groups, -1, dtype=np.int64)
        rows0 = np.empty((0, links0.shape[1]), dtype=np.int32)
        rows_upper = np.empty((0, upper_links.shape[1]), dtype=np.int32)
    src_base = first_id - row_base  # reverse_edges names sources by row
    args = (base_vectors, base_norms, new_vectors, new_norms, n_store, metric, keys, srcs, order, bounds, src_base,
            copy_of, rows0, rows_upper, out_links0, out_offsets, out_upper, first_id - row_base, 0, 0)
    reverse = _kernel_for("build_reverse", "hnsw", "build_reverse", args)
    _pulled(n_groups, GRAIN_REVERSE, workers, lambda w, lo, hi: reverse(*args[:18], lo, hi))

    # a node above the current top becomes the entry point (the first such, if several)
    top = int(new_levels.max())
    if top > max_level:
        entry, max_level = first_id + int(np.argmax(new_levels)), top
    return entry, max_level, copies


def insert_batch(vectors, norms, metric, links0, levels, upper_offsets, upper_links, patch, start, stop, entry,
                 max_level, m, efc, visited, tags, heap_d, heap_i):
    """Insert nodes ``start .. stop-1`` into the graph of nodes ``0 .. start-1``,
    all in the same arrays (rows for the new nodes present, links -1).
    Returns the new (entry, max_level)."""
    entry, max_level, _ = _insert(
        vectors, norms, vectors[start:stop], norms[start:stop], vectors.shape[0], metric, links0, levels,
        upper_offsets, upper_links, patch, start, start, entry, max_level, m, efc, visited, tags, heap_d, heap_i,
        links0, upper_offsets, upper_links, start, committed=False)
    return entry, max_level


def insert_into_committed(base_vectors, base_norms, new_vectors, new_norms, metric, links0, levels, upper_offsets,
                          upper_links, patch, entry, max_level, m, efc, visited, tags, heap_d, heap_i, new_links0,
                          new_upper):
    """Insert ``b`` new nodes (ids ``n .. n+b-1``, vectors ``new_vectors``) into
    a committed graph of ``n`` nodes without writing to it (SPEC §5.9).

    The committed graph is read-only (``links0``/``upper_links`` as the file
    holds them, overlaid by ``patch``); ``levels`` and ``upper_offsets`` cover
    all ``n + b`` nodes, the new nodes' upper rows numbered after the
    committed ones. The new nodes' rows go to ``new_links0[b, 2M]`` and
    ``new_upper``; a committed row that gains a reverse link is copied first
    and changed in the copy. Returns (entry, max_level, keys0, rows0,
    keys_upper, rows_upper): the changed committed rows, keys ascending
    (layer-0 rows by node, upper rows by row number).
    """
    n = base_vectors.shape[0]
    rows_old = upper_links.shape[0]
    new_offsets = (upper_offsets[n:].astype(np.int64) - rows_old).astype(np.uint32)  # into new_upper
    entry, max_level, copies = _insert(
        base_vectors, base_norms, new_vectors, new_norms, n, metric, links0, levels, upper_offsets, upper_links,
        patch, n, n, entry, max_level, m, efc, visited, tags, heap_d, heap_i, new_links0, new_offsets, new_upper, 0,
        committed=True)
    if copies is None:
        empty = np.empty(0, dtype=np.int32)
        return (entry, max_level, empty, np.empty((0, links0.shape[1]), np.int32), empty,
                np.empty((0, upper_links.shape[1]), np.int32))
    keys0, rows0, keys_up, rows_up, _ = copies
    return entry, max_level, keys0, rows0, keys_up, rows_up


# ----------------------------------------------------------------- exact search

def exact_topk_serial(vectors, norms, queries, qnorms, metric, excluded, k, rows):
    args = (vectors, norms, queries, qnorms, metric, excluded, k, rows)
    return _call("exact_topk_serial", "exact", "exact_topk_serial", args)


def exact_topk(vectors: np.ndarray, norms: np.ndarray, queries: np.ndarray, qnorms: np.ndarray,
               metric: int, excluded: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows of ``vectors`` per query: ``(distances[m, k], slots[m, k])``, ascending.

    Entries beyond the number of allowed rows have distance +inf and slot -1.
    ``excluded`` is a packed bitmap (bit r set = skip row r) or empty.
    ``rows`` (int64, ascending), when given, lists the only rows to consider:
    a filter that passes few records is searched without touching the rest.
    Euclidean distances are squared (the caller takes the root).
    """
    m = queries.shape[0]
    if rows is not None:
        if not rows.shape[0]:
            return np.full((m, k), np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)
        return exact_topk_serial(vectors, norms, queries, qnorms, metric, excluded, k, rows)
    n = vectors.shape[0]
    if m * n * max(1, vectors.shape[1]) <= SERIAL_WORK:
        return exact_topk_serial(vectors, norms, queries, qnorms, metric, excluded, k, _ALL_ROWS)
    threads = get_num_threads()
    tiles = (m + QUERY_TILE - 1) // QUERY_TILE
    n_chunks = 1 if tiles >= 2 * threads else max(1, min(-(-2 * threads // tiles), n // 1024))
    heap_d = np.full((m, n_chunks, k), np.inf, dtype=np.float32)
    heap_i = np.full((m, n_chunks, k), -1, dtype=np.int64)
    out_d = np.empty((m, k), dtype=np.float32)
    out_i = np.empty((m, k), dtype=np.int64)
    scan = _aot("exact_scan", (vectors, norms, queries, qnorms, metric, excluded, _ALL_ROWS, 0, 0, 0, 0, heap_d,
                               heap_i, 0))
    merge = _aot("exact_merge", (heap_d, heap_i, k, out_d, out_i, 0))
    if scan is None or merge is None:
        return _jit("exact").exact_topk_parallel(vectors, norms, queries, qnorms, metric, excluded, k, n_chunks)
    # exact_topk_parallel's tasks (a tile of queries x a chunk of rows), dealt round-robin to the threads
    chunk = (n + n_chunks - 1) // n_chunks
    tasks = tiles * n_chunks
    workers = min(threads, tasks)

    def scan_share(w):
        for task in range(w, tasks, workers):
            tile, c = divmod(task, n_chunks)
            q0, r0 = tile * QUERY_TILE, c * chunk
            scan(vectors, norms, queries, qnorms, metric, excluded, _ALL_ROWS, q0, min(m, q0 + QUERY_TILE), r0,
                 min(n, r0 + chunk), heap_d, heap_i, c)

    def merge_share(w):
        a, b = shares[w]
        for q in range(a, b):
            merge(heap_d, heap_i, k, out_d, out_i, q)

    _on_threads(scan_share, workers)
    shares = _shares(m, threads)
    _on_threads(merge_share, len(shares))
    return out_d, out_i


# ----------------------------------------------------------------- ids, filters

def gather_blobs(offsets, blob, slots):
    """``blobs.gather_blobs``: the entries of many slots in one buffer."""
    args = (offsets, blob, slots)
    return _call("gather_blobs__2d" if getattr(slots, "ndim", 0) == 2 else "gather_blobs__1d", "blobs", "gather_blobs",
                 args)


def square_norm(query) -> float:
    """``hnsw.square_norm``: a query's squared norm as every search computes
    it (the lean call's kernel included); ``query``: 1-D float32."""
    return _call("square_norm", "hnsw", "square_norm", (query,))


def query_norms(queries, cosine: bool) -> tuple[np.ndarray, int]:
    """``hnsw.query_norms``: the float32 norm of each row of a 2-D float32 array
    as every search computes a query's, and the first row refused (-1: none)."""
    out = np.empty(queries.shape[0], dtype=np.float32)
    bad = _call("query_norms", "hnsw", "query_norms", (queries, cosine, out))
    return out, int(bad)


def csr_any(offsets, element_mask):
    return _call("csr_any", "filters", "csr_any", (offsets, element_mask))


def csr_length_is(offsets, length):
    return _call("csr_length_is", "filters", "csr_length_is", (offsets, length))


# ----------------------------------------------------------------- sparse

def check_chunk(dims, list_offsets, slots, start, count, dim):
    args = (dims, list_offsets, slots, start, count, dim)
    return _call("check_chunk", "sparse", "check_chunk", args)


def accumulate_serial(dims, list_offsets, slots, values, q_off, q_idx, q_val, scores, marks, hits, nhits):
    args = (dims, list_offsets, slots, values, q_off, q_idx, q_val, scores, marks, hits, nhits)
    return _call("accumulate_serial", "sparse", "accumulate_serial", args)


def accumulate_parallel(dims, list_offsets, slots, values, q_off, q_idx, q_val, scores, marks, hits, nhits):
    """``sparse.accumulate_parallel``: on the extension, one share of the queries per thread."""
    args = (dims, list_offsets, slots, values, q_off, q_idx, q_val, scores, marks, hits, nhits)
    _on_shares("accumulate_serial", "sparse", "accumulate_parallel", args, (7, 8, 9, 10), offsets_at=4)


def rank_serial(scores, marks, hits, nhits, excluded, k, out_d, out_i):
    args = (scores, marks, hits, nhits, excluded, k, out_d, out_i)
    return _call("rank_serial", "sparse", "rank_serial", args)


def rank_parallel(scores, marks, hits, nhits, excluded, k, out_d, out_i):
    """``sparse.rank_parallel``: on the extension, one share of the queries per thread."""
    args = (scores, marks, hits, nhits, excluded, k, out_d, out_i)
    _on_shares("rank_serial", "sparse", "rank_parallel", args, (0, 1, 2, 3, 6, 7))


# ----------------------------------------------------------------- text (BM25)

def check_text_chunk(keys, list_offsets, slots, tfs, start, count):
    args = (keys, list_offsets, slots, tfs, start, count)
    return _call("check_text_chunk", "text", "check_text_chunk", args)


def bm25_impacts(slots, tfs, doc_lengths, params, out):
    return _call("bm25_impacts", "text", "bm25_impacts", (slots, tfs, doc_lengths, params, out))




def accumulate_bm25_serial(keys, list_offsets, slots, tfs, doc_lengths, params, q_off, q_keys, q_weights, scores, marks,
                           hits, nhits):
    args = (keys, list_offsets, slots, tfs, doc_lengths, params, q_off, q_keys, q_weights, scores, marks, hits, nhits)
    return _call("accumulate_bm25_serial", "text", "accumulate_bm25_serial", args)


def accumulate_bm25_parallel(keys, list_offsets, slots, tfs, doc_lengths, params, q_off, q_keys, q_weights, scores,
                             marks, hits, nhits):
    """``text.accumulate_bm25_parallel``: on the extension, one share of the queries per thread."""
    args = (keys, list_offsets, slots, tfs, doc_lengths, params, q_off, q_keys, q_weights, scores, marks, hits, nhits)
    _on_shares("accumulate_bm25_serial", "text", "accumulate_bm25_parallel", args, (9, 10, 11, 12), offsets_at=6)


def accumulate_impacts_serial(keys, list_offsets, slots, impacts, q_off, q_keys, q_weights, scores, marks, hits, nhits):
    args = (keys, list_offsets, slots, impacts, q_off, q_keys, q_weights, scores, marks, hits, nhits)
    return _call("accumulate_impacts_serial", "text", "accumulate_impacts_serial", args)


def accumulate_impacts_parallel(keys, list_offsets, slots, impacts, q_off, q_keys, q_weights, scores, marks, hits,
                                nhits):
    """``text.accumulate_impacts_parallel``: on the extension, one share of the queries per thread."""
    args = (keys, list_offsets, slots, impacts, q_off, q_keys, q_weights, scores, marks, hits, nhits)
    _on_shares("accumulate_impacts_serial", "text", "accumulate_impacts_parallel", args, (7, 8, 9, 10), offsets_at=4)


def rank_bm25_serial(scores, marks, hits, nhits, excluded, k, out_d, out_i):
    args = (scores, marks, hits, nhits, excluded, k, out_d, out_i)
    return _call("rank_bm25_serial", "text", "rank_bm25_serial", args)


def rank_bm25_parallel(scores, marks, hits, nhits, excluded, k, out_d, out_i):
    """``text.rank_bm25_parallel``: on the extension, one share of the queries per thread."""
    args = (scores, marks, hits, nhits, excluded, k, out_d, out_i)
    _on_shares("rank_bm25_serial", "text", "rank_bm25_parallel", args, (0, 1, 2, 3, 6, 7))


def windows_serial(keys, list_offsets, slots, tfs, doc_lengths, impacts, params, start, count, window, q_off, q_keys,
                   q_weights, excluded, acc, hits, heap_d, heap_i):
    args = (keys, list_offsets, slots, tfs, doc_lengths, impacts, params, start, count, window, q_off, q_keys, q_weights,
            excluded, acc, hits, heap_d, heap_i)
    return _call("windows_serial", "text_windows", "windows_serial", args)


def windows_parallel(keys, list_offsets, slots, tfs, doc_lengths, impacts, params, start, count, window, q_off,
                     q_keys, q_weights, excluded, acc, hits, heap_d, heap_i):
    """``text_windows.windows_parallel``: on the extension, one share of the queries per thread."""
    args = (keys, list_offsets, slots, tfs, doc_lengths, impacts, params, start, count, window, q_off, q_keys, q_weights,
            excluded, acc, hits, heap_d, heap_i)
    _on_shares("windows_serial", "text_windows", "windows_parallel", args, (14, 15, 16, 17), offsets_at=10)


def sort_heaps(heap_d, heap_i, out_d, out_i):
    return _call("sort_heaps", "text_windows", "sort_heaps", (heap_d, heap_i, out_d, out_i))


def count_live_postings(keys, list_offsets, slots, excluded, q_keys, counts):
    args = (keys, list_offsets, slots, excluded, q_keys, counts)
    return _call("count_live_postings", "text", "count_live_postings", args)


def live_length_stats(doc_lengths, excluded, out):
    return _call("live_length_stats", "text", "live_length_stats", (doc_lengths, excluded, out))
