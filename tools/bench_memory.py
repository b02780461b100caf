"""Memory and start-up of many processes reading one index, measured from /proc, not claimed.

    pip install -e ".[bench,server]"
    python tools/bench_memory.py --n 1000000 --dim 128 --write

Builds once, cached in bench-out/ (tools/memory_build.py), n random float32
vectors indexed by Needle, hnswlib, usearch, FAISS (IndexHNSWFlat) and Annoy.
Then:

1. Independently started readers (tools/memory_children.py: import, open
   read-only, 200 single queries, a batch of 100, an exact scan where the
   library has one), 1, 4, 8 and 16 at a time, for Needle on the
   ahead-of-time kernels (the default) and on numba's JIT (NEEDLE_MM_JIT=1),
   and for each other library. While all are alive, every process's
   /proc/PID/smaps gives its Pss (each page's cost divided among the
   processes mapping it), the Pss of the index file's own mapping, and its
   private pages; the same number of bare interpreters (``import numpy``,
   nothing else) gives the baseline subtracted.
2. ``needle serve FILE --workers N`` (the parent preloads and forks), after a
   few hundred HTTP searches over fresh connections: parent + workers.
3. Fresh processes: import, open and first-query time, from the top of the
   child script (interpreter start excluded), medians of alternating runs,
   with a warm and a cold kernel cache (cold: NUMBA_CACHE_DIR an empty
   directory; the AOT kernels have no cache, so the same setting shows they
   need none).

Children run with their bytecode in a scratch directory
(PYTHONPYCACHEPREFIX), not the repository, as an installed package has it.
Writes bench-out/memory.json and, with --write, the Memory section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from benchmarks_md import publish  # noqa: E402
from memory_build import ANNOY_TREES, EF_CONSTRUCTION, KINDS, M, build  # noqa: E402

CHILD = str(ROOT / "tools" / "memory_children.py")
NEEDLE_CLI = str(Path(sys.executable).parent / "needle")
MB = 1024.0  # kB per MB
TARGET_RATIO, TARGET_PRIVATE_MB, TARGET_WARM_S, TARGET_COLD_S = 1.2, 30.0, 0.150, 1.0

# ----------------------------------------------------------------- /proc


def smaps(pid: int, index_path: str) -> dict:
    """kB totals of one process: all mappings, and the index file's mappings alone."""
    real = os.path.realpath(index_path)
    tot = dict.fromkeys(("Pss", "Rss", "Private_Clean", "Private_Dirty", "Anonymous"), 0)
    idx = dict.fromkeys(("Pss", "Rss", "Private_Clean", "Private_Dirty"), 0)
    numba = False
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            field, _, rest = line.partition(" ")
            if not field.endswith(":"):  # a mapping's header line: address perms offset dev inode [path]
                name = line.split(None, 5)[5].strip() if len(line.split(None, 5)) > 5 else ""
                inside = name == real
                numba = numba or "/numba/" in name or "/llvmlite/" in name
                continue
            key = field[:-1]
            if key in tot:
                kb = int(rest.split()[0])
                tot[key] += kb
                if inside and key in idx:
                    idx[key] += kb
    return {"pss": tot["Pss"], "rss": tot["Rss"], "private": tot["Private_Clean"] + tot["Private_Dirty"],
            "private_dirty": tot["Private_Dirty"], "anonymous": tot["Anonymous"],
            "file_pss": idx["Pss"], "file_rss": idx["Rss"],
            "file_private": idx["Private_Clean"] + idx["Private_Dirty"], "numba_mapped": numba}


def mem_available_kb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def child_env(scratch: Path, **extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONPYCACHEPREFIX=str(scratch / "pycache"), **extra)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


# ----------------------------------------------------------------- 1. independent readers


def run_group(argv: list[str], count: int, env: dict, index_path: str) -> dict:
    """Start ``count`` copies of ``argv`` together; read their memory once all are ready."""
    children = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                for _ in range(count)]
    try:
        infos = []
        for child in children:
            line = child.stdout.readline()
            if not line.strip():
                raise RuntimeError(f"{argv[2:4]} failed (exit {child.wait()})")
            infos.append(json.loads(line))
        procs = [smaps(c.pid, index_path) for c in children]
    finally:
        for child in children:
            try:
                child.communicate("\n", timeout=120)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                child.kill()
    return {"procs": procs, "children": infos}


