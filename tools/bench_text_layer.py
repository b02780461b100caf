"""The text index's layer pieces against bm25s, on the 100k real sentences of
../shared/data/minilm-384-cosine (train.texts.jsonl.gz; queries: the test
sentences): analysis time, chunk build time, BM25 top-10 q/s one query per
call (formula and cached impacts) and batched, beside bm25s (method
"lucene", numba backend) fed the same tokens, and top-10 agreement.

    python tools/bench_text_layer.py [--shared ../shared] [--n 100000] [--queries 1000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np


def texts(path: Path, n: int) -> list[str]:
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"])
            if len(out) == n:
                break
    return out


def rate(fn, items, repeat: int = 3) -> float:
    """Best of ``repeat`` runs: items per second of ``fn`` over ``items``, one call each."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for x in items:
            fn(x)
        best = min(best, time.perf_counter() - t)
    return len(items) / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    from needle_mm._index.text import (TextSource, bm25_stats, bm25_topk, build_text_chunk, chunk_impacts,
                                       corpus_stats)
    from needle_mm._text import Analyzer

    base = Path(args.shared) / "data" / "minilm-384-cosine"
    docs, queries = texts(base / "train.texts.jsonl.gz", args.n), texts(base / "test.texts.jsonl.gz", args.queries)
    analyzer = Analyzer()
    t = time.perf_counter()
    tokens = [analyzer.tokens(x) for x in docs]
    print(f"analysis of {len(docs)} texts: {time.perf_counter() - t:.2f} s (cold)")
    t = time.perf_counter()
    fresh = Analyzer()
    [fresh.tokens(x) for x in docs]
    print(f"analysis, a fresh analyzer (memo empty, rules compiled): {time.perf_counter() - t:.2f} s")
    t = time.perf_counter()
    built = build_text_chunk(docs, analyzer)
    print(f"chunk build (analysis included): {time.perf_counter() - t:.2f} s, {built.chunk.keys.shape[0]} terms, "
          f"{built.chunk.slots.shape[0]} postings")
    chunk, lengths, n = built.chunk, built.doc_lengths, len(docs)
    qtokens = [analyzer.tokens(q) for q in queries]
    none = np.zeros(0, np.uint8)
    sources = [TextSource([chunk], lengths)]
    corpus = corpus_stats(sources)
    avgdl = corpus[1] / corpus[0]
    impacts = [chunk_impacts(chunk, lengths, 1.2, 0.75, avgdl)]

    def ours(q, imp=None):
        return bm25_topk([chunk], lengths, n, [q], none, 10, stats=bm25_stats(sources, [q], corpus), impacts=imp)

    ours(qtokens[0]), ours(qtokens[0], impacts), bm25_topk([chunk], lengths, n, qtokens[:8], none, 10)  # compile
    import bm25s

    ref = bm25s.BM25(method="lucene", k1=1.2, b=0.75, backend="numba")
    t = time.perf_counter()
    ref.index(tokens, show_progress=False)
    print(f"bm25s index (same tokens): {time.perf_counter() - t:.2f} s")

    def theirs(q):
        return ref.retrieve([q], k=10, show_progress=False, n_threads=1)

    theirs(qtokens[0])
    r_ref = rate(theirs, qtokens)
    r_f = rate(ours, qtokens)
    r_i = rate(lambda q: ours(q, impacts), qtokens)
    print(f"one query per call: bm25s {r_ref:.0f} q/s; needle formula {r_f:.0f} q/s ({r_f / r_ref:.2f}x), "
          f"cached impacts {r_i:.0f} q/s ({r_i / r_ref:.2f}x)")
    t = time.perf_counter()
    _, ids = bm25_topk([chunk], lengths, n, qtokens, none, 10)
    r_b = len(qtokens) / (time.perf_counter() - t)
    t = time.perf_counter()
    ref_ids, _ = ref.retrieve(qtokens, k=10, show_progress=False, n_threads=1)
    r_rb = len(qtokens) / (time.perf_counter() - t)
    print(f"batched: needle {r_b:.0f} q/s, bm25s {r_rb:.0f} q/s (n_threads=1)")
    agree = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(ids, ref_ids)])
    print(f"top-10 agreement with bm25s (ties not excluded): {agree:.4f}")


if __name__ == "__main__":
    main()
