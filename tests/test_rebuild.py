"""`needle rebuild` / `needle compact`: a new file replaces the old one atomically,
and processes that have the old one open move to it without losing anything."""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_cli import needle_cmd
from test_hnsw import real_set

import needle_mm as needle
from needle_mm._format.catalog import catalog_format
from needle_mm.errors import InvalidArgumentError
from needle_mm.ops.rebuild import rebuild
from needle_mm.ops.verify import verify_file


def _contents(db, name):
    c = db.collection(name)
    return {i: (c.get(i).vector.tobytes(), m) for i, m in c.find()}


def _churned_file(path, n=3000, dim=24):
    rng = np.random.default_rng(7)
    with needle.Database.open(path) as db:
        c = db.create_collection("docs", dim, m=12)
        c.insert_many([f"d{i}" for i in range(n)], rng.standard_normal((n, dim)), [{"i": i} for i in range(n)])
        db.save()
        for j in range(4):  # several commits, replacements and deletes: garbage to reclaim
            c.upsert_many([f"d{i}" for i in range(j, n, 7)], rng.standard_normal((len(range(j, n, 7)), dim)),
                          [{"i": i, "round": j} for i in range(j, n, 7)])
            db.save()
        c.delete([f"d{i}" for i in range(0, n, 3)])
        db.create_collection("other", 3, "euclidean").insert_many(["x", "y"], [[1, 2, 3], [4, 5, 6]], [{"a": 1}, None])


def test_rebuild_keeps_every_live_record_and_shrinks_the_file(tmp_path):
    path = str(tmp_path / "v.needle")
    _churned_file(path)
    with needle.Database.open(path, read_only=True) as db:
        before = {name: _contents(db, name) for name in db.list_collections()}
    size_before = os.path.getsize(path)
    out = needle_cmd("compact", path)
    assert out.returncode == 0, out.stderr
    assert "compacted" in out.stdout and f"{sum(len(v) for v in before.values()):,} records" in out.stdout
    assert os.path.getsize(path) < size_before / 2
    assert verify_file(path).ok
    with needle.Database.open(path, read_only=True) as db:
        assert {name: _contents(db, name) for name in db.list_collections()} == before
        assert all(len(db.engine.snapshot.collection(name).segments) == 1 for name in before)
        assert db.collection("docs").config.m == 12
    assert sorted(os.listdir(tmp_path)) == ["v.needle", "v.needle.lock", "v.needle.readers"]


def test_rebuild_with_new_parameters_keeps_recall(tmp_path):
    train, test, gt, _ = real_set("siftsmall-128-euclidean")
    path = str(tmp_path / "s.needle")
    with needle.Database.open(path) as db:
        c = db.create_collection("sift", 128, "euclidean", m=8, ef_construction=64)
        for start in range(0, len(train), 2500):  # four commits
            c.insert_many([str(i) for i in range(start, start + 2500)], train[start:start + 2500])
            db.save()
    out = needle_cmd("rebuild", path, "--m", "16", "--ef-construction", "200", "--ef-search", "80")
    assert out.returncode == 0, out.stderr
    with needle.Database.open(path, read_only=True) as db:
        c = db.collection("sift")
        assert (c.config.m, c.config.ef_construction, c.config.ef_search) == (16, 200, 80)
        rows = c.search_batch(test, 10)
    recall = np.mean([len({int(r.id) for r in row} & set(gt[q].tolist())) / 10 for q, row in enumerate(rows)])
    assert recall >= 0.95


def test_open_processes_move_to_the_new_file(tmp_path):
    path = str(tmp_path / "v.needle")
    _churned_file(path)
    follower = needle.Database.open(path, read_only=True)  # auto_refresh: moves at its next operation
    pinned = needle.Database.open(path, read_only=True, auto_refresh=False)
    writer = needle.Database.open(path)
    count = follower.collection("docs").count()
    writer.collection("docs").insert("late", np.ones(24), {"late": True})  # pending across the rebuild
    old_inode = os.stat(path).st_ino

    report = rebuild(path, m=6)
    assert report.replaced and os.stat(path).st_ino != old_inode

    assert follower.collection("docs").config.m == 6
    assert follower.collection("docs").count() == count
    assert pinned.collection("docs").config.m == 12  # still its snapshot of the old file
    assert pinned.refresh() and pinned.collection("docs").config.m == 6

    writer.save()  # lands in the new file, not in the replaced inode
    assert follower.collection("docs").get("late").metadata == {"late": True}
    assert pinned.refresh() and "late" in pinned.collection("docs")
    for db in (follower, pinned, writer):
        db.close()
    assert verify_file(path).ok