def summarize(group: dict, bare: dict, file_bytes: int) -> dict:
    """Sums beyond the same number of bare interpreters, and per-process private memory beyond one."""
    procs, base = group["procs"], bare["procs"]
    n = len(procs)
    size_kb = file_bytes / 1024
    total = sum(p["pss"] for p in procs)
    base_total = sum(p["pss"] for p in base)
    file_pss = sum(p["file_pss"] for p in procs)
    beyond = total - base_total
    # private = Private_Dirty: pages no other process can share (heap, anonymous memory, written
    # data); the index file is mapped read-only, so none of its pages are in it. uss adds the clean
    # private pages outside the index mapping (code only this process maps: shared once there are two).
    private = statistics.mean(p["private_dirty"] for p in procs)
    base_private = statistics.mean(p["private_dirty"] for p in base)
    uss = statistics.mean(p["private"] - p["file_private"] for p in procs) - statistics.mean(p["private"] for p in base)
    anon = statistics.mean(p["anonymous"] for p in procs) - statistics.mean(p["anonymous"] for p in base)
    out = {"processes": n, "pss_sum_kb": total, "bare_pss_sum_kb": base_total, "beyond_bare_kb": beyond,
           "beyond_bare_x_file": beyond / size_kb, "file_pss_sum_kb": file_pss, "file_pss_x_file": file_pss / size_kb,
           "rest_beyond_bare_kb": beyond - file_pss, "rest_beyond_bare_x_file": (beyond - file_pss) / size_kb,
           "private_per_proc_beyond_bare_kb": private - base_private,
           "anonymous_per_proc_beyond_bare_kb": anon, "uss_per_proc_beyond_bare_kb": uss,
           "file_rss_kb": [p["file_rss"] for p in procs],
           "numba_mapped": sum(p["numba_mapped"] for p in procs)}
    backends = sorted({c.get("backend") for c in group.get("children", []) if c.get("backend")})
    if backends:
        out["backend"] = backends
    return out


# ----------------------------------------------------------------- 2. needle serve


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:  # a fresh connection each time: spread over workers
        return json.loads(r.read())


def measure_serve(path: str, dim: int, workers: int, requests: int, env: dict) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([NEEDLE_CLI, "serve", path, "--workers", str(workers), "--port", str(port),
                               "--read-only"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        started = time.monotonic()
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"needle serve exited: {server.stderr.read()[-500:]}")
            try:
                urllib.request.urlopen(base + "/health", timeout=5).read()
                break
            except OSError:
                if time.monotonic() - started > 180:
                    raise RuntimeError("needle serve did not come up in 180 s") from None
                time.sleep(0.2)
        up_s = time.monotonic() - started
        rng = np.random.default_rng(2)
        url = base + "/collections/c/search"
        bodies = [{"vector": rng.normal(size=dim).astype(np.float32).tolist(), "k": 10} for _ in range(requests)]
        bodies += [{"vectors": rng.normal(size=(10, dim)).astype(np.float32).tolist(), "k": 10} for _ in range(20)]
        bodies += [{"vector": rng.normal(size=dim).astype(np.float32).tolist(), "k": 10, "exact": True}
                   for _ in range(2 * workers)]
        kids = [int(p) for p in Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()]
        pids = [server.pid, *kids] if workers > 1 else [server.pid]
        before = [cpu_ticks(p) for p in pids]
        t = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda b: post(url, b), bodies))
        http_s = time.monotonic() - t
        busy = [cpu_ticks(p) - b for p, b in zip(pids, before)]
        procs = [smaps(p, path) for p in pids]
        workers_busy = busy[1:] if workers > 1 else busy
        return {"workers": workers, "processes": len(pids), "procs": procs, "requests": len(bodies),
                "answered_by": sum(b >= 2 for b in workers_busy), "cpu_ticks": busy, "up_s": up_s, "http_s": http_s}
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


# ----------------------------------------------------------------- 3. fresh process to first answer


