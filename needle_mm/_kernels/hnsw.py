"""HNSW graph search and construction (Malkov & Yashunin, 2016), in numba.

Why this shape:

- The graph is plain arrays that live in the file: ``links0[n, 2M]`` (layer 0,
  -1 padded), and the upper layers in CSR form: node ``i`` with level ``L >= 1``
  owns rows ``upper_offsets[i] .. upper_offsets[i] + L - 1`` of
  ``upper_links[rows, M]`` (row ``upper_offsets[i] + l - 1`` is layer ``l``).
  Search reads them straight from the memory map.
- Every kernel takes one ``vectors[n, dim]`` array: float32, or the uint16
  bits of an f16 collection, read through ``as_f32`` (``halves.py``; search
  and build alike). (An earlier version
  addressed committed and new rows through two arrays to spare the writer a
  copy; the branch per distance made search 2.6x slower, measured.)
- Construction is the original incremental algorithm with the heuristic
  neighbour selection, run in batches so every core works: every node of a
  batch finds its candidates in the graph as it was before the batch, also
  considers the nodes of the batch inserted before it (brute force), selects
  its neighbours, then reverse links are added per target node (sources in
  insertion order). Each of those phases is a serial kernel over a range of
  independent items, which ``api`` shares among threads; results depend only
  on the data, the seed and the batch boundaries, never on thread timing.
- The walks and the build's neighbour selection are compiled without
  numba's reference counting (``_nrt=False``): its atomic increments and
  decrements of every row view, neighbour row and tuple item they touched
  took 30 % of a 128-d walk (measured). Such a kernel must allocate nothing,
  and every array it reads outlives the call (its caller holds them).
- Anything read from the file can be hostile, so search checks every
  neighbour id against the node count and returns a status instead of
  reading out of bounds (numba does no bounds checks).
"""

from __future__ import annotations

import numpy as np
from numba import prange, types
from numba.extending import overload

from . import FASTMATH, METRIC_COSINE, METRIC_EUCLIDEAN, STATUS_CORRUPT, STATUS_OK, kernel
from .halves import as_f32
from .heaps import maxheap_pop, maxheap_push, maxheap_replace_root, sort_pairs
from .bits import popcount
from .prefetch import prefetch_row, prefetch_whole_row


# ----------------------------------------------------------------- distances


@kernel(fastmath=FASTMATH, inline="always")
def float_distance(a, an, b, bn, metric):
    """Distance from the dot product and the stored norms.

    One branch-free inner loop for every metric (a metric branch around the
    loop kept LLVM from vectorising it: 1.7x slower search, measured).
    Euclidean is squared and computed as |a|^2 + |b|^2 - 2 a.b, which is
    exact enough to rank; final results are recomputed directly
    (:func:`exact_l2`). A distance that is not finite (a NaN or a zero norm
    read from a damaged file, an overflow) is +inf: ranked last, and every
    comparison the walks make stays well defined.
    """
    acc = np.float32(0.0)
    for j in range(a.shape[0]):
        acc += as_f32(a[j]) * as_f32(b[j])
    return from_dot(acc, an, bn, metric)


@kernel(fastmath=FASTMATH, inline="always")
def from_dot(dot, an, bn, metric):
    """A metric's distance from the dot product and the two norms (see :func:`float_distance`)."""
    if metric == METRIC_EUCLIDEAN:
        d = an * an + bn * bn - np.float32(2.0) * dot
        d = d if d > np.float32(0.0) else np.float32(0.0)
    elif metric == METRIC_COSINE:
        d = np.float32(1.0) - dot / (an * bn)
    else:
        d = np.float32(1.0) - dot
    return d if abs(d) < np.float32(np.inf) else np.float32(np.inf)


@kernel(fastmath=FASTMATH, inline="always")
def code_distance(a, an, b, bn, metric):
    """:func:`float_distance` of a query and a stored vector from the vector's
    int8 codes ``b`` (SPEC §5.10): ``a`` is the query scaled per dimension
    (:func:`encode_query`), so the dot product is ``an[1] + a . b``; ``an[0]``
    is the query's norm, ``bn`` the vector's exact norm. Each code is widened to
    float32 in the loop: numba types an int32 product as int64, and that
    integer loop ran 2x slower than this one (measured; 1 byte read per
    dimension either way). (The parameters are named as :func:`float_distance`'s:
    both are ``distance``'s bodies.)"""
    acc = np.float32(0.0)
    for j in range(a.shape[0]):
        acc += a[j] * np.float32(b[j])
    return from_dot(an[1] + acc, an[0], bn, metric)


@kernel(fastmath=FASTMATH, inline="always")
def bit_distance(a, an, b, bn, metric):
    """:func:`float_distance` estimated from binary codes (SPEC §5.10): ``a`` and
    ``b`` are the sign bits of the centred query and vector as uint64 words,
    their Hamming distance ``h`` estimates the angle between them as
    ``pi * h / dim`` (``an[1]`` holds ``pi / dim``), and the dot product as
    ``|q| |x| cos(angle)`` from the true norms. The walk ranks by it; exact
    rescoring gives the final order."""
    h = np.uint64(0)
    for j in range(a.shape[0]):
        h += popcount(a[j] ^ b[j])
    return from_dot(an[0] * bn * np.float32(np.cos(an[1] * np.float32(h))), an[0], bn, metric)


def distance(a, an, b, bn, metric):
    """The distance the walks rank by, for the rows they walk: float rows
    (float32, or the uint16 bits of halves) give :func:`float_distance`, int8
    code rows :func:`code_distance` (``an`` then being the query's
    ``(norm, scale, offset dot)``), uint64 bit rows :func:`bit_distance`.
    Kernels only (numba picks one per type)."""
    raise NotImplementedError("distance() is compiled into kernels only")


@overload(distance, jit_options={"fastmath": FASTMATH, "error_model": "numpy", "nogil": True})
def _distance_for(a, an, b, bn, metric):
    # the kernels' own Python bodies, compiled with the kernels' options (LLVM
    # inlines them into the walks; numba's IR inlining of them warns of phi
    # variables out of scope)
    if isinstance(b, types.Array) and b.dtype == types.int8:
        return code_distance.py_func
    if isinstance(b, types.Array) and b.dtype == types.uint64:
        return bit_distance.py_func
    return float_distance.py_func


