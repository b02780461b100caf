"""Foundation benchmarks: write throughput, save, file size, open time, exact search.

    python tools/bench_foundation.py [--shared ../shared] [--out bench-out/foundation.json]

Measures, on the real 100,000 x 384 MiniLM sentence embeddings:
- insert one record at a time and insert_many (records/s), with small metadata;
- save() time (which includes inserting the records into the HNSW graph)
  and file size vs raw float32;
- open time of a saved 100k x 384 and a 1M x 128 file in a fresh process
  (median of 5 fresh interpreters, import excluded);
- exact search (``exact=True``) queries/s (k=10) vs numpy (BLAS
  matrix-vector + argpartition) on the same data in the same run, one query
  per call and batched.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import needle_mm as needle  # noqa: E402


def load_minilm(shared: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    base = shared / "data" / "minilm-384-cosine"
    x = np.load(base / "train.f16.npy")[:n].astype(np.float32)
    q = np.load(base / "test.f16.npy").astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q


def open_time(path: str, collection: str, runs: int = 5) -> float:
    code = (
        "import sys, time, needle_mm as needle\n"
        "t = time.perf_counter()\n"
        "db = needle.Database.open(sys.argv[1], read_only=True)\n"
        "c = db.collection(sys.argv[2]); n = c.count()\n"
        "print(time.perf_counter() - t)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code, path, collection], capture_output=True, text=True,
                             env=env, check=True)
        times.append(float(out.stdout.strip()))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--out", default=str(ROOT / "bench-out" / "foundation.json"))
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--skip-1m", action="store_true")
    args = ap.parse_args()
    x, q = load_minilm(Path(args.shared), args.n)
    n, dim = x.shape
    ids = [f"doc-{i}" for i in range(n)]
    metas = [{"i": i, "category": ("books", "music", "film")[i % 3]} for i in range(n)]
    tmp = tempfile.mkdtemp(prefix="needle-bench-")
    res: dict = {"n": n, "dim": dim}

    # insert one at a time
    path = os.path.join(tmp, "one.needle")
    db = needle.Database.open(path)
    c = db.create_collection("c", dim)
    t = time.perf_counter()
    for i in range(n):
        c.insert(ids[i], x[i], metas[i])
    res["insert_one_per_s"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    db.save()
    res["save_after_insert_s"] = time.perf_counter() - t
    db.close()

    # insert_many
    path = os.path.join(tmp, "many.needle")
    db = needle.Database.open(path)
    c = db.create_collection("c", dim)
    t = time.perf_counter()
    for s in range(0, n, 10_000):
        c.insert_many(ids[s:s + 10_000], x[s:s + 10_000], metas[s:s + 10_000])
    res["insert_many_per_s"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    db.save()
    res["save_s"] = time.perf_counter() - t
    res["file_bytes"] = os.path.getsize(path)
    res["raw_f32_bytes"] = n * dim * 4
    res["file_vs_raw"] = res["file_bytes"] / res["raw_f32_bytes"]

    # streaming with a save every 10,000 (the guide's pattern)
    path_s = os.path.join(tmp, "stream.needle")
    dbs = needle.Database.open(path_s)
    cs = dbs.create_collection("c", dim)
    t = time.perf_counter()
    for i in range(n):
        cs.insert(ids[i], x[i], metas[i])
        if (i + 1) % 10_000 == 0:
            dbs.save()
    dbs.save()
    res["stream_insert_save_every_10k_per_s"] = n / (time.perf_counter() - t)
    res["stream_file_vs_raw"] = os.path.getsize(path_s) / res["raw_f32_bytes"]
    res["stream_segments"] = len(dbs.engine.snapshot.collection("c").segments)
    dbs.close()

    res["open_s_100k_384"] = open_time(path, "c")

    # exact search vs numpy
    k = 10
    nq = 200
    for qq in q[:5]:
        c.search(qq, k, exact=True)
    t = time.perf_counter()
    for qq in q[:nq]:
        c.search(qq, k, exact=True)
    res["exact_qps_single"] = nq / (time.perf_counter() - t)
    c.search_batch(q[:10], k, exact=True)
    t = time.perf_counter()
    c.search_batch(q[:nq], k, exact=True)
    res["exact_qps_batch"] = nq / (time.perf_counter() - t)
    t = time.perf_counter()
    for qq in q[:nq]:
        s = x @ qq
        top = np.argpartition(-s, k)[:k]
        top[np.argsort(-s[top])]
    res["numpy_qps_single"] = nq / (time.perf_counter() - t)
    t = time.perf_counter()
    s = q[:nq] @ x.T
    top = np.argpartition(-s, k, axis=1)[:, :k]
    res["numpy_qps_batch"] = nq / (time.perf_counter() - t)
    res["exact_vs_numpy_single"] = res["exact_qps_single"] / res["numpy_qps_single"]
    res["exact_vs_numpy_batch"] = res["exact_qps_batch"] / res["numpy_qps_batch"]
    db.close()

    # 1M x 128 open time (synthetic vectors: only the open cost is measured)
    if args.skip_1m:
        return finish(args, res)
    path_m = os.path.join(tmp, "m.needle")
    rng = np.random.default_rng(0)
    t_m = time.perf_counter()
    with needle.Database.open(path_m) as dbm:
        cm = dbm.create_collection("c", 128, "euclidean")
        for s in range(0, 1_000_000, 100_000):
            cm.insert_many([str(i) for i in range(s, s + 100_000)],
                           rng.standard_normal((100_000, 128), dtype=np.float32))
            dbm.save()
    res["build_1m_128_s"] = time.perf_counter() - t_m
    res["file_bytes_1m_128"] = os.path.getsize(path_m)
    res["open_s_1m_128"] = open_time(path_m, "c")
    tiny = os.path.join(tmp, "tiny.needle")
    with needle.Database.open(tiny) as dbt:
        dbt.create_collection("c", 128).insert("a", np.ones(128))
    res["open_s_1_record"] = open_time(tiny, "c")

    finish(args, res)


def finish(args, res) -> None:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
