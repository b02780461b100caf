"""BM25 ranking over text posting chunks (issue 21), by posting-list accumulation.

A text chunk has the shape of a sparse one (SPEC.md §5.7) with 64-bit term
keys for dims and term frequencies for values: ``keys`` (uint64, strictly
ascending), ``list_offsets`` (uint64, ``d + 1``), ``slots`` (uint32,
ascending within each list) and ``tfs`` (uint32). Every slot's document
length is in ``doc_lengths`` (uint32, indexed by slot).

Scoring is Lucene's BM25: a posting of term frequency ``tf`` in a document
of length ``dl`` adds ``w * ((k1 + 1) * tf / (tf + k1 * (1 - b + b * dl /
avgdl)))`` to its slot (evaluated as written, in float64, by every kernel
here and in ``text_windows`` / ``text_maxscore``, so they agree bit for bit), where the caller's weight ``w`` is the term's idf
(from statistics over every chunk and segment, so it is not computed here)
times how often the term occurs in the query. ``params`` carries
``(k1, b, avgdl)`` as float64 (the kernel export table has no float scalar).
Scores accumulate in float64 in the query's term order.

Ranking returns the top ``k`` reached slots by ``distance = -score``
(ascending, so the best first; float64), ties broken by slot ascending, so a
result never depends on posting or thread order; padded with ``+inf`` /
``-1``. Slots set in the packed little-endian ``excluded`` bitmap (an empty
array: none) are never returned.

The scratch of a query (``scores`` float64, ``marks`` uint8, ``hits``
uint32, each as long as the slots) is left zeroed after ranking, for the
next query. A query whose postings in a chunk are few (under ``n /
DENSE``) accumulates as the sparse kernels do: ``marks`` and ``hits`` list
the slots it reaches and ranking looks at those only. One that reaches
many (a sentence as a query reaches most records through its common words)
accumulates densely, without the mark test (measured: 3x faster per
posting, the test's branch mispredicts), and ranking scans every slot;
``nhits[q] == -1`` says so, decided at the first chunk that reaches
anything.

Two ways to accumulate: from ``tfs`` and ``doc_lengths`` with the formula
(``accumulate_bm25_*``), or from per-posting impacts cached by the caller
(``bm25_impacts`` once per chunk and snapshot, then ``accumulate_impacts_*``:
one multiply-add per posting).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from . import kernel

_NO_SLOT = np.int64(1) << np.int64(62)  # the heap's filler: ranks after every real slot at +inf


@kernel(inline="always")
def _find(keys, target):
    """Index of ``target`` in the strictly ascending ``keys``, or -1."""
    lo, hi = 0, keys.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < target:
            lo = mid + 1
        else:
            hi = mid
    if lo == keys.shape[0] or keys[lo] != target:
        return -1
    return lo


DENSE = 8  # a query whose postings in a chunk reach n / DENSE or more accumulates densely
RANK_BLOCK = 256  # slots a dense ranking tests against its threshold at once


@kernel(inline="always")
def _postings(keys, list_offsets, q_keys, at):
    """Find each query term's list (``at[j]``, -1 if absent); return how many postings they hold."""
    total = 0
    for j in range(q_keys.shape[0]):
        at[j] = _find(keys, q_keys[j])
        if at[j] >= 0:
            total += np.int64(list_offsets[at[j] + 1]) - np.int64(list_offsets[at[j]])
    return total


