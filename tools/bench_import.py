"""Import and rebuild throughput (issue 6), against the anchors in the same run.

import: the real minilm-384 vectors (../shared/data) as .npy + ids + metadata
side files -> `needle_mm.importers.from_npy` (what `needle import npy` runs:
batches of 1,000, a checkpoint every 10,000, the HNSW graph built as it goes),
vs hnswlib `add_items` on 2 threads and Chroma `add` in batches of 5,000, all
with M=16, ef_construction=200 (Chroma: its defaults, M=16, ef_construction=100).

sources: for each real source, the time to read the records alone (the
source's own read speed) next to the whole import of the same records.

rebuild: `needle rebuild` of an n x 128 file built by many small commits,
vs hnswlib building the same vectors on 2 threads.

    python tools/bench_import.py [--n 100000] [--rebuild-n 1000000] [--sources-n 20000] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


def minilm(n: int) -> np.ndarray:
    x = np.load(os.path.join(DATA, "minilm-384-cosine", "train.f16.npy"))[:n].astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def side_files(work: str, x: np.ndarray) -> tuple[str, str, str]:
    vectors, ids, meta = (os.path.join(work, f) for f in ("v.npy", "ids.txt", "meta.jsonl"))
    np.save(vectors, x)
    with open(ids, "w") as f:
        f.writelines(f"doc-{i}\n" for i in range(len(x)))
    with open(meta, "wb") as f:
        f.writelines(orjson.dumps({"n": i, "group": i % 10}) + b"\n" for i in range(len(x)))
    return vectors, ids, meta


def bench_npy_import(work: str, x: np.ndarray) -> dict:
    from needle_mm import importers

    vectors, ids, meta = side_files(work, x)
    t = time.perf_counter()
    report = importers.from_npy(os.path.join(work, "i.needle"), vectors, ids=ids, metadata=meta, distance="cosine",
                                progress=False)
    needle_s = time.perf_counter() - t
    assert report.imported == len(x)

    import hnswlib

    t = time.perf_counter()
    index = hnswlib.Index("cosine", x.shape[1])
    index.init_index(len(x), M=16, ef_construction=200)
    index.add_items(x, np.arange(len(x)), num_threads=2)
    index.save_index(os.path.join(work, "h.bin"))
    hnsw_s = time.perf_counter() - t

    import chromadb

    t = time.perf_counter()
    client = chromadb.PersistentClient(os.path.join(work, "chroma"))
    coll = client.create_collection("docs", metadata={"hnsw:space": "cosine"})
    for s in range(0, len(x), 5000):
        coll.add(ids=[f"doc-{i}" for i in range(s, min(s + 5000, len(x)))], embeddings=x[s:s + 5000],
                 metadatas=[{"n": i, "group": i % 10} for i in range(s, min(s + 5000, len(x)))])
    chroma_s = time.perf_counter() - t
    n = len(x)
    return {"n": n, "needle_s": needle_s, "hnswlib_s": hnsw_s, "chroma_s": chroma_s,
            "needle_rate": n / needle_s, "hnswlib_rate": n / hnsw_s, "chroma_rate": n / chroma_s}


def _read_all(source) -> float:
    t = time.perf_counter()
    count = sum(len(b.ids) for b in source.batches(None, 1000))
    elapsed = time.perf_counter() - t
    source.close()
    return count / elapsed


def bench_sources(work: str, x: np.ndarray) -> list[dict]:
    """Each real source holding the same records: read alone vs full import."""
    from needle_mm import importers
    from needle_mm.importers import chroma, faiss as nfaiss, files, qdrant

    n = len(x)
    ids = [f"doc-{i}" for i in range(n)]
    metas = [{"n": i, "group": i % 10} for i in range(n)]
    rows = []

    def measure(name, make_source, run_import):
        read_rate = _read_all(make_source())
        path = os.path.join(work, f"{name}.needle")
        t = time.perf_counter()
        report = run_import(path)
        rows.append({"source": name, "read_rate": read_rate, "import_rate": report.imported / (time.perf_counter() - t)})

    vectors, ids_path, meta_path = side_files(work, x)
    measure("npy", lambda: files.NpySource(vectors, ids_path, meta_path, "cosine"),
            lambda p: importers.from_npy(p, vectors, ids=ids_path, metadata=meta_path, distance="cosine", progress=False))
    jsonl = os.path.join(work, "d.jsonl")
    with open(jsonl, "wb") as f:
        f.writelines(orjson.dumps({"id": i, "vector": v.tolist(), "metadata": m}) + b"\n" for i, v, m in zip(ids, x, metas))
    measure("jsonl", lambda: files.JsonlSource(jsonl, "cosine"),
            lambda p: importers.from_jsonl(p, jsonl, distance="cosine", progress=False))
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = os.path.join(work, "d.parquet")
    pq.write_table(pa.table({"id": ids, "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 384),
                             "metadata": [orjson.dumps(m).decode() for m in metas]}), parquet)
    measure("parquet", lambda: files.ParquetSource(parquet, distance="cosine"),
            lambda p: importers.from_parquet(p, parquet, distance="cosine", progress=False))

    import chromadb

    client = chromadb.PersistentClient(os.path.join(work, "chroma-src"))
    coll = client.create_collection("docs", metadata={"hnsw:space": "cosine"})
    for s in range(0, n, 5000):
        coll.add(ids=ids[s:s + 5000], embeddings=x[s:s + 5000], metadatas=metas[s:s + 5000])
    measure("chroma", lambda: chroma.ChromaSource("docs", client=client),
            lambda p: run(p, chroma.ChromaSource("docs", client=client)))

    from qdrant_client import QdrantClient, models

    qpath = os.path.join(work, "qdrant")
    qc = QdrantClient(path=qpath)
    qc.create_collection("docs", vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE))
    for s in range(0, n, 1000):
        qc.upload_points("docs", [models.PointStruct(id=i, vector=x[i].tolist(), payload=metas[i])
                                  for i in range(s, min(s + 1000, n))])
    measure("qdrant (local mode)", lambda: qdrant.QdrantSource("docs", client=qc),
            lambda p: run(p, qdrant.QdrantSource("docs", client=qc)))
    qc.close()

    import faiss

    index = faiss.IndexFlatIP(384)
    index.add(x)
    fpath = os.path.join(work, "f.faiss")
    faiss.write_index(index, fpath)
    measure("faiss", lambda: nfaiss.FaissSource(fpath, ids_path, meta_path, "cosine"),
            lambda p: importers.from_faiss(p, fpath, ids=ids_path, metadata=meta_path, distance="cosine", progress=False))
    return rows


def run(path, source):
    from needle_mm.importers import run_import

    return run_import(source, path, "docs", progress=False)


def bench_rebuild(work: str, n: int) -> dict:
    import needle_mm as needle
    from needle_mm.ops.rebuild import rebuild

    x = np.random.default_rng(0).normal(size=(n, 128)).astype(np.float32)
    path = os.path.join(work, "r.needle")
    with needle.Database.open(path) as db:
        c = db.create_collection("c", 128, "euclidean")
        step = max(n // 10, 1)
        for s in range(0, n, step):  # ten commits: the file a long-running writer leaves
            c.insert_many([str(i) for i in range(s, min(s + step, n))], x[s:s + step])
            db.save()
    t = time.perf_counter()
    rebuild(path)
    needle_s = time.perf_counter() - t

    import hnswlib

    t = time.perf_counter()
    index = hnswlib.Index("l2", 128)
    index.init_index(n, M=16, ef_construction=200)
    index.add_items(x, np.arange(n), num_threads=2)
    hnsw_s = time.perf_counter() - t
    return {"n": n, "needle_s": needle_s, "hnswlib_s": hnsw_s}


def render(result: dict, command: str) -> str:
    out = ["## Import and rebuild (issue 6)", "", f"Command: `{command}` (2 cores, shared and noisy machine).", ""]
    imp = result.get("import")
    if imp:
        out += [f"### Import {imp['n']:,} × 384 (real minilm vectors) from .npy + ids + metadata, indexed", "",
                "| | seconds | records/s | Needle ÷ anchor (rate) |", "|---|---|---|---|",
                f"| Needle `needle import npy` (checkpoint every 10,000) | {imp['needle_s']:.1f} | {imp['needle_rate']:,.0f} | |",
                f"| hnswlib `add_items`, 2 threads | {imp['hnswlib_s']:.1f} | {imp['hnswlib_rate']:,.0f} | "
                f"{imp['needle_rate'] / imp['hnswlib_rate']:.2f}× |",
                f"| Chroma `add`, batches of 5,000 | {imp['chroma_s']:.1f} | {imp['chroma_rate']:,.0f} | "
                f"{imp['needle_rate'] / imp['chroma_rate']:.2f}× |", ""]
    src = result.get("sources")
    if src:
        out += [f"### Per source ({result['sources_n']:,} × 384): the source's own read speed vs the whole import", "",
                "| source | read alone, records/s | import into Needle, records/s |", "|---|---|---|"]
        out += [f"| {r['source']} | {r['read_rate']:,.0f} | {r['import_rate']:,.0f} |" for r in src]
        out += [""]
    reb = result.get("rebuild")
    if reb:
        out += [f"### `needle rebuild` of {reb['n']:,} × 128 (ten commits) vs hnswlib building it on 2 threads", "",
                "| | seconds | Needle ÷ hnswlib (time) |", "|---|---|---|",
                f"| `needle rebuild` (read, build, write, replace) | {reb['needle_s']:.1f} | "
                f"{reb['needle_s'] / reb['hnswlib_s']:.2f}× |",
                f"| hnswlib `add_items`, 2 threads (in memory, not saved) | {reb['hnswlib_s']:.1f} | |", ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000, help="records for the npy import (0: skip)")
    ap.add_argument("--sources-n", type=int, default=20_000, help="records per real source (0: skip)")
    ap.add_argument("--rebuild-n", type=int, default=1_000_000, help="records for the rebuild (0: skip)")
    ap.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="needle-bench-import-")
    result = {}
    try:
        if args.n:
            result["import"] = bench_npy_import(work, minilm(args.n))
            print(json.dumps(result["import"]), flush=True)
        if args.sources_n:
            result["sources_n"] = args.sources_n
            result["sources"] = bench_sources(work, minilm(args.sources_n))
            print(json.dumps(result["sources"]), flush=True)
        if args.rebuild_n:
            result["rebuild"] = bench_rebuild(work, args.rebuild_n)
            print(json.dumps(result["rebuild"]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    section = render(result, "python tools/bench_import.py " + " ".join(sys.argv[1:]))
    print(section)
    if args.write:
        from benchmarks_md import write_section

        write_section("## Import and rebuild", section)


if __name__ == "__main__":
    main()
