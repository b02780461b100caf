"""Superseded bytes are reused, never under a reader that may still read them (SPEC §6.1, §7.3).

The bug feared most: a writer placing a new region in bytes that a pinned or
slow reader's snapshot still references, so that reader silently returns
another record's vector or metadata. Next: a dead reader blocking reuse
forever, a hostile free list making a writer overwrite live data, and a
version that cannot register being handed reused bytes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import needle_mm as needle
from conftest import ROOT
from needle_mm._storage import readers
from needle_mm.errors import CorruptFileError
from needle_mm.ops.verify import verify_file

DIM = 16
pytestmark = pytest.mark.skipif(not readers.reuse_supported(), reason="space reuse needs OFD locks (Linux)")


def _commit_rounds(db, rng, rounds, start):
    c = db.collection("c")
    for k in range(rounds):
        ids = [f"r{start + k}-{j}" for j in range(5)]
        c.insert_many(ids, rng.standard_normal((5, DIM)), [{"round": start + k, "j": j} for j in range(5)])
        c.update_metadata(f"b{(start + k) * 7 % 600}", {"touched": start + k})
        db.save()


def _base(path, n=600):
    rng = np.random.default_rng(0)
    with needle.Database.open(path) as db:
        db.create_collection("c", DIM, "cosine", m=4).insert_many(
            [f"b{i}" for i in range(n)], rng.standard_normal((n, DIM)), [{"i": i} for i in range(n)])
    return rng


def _file_length(db):
    return db.engine.snapshot.superblock.file_length


def _table(path):
    from needle_mm._storage.io import FileIO

    io = FileIO(path, writable=False)
    try:
        return readers.table_for(os.path.realpath(path), io.file_uuid)
    finally:
        io.close()


def test_small_commits_stop_growing_the_file(tmp_path):
    path = str(tmp_path / "r.needle")
    rng = _base(path)
    with needle.Database.open(path) as db:
        lengths = [_file_length(db)]
        for k in range(4):
            _commit_rounds(db, rng, 20, 20 * k)
            lengths.append(_file_length(db))
        assert db.engine.snapshot.catalog.free  # released extents are listed
    first, last = lengths[1] - lengths[0], lengths[4] - lengths[2]
    # without reuse every round of 20 commits grows the file alike; with it the
    # later rounds fit into what the earlier ones released
    assert last < 0.25 * first, lengths
    report = verify_file(path)
    assert report.ok, report.problems


PINNED_READER = """
    import sys, json, numpy as np, needle_mm as needle
    db = needle.Database.open(sys.argv[1], read_only=True, auto_refresh=False)
    c = db.collection("c")
    q = np.random.default_rng(5).standard_normal((8, 16))
    ids = [f"b{i}" for i in range(0, 600, 13)]
    def answers():
        hits = [[(h.id, h.distance) for h in c.search(v, 5)] for v in q]
        recs = [(e.id, e.vector.tobytes().hex(), e.metadata) for e in (c.get(i) for i in ids)]
        found = sorted(i for i, _ in c.find({"i": {"$lt": 40}}))
        return json.dumps([hits, recs, found, c.count()])
    first = answers()
    print("ready", db.generation, flush=True)
    for line in sys.stdin:
        print("same" if answers() == first else "DIFFERENT", flush=True)
