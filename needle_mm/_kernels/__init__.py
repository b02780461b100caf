"""numba kernels, and nothing else.

Kernels take plain arrays, never raise (they return status codes where input
could be bad) and are compiled with ``cache=True`` once per exact signature,
so a fresh process with a warm cache starts answering at once. Callers
validate anything that came from a file before passing it in.
"""

METRIC_COSINE = 0
METRIC_EUCLIDEAN = 1
METRIC_DOT = 2

METRIC_CODES = {"cosine": METRIC_COSINE, "euclidean": METRIC_EUCLIDEAN, "dot": METRIC_DOT}


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


def compiled_signatures() -> int:
    """How many kernel signatures this process compiled instead of loading them
    from numba's on-disk cache (the demo says when it compiled)."""
    import sys

    from numba.core.registry import CPUDispatcher

    misses = 0
    for name, module in list(sys.modules.items()):
        if name.startswith(__name__ + ".") and module is not None:
            for value in vars(module).values():
                if isinstance(value, CPUDispatcher):
                    misses += sum(value.stats.cache_misses.values())
    return misses
