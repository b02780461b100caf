"""The fixed cost of one search call: a 20-record index, k=10, ef=16.

What is left when the walk has almost nothing to do is the call itself: the
argument checks, the kernel's argument conversions, the ids and the result
objects. Prints microseconds per call (best of ``--passes`` passes of
``--calls`` calls) for ``Collection.search`` returning result objects and
with ``as_arrays=True``, and for hnswlib's ``knn_query`` when it is installed.

Run it in fresh processes against two checkouts to compare commits, e.g.
``PYTHONPATH=/path/to/other/checkout python tools/bench_call_floor.py``,
alternating the two a few times (the figures move with the machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

import needle_mm as needle

DIM, RECORDS, K, EF = 128, 20, 10, 16


def best_us(call, calls: int, passes: int) -> float:
    best = float("inf")
    for _ in range(passes):
        t = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - t) / calls * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--passes", type=int, default=15)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((RECORDS, DIM)).astype(np.float32)
    q = rng.standard_normal(DIM).astype(np.float32)
    out = {"needle": os.path.dirname(needle.__file__), "backend": needle._kernels.backend()}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "floor.needle")
        with needle.Database.open(path) as db:
            db.create_collection("c", DIM, distance="euclidean").insert_many([str(i) for i in range(RECORDS)], x)
        with needle.Database.open(path, read_only=True) as db:
            c = db.collection("c")
            out["search_us"] = best_us(lambda: c.search(q, K, ef=EF), args.calls, args.passes)
            out["as_arrays_us"] = best_us(lambda: c.search(q, K, ef=EF, as_arrays=True), args.calls, args.passes)
    try:
        import hnswlib
    except ImportError:
        hnswlib = None
    if hnswlib is not None:
        h = hnswlib.Index("l2", DIM)
        h.init_index(RECORDS, 16, 200)
        h.add_items(x)
        h.set_ef(EF)
        h.set_num_threads(1)
        out["hnswlib_us"] = best_us(lambda: h.knn_query(q, K), args.calls, args.passes)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