def first_answer(configs: dict, paths: dict, dim: int, runs: int) -> dict:
    """Median seconds per config over ``runs`` alternating runs (after one untimed run each)."""
    results = {name: [] for name in configs}
    for r in range(runs + 1):
        for name, (kind, env_fn) in configs.items():
            env = env_fn()
            out = subprocess.run([sys.executable, CHILD, "first", kind, str(paths[kind]), str(dim)], env=env,
                                 capture_output=True, text=True, timeout=600)
            if out.returncode:
                raise RuntimeError(f"{name}: {out.stderr[-800:]}")
            if r:  # run 0 warms the page cache, bytecode and (warm configs) the numba cache
                results[name].append(json.loads(out.stdout))
    med = {}
    for name, rows in results.items():
        med[name] = {key: statistics.median(row[key] for row in rows) for key in
                     ("numpy_s", "import_s", "open_s", "first_query_s", "total_s", "beyond_numpy_s", "cpu_s")}
        med[name]["runs"] = len(rows)
        med[name]["numba_loaded"] = sorted({row["numba_loaded"] for row in rows})
        if any("backend" in row for row in rows):
            med[name]["backend"] = sorted({row["backend"] for row in rows})
    return med


# ----------------------------------------------------------------- report


def fmt_mb(kb: float) -> str:
    return f"{kb / MB:,.0f}" if abs(kb) >= 10 * MB else f"{kb / MB:,.1f}"


LABEL = {"needle-aot": "Needle, AOT kernels", "needle-jit": "Needle, JIT (`NEEDLE_MM_JIT=1`)",
         "hnswlib": "hnswlib `load_index`", "usearch": "usearch `restore(view=True)`",
         "faiss": "FAISS HNSWFlat `IO_FLAG_MMAP_IFC`", "annoy": "Annoy `load` (mmap)",
         "serve": "`needle serve --workers N` (parent + workers)"}


