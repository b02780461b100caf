"""Memory of N processes sharing one file, measured from /proc (Pss), not claimed.

    pip install ".[bench]"
    python tools/bench_memory.py [--n 1000000] [--dim 128] [--procs 8] [--workers 4]

Builds (once, cached in bench-out/) a file of n random float32 vectors with
an HNSW graph, and an hnswlib index of the same vectors. Then, each in one
run:

- ``procs`` Needle reader processes open the file read-only and search it
  (HNSW queries plus one exact scan, which touches every vector);
- ``procs`` hnswlib processes load the index and search it;
- a gunicorn server with ``workers`` workers serving a small search app over
  the file, after a few hundred HTTP searches.

For every process it reads ``Pss`` (its fair share of every page, shared
pages divided among the processes mapping them) from
``/proc/PID/smaps_rollup``, and for Needle also the Pss of the mapping of the
.needle file alone from ``/proc/PID/smaps``. A bare interpreter with the same
imports gives the per-process baseline. Writes bench-out/memory.json and the
memory section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from benchmarks_md import write_section  # noqa: E402

READER = r"""
import sys, numpy as np
kind, path, dim = sys.argv[1], sys.argv[2], int(sys.argv[3])
queries = np.random.default_rng(1).normal(size=(200, dim)).astype(np.float32)
if kind == "needle":
    import needle_mm as needle
    db = needle.Database.open(path, read_only=True)
    c = db.collection("c")
    for q in queries:
        c.search(q, 10)
    c.search(queries[0], 10, exact=True)  # touches every vector
elif kind == "hnswlib":
    import hnswlib
    index = hnswlib.Index("l2", dim)
    index.load_index(path)
    index.set_ef(64)
    index.knn_query(queries, 10)
elif kind == "baseline-needle":  # the same kernels loaded, on a file of 100 records
    import needle_mm as needle
    c = needle.Database.open(path, read_only=True).collection("c")
    c.search(queries[0], 10)
    c.search(queries[0], 10, exact=True)
elif kind == "baseline-hnswlib":
    import hnswlib
print("READY", flush=True)
sys.stdin.readline()
"""


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return int(re.search(r"^Pss:\s+(\d+) kB", f.read(), re.M).group(1))


def file_mapping_kb(pid: int, path: str) -> tuple[int, int]:
    """(Pss, Rss) in kB of the mappings of ``path`` in process ``pid``."""
    pss = rss = 0
    inside = False
    real = os.path.realpath(path)
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                inside = line.rstrip("\n").endswith(real)
            elif inside and line.startswith("Pss:"):
                pss += int(line.split()[1])
            elif inside and line.startswith("Rss:"):
                rss += int(line.split()[1])
    return pss, rss


def measure_readers(kind: str, path: str, dim: int, procs: int) -> dict:
    """Start ``procs`` readers of one kind together; Pss of each once all are ready."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    children = [subprocess.Popen([sys.executable, "-c", READER, kind, path, str(dim)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=env) for _ in range(procs)]
    try:
        for child in children:
            line = child.stdout.readline().strip()
            if line != "READY":
                raise RuntimeError(f"{kind} reader failed (exit {child.wait()})")
        pss = [pss_kb(c.pid) for c in children]
        files = [file_mapping_kb(c.pid, path) for c in children] if kind == "needle" else []
    finally:
        for child in children:
            child.communicate("\n")
    out = {"procs": procs, "pss_kb": pss, "pss_sum_kb": sum(pss)}
    if files:
        out["file_pss_kb"] = [p for p, _ in files]
        out["file_rss_kb"] = [r for _, r in files]
        out["file_pss_sum_kb"] = sum(p for p, _ in files)
    return out


APP = r"""
import os, json, numpy as np, needle_mm as needle
db = needle.Database.open(os.environ["NEEDLE_BENCH_PATH"], read_only=True)
DIM = int(os.environ["NEEDLE_BENCH_DIM"])

def app(environ, start_response):
    seed = int(environ.get("QUERY_STRING") or 0)
    q = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    hits = db.collection("c").search(q, 10)
    body = json.dumps({"ids": [h.id for h in hits], "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"""


def measure_gunicorn(path: str, dim: int, workers: int, requests: int, tmp: Path) -> dict:
    app_dir = tmp / "app"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "needle_search_app.py").write_text(APP)
    port = 18000 + os.getpid() % 1000
    env = dict(os.environ, PYTHONPATH=f"{app_dir}{os.pathsep}{ROOT}", NEEDLE_BENCH_PATH=path,
               NEEDLE_BENCH_DIM=str(dim))
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}",
                               "needle_search_app:app"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        pids = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/?0", timeout=5).read()
                break
            except OSError:
                time.sleep(0.2)
        for i in range(requests):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/?{i}", timeout=30) as r:
                pids.add(json.loads(r.read())["pid"])
        worker_pids = [int(p) for p in Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()]
        pss = [pss_kb(p) for p in worker_pids]
        files = [file_mapping_kb(p, path) for p in worker_pids]
        return {"workers": workers, "answered_by": len(pids), "requests": requests, "worker_pss_kb": pss,
                "worker_pss_sum_kb": sum(pss), "master_pss_kb": pss_kb(server.pid),
                "file_pss_sum_kb": sum(p for p, _ in files), "file_rss_kb": [r for _, r in files]}
    finally:
        server.terminate()
        server.wait(timeout=60)