@kernel(fastmath=FASTMATH, inline="always")
def float_distance_at(a, an, rows, i, bn, metric):
    """:func:`float_distance` to row ``i`` of ``rows``, read in place: the
    walks measure every distance so, without building a row view (``rows[i]``)
    each time (4-5 % of a 128-d walk, measured, even with reference counting
    off: see ``search_layer``'s ``_nrt=False``)."""
    acc = np.float32(0.0)
    for j in range(a.shape[0]):
        acc += as_f32(a[j]) * as_f32(rows[i, j])
    return from_dot(acc, an, bn, metric)


@kernel(fastmath=FASTMATH, inline="always")
def code_distance_at(a, an, rows, i, bn, metric):
    """:func:`code_distance` to row ``i`` of ``rows``, read in place."""
    acc = np.float32(0.0)
    for j in range(a.shape[0]):
        acc += a[j] * np.float32(rows[i, j])
    return from_dot(an[1] + acc, an[0], bn, metric)


@kernel(fastmath=FASTMATH, inline="always")
def bit_distance_at(a, an, rows, i, bn, metric):
    """:func:`bit_distance` to row ``i`` of ``rows``, read in place."""
    h = np.uint64(0)
    for j in range(a.shape[0]):
        h += popcount(a[j] ^ rows[i, j])
    return from_dot(an[0] * bn * np.float32(np.cos(an[1] * np.float32(h))), an[0], bn, metric)


def distance_at(a, an, rows, i, bn, metric):
    """:func:`distance` to row ``i`` of ``rows`` (the walks' form: no row view). Kernels only."""
    raise NotImplementedError("distance_at() is compiled into kernels only")


@overload(distance_at, jit_options={"fastmath": FASTMATH, "error_model": "numpy", "nogil": True})
def _distance_at_for(a, an, rows, i, bn, metric):
    if isinstance(rows, types.Array) and rows.dtype == types.int8:
        return code_distance_at.py_func
    if isinstance(rows, types.Array) and rows.dtype == types.uint64:
        return bit_distance_at.py_func
    return float_distance_at.py_func


@kernel(fastmath=FASTMATH, inline="always")
def exact_l2(a, b):
    acc = np.float32(0.0)
    for j in range(a.shape[0]):
        t = as_f32(a[j]) - as_f32(b[j])
        acc += t * t
    return acc if acc < np.float32(np.inf) else np.float32(np.inf)  # NaN too


# ----------------------------------------------------------------- graph access


@kernel(inline="always")
def neighbors_of(node, layer, links0, upper_offsets, upper_links):
    if layer == 0:
        return links0[node]
    return upper_links[upper_offsets[node] + layer - 1]


@kernel(inline="always")
def find_key(words, lo, count, key):
    """Index of ``key`` in the ascending ``words[lo:lo+count]``, or -1."""
    a = lo
    b = lo + count
    while a < b:
        mid = (a + b) >> 1
        if words[mid] < key:
            a = mid + 1
        else:
            b = mid
    if a < lo + count and words[a] == key:
        return a - lo
    return -1


@kernel(inline="always")
def patched_start(words, table, key, width):
    """Where the newest patched row ``key`` starts in ``words`` (-1: not patched).

    ``table[t] = (keys word offset, count, rows word offset)``, newest chunk first
    (SPEC §5.9: a newer chunk's row replaces an older one's)."""
    for t in range(table.shape[0]):
        idx = find_key(words, table[t, 0], table[t, 1], key)
        if idx >= 0:
            return table[t, 2] + idx * width
    return -1


@kernel(inline="always")
def links0_of(node, links0, patch):
    """Layer-0 row of ``node``: its newest patch, else the base row.

    ``patch = (bits, words, table0, table_upper)``: ``bits`` marks patched
    nodes (empty: no patches), ``words`` is the file as int32 words."""
    bits = patch[0]
    if bits.shape[0] > 0 and (bits[node >> 3] >> (node & 7)) & 1:
        width = links0.shape[1]
        s = patched_start(patch[1], patch[2], node, width)
        if s >= 0:
            return patch[1][s:s + width]
    return links0[node]


@kernel(inline="always")
def upper_row_of(r, upper_links, patch):
    """Upper-layer row ``r``: its newest patch, else the base row."""
    if patch[3].shape[0] > 0:
        width = upper_links.shape[1]
        s = patched_start(patch[1], patch[3], r, width)
        if s >= 0:
            return patch[1][s:s + width]
    return upper_links[r]


@kernel(inline="always")
def is_excluded(excluded, i):
    return excluded.shape[0] > 0 and (excluded[i >> 3] >> (i & 7)) & 1


@kernel()
def next_tag(visited, tags, slot):
    """A fresh visit tag for visited row ``slot`` (clears the row on wrap-around)."""
    t = np.uint16((np.int64(tags[slot]) + 1) & 0xFFFF)  # numba would widen a uint16 sum
    if t == 0:
        visited[slot, :] = 0
        t = np.uint16(1)
    tags[slot] = t
    return t


@kernel(fastmath=FASTMATH, _nrt=False)
def greedy_descend(q, qn, vectors, norms, metric, levels, upper_offsets, upper_links, patch, n,
                   entry, top_layer, stop_layer):
    """Greedy walk from ``entry`` on layers top_layer .. stop_layer+1; returns (node, dist, status)."""
    cur = entry
    cur_d = distance_at(q, qn, vectors, cur, norms[cur], metric)
    rows = upper_links.shape[0]
    for layer in range(top_layer, stop_layer, -1):
        changed = True
        while changed:
            changed = False
            if levels[cur] < layer:
                return cur, cur_d, STATUS_CORRUPT
            r = upper_offsets[cur] + layer - 1
            if r < 0 or r >= rows:
                return cur, cur_d, STATUS_CORRUPT
            nbrs = upper_row_of(r, upper_links, patch)
            for j in range(nbrs.shape[0]):
                nb = nbrs[j]
                if nb < 0:
                    break
                if nb >= n:
                    return cur, cur_d, STATUS_CORRUPT
                d = distance_at(q, qn, vectors, nb, norms[nb], metric)
                if d < cur_d:
                    cur_d = d
                    cur = nb
                    changed = True
    return cur, cur_d, STATUS_OK


