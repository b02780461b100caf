"""Ray's overhead per batch on shards already built, for three ways of sending it out.

When the shards outnumber the cluster's CPUs, ``ShardedCollection.search_batch``
sends a batch of at least ``WAVE_MIN_QUERIES`` queries to one shard at a
time, each actor searching with a node's CPUs as threads. This times,
alternated round by round, a 1,000-query batch (``as_arrays=True``) searched

- ``shipped``: through ``ShardedCollection.search_batch`` (what users get),
- ``waves``: one shard per CPU at a time, each actor on one thread (the rule before),
- ``together``: every shard's actor at once, each on one thread,
- ``local``: the shard files opened in this process, searched one after the other,

all merged by the same function, and prints each median and each Ray
variant's overhead over ``local`` (the median of per-round ratios). Build
the shards first, e.g. with ``tools/bench_distributed.py`` or
``needle_mm.distributed.build_shards``:

    python tools/bench_ray_dispatch.py --manifest out/manifest.json [--ef 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

import needle_mm as needle
from needle_mm.distributed import ShardedCollection
from needle_mm.distributed.manifest import read_manifest
from needle_mm.distributed.sharded import merge_arrays

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--queries", default=str(ROOT.parent / "shared/data/minilm-384-cosine/test.f16.npy"))
    ap.add_argument("--n", type=int, default=1000, help="queries in the batch")
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import ray

    cores = len(os.sched_getaffinity(0))
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    plan = read_manifest(args.manifest)
    queries = np.ascontiguousarray(np.load(args.queries)[:args.n], dtype=np.float32)
    k, ef = 10, args.ef
    docs = ShardedCollection.open(args.manifest, read_only=True)
    single = ShardedCollection.open(args.manifest, read_only=True,
                                    actor_options={"runtime_env": {"env_vars": {"NUMBA_NUM_THREADS": "1"}}})
    local = [needle.Database.open(p, read_only=True).collection(plan.collection) for p in plan.shards]
    actors = single._actors

    def waves(size):
        def run():
            shared = ray.put(queries)
            parts = []
            for w in range(0, len(actors), size):
                parts += ray.get([a.search_arrays.remote(shared, k, None, ef, False, None) for a in actors[w:w + size]])
            return merge_arrays(parts, k)
        return run

    runs = {"shipped": lambda: docs.search_batch(queries, k=k, ef=ef, as_arrays=True),
            "waves": waves(cores),
            "together": waves(len(actors)),
            "local": lambda: merge_arrays([c.search_batch(queries, k=k, ef=ef, as_arrays=True) for c in local], k)}
    answers = {name: run() for name, run in runs.items()}
    assert all(np.array_equal(a[0], answers["local"][0]) for a in answers.values())  # one answer, four ways
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t)
    out = {"shards": len(plan.shards), "cpus": cores, "searching_at_once": docs.searching_at_once,
           "queries": len(queries), "ef": ef, "rounds": args.rounds,
           "median_s": {n: round(statistics.median(v), 4) for n, v in times.items()},
           "overhead_vs_local": {n: round(statistics.median(a / b for a, b in zip(times[n], times["local"])) - 1, 4)
                                 for n in ("shipped", "waves", "together")}}
    print(json.dumps(out))
    docs.close()
    single.close()


if __name__ == "__main__":
    main()