def test_refresh_notices_a_replacement_without_the_marker(tmp_path):
    """A rebuild killed between os.replace and its last commit to the old file:
    an explicit refresh still finds the new file (it compares inodes)."""
    path, other = str(tmp_path / "v.needle"), str(tmp_path / "w.needle")
    _churned_file(path)
    reader = needle.Database.open(path, read_only=True)
    rebuild(path, other, m=5)
    os.replace(other, path)
    assert reader.collection("docs").config.m == 12
    assert reader.refresh() and reader.collection("docs").config.m == 5
    reader.close()


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def test_rebuild_out_leaves_the_source_alone_and_rejects_bad_options(tmp_path):
    path = str(tmp_path / "v.needle")
    _churned_file(path)
    raw = _bytes(path)
    out = needle_cmd("rebuild", path, "--out", str(tmp_path / "new.needle"), "--m", "20")
    assert out.returncode == 0, out.stderr
    assert _bytes(path) == raw and verify_file(str(tmp_path / "new.needle")).ok
    bad = needle_cmd("rebuild", path, "--dtype", "f8")
    assert bad.returncode == 2 and "invalid choice: 'f8'" in bad.stderr
    with pytest.raises(InvalidArgumentError, match="dtype 'bf16' is not supported"):
        rebuild(path, dtype="bf16")
    with pytest.raises(InvalidArgumentError, match="already exists"):
        rebuild(path, str(tmp_path / "new.needle"))
    with pytest.raises(InvalidArgumentError, match="m must be a positive integer"):
        rebuild(path, m=0)
    assert _bytes(path) == raw


def test_rebuild_to_f16_halves_the_vectors_and_keeps_every_record(tmp_path):
    """`needle rebuild --dtype f16`: dense collections store half floats (the
    records' vectors rounded to float16, nothing else changed), sparse ones keep
    float32; the file is smaller, verifies, and searches as well."""
    path = str(tmp_path / "v.needle")
    _churned_file(path)
    with needle.Database.open(path) as db:
        db.create_collection("terms", 1000, "dot", sparse=True).insert("t", {"indices": [3, 9], "values": [0.5, 2.0]})
    with needle.Database.open(path, read_only=True) as db:
        before = {name: _contents(db, name) for name in ("docs", "other")}
        queries = np.random.default_rng(1).standard_normal((20, 24)).astype(np.float32)
        exact = [[r.id for r in row] for row in db.collection("docs").search_batch(queries, 10, exact=True)]
    size_before = os.path.getsize(path)
    out = needle_cmd("rebuild", path, "--dtype", "f16")
    assert out.returncode == 0, out.stderr
    assert verify_file(path).ok and os.path.getsize(path) < size_before
    info = needle_cmd("info", path)
    assert "docs: " in info.stdout and "dtype f16" in info.stdout.split("docs: ")[1].split("\n")[0]
    with needle.Database.open(path, read_only=True) as db:
        assert catalog_format(db.engine.snapshot.catalog.collections.values()) >= 3  # f16 needs 3 (SPEC §5.8)
        assert [db.collection(n).config.dtype for n in ("docs", "other", "terms")] == ["f16", "f16", "f32"]
        for name, records in before.items():
            after = _contents(db, name)
            assert after.keys() == records.keys()
            for i, (vec, meta) in records.items():
                stored = np.frombuffer(vec, dtype=np.float32)
                assert after[i][1] == meta
                assert np.frombuffer(after[i][0], dtype=np.float32).tolist() == \
                    stored.astype(np.float16).astype(np.float32).tolist()
        docs = db.collection("docs")
        graph = [[r.id for r in row] for row in docs.search_batch(queries, 10)]
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(graph, exact)]) >= 0.9
        assert db.collection("terms").get("t").vector.to_dict() == {"indices": [3, 9], "values": [0.5, 2.0]}
        assert db.collection("terms").search({"indices": [9], "values": [1.0]}, 1)[0].id == "t"


def test_rebuild_to_f16_refuses_values_beyond_its_range_and_leaves_the_file_alone(tmp_path):
    path = str(tmp_path / "v.needle")
    with needle.Database.open(path) as db:
        db.create_collection("c", 2, "euclidean").insert_many(["ok", "huge"], [[1, 2], [1e6, 0]])
    raw = _bytes(path)
    out = needle_cmd("rebuild", path, "--dtype", "f16")
    assert out.returncode != 0 and "beyond float16's range" in out.stderr
    assert _bytes(path) == raw
    assert sorted(os.listdir(tmp_path)) == ["v.needle", "v.needle.lock", "v.needle.readers"]