@kernel(fastmath=FASTMATH, _nrt=False)
def search_layer(q, qn, vectors, norms, metric, links0, levels, upper_offsets, upper_links, patch, n,
                 layer, entry, entry_d, ef, visited, vrow, tag, excluded, res_d, res_i, cand_d, cand_i):
    """Beam search of one layer from one entry node.

    Fills the max-heap ``res_d/res_i`` (capacity >= ef) with up to ``ef``
    non-excluded nodes; excluded nodes are walked through but never returned.
    ``cand_d/cand_i`` hold the candidate min-heap: each node enters it at most
    once (visited marks), so capacity ``n`` never overflows and the loop needs
    no growth check (which cost ~20 % of a small search, measured).
    Returns (result count, status).
    """
    n_cand = maxheap_push(cand_d, cand_i, 0, -entry_d, entry)  # closest first: negated
    n_res = 0
    if not is_excluded(excluded, entry):
        n_res = maxheap_push(res_d, res_i, 0, entry_d, entry)
    seen = visited[vrow]
    seen[entry] = tag
    rows = upper_links.shape[0]
    while n_cand > 0:
        c_d = -cand_d[0]
        c = cand_i[0]
        if n_res == ef and c_d > res_d[0]:
            break
        n_cand = maxheap_pop(cand_d, cand_i, n_cand)
        if layer == 0:
            if n_cand > 0:  # the next node to expand, most likely: start loading its links
                prefetch_row(links0, cand_i[0])
            nbrs = links0_of(c, links0, patch)
        else:
            if levels[c] < layer:
                return n_res, STATUS_CORRUPT
            r = upper_offsets[c] + layer - 1
            if r < 0 or r >= rows:
                return n_res, STATUS_CORRUPT
            nbrs = upper_row_of(r, upper_links, patch)
        width = nbrs.shape[0]
        # the rows about to be measured, all at once: their loads overlap (prefetch.py)
        for j in range(width):
            nb = nbrs[j]
            if nb < 0:
                break
            if nb < n and seen[nb] != tag:
                prefetch_whole_row(vectors, nb)
                prefetch_row(norms, nb)
        for j in range(width):
            nb = nbrs[j]
            if nb < 0:
                break
            if nb >= n:
                return n_res, STATUS_CORRUPT
            if seen[nb] == tag:
                continue
            seen[nb] = tag
            d = distance_at(q, qn, vectors, nb, norms[nb], metric)
            if n_res < ef or d < res_d[0]:
                n_cand = maxheap_push(cand_d, cand_i, n_cand, -d, nb)
                if not is_excluded(excluded, nb):
                    if n_res < ef:
                        n_res = maxheap_push(res_d, res_i, n_res, d, nb)
                    else:
                        maxheap_replace_root(res_d, res_i, n_res, d, nb)
    return n_res, STATUS_OK


@kernel(fastmath=FASTMATH, _nrt=False)
def search_layer0_two_hop(q, qn, vectors, norms, metric, links0, patch, n, entry, entry_d, ef, visited, vrow, tag,
                          excluded, res_d, res_i, cand_d, cand_i, batch):
    """Layer-0 beam search for a filter that rejects most nodes (after ACORN).

    Distances are computed only for passing nodes: a rejected neighbour is not
    measured, its own neighbours are looked at instead (two hops), so the
    search moves through the subgraph of passing nodes, which stays connected
    where one-hop links between passing nodes are few. Rejected nodes are
    never marked visited, so each can lend its neighbours from any path.
    An expansion measures at most 2M nodes, like a plain one.
    Returns (result count, status); heaps as in :func:`search_layer`;
    ``batch``: room for ``links0.shape[1]`` node ids.
    """
    n_cand = maxheap_push(cand_d, cand_i, 0, -entry_d, entry)
    n_res = 0
    if not is_excluded(excluded, entry):
        n_res = maxheap_push(res_d, res_i, 0, entry_d, entry)
    visited[vrow, entry] = tag
    width = links0.shape[1]
    while n_cand > 0:
        c_d = -cand_d[0]
        c = cand_i[0]
        if n_res == ef and c_d > res_d[0]:
            break
        n_cand = maxheap_pop(cand_d, cand_i, n_cand)
        # Gather up to 2M passing, unvisited nodes (prefetching their rows),
        # then measure them: as many distances per expansion as a plain walk.
        nbrs = links0_of(c, links0, patch)
        # The link rows of rejected neighbours are read next, at random: start
        # loading them all first so their latencies overlap.
        for j in range(width):
            nb = nbrs[j]
            if nb < 0:
                break
            if nb < n and is_excluded(excluded, nb):
                prefetch_row(links0, nb)
        count = 0
        for j in range(width):
            nb = nbrs[j]
            if nb < 0 or count >= width:
                break
            if nb >= n:
                return n_res, STATUS_CORRUPT
            if not is_excluded(excluded, nb):
                if visited[vrow, nb] != tag:
                    visited[vrow, nb] = tag
                    prefetch_whole_row(vectors, nb)
                    prefetch_row(norms, nb)
                    batch[count] = nb
                    count += 1
                continue
            # rejected nodes are never marked visited (only the entry may be): no visited lookup
            two = links0_of(nb, links0, patch)
            for h in range(width):
                x = two[h]
                if x < 0 or count >= width:
                    break
                if x >= n:
                    return n_res, STATUS_CORRUPT
                if is_excluded(excluded, x) or visited[vrow, x] == tag:  # the bitmap is the smaller array
                    continue
                visited[vrow, x] = tag
                prefetch_whole_row(vectors, x)
                prefetch_row(norms, x)
                batch[count] = x
                count += 1
        for b in range(count):
            x = batch[b]
            d = distance_at(q, qn, vectors, x, norms[x], metric)
            if n_res < ef or d < res_d[0]:
                n_cand = maxheap_push(cand_d, cand_i, n_cand, -d, x)
                if n_res < ef:
                    n_res = maxheap_push(res_d, res_i, n_res, d, x)
                else:
                    maxheap_replace_root(res_d, res_i, n_res, d, x)
    return n_res, STATUS_OK


# ----------------------------------------------------------------- search


@kernel(fastmath=FASTMATH, _nrt=False)
def exact_rows(q, qn, vectors, norms, metric, rows, count, out):
    """``out[j]`` = the exact distance of ``q`` to row ``rows[j]`` for ``j < count``
    (euclidean: squared, :func:`exact_l2`). Its own kernel, compiled with
    FASTMATH: the distance functions are inlined into their caller's IR and take
    the caller's flags, and without reassociation their loops do not vectorise
    (a 128-d distance took 80-110 ns instead of 9, measured)."""
    for j in range(count):
        i = rows[j]
        if metric == METRIC_EUCLIDEAN:
            out[j] = exact_l2(q, vectors[i])
        else:
            out[j] = float_distance(q, qn, vectors[i], norms[i], metric)


