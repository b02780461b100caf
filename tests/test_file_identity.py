"""One file, one lock, one numbering: symlinks, hard links, replacement by
rebuild (SPEC §7, §7.1) and what a commit reports when its sync fails."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT, run_python

import needle_mm as needle
from needle_mm.errors import DurabilityError, LinkedFileError, LockTimeoutError
from needle_mm.ops.verify import verify_file

DIM = 4


def _file(path, n=20):
    with needle.Database.open(path) as db:
        db.create_collection("c", DIM, "euclidean").insert_many(
            [f"r{i}" for i in range(n)], np.arange(n * DIM, dtype=np.float32).reshape(n, DIM))


def test_a_symlink_and_the_real_name_share_one_lock(tmp_path):
    real = str(tmp_path / "db.needle")
    alias = str(tmp_path / "alias.needle")
    _file(real)
    os.symlink(real, alias)
    env = dict(os.environ, PYTHONPATH=ROOT)
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, needle_mm as needle
        db = needle.Database.open(sys.argv[1])
        with db.transaction(exclusive=True):
            print("locked", flush=True)
            sys.stdin.readline()
    """), real], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "locked"
        with needle.Database.open(alias, lock_timeout=0.2) as db:
            db.collection("c").insert("new", np.ones(DIM))
            with pytest.raises(LockTimeoutError):
                db.save()
            assert db.dirty
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.wait(timeout=120) == 0
            db.save()
    finally:
        child.kill()
        child.wait()
        child.stdin.close()
        child.stdout.close()
    assert not os.path.exists(alias + ".lock")
    with needle.Database.open(real, read_only=True) as db:
        assert db.collection("c").count() == 21


def test_writers_refuse_a_hard_linked_file_and_readers_accept_it(tmp_path):
    real = str(tmp_path / "db.needle")
    _file(real)
    early = needle.Database.open(real)  # opened before the link existed
    os.link(real, str(tmp_path / "link.needle"))
    for name in ("db.needle", "link.needle"):
        with pytest.raises(LinkedFileError, match="hard links"):
            needle.Database.open(str(tmp_path / name))
        with needle.Database.open(str(tmp_path / name), read_only=True) as db:
            assert db.collection("c").count() == 20
    early.collection("c").insert("x", np.ones(DIM))
    generation = early.generation
    with pytest.raises(LinkedFileError):
        early.save()
    assert early.dirty and early.generation == generation
    os.remove(str(tmp_path / "link.needle"))
    early.save()
    early.close()
    assert verify_file(real).ok


def _compact_killed_after_rename(path):
    """`needle compact` killed between its rename and its superseded commit (SPEC §7.1 steps 3-4)."""
    proc = run_python("""
        import sys
        from needle_mm.ops.rebuild import compact
        compact(sys.argv[1])
    """, path, env={"NEEDLE_FAILPOINTS": "rebuild.after_replace=kill"})
    assert proc.returncode == -9, proc.stderr


def test_a_writer_that_had_the_file_open_saves_into_the_replacement(tmp_path):
    path = str(tmp_path / "db.needle")
    _file(path)
    writer = needle.Database.open(path, auto_refresh=False)  # not even its reads look at the path
    writer.collection("c")
    _compact_killed_after_rename(path)
    writer.collection("c").insert("after", np.ones(DIM))
    writer.save()
    generation = writer.generation
    writer.collection("c").insert("after2", np.ones(DIM))
    writer.save()
    assert writer.generation == generation + 1
    writer.close()
    with needle.Database.open(path, read_only=True) as db:
        c = db.collection("c")
        assert "after" in c and "after2" in c and c.count() == 22
    assert verify_file(path).ok


def test_generations_keep_growing_across_compact_and_rebuild(tmp_path):
    from needle_mm.ops.rebuild import compact, rebuild

    path = str(tmp_path / "db.needle")
    _file(path)
    with needle.Database.open(path) as db:
        for i in range(5):
            db.collection("c").upsert(f"r{i}", np.zeros(DIM))
            db.save()
        before = db.generation
    reader = needle.Database.open(path, read_only=True)
    assert reader.generation == before
    compact(path)
    assert reader.collection("c").count() == 20  # moved to the new file
    after_compact = reader.generation
    assert after_compact > before
    rebuild(path, m=8)
    reader.collection("c")
    assert reader.generation > after_compact
    reader.close()
    with needle.Database.open(path) as db:
        assert db.generation > after_compact
        db.collection("c").insert("z", np.ones(DIM))
    assert verify_file(path).ok


