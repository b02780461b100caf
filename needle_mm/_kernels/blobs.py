"""Gathering variable-length entries (ids) of many slots at once, in numba.

Search returns ids for ``m x k`` slots; slicing them one by one out of the
map costs a Python slice, a bytes object and a decode per id. This kernel
copies them into one buffer, so the caller decodes once and slices a str.
"""

from __future__ import annotations

import numpy as np

from . import kernel


@kernel()
def gather_blobs(offsets, blob, slots):
    """(bytes u8[total], bounds i64[len + 1]): entries ``blob[offsets[s]:offsets[s+1]]``
    of the slots in ``slots`` (int64, any shape, read row-major), concatenated;
    entry j is ``bytes[bounds[j]:bounds[j+1]]``; a slot of -1 gives an empty entry.

    The caller guarantees ``0 <= s < len(offsets) - 1`` for every other slot
    and that ``offsets`` is a non-decreasing cover of ``blob``.
    """
    flat = slots.ravel()
    count = flat.shape[0]
    bounds = np.empty(count + 1, dtype=np.int64)
    bounds[0] = 0
    for j in range(count):
        s = flat[j]
        size = 0
        if s >= 0:
            size = np.int64(offsets[s + 1]) - np.int64(offsets[s])
        bounds[j + 1] = bounds[j] + size
    out = np.empty(bounds[count], dtype=np.uint8)
    for j in range(count):
        s = flat[j]
        if s >= 0:
            start = np.int64(offsets[s])
            for b in range(bounds[j + 1] - bounds[j]):
                out[bounds[j] + b] = blob[start + b]
    return out, bounds