@kernel(_nrt=False)
def _sorted_topk(q, vectors, norms, metric, res_d, res_i, n_res, k, out_d, out_i, qrow):
    if metric == METRIC_EUCLIDEAN:  # exact squared distances for what is returned
        exact_rows(q, np.float32(0.0), vectors, norms, metric, res_i, n_res, res_d)
    sort_pairs(res_d, res_i, n_res)
    for j in range(min(k, n_res)):
        d = np.float64(res_d[j])
        out_d[qrow, j] = np.sqrt(d) if metric == METRIC_EUCLIDEAN else d  # the distance users get
        out_i[qrow, j] = res_i[j]


@kernel(_nrt=False)
def _walk(q, qn, rows, norms, metric, links0, levels, upper_offsets, upper_links, patch, entry, max_level, excluded,
          ef, visited, vrow, tags, cand_d, cand_i, two_hop):
    """One query's HNSW search over ``rows`` (the vectors, or their codes with
    ``q``/``qn`` in code space, see :func:`distance`): greedy descent to layer
    0, then the beam of width ``ef`` there. Returns (n_res, status): the
    found nodes with their distances, unordered, are the first ``n_res`` of
    :func:`result_heap`.

    Allocates nothing, like every kernel of a float walk down to
    ``search_one`` / ``search_knn`` (``_nrt=False``: numba's reference counts
    and allocations were ~20 % of a 128-d one-query call, measured). It
    returns no array: one made in code without reference counts and handed to
    code with them would be released once too often. A scratch row shorter
    than :func:`scratch_width` is refused (STATUS_CORRUPT), never overrun."""
    n = rows.shape[0]
    width = links0.shape[1]
    if cand_d.shape[1] < 2 * n + 1 + width or cand_i.shape[1] < 2 * n + 1 + width:
        return 0, STATUS_CORRUPT
    heap_d, heap_i = cand_d[vrow, :n], cand_i[vrow, :n]
    res_d, res_i = result_heap(cand_d, cand_i, vrow, n)
    cur, cur_d, status = greedy_descend(q, qn, rows, norms, metric, levels, upper_offsets, upper_links, patch, n,
                                        entry, max_level, 0)
    if status != STATUS_OK:
        return 0, status
    tag = next_tag(visited, tags, vrow)
    if two_hop:
        n_res, status = search_layer0_two_hop(q, qn, rows, norms, metric, links0, patch, n, cur, cur_d, ef, visited,
                                              vrow, tag, excluded, res_d, res_i, heap_d, heap_i,
                                              cand_i[vrow, cand_i.shape[1] - width:])
    else:
        n_res, status = search_layer(q, qn, rows, norms, metric, links0, levels, upper_offsets, upper_links, patch, n,
                                     0, cur, cur_d, ef, visited, vrow, tag, excluded, res_d, res_i, heap_d, heap_i)
    return n_res, status


@kernel(inline="always")
def result_heap(cand_d, cand_i, vrow, n):
    """Where :func:`_walk` leaves its results in scratch row ``vrow`` (:func:`scratch_width`)."""
    return cand_d[vrow, n:2 * n + 1], cand_i[vrow, n:2 * n + 1]


@kernel(_nrt=False)
def _search_one(q, qn, vectors, norms, metric, links0, levels, upper_offsets, upper_links, patch, entry, max_level,
                excluded, k, ef, visited, vrow, tags, cand_d, cand_i, out_d, out_i, qrow, two_hop):
    n_res, status = _walk(q, qn, vectors, norms, metric, links0, levels, upper_offsets, upper_links, patch, entry,
                          max_level, excluded, ef, visited, vrow, tags, cand_d, cand_i, two_hop)
    if status != STATUS_OK and n_res == 0:
        return status
    res_d, res_i = result_heap(cand_d, cand_i, vrow, vectors.shape[0])
    _sorted_topk(q, vectors, norms, metric, res_d, res_i, n_res, k, out_d, out_i, qrow)
    return status


@kernel(_nrt=False)
def search_knn(vectors, norms, metric, links0, levels, upper_offsets, upper_links, patch, entry, max_level,
               queries, qnorms, excluded, k, ef, visited, tags, cand_d, cand_i, two_hop, out_d, out_i):
    """k nearest non-excluded nodes per query, serially, into ``out_d/out_i[m, k]``
    (float64 distances as users get them (euclidean: the root), ascending, slot -1
    past the end); returns the status. The caller allocates the outputs: returning
    two new arrays costs a one-query call ~1 us of boxing, measured."""
    m = queries.shape[0]
    out_d[:] = np.inf
    out_i[:] = -1
    status = STATUS_OK
    for qi in range(m):
        s = _search_one(queries[qi], qnorms[qi], vectors, norms, metric, links0, levels, upper_offsets,
                        upper_links, patch, entry, max_level, excluded, k, ef, visited, 0, tags, cand_d, cand_i, out_d, out_i, qi,
                        two_hop)
        if s != STATUS_OK:
            status = s
    return status


QUERY_CORRUPT = -1  # search_one: the graph names a node or layer that does not exist
_FLOAT32_MAX = float(np.finfo(np.float32).max)
QUERY_REFUSED = -2  # search_one: the squared norm is not finite in float32, or zero for cosine


@kernel(inline="always")
def _square_norm_of(q):
    n = q.shape[0]
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float64(0.0)
    j = 0
    while j + 8 <= n:
        a0 += np.float64(q[j]) * np.float64(q[j])
        a1 += np.float64(q[j + 1]) * np.float64(q[j + 1])
        a2 += np.float64(q[j + 2]) * np.float64(q[j + 2])
        a3 += np.float64(q[j + 3]) * np.float64(q[j + 3])
        a4 += np.float64(q[j + 4]) * np.float64(q[j + 4])
        a5 += np.float64(q[j + 5]) * np.float64(q[j + 5])
        a6 += np.float64(q[j + 6]) * np.float64(q[j + 6])
        a7 += np.float64(q[j + 7]) * np.float64(q[j + 7])
        j += 8
    while j < n:
        a0 += np.float64(q[j]) * np.float64(q[j])
        j += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@kernel(_nrt=False)
