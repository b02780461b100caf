"""The files tools/bench_memory.py measures: one set of random vectors, indexed by
Needle, hnswlib, usearch, FAISS and Annoy, each built once and cached in bench-out/.

Every graph index has M=16 and ef_construction=40 (FAISS's default;
Annoy: 10 trees). Memory depends on the graph's size, set by M, not on how
well it was built, so the cheaper construction only saves build time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

M, EF_CONSTRUCTION, ANNOY_TREES = 16, 40, 10
KINDS = ("needle", "hnswlib", "usearch", "faiss", "annoy")


def vectors(n: int, dim: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)


def paths(out: Path, n: int, dim: int) -> dict[str, Path]:
    return {kind: out / f"mem-{n}x{dim}.{kind}" for kind in KINDS}


def _build_one(kind: str, path: Path, x: np.ndarray) -> None:
    n, dim = x.shape
    tmp = path.with_name(f"{path.name}.building-{os.getpid()}")
    if kind == "needle":
        import needle_mm as needle

        if tmp.exists():
            tmp.unlink()
        with needle.Database.open(tmp) as db:
            db.create_collection("c", dim, "euclidean", m=M, ef_construction=EF_CONSTRUCTION).insert_many(
                [str(i) for i in range(n)], x)
    elif kind == "hnswlib":
        import hnswlib

        index = hnswlib.Index("l2", dim)
        index.init_index(n, M, EF_CONSTRUCTION)
        index.add_items(x)
        index.save_index(str(tmp))
    elif kind == "usearch":
        from usearch.index import Index

        index = Index(ndim=dim, metric="l2sq", dtype="f32", connectivity=M, expansion_add=EF_CONSTRUCTION)
        index.add(np.arange(n, dtype=np.uint64), x)
        index.save(str(tmp))
    elif kind == "faiss":
        import faiss

        index = faiss.IndexHNSWFlat(dim, M)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        index.add(x)
        faiss.write_index(index, str(tmp))
    elif kind == "annoy":
        from annoy import AnnoyIndex

        index = AnnoyIndex(dim, "euclidean")
        for i in range(n):
            index.add_item(i, x[i])
        index.build(ANNOY_TREES, n_jobs=-1)
        index.save(str(tmp))
    os.replace(tmp, path)
    for side in (".lock", ".readers"):  # Needle's lock and reader-table files beside the temporary name
        if os.path.exists(str(tmp) + side):
            os.unlink(str(tmp) + side)


def build(out: Path, n: int, dim: int, kinds=KINDS) -> dict[str, Path]:
    """Build those of ``kinds`` that are missing; returns every kind's path."""
    out.mkdir(exist_ok=True)
    where = paths(out, n, dim)
    x = None
    for kind in kinds:
        if where[kind].exists():
            continue
        if x is None:
            x = vectors(n, dim)
        t = time.perf_counter()
        _build_one(kind, where[kind], x)
        print(f"built {where[kind].name} in {time.perf_counter() - t:.0f} s", flush=True)
    return where


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("kinds", nargs="*", default=list(KINDS))
    a = ap.parse_args()
    build(Path(__file__).resolve().parents[1] / "bench-out", a.n, a.dim, a.kinds)
