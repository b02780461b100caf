"""Bitmask kernels of filter evaluation over columnar metadata."""

from __future__ import annotations

import numpy as np

from . import kernel


@kernel()
def csr_any(offsets, element_mask):
    """Per record: does any of its array elements (CSR ``offsets``) satisfy the mask?"""
    n = offsets.shape[0] - 1
    out = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        for e in range(offsets[i], offsets[i + 1]):
            if element_mask[e]:
                out[i] = True
                break
    return out


@kernel()
def csr_length_is(offsets, length):
    n = offsets.shape[0] - 1
    out = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        out[i] = offsets[i + 1] - offsets[i] == length
    return out