def square_norm(q):
    """The squared norm of a query, summed in float64: the one definition of a
    query's norm, in the lean call's kernel, on the checked path
    (``_input.queries``) and for a batch (:func:`query_norms`), so that every
    path ranks a query alike. Eight partial sums in a fixed order and no
    fast-math (no reassociation, no fused multiply-add): the JIT's and the
    extension's builds add alike. A NaN gives NaN and infinity inf; the callers
    refuse a result above float32's largest value (the kernels' dot products
    are float32)."""
    return _square_norm_of(q)


@kernel(_nrt=False)
def query_norms(queries, cosine, out):
    """The norm of each row of ``queries`` as :func:`_query_norm` computes a
    one-query search's, into ``out`` (float32); returns the first row refused
    (squared norm above float32's range, NaN, or zero for ``cosine``), or -1."""
    for i in range(queries.shape[0]):
        sq = _square_norm_of(queries[i])
        if not sq <= _FLOAT32_MAX or (cosine and sq == 0.0):
            return i
        out[i] = np.float32(np.sqrt(sq))
    return -1


@kernel(inline="always")
def _query_norm(query, metric):
    """The norm a one-query kernel ranks ``query`` with, or -1 where the checked path refuses it."""
    sq = square_norm(query)
    if not sq <= _FLOAT32_MAX or (metric == METRIC_COSINE and sq == 0.0):
        return np.float32(-1.0)
    return np.float32(np.sqrt(sq))


@kernel(inline="always")
def _hits_of(status, out_i, k):
    """search_one's result: the hits in row 0 of ``out_i``, or QUERY_CORRUPT."""
    if status != STATUS_OK:
        return QUERY_CORRUPT
    hits = 0
    while hits < k and out_i[0, hits] >= 0:
        hits += 1
    return hits


@kernel(_nrt=False)
def search_one(vectors, norms, metric, links0, levels, upper_offsets, upper_links, patch, entry, max_level,
               query, excluded, k, ef, visited, tags, cand_d, cand_i, out_d, out_i):
    """:func:`search_knn` of one 1-D query, its norm computed here
    (:func:`square_norm`): the lean call's kernel. Returns how many hits row 0
    of ``out_d/out_i[1, k]`` holds (ascending; the rest inf / -1), or
    QUERY_CORRUPT or QUERY_REFUSED, for which the caller takes the checked
    path (which names the problem)."""
    qn = _query_norm(query, metric)
    if qn < np.float32(0.0):
        return QUERY_REFUSED
    out_d[:] = np.inf
    out_i[:] = -1
    status = _search_one(query, qn, vectors, norms, metric, links0, levels, upper_offsets, upper_links, patch, entry,
                         max_level, excluded, k, ef, visited, 0, tags, cand_d, cand_i, out_d, out_i, 0, False)
    return _hits_of(status, out_i, k)


@kernel()
def search_one_codes(vectors, norms, codes, params, metric, links0, levels, upper_offsets, upper_links, patch, entry,
                     max_level, query, excluded, k, ef, rescore, visited, tags, cand_d, cand_i, out_d, out_i):
    """:func:`search_one` of a quantized segment (:func:`search_knn_codes` of one query)."""
    qn = _query_norm(query, metric)
    if qn < np.float32(0.0):
        return QUERY_REFUSED
    out_d[:] = np.inf
    out_i[:] = -1
    status = _search_one_codes(query, qn, vectors, norms, codes, params, metric, links0, levels, upper_offsets,
                               upper_links, patch, entry, max_level, excluded, k, ef, rescore, visited, 0, tags,
                               cand_d, cand_i, out_d, out_i, 0, False, query_buffer(codes))
    return _hits_of(status, out_i, k)


@kernel(parallel=True)
def search_knn_parallel(vectors, norms, metric, links0, levels, upper_offsets, upper_links, patch, entry, max_level,
                        queries, qnorms, excluded, k, ef, visited, tags, cand_d, cand_i, two_hop, out_d, out_i):
    """:func:`search_knn` with queries split into one chunk per visited row (thread)."""
    m = queries.shape[0]
    chunks = visited.shape[0]
    out_d[:] = np.inf
    out_i[:] = -1
    statuses = np.zeros(chunks, dtype=np.int64)
    per = (m + chunks - 1) // chunks
    for c in prange(chunks):
        for qi in range(c * per, min(m, (c + 1) * per)):
            s = _search_one(queries[qi], qnorms[qi], vectors, norms, metric, links0, levels, upper_offsets,
                            upper_links, patch, entry, max_level, excluded, k, ef, visited, c, tags, cand_d, cand_i, out_d, out_i,
                            qi, two_hop)
            if s != STATUS_OK:
                statuses[c] = s
    return statuses.max()


# ----------------------------------------------------------------- search on int8 or binary codes (SPEC §5.10)


@kernel(fastmath=FASTMATH, inline="always")
def encode_query_int8(q, params, out):
    """A query against a segment's int8 codes: ``out = q * scale`` per dimension,
    so that ``q . x ~ q . offset + out . codes(x)``. Returns ``q . offset``."""
    offset_dot = np.float32(0.0)
    for j in range(q.shape[0]):
        out[j] = q[j] * params[1, j]
        offset_dot += q[j] * params[0, j]
    return offset_dot


@kernel(fastmath=FASTMATH, inline="always")
def encode_query_bits(q, params, out):
    """A query against a segment's binary codes: ``out`` = the sign bits of
    ``q - offset`` as the codes are made (bit ``j % 64`` of word ``j // 64``
    set where the value is > 0). Returns ``pi / dim`` (see :func:`bit_distance`)."""
    out[:] = 0
    for j in range(q.shape[0]):
        if q[j] - params[0, j] > np.float32(0.0):
            out[j >> 6] |= np.uint64(1) << np.uint64(j & 63)
    return np.float32(np.pi / q.shape[0])


def encode_query(q, params, out):
    """The query in a segment's code space, into ``out`` (float32 for int8
    codes, uint64 words for binary ones); returns the second component of the
    walk's query information (see :func:`distance`). Kernels only."""
    raise NotImplementedError("encode_query() is compiled into kernels only")


