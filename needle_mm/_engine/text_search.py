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

import heapq

import numpy as np

from .._format.catalog import BM25_B, BM25_K1, TextIndex
from ..errors import InvalidArgumentError, NeedleError
from ..results import SearchResult
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
        return _search.empty_arrays(m, k) if as_arrays else [[] for _ in range(m)]
    return _search.merge_arrays(srcs, found, k) if as_arrays else _search.merge(srcs, found, k, include_vector)


# ----------------------------------------------------------------- fusion


class FusedResult(SearchResult):
    """A hybrid hit: ``distance`` is minus the fused score (smaller is better,
    as for every search), ``scores`` each ranking's own: ``{"vector": the
    vector distance, "text": the BM25 score}``, None where the record was not
    in that ranking's candidates."""

    __slots__ = ("vector", "scores")

    def __init__(self, hit: SearchResult, distance: float, scores: dict):
        SearchResult.__init__(self, hit.id, distance, hit._source, hit._slot)
        self.vector = hit.vector
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


def _normalised(values: list[float]) -> list[float]:
    """Min-max normalisation to [0, 1] (all 1.0 when the values are equal)."""
    lo, hi = min(values), max(values)
    if not hi > lo:
        return [1.0] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


def fuse(dense: list[SearchResult], textual: list[SearchResult], k: int, method: str, value: float) -> list[FusedResult]:
    """The top ``k`` of two ranked candidate lists, fused.

    ``rrf``: each record scores ``sum 1 / (value + rank)`` over the lists it
    is in (rank from 1). ``weighted``: ``value * v + (1 - value) * t``, where
    ``v`` is the record's vector similarity (minus its distance) and ``t`` its
    BM25 score, each min-max normalised over its own list, 0 where absent.
    Ties are broken by id, so the order is fully determined."""
    if method == "rrf":
        fused = {h.id: 1.0 / (value + r) for r, h in enumerate(dense, 1)}
        get = fused.get
        for r, h in enumerate(textual, 1):
            fused[h.id] = get(h.id, 0.0) + 1.0 / (value + r)
    else:
        fused = {}
        for weight, ranked in ((value, dense), (1.0 - value, textual)):
            if not ranked:
                continue
            get = fused.get
            for h, part in zip(ranked, _normalised([-h.distance for h in ranked])):
                fused[h.id] = get(h.id, 0.0) + weight * part
    order = [i for _, i in heapq.nsmallest(k, [(-score, i) for i, score in fused.items()])]
    by_vector = {h.id: h for h in dense}
    by_text = {h.id: h for h in textual}
    out = []
    for i in order:
        v, t = by_vector.get(i), by_text.get(i)
        scores = {"vector": None if v is None else v.distance, "text": None if t is None else -t.distance}
        out.append(FusedResult(v if v is not None else t, -fused[i], scores))
    return out


def fused_arrays(rows: list[list[FusedResult]], k: int) -> tuple[np.ndarray, np.ndarray]:
    ids, dists = _search.empty_arrays(len(rows), k)
    for r, row in enumerate(rows):
        for j, hit in enumerate(row):
            ids[r, j], dists[r, j] = hit.id, hit.distance
    return ids, dists


def check_candidates(candidates) -> int:
    if isinstance(candidates, bool) or not isinstance(candidates, (int, np.integer)) or not 1 <= candidates <= 1 << 16:
        raise InvalidArgumentError(f"candidates must be an integer from 1 to 65536, got {candidates!r}")
    return int(candidates)


__all__ = ["DEFAULT_CANDIDATES", "FusedResult", "RRF_K", "TEXT_OPTIONS", "active_index", "analyzer_of", "fuse",
           "fusion_of", "search_text", "text_index", "texts_of"]
