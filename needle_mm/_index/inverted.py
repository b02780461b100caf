"""Exact sparse top-k over posting lists (SPEC.md §5.7): the kernels'
driver for one record source, batched so the per-slot scratch stays bounded."""

from __future__ import annotations

import numpy as np

from .._format.csr import SparseRows, SparseVector
from .._format.postings import PostingChunk
from .._kernels.api import accumulate_parallel, accumulate_serial, get_num_threads, rank_parallel, rank_serial

SCRATCH_BYTES = 1 << 26  # per batch of queries: scores + marks + hits of every slot (9 bytes each)
SERIAL_QUERIES = 4  # below this many queries per batch one thread is faster


def sparse_topk(chunks: list[PostingChunk], n: int, qs: list[SparseVector], excluded: np.ndarray,
         k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(distances[m, k], slots[m, k])`` of one source (``1 - dot``, ascending;
    inf / -1 past the records reached). Queries run in batches sized so the
    per-slot scratch stays under ``SCRATCH_BYTES``."""
    m = len(qs)
    out_d = np.full((m, k), np.inf, dtype=np.float32)
    out_i = np.full((m, k), -1, dtype=np.int64)
    if n == 0 or k == 0:
        return out_d, out_i
    block = max(1, min(m, SCRATCH_BYTES // (9 * n)))
    parallel = block >= SERIAL_QUERIES and get_num_threads() > 1
    accumulate, rank = (accumulate_parallel, rank_parallel) if parallel else (accumulate_serial, rank_serial)
    scores = np.zeros((block, n), dtype=np.float32)
    marks = np.zeros((block, n), dtype=np.uint8)
    hits = np.empty((block, n), dtype=np.uint32)
    for b0 in range(0, m, block):
        part = SparseRows.from_list(qs[b0:b0 + block])
        rows = len(part)
        nhits = np.zeros(rows, dtype=np.int64)
        q_off = part.offsets.astype(np.int64)
        for c in chunks:
            accumulate(c.dims, c.list_offsets, c.slots, c.values, q_off, part.indices, part.values,
                       scores[:rows], marks[:rows], hits[:rows], nhits)
        rank(scores[:rows], marks[:rows], hits[:rows], nhits, excluded, k, out_d[b0:b0 + rows],
             out_i[b0:b0 + rows])
    return out_d, out_i