@overload(encode_query, jit_options={"fastmath": FASTMATH, "error_model": "numpy", "nogil": True})
def _encode_query_for(q, params, out):
    if isinstance(out, types.Array) and out.dtype == types.uint64:
        return encode_query_bits.py_func
    return encode_query_int8.py_func


def query_buffer(codes):
    """An uninitialised buffer for one query in the code space of ``codes``
    (see :func:`encode_query`). Kernels only."""
    raise NotImplementedError("query_buffer() is compiled into kernels only")


@overload(query_buffer, jit_options={"nogil": True})
def _query_buffer_for(codes):
    if codes.dtype == types.uint64:
        return lambda codes: np.empty(codes.shape[1], dtype=np.uint64)
    return lambda codes: np.empty(codes.shape[1], dtype=np.float32)


@kernel()
def _search_one_codes(q, qn, vectors, norms, codes, params, metric, links0, levels, upper_offsets, upper_links, patch,
                      entry, max_level, excluded, k, ef, rescore, visited, vrow, tags, cand_d, cand_i, out_d, out_i,
                      qrow, two_hop, qc):
    """One query: the walk of :func:`_search_one` over the codes, then the best
    ``k * rescore`` candidates by code distance ranked again by their exact
    distance to the stored vectors (``rescore`` 0: the code distances as found)."""
    info = (qn, encode_query(q, params, qc))
    n_res, status = _walk(qc, info, codes, norms, metric, links0, levels, upper_offsets, upper_links, patch, entry,
                          max_level, excluded, ef, visited, vrow, tags, cand_d, cand_i, two_hop)
    if status != STATUS_OK and n_res == 0:
        return status
    res_d, res_i = result_heap(cand_d, cand_i, vrow, codes.shape[0])
    sort_pairs(res_d, res_i, n_res)
    if rescore <= 0:
        for j in range(min(k, n_res)):
            d = np.float64(res_d[j])
            out_d[qrow, j] = np.sqrt(d) if metric == METRIC_EUCLIDEAN else d
            out_i[qrow, j] = res_i[j]
        return status
    r = min(n_res, k * rescore)
    cand = np.empty(r, dtype=np.int64)
    for j in range(r):
        cand[j] = res_i[j]
    _rescore(q, qn, vectors, norms, metric, cand, r, k, out_d, out_i, qrow)
    return status


@kernel()
def _rescore(q, qn, vectors, norms, metric, cand, r, k, out_d, out_i, qrow):
    """The ``k`` of candidates ``cand[:r]`` (in code-distance order) nearest by
    exact distance, stably sorted, into row ``qrow`` of the outputs."""
    for j in range(r):  # the rows are read next: let their loads overlap
        prefetch_whole_row(vectors, cand[j])
    exact_d = np.empty(r, dtype=np.float32)
    exact_rows(q, qn, vectors, norms, metric, cand, r, exact_d)
    final = np.argsort(exact_d, kind="mergesort")
    for j in range(min(k, r)):
        d = np.float64(exact_d[final[j]])
        out_d[qrow, j] = np.sqrt(d) if metric == METRIC_EUCLIDEAN else d
        out_i[qrow, j] = cand[final[j]]


@kernel()
def rescore_knn(vectors, norms, queries, qnorms, metric, cand, k, out_d, out_i):
    """The second half of a quantized search on its own: each query's
    candidates ``cand[q]`` (slots in code-distance order, -1 after the last:
    what :func:`search_knn_codes` returns with ``rescore`` 0 and ``k * rescore``
    results) ranked by exact distance, exactly as the one-call search ranks
    them. Returns STATUS_CORRUPT if a slot is out of range."""
    m = queries.shape[0]
    n = vectors.shape[0]
    out_d[:] = np.inf
    out_i[:] = -1
    for qi in range(m):
        r = 0
        while r < cand.shape[1] and cand[qi, r] >= 0:
            if cand[qi, r] >= n:
                return STATUS_CORRUPT
            r += 1
        _rescore(queries[qi], qnorms[qi], vectors, norms, metric, cand[qi], r, k, out_d, out_i, qi)
    return STATUS_OK


@kernel()
def search_knn_codes(vectors, norms, codes, params, metric, links0, levels, upper_offsets, upper_links, patch, entry,
                     max_level, queries, qnorms, excluded, k, ef, rescore, visited, tags, cand_d, cand_i, two_hop,
                     out_d, out_i):
    """:func:`search_knn` walking the int8 ``codes`` of a quantized segment and
    rescoring against ``vectors`` (see :func:`_search_one_codes`)."""
    m = queries.shape[0]
    out_d[:] = np.inf
    out_i[:] = -1
    qc = query_buffer(codes)
    status = STATUS_OK
    for qi in range(m):
        st = _search_one_codes(queries[qi], qnorms[qi], vectors, norms, codes, params, metric, links0, levels,
                               upper_offsets, upper_links, patch, entry, max_level, excluded, k, ef, rescore, visited,
                               0, tags, cand_d, cand_i, out_d, out_i, qi, two_hop, qc)
        if st != STATUS_OK:
            status = st
    return status


# ----------------------------------------------------------------- construction


@kernel(inline="always")
def vector_of(store, i):
    """Row ``i`` of a build's vectors: ``store = (base, base_norms, new, new_norms,
    n_base)``, rows below ``n_base`` in ``base`` (e.g. the file), the rest in ``new``."""
    if i < store[4]:
        return store[0][i]
    return store[2][i - store[4]]


@kernel(inline="always")
def norm_of(store, i):
    if i < store[4]:
        return store[1][i]
    return store[3][i - store[4]]


@kernel(fastmath=FASTMATH, _nrt=False)
def select_neighbors_heuristic(base, cd, ci, count, m, store, metric, out):
    """Heuristic selection (HNSW paper, Alg. 4; hnswlib's variant without extension).

    ``cd/ci[:count]`` are candidates sorted by distance to the base node. A
    candidate is kept when it is closer to the base than to every neighbour
    kept so far. Writes up to ``m`` ids into ``out``; returns how many.
    """
    kept = 0
    for c in range(count):
        if kept >= m:
            break
        cand = ci[c]
        if cand == base:
            continue
        dup = False
        for r in range(kept):
            if out[r] == cand:
                dup = True
                break
        if dup:
            continue
        good = True
        cv = vector_of(store, cand)
        cn = norm_of(store, cand)
        for r in range(kept):
            sel = out[r]
            if distance(cv, cn, vector_of(store, sel), norm_of(store, sel), metric) < cd[c]:
                good = False
                break
        if good:
            out[kept] = cand
            kept += 1
    return kept