"""


def test_a_pinned_reader_in_another_process_sees_the_same_bytes_across_reusing_commits(tmp_path):
    path = str(tmp_path / "r.needle")
    rng = _base(path)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(PINNED_READER), path], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().split()[0] == "ready"
        with needle.Database.open(path) as db:
            table = _table(path)
            pinned = table.oldest_read()
            for k in range(6):
                _commit_rounds(db, rng, 10, 10 * k)
                child.stdin.write("check\n")
                child.stdin.flush()
                assert child.stdout.readline().strip() == "same", f"round {k}"
                assert table.oldest_read() == pinned  # the pinned reader holds reuse back
    finally:
        child.stdin.close()
        child.wait(timeout=60)
        child.stdout.close()
    assert verify_file(path).ok


def test_a_pinned_reader_in_this_process_keeps_its_answers(tmp_path):
    path = str(tmp_path / "r.needle")
    rng = _base(path)
    pinned = needle.Database.open(path, read_only=True, auto_refresh=False)
    c = pinned.collection("c")
    q = rng.standard_normal((6, DIM))
    want = [[(h.id, h.distance) for h in c.search(v, 5)] for v in q]
    meta = [c.get(f"b{i}").metadata for i in range(0, 600, 17)]
    with needle.Database.open(path) as db:
        start = _file_length(db)
        for k in range(5):
            _commit_rounds(db, rng, 12, 12 * k)
            assert [[(h.id, h.distance) for h in c.search(v, 5)] for v in q] == want
            assert [c.get(f"b{i}").metadata for i in range(0, 600, 17)] == meta
        held = _file_length(db)
        pinned.close()
        del c, pinned
        for k in range(5):  # let go: the space the pin held back is reused
            _commit_rounds(db, rng, 12, 100 + 12 * k)
        assert _file_length(db) - held < 0.25 * (held - start)


def test_a_killed_reader_does_not_block_reuse(tmp_path):
    path = str(tmp_path / "r.needle")
    _base(path)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(PINNED_READER), path], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    generation = int(child.stdout.readline().split()[1])
    table = _table(path)
    with needle.Database.open(path) as db:
        db.collection("c").insert("x", np.ones(DIM))
        db.save()
        assert table.oldest_read() == generation  # the child holds it
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        child.stdin.close()
        child.stdout.close()
        assert table.oldest_read() == db.generation  # only our own snapshot is left


def test_a_reader_that_cannot_register_creates_nothing_and_works(tmp_path):
    """On a read-only medium the table cannot be made (no writer can exist there)."""
    path = str(tmp_path / "r.needle")
    _base(path)
    os.remove(path + ".readers")
    code = """
        import errno, os, sys
        real_open = os.open
        def open_(p, flags, *a):
            if str(p).endswith(".readers"):
                raise OSError(errno.EROFS, "Read-only file system", p)
            return real_open(p, flags, *a)
        os.open = open_
        import needle_mm as needle
        with needle.Database.open(sys.argv[1], read_only=True) as db:
            print(db.collection("c").count(), len(db.collection("c").search([1.0] * 16, 3)))
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code), path], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
    assert out.stdout.split() == ["600", "3"], out.stderr
    assert not os.path.exists(path + ".readers")


def test_bytes_an_older_version_could_read_are_never_reused(tmp_path):
    """A file written before space reuse existed: everything below its length
    then (the reuse floor) stays as it was, however many commits follow."""
    path = str(tmp_path / "old.needle")
    shutil.copy(os.path.join(ROOT, "format", "golden", "deletes.needle"), path)
    with needle.Database.open(path, read_only=True) as db:
        snap = db.engine.snapshot
        used = [(r.offset, r.length) for s in snap.collection("d").segments
                for r in (*s.regions.values(), *(c.region for c in s.columns))]
        used.append((snap.superblock.catalog_offset, snap.superblock.catalog_length))
        length = snap.superblock.file_length
    with open(path, "rb") as f:
        before = f.read()
    rng = np.random.default_rng(1)
    with needle.Database.open(path) as db:
        c = db.collection("d")
        for k in range(15):
            c.upsert(f"r{k}", rng.standard_normal(3), {"k": k})
            db.save()
        floor = db.engine.snapshot.catalog.reuse_floor
        assert floor == length
        assert all(f[0] >= floor for f in db.engine.snapshot.catalog.free)
    with open(path, "rb") as f:
        after = f.read()
    for offset, size in used:  # every byte the old generation references is as it was
        assert after[offset:offset + size] == before[offset:offset + size]


def test_a_free_list_overlapping_live_data_is_refused(tmp_path):
    import importlib.util

    path = str(tmp_path / "r.needle")
    rng = _base(path)
    with needle.Database.open(path) as db:
        _commit_rounds(db, rng, 3, 0)
    spec = importlib.util.spec_from_file_location("fuzz_files", os.path.join(ROOT, "tools", "fuzz_files.py"))
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    with open(path, "rb") as f:
        data = f.read()
    sb, catalog = fuzz.current(data)
    vectors = catalog["collections"][0]["segments"][0]["regions"]["vectors"]
    catalog["free"] = sorted(catalog["free"] + [[vectors[0], 4096, 1, 0]])
    with open(path, "wb") as f:
        f.write(fuzz.with_catalog(data, sb, catalog))
    assert not verify_file(path).ok
    with needle.Database.open(path) as db:
        stored = db.collection("c").get("b0").vector
        db.collection("c").insert("new", np.ones(DIM))
        with pytest.raises(CorruptFileError, match="free-space list"):
            db.save()
        db.engine.close(warn=False)
    with needle.Database.open(path, read_only=True) as db:
        np.testing.assert_array_equal(db.collection("c").get("b0").vector, stored)


