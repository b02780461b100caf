"""Full-text (BM25) and hybrid search across a collection's sources (SPEC §5.11).

A text query is scored against the whole collection as this process sees it:
``N``, ``avgdl`` and each term's ``df`` come from every source's live records
(committed segments without their deleted or locally hidden records, then
this process's unsaved ones), never from one segment, so a score does not
depend on how records happen to be split, and a filter narrows the list
without changing any score (as in Lucene). Each source then yields its own
top-k over its posting lists, and the lists are merged exactly, as for
vectors (``search.merge``).

Hybrid search fuses the dense top-N (the HNSW walk, or brute force with
``exact=True``) with the BM25 top-N: Reciprocal Rank Fusion by default, or a
weighted sum of min-max normalised scores (README "Full-text and hybrid
search" documents both, and the order of ties).
"""

from __future__ import annotations

import functools
import heapq

import numpy as np

from .._format.catalog import BM25_B, BM25_K1, TextIndex
from ..errors import InvalidArgumentError, NeedleError
from ..results import SearchResult, SearchResults
from .._index.text import (BM25Stats, TextSource, bm25_topk, chunk_impacts, corpus_stats, document_frequencies,
                           query_terms, analyzer_of, texts_of)  # noqa: F401 (analyzer_of, texts_of: re-exported)
from .._text import term_key_list
from . import search as _search

RRF_K = 60  # Reciprocal Rank Fusion's constant (Cormack et al. 2009), settable per call
DEFAULT_CANDIDATES = 100
TEXT_OPTIONS = ("stemmer", "stop_words", "fold_accents", "k1", "b")


