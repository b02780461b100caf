"""Exhaustive BM25 top-k over a text chunk, a window of slots at a time (issue 21).

The same scores and ranking as ``text.accumulate_bm25_*`` then
``text.rank_bm25_*`` (bit for bit: each slot's score is the sum of its
terms' contributions in the query's term order, each the expression those
kernels use), with a scratch of ``window`` slots instead of one of the whole
source: every query term keeps a cursor into its list, and the slots of a
chunk are taken ``window`` at a time: each term's postings in the window are
added into the window's scores, which are then offered to the query's heap
and zeroed while they are still in cache. The whole-source scratch (13 bytes
a slot per query) spilled out of the caches on the scatter of a sentence's
postings and cost a second pass to rank and a third to zero; a window's
scores stay in L2 throughout.

A query whose postings in the range are few (under its slots / ``DENSE``)
lists the slots each window reaches in ``hits`` (a slot is reached once its score is not 0.0:
every contribution is positive) and ranks those only; a dense one adds
without the test and ranks each window by scanning ``RANK_BLOCK`` slots at a time
against the heap's threshold, as ``text._rank_one`` does (``hits`` then
lists a block's slots over the threshold).

A chunk's per-posting part ``(k1 + 1) * tf / (tf + k1 * (1 - b + b * dl /
avgdl))`` comes from the cached ``impacts`` (``text.bm25_impacts``, float64)
when given (a non-empty array), else from ``tfs`` and ``doc_lengths``.

The heap (``heap_d`` / ``heap_i``: distances ``-score`` and slots, a
max-heap on (distance, slot), root last-ranked) carries over from chunk to
chunk of one source; start it at ``+inf`` / ``text._NO_SLOT`` and sort it
with ``sort_heaps`` after the last chunk. Slots set in
``excluded`` never enter it.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from . import kernel
from .text import DENSE, RANK_BLOCK, _drain, _find, _offer

@kernel(inline="always")
def _below(slots, lo, hi, limit):
    """The first index in ``[lo, hi)`` whose slot is ``>= limit`` (slots ascend)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if np.int64(slots[mid]) < limit:
            lo = mid + 1
        else:
            hi = mid
    return lo


