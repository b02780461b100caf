"""Power-loss images: what the disk may hold after a power cut at any instant.

    python tools/power_loss.py [--subsets 4] [--seed 0]

A process killed by a signal loses nothing it wrote (the kernel's page cache
survives); a power cut loses whatever was not fsynced, in any combination.
This tool runs the crash sweep's workload once with ``NEEDLE_IO_TRACE`` set,
which records every mutating call on the database file (pwrite with its
bytes, fsync, ftruncate, fallocate) and a mark when each ``save()`` returned.
Then, for every crash point (before each call, and after the last):

- everything up to the last completed fsync is on disk;
- of the calls issued since, the images keep all, drop all, drop each one
  alone, tear each pwrite (a random 512-byte-aligned prefix persisted, the
  rest not), and ``--subsets`` random subsets (a reordering disk);

each image is checked like a crash-sweep file: ``verify`` passes and the
records equal the state of the last commit whose ``save()`` returned, or of
the one in flight — never older (lost committed), never a mix (partially
visible). Prints one line of counts. The file's creation (a temp file,
fsync, rename) happens before tracing starts; ``crash_sweep.py`` covers it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import crash_sweep  # noqa: E402

SECTOR = 512


def read_trace(path: str) -> list[dict]:
    ops = []
    with open(path, "rb") as f:
        while True:
            line = f.readline()
            if not line:
                break
            op = json.loads(line)
            if op["op"] == "pwrite":
                op["data"] = f.read(op["length"])
            ops.append(op)
    return ops


def apply(image: bytearray, op: dict, keep: int | None = None) -> None:
    """Apply one traced call to ``image``; ``keep`` persists only that many bytes of a pwrite."""
    kind = op["op"]
    if kind == "pwrite":
        data = op["data"] if keep is None else op["data"][:keep]
        end = op["offset"] + len(data)
        if end > len(image):
            image.extend(b"\0" * (end - len(image)))
        image[op["offset"]:end] = data
    elif kind in ("ftruncate", "fallocate"):
        end = op["length"] if kind == "ftruncate" else op["offset"] + op["length"]
        if end > len(image):
            image.extend(b"\0" * (end - len(image)))
    elif kind == "punch_hole":  # free space given back: reads as zeros, the length stays
        end = min(len(image), op["offset"] + op["length"])
        image[op["offset"]:end] = b"\0" * max(0, end - op["offset"])


def images(base: bytes, ops: list[dict], subsets: int, rng: np.random.Generator):
    """Yield (crash point, committed, variant name, image bytes)."""
    durable = bytearray(base)
    synced_upto = 0  # ops[:synced_upto] are on disk
    committed = 0
    for point in range(len(ops) + 1):
        issued = ops[:point]
        if point > 0:
            last = ops[point - 1]
            if last["op"] == "fsync":
                for op in ops[synced_upto:point]:
                    apply(durable, op)
                synced_upto = point
            elif last["op"] == "mark":
                committed = last["offset"]
        pending = [op for op in issued[synced_upto:] if op["op"] not in ("fsync", "mark")]

        def build(chosen, tear=None):
            img = bytearray(durable)
            for idx, op in enumerate(pending):
                if idx == tear:
                    apply(img, op, keep=int(rng.integers(0, op["length"] // SECTOR + 1)) * SECTOR)
                elif chosen[idx]:
                    apply(img, op)
            return bytes(img)

        n = len(pending)
        yield point, committed, "keep-all", build([True] * n)
        if n:
            yield point, committed, "drop-all", build([False] * n)
        for i in range(n):
            yield point, committed, f"drop-{i}", build([j != i for j in range(n)])
            if pending[i]["op"] == "pwrite" and pending[i]["length"] > SECTOR:
                yield point, committed, f"tear-{i}", build([True] * n, tear=i)
        for s in range(subsets if n > 1 else 0):
            yield point, committed, f"subset-{s}", build(list(rng.random(n) < 0.5))


def run(subsets: int = 4, seed: int = 0) -> dict:
    import needle_mm as needle

    tmp = tempfile.mkdtemp(prefix="needle-power-")
    path = os.path.join(tmp, "power.needle")
    needle.Database.open(path).close()  # created untraced (see the module docstring)
    base = Path(path).read_bytes()
    trace = os.path.join(tmp, "trace")
    env = dict(os.environ, NEEDLE_IO_TRACE=trace, PYTHONPATH=str(ROOT))
    env.pop("NEEDLE_FAILPOINTS", None)
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "crash_sweep.py"), "--workload", path],
                         capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"traced workload failed: {out.stderr[-2000:]}")
    ops = read_trace(trace)
    counts = {"calls": len(ops), "points": len(ops) + 1, "images": 0, "distinct": 0, "lost-committed": 0,
              "partially-visible": 0, "verify-failures": 0}
    failures, seen = [], {}
    image_path = os.path.join(tmp, "image.needle")
    for point, committed, variant, image in images(base, ops, subsets, np.random.default_rng(seed)):
        counts["images"] += 1
        key = (hashlib.blake2b(image, digest_size=16).digest(), committed)
        if key in seen:
            problem = seen[key]
        else:
            with open(image_path, "wb") as f:
                f.write(image)
            problem = crash_sweep.check(image_path, committed)
            seen[key] = problem
            counts["distinct"] += 1
        if problem:
            kind = problem.split(":")[0]
            counts[kind if kind in counts else "verify-failures"] += 1
            failures.append(f"point {point} ({variant}, committed {committed}): {problem}")
    counts["failures"] = failures
    return counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subsets", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    counts = run(a.subsets, a.seed)
    failures = counts.pop("failures")
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    for f in failures[:20]:
        print("  ", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