@kernel(inline="always")
def _accumulate_one(keys, list_offsets, slots, tfs, doc_lengths, params, q_keys, q_weights, scores, marks, hits,
                    nhits):
    """One query over one chunk; returns the new ``nhits`` (-1: dense)."""
    k1, b, avgdl = params[0], params[1], params[2]
    c0 = k1 * (1.0 - b)  # the length norm k1 * (1 - b + b * dl / avgdl) = c0 + c1 * dl
    c1 = k1 * b / avgdl
    kp1 = k1 + 1.0
    at = np.empty(q_keys.shape[0], dtype=np.int64)
    total = _postings(keys, list_offsets, q_keys, at)
    if nhits == 0 and total * DENSE >= scores.shape[0]:
        nhits = -1
    for j in range(q_keys.shape[0]):
        if at[j] < 0:
            continue
        w = q_weights[j]
        lo, hi = np.int64(list_offsets[at[j]]), np.int64(list_offsets[at[j] + 1])
        # the loops are written out, not shared through an inlined helper: that measured 5x slower
        if nhits < 0:
            for e in range(lo, hi):
                s = slots[e]
                tf = np.float64(tfs[e])
                scores[s] += w * (kp1 * tf / (tf + c0 + c1 * np.float64(doc_lengths[s])))
        else:
            for e in range(lo, hi):
                s = slots[e]
                tf = np.float64(tfs[e])
                if marks[s] == 0:
                    marks[s] = 1
                    hits[nhits] = s
                    nhits += 1
                scores[s] += w * (kp1 * tf / (tf + c0 + c1 * np.float64(doc_lengths[s])))
    return nhits


@kernel(inline="always")
def _accumulate_impacts_one(keys, list_offsets, slots, impacts, q_keys, q_weights, scores, marks, hits, nhits):
    at = np.empty(q_keys.shape[0], dtype=np.int64)
    total = _postings(keys, list_offsets, q_keys, at)
    if nhits == 0 and total * DENSE >= scores.shape[0]:
        nhits = -1
    for j in range(q_keys.shape[0]):
        if at[j] < 0:
            continue
        w = q_weights[j]
        lo, hi = np.int64(list_offsets[at[j]]), np.int64(list_offsets[at[j] + 1])
        if nhits < 0:
            for e in range(lo, hi):
                scores[slots[e]] += w * np.float64(impacts[e])
        else:
            for e in range(lo, hi):
                s = slots[e]
                if marks[s] == 0:
                    marks[s] = 1
                    hits[nhits] = s
                    nhits += 1
                scores[s] += w * np.float64(impacts[e])
    return nhits


@kernel()
def bm25_impacts(slots, tfs, doc_lengths, params, out):
    """``out[e]`` = the BM25 term-frequency part of posting ``e``,
    ``(k1 + 1) * tf / (tf + k1 * (1 - b + b * dl / avgdl))`` (float64), the
    very value every kernel multiplies a term's weight by: a chunk's impacts
    depend only on (k1, b, avgdl), so a caller caches them per snapshot and
    the accumulation is then one multiply-add per posting, with the same
    scores bit for bit."""
    k1, b, avgdl = params[0], params[1], params[2]
    c0 = k1 * (1.0 - b)
    c1 = k1 * b / avgdl
    kp1 = k1 + 1.0
    for e in range(slots.shape[0]):
        tf = np.float64(tfs[e])
        out[e] = kp1 * tf / (tf + c0 + c1 * np.float64(doc_lengths[slots[e]]))


@kernel(inline="always")
def _after(d1, i1, d2, i2):
    """(d1, i1) ranks after (d2, i2): farther, or as far with a larger slot."""
    return d1 > d2 or (d1 == d2 and i1 > i2)