@kernel(inline="always")
def _windows_one(keys, list_offsets, slots, tfs, doc_lengths, impacts, params, start, count, window, q_keys,
                 q_weights, excluded, acc, hits, heap_d, heap_i):
    k = heap_d.shape[0]
    if k == 0 or count <= 0:
        return
    k1, b, avgdl = params[0], params[1], params[2]
    c0 = k1 * (1.0 - b)
    c1 = k1 * b / avgdl
    kp1 = k1 + 1.0
    cached = impacts.shape[0] > 0
    has_excluded = excluded.shape[0] > 0
    nq = q_keys.shape[0]
    pos = np.empty(nq, dtype=np.int64)  # a term's cursor: its postings before it hold slots of earlier windows
    end = np.empty(nq, dtype=np.int64)
    upto = np.empty(nq, dtype=np.int64)
    w = np.empty(nq, dtype=np.float64)
    t = 0
    total = 0
    stop = start + count
    for j in range(nq):  # the terms this chunk holds, in query order
        at = _find(keys, q_keys[j])
        if at < 0:
            continue
        lo, hi = np.int64(list_offsets[at]), np.int64(list_offsets[at + 1])
        pos[t] = _below(slots, lo, hi, start)
        end[t] = _below(slots, pos[t], hi, stop)
        w[t] = q_weights[j]
        total += end[t] - pos[t]
        t += 1
    if total == 0:
        return
    dense = total * DENSE >= count
    threshold = -heap_d[0] if heap_d[0] < np.inf else 0.0
    # Loops over postings and slots count in uint64: with a signed index numba tests each one for
    # a negative (wrap-around) value, which kept LLVM from vectorising the ranking's count and cost
    # the scatter a compare per posting (measured: this kernel 1.45x faster, the same results).
    for w0 in range(start, stop, window):
        w1 = min(stop, w0 + window)
        base = np.uint32(w0)  # slots - base index the window (unsigned: no negative-index test)
        nh = 0
        for i in range(t):
            upto[i] = _below(slots, pos[i], end[i], w1)
        for i in range(t):
            wi = w[i]
            # four loops written out (dense or not, cached or not): a shared inlined helper measured slower
            if dense and cached:
                for e in range(np.uint64(pos[i]), np.uint64(upto[i])):
                    acc[slots[e] - base] += wi * impacts[e]
            elif dense:
                for e in range(np.uint64(pos[i]), np.uint64(upto[i])):
                    s = slots[e]
                    tf = np.float64(tfs[e])
                    acc[s - base] += wi * (kp1 * tf / (tf + c0 + c1 * np.float64(doc_lengths[s])))
            elif cached:
                for e in range(np.uint64(pos[i]), np.uint64(upto[i])):
                    x = slots[e] - base
                    if acc[x] == 0.0:
                        hits[nh] = x
                        nh += 1
                    acc[x] += wi * impacts[e]
            else:
                for e in range(np.uint64(pos[i]), np.uint64(upto[i])):
                    s = slots[e]
                    x = s - base
                    if acc[x] == 0.0:
                        hits[nh] = x
                        nh += 1
                    tf = np.float64(tfs[e])
                    acc[x] += wi * (kp1 * tf / (tf + c0 + c1 * np.float64(doc_lengths[s])))
            pos[i] = upto[i]
        if dense:
            span = w1 - w0
            for b0 in range(0, span, RANK_BLOCK):
                b1 = min(span, b0 + RANK_BLOCK)
                count_over = 0
                for x in range(np.uint64(b0), np.uint64(b1)):
                    count_over += acc[x] >= threshold
                if count_over > 0:
                    # list the block's slots at or above the threshold without a branch (the
                    # test mispredicts), then offer those: most blocks hold one or two
                    nc = np.uint64(0)
                    for x in range(np.uint64(b0), np.uint64(b1)):
                        hits[nc] = x
                        nc += np.uint64(acc[x] >= threshold)
                    for h in range(nc):
                        x = np.int64(hits[h])
                        score = acc[x]
                        if score >= threshold and score != 0.0:
                            _offer(heap_d, heap_i, k, w0 + x, score, excluded, has_excluded)
                            if heap_d[0] < np.inf:
                                threshold = -heap_d[0]
                acc[b0:b1] = 0.0
        else:
            for h in range(nh):
                x = np.int64(hits[h])
                score = acc[x]
                acc[x] = 0.0
                if score >= threshold:
                    _offer(heap_d, heap_i, k, w0 + x, score, excluded, has_excluded)
                    if heap_d[0] < np.inf:
                        threshold = -heap_d[0]


@kernel()
def windows_serial(keys, list_offsets, slots, tfs, doc_lengths, impacts, params, start, count, window, q_off, q_keys,
                   q_weights, excluded, acc, hits, heap_d, heap_i):
    """Offer the slots ``[start, start + count)`` of one chunk (all of it, or
    a part), scored for each query ``q`` (terms ``q_keys[q_off[q]:q_off[q +
    1]]``, their weights), to row ``q`` of the heaps, ``window`` slots at a
    time; ``acc`` (float64, zeroed, left zeroed) and ``hits`` (uint32) are at
    least ``window`` wide per row."""
    for q in range(q_off.shape[0] - 1):
        a, z = q_off[q], q_off[q + 1]
        _windows_one(keys, list_offsets, slots, tfs, doc_lengths, impacts, params, start, count, window, q_keys[a:z],
                     q_weights[a:z], excluded, acc[q], hits[q], heap_d[q], heap_i[q])


@kernel(parallel=True)
def windows_parallel(keys, list_offsets, slots, tfs, doc_lengths, impacts, params, start, count, window, q_off,
                     q_keys, q_weights, excluded, acc, hits, heap_d, heap_i):
    for q in prange(q_off.shape[0] - 1):
        a, z = q_off[q], q_off[q + 1]
        _windows_one(keys, list_offsets, slots, tfs, doc_lengths, impacts, params, start, count, window, q_keys[a:z],
                     q_weights[a:z], excluded, acc[q], hits[q], heap_d[q], heap_i[q])


@kernel()
def sort_heaps(heap_d, heap_i, out_d, out_i):
    """Each row's heap into ascending (distance, slot) order, ``-1`` for a
    filler slot (the heaps are left empty)."""
    for q in range(heap_d.shape[0]):
        _drain(heap_d[q], heap_i[q], heap_d.shape[1], out_d[q], out_i[q])


__all__ = ["sort_heaps", "windows_parallel", "windows_serial"]
