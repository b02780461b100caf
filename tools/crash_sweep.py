"""Crash sweep: kill a writer at every failpoint and every I/O call, then check.

    python tools/crash_sweep.py [--tear] [--max-io 2000] [--io-step 1] [--json]

The parent warms up (imports needle_mm and runs the workload once, so every
kernel is loaded), then for each fault forks a child that runs a fixed
workload of commits against a new file with ``NEEDLE_FAILPOINTS`` set to one
fault (kill at a named failpoint, kill at the N-th mutating I/O call, or
tear the N-th pwrite in half and die). After it dies, the parent opens the
file, runs ``verify`` and compares everything it can read with a
deterministic oracle: the state after commit j is a pure function of j, so
the file must equal the state of the last commit the child reported, or of
the one in flight — never a mix (partially visible) and never older (lost
committed). Prints one line of counts.

numba's threading layer is set to ``workqueue`` here: GNU OpenMP (the
default ``omp`` layer) aborts a process that forks after using it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIM = 8
NAMED = ["create.before_rename", "commit.after_data_write", "commit.after_data_sync",
         "commit.after_superblock_write", "commit.after_superblock_sync",
         "rebuild.before_replace", "rebuild.after_replace"]

COMPACT = None  # a step that compacts the file (its records do not change)

# commit j (1-based): (inserts range, deleted ids, upserted ids), or COMPACT. The
# commit after the compact is saved by the Database that had the old file open:
# it must land in the new file (SPEC §7.1), even when the compact was killed
# between its rename and its superseded commit.
COMMITS = [
    (range(0, 60), [], []),
    (range(60, 120), [f"r{i}" for i in range(0, 10)], [f"r{i}" for i in range(10, 15)]),
    (range(120, 130), [f"r{i}" for i in range(60, 70)], []),
    (range(130, 400), [f"r{i}" for i in range(100, 300)], [f"r{i}" for i in range(20, 25)]),
    COMPACT,
    (range(400, 420), [f"r{i}" for i in range(300, 305)], [f"r{i}" for i in range(30, 32)]),
    # small commits into the large segment: new graph rows appended, changed
    # rows in patch chunks (merged), id chunks, and regions placed in space
    # released by earlier commits (SPEC §5.9, §6.1)
    (range(420, 425), [f"r{i}" for i in range(305, 307)], ["r33"]),
    (range(425, 430), [], ["r34"]),
]


def vector(i: int, version: int) -> np.ndarray:
    return np.random.default_rng([i, version]).normal(size=DIM).astype(np.float32)


def oracle(j: int) -> dict[str, tuple[np.ndarray, dict]]:
    """Records after commit j."""
    state: dict[str, tuple[np.ndarray, dict]] = {}
    for c, step in enumerate(COMMITS[:j], start=1):
        if step is COMPACT:
            continue
        inserts, deletes, upserts = step
        for i in inserts:
            state[f"r{i}"] = (vector(i, 0), {"i": i, "commit": c})
        for d in deletes:
            state.pop(d, None)
        for u in upserts:
            i = int(u[1:])
            state[u] = (vector(i, c), {"i": i, "commit": c, "upserted": True})
    return state


def workload(path: str, report=lambda commit: None, compacts: bool = True) -> None:
    """The commits of COMMITS against ``path``; ``report(j)`` after commit j returned.
    ``compacts=False`` skips the compact step (a trace of one file's calls,
    as power_loss.py replays, cannot hold another file's rename)."""
    import needle_mm as needle
    from needle_mm._storage import failpoints
    from needle_mm.ops import compact

    db = needle.Database.open(path)
    db.create_collection("c", DIM, "euclidean")
    for c, step in enumerate(COMMITS, start=1):
        if step is COMPACT:
            if compacts:
                compact(path)
            failpoints.record("mark", c)
            report(c)
            continue
        inserts, deletes, upserts = step
        coll = db.collection("c")
        coll.insert_many([f"r{i}" for i in inserts], np.stack([vector(i, 0) for i in inserts]),
                         [{"i": i, "commit": c} for i in inserts])
        coll.delete(deletes)
        for u in upserts:
            i = int(u[1:])
            coll.upsert(u, vector(i, c), {"i": i, "commit": c, "upserted": True})
        db.save()
        failpoints.record("mark", c)  # for tools/power_loss.py: commit c returned
        report(c)


def run_child(path: str, plan: str) -> tuple[int, int, str]:
    """Fork a child running the workload under ``plan``: (returncode, last reported commit, error)."""
    from needle_mm._storage import failpoints

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(r)
        code = 0
        try:
            os.environ["NEEDLE_FAILPOINTS"] = plan
            failpoints.reset_for_tests()
            workload(path, lambda c: os.write(w, f"{c}\n".encode()))
        except BaseException:
            os.write(w, ("ERROR " + traceback.format_exc().replace("\n", " | ") + "\n").encode())
            code = 1
        os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    lines = b"".join(chunks).decode().splitlines()
    committed = max([int(x) for x in lines if x.isdigit()], default=0)
    return rc, committed, " ".join(x for x in lines if x.startswith("ERROR"))


def warm_up() -> None:
    tmp = tempfile.mkdtemp(prefix="needle-warm-")
    workload(os.path.join(tmp, "warm.needle"))


def check(path: str, committed: int) -> str:
    """'' when the file holds commit `committed` or `committed + 1` exactly, else what is wrong."""
    import needle_mm as needle
    from needle_mm.ops.verify import verify_file

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
    ap.add_argument("--io-step", type=int, default=1)
    ap.add_argument("--workload", metavar="PATH", help="only run the workload on PATH (power_loss.py traces it)")
    ap.add_argument("--json", action="store_true", help="print the counts as one JSON line")
    args = ap.parse_args()
    if args.workload:
        workload(args.workload, compacts=False)
        return
    warm_up()
    c = sweep(tear=args.tear, max_io=args.max_io, io_step=args.io_step)
    if args.json:
        print(json.dumps(c))
        return
    print(" ".join(f"{k}={v}" for k, v in c.items() if k != "failures"))
    for f in c["failures"]:
        print("  ", f)
    sys.exit(1 if c["failures"] else 0)


if __name__ == "__main__":
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # before numba is imported
    main()