def test_space_a_generation_released_is_written_only_once_it_is_durable(tmp_path):
    """A writer killed after writing its superblock, before syncing it: the
    next writer builds on that generation, but a power cut could still bring
    back the one before, which uses what the killed commit released. So the
    next writer syncs the file before it writes any of those bytes."""
    import json

    from conftest import run_python

    path = str(tmp_path / "r.needle")
    rng = _base(path)
    with needle.Database.open(path) as db:
        _commit_rounds(db, rng, 6, 0)
    out = run_python("""
        import sys, numpy as np, needle_mm as needle
        db = needle.Database.open(sys.argv[1])
        c = db.collection("c")
        c.insert_many([f"k{i}" for i in range(40)], np.random.default_rng(9).standard_normal((40, 16)))
        db.save()
    """, path, env={"NEEDLE_FAILPOINTS": "commit.after_superblock_write"})
    assert out.returncode == -9, out.stderr
    with needle.Database.open(path, read_only=True) as db:
        g = db.generation
        released = [(f[0], f[0] + f[1]) for f in db.engine.snapshot.catalog.free if f[2] == g]
    assert released, "the killed commit released something"
    trace = tmp_path / "trace"
    out = run_python("""
        import sys, numpy as np, needle_mm as needle
        with needle.Database.open(sys.argv[1]) as db:
            db.collection("c").insert_many([f"m{i}" for i in range(5)], np.ones((5, 16)))
    """, path, env={"NEEDLE_IO_TRACE": str(trace)})
    assert out.returncode == 0, out.stderr
    raw, pos, ops = trace.read_bytes(), 0, []
    while pos < len(raw):
        end = raw.index(b"\n", pos)
        op = json.loads(raw[pos:end])
        pos = end + 1 + (op["length"] if op["op"] == "pwrite" else 0)
        ops.append(op)
    touching = [i for i, op in enumerate(ops) if op["op"] in ("pwrite", "punch_hole")
                and any(a < op["offset"] + op["length"] and op["offset"] < b for a, b in released)]
    if touching:  # it may also have placed nothing there; if it did, a sync came first
        assert any(op["op"] == "fsync" for op in ops[:touching[0]])


def test_compact_gives_the_file_its_own_reader_table(tmp_path):
    from needle_mm.ops import compact

    path = str(tmp_path / "r.needle")
    rng = _base(path, n=3000)
    with needle.Database.open(path) as db:
        c = db.collection("c")
        c.delete([f"b{i}" for i in range(600, 3000)])  # the rounds below touch b0..b599
        db.save()
    old = _table(path)
    compact(path)
    with needle.Database.open(path) as db:
        _commit_rounds(db, rng, 4, 0)
        assert db.engine.snapshot.catalog.reuse_floor <= _file_length(db)
    new = _table(path)
    assert new is not None and new.file_uuid != old.file_uuid
    with needle.Database.open(path, read_only=True) as db:
        assert db.collection("c").count() == 600 + 4 * 5
    assert verify_file(path).ok


def test_an_empty_region_frees_nothing(tmp_path):
    """A sparse segment whose vectors are all empty has zero-length blobs."""
    path = str(tmp_path / "s.needle")
    with needle.Database.open(path) as db:
        c = db.create_collection("s", 100, "dot", sparse=True)
        c.insert_many([f"a{i}" for i in range(100)], [{"indices": [], "values": []}] * 100)
        db.save()
        c.insert_many(["b1"], [{"indices": [2, 3], "values": [1.0, 1.0]}])
        db.save()
        assert all(f[1] > 0 for f in db.engine.snapshot.catalog.free)
    with needle.Database.open(path, read_only=True) as db:
        assert db.collection("s").count() == 101
    assert verify_file(path).ok


READ_ONLY_TABLE_READER = """
    import errno, os, sys, json
    real_open = os.open
    def open_(p, flags, *a):  # this process may read the reader table, not write it
        if str(p).endswith(".readers") and flags & os.O_RDWR:
            raise OSError(errno.EACCES, "Permission denied", p)
        return real_open(p, flags, *a)
    os.open = open_
    import numpy as np, needle_mm as needle
    db = needle.Database.open(sys.argv[1], read_only=True, auto_refresh=False)
    c = db.collection("c")
    q = np.random.default_rng(5).standard_normal((8, 16))
    def answers():
        return json.dumps([[(h.id, h.distance) for h in c.search(v, 5)] for v in q]
                          + [c.get(f"b{i}").metadata for i in range(0, 600, 13)])
    first = answers()
    print("ready", flush=True)
    for line in sys.stdin:
        print("same" if answers() == first else "DIFFERENT", flush=True)
"""