def report(r: dict) -> str:
    counts = r["counts"]
    lines = [
        "## Memory (issues 4, 19): many processes, one file",
        "",
        " then ".join(f"`{inv['command']}` ({inv['when']}, load average {inv['load_before']} before, "
                      f"{inv['load_after']} after)" for inv in r["invocations"]) +
        f" — {r['n']:,} × {r['dim']} float32, random normal vectors (memory does not depend on the "
        f"values), M={M}, ef_construction={EF_CONSTRUCTION} in every graph (Annoy: {ANNOY_TREES} trees), on "
        f"this shared {r['cpus']}-core machine while other work ran (the load averages above: timings are "
        f"noisy, memory is not). Pss from `/proc/PID/smaps` while all processes are alive: each page's cost "
        f"divided among the processes that map it, so a sum over processes counts a shared page once.",
        "",
        "Each reader is started independently (`tools/memory_children.py`): imports the library, opens the "
        "index read-only, runs 200 single queries, one batch of 100, and one exact scan over every vector "
        "where the library has one (Needle `exact=True`, usearch `exact=True`, FAISS's flat storage; hnswlib "
        "holds its whole index in private memory anyway; Annoy has none, so its readers touch only what its "
        "trees visit). The baseline is the same number of bare interpreters (`python -c \"import numpy\"`, "
        "idle).",
        "",
        "Index files: " + ", ".join(f"{k} {v / 2**20:,.0f} MB" for k, v in r["file_bytes"].items()) + ".",
        "",
        "**Summed Pss beyond the bare interpreters, as a multiple of the library's own index file; "
        "then each process's private memory beyond a bare interpreter** (private = Private_Dirty: the "
        "heap and anonymous memory no other process shares):",
        "",
        "| processes | " + " | ".join(str(c) for c in counts) + " |",
        "|---|" + "---|" * len(counts),
    ]
    for key in ("needle-aot", "needle-jit", "serve", "hnswlib", "usearch", "faiss", "annoy"):
        rows = r["readers"].get(key) if key != "serve" else r.get("serve")
        if not rows:
            continue
        cells = []
        for c in counts:
            s = rows.get(str(c))
            if s is None:
                cells.append("—")
            elif "skipped" in s:
                cells.append(f"skipped ({s['skipped']})")
            else:
                ran = s.get("backend")
                odd = f" [ran on {'/'.join(ran)}]" if ran and ran != [key[-3:]] else ""
                cells.append(f"{s['beyond_bare_x_file']:.2f}× ({fmt_mb(s['beyond_bare_kb'])} MB); "
                             f"{fmt_mb(s['private_per_proc_beyond_bare_kb'])} MB each{odd}")
        lines.append(f"| {LABEL[key]} | " + " | ".join(cells) + " |")
    eight = str(8 if 8 in counts else counts[-1])
    lines += ["", f"**{eight} processes, split**: the index file's mapping (file-backed Pss, summed) and the "
              f"rest beyond the bare interpreters (heap, anonymous memory, code), MB and × the file:", "",
              "| | file-backed Pss | rest beyond bare | total beyond bare | per process: private / anonymous "
              "beyond bare | numba mapped |", "|---|---|---|---|---|---|"]
    for key in ("needle-aot", "needle-jit", "serve", "hnswlib", "usearch", "faiss", "annoy"):
        rows = r["readers"].get(key) if key != "serve" else r.get("serve")
        s = (rows or {}).get(eight)
        if not s or "skipped" in s:
            continue
        lines.append(f"| {LABEL[key]} | {fmt_mb(s['file_pss_sum_kb'])} MB ({s['file_pss_x_file']:.2f}×) | "
                     f"{fmt_mb(s['rest_beyond_bare_kb'])} MB ({s['rest_beyond_bare_x_file']:.2f}×) | "
                     f"{fmt_mb(s['beyond_bare_kb'])} MB ({s['beyond_bare_x_file']:.2f}×) | "
                     f"{fmt_mb(s['private_per_proc_beyond_bare_kb'])} / "
                     f"{fmt_mb(s['anonymous_per_proc_beyond_bare_kb'])} MB | "
                     f"{s['numba_mapped']} of {s['processes']} |")
    serve = r.get("serve") or {}
    if serve:
        lines += ["", "`needle serve`: " + "; ".join(
            f"{w} worker{'s' * (int(w) > 1)}: {s['requests']} HTTP searches answered by {s['answered_by']} "
            f"of them, up in {s['up_s']:.1f} s" for w, s in serve.items() if "skipped" not in s) +
            ". With 1 worker there is no parent (uvicorn runs in the one process); with more, the parent "
            "(which preloaded) is counted, against N bare interpreters."]
    f = r.get("first_answer")
    if f:
        lines += ["", f"**Fresh process to first answer** (median of {next(iter(f.values()))['runs']} "
                  "alternating runs, ms; from the top of the child script, interpreter start excluded; "
                  "import includes numpy's; cold = `NUMBA_CACHE_DIR` an empty directory; CPU time = the "
                  "process's user + system time over the same span, all threads, less sensitive than the wall "
                  "clock to the other work on the machine):", "",
                  "| | import (numpy) | open | first query | total | total less numpy's import | CPU time | kernels | "
                  "numba loaded |", "|---|---|---|---|---|---|---|---|---|"]
        for name, m in f.items():
            lines.append(f"| {name} | {m['import_s'] * 1e3:.0f} ({m['numpy_s'] * 1e3:.0f}) | "
                         f"{m['open_s'] * 1e3:.1f} | {m['first_query_s'] * 1e3:.1f} | **{m['total_s'] * 1e3:.0f}** | "
                         f"{m['beyond_numpy_s'] * 1e3:.0f} | {m['cpu_s'] * 1e3:.0f} | "
                         f"{'/'.join(m.get('backend', ['—']))} | {'yes' if True in m['numba_loaded'] else 'no'} |")
        aot = f.get("Needle AOT, warm")
        if aot:
            lines += ["", f"Of Needle's warm {aot['total_s'] * 1e3:.0f} ms on the AOT kernels, numpy's import is "
                      f"{aot['numpy_s'] * 1e3:.0f} ms and Needle's own import, open and first query "
                      f"{aot['beyond_numpy_s'] * 1e3:.0f} ms. \"Cold\" is an empty numba cache only: the bytecode "
                      "(in the children's PYTHONPYCACHEPREFIX) and the OS page cache were warm in every timed run; a "
                      "process right after `pip install` also reads the .so and .py files from disk, which this "
                      "does not measure (dropping the page cache of a shared machine was not an option)."]
    lines += ["", "**Against issue 19's targets** (Needle, 8 independent readers):", ""]
    lines += [f"- {t}" for t in r["targets"]]
    lines += ["", "A Needle reader maps the file; the kernel keeps one copy of each page in its page cache however "
              "many processes map it, so the file-backed Pss sums to at most one file, and what grows with "
              "the number of readers is each one's private memory (on the JIT, numba and LLVM's). hnswlib "
              "reads its whole index into each process's private memory. FAISS 1.15 maps an IndexHNSWFlat "
              "with `IO_FLAG_MMAP_IFC` (vectors and graph stay in the page cache); usearch's `view=True` maps "
              "the file but each process still builds tens of MB of its own. Annoy never scans: its "
              "file-backed Pss is what its trees touched plus the kernel's fault-around of neighbouring "
              "cached pages. Fresh-process times are wall clock under the load averages above; the CPU "
              "time column is the steadier comparison.", ""]
    return "\n".join(lines)


