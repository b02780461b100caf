"""Load test of `needle serve`: search requests/s and latency with 1 and 4 workers.

Builds a file from the real minilm-384 vectors (../shared/data), starts
`needle serve --workers W` for each W, and from this (second) process sends a
bounded number of search requests (k=10, metadata returned) over keep-alive
connections from several threads; reports requests/s and p50/p99 latency, and
the embedded `Collection.search` rate on the same file for scale.

    python tools/bench_server.py [--n 100000] [--requests 4000] [--concurrency 8] [--write]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "minilm-384-cosine"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(path: str, n: int) -> np.ndarray:
    sys.path.insert(0, str(ROOT))
    import needle_mm as needle

    x = np.load(DATA / "train.f16.npy")[:n].astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with needle.Database.open(path) as db:
        c = db.create_collection("docs", x.shape[1])
        c.insert_many([str(i) for i in range(n)], x, [{"bucket": i % 10} for i in range(n)])
    q = np.load(DATA / "test.f16.npy").astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def start(path: str, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "needle_mm", "serve", path, "--port", str(port),
                             "--workers", str(workers)], env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


def load(port: int, queries: np.ndarray, requests: int, concurrency: int) -> dict:
    bodies = [orjson.dumps({"vector": q.tolist(), "k": 10}) for q in queries]
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per_thread = requests // concurrency

    def worker(t: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for i in range(per_thread):
            body = bodies[(t * per_thread + i) % len(bodies)]
            t0 = time.perf_counter()
            conn.request("POST", "/collections/docs/search", body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            mine.append(time.perf_counter() - t0)
            if r.status != 200:
                with lock:
                    errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(concurrency)]
    for th in threads:  # a first round warms every worker's kernels and page cache; not measured
        th.start()
    for th in threads:
        th.join()
    latencies.clear()
    errors[0] = 0
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(concurrency)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": errors[0], "rps": len(latencies) / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def run(n: int, requests: int, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "served.needle")
        queries = build(path, n)
        import needle_mm as needle

        with needle.Database.open(path, read_only=True) as db:
            c = db.collection("docs")
            c.search(queries[0], 10)
            t0 = time.perf_counter()
            for q in queries[:1000]:
                [r.metadata for r in c.search(q, 10)]
            embedded = 1000 / (time.perf_counter() - t0)
        out = {"n": n, "concurrency": concurrency, "embedded_qps": embedded, "workers": {}}
        for workers in (1, 4):
            proc, port = start(path, workers)
            try:
                out["workers"][workers] = load(port, queries, requests, concurrency)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            print(workers, out["workers"][workers], flush=True)
    return out


def markdown(r: dict, command: str) -> str:
    rows = "\n".join(
        f"| {w} | {v['rps']:,.0f} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} | {v['errors']} |"
        for w, v in r["workers"].items())
    one, four = r["workers"][1]["rps"], r["workers"][4]["rps"]
    return f"""## Server load (issue 7)

`{command}` — `needle serve` on a file of {r['n']:,} real minilm-384 vectors; a second process sends
search requests (k=10, ids + distances + metadata as JSON) from {r['concurrency']} threads over keep-alive
connections; {r['workers'][1]['requests']:,} requests per run after a warm-up.

| workers | requests/s | p50 ms | p99 ms | errors |
|---|---|---|---|---|
{rows}

4 workers / 1 worker: {four / one:.2f}× on this 2-core machine (the load generator shares the cores).
Embedded `Collection.search` on the same file, one thread, metadata decoded: {r['embedded_qps']:,.0f} queries/s —
HTTP + JSON costs the difference.
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    result = run(args.n, args.requests, args.concurrency)
    print(json.dumps(result, indent=1))
    sys.path.insert(0, str(Path(__file__).parent))
    from benchmarks_md import command_line, publish

    publish("## Server load", markdown(result, command_line("bench_server.py", ap, args)), args.write)


if __name__ == "__main__":
    main()