@kernel(inline="always")
def _sift_down(heap_d, heap_i, size, pos):
    """Restore the max-heap (the root ranks last) below ``pos``."""
    d, i = heap_d[pos], heap_i[pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and _after(heap_d[child + 1], heap_i[child + 1], heap_d[child], heap_i[child]):
            child += 1
        if not _after(heap_d[child], heap_i[child], d, i):
            break
        heap_d[pos], heap_i[pos] = heap_d[child], heap_i[child]
        pos = child
    heap_d[pos], heap_i[pos] = d, i


@kernel(inline="always")
def _drain(heap_d, heap_i, k, out_d, out_i):
    """The heap's ``k`` places into ``out_d`` / ``out_i`` in ascending (distance, slot)
    order, ``-1`` for a filler slot: the last-ranked popped into the last place, k
    times (the heap is left empty)."""
    for size in range(k, 0, -1):
        last = size - 1
        out_d[last] = heap_d[0]
        out_i[last] = heap_i[0] if heap_i[0] != _NO_SLOT else -1
        heap_d[0], heap_i[0] = heap_d[last], heap_i[last]
        _sift_down(heap_d, heap_i, last, 0)


@kernel(inline="always")
def _offer(heap_d, heap_i, k, s, score, excluded, has_excluded):
    """Put slot ``s`` into the heap if it ranks before the root and may be returned."""
    dist = -score
    if dist < heap_d[0] or (dist == heap_d[0] and s < heap_i[0]):
        if not (has_excluded and (excluded[s >> 3] >> (s & 7)) & 1):
            heap_d[0], heap_i[0] = dist, s
            _sift_down(heap_d, heap_i, k, 0)


@kernel(inline="always")
def _rank_one(scores, marks, hits, nhits, excluded, k, out_d, out_i):
    has_excluded = excluded.shape[0] > 0
    size = max(k, 1)
    heap_d = np.full(size, np.inf, dtype=np.float64)
    heap_i = np.full(size, _NO_SLOT, dtype=np.int64)
    if k > 0 and nhits < 0:
        # dense: every slot, a block at a time; a block none of whose scores reaches the
        # heap's threshold is skipped after one vectorised count (most are, once it is full).
        # A slot not reached (score 0) never enters, nor does a NaN (compares false).
        threshold = np.float64(0.0)
        n = scores.shape[0]
        for b0 in range(0, n, RANK_BLOCK):
            b1 = min(n, b0 + RANK_BLOCK)
            count = 0
            for s in range(b0, b1):
                count += scores[s] >= threshold
            if count == 0:
                continue
            for s in range(b0, b1):
                score = scores[s]
                if score >= threshold and score != 0.0:
                    _offer(heap_d, heap_i, k, np.int64(s), score, excluded, has_excluded)
                    if heap_d[0] < np.inf:
                        threshold = -heap_d[0]
    elif k > 0:
        for h in range(nhits):
            s = np.int64(hits[h])
            score = scores[s]
            if score != 0.0:
                _offer(heap_d, heap_i, k, s, score, excluded, has_excluded)
    # leave the scratch zeroed: a fill when dense (vectorised), else the listed slots
    if nhits < 0:
        scores[:] = 0.0
    else:
        for h in range(nhits):
            scores[hits[h]] = 0.0
            marks[hits[h]] = 0
    _drain(heap_d, heap_i, k, out_d, out_i)


@kernel()
def accumulate_bm25_serial(keys, list_offsets, slots, tfs, doc_lengths, params, q_off, q_keys, q_weights, scores,
                           marks, hits, nhits):
    """Add one chunk's BM25 contributions for each query ``q`` (its terms
    ``q_keys[q_off[q]:q_off[q + 1]]`` with their weights) into row ``q`` of
    the scratch; ``nhits[q]`` counts the slots reached so far (-1: dense)."""
    for q in range(q_off.shape[0] - 1):
        a, b = q_off[q], q_off[q + 1]
        nhits[q] = _accumulate_one(keys, list_offsets, slots, tfs, doc_lengths, params, q_keys[a:b], q_weights[a:b],
                                   scores[q], marks[q], hits[q], nhits[q])


@kernel(parallel=True)
def accumulate_bm25_parallel(keys, list_offsets, slots, tfs, doc_lengths, params, q_off, q_keys, q_weights, scores,
                             marks, hits, nhits):
    for q in prange(q_off.shape[0] - 1):
        a, b = q_off[q], q_off[q + 1]
        nhits[q] = _accumulate_one(keys, list_offsets, slots, tfs, doc_lengths, params, q_keys[a:b], q_weights[a:b],
                                   scores[q], marks[q], hits[q], nhits[q])


@kernel()
def accumulate_impacts_serial(keys, list_offsets, slots, impacts, q_off, q_keys, q_weights, scores, marks, hits,
                              nhits):
    """:func:`accumulate_bm25_serial` with the chunk's cached :func:`bm25_impacts`."""
    for q in range(q_off.shape[0] - 1):
        a, b = q_off[q], q_off[q + 1]
        nhits[q] = _accumulate_impacts_one(keys, list_offsets, slots, impacts, q_keys[a:b], q_weights[a:b], scores[q],
                                           marks[q], hits[q], nhits[q])


@kernel(parallel=True)
def accumulate_impacts_parallel(keys, list_offsets, slots, impacts, q_off, q_keys, q_weights, scores, marks, hits,
                                nhits):
    for q in prange(q_off.shape[0] - 1):
        a, b = q_off[q], q_off[q + 1]
        nhits[q] = _accumulate_impacts_one(keys, list_offsets, slots, impacts, q_keys[a:b], q_weights[a:b], scores[q],
                                           marks[q], hits[q], nhits[q])


@kernel()
def rank_bm25_serial(scores, marks, hits, nhits, excluded, k, out_d, out_i):
    """Top ``k`` of each query's reached slots into ``out_d[q]`` / ``out_i[q]``."""
    for q in range(nhits.shape[0]):
        _rank_one(scores[q], marks[q], hits[q], nhits[q], excluded, k, out_d[q], out_i[q])


@kernel(parallel=True)
def rank_bm25_parallel(scores, marks, hits, nhits, excluded, k, out_d, out_i):
    for q in prange(nhits.shape[0]):
        _rank_one(scores[q], marks[q], hits[q], nhits[q], excluded, k, out_d[q], out_i[q])


@kernel()
def count_live_postings(keys, list_offsets, slots, excluded, q_keys, counts):
    """Add to ``counts[j]`` how many postings of term ``q_keys[j]`` in this
    chunk belong to slots not excluded: its document frequency among live
    records (a list holds each slot once)."""
    has_excluded = excluded.shape[0] > 0
    for j in range(q_keys.shape[0]):
        at = _find(keys, q_keys[j])
        if at < 0:
            continue
        lo, hi = np.int64(list_offsets[at]), np.int64(list_offsets[at + 1])
        if not has_excluded:
            counts[j] += hi - lo
            continue
        live = 0
        for e in range(lo, hi):
            s = slots[e]
            if not (excluded[s >> 3] >> (s & 7)) & 1:
                live += 1
        counts[j] += live


@kernel()
def live_length_stats(doc_lengths, excluded, out):
    """``out[0]`` += the slots not excluded with at least one token (BM25's
    N), ``out[1]`` += their tokens (avgdl's numerator)."""
    has_excluded = excluded.shape[0] > 0
    docs, total = 0, 0
    for s in range(doc_lengths.shape[0]):
        dl = doc_lengths[s]
        if dl == 0 or (has_excluded and (excluded[s >> 3] >> (s & 7)) & 1):
            continue
        docs += 1
        total += dl
    out[0] += docs
    out[1] += total


@kernel()
def check_text_chunk(keys, list_offsets, slots, tfs, start, count) -> int:
    """0 if a text chunk from a file is safe to search, else a problem code:
    1 keys not strictly ascending, 2 list offsets not monotonic from 0 to the
    entry count (or tfs of another length), 3 a slot outside ``[start,
    start + count)`` or not strictly ascending within its list, 4 a term
    frequency of 0."""
    d = keys.shape[0]
    for j in range(1, d):
        if keys[j] <= keys[j - 1]:
            return 1
    if list_offsets.shape[0] != d + 1 or list_offsets[0] != 0 or list_offsets[d] != slots.shape[0] \
            or tfs.shape[0] != slots.shape[0]:
        return 2
    for j in range(d):
        if list_offsets[j + 1] < list_offsets[j]:
            return 2
    for j in range(d):
        lo, hi = np.int64(list_offsets[j]), np.int64(list_offsets[j + 1])
        for e in range(lo, hi):
            s = np.int64(slots[e])
            if s < start or s >= start + count or (e > lo and s <= slots[e - 1]):
                return 3
    for e in range(tfs.shape[0]):
        if tfs[e] == 0:
            return 4
    return 0


__all__ = ["accumulate_bm25_serial", "accumulate_bm25_parallel", "accumulate_impacts_serial",
           "accumulate_impacts_parallel", "bm25_impacts", "rank_bm25_serial", "rank_bm25_parallel", "count_live_postings",
           "live_length_stats", "check_text_chunk"]