def targets(r: dict) -> list[str]:
    out = []
    for key in ("needle-aot", "needle-jit"):
        s = r["readers"].get(key, {}).get("8")
        if not s or "skipped" in s:
            continue
        ratio, priv = s["beyond_bare_x_file"], s["private_per_proc_beyond_bare_kb"] / MB
        out.append(f"{LABEL[key]}: summed Pss beyond bare {ratio:.2f}× the file (target ≤ {TARGET_RATIO}×: "
                   f"{'met' if ratio <= TARGET_RATIO else 'missed'}); private per reader {priv:.1f} MB "
                   f"(target ≤ {TARGET_PRIVATE_MB:.0f} MB: {'met' if priv <= TARGET_PRIVATE_MB else 'missed'})")
    f = r.get("first_answer", {})
    for name, limit, what in (("Needle AOT, warm", TARGET_WARM_S, "warm"), ("Needle AOT, cold", TARGET_COLD_S, "cold"),
                              ("Needle JIT, warm", TARGET_WARM_S, "warm"), ("Needle JIT, cold", TARGET_COLD_S, "cold")):
        if name in f:
            t = f[name]["total_s"]
            out.append(f"{name}: fresh process to first answer {t * 1e3:.0f} ms (target ≤ {limit * 1e3:.0f} ms "
                       f"{what}: {'met' if t <= limit else 'missed'})")
    return out


