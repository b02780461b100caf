"""Replica lag and bytes shipped (issue 22, SPEC §6.2).

A writer commits small and large batches to a source file while
``needle replicate SRC DEST --follow`` runs in its own process; for each
commit this measures the lag (from ``save()`` returning to DEST's superblock
naming the new generation, polled every millisecond) and the bytes the
follower shipped against the bytes the commit wrote (its ``written`` ranges,
its catalog and the 64-byte superblock).

    python tools/bench_replicate.py [--n 20000] [--dim 384] [--commits 10] [--write]
"""

from __future__ import annotations

import argparse
import os
import re
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
from needle_mm._storage.io import FileIO  # noqa: E402
from needle_mm._storage.mapping import read_superblock  # noqa: E402


def replica_generation(path: str) -> int:
    try:
        io = FileIO(path, writable=False)
    except OSError:
        return 0
    try:
        return read_superblock(io).generation
    except Exception:  # noqa: BLE001 (a replica mid-rename: not there yet)
        return 0
    finally:
        io.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000, help="records in the source before the timed commits")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--commits", type=int, default=10, help="timed commits of each size")
    ap.add_argument("--interval", type=float, default=0.05, help="the follower's --interval")
    ap.add_argument("--write", action="store_true", help="print a BENCHMARKS.md section")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    tmp = tempfile.mkdtemp(prefix="needle-bench-replicate-")
    src, dst = os.path.join(tmp, "src.needle"), os.path.join(tmp, "dst.needle")
    with needle.Database.open(src) as db:
        c = db.create_collection("c", a.dim)
        c.insert_many([f"r{i}" for i in range(a.n)], rng.standard_normal((a.n, a.dim)),
                      [{"i": i} for i in range(a.n)])
    load_before = os.getloadavg()
    follower = subprocess.Popen([sys.executable, "-m", "needle_mm", "replicate", src, dst, "--follow",
                                 "--interval", str(a.interval)], stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
    rows = {"small (10 records)": [], "large (2,000 records)": []}
    try:
        with needle.Database.open(src) as db:
            c = db.collection("c")
            while replica_generation(dst) != db.generation:  # the first, whole copy
                time.sleep(0.01)
            k = 0
            for _ in range(a.commits):
                for label, size in (("small (10 records)", 10), ("large (2,000 records)", 2000)):
                    c.insert_many([f"n{k}-{i}" for i in range(size)], rng.standard_normal((size, a.dim)),
                                  [{"k": k} for _ in range(size)])
                    k += 1
                    db.save()
                    done = time.perf_counter()
                    g = db.generation
                    while replica_generation(dst) < g:
                        time.sleep(0.001)
                    lag = time.perf_counter() - done
                    snap = db.engine.snapshot
                    wrote = sum(n for _, n in snap.catalog.written[-1][1]) + snap.superblock.catalog_length + 64
                    rows[label].append((g, lag, wrote))
    finally:
        follower.terminate()
        out, _ = follower.communicate(timeout=60)
    shipped = {int(m.group(1)): (m.group(2), int(m.group(3).replace(",", "")))
               for m in re.finditer(r"replica at generation (\d+): (copied whole|commit ranges), ([\d,]+) bytes", out)}
    load_after = os.getloadavg()
    summary = {}
    for label, got in rows.items():
        lags = [lag for _, lag, _ in got]
        ratios = [shipped[g][1] / wrote for g, _, wrote in got if g in shipped]
        modes = sorted({shipped[g][0] for g, _, _ in got if g in shipped})
        summary[label] = {"commits": len(got), "lag_median_s": statistics.median(lags), "lag_max_s": max(lags),
                          "written_median_bytes": statistics.median(w for _, _, w in got),
                          "shipped_over_written_max": max(ratios) if ratios else None,
                          "shipped_over_written_median": statistics.median(ratios) if ratios else None,
                          "modes": modes, "generations_shipped": sum(g in shipped for g, _, _ in got)}
    print(summary)
    if a.write:
        cmd = "python tools/bench_replicate.py " + " ".join(sys.argv[1:])
        lines = ["## Replicas (issue 22): lag and bytes shipped", "",
                 f"`{cmd.strip()}` — a source of {a.n:,} × {a.dim} float32 records; `needle replicate SRC DEST "
                 f"--follow --interval {a.interval:g}` in its own process; each commit's lag is from `save()` "
                 f"returning to DEST's superblock naming that generation (polled every 1 ms); bytes shipped are "
                 f"what the follower wrote for that generation, against what the commit wrote (its ranges, its "
                 f"catalog, its superblock). Load average {load_before[0]:.2f} before, {load_after[0]:.2f} after.",
                 "", "| commit | commits | lag median (ms) | lag max (ms) | written (median, KB) | shipped / written "
                     "(median, max) | shipped as |", "|---|---|---|---|---|---|---|"]
        for label, s in summary.items():
            ratio = (f"{s['shipped_over_written_median']:.3f}, {s['shipped_over_written_max']:.3f}"
                     if s["shipped_over_written_max"] is not None else "—")
            lines.append(f"| {label} | {s['commits']} | {1e3 * s['lag_median_s']:.0f} | {1e3 * s['lag_max_s']:.0f} | "
                         f"{s['written_median_bytes'] / 1e3:,.0f} | {ratio} | {', '.join(s['modes'])} |")
        lines += ["", "Targets (issue 22): lag ≤ 1 s after `save()` returns; shipped ≤ 1.1× written. A generation "
                      "the follower skipped (two commits between its checks) is shipped with the next one and "
                      "counts for neither."]
        print("\n".join(lines))


if __name__ == "__main__":
    main()