def test_a_stale_rebuild_copy_is_removed_by_the_next_writer(tmp_path):
    path = str(tmp_path / "db.needle")
    _file(path)
    proc = run_python("""
        import sys
        from needle_mm.ops.rebuild import compact
        compact(sys.argv[1])
    """, path, env={"NEEDLE_FAILPOINTS": "rebuild.before_replace=kill"})
    assert proc.returncode == -9
    leftovers = [p for p in os.listdir(tmp_path) if ".rebuild-" in p]
    assert leftovers, "the killed compact should have left its copy"
    with needle.Database.open(path, read_only=True):
        pass  # a reader writes nothing, removes nothing
    assert [p for p in os.listdir(tmp_path) if ".rebuild-" in p] == leftovers
    with needle.Database.open(path) as db:
        assert db.collection("c").count() == 20
    assert [p for p in os.listdir(tmp_path) if ".rebuild-" in p] == []


@pytest.mark.parametrize("failpoint", ["commit.after_superblock_write=eio"])
def test_a_failed_sync_after_the_superblock_write_is_reported_as_committed(tmp_path, failpoint):
    """The superblock reached the page cache (other processes see it); the
    writer must agree: DurabilityError, nothing pending, a transaction not rolled back."""
    path = str(tmp_path / "db.needle")
    _file(path)
    proc = run_python("""
        import sys, numpy as np, needle_mm as needle
        from needle_mm.errors import DurabilityError
        db = needle.Database.open(sys.argv[1])
        try:
            with db.transaction():
                db.collection("c").insert("t", np.ones(4))
        except DurabilityError as exc:
            print("durability", db.dirty, "t" in db.collection("c"), db.generation)
    """, path, env={"NEEDLE_FAILPOINTS": failpoint})
    assert proc.returncode == 0, proc.stderr
    kind, dirty, present, generation = proc.stdout.split()
    assert (kind, dirty, present) == ("durability", "False", "True")
    with needle.Database.open(path, read_only=True) as db:
        assert "t" in db.collection("c") and db.generation == int(generation)
    assert issubclass(DurabilityError, OSError)


def test_a_create_that_fails_leaves_no_lock_file(tmp_path):
    path = str(tmp_path / "db.needle")
    proc = run_python("""
        import sys, needle_mm as needle
        try:
            needle.Database.open(sys.argv[1])
        except OSError as exc:
            print("failed", exc.errno)
    """, path, env={"NEEDLE_FAILPOINTS": "io.1=enospc"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("failed")
    assert os.listdir(tmp_path) == []


def test_a_database_stays_with_the_file_it_opened(tmp_path, monkeypatch):
    """A relative path and a symlink are resolved once, at open: a later chdir
    or a retargeted symlink never makes a writer save into another file (its
    lock would not be that file's)."""
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        _file(str(tmp_path / d / "v.needle"), n=1)
    monkeypatch.chdir(tmp_path / "a")
    db = needle.Database.open("v.needle")
    db.collection("c").insert("written-in-a", np.ones(DIM))
    monkeypatch.chdir(tmp_path / "b")
    db.save()
    db.close()
    os.symlink(str(tmp_path / "a" / "v.needle"), str(tmp_path / "link.needle"))
    linked = needle.Database.open(str(tmp_path / "link.needle"))
    os.remove(str(tmp_path / "link.needle"))
    os.symlink(str(tmp_path / "b" / "v.needle"), str(tmp_path / "link.needle"))  # retargeted (blue/green)
    linked.collection("c").insert("also-in-a", np.ones(DIM))
    linked.save()
    linked.close()
    with needle.Database.open(str(tmp_path / "a" / "v.needle"), read_only=True) as a, \
            needle.Database.open(str(tmp_path / "b" / "v.needle"), read_only=True) as b:
        assert {"written-in-a", "also-in-a"} <= set(i for i, _ in a.collection("c").find())
        assert [i for i, _ in b.collection("c").find()] == ["r0"]