def test_a_reader_that_may_not_write_the_table_holds_back_all_reuse(tmp_path):
    path = str(tmp_path / "r.needle")
    rng = _base(path)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(READ_ONLY_TABLE_READER), path],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "ready"
        with needle.Database.open(path) as db:
            assert _table(path).oldest_read() == 0  # someone unnamed reads: reuse nothing
            for k in range(4):
                _commit_rounds(db, rng, 8, 8 * k)
                child.stdin.write("check\n")
                child.stdin.flush()
                assert child.stdout.readline().strip() == "same"
    finally:
        child.stdin.close()
        child.wait(timeout=60)
        child.stdout.close()


def test_a_removed_reader_table_is_made_again(tmp_path):
    path = str(tmp_path / "r.needle")
    rng = _base(path)
    with needle.Database.open(path) as db:
        _commit_rounds(db, rng, 2, 0)
        os.remove(path + ".readers")
        _commit_rounds(db, rng, 2, 10)  # saves work, and make a new table
        assert os.path.exists(path + ".readers")
        assert _table(path).oldest_read() == db.generation
    assert verify_file(path).ok


def test_a_writer_never_replaces_the_table_of_its_file(tmp_path):
    """A writer that may not write the table leaves it (others' slots are in it) and reuses nothing."""
    from conftest import run_python

    path = str(tmp_path / "r.needle")
    _base(path)
    inode = os.stat(path + ".readers").st_ino
    out = run_python("""
        import errno, os, sys
        real_open = os.open
        def open_(p, flags, *a):
            if str(p).endswith(".readers") and flags & os.O_RDWR:
                raise OSError(errno.EACCES, "Permission denied", p)
            return real_open(p, flags, *a)
        os.open = open_
        import numpy as np, needle_mm as needle
        with needle.Database.open(sys.argv[1]) as db:
            for k in range(3):
                db.collection("c").insert(f"w{k}", np.ones(16))
                db.save()
        print("ok")
    """, path)
    assert out.stdout.strip() == "ok", out.stderr
    assert os.stat(path + ".readers").st_ino == inode
    assert verify_file(path).ok


def test_an_upper_row_naming_a_node_below_its_layer_is_refused(tmp_path):
    from needle_mm._format.segment import graph_problems

    path = str(tmp_path / "h.needle")
    rng = np.random.default_rng(0)
    with needle.Database.open(path) as db:
        db.create_collection("c", 8, m=4).insert_many([str(i) for i in range(2000)],
                                                       rng.standard_normal((2000, 8)))
    with needle.Database.open(path, read_only=True) as db:
        view = db.engine.snapshot.segments("c")[0]
        ref = view.descriptor.regions["hnsw_upper_links"]
        low = int(np.flatnonzero(np.asarray(view.hnsw_levels) == 0)[0])
    up = np.fromfile(path, dtype="<i4", count=ref.length // 4, offset=ref.offset)
    up[up >= 0] = low
    with open(path, "r+b") as f:
        f.seek(ref.offset)
        f.write(up.tobytes())
    with needle.Database.open(path) as db:
        assert "below that layer" in " ".join(graph_problems(db.engine.snapshot.segments("c")[0]))
        db.collection("c").insert("x", np.ones(8))
        with pytest.raises(CorruptFileError, match="below that layer"):
            db.save()
        db.engine.close(warn=False)


def test_empty_regions_inside_freed_space_are_not_overlaps(tmp_path):
    """A sparse collection whose vectors are all empty has zero-length regions; one
    left at an offset inside space a later commit frees owns no bytes there (found
    by the state machine: the third save refused the file as damaged)."""
    path = tmp_path / "sparse.needle"
    empty = {"indices": [], "values": []}
    with needle.Database.open(path) as db:
        coll = db.create_collection("s", 100, "dot", sparse=True)
        for step in range(4):
            coll.upsert_many([f"id{step}"], [empty])
            db.save()
            if step:
                coll.delete([f"id{step - 1}"])
                db.save()
        assert coll.count() == 1
    assert verify_file(str(path)).ok
