"""Full-text (BM25) and hybrid search (issue 21): Needle vs bm25s and tantivy, in one run.

    pip install ".[bench]"
    python tools/bench_text.py [--shared ../shared] [--n 100000] [--queries 1000] [--rounds 7]
                               [--build-rounds 3] [--efs 64,128] [--write]

Data: the real sentences of ../shared/data/minilm-384-cosine (train.texts.jsonl.gz,
field "text", in the order of the rows of train.f16.npy, whose embeddings are the
vectors); queries: the test sentences (test.texts.jsonl.gz) as text queries and
their embeddings (test.f16.npy) as the hybrid queries' vectors.

1. Index build: ``save()`` of the records in a collection with
   ``text_field="document"`` against the same records (same vectors, same
   metadata ``{"document": text}``) without a text index, in alternation, each
   text save with a fresh analyzer (empty token memo, as in a new process); the
   text index's bytes (its chunk regions). Beside them, bm25s building its index
   from Needle's own tokens (method "lucene", k1=1.2, b=0.75, numba backend) and
   tantivy indexing the raw texts (one text field, its default tokenizer, one
   writer thread, one commit, in a temporary directory), with their sizes.
2. Text-only queries/s, k=10: one query per call (Needle ``search(text=q)``,
   bm25s ``retrieve`` of one query's tokens with n_threads=1, tantivy
   ``searcher.search(parse_query(q), 10)``) and batched (Needle
   ``search_batch(texts=...)``, bm25s ``retrieve`` of all queries with
   n_threads=2, tantivy has no batch call: its one-by-one figure).
3. Hybrid queries/s against the dense query alone at the same ef (the
   collection's default and the others of ``--efs``), with the two halves of
   a hybrid query (dense k=candidates, BM25 k=candidates) timed beside them.
4. Top-10 agreement with bm25s (same tokens, same BM25), ties at the cut
   aside: a Needle hit agrees when bm25s's score of that record reaches
   bm25s's 10th best score (so any record tied at the cut is a right answer);
   with tantivy (its own tokenizer and quantised document lengths, so lower
   agreement is expected) the same rule over tantivy's top 200.

Engines are timed in alternation (A B C, B C A, ...: per round one timed run
of each engine, whole passes over the queries lasting about half a second),
and every ratio is the median over rounds of the per-round ratio, so the
neighbours' load on this shared machine hits every engine alike. Prints a JSON summary; with ``--write`` also the
markdown section for BENCHMARKS.md, to stdout and to bench-out/text.md.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import needle_mm as needle  # noqa: E402
from needle_mm._engine import text_search  # noqa: E402
from needle_mm._index import text as text_index_module  # noqa: E402
from needle_mm._text import analysis  # noqa: E402

K = 10
K1, B = 1.2, 0.75
TIE_RTOL = 1e-5  # scores this close (relative) are a tie: bm25s keeps float32 scores
TANTIVY_DEPTH = 200  # tantivy hits fetched (untimed) to see who ties at its cut
PASS_SECONDS = 0.5  # a timed pass lasts about this long (whole passes over the queries)


# ---------------------------------------------------------------- data


def texts(path: Path, n: int) -> list[str]:
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"])
            if len(out) == n:
                break
    return out


def vectors(path: Path, n: int) -> np.ndarray:
    x = np.load(path, mmap_mode="r")[:n].astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def dir_bytes(path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def backend() -> dict:
    from needle_mm._kernels import api

    info = api.backend_info()
    return {"backend": info.get("backend"), "reason": info.get("reason"), "fallbacks": info.get("fallbacks")}


def fresh_analyzer_caches() -> None:
    """Forget every analyzer and the term-key memo: the next analysis starts
    as in a new process (the analyzer memoises raw tokens, and bm25s's tokens
    come from the same analyzer, so a text save after them would be helped)."""
    text_index_module._analyzer.cache_clear()
    analysis._key_cache.clear()


def sanitise(q: str) -> str:
    """A query for tantivy's query parser: its operators and punctuation
    (``+ - ( ) " : ^ ~ * ? \\ / [ ] { } !`` ...) become spaces, and the text is
    lower-cased so no word reads as AND / OR / NOT (its tokenizer lower-cases anyway)."""
    return " ".join(re.sub(r"[\W_]+", " ", q.lower()).split())


# ---------------------------------------------------------------- timing


def alternate(engines: dict, rounds: int, count: int, seconds: float = PASS_SECONDS) -> dict:
    """Per engine, the list of per-round rates (queries/s): each round runs
    one timed pass of every engine (``fn()`` does one pass over ``count``
    queries), the order rotating from round to round. An engine's pass
    repeats ``fn`` as often as needed to last about ``seconds`` (measured
    on its warm-up), so a fast engine's pass is not decided by one burst
    of a neighbour's load."""
    names = list(engines)
    reps = {}
    for e, fn in engines.items():
        fn()  # warm: caches, page cache, numba compilation
        t = time.perf_counter()
        fn()
        reps[e] = max(1, round(seconds / max(time.perf_counter() - t, 1e-9)))
    rates = {e: [] for e in names}
    for r in range(rounds):
        for e in names[r % len(names):] + names[:r % len(names)]:
            fn = engines[e]
            t = time.perf_counter()
            for _ in range(reps[e]):
                fn()
            rates[e].append(reps[e] * count / (time.perf_counter() - t))
    return rates


def med(v) -> float:
    return float(statistics.median(v))


def ratio(rates: dict, a: str, b: str) -> float:
    """Median over rounds of rate[a] / rate[b]."""
    return med([x / y for x, y in zip(rates[a], rates[b])])


# ---------------------------------------------------------------- builds


def needle_build(path: str, x, ids, metas, text: bool) -> dict:
    if os.path.exists(path):
        os.remove(path)
    if text:
        fresh_analyzer_caches()
    db = needle.Database.open(path)
    coll = db.create_collection("docs", x.shape[1], "cosine", text_field="document" if text else None)
    t0 = time.perf_counter()
    coll.insert_many(ids, x, metas)
    t1 = time.perf_counter()
    db.save()
    t2 = time.perf_counter()
    segs = db.engine.snapshot.segments("docs")
    text_bytes = sum(ch.region.length for s in segs for ch in s.descriptor.text_chunks)
    db.close()
    return {"insert_s": t1 - t0, "save_s": t2 - t1, "text_bytes": text_bytes, "segments": len(segs),
            "file_bytes": os.path.getsize(path)}


def bm25s_build(tokens):
    import bm25s

    ref = bm25s.BM25(method="lucene", k1=K1, b=B, backend="numba")
    t = time.perf_counter()
    ref.index(tokens, show_progress=False)
    return ref, time.perf_counter() - t


def tantivy_build(path: str, docs: list[str]):
    import tantivy

    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("body", stored=False)  # tokenizer "default": split on non-alphanumerics, lower-case
    sb.add_integer_field("id", stored=True)
    index = tantivy.Index(sb.build(), path=path)
    t = time.perf_counter()
    writer = index.writer(heap_size=256_000_000, num_threads=1)
    for i, d in enumerate(docs):
        writer.add_document(tantivy.Document(body=d, id=i))
    writer.commit()
    writer.wait_merging_threads()
    took = time.perf_counter() - t
    index.reload()
    return index, took


def bench_build(x, docs, tmp: str, rounds: int) -> tuple[dict, str, dict]:
    """Saves with and without a text index alternating (the order swapping
    each round), then bm25s and tantivy, ``rounds`` times; the last text file
    and the last tantivy index are kept for the queries."""
    ids = [str(i) for i in range(len(docs))]
    metas = [{"document": d} for d in docs]
    # load the save path's kernels and start the thread pool first (a fresh process's start-up is not the subject)
    for text in (True, False):
        needle_build(os.path.join(tmp, "warm.needle"), x[:300], ids[:300], metas[:300], text)
    os.remove(os.path.join(tmp, "warm.needle"))
    text_path, plain_path, tantivy_path = (os.path.join(tmp, f) for f in ("text.needle", "plain.needle", "tantivy"))
    runs = {"text": [], "plain": [], "analysis_s": [], "chunk_build_s": [], "text_work_s": [], "bm25s_s": [],
            "tantivy_s": []}
    meta_bytes = [orjson.dumps(m) for m in metas]  # what a save reads the texts from
    ref = index = None
    tokens = None
    from needle_mm._format.text_chunk import encode_text_chunk
    from needle_mm._index.text import build_text_chunk

    for r in range(rounds):
        order = (True, False) if r % 2 == 0 else (False, True)
        for text in order:
            res = needle_build(text_path if text else plain_path, x, ids, metas, text)
            runs["text" if text else "plain"].append(res)
            print(f"  build round {r}: needle {'text ' if text else 'plain'} save {res['save_s']:.2f} s "
                  f"(insert {res['insert_s']:.2f} s)", flush=True)
        # Needle's text layer alone: analysis with a fresh analyzer, then the chunk build (analysis again, memo warm)
        with needle.Database.open(text_path, read_only=True) as db:
            text_index = db.engine.state("docs").descriptor.text
        fresh_analyzer_caches()
        an = text_search.analyzer_of(text_index)
        t = time.perf_counter()
        tokens = [an.tokens(d) for d in docs]
        runs["analysis_s"].append(time.perf_counter() - t)
        fresh_analyzer_caches()
        an = text_search.analyzer_of(text_index)
        t = time.perf_counter()
        build_text_chunk(docs, an, 0)
        runs["chunk_build_s"].append(time.perf_counter() - t)
        # the whole of a save's text work, alone: texts out of the metadata, the chunk build, its bytes
        fresh_analyzer_caches()
        an = text_search.analyzer_of(text_index)
        t = time.perf_counter()
        encode_text_chunk(build_text_chunk(text_search.texts_of(meta_bytes, text_index.field), an, 0))
        runs["text_work_s"].append(time.perf_counter() - t)
        ref, took = bm25s_build(tokens)
        runs["bm25s_s"].append(took)
        index, took = tantivy_build(tantivy_path, docs)
        runs["tantivy_s"].append(took)
        print(f"  build round {r}: analysis {runs['analysis_s'][-1]:.2f} s, chunk build {runs['chunk_build_s'][-1]:.2f} s"
              f", a save's text work alone {runs['text_work_s'][-1]:.2f} s"
              f", bm25s {runs['bm25s_s'][-1]:.2f} s, tantivy {runs['tantivy_s'][-1]:.2f} s", flush=True)
    overhead = [t["save_s"] / p["save_s"] - 1 for t, p in zip(runs["text"], runs["plain"])]
    bm_dir = os.path.join(tmp, "bm25s")
    ref.save(bm_dir, show_progress=False)
    bm_mem = sum(ref.scores[k].nbytes for k in ("data", "indices", "indptr"))
    searcher = index.searcher()
    out = {
        "rounds": rounds,
        "save_text_s": med([t["save_s"] for t in runs["text"]]),
        "save_plain_s": med([p["save_s"] for p in runs["plain"]]),
        "insert_text_s": med([t["insert_s"] for t in runs["text"]]),
        "insert_plain_s": med([p["insert_s"] for p in runs["plain"]]),
        "save_overhead": med(overhead),
        "save_overhead_rounds": overhead,
        "text_extra_s": med([t["save_s"] - p["save_s"] for t, p in zip(runs["text"], runs["plain"])]),
        "needle_text_bytes": runs["text"][-1]["text_bytes"],
        "needle_segments": runs["text"][-1]["segments"],
        "needle_file_bytes_text": runs["text"][-1]["file_bytes"],
        "needle_file_bytes_plain": runs["plain"][-1]["file_bytes"],
        "needle_analysis_s": med(runs["analysis_s"]),
        "needle_chunk_build_s": med(runs["chunk_build_s"]),
        "needle_text_work_s": med(runs["text_work_s"]),
        "text_work_over_plain_save": med([w / p["save_s"] for w, p in zip(runs["text_work_s"], runs["plain"])]),
        "bm25s_index_s": med(runs["bm25s_s"]),
        "bm25s_memory_bytes": int(bm_mem),
        "bm25s_disk_bytes": dir_bytes(bm_dir),
        "tantivy_index_s": med(runs["tantivy_s"]),
        "tantivy_disk_bytes": dir_bytes(tantivy_path),
        "tantivy_segments": searcher.num_segments,
        "raw": runs,
    }
    if os.path.exists(plain_path):
        os.remove(plain_path)
    return out, text_path, {"bm25s": ref, "tantivy": index, "tokens": tokens}


# ---------------------------------------------------------------- agreement


def agreement(coll, ref, index, qtexts, qtokens, tq) -> dict:
    """Top-10 agreement of Needle with bm25s and tantivy, ties at the cut aside (module docstring)."""
    searcher = index.searcher()
    single_seg = searcher.num_segments == 1
    n_bm, n_bm_strict, n_t, n_bt, denom_bm, denom_t = 0, 0, 0, 0, 0, 0
    score_ratio = []  # Needle's score / bm25s's, per hit (a constant: bm25s's "lucene" drops the (k1 + 1) factor)
    mismatched_batch = 0
    batch = coll.search_batch(texts=qtexts, k=K)
    bm_ids, bm_scores = ref.retrieve(qtokens, k=K, show_progress=False, n_threads=1)
    id_checked = 0
    for i, (q, toks) in enumerate(zip(qtexts, qtokens)):
        hits = coll.search(text=q, k=K)
        ids = [int(h.id) for h in hits]
        if ids != [int(h.id) for h in batch[i]]:
            mismatched_batch += 1
        scores = [-h.distance for h in hits]
        # bm25s: exact scores of every record
        full = ref.get_scores(toks)
        want = min(K, int(np.count_nonzero(full > 0)))
        cut = np.partition(full, -K)[-K] if len(full) >= K else full.min()
        ok = [d for d in ids if full[d] > 0 and full[d] >= cut * (1 - TIE_RTOL)]
        n_bm += min(want, len(ok))
        denom_bm += want
        ref_top = {int(d) for d, s in zip(bm_ids[i], bm_scores[i]) if s > 0}
        n_bm_strict += len(set(ids) & ref_top)
        score_ratio += [s / float(full[d]) for d, s in zip(ids, scores) if full[d] > 0]
        # tantivy: its top TANTIVY_DEPTH, the cut at its 10th
        t_hits = searcher.search(index.parse_query(tq[i], ["body"]), TANTIVY_DEPTH, count=False).hits if tq[i] else []
        if single_seg and id_checked < 50 and t_hits:
            for _, addr in t_hits[:3]:  # a single segment of one commit: doc ordinals are insertion order
                assert searcher.doc(addr)["id"][0] == addr.doc, "tantivy doc ordinals are not insertion order"
            id_checked += 1
        t_docs = [(s, addr.doc if single_seg else searcher.doc(addr)["id"][0]) for s, addr in t_hits]
        t_want = min(K, len(t_docs))
        if t_want:
            t_cut = t_docs[t_want - 1][0]
            accept = {d for s, d in t_docs if s >= t_cut * (1 - TIE_RTOL)}
            n_t += min(t_want, sum(d in accept for d in ids))
            n_bt += min(t_want, sum(int(d) in accept for d, s in zip(bm_ids[i], bm_scores[i]) if s > 0))
            denom_t += t_want
    return {"bm25s": n_bm / max(1, denom_bm), "bm25s_strict_overlap": n_bm_strict / max(1, denom_bm),
            "tantivy": n_t / max(1, denom_t), "bm25s_vs_tantivy": n_bt / max(1, denom_t),
            "score_ratio_median": float(np.median(score_ratio)) if score_ratio else 0.0,
            "score_ratio_spread": float(np.max(np.abs(np.array(score_ratio) / np.median(score_ratio) - 1)))
            if score_ratio else 0.0,
            "batch_differs_from_single": mismatched_batch}


# ---------------------------------------------------------------- queries


def bench_text_queries(coll, ref, index, qtexts, qtokens, tq, rounds: int) -> dict:
    searcher = index.searcher()
    m = len(qtexts)
    pairs = list(zip(qtexts, qtokens, tq))

    def needle_one():
        for q in qtexts:
            coll.search(text=q, k=K)

    def bm25s_one():
        for toks in qtokens:
            ref.retrieve([toks], k=K, show_progress=False, n_threads=1)

    def tantivy_one():
        for _, _, t in pairs:
            searcher.search(index.parse_query(t, ["body"]), K, count=False).hits

    def needle_batch():
        coll.search_batch(texts=qtexts, k=K)

    def bm25s_batch():
        ref.retrieve(qtokens, k=K, show_progress=False, n_threads=2)

    single = alternate({"needle": needle_one, "bm25s": bm25s_one, "tantivy": tantivy_one}, rounds, m)
    batch = alternate({"needle": needle_batch, "bm25s": bm25s_batch, "tantivy": tantivy_one}, rounds, m)
    return {"single_qps": {e: med(v) for e, v in single.items()},
            "batch_qps": {e: med(v) for e, v in batch.items()},
            "single_ratio_bm25s": ratio(single, "needle", "bm25s"),
            "single_ratio_tantivy": ratio(single, "needle", "tantivy"),
            "batch_ratio_bm25s": ratio(batch, "needle", "bm25s"),
            "batch_ratio_tantivy": ratio(batch, "needle", "tantivy"),
            "single_rounds": single, "batch_rounds": batch}


def bench_hybrid(coll, qv, qtexts, efs: list[int], rounds: int, candidates: int) -> list[dict]:
    m = len(qtexts)
    pairs = list(zip(qv, qtexts))
    out = []
    for ef in efs:
        def dense(ef=ef):
            for v in qv:
                coll.search(v, k=K, ef=ef)

        def hybrid(ef=ef):
            for v, q in pairs:
                coll.search(v, text=q, k=K, ef=ef, candidates=candidates)

        def dense_n(ef=ef):  # the hybrid query's dense half
            for v in qv:
                coll.search(v, k=candidates, ef=ef)

        def text_n():  # its BM25 half
            for q in qtexts:
                coll.search(text=q, k=candidates)

        def dense_batch(ef=ef):
            coll.search_batch(qv, k=K, ef=ef)

        def hybrid_batch(ef=ef):
            coll.search_batch(qv, texts=qtexts, k=K, ef=ef, candidates=candidates)

        single = alternate({"dense": dense, "hybrid": hybrid, "dense_candidates": dense_n, "text_candidates": text_n},
                           rounds, m)
        batch = alternate({"dense": dense_batch, "hybrid": hybrid_batch}, rounds, m)
        row = {"ef": ef, "candidates": candidates,
               "single_qps": {e: med(v) for e, v in single.items()},
               "batch_qps": {e: med(v) for e, v in batch.items()},
               "hybrid_over_dense_time": 1 / ratio(single, "hybrid", "dense"),
               "hybrid_over_dense_time_batch": 1 / ratio(batch, "hybrid", "dense"),
               "single_rounds": single, "batch_rounds": batch}
        print(f"  hybrid ef={ef}: {json.dumps({k: v for k, v in row.items() if not k.endswith('_rounds')})}", flush=True)
        out.append(row)
    return out


# ---------------------------------------------------------------- report


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def report(r: dict) -> str:
    b, t, a, be = r["build"], r["text"], r["agreement"], r["backend"]
    mb = 1e6
    lines = [
        "## Full-text and hybrid search (issue 21)",
        "",
        f"`{r['command']}` — {r['n']:,} real sentences of minilm-384-cosine (`train.texts.jsonl.gz`, with their "
        f"384-d embeddings), {r['queries']:,} test sentences as queries (their embeddings for hybrid), k={K}; "
        f"{r['machine']['cpus']} cores, load average {r['machine']['load_before']} before, "
        f"{r['machine']['load_after']} after; kernels: **{be['backend'].upper()}** ({be['reason']})"
        + ("" if be["backend"] == "aot" else " — JIT: these numbers are not representative") + ".",
        "",
        "Engines timed in alternation (per round, each engine's passes over all the queries for about 0.5 s, the "
        "order rotating), "
        f"{r['rounds']} rounds for queries and {b['rounds']} for builds; q/s are medians over rounds, ratios "
        "medians of the per-round ratios. bm25s: method \"lucene\", k1=1.2, b=0.75, numba backend, fed Needle's "
        "own tokens (its time has no analysis; Needle's includes analysing the query). tantivy "
        f"{r['versions']['tantivy']}: one text field, default tokenizer, `searcher.search(parse_query(q), 10, "
        "count=False)` on the query with its operators and punctuation replaced by spaces; indexed by one writer "
        "thread, one commit. Needle's text save: a fresh analyzer (empty token memo) each time.",
        "",
        "| engine | index build (s) | index size (MB) | text q/s, one per call | text q/s, batched "
        "| top-10 agreement with bm25s |",
        "|---|---|---|---|---|---|",
        f"| Needle | {b['needle_text_work_s']:.2f} (a save's text work timed alone; of it analysis "
        f"{b['needle_analysis_s']:.2f}; whole saves: {b['save_text_s']:.2f} with text vs {b['save_plain_s']:.2f} "
        f"without, medians) "
        f"| {b['needle_text_bytes'] / mb:.1f} (text chunks; file {b['needle_file_bytes_text'] / mb:.1f} vs "
        f"{b['needle_file_bytes_plain'] / mb:.1f}) | {t['single_qps']['needle']:,.0f} | {t['batch_qps']['needle']:,.0f} "
        f"| {a['bm25s']:.4f} (strict id overlap {a['bm25s_strict_overlap']:.4f}) |",
        f"| bm25s {r['versions']['bm25s']} | {b['bm25s_index_s']:.2f} (tokens given) | "
        f"{b['bm25s_memory_bytes'] / mb:.1f} in memory, {b['bm25s_disk_bytes'] / mb:.1f} saved "
        f"| {t['single_qps']['bm25s']:,.0f} | {t['batch_qps']['bm25s']:,.0f} (n_threads=2) | — |",
        f"| tantivy {r['versions']['tantivy']} | {b['tantivy_index_s']:.2f} (its tokenizer included) | "
        f"{b['tantivy_disk_bytes'] / mb:.1f} on disk ({b['tantivy_segments']} segment"
        f"{'s' if b['tantivy_segments'] != 1 else ''}; memory: mmap) | {t['single_qps']['tantivy']:,.0f} "
        f"| {t['batch_qps']['tantivy']:,.0f} (one by one: no batch call) | {a['bm25s_vs_tantivy']:.4f} "
        f"(bm25s vs tantivy) |",
        "",
        f"Ratios: text one per call Needle / bm25s **{t['single_ratio_bm25s']:.2f}×**, Needle / tantivy "
        f"**{t['single_ratio_tantivy']:.2f}×**; batched Needle / bm25s **{t['batch_ratio_bm25s']:.2f}×**, "
        f"Needle / tantivy **{t['batch_ratio_tantivy']:.2f}×**. Agreement Needle vs tantivy (different tokenizer, "
        f"quantised lengths): {a['tantivy']:.4f}. Needle's BM25 score of a hit over bm25s's score of the same record: "
        f"{a['score_ratio_median']:.4f} (= k1 + 1: bm25s's \"lucene\" leaves out the (k1 + 1) numerator, which "
        f"changes no order), every hit within {a['score_ratio_spread']:.1e} of it.",
        "",
        f"Hybrid (`search(vec, text=q, k=10, ef=EF)`, RRF, candidates={r['hybrid'][0]['candidates']}) against "
        "the dense query alone (`search(vec, k=10, ef=EF)`), alternated; \"dense k=N\" and \"BM25 k=N\" are the "
        "hybrid query's two halves timed on their own:",
        "",
        "| ef | dense q/s | hybrid q/s | hybrid / dense time | dense k=N q/s | BM25 k=N q/s | dense batch q/s "
        "| hybrid batch q/s | hybrid / dense time, batched |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for h in r["hybrid"]:
        s, bb = h["single_qps"], h["batch_qps"]
        lines.append(f"| {h['ef']}{' (default)' if h['ef'] == r['default_ef'] else ''} | {s['dense']:,.0f} "
                     f"| {s['hybrid']:,.0f} | **{h['hybrid_over_dense_time']:.2f}×** | {s['dense_candidates']:,.0f} "
                     f"| {s['text_candidates']:,.0f} | {bb['dense']:,.0f} | {bb['hybrid']:,.0f} "
                     f"| {h['hybrid_over_dense_time_batch']:.2f}× |")
    tg = r["targets"]
    lines += ["", "Targets: " + "; ".join([
        f"top-10 agreement with bm25s ≥ 0.99: {a['bm25s']:.4f} {mark(tg['agreement'])}",
        f"text q/s one per call ≥ 1.0× bm25s: {t['single_ratio_bm25s']:.2f}× {mark(tg['text_qps'])}",
        "hybrid ≤ 1.5× the dense time at the same ef: " + ", ".join(
            f"ef {h['ef']} {h['hybrid_over_dense_time']:.2f}×" for h in r["hybrid"]) + f" {mark(tg['hybrid'])}",
        f"text indexing adds ≤ 30 % to `save()`: {b['save_overhead'] * 100:+.1f} % "
        f"(median of per-round ratios; rounds: {', '.join(f'{o * 100:+.1f} %' for o in b['save_overhead_rounds'])}) "
        f"{mark(tg['build'])}; the save's text work timed alone (texts from the metadata, analysis, inversion, "
        f"encoding: {b['needle_text_work_s']:.2f} s) is {b['text_work_over_plain_save'] * 100:.1f} % of the save "
        "without text, the steadier figure when the neighbours move whole saves by tens of per cent",
    ]) + ".", ""]
    if r.get("skipped_queries"):
        lines[-1:-1] = ["", f"{r['skipped_queries']} queries with no token after analysis were left out "
                            "(bm25s cannot take an empty query)."]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--n", type=int, default=100_000, help="records (default 100000)")
    ap.add_argument("--queries", type=int, default=1000, help="queries (default 1000)")
    ap.add_argument("--rounds", type=int, default=7, help="alternation rounds for queries (default 7)")
    ap.add_argument("--build-rounds", type=int, default=3, help="alternation rounds for builds (default 3)")
    ap.add_argument("--efs", default="", help="hybrid efs besides the collection default (default: 2x default)")
    ap.add_argument("--candidates", type=int, default=100, help="hybrid candidates per ranking (default 100)")
    ap.add_argument("--write", action="store_true", help="print the markdown section and write bench-out/text.md")
    args = ap.parse_args()
    command = " ".join(["python tools/bench_text.py", *sys.argv[1:]])
    load_before = os.getloadavg()
    be = backend()
    print(f"backend: {be}", flush=True)
    import bm25s
    import tantivy  # noqa: F401  (fail before the builds if it is missing)

    base = Path(args.shared) / "data" / "minilm-384-cosine"
    docs = texts(base / "train.texts.jsonl.gz", args.n)
    x = vectors(base / "train.f16.npy", len(docs))
    qtexts = texts(base / "test.texts.jsonl.gz", args.queries)
    qv = vectors(base / "test.f16.npy", len(qtexts))
    tmp = tempfile.mkdtemp(prefix="needle-text-bench-")
    try:
        print(f"build: {len(docs):,} records, {args.build_rounds} rounds", flush=True)
        build, text_path, refs = bench_build(x, docs, tmp, args.build_rounds)
        print(json.dumps({k: v for k, v in build.items() if k != "raw"}), flush=True)
        ref, index = refs["bm25s"], refs["tantivy"]
        db = needle.Database.open(text_path, read_only=True)
        coll = db.collection("docs")
        state = db.engine.state("docs")
        default_ef = state.descriptor.hnsw.ef_search
        efs = [default_ef] + ([int(e) for e in args.efs.split(",") if e] or [2 * default_ef])
        efs = list(dict.fromkeys(efs))
        an = text_search.analyzer_of(state.descriptor.text)
        qtok_all = [an.tokens(q) for q in qtexts]
        keep = [i for i, tk in enumerate(qtok_all) if tk]
        qtexts = [qtexts[i] for i in keep]
        qtokens = [qtok_all[i] for i in keep]
        qv = qv[keep]
        tq = [sanitise(q) for q in qtexts]
        print("agreement ...", flush=True)
        agree = agreement(coll, ref, index, qtexts, qtokens, tq)
        print(json.dumps(agree), flush=True)
        print("text queries ...", flush=True)
        text = bench_text_queries(coll, ref, index, qtexts, qtokens, tq, args.rounds)
        print(json.dumps({k: v for k, v in text.items() if not k.endswith("_rounds")}), flush=True)
        print("hybrid ...", flush=True)
        hybrid = bench_hybrid(coll, qv, qtexts, efs, args.rounds, args.candidates)
        db.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    targets = {"agreement": agree["bm25s"] >= 0.99, "text_qps": text["single_ratio_bm25s"] >= 1.0,
               "hybrid": all(h["hybrid_over_dense_time"] <= 1.5 for h in hybrid),
               "build": build["save_overhead"] <= 0.30}
    r = {"command": command, "n": len(docs), "queries": len(qtexts), "skipped_queries": len(qtok_all) - len(keep),
         "rounds": args.rounds, "default_ef": default_ef, "backend": be,
         "versions": {"bm25s": bm25s.__version__, "tantivy": importlib.metadata.version("tantivy"),
                      "numpy": np.__version__},
         "machine": {"cpus": len(os.sched_getaffinity(0)),
                     "load_before": ", ".join(f"{v:.2f}" for v in load_before),
                     "load_after": ", ".join(f"{v:.2f}" for v in os.getloadavg())},
         "build": build, "agreement": agree, "text": text, "hybrid": hybrid, "targets": targets}
    if be["backend"] != "aot":
        print("WARNING: kernels ran on the JIT backend: numbers are not representative", flush=True)
    print(json.dumps(r, indent=1))
    if args.write:
        section = report(r)
        print(section)
        out = ROOT / "bench-out"
        out.mkdir(exist_ok=True)
        (out / "text.md").write_text(section + "\n")


if __name__ == "__main__":
    main()