def text_index(field, options, error=InvalidArgumentError) -> TextIndex:
    """The ``TextIndex`` a user asked for: ``field`` a metadata key, ``options``
    a dict of :data:`TEXT_OPTIONS` (analysis: stemmer, stop_words,
    fold_accents; ranking: BM25's k1 and b), every value checked."""
    from .._text.analysis import Analyzer

    if not isinstance(field, str) or not field or len(field.encode("utf-8", "surrogatepass")) > 255:
        raise error(f"text_field must be a non-empty metadata key of at most 255 bytes, got {field!r}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(TEXT_OPTIONS))
    if unknown:
        raise error(f"unknown text options {unknown}; known: {', '.join(TEXT_OPTIONS)}")
    k1, b = options.pop("k1", BM25_K1), options.pop("b", BM25_B)
    if isinstance(k1, bool) or not isinstance(k1, (int, float)) or not 0 <= k1 <= 100:
        raise error(f"BM25 k1 must be a number in [0, 100], got {k1!r}")
    if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b <= 1:
        raise error(f"BM25 b must be a number in [0, 1], got {b!r}")
    try:
        analyzer = Analyzer(**options)
    except NeedleError as exc:
        if error is InvalidArgumentError or isinstance(exc, error):
            raise
        raise error(str(exc)) from None
    return TextIndex(field, analyzer.to_json(), float(k1), float(b))


def active_index(state) -> TextIndex:
    """The text index a search of ``state`` uses (InvalidArgumentError if
    there is none, or if it waits for the next save to be built)."""
    meta = state.descriptor
    if meta.text is not None:
        return meta.text
    if state.text_index is not None:
        if meta.segments:
            raise InvalidArgumentError(f"collection {meta.name!r}: its text index is built by the next save(); "
                                       "text search is available after it")
        return state.text_index
    raise InvalidArgumentError(f"collection {meta.name!r} has no text index: create it with text_field=... or "
                               "collection.create_text_index(field)")


def _source_text(source, text: TextIndex):
    """``(chunks, doc_lengths)`` of one source: a committed segment's from its
    file; this process's unsaved records' built here, once per set of records."""
    if source.descriptor is not None:
        return [c.chunk for c in source.text_chunks()], source.text_doc_lengths
    build = source.text_build(text)
    return [build.chunk], build.doc_lengths


def query_texts(texts, batch: bool) -> list[str]:
    if not batch:
        texts = [texts]
    elif isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise InvalidArgumentError(f"texts must be a list of strings, got {type(texts).__name__}")
    for t in texts:
        if not isinstance(t, str):
            raise InvalidArgumentError(f"a text query must be a str, got {type(t).__name__}")
    return list(texts)


_DF_CACHE_TERMS = 1 << 18  # a view remembers the document frequencies of at most this many terms


def _view_cache(source) -> dict | None:
    """What a committed segment's text search keeps while its view lives (views
    are immutable; this process's unsaved records have none)."""
    if source.descriptor is None:
        return None
    cache = source.caches.get("text")
    if cache is None:
        cache = source.caches.setdefault("text", {"corpus": None, "df": {}, "impacts": None})
    return cache


def _collection_stats(live, parts, query_keys) -> BM25Stats:
    """``bm25_stats`` over every source for the queries' term keys, from the per-view caches where
    they hold: N, the token total and each term's df of a segment read with its own tombstones
    change only with the view."""
    keys = {key for q in query_keys for key in q}
    df = dict.fromkeys(keys, 0)
    n_docs = total = 0
    for (source, f), (chunks, lengths) in zip(live, parts):
        cache = _view_cache(source) if f.excluded is getattr(source, "tombstones", None) else None
        if cache is None:
            src = TextSource(chunks, lengths, f.excluded)
            counts = corpus_stats([src])
            ordered = sorted(keys)
            for key, count in zip(ordered, document_frequencies([src], np.array(ordered, dtype=np.uint64)).tolist()):
                df[key] += count
        else:
            counts = cache["corpus"]
            if counts is None:
                counts = cache["corpus"] = corpus_stats([TextSource(chunks, lengths, f.excluded)])
            known = cache["df"]
            missing = sorted(key for key in keys if key not in known)
            if missing:
                if len(known) + len(missing) > _DF_CACHE_TERMS:
                    known.clear()
                found = document_frequencies([TextSource(chunks, lengths, f.excluded)],
                                             np.array(missing, dtype=np.uint64))
                known.update(zip(missing, found.tolist()))
            for key in keys:
                df[key] += known[key]
        n_docs, total = n_docs + counts[0], total + counts[1]
    return BM25Stats(n_docs, total / n_docs if n_docs else 0.0, df)


def _impacts(source, chunks, lengths, text: TextIndex, avgdl: float, settled: bool):
    """The cached per-posting impacts of a committed segment's chunks for these statistics, or
    None (score from the formula: the same scores). They hold while avgdl does, so they are
    computed the second time a view is queried with one avgdl, and only while the statistics are
    settled (``settled``: every source a committed view read with its own tombstones; unsaved
    records or deletes move avgdl at every change, and a pass over the postings per change
    would cost more than the formula saves)."""
    cache = _view_cache(source) if settled else None
    if cache is None or not avgdl > 0:
        return None
    params = (text.k1, text.b, avgdl)
    held = cache["impacts"]
    if held is None or held[0] != params:
        cache["impacts"] = (params, None)
        return None
    if held[1] is None:
        cache["impacts"] = held = (params, [chunk_impacts(c, lengths, *params) for c in chunks])
    return held[1]


def text_topk(state, texts: list[str], k: int, predicate):
    """Per source, ``(distances[m, k], slots[m, k])`` by BM25 (``distance = -score``),
    with the sources they come from: what ``search.merge`` takes."""
    text = active_index(state)
    analyzer = analyzer_of(text)
    tokens = [analyzer.tokens(t) for t in texts]
    live = _search.sources(state, None)
    ranked = live if predicate is None else _search.sources(state, predicate)
    parts = [_source_text(source, text) for source, _ in live]
    query_keys = [term_key_list(q) for q in tokens]
    stats = _collection_stats(live, parts, query_keys)
    terms = [query_terms(q, stats, keys) for q, keys in zip(tokens, query_keys)]
    settled = all(source.descriptor is not None and f.excluded is source.tombstones for source, f in live)
    found = [bm25_topk(chunks, lengths, source.n, tokens, f.excluded, k, text.k1, text.b, stats,
                       _impacts(source, chunks, lengths, text, stats.avgdl, settled), terms=terms)
             for (source, f), (chunks, lengths) in zip(ranked, parts)]
    return ranked, found


def search_text(state, texts: list[str], k: int, predicate, include_vector: bool, as_arrays: bool):
    """Top-k of each text query by BM25 over every source (result lists, or ``(ids, distances)`` arrays)."""
    m = len(texts)
    srcs, found = text_topk(state, texts, k, predicate)
    if not srcs or k == 0:
        return _search.empty_arrays(m, k) if as_arrays else _search.no_results(m)
    return _search.merge_arrays(srcs, found, k) if as_arrays else _search.merge(srcs, found, k, include_vector)


# ----------------------------------------------------------------- fusion


class FusedResult(SearchResult):
    """A hybrid hit: ``distance`` is minus the fused score (smaller is better,
    as for every search), ``scores`` each ranking's own: ``{"vector": the
    vector distance, "text": the BM25 score}``, None where the record was not
    in that ranking's candidates."""

    __slots__ = ("vector", "scores")

    def __init__(self, id: str, distance: float, source, slot: int, vector, scores: dict):
        SearchResult.__init__(self, id, distance, source, slot)
        self.vector = vector
        self.scores = scores


def fusion_of(fusion) -> tuple[str, float]:
    """``("rrf", k)`` or ``("weighted", alpha)`` from the ``fusion`` argument
    (``"rrf"``, ``"weighted"``, or a dict with "method" and "k" / "alpha")."""
    if isinstance(fusion, str):
        fusion = {"method": fusion}
    if not isinstance(fusion, dict) or not isinstance(fusion.get("method"), str):
        raise InvalidArgumentError(f"fusion must be 'rrf', 'weighted' or a dict with a 'method', got {fusion!r}")
    method = fusion["method"]
    if method == "rrf":
        extra, name, value = set(fusion) - {"method", "k"}, "k", fusion.get("k", RRF_K)
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value < 1e9
    elif method == "weighted":
        extra, name, value = set(fusion) - {"method", "alpha"}, "alpha", fusion.get("alpha", 0.5)
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value <= 1
    else:
        raise InvalidArgumentError(f"fusion method must be 'rrf' or 'weighted', got {method!r}")
    if extra:
        raise InvalidArgumentError(f"fusion {method!r} takes only {name!r}, got {sorted(extra)}")
    if not ok:
        raise InvalidArgumentError(f"fusion {method!r}: {name} must be "
                                   f"{'a number >= 0' if name == 'k' else 'a number in [0, 1]'}, got {value!r}")
    return method, float(value)


_SOURCE_SHIFT = 40  # a candidate's key: its source's position << this | its slot


def _contributions(dist: np.ndarray, hit: np.ndarray, method: str, value: float, weight: float) -> np.ndarray:
    """What each candidate of one ranking (``dist[m, n]`` ascending, ``hit`` where there is
    one) adds to its record's fused score: ``1 / (value + rank)``, or ``weight`` times its
    similarity (minus the distance) min-max normalised over its query's candidates (1 where
    they are all equal); 0 where there is no candidate."""
    if method == "rrf":
        share = 1.0 / (value + np.arange(1, dist.shape[1] + 1, dtype=np.float64))
        return np.where(hit, share[None, :], 0.0)
    sim = np.where(hit, -dist, np.nan)
    sim[~hit.any(axis=1)] = 0.0  # (a query with no candidate: no all-NaN row for nanmin)
    lo = np.nanmin(sim, axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):  # (an infinite distance: inf - inf)
        spread = np.nanmax(sim, axis=1, keepdims=True) - lo
        varies = spread > 0
        part = np.where(varies, (sim - lo) / np.where(varies, spread, 1.0), 1.0)
    return np.where(hit, weight * part, 0.0)


def fuse(dense, textual, m: int, k: int, method: str, value: float, include_vector: bool, as_arrays: bool):
    """The top ``k`` of each of ``m`` queries' two ranked candidate lists, fused: result lists of
    :class:`FusedResult`, or ``(ids, distances)`` arrays. ``dense`` and ``textual`` are each
    ``(sources, found)`` as the rankings' kernels leave them (``search.dense_topk``,
    :func:`text_topk`).

    ``rrf``: each record scores ``sum 1 / (value + rank)`` over the lists it is in (rank
    from 1). ``weighted``: ``value * v + (1 - value) * t``, where ``v`` is the record's
    vector similarity (minus its distance) and ``t`` its BM25 score, each min-max
    normalised over its own list, 0 where absent. A record's two parts are added vector
    first. Ties are broken by id, so the order is fully determined. Records are keyed by
    source and slot while they are fused (a batch as arrays, one query as lists: numpy's
    cost per call is most of one query's fusion, measured); ids are decoded and objects
    made only for the ``k`` kept and the records tied with the last of them."""
    (d_srcs, d_found), (t_srcs, t_found) = dense, textual
    arrays = _search.empty_arrays(m, k) if as_arrays else None
    rows = [[] for _ in range(m)]
    if k == 0 or not (d_found or t_found):
        return arrays if as_arrays else _search.no_results(m)
    pool = [source for source, _ in d_srcs]  # every source either ranking drew from, by position
    position = {id(source): j for j, source in enumerate(pool)}
    for source, _ in t_srcs:
        if id(source) not in position:
            position[id(source)] = len(pool)
            pool.append(source)
    rankings = []  # (keys[m, n] int64, -1 where none; distances[m, n] float64)
    for srcs, found in ((d_srcs, d_found), (t_srcs, t_found)):
        if found:
            src, slot, dist = _search.ranked(srcs, found, max(f[1].shape[1] for f in found))
            where = np.array([position[id(source)] for source, _ in srcs], dtype=np.int64)
            rankings.append((np.where(slot >= 0, (where[src] << _SOURCE_SHIFT) | slot, -1), dist))
        else:
            rankings.append((np.full((m, 0), -1, dtype=np.int64), np.zeros((m, 0))))
    if m == 1:
        chosen = [_fused_lists(rankings, k, method, value)]
    else:
        chosen = _fused_arrays(rankings, k, method, value)
    for r, (keys, scores, vector, text) in enumerate(chosen):
        if not keys:
            continue
        names = _names(pool, keys)
        best = sorted(range(len(keys)), key=lambda j: (-scores[j], names[j]))[:k]
        if as_arrays:
            for c, j in enumerate(best):
                arrays[0][r, c], arrays[1][r, c] = names[j], -scores[j]
            continue
        for j in best:
            source, slot = pool[keys[j] >> _SOURCE_SHIFT], keys[j] & _SLOT_MASK
            rows[r].append(FusedResult(names[j], -scores[j], source, slot,
                                       source.vector_at(slot) if include_vector else None,
                                       {"vector": vector.get(keys[j]), "text": text.get(keys[j])}))
    return arrays if as_arrays else [SearchResults.of(row) for row in rows]


_SLOT_MASK = (1 << _SOURCE_SHIFT) - 1


def _names(pool, keys: list[int]) -> list[str]:
    """The ids of records by key, decoded per source in bulk."""
    by_source: dict[int, list[int]] = {}
    for j, key in enumerate(keys):
        by_source.setdefault(key >> _SOURCE_SHIFT, []).append(j)
    names = [""] * len(keys)
    for where, js in by_source.items():
        for j, name in zip(js, pool[where].ids_at([keys[j] & _SLOT_MASK for j in js])):
            names[j] = name
    return names


def _fused_lists(rankings, k: int, method: str, value: float):
    """One query's fusion in plain Python: ``(keys, fused scores, vector distance by key, BM25
    score by key)`` of the records that may be kept (every record scoring at least the k-th best)."""
    fused: dict[int, float] = {}
    held = []
    for (keys, dist), weight, first in zip(rankings, (value, 1.0 - value), (True, False)):
        row = keys[0].tolist()
        count = len(row) - row.count(-1)  # the candidates are a prefix of the row
        row, dists = row[:count], dist[0, :count].tolist()
        held.append(dict(zip(row, dists)))
        if method == "rrf":
            parts = _rrf_shares(value, count)
        elif count:
            lo, hi = -max(dists), -min(dists)  # of the similarities, minus the distances
            parts = [weight * ((-d - lo) / (hi - lo)) for d in dists] if hi > lo else [weight * 1.0] * count
        else:
            parts = ()
        if first:
            fused = dict(zip(row, parts))  # (0.0 + part is part: the same sum as the loop below)
        else:
            get = fused.get
            for key, part in zip(row, parts):
                fused[key] = get(key, 0.0) + part
    if len(fused) > k:
        cut = heapq.nlargest(k, fused.values())[-1]
        keys = [key for key, score in fused.items() if score >= cut]
    else:
        keys = list(fused)
    vector, text = held
    return keys, [fused[key] for key in keys], vector, {key: -d for key, d in text.items()}


@functools.lru_cache(maxsize=64)
def _rrf_shares(value: float, count: int) -> tuple[float, ...]:
    return tuple(1.0 / (value + r) for r in range(1, count + 1))


def _fused_arrays(rankings, k: int, method: str, value: float):
    """:func:`_fused_lists` of every query of a batch, fused as arrays."""
    keys, parts, held = [], [], []
    for (key, dist), weight, sign in zip(rankings, (value, 1.0 - value), (1.0, -1.0)):
        hit = key >= 0
        keys.append(key)
        parts.append(_contributions(dist, hit, method, value, weight))
        held.append(np.where(hit, sign * dist, np.nan))
    n_dense = keys[0].shape[1]
    key = np.concatenate(keys, axis=1)
    part = np.concatenate(parts, axis=1)
    value_of = np.concatenate(held, axis=1)
    order = np.argsort(key, axis=1, kind="stable")  # a record's dense candidate before its text one
    key, part, value_of = (np.take_along_axis(a, order, axis=1) for a in (key, part, value_of))
    from_dense = order < n_dense
    twin = np.zeros(key.shape, dtype=bool)  # the second of a record's two candidates
    twin[:, 1:] = (key[:, 1:] == key[:, :-1]) & (key[:, 1:] >= 0)
    fused = part.copy()
    fused[:, :-1] += np.where(twin[:, 1:], part[:, 1:], 0.0)
    fused[twin | (key < 0)] = -np.inf
    if fused.shape[1] == 0:
        return [([], [], {}, {}) for _ in range(key.shape[0])]
    kept = min(k, fused.shape[1])
    cut = -np.partition(-fused, kept - 1, axis=1)[:, kept - 1:kept]  # the kept-th best score of each query
    chosen = (fused >= cut) & (fused > -np.inf)
    out = []
    width = key.shape[1]
    for r in range(key.shape[0]):
        at = np.flatnonzero(chosen[r]).tolist()
        row_keys = key[r, at].tolist()
        vector, text = {}, {}
        for p, kk in zip(at, row_keys):
            if from_dense[r, p]:
                vector[kk] = float(value_of[r, p])
                if p + 1 < width and twin[r, p + 1]:
                    text[kk] = float(value_of[r, p + 1])
            else:
                text[kk] = float(value_of[r, p])
        out.append((row_keys, fused[r, at].tolist(), vector, text))
    return out


def check_candidates(candidates) -> int:
    if isinstance(candidates, bool) or not isinstance(candidates, (int, np.integer)) or not 1 <= candidates <= 1 << 16:
        raise InvalidArgumentError(f"candidates must be an integer from 1 to 65536, got {candidates!r}")
    return int(candidates)


__all__ = ["DEFAULT_CANDIDATES", "FusedResult", "RRF_K", "TEXT_OPTIONS", "active_index", "analyzer_of", "fuse",
           "fusion_of", "search_text", "text_index", "text_topk", "texts_of"]
