"""Sparse search: Needle's posting lists vs a scipy.sparse matrix product, same data, same run.

Data: BM25 document weights (k1 = 1.2, b = 0.75) of the real English sentences
in ../shared/data/minilm-384-cosine (train.texts.jsonl.gz), tokenised with a
regular expression (lower-cased words, no stemming); queries are the test
sentences with weight 1 per distinct term (BM25's query side). Both sides
compute the exact top-10 by dot product; the benchmark checks that they agree
and reports queries/s, one query per call and batched.

    python tools/bench_sparse.py [--n 100000] [--queries 1000] [--write]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "minilm-384-cosine"
TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def texts(name: str, n: int) -> list[str]:
    with gzip.open(DATA / name, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(n), f)]


def bm25(docs: list[str], queries: list[str]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    tokens = [TOKEN.findall(t.lower()) for t in docs]
    vocab: dict[str, int] = {}
    for toks in tokens:
        for t in toks:
            vocab.setdefault(t, len(vocab))
    df = Counter(t for toks in tokens for t in set(toks))
    n = len(docs)
    avg = sum(map(len, tokens)) / n
    rows, cols, vals = [], [], []
    for i, toks in enumerate(tokens):
        for t, tf in Counter(toks).items():
            idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
            rows.append(i)
            cols.append(vocab[t])
            vals.append(idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(toks) / avg)))
    x = sp.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(n, len(vocab)))
    x.sort_indices()
    qrows, qcols = [], []
    for i, q in enumerate(queries):
        for t in sorted({vocab[t] for t in TOKEN.findall(q.lower()) if t in vocab}):
            qrows.append(i)
            qcols.append(t)
    qm = sp.csr_matrix((np.ones(len(qrows), np.float32), (qrows, qcols)), shape=(len(queries), len(vocab)))
    qm.sort_indices()
    return x, qm


def scipy_topk(x: sp.csr_matrix, q: sp.csr_matrix, k: int) -> list[list[int]]:
    scores = (x @ q.T).T.tocsr()  # only rows sharing a term are non-zero, as Needle returns
    out = []
    for i in range(scores.shape[0]):
        a, b = scores.indptr[i], scores.indptr[i + 1]
        rows, s = scores.indices[a:b], scores.data[a:b]
        top = np.argpartition(-s, min(k, len(s)) - 1)[:k] if len(s) > k else np.arange(len(s))
        out.append(rows[top[np.argsort(-s[top], kind="stable")]].tolist())
    return out


def timed(fn, repeat: int = 3) -> float:
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run(n: int, n_queries: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import needle_mm as needle

    x, qm = bm25(texts("train.texts.jsonl.gz", n), texts("test.texts.jsonl.gz", n_queries))
    k = 10
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sparse.needle")
        t = time.perf_counter()
        with needle.Database.open(path) as db:
            coll = db.create_collection("bm25", x.shape[1], "dot", sparse=True)
            for start in range(0, n, 10000):
                coll.insert_many([str(i) for i in range(start, min(n, start + 10000))], x[start:start + 10000])
                db.save()
        build = time.perf_counter() - t
        db = needle.Database.open(path, read_only=True)
        coll = db.collection("bm25")
        coll.search(qm[0], k)
        coll.search_batch(qm[:8], k)  # compile outside the timing
        q_rows = [qm[i] for i in range(n_queries)]
        q_dicts = [{"indices": r.indices.tolist(), "values": r.data.tolist()} for r in q_rows]
        ref = scipy_topk(x, qm, k)
        got = [[int(r.id) for r in coll.search(q, k)] for q in q_dicts]
        agree = np.mean([len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(got, ref)])
        needle_single = n_queries / timed(lambda: [coll.search(q, k) for q in q_dicts])
        needle_batch = n_queries / timed(lambda: coll.search_batch(q_dicts, k))
        scipy_single = n_queries / timed(lambda: [scipy_topk(x, r, k) for r in q_rows])
        scipy_batch = n_queries / timed(lambda: scipy_topk(x, qm, k))
        size = os.path.getsize(path)
        db.close()
    return {"n": n, "vocab": x.shape[1], "nnz": int(x.nnz), "queries": n_queries, "build_s": build,
            "file_mb": size / 1e6, "top10_agreement": float(agree),
            "needle_single": needle_single, "needle_batch": needle_batch,
            "scipy_single": scipy_single, "scipy_batch": scipy_batch}


def markdown(r: dict, command: str) -> str:
    single = f"{r['needle_single']:,.0f} | {r['scipy_single']:,.0f} | {r['needle_single'] / r['scipy_single']:.2f}×"
    batch = f"{r['needle_batch']:,.0f} | {r['scipy_batch']:,.0f} | {r['needle_batch'] / r['scipy_batch']:.2f}×"
    return f"""## Sparse search (issue 7)

`{command}` — BM25 weights of {r['n']:,} real sentences (vocabulary {r['vocab']:,}, {r['nnz']:,} non-zeros),
{r['queries']:,} test sentences as queries, exact top-10 by dot product on both sides
(top-10 agreement with scipy: {r['top10_agreement']:.4f}; ties may order differently).
Needle inserted and checkpointed every 10,000 records in {r['build_s']:.1f} s (file {r['file_mb']:.1f} MB).

| queries/s | Needle | scipy.sparse `X @ q` + top-k | ratio |
|---|---|---|---|
| one query per call (`Collection.search`, ids included) | {single} |
| batch (`search_batch`, 2 threads; scipy one product) | {batch} |
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = ap.parse_args()
    result = run(args.n, args.queries)
    print(json.dumps(result, indent=1))
    sys.path.insert(0, str(Path(__file__).parent))
    from benchmarks_md import command_line, publish

    publish("## Sparse search", markdown(result, command_line("bench_sparse.py", ap, args)), args.write)


if __name__ == "__main__":
    main()
