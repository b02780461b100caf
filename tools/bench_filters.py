"""Filtered search: Needle vs hnswlib's filter callback vs Chroma's ``where``, in one run.

    pip install ".[bench]"
    python tools/bench_filters.py [--shared ../shared] [--queries 200] [--no-chroma]

Data: the 100,000 x 384 sentence embeddings of ../shared/data/minilm-384-cosine.
Every record gets ``{"bucket": b}`` with b a random permutation of 0..999 (so
selectivity is independent of the vectors); filters ``{"bucket": {"$lt": t}}``
pass 50 %, 10 %, 1 % and 0.1 % of the records. Ground truth per query and
filter: exact top-10 among the passing records (numpy). For each engine and
selectivity: recall@10 and queries/s, one query per call, k=10, default
search settings (Needle ef=64; hnswlib ef=64 with ``filter=`` a Python
callable; Chroma's defaults). Also Needle unfiltered, and ``count(filter)``.
Writes bench-out/filters.json and the filter section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import needle_mm as needle  # noqa: E402
from benchmarks_md import write_section  # noqa: E402

K = 10
SELECTIVITIES = [(0.5, 500), (0.1, 100), (0.01, 10), (0.001, 1)]


def load(shared: Path):
    base = shared / "data" / "minilm-384-cosine"
    x = np.load(base / "train.f16.npy").astype(np.float32)
    q = np.load(base / "test.f16.npy").astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    bucket = np.random.default_rng(0).permutation(len(x)) % 1000
    return x, q, bucket


def truth(x, q, allowed) -> list[list[int]]:
    idx = np.flatnonzero(allowed)
    sims = q @ x[idx].T
    top = np.argsort(-sims, axis=1)[:, :K]
    return [idx[row].tolist() for row in top]


def recall(found, gt) -> float:
    return float(np.mean([len(set(f) & set(g)) / max(1, min(K, len(g))) for f, g in zip(found, gt)]))


def timed(fn, queries) -> tuple[list, float]:
    fn(queries[0])
    t = time.perf_counter()
    out = [fn(v) for v in queries]
    return out, len(queries) / (time.perf_counter() - t)


def bench_needle(x, q, bucket, out: Path) -> dict:
    path = out / "filters-minilm.needle"
    if not path.exists():
        tmp = out / "filters-minilm.building"
        t = time.perf_counter()
        with needle.Database.open(tmp) as db:
            c = db.create_collection("c", x.shape[1], "cosine")
            c.insert_many([str(i) for i in range(len(x))], x, [{"bucket": int(b)} for b in bucket])
        os.replace(tmp, path)
        print(f"built needle in {time.perf_counter() - t:.0f} s", flush=True)
    db = needle.Database.open(path, read_only=True)
    c = db.collection("c")
    res = {}
    timed(lambda v: c.search(v, K), q)  # page the file in
    _, res["unfiltered_qps"] = timed(lambda v: c.search(v, K), q)
    for frac, t in SELECTIVITIES:
        flt = {"bucket": {"$lt": t}}
        gt = truth(x, q, bucket < t)
        c.search(q[0], K, filter=flt)
        # unfiltered and filtered queries alternate, so the ratio sees the same machine
        found, t_unf, t_flt = [], 0.0, 0.0
        for v in q:
            t0 = time.perf_counter()
            c.search(v, K)
            t1 = time.perf_counter()
            hits = c.search(v, K, filter=flt)
            t_flt += time.perf_counter() - t1
            t_unf += t1 - t0
            found.append([int(r.id) for r in hits])
        t0 = time.perf_counter()
        count = c.count(flt)
        res[str(frac)] = {"recall": recall(found, gt), "qps": len(q) / t_flt, "vs_unfiltered": t_unf / t_flt,
                          "count": count, "count_ms": (time.perf_counter() - t0) * 1000}
        print("needle", frac, res[str(frac)], flush=True)
    # the first filtered query of a filter (column evaluation, before the cache helps)
    t0 = time.perf_counter()
    c.search(q[0], K, filter={"bucket": {"$in": [3, 4, 5]}})
    res["first_filtered_query_ms"] = (time.perf_counter() - t0) * 1000
    db.close()
    return res


def bench_hnswlib(x, q, bucket, out: Path) -> dict:
    import hnswlib

    path = out / "filters-minilm.hnswlib"
    index = hnswlib.Index("cosine", x.shape[1])
    if path.exists():
        index.load_index(str(path))
    else:
        index.init_index(len(x), 16, 200)
        index.add_items(x)
        index.save_index(str(path))
    index.set_ef(64)
    index.set_num_threads(1)
    res = {}
    _, res["unfiltered_qps"] = timed(lambda v: index.knn_query(v, K)[0][0].tolist(), q)
    for frac, t in SELECTIVITIES:
        allowed = bucket < t
        gt = truth(x, q, allowed)

        def one(v):
            labels, _ = index.knn_query(v, K, filter=lambda label: bool(allowed[label]))
            return labels[0].tolist()

        try:
            found, qps = timed(one, q)
            res[str(frac)] = {"recall": recall(found, gt), "qps": qps}
        except RuntimeError as exc:  # hnswlib raises when fewer than k pass its search
            res[str(frac)] = {"recall": None, "qps": None, "error": str(exc)}
        print("hnswlib", frac, res[str(frac)], flush=True)
    return res


def bench_chroma(x, q, bucket, out: Path, n_queries: int) -> dict:
    import chromadb

    path = out / "filters-chroma"
    done = path / "complete"
    if not done.exists():  # build from scratch (before any client opens the directory)
        shutil.rmtree(path, ignore_errors=True)
        client = chromadb.PersistentClient(path=str(path))
        coll = client.create_collection("bench", metadata={"hnsw:space": "cosine"})
        t = time.perf_counter()
        for s in range(0, len(x), 5000):
            coll.add(ids=[str(i) for i in range(s, min(len(x), s + 5000))], embeddings=x[s:s + 5000],
                     metadatas=[{"bucket": int(b)} for b in bucket[s:s + 5000]])
        print(f"built chroma in {time.perf_counter() - t:.0f} s", flush=True)
        done.touch()
    else:
        coll = chromadb.PersistentClient(path=str(path)).get_collection("bench")
    qs = q[:n_queries]
    res = {}
    _, res["unfiltered_qps"] = timed(lambda v: coll.query(query_embeddings=[v], n_results=K)["ids"][0], qs)
    for frac, t in SELECTIVITIES:
        gt = truth(x, qs, bucket < t)
        found, qps = timed(lambda v: [int(i) for i in coll.query(query_embeddings=[v], n_results=K,
                                                                  where={"bucket": {"$lt": t}})["ids"][0]], qs)
        res[str(frac)] = {"recall": recall(found, gt), "qps": qps}
        print("chroma", frac, res[str(frac)], flush=True)
    return res


def report(r: dict, command: str) -> str:
    nd, hl, ch = r["needle"], r["hnswlib"], r.get("chroma")
    lines = [
        "## Filtered search (issue 5): Needle vs hnswlib's filter callback vs Chroma",
        "",
        f"`{command}` — minilm-384-cosine, 100,000 × 384, {r['queries']} queries (Chroma: "
        f"{r.get('chroma_queries', '—')}), k=10, one query per call; every record has `{{\"bucket\": b}}` "
        "(a random permutation of 0..999); the filter is `{\"bucket\": {\"$lt\": t}}`. \"vs unfiltered\": Needle's "
        "filtered q/s over its unfiltered q/s with the two kinds of query alternating. Recall@10 against the "
        "exact top-10 among passing records. hnswlib: `knn_query(filter=callable)`, ef=64, 1 thread. "
        "Chroma: `query(where=...)`, its defaults.",
        "",
        "| selectivity | Needle recall | Needle q/s | vs unfiltered | hnswlib recall | hnswlib q/s | Needle / hnswlib "
        "| Chroma recall | Chroma q/s | Needle / Chroma |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for frac, _ in SELECTIVITIES:
        n, h = nd[str(frac)], hl[str(frac)]
        c = ch[str(frac)] if ch else None
        hq = f"{h['qps']:,.0f}" if h.get("qps") else "error"
        hr = f"{h['recall']:.3f}" if h.get("recall") is not None else "—"
        ratio_h = f"**{n['qps'] / h['qps']:.1f}×**" if h.get("qps") else "—"
        lines.append(
            f"| {frac * 100:g} % | {n['recall']:.3f} | {n['qps']:,.0f} | {n['vs_unfiltered']:.2f}× "
            f"| {hr} | {hq} | {ratio_h} | "
            + (f"{c['recall']:.3f} | {c['qps']:,.0f} | **{n['qps'] / c['qps']:.1f}×** |" if c else "— | — | — |"))
    lines += ["", f"Unfiltered q/s: Needle {nd['unfiltered_qps']:,.0f}, hnswlib {hl['unfiltered_qps']:,.0f}"
              + (f", Chroma {ch['unfiltered_qps']:,.0f}" if ch else "") + ". "
              f"`count(filter)` at 10 %: {nd['0.1']['count_ms']:.2f} ms; first query with a new filter: "
              f"{nd['first_filtered_query_ms']:.1f} ms (evaluates the columns; later queries reuse the mask).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--chroma-queries", type=int, default=50)
    ap.add_argument("--no-chroma", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    out = ROOT / "bench-out"
    out.mkdir(exist_ok=True)
    x, q, bucket = load(Path(a.shared))
    q = q[: a.queries]
    r = {"queries": len(q), "needle": bench_needle(x, q, bucket, out), "hnswlib": bench_hnswlib(x, q, bucket, out)}
    if not a.no_chroma:
        r["chroma"] = bench_chroma(x, q, bucket, out, a.chroma_queries)
        r["chroma_queries"] = a.chroma_queries
    (out / "filters.json").write_text(json.dumps(r, indent=1))
    section = report(r, "python tools/bench_filters.py" + (" --no-chroma" if a.no_chroma else ""))
    print(section)
    if not a.no_write:
        write_section('## Filtered search (issue 5)', section)


if __name__ == "__main__":
    main()
