"""Graph builds while other work shares the machine: Needle (f32, f16, int8) against hnswlib.

    pip install -e ".[bench]"
    python tools/bench_build_load.py [--n 100000] [--rounds 3] [--hogs 1] [--write]

``--hogs`` processes spin on the CPU for the whole run (the "other work": a
neighbour using one core of two), while each engine builds the same
``--n`` vectors of ../shared/data/minilm-384-cosine with M=16,
ef_construction=200 on 2 threads, the engines alternating round by round so
each sees the same load. Needle's time is ``insert_many`` + ``save()`` (the
graph and the file); hnswlib's is ``add_items``. Reports every build's time
and the medians' ratio to hnswlib's; also the same without hogs, one round,
for reference.

Writes bench-out/build_load.json and, with --write, the "Builds under load"
section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import needle_mm as needle  # noqa: E402
from benchmarks_md import command_line, write_section  # noqa: E402

M, EFC = 16, 200
NEEDLES = {"needle_f32": ("f32", None), "needle_f16": ("f16", None), "needle_int8": ("f32", "int8")}


def _spin(stop) -> None:
    while not stop.is_set():
        for _ in range(100_000):
            pass


def build_needle(x, tmp: str, dtype: str, quantization) -> float:
    path = os.path.join(tmp, "build.needle")
    if os.path.exists(path):
        os.remove(path)
    with needle.Database.open(path) as db:
        c = db.create_collection("c", x.shape[1], "cosine", m=M, ef_construction=EFC, dtype=dtype,
                                 quantization=quantization)
        t = time.perf_counter()
        c.insert_many([str(i) for i in range(len(x))], x)
        db.save()
        took = time.perf_counter() - t
    os.remove(path)
    return took


def build_hnswlib(x) -> float:
    import hnswlib

    idx = hnswlib.Index(space="cosine", dim=x.shape[1])
    idx.init_index(max_elements=len(x), M=M, ef_construction=EFC, random_seed=0)
    idx.set_num_threads(2)
    t = time.perf_counter()
    idx.add_items(x, np.arange(len(x)), num_threads=2)
    return time.perf_counter() - t


def rounds(x, tmp: str, engines: list[str], count: int) -> dict[str, list[float]]:
    out = {e: [] for e in engines}
    for _ in range(count):
        for e in engines:
            out[e].append(build_hnswlib(x) if e == "hnswlib" else build_needle(x, tmp, *NEEDLES[e]))
            print(e, f"{out[e][-1]:.1f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hogs", type=int, default=1)
    ap.add_argument("--engines", default="needle_f32,needle_f16,needle_int8,hnswlib")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    x = np.load(Path(a.shared) / "data" / "minilm-384-cosine" / "train.f16.npy")[: a.n].astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    engines = a.engines.split(",")
    tmp = tempfile.mkdtemp(prefix="needle-build-load-")
    build_needle(x[:500], tmp, "f32", None)  # load the kernels first, as hnswlib's come with its import
    print("quiet, one round ...", flush=True)
    quiet = rounds(x, tmp, engines, 1)
    stop = mp.Event()
    hogs = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(a.hogs)]
    for h in hogs:
        h.start()
    load_before = os.getloadavg()
    try:
        print(f"with {a.hogs} spinning process(es) ...", flush=True)
        loaded = rounds(x, tmp, engines, a.rounds)
    finally:
        stop.set()
        for h in hogs:
            h.join()
    result = {"n": a.n, "hogs": a.hogs, "rounds": a.rounds, "quiet_s": quiet, "loaded_s": loaded,
              "loadavg": [load_before, os.getloadavg()], "cpus": len(os.sched_getaffinity(0))}
    out = ROOT / "bench-out"
    out.mkdir(exist_ok=True)
    (out / "build_load.json").write_text(json.dumps(result, indent=1))
    section = report(result, command_line("bench_build_load.py", ap, a))
    print(section)
    if a.write:
        write_section("## Builds under load", section)


def report(r: dict, command: str) -> str:
    h_loaded = statistics.median(r["loaded_s"]["hnswlib"])
    h_quiet = r["quiet_s"]["hnswlib"][0]
    lines = ["## Builds under load (issue 20)", "",
             f"`{command}` — {r['n']:,} × 384 (minilm, cosine), M={M}, ef_construction={EFC}, 2 threads, "
             f"{r['cpus']} CPUs; {r['hogs']} process(es) spinning on the CPU throughout the loaded rounds, engines "
             f"alternating round by round. Rate ratio = hnswlib's median time / the engine's median time "
             f"(≥ 1.0: builds at least as fast as hnswlib under the same load).", "",
             "| engine | quiet (s) | loaded builds (s) | loaded median (s) | rate ratio to hnswlib, loaded | "
             "slow-down from quiet |", "|---|---|---|---|---|---|"]
    for e, times in r["loaded_s"].items():
        med = statistics.median(times)
        q = r["quiet_s"][e][0]
        lines.append(f"| {e} | {q:.1f} | {' / '.join(f'{t:.1f}' for t in times)} | {med:.1f} | "
                     f"**{h_loaded / med:.2f}×** | {med / q:.2f}× (hnswlib {h_loaded / h_quiet:.2f}×) |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
