"""Filtered search on real data, and metadata columns that follow every write.

The planner's three paths each get a selectivity that takes them: exact
(< 2 % passing: results must equal brute force), the two-hop walk (10 %, 14 %)
and the plain walk (25 %, 50 %), whose recall@10 must be >= 0.95.
"""

from __future__ import annotations

import numpy as np
import pytest

import needle_mm as needle
from conftest import run_python
from needle_mm.ops.verify import verify_file


@pytest.fixture(scope="module")
def bucketed(tmp_path_factory, demo_data):
    path = str(tmp_path_factory.mktemp("filtered") / "f.needle")
    x = demo_data["vectors"]
    bucket = np.random.default_rng(1).permutation(len(x)) % 100
    with needle.Database.open(path) as db:
        db.create_collection("c", x.shape[1]).insert_many(
            [str(i) for i in range(len(x))], x,
            [{"bucket": int(b), "src": s, "tags": [f"t{b % 7}", "all"]} for b, s in zip(bucket, demo_data["sources"])])
    return path, x, bucket


def _truth(x, q, allowed, k=10):
    idx = np.flatnonzero(allowed)
    return [idx[row].tolist() for row in np.argsort(-(q @ x[idx].T), axis=1)[:, :k]]


@pytest.mark.parametrize("below,path", [(1, "exact"), (10, "two-hop"), (14, "two-hop"), (25, "plain"), (50, "plain")])
def test_filtered_recall(bucketed, demo_data, below, path):
    db_path, x, bucket = bucketed
    rng = np.random.default_rng(2)
    queries = np.concatenate([demo_data["queries"], x[rng.choice(len(x), 50)] + 0.05 * rng.normal(size=(50, 384))])
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    flt = {"bucket": {"$lt": below}}
    gt = _truth(x, queries, bucket < below)
    with needle.Database.open(db_path, read_only=True) as db:
        c = db.collection("c")
        found = [[int(r.id) for r in c.search(q, 10, filter=flt)] for q in queries]
        batch = [[int(r.id) for r in row] for row in c.search_batch(queries, 10, filter=flt)]
    assert found == batch
    assert all(bucket[i] < below for row in found for i in row)
    r = np.mean([len(set(f) & set(g)) / 10 for f, g in zip(found, gt)])
    print(f"{path}: recall@10 {r:.3f}")
    if path == "exact":
        assert found == gt
    assert r >= 0.95


def test_columns_follow_upserts_updates_and_deletes(db_path):
    with needle.Database.open(db_path) as db:
        c = db.create_collection("c", 2, "euclidean")
        c.insert_many([f"r{i}" for i in range(100)], np.random.default_rng(0).normal(size=(100, 2)),
                      [{"color": "red" if i % 2 else "blue", "n": i} for i in range(100)])
    for step in range(4):  # several commits: several chunks, merged as they go
        with needle.Database.open(db_path) as db:
            c = db.collection("c")
            c.update_metadata(f"r{step}", {"color": "green", "n": -step})
            c.upsert(f"r{10 + step}", [0, 0], {"color": "green"})
            c.delete(f"r{20 + step}")
            c.insert(f"new{step}", [1, 1], {"color": "red", "n": 1000 + step})
    with needle.Database.open(db_path, read_only=True) as db:
        c = db.collection("c")
        seg = db.engine.snapshot.collection("c").segments[0]
        assert len(seg.columns) >= 2 and sum(ch.count for ch in seg.columns) == seg.n
        green = sorted(i for i, _ in c.find({"color": "green"}))
        assert green == sorted([f"r{s}" for s in range(4)] + [f"r{10 + s}" for s in range(4)])
        assert c.count({"color": "blue"}) == 50 - 2 - 2 - 2  # r0,r2 updated; r10,r12 upserted; r20,r22 deleted
        assert c.count({"n": {"$gte": 1000}}) == 4
        assert c.count({"n": {"$exists": False}}) == 4  # the upserts carry no "n"
    assert verify_file(db_path).ok


def test_verify_catches_columns_that_disagree_with_the_log(db_path):
    with needle.Database.open(db_path) as db:
        db.create_collection("c", 2).insert_many(["a", "b"], np.ones((2, 2)), [{"k": "x"}, {"k": "y"}])
    out = run_python("""
        import sys, needle_mm as needle
        from needle_mm._format.header import crc32, SUPERBLOCK_OFFSETS
        path = sys.argv[1]
        with needle.Database.open(path, read_only=True) as db:
            ref = db.engine.snapshot.collection("c").segments[0].columns[0].region
        data = bytearray(open(path, "rb").read())
        chunk = data[ref.offset:ref.offset + ref.length]
        i = chunk.rindex(b"xy")  # the string dictionary: swap the two strings
        chunk[i:i + 2] = b"yx"
        data[ref.offset:ref.offset + ref.length] = chunk
        open(path, "wb").write(data)
    """, db_path)
    assert out.returncode == 0, out.stderr
    report = verify_file(db_path)
    assert not report.ok and any("column chunk" in p for p in report.problems), report.problems


def test_a_cached_filter_never_returns_what_this_process_deleted_or_replaced(bucketed, tmp_path):
    """The per-segment cache of a filter's bitmap and passing rows is only used
    with the segment's own tombstones: records this process hides since must
    stay hidden, and saving must not serve the old answer either."""
    import shutil

    src, x, bucket = bucketed
    path = str(tmp_path / "copy.needle")
    shutil.copy(src, path)
    flt = {"bucket": 3}  # 1 % passing: the exact path over the listed rows
    q = x[int(np.flatnonzero(bucket == 3)[0])]
    with needle.Database.open(path) as db:
        c = db.collection("c")
        first = [r.id for r in c.search(q, 5, filter=flt)]
        assert first == [r.id for r in c.search(q, 5, filter=flt)]  # served from the cache
        c.delete(first[0])
        c.upsert(first[1], x[0], {"bucket": 4})  # no longer passes
        after = [r.id for r in c.search(q, 5, filter=flt)]
        assert first[0] not in after and first[1] not in after and after[:3] == first[2:5]
        assert c.count(flt) == int((bucket == 3).sum()) - 2
        db.save()
        assert [r.id for r in c.search(q, 5, filter=flt)] == after
        exact = [r.id for r in c.search(q, 5, filter=flt, exact=True)]
        assert exact == after
