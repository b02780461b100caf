"""Crash sweep: kill a writer at every failpoint and every I/O call, then check.

    python tools/crash_sweep.py [--tear] [--max-io 200]

A child process runs a fixed workload of commits against a new file with
``NEEDLE_FAILPOINTS`` set to one fault (kill at a named failpoint, kill at the
N-th mutating I/O call, or tear the N-th pwrite in half and die). After it
dies, the parent opens the file, runs ``verify`` and compares everything it
can read with a deterministic oracle: the state after commit j is a pure
function of j, so the file must equal the state of the last commit the
child reported, or of the one in flight — never a mix (partially visible)
and never older (lost committed). Prints one line of counts.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIM = 8
NAMED = ["create.before_rename", "commit.after_data_write", "commit.after_data_sync",
         "commit.after_superblock_write", "commit.after_superblock_sync"]

# commit j (1-based): (inserts range, deleted ids, upserted ids)
COMMITS = [
    (range(0, 60), [], []),
    (range(60, 120), [f"r{i}" for i in range(0, 10)], [f"r{i}" for i in range(10, 15)]),
    (range(120, 130), [f"r{i}" for i in range(60, 70)], []),
    (range(130, 400), [f"r{i}" for i in range(100, 300)], [f"r{i}" for i in range(20, 25)]),
]


def vector(i: int, version: int) -> np.ndarray:
    return np.random.default_rng([i, version]).normal(size=DIM).astype(np.float32)


def oracle(j: int) -> dict[str, tuple[np.ndarray, dict]]:
    """Records after commit j."""
    state: dict[str, tuple[np.ndarray, dict]] = {}
    for c, (inserts, deletes, upserts) in enumerate(COMMITS[:j], start=1):
        for i in inserts:
            state[f"r{i}"] = (vector(i, 0), {"i": i, "commit": c})
        for d in deletes:
            state.pop(d, None)
        for u in upserts:
            i = int(u[1:])
            state[u] = (vector(i, c), {"i": i, "commit": c, "upserted": True})
    return state


WORKLOAD = """
import sys
sys.path.insert(0, sys.argv[2])
import numpy as np, needle_mm as needle
from needle_mm._storage import failpoints
from crash_sweep import COMMITS, vector, DIM
db = needle.Database.open(sys.argv[1])
print("OPENED", flush=True)
db.create_collection("c", DIM, "euclidean")
for c, (inserts, deletes, upserts) in enumerate(COMMITS, start=1):
    coll = db.collection("c")
    coll.insert_many([f"r{i}" for i in inserts], np.stack([vector(i, 0) for i in inserts]),
                     [{"i": i, "commit": c} for i in inserts])
    coll.delete(deletes)
    for u in upserts:
        i = int(u[1:])
        coll.upsert(u, vector(i, c), {"i": i, "commit": c, "upserted": True})
    db.save()
    failpoints.record("mark", c)  # for tools/power_loss.py: commit c returned
    print("COMMITTED", c, flush=True)
"""


def run_child(path: str, plan: str) -> tuple[int, int, str]:
    env = dict(os.environ, NEEDLE_FAILPOINTS=plan, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", WORKLOAD, path, str(ROOT / "tools")], capture_output=True,
                         text=True, env=env, timeout=300)
    committed = max([int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("COMMITTED")],
                    default=0)
    return out.returncode, committed, out.stderr


def check(path: str, committed: int) -> str:
    """'' when the file holds commit `committed` or `committed + 1` exactly, else what is wrong."""
    import needle_mm as needle
    from needle_mm.verify import verify_file

    if not os.path.exists(path):
        return "" if committed == 0 else "lost-committed: file missing"
    report = verify_file(path)
    if not report.ok:
        return "verify: " + "; ".join(report.problems[:3])
    try:
        db = needle.Database.open(path, read_only=True)
    except needle.NeedleError as exc:
        return f"open: {exc}"
    with db:
        if "c" not in db.list_collections():
            got = {}
        else:
            c = db.collection("c")
            got = {i: (c.get(i).vector, m) for i, m in c.find()}
            # the graph must find what the file holds
            for i, (vec, _) in list(got.items())[:20]:
                if c.search(vec, 1)[0].id != i and c.search(vec, 1, exact=True)[0].distance > 1e-5:
                    return f"search cannot find {i}"
    for j in (committed, committed + 1):
        if j > len(COMMITS):
            continue
        want = oracle(j)
        if want.keys() == got.keys() and all(np.array_equal(want[k][0], got[k][0]) and want[k][1] == got[k][1]
                                             for k in want):
            return ""
    for j in range(committed):
        want = oracle(j)
        if want.keys() == got.keys():
            return f"lost-committed: file is at commit {j}, child reported {committed}"
    return f"partially-visible: {len(got)} records match no commit (child reported {committed})"


def sweep(tear: bool = False, max_io: int = 400, named: bool = True, io_step: int = 1) -> dict:
    tmp = tempfile.mkdtemp(prefix="needle-crash-")
    counts = {"points": 0, "runs": 0, "lost-committed": 0, "partially-visible": 0, "verify-failures": 0,
              "signals": 0, "completed": 0}
    failures = []
    plans = [f"{name}=kill" for name in NAMED] if named else []
    n = 1
    while n <= max_io:
        plans.append(f"io.{n}=kill")
        if tear:
            plans.append(f"io.{n}=tear")
        n += io_step
    for plan in plans:
        path = os.path.join(tmp, f"{plan.replace('=', '-')}.needle")
        rc, committed, stderr = run_child(path, plan)
        counts["points"] += 1
        counts["runs"] += 1
        if rc == 0:
            counts["completed"] += 1
            if plan.startswith("io.") and plan.endswith("kill"):
                break  # the workload has fewer I/O calls than this: the sweep is complete
            continue
        if rc != -signal.SIGKILL:
            counts["signals"] += 1
            failures.append(f"{plan}: child died with {rc}: {stderr[-400:]}")
            continue
        problem = check(path, committed)
        if problem:
            key = problem.split(":")[0]
            counts[key if key in counts else "verify-failures"] += 1
            failures.append(f"{plan}: {problem}")
        for f in (path, path + ".lock"):
            if os.path.exists(f):
                os.remove(f)
    counts["failures"] = failures
    return counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tear", action="store_true", help="also tear every pwrite in half")
    ap.add_argument("--max-io", type=int, default=2000)
    args = ap.parse_args()
    c = sweep(tear=args.tear, max_io=args.max_io)
    print(" ".join(f"{k}={v}" for k, v in c.items() if k != "failures"))
    for f in c["failures"]:
        print("  ", f)
    sys.exit(1 if c["failures"] else 0)


if __name__ == "__main__":
    main()
