"""``needle demo``: build a file from real sentences, search it, share it.

The data (needle_mm/ops/data/demo.npz) are 3,000 real English sentences with
their all-MiniLM-L6-v2 embeddings; see the README's data credits.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import time
from importlib import resources

import numpy as np

from .._kernels import compiled_signatures
from ..database import Database


def load_demo_data() -> dict[str, np.ndarray]:
    with resources.files("needle_mm.ops.data").joinpath("demo.npz").open("rb") as f:
        data = dict(np.load(f))
    return data


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _show(results, limit: int = 3) -> None:
    for r in results[:limit]:
        m = r.metadata
        print(f"      {r.distance:.3f}  [{m['source']}, {m['words']} words] {m['text'][:90]}")


def _reader(path: str, worker: int, query: np.ndarray, barrier, new_id: str, out) -> None:
    """A separate process: open read-only, search, wait for the writer, refresh, search again."""
    db = Database.open(path, read_only=True)
    coll = db.collection("sentences")
    before = coll.count()
    top_before = coll.search(query, k=1)[0].id
    barrier.wait()  # 1: all readers have the old snapshot
    barrier.wait()  # 2: the writer has saved
    db.refresh()
    top_after = coll.search(query, k=1)[0]
    out.put((worker, os.getpid(), before, top_before, coll.count(), top_after.id, db.generation,
             top_after.id == new_id))
    db.close()


FILTERS = [
    ("no filter", None),
    ('{"source": "pros_cons"}', {"source": "pros_cons"}),
    ('{"$and": [{"source": {"$ne": "brown"}}, {"words": {"$lt": 12}}]}',
     {"$and": [{"source": {"$ne": "brown"}}, {"words": {"$lt": 12}}]}),
]


def _warm_up(folder: str, vectors: np.ndarray, metas: list[dict], queries: np.ndarray) -> float:
    """Run what the demo times on a small file first, so numba compiles (or loads
    from its cache) every kernel before the clock starts; returns the seconds it took."""
    started = time.perf_counter()
    with Database.open(os.path.join(folder, "warm-up.needle")) as db:
        coll = db.create_collection("warm", vectors.shape[1])
        n = min(400, len(metas))
        coll.insert_many([f"w{i}" for i in range(n)], vectors[:n], metas[:n])
        db.save()
        for _, flt in FILTERS:
            coll.search(queries[0], k=3, filter=flt)
        coll.search_batch(queries, k=10)
        coll.insert("w-new", queries[0], metas[0])
        db.save()
        coll.search(queries[0], k=1)
    return time.perf_counter() - started


def run(path: str | None = None, workers: int = 3) -> None:
    data = load_demo_data()
    vectors, texts, sources = _unit(data["vectors"]), data["texts"], data["sources"]
    queries, qtexts = _unit(data["query_vectors"]), data["query_texts"]
    tmp = None
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="needle-demo-")
        path = os.path.join(tmp.name, "vectors.needle")
    elif os.path.exists(path):
        os.remove(path)
    print(f"Needle demo: {len(texts)} real sentences, all-MiniLM-L6-v2 embeddings ({vectors.shape[1]}-d)")
    print(f"  file: {path}")
    metas = [{"text": str(t), "source": str(s), "words": len(str(t).split())} for t, s in zip(texts, sources)]
    print("  preparing the search kernels ...", end="", flush=True)
    with tempfile.TemporaryDirectory(prefix="needle-warm-up-") as folder:
        seconds = _warm_up(folder, vectors, metas, queries)
    if compiled_signatures():
        print(f" compiled in {seconds:.1f} s (numba compiles them once and caches them for later runs; "
              "the timings below exclude it)")
    elif "numba" in sys.modules:
        print(f" loaded from numba's cache in {seconds:.1f} s (the timings below exclude it)")
    else:
        print(f" {seconds:.1f} s on the ahead-of-time kernels built at install (nothing to compile; "
              "the timings below exclude it)")

    t0 = time.perf_counter()
    db = Database.open(path)
    db.create_collection("sentences", vectors.shape[1])
    coll = db.collection("sentences")
    ids = [f"s{i}" for i in range(len(texts))]
    coll.insert_many(ids, vectors, metas)
    t1 = time.perf_counter()
    db.save()
    t2 = time.perf_counter()
    size = os.path.getsize(path)
    print(f"  built: insert_many {1e3 * (t1 - t0):.0f} ms, save {1e3 * (t2 - t1):.0f} ms, "
          f"{coll.count():,} records, file {size / 1e6:.1f} MB")

    for qi in (1, 3):
        print(f"\n  query: {str(qtexts[qi])!r}")
        for label, flt in FILTERS:
            coll.search(queries[qi], k=3, filter=flt)  # warm
            t = time.perf_counter()
            results = coll.search(queries[qi], k=3, filter=flt)
            ms = 1e3 * (time.perf_counter() - t)
            print(f"    {label}  ({ms:.2f} ms)")
            _show(results)

    t = time.perf_counter()
    batch = coll.search_batch(queries, k=10)
    print(f"\n  search_batch: {len(queries)} queries in {1e3 * (time.perf_counter() - t):.2f} ms "
          f"({sum(map(len, batch))} results)")

    print(f"\n  {workers} reader processes open the same file read-only (one page-cache copy) ...")
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers + 1)
    out = ctx.Queue()
    new_id = "new-0"
    probe = queries[0]
    procs = [ctx.Process(target=_reader, args=(path, w, probe, barrier, new_id, out)) for w in range(workers)]
    for p in procs:
        p.start()
    barrier.wait()
    coll.insert(new_id, probe, {"text": str(qtexts[0]), "source": "brown", "words": len(str(qtexts[0]).split())})
    db.save()
    print(f"  writer (pid {os.getpid()}) inserted {new_id!r} and saved generation {db.generation}")
    barrier.wait()
    rows = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    for worker, pid, before, top_before, after, top_after, gen, saw in rows:
        print(f"    reader {worker} (pid {pid}): {before} records, top hit {top_before!r} -> "
              f"after refresh: generation {gen}, {after} records, top hit {top_after!r}"
              f"{'  (sees the new record)' if saw else ''}")
    ok = all(r[-1] for r in rows)
    db.close()
    print("\n  every reader saw the writer's checkpoint." if ok else "\n  A READER MISSED THE CHECKPOINT")
    if tmp is not None:
        tmp.cleanup()
    if not ok:
        raise SystemExit(1)
