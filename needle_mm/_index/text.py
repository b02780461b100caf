"""The BM25 text index of a record source: one chunk's posting lists built
from texts, corpus statistics across sources, and the batched top-k driver.

Nothing here knows the file format or commits: a chunk is four arrays
(``TextChunk``), a source is its chunks with its document lengths and its
exclusion bitmap (``TextSource``), and whoever owns the file decides where
they live. The shape follows the sparse index (``inverted``): posting lists
keyed by sorted uint64 term keys (``_text.term_key``), slots ascending within
each list, one term frequency per posting.

BM25 needs three statistics of the whole collection, not of one chunk or
segment, so a query's score does not depend on how its records happen to
be split: ``N``, the live records with at least one token (a record without
text, or whose text is all stop words, can match nothing and must not dilute
``avgdl``); ``avgdl``, their mean token count; and each query term's ``df``,
the live records holding it. "Live" is whatever the ``excluded`` bitmaps
handed to :func:`bm25_stats` leave: pass the tombstones (deleted records
never count) and not a filter's bitmap, so that a filter narrows the result
list without changing any score, as in Lucene. :func:`bm25_topk` takes the
statistics and its own (possibly filtered) bitmap.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import orjson

from .._format.text_chunk import TextChunk
from .._kernels import readonly
from .._kernels.api import (accumulate_bm25_parallel, accumulate_bm25_serial, accumulate_impacts_parallel,
                            accumulate_impacts_serial, bm25_impacts, count_live_postings, get_num_threads,
                            live_length_stats, rank_bm25_parallel, rank_bm25_serial, sort_heaps, windows_parallel,
                            windows_serial)
from .._text import Analyzer, term_key, term_key_list, term_keys
from ..errors import InvalidArgumentError

SCRATCH_BYTES = 1 << 22  # per batch of queries: scores + marks + hits of every slot (13 bytes each); measured on
# 100k sentences: 4 MB (batches of 3, kept in cache) ran 1.6x faster than 64 MB (batches of 51 on 2 threads)
SERIAL_QUERIES = 4  # below this many queries per batch one thread is faster
K1, B = 1.2, 0.75  # Lucene's defaults
_EMPTY_U8 = readonly(np.zeros(0, dtype=np.uint8))
WINDOW = 8192  # slots a query scores at once (``_kernels.text_windows``): 64 KB of scores, in L2 (2048 to 131072 measured alike)
WINDOW_ROWS = 64  # queries per call of the window kernels (their scratch: 12 bytes a slot of the window each)
METHODS = ("windows", "accumulate")
_EMPTY_F64 = readonly(np.zeros(0, dtype=np.float64))
_HEAP_FILLER = 1 << 62  # the slot of an empty heap place: _kernels.text._NO_SLOT


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """The distinct terms of a chunk with their keys, ordered by (key, term):
    with no key collision ``keys`` equals the chunk's ``keys`` and ``terms[i]``
    names posting list ``i``; two colliding terms appear side by side with one
    key (and share that list)."""

    terms: tuple[str, ...]
    keys: np.ndarray  # uint64, ascending (repeated only where terms collide)


@dataclass(frozen=True, eq=False)
class TextBuild:
    """What :func:`build_text_chunk` makes of a run of texts."""

    chunk: TextChunk
    doc_lengths: np.ndarray  # uint32 [count]: tokens per slot (0: no text, or nothing left after analysis)
    vocabulary: Vocabulary


def build_text_chunk(texts: Sequence[str | None], analyzer: Analyzer, start: int = 0) -> TextBuild:
    """The posting lists, document lengths and vocabulary of ``texts``, the
    texts of slots ``start, start + 1, ...`` (None: the record has no text).

    Python touches each token in C-level loops only (list concatenation, a
    dict of the distinct terms, a mapped lookup of each token's id); the
    inversion is numpy: one stable sort of the token stream by term key
    (tokens arrive in slot order, so each list comes out slot-ascending),
    then run lengths of equal (key, slot) pairs are the term frequencies.
    """
    n = len(texts)
    counts: list[int] = []
    stream: list[str] = []  # every token of every text, in slot order
    tokens = analyzer.tokens
    for text in texts:
        if text is None:
            counts.append(0)
            continue
        terms = tokens(text)
        counts.append(len(terms))
        stream += terms
    lengths = np.array(counts, dtype=np.uint32)
    ids_of = {t: i for i, t in enumerate(dict.fromkeys(stream))}  # term -> id, in first-seen order
    vocab_terms = list(ids_of)
    keys_of_id = term_keys(vocab_terms)
    ids = np.fromiter(map(ids_of.__getitem__, stream), dtype=np.int64, count=len(stream))
    token_keys = keys_of_id[ids]
    token_slots = np.repeat(np.arange(start, start + n, dtype=np.uint32), lengths.astype(np.int64))
    order = np.argsort(token_keys, kind="stable")
    token_keys, token_slots = token_keys[order], token_slots[order]
    # a posting starts where the (key, slot) pair changes
    first = np.ones(token_keys.shape[0], dtype=bool)
    first[1:] = (token_keys[1:] != token_keys[:-1]) | (token_slots[1:] != token_slots[:-1])
    starts = np.flatnonzero(first)
    tfs = np.diff(np.append(starts, token_keys.shape[0])).astype(np.uint32)
    posting_keys, slots = token_keys[starts], token_slots[starts]
    list_start = np.ones(posting_keys.shape[0], dtype=bool)
    list_start[1:] = posting_keys[1:] != posting_keys[:-1]
    heads = np.flatnonzero(list_start)
    keys = posting_keys[heads]
    list_offsets = np.empty(keys.shape[0] + 1, dtype=np.uint64)
    list_offsets[:-1] = heads
    list_offsets[-1] = posting_keys.shape[0]
    by_key = sorted(range(len(vocab_terms)), key=lambda i: (int(keys_of_id[i]), vocab_terms[i]))
    vocabulary = Vocabulary(tuple(vocab_terms[i] for i in by_key), readonly(keys_of_id[by_key]))
    arrays = [readonly(np.ascontiguousarray(a)) for a in (keys, list_offsets, slots, tfs)]
    return TextBuild(TextChunk(*arrays, start, n), readonly(lengths), vocabulary)


# ----------------------------------------------------------------- a text index's analyzer and texts

@functools.lru_cache(maxsize=64)
def _analyzer(key: bytes):
    from .._text.analysis import Analyzer

    return Analyzer.from_json(orjson.loads(key), where="the text index's analyzer")


def analyzer_of(text):
    """The ``Analyzer`` of a text index (``catalog.TextIndex``) (one per distinct analyzer: they memoise their tokens)."""
    return _analyzer(orjson.dumps(text.analyzer, option=orjson.OPT_SORT_KEYS))


def texts_of(metas, field: str) -> list[str | None]:
    """The indexed text of each record (its metadata bytes): the value of
    ``field`` where it is a string, else None (the record has no text)."""
    key = orjson.dumps(field)  # a record whose JSON does not hold the key's bytes cannot have it
    out = []
    for raw in metas:
        value = orjson.loads(raw).get(field) if key in raw else None
        out.append(value if isinstance(value, str) else None)
    return out


# ----------------------------------------------------------------- statistics

@dataclass(frozen=True, eq=False)
class TextSource:
    """One record source as BM25 sees it: its chunks, every slot's document
    length (uint32 [n]), and its packed exclusion bitmap (empty: none)."""

    chunks: Sequence[TextChunk]
    doc_lengths: np.ndarray
    excluded: np.ndarray = field(default=None)

    def __post_init__(self):
        if self.excluded is None:
            object.__setattr__(self, "excluded", _EMPTY_U8)


@dataclass(frozen=True)
class BM25Stats:
    """The collection statistics a BM25 query is scored with: ``n_docs``
    (N: live records with at least one token), ``avgdl`` (their mean
    length; 0.0 when N is 0) and ``df`` (term key -> live records holding it,
    for the query's terms)."""

    n_docs: int
    avgdl: float
    df: dict[int, int]

    def idf(self, key: int) -> float:
        """Lucene's idf, ``ln(1 + (N - df + 0.5) / (df + 0.5))``; 0.0 for a term no live record holds."""
        df = self.df.get(key, 0)
        if df <= 0:
            return 0.0
        return math.log1p((self.n_docs - df + 0.5) / (df + 0.5))


def corpus_stats(sources: Iterable[TextSource]) -> tuple[int, int]:
    """``(N, total tokens)`` over the live records of ``sources``: cacheable per
    snapshot, since it changes only with the records."""
    out = np.zeros(2, dtype=np.int64)
    for src in sources:
        live_length_stats(readonly(src.doc_lengths), readonly(src.excluded), out)
    return int(out[0]), int(out[1])


def document_frequencies(sources: Iterable[TextSource], keys: np.ndarray) -> np.ndarray:
    """The live records holding each term of ``keys`` (uint64), over ``sources`` (int64, per key)."""
    keys = readonly(np.ascontiguousarray(keys, dtype=np.uint64))
    counts = np.zeros(keys.shape[0], dtype=np.int64)
    for src in sources:
        excluded = readonly(src.excluded)
        for c in src.chunks:
            count_live_postings(c.keys, c.list_offsets, c.slots, excluded, keys, counts)
    return counts


def bm25_stats(sources: Sequence[TextSource], query_tokens_list: Sequence[Sequence[str]],
               corpus: tuple[int, int] | None = None) -> BM25Stats:
    """The statistics of the collection ``sources`` for these queries' terms
    (``corpus``: :func:`corpus_stats` of the same sources, if cached)."""
    n_docs, total = corpus_stats(sources) if corpus is None else corpus
    keys = sorted({term_key(t) for q in query_tokens_list for t in q})
    df = document_frequencies(sources, np.array(keys, dtype=np.uint64))
    return BM25Stats(n_docs, total / n_docs if n_docs else 0.0, dict(zip(keys, df.tolist())))


# ----------------------------------------------------------------- top-k

def _check_params(k: int, k1: float, b: float) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise InvalidArgumentError(f"k must be a non-negative integer, got {k!r}")
    if isinstance(k1, bool) or not (isinstance(k1, (int, float)) and math.isfinite(k1) and k1 >= 0):
        raise InvalidArgumentError(f"k1 must be a finite number >= 0, got {k1!r}")
    if isinstance(b, bool) or not (isinstance(b, (int, float)) and 0 <= b <= 1):
        raise InvalidArgumentError(f"b must be a number in [0, 1], got {b!r}")


def query_terms(tokens: Sequence[str], stats: BM25Stats, keys: Sequence[int] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """A query's distinct term keys (ascending) and weights: idf times the
    term's count in the query (a repeated term counts per occurrence, as in
    Lucene's BooleanQuery, bm25s and rank-bm25); terms no live record holds
    are left out, and so is any weight that is not positive and finite
    (statistics that do not add up), which the kernels rely on (a score of
    0 is "not reached" when they rank). Sorting the terms makes a score
    independent of word order (float64 sums are summed in key order).
    ``keys``: the tokens' term keys, if the caller has them. Plain Python:
    a query has a few dozen terms, where numpy's per-call cost is most of
    the time (measured)."""
    counts: dict[int, int] = {}
    seen = counts.get
    for key in (term_key_list(tokens) if keys is None else keys):
        counts[key] = seen(key, 0) + 1
    out_keys, weights = [], []
    n_docs, get, log1p, isfinite = stats.n_docs, stats.df.get, math.log1p, math.isfinite
    for key in sorted(counts):
        df = get(key, 0)
        if df <= 0:
            continue
        w = log1p((n_docs - df + 0.5) / (df + 0.5)) * counts[key]
        if w > 0 and isfinite(w):
            out_keys.append(key)
            weights.append(w)
    return np.array(out_keys, dtype=np.uint64), np.array(weights, dtype=np.float64)


def _params(k1: float, b: float, avgdl: float) -> np.ndarray:
    return readonly(np.array([k1, b, avgdl], dtype=np.float64))


def chunk_impacts(chunk: TextChunk, doc_lengths: np.ndarray, k1: float, b: float, avgdl: float) -> np.ndarray:
    """The chunk's per-posting BM25 term-frequency parts (float64 [e]) for
    these parameters: what :func:`bm25_topk` takes as ``impacts`` so a query
    costs one multiply-add per posting. They hold only while ``avgdl`` does
    (until the next commit): a caller caches them per snapshot."""
    _check_params(0, k1, b)
    out = np.empty(chunk.slots.shape[0], dtype=np.float64)
    bm25_impacts(chunk.slots, chunk.tfs, readonly(np.ascontiguousarray(doc_lengths, dtype=np.uint32)),
                 _params(k1, b, avgdl), out)
    return readonly(out)


def _packed(terms):
    """``(q_off, q_keys, q_weights)`` of :func:`query_terms` results, as the kernels take a batch."""
    if len(terms) == 1:
        keys, weights = terms[0]
        return readonly(np.array([0, keys.shape[0]], dtype=np.int64)), readonly(keys), readonly(weights)
    q_off = np.zeros(len(terms) + 1, dtype=np.int64)
    np.cumsum([keys.shape[0] for keys, _ in terms], out=q_off[1:])
    return (readonly(q_off), readonly(np.concatenate([keys for keys, _ in terms])),
            readonly(np.concatenate([w for _, w in terms])))


def _heaps(m: int, k: int):
    return np.full((m, k), np.inf, dtype=np.float64), np.full((m, k), _HEAP_FILLER, dtype=np.int64)


def _window_scratch(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Zeroed window scores (float64) and hits (uint32) of ``rows`` x ``WINDOW``: the calling
    thread's from its last query (the kernels leave the scores zeroed), else new. Handed back
    only after the kernels finished, so one abandoned halfway (an exception) is never reused."""
    held = getattr(_local, "windows", None)
    if held is not None and held[0].shape[0] >= rows and held[0].shape[1] == WINDOW:
        _local.windows = None
        return held
    return np.zeros((rows, WINDOW), dtype=np.float64), np.empty((rows, WINDOW), dtype=np.uint32)


def _windowed_topk(chunks, impacts, doc_lengths, terms, excluded, k, params, out_d, out_i) -> None:
    """The top ``k`` of every query, exhaustively, a window of slots at a time (``_kernels.text_windows``),
    batches of queries across the kernel threads. (A lone query's slots shared between the two threads of
    a loaded 2-core machine measured 0.8x one thread: the share waits for the slower thread.)"""
    m = len(terms)
    q_off, q_keys, q_weights = _packed(terms)
    ranges = [(c, None if impacts is None else impacts[j], c.start, c.count) for j, c in enumerate(chunks)]
    heap_d, heap_i = _windows_run(ranges, doc_lengths, params, q_off, q_keys, q_weights, excluded, k,
                                  min(m, WINDOW_ROWS) >= SERIAL_QUERIES and get_num_threads() > 1)
    sort_heaps(heap_d, heap_i, out_d, out_i)


def _windows_run(ranges, doc_lengths, params, q_off, q_keys, q_weights, excluded, k, parallel: bool):
    """The heaps (unsorted) of every query over ``ranges`` (chunk, its impacts or None, first slot, slots)."""
    m = q_off.shape[0] - 1
    heap_d, heap_i = _heaps(m, k)
    rows = min(m, WINDOW_ROWS)
    run = windows_parallel if parallel else windows_serial
    acc, hits = _window_scratch(rows)
    for b0 in range(0, m, rows):
        b1 = min(m, b0 + rows)
        part = q_off[b0:b1 + 1]
        for c, imp, start, count in ranges:
            run(c.keys, c.list_offsets, c.slots, c.tfs, doc_lengths, _EMPTY_F64 if imp is None else imp, params,
                start, count, WINDOW, part, q_keys, q_weights, excluded, acc[:b1 - b0], hits[:b1 - b0],
                heap_d[b0:b1], heap_i[b0:b1])
    _local.windows = (acc, hits)
    return heap_d, heap_i


_local = threading.local()
_KEEP_BYTES = 1 << 24  # a thread keeps scratch up to this size for its next query (one query: 13 bytes a slot)


def _take_scratch(rows: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zeroed scores (float64) and marks (uint8), and hits (uint32), of ``rows`` x ``n``: the
    calling thread's from its last query when they fit (the kernels leave
    scores zeroed), else new. A scratch is handed back only after ranking
    finished, so one abandoned halfway (an exception) is never reused."""
    held = getattr(_local, "scratch", None)
    if held is not None and held[0].shape[0] >= rows and held[0].shape[1] == n:
        _local.scratch = None
        return held
    return (np.zeros((rows, n), dtype=np.float64), np.zeros((rows, n), dtype=np.uint8),
            np.empty((rows, n), dtype=np.uint32))


def _give_back(scratch) -> None:
    if sum(a.nbytes for a in scratch) <= _KEEP_BYTES:
        _local.scratch = scratch


def _no_hits(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((m, k), np.inf, dtype=np.float64), np.full((m, k), -1, dtype=np.int64)


def bm25_topk(chunks: Sequence[TextChunk], doc_lengths: np.ndarray, n: int,
              query_tokens_list: Sequence[Sequence[str]], excluded: np.ndarray, k: int, k1: float = K1, b: float = B,
              stats: BM25Stats | None = None, impacts: Sequence[np.ndarray] | None = None,
              method: str = "windows", terms: Sequence[tuple[np.ndarray, np.ndarray]] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(distances[m, k] float64, slots[m, k] int64)`` of one source: the
    top ``k`` by BM25 (``distance = -score``, ascending, ties by slot; +inf /
    -1 past the records matched), for queries already analysed into tokens.

    ``stats`` are the collection's (:func:`bm25_stats` over every source);
    None computes them from this source alone, with ``excluded`` as its
    live set. ``impacts``, one array per chunk from :func:`chunk_impacts`
    with these ``k1``, ``b`` and ``stats.avgdl``, makes each posting cost a
    multiply-add instead of the formula (the same scores, bit for bit).

    ``method``: ``"windows"`` (a window of slots at a time, ranked while in
    cache, ``_kernels.text_windows``) or ``"accumulate"`` (into a per-slot
    scratch of the whole source, in batches sized so it stays under
    ``SCRATCH_BYTES``, then ranked: the reference the other is tested
    against). Both score every posting and return the same results, bit for
    bit. ``terms``: the queries' :func:`query_terms` under ``stats``, if the
    caller has them (one per query, shared by every source's call)."""
    _check_params(k, k1, b)
    if method not in METHODS:
        raise InvalidArgumentError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    m = len(query_tokens_list)
    if n == 0 or k == 0 or m == 0:
        return _no_hits(m, k)
    doc_lengths = readonly(np.ascontiguousarray(doc_lengths, dtype=np.uint32))
    excluded = readonly(np.ascontiguousarray(excluded, dtype=np.uint8))
    if doc_lengths.shape[0] < n or (excluded.shape[0] and excluded.shape[0] < (n + 7) // 8):
        raise InvalidArgumentError(f"{n} slots need {n} document lengths and an exclusion bitmap of "
                                   f"{(n + 7) // 8} bytes (or none), got {doc_lengths.shape[0]} and {excluded.shape[0]}")
    if impacts is not None and (len(impacts) != len(chunks)
                                or any(i.shape != c.slots.shape for i, c in zip(impacts, chunks))):
        raise InvalidArgumentError("impacts must hold one array per chunk, as long as its postings")
    if stats is None:
        stats = bm25_stats([TextSource(chunks, doc_lengths, excluded)], query_tokens_list)
    if stats.n_docs == 0 or not stats.avgdl > 0:
        return _no_hits(m, k)  # no live record has a token: nothing can match
    params = _params(k1, b, stats.avgdl)
    if terms is None:
        terms = [query_terms(tokens, stats) for tokens in query_tokens_list]
    elif len(terms) != m:
        raise InvalidArgumentError(f"terms must hold one entry per query: {m} queries, {len(terms)} terms")
    if method == "windows":
        out_d, out_i = np.empty((m, k), dtype=np.float64), np.empty((m, k), dtype=np.int64)  # sort_heaps fills them
        _windowed_topk(chunks, impacts, doc_lengths, terms, excluded, k, params, out_d, out_i)
        return out_d, out_i
    out_d, out_i = _no_hits(m, k)
    block = max(1, min(m, SCRATCH_BYTES // (13 * n)))
    parallel = block >= SERIAL_QUERIES and get_num_threads() > 1
    if impacts is None:
        accumulate = accumulate_bm25_parallel if parallel else accumulate_bm25_serial
    else:
        accumulate = accumulate_impacts_parallel if parallel else accumulate_impacts_serial
    rank = rank_bm25_parallel if parallel else rank_bm25_serial
    scratch = _take_scratch(block, n)
    scores, marks, hits = scratch
    for b0 in range(0, m, block):
        part = terms[b0:b0 + block]
        rows = len(part)
        q_off = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum([keys.shape[0] for keys, _ in part], out=q_off[1:])
        q_keys = readonly(np.concatenate([keys for keys, _ in part]))
        q_weights = readonly(np.concatenate([w for _, w in part]))
        q_off = readonly(q_off)
        nhits = np.zeros(rows, dtype=np.int64)
        for j, c in enumerate(chunks):
            if impacts is None:
                accumulate(c.keys, c.list_offsets, c.slots, c.tfs, doc_lengths, params, q_off, q_keys, q_weights,
                           scores[:rows], marks[:rows], hits[:rows], nhits)
            else:
                accumulate(c.keys, c.list_offsets, c.slots, readonly(impacts[j]), q_off, q_keys, q_weights,
                           scores[:rows], marks[:rows], hits[:rows], nhits)
        rank(scores[:rows], marks[:rows], hits[:rows], readonly(nhits), excluded, np.int64(k), out_d[b0:b0 + rows],
             out_i[b0:b0 + rows])
    _give_back(scratch)
    return out_d, out_i


__all__ = ["B", "BM25Stats", "K1", "METHODS", "TextBuild", "TextChunk", "TextSource", "Vocabulary", "WINDOW",
           "analyzer_of", "bm25_stats", "bm25_topk", "build_text_chunk", "chunk_impacts", "corpus_stats",
           "document_frequencies", "query_terms", "texts_of"]
