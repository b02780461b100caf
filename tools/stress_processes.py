"""Many processes on one file: readers during writes, racing writers, a frozen writer.

    python tools/stress_processes.py readers [--commits 30] [--readers 4]
    python tools/stress_processes.py writers [--writers 3] [--commits 30]

Every role runs in its own process (started with ``--role``), so a crash is
a counted failure, never the end of the run. Each scenario prints one line
of counts; the tests in ``tests/test_processes.py`` run short versions.

Readers during writes: one writer commits generation after generation (each
commit inserts a batch, deletes the batch from three commits before and
upserts one record of the previous batch); the state after commit ``j`` is a
pure function of ``j`` (:func:`oracle`). Readers pin a snapshot
(``auto_refresh=False``), read everything in it and require it to equal
``oracle(j)`` for the ``j`` it shows, with ``j`` never going backwards, then
``refresh()`` and go again.

Racing writers: several writer processes append their own records in many
small commits; one is killed inside a commit. Every commit a writer reported
must be in the file whole, the killed one's in-flight commit whole or absent.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import needle_mm as needle  # noqa: E402

DIM = 8
BATCH = 40
KEEP = 3  # commit j deletes batch j - KEEP


def vector(batch: int, i: int, version: int = 0) -> np.ndarray:
    return np.random.default_rng([batch, i, version]).normal(size=DIM).astype(np.float32)


def oracle(j: int) -> dict[str, tuple[np.ndarray, dict]]:
    """Records after commit j of the readers-during-writes writer."""
    out = {}
    for b in range(max(1, j - KEEP + 1), j + 1):
        for i in range(BATCH):
            out[f"b{b}-{i}"] = (vector(b, i), {"j": b, "i": i})
        if b < j:  # commit b + 1 upserted record 0 of batch b
            out[f"b{b}-0"] = (vector(b, 0, b + 1), {"j": b, "i": 0, "touched": b + 1})
    return out


def commit_of(metas: list[dict]) -> int:
    return max((max(m["j"], m.get("touched", 0)) for m in metas), default=0)


# ----------------------------------------------------------------- roles


def _acked(ack_files: list[str], j: int) -> bool:
    for name in ack_files:
        try:
            if int(Path(name).read_text() or 0) < j:
                return False
        except (FileNotFoundError, ValueError):
            return False
    return True


def role_writer(path: str, commits: int, ack_files: list[str], lockstep: int) -> None:
    """``commits`` commits; after each of the first ``lockstep`` it waits until
    every reader has seen it (so each reader watches at least that many
    generations however slowly the machine runs it), then runs free."""
    db = needle.Database.open(path)
    if "c" not in db.list_collections():
        db.create_collection("c", DIM, "euclidean")
        db.save()
    c = db.collection("c")
    for j in range(1, commits + 1):
        c.insert_many([f"b{j}-{i}" for i in range(BATCH)], np.stack([vector(j, i) for i in range(BATCH)]),
                      [{"j": j, "i": i} for i in range(BATCH)])
        if j - KEEP >= 1:
            c.delete([f"b{j - KEEP}-{i}" for i in range(BATCH)])
        if j > 1:
            c.upsert(f"b{j - 1}-0", vector(j - 1, 0, j), {"j": j - 1, "i": 0, "touched": j})
        db.save()
        print("COMMITTED", j, flush=True)
        waited = time.monotonic()  # a dead reader must not hang the writer: give up after 10 minutes
        while j <= lockstep and not _acked(ack_files, j) and time.monotonic() - waited < 600:
            time.sleep(0.005)
    db.close()


def role_reader(path: str, stop_file: str, ack_file: str) -> None:
    db = needle.Database.open(path, read_only=True, auto_refresh=False)
    counts = {"checks": 0, "generations": 0, "mismatches": 0, "regressions": 0, "max_commit": 0}
    seen, last_j, problems = set(), 0, []
    while not os.path.exists(stop_file):
        db.refresh()
        if "c" not in db.list_collections():
            continue
        c = db.collection("c")
        found = c.find()
        j = commit_of([m for _, m in found])
        want = oracle(j)
        problem = None
        if j < last_j:
            problem = f"commit went back from {last_j} to {j}"
        elif {i: m for i, m in found} != {i: m for i, (_, m) in want.items()}:
            problem = f"records of commit {j} differ from the oracle"
        elif c.count() != len(want):
            problem = f"count {c.count()} != {len(want)}"
        else:
            rng = np.random.default_rng(counts["checks"])
            for key in rng.choice(sorted(want), size=min(3, len(want)), replace=False) if want else []:
                got = c.get(str(key))
                hit = c.search(want[key][0], 1)
                if not np.array_equal(got.vector, want[key][0]) or hit[0].id != key:
                    problem = f"record {key} of commit {j}: vector or search differs"
        if problem:
            counts["regressions" if j < last_j else "mismatches"] += 1
            problems.append(problem)
        last_j = max(last_j, j)
        seen.add(db.generation)
        counts["checks"] += 1
        tmp = ack_file + ".tmp"
        Path(tmp).write_text(str(last_j))
        os.replace(tmp, ack_file)  # the writer reads whole numbers only
    counts["generations"] = len(seen)
    counts["max_commit"] = last_j
    print(json.dumps({"counts": counts, "problems": problems[:5]}), flush=True)


def role_race_writer(path: str, wid: int, commits: int, per: int) -> None:
    db = needle.Database.open(path)
    if "c" not in db.list_collections():
        db.create_collection("c", DIM, "euclidean")
    c = db.collection("c")
    for j in range(1, commits + 1):
        c.insert_many([f"w{wid}-{j}-{i}" for i in range(per)],
                      np.stack([vector(1000 * wid + j, i) for i in range(per)]),
                      [{"w": wid, "j": j} for i in range(per)])
        db.save()
        print("COMMITTED", j, flush=True)
    db.close()


# ----------------------------------------------------------------- scenarios


def _spawn(*args: str, env: dict | None = None) -> subprocess.Popen:
    full_env = dict(os.environ, PYTHONPATH=str(ROOT))
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, __file__, "--role", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env)


def readers_during_writes(commits: int, readers: int, tmp: str | None = None, lockstep: int = 10) -> dict:
    """``readers`` processes check every generation they see against an oracle
    while a writer makes ``commits`` commits (bounded by count, not time)."""
    tmp = tmp or tempfile.mkdtemp(prefix="needle-rw-")
    path, stop = os.path.join(tmp, "rw.needle"), os.path.join(tmp, "stop")
    needle.Database.open(path).close()
    acks = [os.path.join(tmp, f"seen-{r}") for r in range(readers)]
    procs = [_spawn("reader", path, stop, ack) for ack in acks]
    writer = _spawn("writer", path, str(commits), ",".join(acks), str(lockstep))
    w_out, w_err = writer.communicate(timeout=3600)
    Path(stop).touch()
    results = [p.communicate(timeout=600) for p in procs]
    commits = max([int(line.split()[1]) for line in w_out.splitlines() if line.startswith("COMMITTED")], default=0)
    totals = {"readers": readers, "commits": commits, "checks": 0, "mismatches": 0, "regressions": 0,
              "signals": 0, "min_generations_seen": None}
    problems = [] if writer.returncode == 0 else [f"writer exited {writer.returncode}: {w_err[-300:]}"]
    for proc, (out, err) in zip(procs, results):
        if proc.returncode != 0:
            totals["signals"] += proc.returncode < 0
            problems.append(f"reader exited {proc.returncode}: {err[-300:]}")
            continue
        report = json.loads(out.strip().splitlines()[-1])
        for key in ("checks", "mismatches", "regressions"):
            totals[key] += report["counts"][key]
        g = report["counts"]["generations"]
        totals["min_generations_seen"] = g if totals["min_generations_seen"] is None else min(
            totals["min_generations_seen"], g)
        problems += report["problems"]
    totals["problems"] = problems
    return totals


def racing_writers(writers: int, commits: int, per: int = 20, kill_io: int = 60, tmp: str | None = None) -> dict:
    """``writers`` processes commit concurrently; the last one is killed at its ``kill_io``-th I/O call."""
    from needle_mm.ops.verify import verify_file

    tmp = tmp or tempfile.mkdtemp(prefix="needle-race-")
    path = os.path.join(tmp, "race.needle")
    procs = []
    for w in range(writers):
        env = {"NEEDLE_FAILPOINTS": f"io.{kill_io}=kill"} if w == writers - 1 else None
        procs.append(_spawn("race", path, str(w), str(commits), str(per), env=env))
    reported, problems = [], []
    counts = {"writers": writers, "killed": 0, "commits": 0, "lost-committed": 0, "partially-visible": 0,
              "verify-failures": 0, "signals": 0}
    for w, proc in enumerate(procs):
        out, err = proc.communicate(timeout=900)
        done = max([int(line.split()[1]) for line in out.splitlines() if line.startswith("COMMITTED")], default=0)
        reported.append(done)
        counts["commits"] += done
        if proc.returncode == -signal.SIGKILL and w == writers - 1:
            counts["killed"] += 1
        elif proc.returncode != 0:
            counts["signals"] += 1
            problems.append(f"writer {w} exited {proc.returncode}: {err[-300:]}")
    report = verify_file(path)
    if not report.ok:
        counts["verify-failures"] += 1
        problems += report.problems[:3]
    with needle.Database.open(path, read_only=True) as db:
        c = db.collection("c")
        present = {}
        for i, m in c.find():
            present.setdefault((m["w"], m["j"]), []).append(i)
        for w in range(writers):
            for j in range(1, commits + 1):
                ids = present.get((w, j), [])
                whole = len(ids) == per and all(
                    np.array_equal(c.get(f"w{w}-{j}-{i}").vector, vector(1000 * w + j, i)) for i in range(per))
                if j <= reported[w] and not whole:
                    counts["lost-committed"] += 1
                    problems.append(f"writer {w} commit {j}: reported, but {len(ids)}/{per} records")
                elif j == reported[w] + 1 and ids and not whole:
                    counts["partially-visible"] += 1
                    problems.append(f"writer {w} commit {j} (in flight): {len(ids)}/{per} records")
                elif j > reported[w] + 1 and ids:
                    counts["partially-visible"] += 1
                    problems.append(f"writer {w} commit {j} never started but has {len(ids)} records")
    counts["problems"] = problems
    return counts


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--role":
        role, args = sys.argv[2], sys.argv[3:]
        if role == "writer":
            role_writer(args[0], int(args[1]), args[2].split(","), int(args[3]))
        elif role == "reader":
            role_reader(args[0], args[1], args[2])
        elif role == "race":
            role_race_writer(args[0], int(args[1]), int(args[2]), int(args[3]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=["readers", "writers"])
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--writers", type=int, default=3)
    ap.add_argument("--commits", type=int, default=30)
    a = ap.parse_args()
    if a.scenario == "readers":
        result = readers_during_writes(a.commits, a.readers)
    else:
        result = racing_writers(a.writers, a.commits)
    problems = result.pop("problems")
    print(" ".join(f"{k}={v}" for k, v in result.items()))
    for p in problems:
        print("  ", p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
