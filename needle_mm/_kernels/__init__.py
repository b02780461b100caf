"""numba kernels, and nothing else.

Kernels take plain arrays, never raise (they return status codes where input
could be bad) and are compiled with ``cache=True`` once per exact signature,
so a fresh process with a warm cache starts answering at once. Callers
validate anything that came from a file before passing it in.

Callers reach the kernels through ``api`` only: it runs the read path's
kernels from the ahead-of-time extension ``_aot`` when that was built from
these very sources (``aot_build``, by setup.py), else numba's JIT, and
checks every array it hands the extension. This module holds what both
sides share and imports nothing (no numba): a reader on the extension never
loads numba.
"""

METRIC_COSINE = 0
METRIC_EUCLIDEAN = 1
METRIC_DOT = 2

METRIC_CODES = {"cosine": METRIC_COSINE, "euclidean": METRIC_EUCLIDEAN, "dot": METRIC_DOT}

# What the HNSW search kernels return.
STATUS_OK = 0
STATUS_CORRUPT = 1  # the graph names a node or layer that does not exist

def scratch_width(n: int, width: int) -> int:
    """The length of an HNSW walk's scratch row (``cand_d[vrow]``,
    ``cand_i[vrow]``) over ``n`` nodes whose layer-0 rows hold ``width``
    links: the candidate heap (``[0, n)``: each node enters it at most once),
    the result heap (``[n, 2n + 1)``: at most one entry per node), then the
    two-hop batch (the last ``width`` ids). ``hnsw._walk`` refuses a shorter row."""
    return 2 * n + 1 + width


QUERY_TILE = 8  # queries the exact kernels dot with each row while it sits in L1 (exact.py)


# LLVM's fast-math flags minus the two that assume no NaN and no infinity
# ("nnan", "ninf"): with those, a NaN read from a damaged file makes any
# comparison's result undefined, and a greedy walk over NaN distances never
# ended (measured). "reassoc" is what lets the dot-product loops vectorise.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def kernel(**options):
    """``numba.njit`` with what every kernel shares: cached on disk, the GIL
    released, and numpy's error model, so a division by zero that hostile
    file data can cause yields inf/nan instead of raising from inside a
    kernel (it also drops a check from every division)."""
    from numba import njit

    return njit(cache=True, nogil=True, error_model="numpy", **options)


def readonly(array):
    """A read-only view: kernels see file-backed and in-memory arrays as one type
    (numba compiles a separate signature for writable arrays)."""
    if not array.flags.writeable:
        return array
    view = array.view()
    view.flags.writeable = False
    return view


def backend() -> str:
    """``"aot"`` when the read path runs on the ahead-of-time extension, ``"jit"``
    when on numba's JIT (``api.backend_info()`` says why)."""
    from .api import backend

    return backend()


def compiled_signatures() -> int:
    """How many kernel signatures this process compiled instead of loading them
    from numba's on-disk cache (the demo says when it compiled); 0 when numba
    was never loaded (the ahead-of-time kernels compile nothing)."""
    import sys

    if "numba" not in sys.modules:
        return 0
    from numba.core.registry import CPUDispatcher

    misses = 0
    for name, module in list(sys.modules.items()):
        if name.startswith(__name__ + ".") and module is not None:
            for value in vars(module).values():
                if isinstance(value, CPUDispatcher):
                    misses += sum(value.stats.cache_misses.values())
    return misses