@kernel(fastmath=FASTMATH)
def add_reverse_link(links, target, src, store, metric, scratch_d, scratch_i):
    """Add ``src`` to the row ``links`` of ``target``; a full row keeps the
    heuristic's choice among its neighbours and ``src``."""
    cap = links.shape[0]
    count = 0
    while count < cap and links[count] >= 0:
        if links[count] == src:
            return
        count += 1
    if count < cap:
        links[count] = src
        return
    tv = vector_of(store, target)
    tn = norm_of(store, target)
    for r in range(cap):
        nb = links[r]
        scratch_i[r] = nb
        scratch_d[r] = distance(tv, tn, vector_of(store, nb), norm_of(store, nb), metric)
    scratch_i[cap] = src
    scratch_d[cap] = distance(tv, tn, vector_of(store, src), norm_of(store, src), metric)
    order2 = np.argsort(scratch_d[:cap + 1], kind="mergesort")
    sd = scratch_d[:cap + 1][order2]
    si = scratch_i[:cap + 1][order2]
    kept = select_neighbors_heuristic(target, sd, si, cap + 1, cap, store, metric, links)
    for r in range(kept, cap):
        links[r] = -1


@kernel()
def _find_candidates(q, qn, level, vectors, norms, metric, links0, levels, upper_offsets, upper_links, patch,
                     n_graph, entry, max_level, efc, visited, vrow, tags, heap_d, heap_i, cand_d, cand_i, cand_n):
    """Candidates of a node (vector ``q``, norm ``qn``, ``level``) on each of its
    layers, from the graph of nodes < n_graph."""
    top = min(level, max_level)
    cur, cur_d, _ = greedy_descend(q, qn, vectors, norms, metric, levels, upper_offsets,
                                   upper_links, patch, n_graph, entry, max_level, top)
    empty = np.zeros(0, dtype=np.uint8)
    res_d = np.empty(efc + 1, dtype=np.float32)
    res_i = np.empty(efc + 1, dtype=np.int32)
    for layer in range(top, -1, -1):
        tag = next_tag(visited, tags, vrow)
        n_res, _ = search_layer(q, qn, vectors, norms, metric, links0, levels, upper_offsets,
                                upper_links, patch, n_graph, layer, cur, cur_d, efc, visited, vrow, tag, empty,
                                res_d, res_i, heap_d[vrow], heap_i[vrow])
        for j in range(n_res):
            cand_d[layer, j] = res_d[j]
            cand_i[layer, j] = res_i[j]
        cand_n[layer] = n_res
        # the nearest found is the entry of the next layer down
        best = 0
        for j in range(1, n_res):
            if res_d[j] < res_d[best]:
                best = j
        if n_res > 0:
            cur = res_i[best]
            cur_d = res_d[best]


@kernel(inline="always")
def _candidate_heaps(levels, first, count, efc):
    """Per-layer candidate max-heaps (capacity ``efc``, one spare) of nodes ``first .. first+count-1``."""
    top = 0
    for i in range(first, first + count):
        if levels[i] > top:
            top = levels[i]
    cand_d = np.empty((count, top + 1, efc + 1), dtype=np.float32)
    cand_i = np.empty((count, top + 1, efc + 1), dtype=np.int32)
    cand_n = np.zeros((count, top + 1), dtype=np.int64)
    return cand_d, cand_i, cand_n


@kernel(inline="always")
def _offer(cand_d, cand_i, cand_n, top_layer, d, node, efc):
    """Offer ``node`` at distance ``d`` to one new node's candidate max-heaps (capacity ``efc``) of layers 0..top_layer."""
    for layer in range(top_layer + 1):
        hd = cand_d[layer]
        hi = cand_i[layer]
        cnt = cand_n[layer]
        if cnt < efc:
            cand_n[layer] = maxheap_push(hd, hi, cnt, d, node)
        elif d < hd[0]:
            maxheap_replace_root(hd, hi, cnt, d, node)


@kernel(inline="always")
def _sort_candidates(cand_d, cand_i, cand_n, level):
    """One new node's candidates of layers 0..level, ascending by distance."""
    for layer in range(level + 1):
        cnt = cand_n[layer]
        order = np.argsort(cand_d[layer, :cnt], kind="mergesort")
        cand_d[layer, :cnt] = cand_d[layer, :cnt][order]
        cand_i[layer, :cnt] = cand_i[layer, :cnt][order]


# A build inserts nodes in batches. Each batch runs four phases, every one
# over independent items, so any number of threads can share a phase in any
# order and the graph comes out the same (api drives them, pulling small
# ranges of items from a shared counter: a thread slowed by other work on the
# machine takes fewer ranges instead of holding up the batch):
#   1. build_candidates: each new node's candidates from the graph as it was
#      before the batch, plus the batch's earlier nodes by brute force;
#   2. build_select: each new node selects its own neighbours (its own rows);
#   3. reverse_edges (serial): the new edges grouped by (target, layer);
#   4. build_reverse: each group adds its reverse links to its target's row.
# The nodes' vectors are addressed as a store (vector_of): rows below n_store
# in ``base``, the rest in ``new``. New node j has id first_id + j; its
# vector is new_vectors[j] (a batch of a fresh build passes a slice of the
# build's own array as new_vectors, and n_store past every row).


@kernel(fastmath=FASTMATH)
def build_candidates(base_vectors, base_norms, new_vectors, new_norms, metric, links0, levels, upper_offsets,
                     upper_links, patch, n_graph, first_id, entry, max_level, efc, visited, vrow, tags, heap_d, heap_i,
                     cand_d, cand_i, cand_n, j_lo, j_hi):
    """Phase 1 for new nodes ``j_lo .. j_hi-1``: candidates (per layer, at most
    ``efc``) from the graph of nodes < ``n_graph`` and from new nodes < j,
    sorted ascending into ``cand_d/cand_i[j]``, counts in ``cand_n[j]``."""
    for j in range(j_lo, j_hi):
        qv = new_vectors[j]
        qn = new_norms[j]
        lj = levels[first_id + j]
        _find_candidates(qv, qn, lj, base_vectors, base_norms, metric, links0, levels, upper_offsets, upper_links,
                         patch, n_graph, entry, max_level, efc, visited, vrow, tags, heap_d, heap_i,
                         cand_d[j], cand_i[j], cand_n[j])
        for jj in range(j):
            d = distance(qv, qn, new_vectors[jj], new_norms[jj], metric)
            _offer(cand_d[j], cand_i[j], cand_n[j], min(lj, levels[first_id + jj]), d, first_id + jj, efc)
        _sort_candidates(cand_d[j], cand_i[j], cand_n[j], lj)