def build(n: int, dim: int, out: Path) -> tuple[Path, Path, Path]:
    import hnswlib

    import needle_mm as needle

    path, hpath = out / f"mem-{n}x{dim}.needle", out / f"mem-{n}x{dim}.hnswlib"
    x = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    tiny = out / f"mem-100x{dim}.needle"
    if not tiny.exists():
        with needle.Database.open(tiny) as db:
            db.create_collection("c", dim, "euclidean").insert_many([str(i) for i in range(100)], x[:100])
    if not path.exists():
        tmp = path.with_suffix(".building")
        t = time.perf_counter()
        with needle.Database.open(tmp) as db:
            db.create_collection("c", dim, "euclidean").insert_many([str(i) for i in range(n)], x)
        os.replace(tmp, path)
        print(f"built {path.name} in {time.perf_counter() - t:.0f} s", flush=True)
    if not hpath.exists():
        index = hnswlib.Index("l2", dim)
        index.init_index(n, 16, 200)
        index.add_items(x)
        index.save_index(str(hpath))
    return path, hpath, tiny


def report(r: dict, command: str) -> str:
    mb = 1024.0
    size = r["file_bytes"] / 2**20
    base_n, base_h = r["baseline_needle_kb"] / mb, r["baseline_hnswlib_kb"] / mb
    nd, hl = r["needle"], r["hnswlib"]
    p = nd["procs"]
    lines = [
        "## Memory (issue 4): many processes, one file",
        "",
        f"`{command}` — {r['n']:,} × {r['dim']} float32 (random normal; the memory of a file does not depend "
        f"on its values), M=16. Pss from `/proc/PID/smaps_rollup` (shared pages divided among the processes "
        f"that map them), read while all processes are alive.",
        "",
        "| what | value |",
        "|---|---|",
        f"| Needle file size | {size:,.0f} MB |",
        f"| {p} Needle readers: Pss of the file mapping, summed | {nd['file_pss_sum_kb'] / mb:,.0f} MB = "
        f"**{nd['file_pss_sum_kb'] / mb / size:.2f}× the file** (one copy, in the page cache) |",
        f"| {p} Needle readers: total Pss, summed | {nd['pss_sum_kb'] / mb:,.0f} MB "
        f"(baseline: {base_n:,.0f} MB for {p} processes with the same kernels loaded on a 100-record file) |",
        f"| {p} hnswlib processes (`load_index`): total Pss, summed | {hl['pss_sum_kb'] / mb:,.0f} MB "
        f"(baseline: {base_h:,.0f} MB for {p} processes that import hnswlib) |",
        f"| index memory = total − baseline: Needle / hnswlib | {nd['pss_sum_kb'] / mb - base_n:,.0f} MB "
        f"({(nd['pss_sum_kb'] / mb - base_n) / size:.2f}× the file) / {hl['pss_sum_kb'] / mb - base_h:,.0f} MB "
        f"({(hl['pss_sum_kb'] / mb - base_h) / size:.2f}× the file) |",
    ]
    g = r.get("gunicorn")
    if g:
        lines.append(f"| gunicorn, {g['workers']} workers ({g['requests']} searches over HTTP, answered by "
                     f"{g['answered_by']} workers): file Pss summed | {g['file_pss_sum_kb'] / mb:,.0f} MB = "
                     f"{g['file_pss_sum_kb'] / mb / size:.2f}× the file; workers' total Pss "
                     f"{g['worker_pss_sum_kb'] / mb:,.0f} MB |")
    lines += ["", "Each Needle reader maps the file; the kernel keeps one copy of each page in its page cache "
              "however many processes map it. Each hnswlib process reads the index into its own private memory.",
              ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    out = ROOT / "bench-out"
    out.mkdir(exist_ok=True)
    path, hpath, tiny = build(a.n, a.dim, out)
    r = {"n": a.n, "dim": a.dim, "file_bytes": path.stat().st_size}
    # baselines: the same number of processes with the same code loaded, no big file
    r["baseline_needle_kb"] = measure_readers("baseline-needle", str(tiny), a.dim, a.procs)["pss_sum_kb"]
    r["baseline_hnswlib_kb"] = measure_readers("baseline-hnswlib", str(hpath), a.dim, a.procs)["pss_sum_kb"]
    r["needle"] = measure_readers("needle", str(path), a.dim, a.procs)
    r["hnswlib"] = measure_readers("hnswlib", str(hpath), a.dim, a.procs)
    try:
        r["gunicorn"] = measure_gunicorn(str(path), a.dim, a.workers, a.requests, out)
    except (OSError, RuntimeError) as exc:
        print("gunicorn run skipped:", exc)
    (out / "memory.json").write_text(json.dumps(r, indent=1))
    command = "python tools/bench_memory.py" + "".join(
        f" --{k} {v}" for k, v in (("n", a.n), ("dim", a.dim), ("procs", a.procs)) if v != ap.get_default(k))
    section = report(r, command)
    print(section)
    if not a.no_write:
        write_section('## Memory (issue 4)', section)


if __name__ == "__main__":
    main()
