"""Threads sharing one Database: what the thread guard costs, and how reads scale.

    python tools/bench_threads.py [--dataset siftsmall-128-euclidean] [--rounds 5] [--write]

On a real dataset (../shared/data), in one process:

1. single-query search, one thread: a read-only Database (its readers take no
   lock), a writable one (each read holds the view lock shared), hnswlib;
2. T = 1, 2, 4 threads searching one shared index, single queries: total q/s
   of a writable Needle Database and of one hnswlib index;
3. while 2 threads search, a third inserts 10 records and saves, 20 times:
   the readers' q/s and the saves' median time (every save commits; the
   readers never see a partial write, as tests/test_threads.py checks).

Each rate is the best of ``--rounds`` passes, engines in alternation. Ratios
are Needle over hnswlib (above 1: Needle faster).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import needle_mm as needle  # noqa: E402
from bench_hnsw import load  # noqa: E402
from benchmarks_md import command_line, publish  # noqa: E402

EF = 64


def best_rate(fn, queries: np.ndarray, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn(queries)
        best = min(best, time.perf_counter() - t)
    return len(queries) / best


def threaded_rate(make_search, queries: np.ndarray, threads: int, rounds: int, repeat: int = 10) -> float:
    """Total q/s of ``threads`` threads each running every query ``repeat`` times
    (passes of ~0.1 s or more: shorter ones measure thread start-up and GIL hand-offs)."""
    queries = np.concatenate([queries] * repeat)
    best = float("inf")
    for _ in range(rounds):
        barrier = threading.Barrier(threads + 1)

        def run():
            search = make_search()
            barrier.wait()
            for q in queries:
                search(q)

        pool = [threading.Thread(target=run) for _ in range(threads)]
        for t in pool:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in pool:
            t.join()
        best = min(best, time.perf_counter() - t0)
    return threads * len(queries) / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="siftsmall-128-euclidean")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    import hnswlib

    train, test, _, metric = load(ROOT.parent / "shared", args.dataset)
    n, dim = train.shape
    work = tempfile.mkdtemp(prefix="needle-threads-")
    path = os.path.join(work, "t.needle")
    with needle.Database.open(path) as db:
        db.create_collection("c", dim, metric).insert_many([str(i) for i in range(n)], train)
    space = {"euclidean": "l2", "cosine": "cosine", "dot": "ip"}[metric]
    hn = hnswlib.Index(space=space, dim=dim)
    hn.init_index(max_elements=n, M=16, ef_construction=200, random_seed=0)
    hn.add_items(train, np.arange(n), num_threads=2)
    hn.set_ef(EF)

    ro = needle.Database.open(path, read_only=True)
    rw = needle.Database.open(path)
    c_ro, c_rw = ro.collection("c"), rw.collection("c")
    for c in (c_ro, c_rw):
        c.search(test[0], 10, ef=EF)  # kernels loaded before any clock
    hn.knn_query(test[:1], k=10, num_threads=1)

    def needle_single(coll):
        return lambda qs: [coll.search(q, 10, ef=EF) for q in qs]

    def hnsw_single(qs):
        for q in qs:
            hn.knn_query(q, k=10, num_threads=1)

    rates = {"ro": [], "rw": [], "hnswlib": []}
    for _ in range(3):  # alternate, keep the best of each
        rates["ro"].append(best_rate(needle_single(c_ro), test, args.rounds))
        rates["rw"].append(best_rate(needle_single(c_rw), test, args.rounds))
        rates["hnswlib"].append(best_rate(hnsw_single, test, args.rounds))
    ro_r, rw_r, hn_r = (max(rates[k]) for k in ("ro", "rw", "hnswlib"))
    guard_us = (1 / rw_r - 1 / ro_r) * 1e6

    scaling = []
    for threads in (1, 2, 4):
        nd = threaded_rate(lambda: (lambda q: c_rw.search(q, 10, ef=EF)), test, threads, args.rounds)
        hw = threaded_rate(lambda: (lambda q: hn.knn_query(q, k=10, num_threads=1)), test, threads, args.rounds)
        scaling.append((threads, nd, hw))

    # 2 searching threads while a third inserts 10 records and saves, 20 times
    saves, stop, counts = [], threading.Event(), [0, 0]
    rng = np.random.default_rng(0)

    def writer():
        for i in range(20):
            c_rw.insert_many([f"new-{i}-{j}" for j in range(10)], train[rng.integers(0, n, 10)] + 0.01)
            t = time.perf_counter()
            rw.save()
            saves.append(time.perf_counter() - t)
        stop.set()

    def reader(slot):
        i = 0
        while not stop.is_set():
            c_rw.search(test[i % len(test)], 10, ef=EF)
            i += 1
        counts[slot] = i

    pool = [threading.Thread(target=reader, args=(s,)) for s in range(2)] + [threading.Thread(target=writer)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    mixed_qps = sum(counts) / (time.perf_counter() - t0)
    assert c_rw.count() == n + 200
    ro.close()
    rw.close()
    shutil.rmtree(work, ignore_errors=True)

    lines = [
        "## Threads sharing one Database",
        "",
        f"`{command_line('bench_threads.py', ap, args)}` — {args.dataset} ({n:,} x {dim}, {metric}), "
        f"single queries, k=10, ef={EF}, this 2-core machine; each rate the best of {args.rounds} passes, "
        "engines in alternation.",
        "",
        "| one thread | q/s | / hnswlib |",
        "|---|---:|---:|",
        f"| Needle, read-only Database (no lock) | {ro_r:,.0f} | {ro_r / hn_r:.2f}x |",
        f"| Needle, writable Database (view lock held shared) | {rw_r:,.0f} | {rw_r / hn_r:.2f}x |",
        f"| hnswlib | {hn_r:,.0f} | 1.00x |",
        "",
        f"The thread guard costs a writable Database's search {guard_us:.2f} us per call "
        f"({(ro_r / rw_r - 1) * 100:.1f} % at this size).",
        "",
        "| threads sharing one index | Needle q/s | hnswlib q/s | Needle / hnswlib |",
        "|---:|---:|---:|---:|",
        *[f"| {t} | {nd:,.0f} | {hw:,.0f} | {nd / hw:.2f}x |" for t, nd, hw in scaling],
        "",
        "The kernels run without the GIL, but each Needle call also spends about 16 us of Python holding it "
        "(the per-call floor in the HNSW section; hnswlib's is about 2.5 us), so Needle's threads gain less "
        "from a second core than hnswlib's. These rates vary by tens of percent between runs on this shared "
        "machine (five runs: Needle's 2 threads gave 0.9-1.9x its 1 thread); the leaner call is the "
        "quantization issue's deliverable 4.",
        "",
        f"While a third thread inserted 10 records and saved, 20 times: 2 searching threads made "
        f"{mixed_qps:,.0f} q/s together (against {scaling[1][1]:,.0f} alone, above); a save took "
        f"{np.median(saves) * 1e3:.1f} ms (median, fsyncs included). Each save re-plans the whole growing "
        "segment (its graph is copied and extended on both cores), so on 2 cores the readers lose most of "
        "the CPU while it runs; commits proportional to the change are the writes issue's work.",
        "",
    ]
    publish("## Threads sharing one Database", "\n".join(lines), args.write)


if __name__ == "__main__":
    main()