@kernel(fastmath=FASTMATH)
def build_select(base_vectors, base_norms, new_vectors, new_norms, n_store, metric, levels, first_id, m,
                 cand_d, cand_i, cand_n, out_links0, out_offsets, out_upper, row_base, j_lo, j_hi):
    """Phase 2 for new nodes ``j_lo .. j_hi-1``: node j's neighbours, chosen
    among its candidates, into its rows ``row_base + j`` of the out arrays."""
    store = (base_vectors, base_norms, new_vectors, new_norms, n_store)
    for j in range(j_lo, j_hi):
        node = first_id + j
        for layer in range(levels[node] + 1):
            out = neighbors_of(row_base + j, layer, out_links0, out_offsets, out_upper)
            select_neighbors_heuristic(node, cand_d[j, layer], cand_i[j, layer], cand_n[j, layer], m,
                                       store, metric, out)


@kernel(fastmath=FASTMATH)
def build_reverse(base_vectors, base_norms, new_vectors, new_norms, n_store, metric, keys, srcs, order, bounds,
                  src_base, copy_of, rows0, rows_upper, out_links0, out_offsets, out_upper, id_base, g_lo, g_hi):
    """Phase 4 for edge groups ``g_lo .. g_hi-1`` (:func:`reverse_edges`): each
    source ``src_base + srcs[e]`` of a group joins its target's row. The row is
    a copy when ``copy_of[g] >= 0`` (``rows0`` for layer 0, else
    ``rows_upper``), else row ``target - id_base`` of the out arrays;
    ``copy_of[g] == -2`` skips the group."""
    store = (base_vectors, base_norms, new_vectors, new_norms, n_store)
    for g in range(g_lo, g_hi):
        c = copy_of[g]
        if c == -2:
            continue
        key = keys[order[bounds[g]]]
        target = key // 64
        layer = key % 64
        if c >= 0:
            if layer == 0:
                links = rows0[c]
            else:
                links = rows_upper[c]
        else:
            links = neighbors_of(target - id_base, layer, out_links0, out_offsets, out_upper)
        scratch_d = np.empty(links.shape[0] + 1, dtype=np.float32)
        scratch_i = np.empty(links.shape[0] + 1, dtype=np.int32)
        for e in range(bounds[g], bounds[g + 1]):
            add_reverse_link(links, target, src_base + srcs[order[e]], store, metric, scratch_d, scratch_i)


@kernel()
def reverse_edges(start, b, levels, links0, upper_offsets, upper_links):
    """The edges of new nodes ``start .. start+b-1`` as (target, layer) keys
    (``target * 64 + layer``) with their sources, stably sorted by key: returns
    (keys, srcs, order, bounds, n_groups), group ``g`` being entries
    ``order[bounds[g] .. bounds[g+1]-1]`` (sources in insertion order)."""
    n_edges = 0
    for j in range(b):
        node = start + j
        for layer in range(levels[node] + 1):
            out = neighbors_of(node, layer, links0, upper_offsets, upper_links)
            for r in range(out.shape[0]):
                if out[r] < 0:
                    break
                n_edges += 1
    keys = np.empty(n_edges, dtype=np.int64)
    srcs = np.empty(n_edges, dtype=np.int64)
    e = 0
    for j in range(b):
        node = start + j
        for layer in range(levels[node] + 1):
            out = neighbors_of(node, layer, links0, upper_offsets, upper_links)
            for r in range(out.shape[0]):
                t = out[r]
                if t < 0:
                    break
                keys[e] = np.int64(t) * 64 + layer
                srcs[e] = node
                e += 1
    order = np.argsort(keys, kind="mergesort")  # stable: sources stay in insertion order
    bounds = np.empty(n_edges + 1, dtype=np.int64)
    n_groups = 0
    for e in range(n_edges):
        if e == 0 or keys[order[e]] != keys[order[e - 1]]:
            bounds[n_groups] = e
            n_groups += 1
    bounds[n_groups] = n_edges
    return keys, srcs, order, bounds, n_groups


@kernel()
def plan_copies(keys, order, bounds, n_groups, n, levels, links0, upper_offsets, upper_links, patch):
    """Before phase 4 of an insertion into a committed graph of ``n`` nodes
    (SPEC §5.9): the committed rows that gain a reverse link, copied (their
    newest version) so the committed graph is never written. Groups are
    sorted by (target, layer), so both copy lists come out sorted. Returns
    (keys0, rows0, keys_upper, rows_upper, copy_of): ``copy_of[g]`` is the
    group's copy, -1 for a new node's row, -2 for a row that does not exist
    (a damaged graph led there; writers check graphs first)."""
    n0 = 0
    nu = 0
    for g in range(n_groups):
        key = keys[order[bounds[g]]]
        if key // 64 < n and levels[key // 64] >= key % 64:
            if key % 64 == 0:
                n0 += 1
            else:
                nu += 1
    keys0 = np.empty(n0, dtype=np.int32)
    rows0 = np.empty((n0, links0.shape[1]), dtype=np.int32)
    keys_up = np.empty(nu, dtype=np.int32)
    rows_up = np.empty((nu, upper_links.shape[1]), dtype=np.int32)
    copy_of = np.empty(n_groups, dtype=np.int64)
    i0 = 0
    iu = 0
    for g in range(n_groups):
        key = keys[order[bounds[g]]]
        target = key // 64
        layer = key % 64
        if target >= n:
            copy_of[g] = -1
        elif levels[target] < layer:
            copy_of[g] = -2
        elif layer == 0:
            keys0[i0] = target
            rows0[i0] = links0_of(target, links0, patch)
            copy_of[g] = i0
            i0 += 1
        else:
            r = upper_offsets[target] + layer - 1
            keys_up[iu] = r
            rows_up[iu] = upper_row_of(r, upper_links, patch)
            copy_of[g] = iu
            iu += 1
    return keys0, rows0, keys_up, rows_up, copy_of
