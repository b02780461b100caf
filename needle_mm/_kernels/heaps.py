"""Binary max-heaps over parallel arrays ``(hd, hi)`` = (distances, ids).

One implementation for every kernel: a top-k list is a max-heap (root = the
current worst, replaced when something closer arrives); HNSW's candidate
queue, which needs the *closest* first, is the same max-heap over negated
distances.
"""

from __future__ import annotations

from . import kernel


@kernel(inline="always")
def maxheap_sift_down(hd, hi, size, d, i):
    """Place (d, i) at the root of a heap of ``size`` entries and restore order."""
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and hd[child + 1] > hd[child]:
            child += 1
        if hd[child] <= d:
            break
        hd[pos] = hd[child]
        hi[pos] = hi[child]
        pos = child
    hd[pos] = d
    hi[pos] = i


@kernel(inline="always")
def maxheap_replace_root(hd, hi, size, d, i):
    """Drop the largest entry and insert (d, i), in one sift."""
    maxheap_sift_down(hd, hi, size, d, i)


@kernel(inline="always")
def maxheap_push(hd, hi, size, d, i):
    """Insert (d, i) into a heap of ``size`` entries; returns the new size."""
    pos = size
    while pos > 0:
        parent = (pos - 1) >> 1
        if hd[parent] >= d:
            break
        hd[pos] = hd[parent]
        hi[pos] = hi[parent]
        pos = parent
    hd[pos] = d
    hi[pos] = i
    return size + 1


@kernel(inline="always")
def maxheap_pop(hd, hi, size):
    """Remove the root; returns the new size."""
    size -= 1
    if size > 0:
        maxheap_sift_down(hd, hi, size, hd[size], hi[size])
    return size


@kernel(inline="always")
def _pair_after(hd, hi, a, b):
    """Whether entry ``a`` sorts after entry ``b`` (distance, then id)."""
    return hd[a] > hd[b] or (hd[a] == hd[b] and hi[a] > hi[b])


@kernel(inline="always")
def _pair_sift_down(hd, hi, pos, size):
    while True:
        child = 2 * pos + 1
        if child >= size:
            return
        if child + 1 < size and _pair_after(hd, hi, child + 1, child):
            child += 1
        if not _pair_after(hd, hi, child, pos):
            return
        d, i = hd[pos], hi[pos]
        hd[pos], hi[pos] = hd[child], hi[child]
        hd[child], hi[child] = d, i
        pos = child


@kernel(_nrt=False)
def sort_pairs(hd, hi, size):
    """Sort ``(hd, hi)[:size]`` in place, ascending by distance, ties by id:
    one total order, so every path that ranks the same entries lists them
    alike. A heapsort: no buffer (the search kernels allocate nothing, see
    hnsw._walk), O(size log size)."""
    for pos in range(size // 2 - 1, -1, -1):
        _pair_sift_down(hd, hi, pos, size)
    for end in range(size - 1, 0, -1):
        d, i = hd[0], hi[0]
        hd[0], hi[0] = hd[end], hi[end]
        hd[end], hi[end] = d, i
        _pair_sift_down(hd, hi, 0, end)