def aot_state(env: dict) -> dict:
    """Which backend a fresh reader gets now, and why (the public ``backend()``; its reason if the router
    says one)."""
    code = ("import json\nfrom needle_mm import _kernels\nout = {'backend': _kernels.backend()}\n"
            "try:\n    from needle_mm._kernels import api\n    out['reason'] = api.backend_info()['reason']\n"
            "except Exception:\n    pass\nprint(json.dumps(out))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {"backend": "unknown", "reason": done.stderr[-300:]}


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


# ----------------------------------------------------------------- main


VARIANTS = {"needle-aot": ("needle", {}), "needle-jit": ("needle", {"NEEDLE_MM_JIT": "1"}),
            **{k: (k, {}) for k in KINDS if k != "needle"}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--counts", default="1,4,8,16", help="process counts")
    ap.add_argument("--requests", type=int, default=400, help="single-vector HTTP searches per serve run")
    ap.add_argument("--runs", type=int, default=5, help="fresh-process runs per configuration")
    ap.add_argument("--only", default="", help="comma-separated parts to run: readers,serve,first (default all); "
                    "results of the others are kept from bench-out/memory.json when it has the same n and dim")
    ap.add_argument("--variants", default="", help="comma-separated: " + ",".join(VARIANTS) + " (default all)")
    ap.add_argument("--write", action="store_true", help="write the Memory section of BENCHMARKS.md")
    a = ap.parse_args()
    counts = [int(c) for c in a.counts.split(",")]
    parts = set(a.only.split(",")) if a.only else {"readers", "serve", "first"}
    variants = {k: VARIANTS[k] for k in (a.variants.split(",") if a.variants else VARIANTS)}
    kinds = {kind for kind, _ in variants.values()} | ({"needle"} if "serve" in parts else set())
    out = ROOT / "bench-out"
    command = f"python tools/bench_memory.py --n {a.n} --dim {a.dim}" + "".join(
        f" --{k} {getattr(a, k)}" for k in ("counts", "requests", "runs", "only", "variants")
        if getattr(a, k) != ap.get_default(k)) + (" --write" if a.write else "")
    paths = build(out, a.n, a.dim, [k for k in KINDS if k in kinds])
    scratch = Path(tempfile.mkdtemp(prefix="needle-bench-memory-"))
    for kind in kinds:  # the page cache holds every index before anything is measured
        with open(paths[kind], "rb") as f:
            while f.read(1 << 24):
                pass
    r = {}
    if (out / "memory.json").exists() and (a.only or a.variants):
        r = json.loads((out / "memory.json").read_text())
        if (r.get("n"), r.get("dim"), r.get("counts")) != (a.n, a.dim, counts):
            r = {}
    r.update({"n": a.n, "dim": a.dim, "counts": counts, "cpus": os.cpu_count()})
    r.setdefault("file_bytes", {}).update({k: paths[k].stat().st_size for k in KINDS if paths[k].exists()})
    r.setdefault("readers", {})
    env = child_env(scratch)
    log = {"command": command, "when": time.strftime("%Y-%m-%d %H:%M"), "load_before": load(),
           "aot_at_start": aot_state(env), "parts": sorted(parts), "variants": list(variants)}
    print("kernels:", log["aot_at_start"], flush=True)
    bare = {}
    if parts & {"readers", "serve"}:
        for c in counts:
            bare[c] = run_group([sys.executable, CHILD, "bare"], c, env, str(paths["needle"]))
        r["bare_pss_kb"] = {str(c): sum(p["pss"] for p in g["procs"]) for c, g in bare.items()}
        r["bare_private_dirty_kb"] = {str(c): statistics.mean(p["private_dirty"] for p in g["procs"])
                                      for c, g in bare.items()}
    if "readers" in parts:
        for name, (kind, extra) in variants.items():
            rows = r["readers"][name] = {}
            per_proc_kb = None
            for c in counts:
                need = (per_proc_kb or 0) * c + 1.5 * 2**20
                if per_proc_kb is not None and need > mem_available_kb():
                    rows[str(c)] = {"skipped": f"needs ~{need / 2**20:.1f} GB, {mem_available_kb() / 2**20:.1f} "
                                    "GB available"}
                    continue
                g = run_group([sys.executable, CHILD, "reader", kind, str(paths[kind]), str(a.dim)], c,
                              child_env(scratch, **extra), str(paths[kind]))
                s = rows[str(c)] = summarize(g, bare[c], r["file_bytes"][kind])
                per_proc_kb = per_proc_kb or max(p["private"] for p in g["procs"])
                print(name, c, f"{s['beyond_bare_x_file']:.2f}x", fmt_mb(s["private_per_proc_beyond_bare_kb"]),
                      "MB each", flush=True)
    if "serve" in parts:
        r["serve"] = {}
        for c in counts:
            try:
                g = measure_serve(str(paths["needle"]), a.dim, c, a.requests, env)
            except RuntimeError as exc:
                r["serve"][str(c)] = {"skipped": str(exc)[:200]}
                print("serve", c, "failed:", exc, flush=True)
                continue
            s = summarize(g, bare[c], r["file_bytes"]["needle"])
            s.update({k: g[k] for k in ("workers", "requests", "answered_by", "cpu_ticks", "up_s", "http_s")})
            r["serve"][str(c)] = s
            print("serve", c, f"{s['beyond_bare_x_file']:.2f}x", fmt_mb(s["private_per_proc_beyond_bare_kb"]),
                  "MB each", flush=True)
    if "first" in parts:
        def cold(**extra):
            return lambda: child_env(scratch, NUMBA_CACHE_DIR=tempfile.mkdtemp(dir=scratch, prefix="numba-"), **extra)

        configs = {}
        if "needle-aot" in variants:
            configs.update({"Needle AOT, warm": ("needle", lambda: env), "Needle AOT, cold": ("needle", cold())})
        if "needle-jit" in variants:
            configs.update({"Needle JIT, warm": ("needle", lambda: child_env(scratch, NEEDLE_MM_JIT="1")),
                            "Needle JIT, cold": ("needle", cold(NEEDLE_MM_JIT="1"))})
        configs.update({k: (k, lambda: env) for k in KINDS if k != "needle" and k in variants})
        r.setdefault("first_answer", {}).update(first_answer(configs, paths, a.dim, a.runs))
        print(json.dumps(r["first_answer"], indent=1), flush=True)
    log["load_after"] = load()
    log["aot_at_end"] = aot_state(env)
    r["invocations"] = (r.get("invocations", []) if (a.only or a.variants) else []) + [log]
    r["targets"] = targets(r)
    for inv in r["invocations"]:
        kernels = (inv["aot_at_start"]["backend"], inv["aot_at_end"]["backend"])
        if "needle-aot" in inv.get("variants", ()) and kernels != ("aot", "aot"):
            r["targets"].append(f"WARNING: the AOT kernels were not in use for all of `{inv['command']}` "
                                f"(start: {inv['aot_at_start']}; end: {inv['aot_at_end']})")
    (out / "memory.json").write_text(json.dumps(r, indent=1))
    publish("## Memory", report(r), a.write)


if __name__ == "__main__":
    main()
