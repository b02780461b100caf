"""Many processes, one file: readers during writes, racing writers, frozen and dead lock holders,
read-only opens that write nothing.

The scenarios live in ``tools/stress_processes.py`` (longer runs there); every
process that could die by signal is a child, never pytest itself.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import needle_mm as needle
from conftest import ROOT, run_python
from needle_mm.ops.verify import verify_file

spec = importlib.util.spec_from_file_location("stress_processes", os.path.join(ROOT, "tools", "stress_processes.py"))
stress = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stress)


def test_oracle_follows_the_writer_schedule():
    assert stress.oracle(0) == {}
    five = stress.oracle(5)
    assert sorted({m["j"] for _, m in five.values()}) == [3, 4, 5] and len(five) == 3 * stress.BATCH
    assert five["b4-0"][1]["touched"] == 5 and "touched" not in five["b5-0"][1]
    assert stress.commit_of([m for _, m in five.values()]) == 5


def test_readers_during_writes_see_whole_generations_in_order(tmp_path):
    # Bounded by count: 30 commits, the first 10 in lockstep with the readers,
    # so every reader watches the file move however loaded the machine is.
    r = stress.readers_during_writes(commits=30, readers=3, tmp=str(tmp_path), lockstep=10)
    print({k: v for k, v in r.items() if k != "problems"})
    assert r["problems"] == [] and r["mismatches"] == 0 and r["regressions"] == 0 and r["signals"] == 0
    assert r["commits"] == 30 and r["checks"] >= 3 * 10
    assert r["min_generations_seen"] >= 10  # every reader really watched the file move


def test_racing_writers_lose_nothing_when_one_is_killed_mid_commit(tmp_path):
    r = stress.racing_writers(writers=3, commits=8, per=20, kill_io=40, tmp=str(tmp_path))
    print({k: v for k, v in r.items() if k != "problems"})
    assert r["problems"] == [], r["problems"]
    assert r["killed"] == 1 and r["commits"] >= 2 * 8 + 1  # the survivors' commits and some of the killed one's


def _writer_child(path: str, plan: str) -> subprocess.Popen:
    code = """
import sys, needle_mm as needle
db = needle.Database.open(sys.argv[1])
db.collection("c").insert("child", [0.0, 1.0], {"by": "child"})
print("SAVING", flush=True)
db.save()
print("SAVED", flush=True)
"""
    env = dict(os.environ, PYTHONPATH=ROOT, NEEDLE_FAILPOINTS=plan)
    proc = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "SAVING"
    return proc


def _wait_stopped(pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.02)
    raise AssertionError("the child never stopped at its failpoint")


def test_frozen_lock_holder_gives_timeout_then_its_death_frees_the_lock(db_path):
    with needle.Database.open(db_path) as db:
        db.create_collection("c", 2).insert("base", [1.0, 0.0])
    proc = _writer_child(db_path, "commit.after_data_sync=stop")  # frozen mid-commit, holding the lock
    try:
        _wait_stopped(proc.pid)
        db = needle.Database.open(db_path, lock_timeout=0.5)
        db.collection("c").insert("parent", [0.5, 0.5])
        with pytest.raises(needle.LockTimeoutError, match="writer lock"):
            db.save()
        assert db.dirty and "parent" in db.collection("c")  # still pending: nothing lost
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    db.save()  # the kernel released the dead holder's lock
    db.close()
    with needle.Database.open(db_path, read_only=True) as db:
        assert sorted(i for i, _ in db.collection("c").find()) == ["base", "parent"]  # the child's half-commit is invisible
    assert verify_file(db_path).ok


def test_writer_killed_while_holding_the_lock_does_not_block_the_next(db_path):
    with needle.Database.open(db_path) as db:
        db.create_collection("c", 2).insert("base", [1.0, 0.0])
    proc = _writer_child(db_path, "commit.after_superblock_write=kill")
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    db = needle.Database.open(db_path, lock_timeout=5)
    db.collection("c").insert("next", [0.0, 1.0])
    db.save()
    db.close()
    with needle.Database.open(db_path, read_only=True) as db:
        ids = sorted(i for i, _ in db.collection("c").find())
    # killed after writing its superblock but before fsync: on a live system that write is visible
    assert ids in (["base", "next"], ["base", "child", "next"])


def test_read_only_open_writes_nothing(db_path, tmp_path):
    with needle.Database.open(db_path) as db:
        db.create_collection("c", 3).insert_many(["a", "b"], np.eye(3, dtype=np.float32)[:2])
    os.remove(db_path + ".lock")
    os.remove(db_path + ".readers")  # a reader writes its slot there only where a writer made it (SPEC §7.3)
    before = {p: os.stat(tmp_path / p) for p in os.listdir(tmp_path)}
    out = run_python("""
        import sys, needle_mm as needle
        db = needle.Database.open(sys.argv[1], read_only=True)
        c = db.collection("c")
        print(c.count(), c.search([1, 0, 0], 1)[0].id, c.get("b").id, db.refresh(), len(c.find()))
        db.close()
    """, db_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "a", "b", "False", "2"]
    after = {p: os.stat(tmp_path / p) for p in os.listdir(tmp_path)}
    assert after.keys() == before.keys()  # no lock file, no journal, nothing
    for p in before:
        assert (after[p].st_size, after[p].st_mtime_ns) == (before[p].st_size, before[p].st_mtime_ns)


def test_readers_share_one_copy_of_the_file(tmp_path):
    """4 reader processes search one file; the Pss of its mapping, summed over
    them, is about one file (the page cache holds one copy), while each of
    them has most of the file resident."""
    spec = importlib.util.spec_from_file_location("bench_memory", os.path.join(ROOT, "tools", "bench_memory.py"))
    bench_memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_memory)
    path = str(tmp_path / "shared.needle")
    x = np.random.default_rng(0).normal(size=(20_000, 64)).astype(np.float32)
    with needle.Database.open(path) as db:
        db.create_collection("c", 64, "euclidean").insert_many([str(i) for i in range(len(x))], x)
    size_kb = os.path.getsize(path) / 1024
    reader = [sys.executable, os.path.join(ROOT, "tools", "memory_children.py"), "reader", "needle", path, "64"]
    group = bench_memory.run_group(reader, 4, dict(os.environ, PYTHONPATH=ROOT), path)
    file_pss = [p["file_pss"] for p in group["procs"]]
    file_rss = [p["file_rss"] for p in group["procs"]]
    print(f"file {size_kb:.0f} kB; file Pss per reader {file_pss}; Rss {file_rss}")
    assert min(file_rss) >= 0.5 * size_kb  # each reader really uses the file...
    assert sum(file_pss) <= 1.05 * size_kb  # ...and together they hold one copy of it
