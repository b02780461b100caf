"""The HNSW index: recall on real data, persistence, many commits, deletes, hostile graphs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import needle_mm as needle
from conftest import ROOT, brute_force, run_python

SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")


def real_set(name: str):
    """(train, queries, exact top-10 ids, metric) of a dataset in ../shared/data, else skip."""
    base = os.path.join(SHARED, name)
    if not os.path.isdir(base):
        pytest.skip(f"{base} not present")
    with open(os.path.join(base, "meta.json")) as f:
        metric = json.load(f)["metric"]
    if os.path.exists(os.path.join(base, "train.npy")):
        x, q = np.load(os.path.join(base, "train.npy")), np.load(os.path.join(base, "test.npy"))
    else:
        x, q = np.load(os.path.join(base, "train.f16.npy")), np.load(os.path.join(base, "test.f16.npy"))
    x, q = x.astype(np.float32), q.astype(np.float32)
    if metric == "cosine":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q, np.load(os.path.join(base, "gt.npy"))[:, :10], metric


def recall(coll, queries, gt, **kw) -> float:
    hits = 0
    for row, qq in zip(gt, queries):
        hits += len({int(r.id) for r in coll.search(qq, 10, **kw)} & set(row.tolist()))
    return hits / gt.size


@pytest.fixture(scope="module")
def built_sets(tmp_path_factory):
    """Both real sets built once with default parameters (M=16, ef_construction=200)."""
    out = {}
    for name in ("minilm-384-cosine-10k", "siftsmall-128-euclidean"):
        x, q, gt, metric = real_set(name)
        path = str(tmp_path_factory.mktemp("hnsw") / f"{name}.needle")
        with needle.Database.open(path) as db:
            db.create_collection("c", x.shape[1], metric).insert_many([str(i) for i in range(len(x))], x)
        out[name] = (path, x, q, gt, metric)
    return out


@pytest.mark.parametrize("name", ["minilm-384-cosine-10k", "siftsmall-128-euclidean"])
def test_recall_at_default_ef(built_sets, name):
    path, x, q, gt, _ = built_sets[name]
    with needle.Database.open(path, read_only=True) as db:
        c = db.collection("c")
        r = recall(c, q, gt)
        assert r >= 0.95, r
        assert recall(c, q, gt, ef=16) < recall(c, q, gt, ef=200)  # ef trades speed for recall
        assert recall(c, q, gt, exact=True) >= 0.999  # float32 ties aside, exact is exact


def test_batch_equals_single_and_other_process_sees_identical_results(built_sets):
    path, x, q, gt, _ = built_sets["siftsmall-128-euclidean"]
    with needle.Database.open(path, read_only=True) as db:
        c = db.collection("c")
        single = [[(r.id, round(r.distance, 3)) for r in c.search(qq, 10)] for qq in q]
        batch = [[(r.id, round(r.distance, 3)) for r in row] for row in c.search_batch(q, 10)]
        assert single == batch
    np.save(path + ".q.npy", q)
    out = run_python("""
        import sys, json, numpy as np, needle_mm as needle
        db = needle.Database.open(sys.argv[1], read_only=True)
        c = db.collection("c")
        q = np.load(sys.argv[1] + ".q.npy")
        print(json.dumps([[(r.id, round(r.distance, 3)) for r in c.search(qq, 10)] for qq in q]))
    """, path)
    assert out.returncode == 0, out.stderr
    assert [[tuple(p) for p in row] for row in json.loads(out.stdout)] == single


def test_build_is_deterministic(tmp_path, demo_data):
    x = demo_data["vectors"][:800]
    links = []
    for run in range(2):
        with needle.Database.open(tmp_path / f"{run}.needle") as db:
            c = db.create_collection("c", 384, seed=7)
            c.insert_many([str(i) for i in range(500)], x[:500])
            db.save()
            c.insert_many([str(i) for i in range(500, 800)], x[500:])
        with needle.Database.open(tmp_path / f"{run}.needle", read_only=True) as db:
            v = db.engine.snapshot.segments("c")[0]
            links.append((np.array(v.hnsw_links0), np.array(v.hnsw_upper_links), v.descriptor.hnsw))
    assert np.array_equal(links[0][0], links[1][0]) and np.array_equal(links[0][1], links[1][1])
    assert links[0][2] == links[1][2]


def test_many_small_commits_keep_recall_and_one_segment(tmp_path):
    x, q, _, metric = real_set("siftsmall-128-euclidean")
    x = x[:4000]
    path = tmp_path / "commits.needle"
    db = needle.Database.open(path)
    c = db.create_collection("c", 128, metric)
    reader = needle.Database.open(path, read_only=True)
    for s in range(0, 4000, 100):
        c.insert_many([str(i) for i in range(s, s + 100)], x[s:s + 100])
        db.save()
        reader.refresh()
        rc = reader.collection("c")
        assert rc.count() == s + 100
        newest = rc.search(x[s + 50], 1)[0]  # a just-committed record is found through the graph
        assert newest.id == str(s + 50) and newest.distance == pytest.approx(0, abs=1e-3)
    segs = reader.engine.snapshot.collection("c").segments
    assert len(segs) == 1 and segs[0].n == 4000
    hits = 0
    for qq in q:
        want, _ = brute_force(x, qq, 10, metric)
        hits += len({int(r.id) for r in reader.collection("c").search(qq, 10)} & set(want.tolist()))
    assert hits / (10 * len(q)) >= 0.95
    from needle_mm.ops.verify import verify_file

    assert verify_file(str(path)).ok


def test_deleted_records_are_never_returned(tmp_path, demo_data):
    x = demo_data["vectors"]
    with needle.Database.open(tmp_path / "d.needle") as db:
        c = db.create_collection("c", 384)
        c.insert_many([str(i) for i in range(len(x))], x)
        db.save()
        gone = {str(i) for i in range(0, len(x), 3)}
        c.delete(sorted(gone))
        for qq in x[:60:3]:  # queries equal to deleted records
            assert not {r.id for r in c.search(qq, 20)} & gone  # pending deletes hide them
        db.save()
        for qq in x[:60:3]:
            res = c.search(qq, 20)
            assert len(res) == 20 and not {r.id for r in res} & gone
        c.upsert("1", -x[1])  # a replaced record is found by its new vector only
        db.save()
        assert c.search(x[1], 1)[0].id != "1" and c.search(-x[1], 1)[0].id == "1"
        assert c.count() == len(x) - len(gone)



@pytest.mark.parametrize("platform", ["grants", "refuses", "lacks"])
def test_the_huge_page_hint_is_given_and_is_only_a_hint(tmp_path, demo_data, monkeypatch, platform):
    """Readers ask for huge pages on their map (a runtime hint, not part of the format). Where
    the OS refuses the advice or has no such advice, the file opens and searches
    exactly as where it is granted."""
    import mmap
    import types

    from needle_mm._storage import mapping as snapshot

    x = demo_data["vectors"][:500]
    path = tmp_path / "h.needle"
    with needle.Database.open(path) as db:
        db.create_collection("c", 384).insert_many([str(i) for i in range(len(x))], x)
    with needle.Database.open(path, read_only=True) as db:
        expected = [[(r.id, r.distance) for r in db.collection("c").search(qq, 10)] for qq in x[:20]]

    advice = []

    class Map(mmap.mmap):
        def madvise(self, option, *args):
            advice.append(option)
            if platform == "refuses":
                raise OSError(22, "Invalid argument")
            return super().madvise(option, *args)

    fake = types.SimpleNamespace(mmap=Map, ACCESS_READ=mmap.ACCESS_READ)
    if platform != "lacks" and hasattr(mmap, "MADV_HUGEPAGE"):
        fake.MADV_HUGEPAGE = mmap.MADV_HUGEPAGE
    monkeypatch.setattr(snapshot, "mmap", fake)
    with needle.Database.open(path, read_only=True) as db:
        got = [[(r.id, r.distance) for r in db.collection("c").search(qq, 10)] for qq in x[:20]]
    assert got == expected
    asked = hasattr(fake, "MADV_HUGEPAGE")
    assert advice == ([fake.MADV_HUGEPAGE] if asked else [])

def test_half_deleted_segment_is_rebuilt(tmp_path, demo_data):
    x = demo_data["vectors"][:1000]
    with needle.Database.open(tmp_path / "r.needle") as db:
        c = db.create_collection("c", 384)
        c.insert_many([str(i) for i in range(1000)], x)
        db.save()
        c.delete([str(i) for i in range(600)])
        db.save()
        seg = db.engine.snapshot.collection("c").segments
        assert len(seg) == 1 and seg[0].n == 400 and seg[0].n_deleted == 0
        assert {r.id for r in c.search(x[700], 5)} >= {"700"}


HOSTILE = """
import sys, numpy as np, needle_mm as needle
from needle_mm._format.header import crc32
path, field = sys.argv[1], sys.argv[2]
db = needle.Database.open(path, read_only=True)
v = db.engine.snapshot.segments("c")[0]
ref = v.descriptor.regions["hnsw_links0" if field == "links0" else "hnsw_levels"]
db.close()
with open(path, "r+b") as f:
    f.seek(ref.offset)
    if field == "links0":
        f.write(np.array([v.n, v.n + 7, 2**31 - 1], dtype="<i4").tobytes())
    elif field == "levels":
        f.write(bytes([0]) * ref.length)
try:
    db = needle.Database.open(path, read_only=True)
    c = db.collection("c")
    for q in np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32):
        c.search(q, 10)
        c.search_batch(np.stack([q] * 8), 10)
    print("no error")
except needle.CorruptFileError as exc:
    print("CorruptFileError", exc)
"""


@pytest.mark.parametrize("field", ["links0", "levels", "none"])
def test_hostile_graph_raises_instead_of_crashing(tmp_path, field):
    """Corrupt one field (with a positive twin, 'none'); runs in a child: a bug would be a crash."""
    path = str(tmp_path / "h.needle")
    with needle.Database.open(path) as db:
        c = db.create_collection("c", 8)
        c.insert_many([str(i) for i in range(300)], np.random.default_rng(1).normal(size=(300, 8)))
    out = run_python(HOSTILE, path, field)
    assert out.returncode == 0, (out.returncode, out.stderr)
    if field == "none":
        assert out.stdout.startswith("no error")
    else:
        assert out.stdout.startswith("CorruptFileError") and "HNSW" in out.stdout, out.stdout


def test_visit_tags_wrap_around_by_clearing_the_row():
    """After 65,535 searches a scratch row's uint16 tag wraps: the row must be
    cleared, or nodes marked 65,536 searches ago would count as visited."""
    from needle_mm._kernels.hnsw import next_tag

    visited = np.full((2, 5), 7, dtype=np.uint16)
    tags = np.array([65535, 7], dtype=np.uint16)
    assert next_tag(visited, tags, 0) == 1
    assert visited[0].tolist() == [0] * 5 and visited[1].tolist() == [7] * 5
    assert tags.tolist() == [1, 7]
    assert next_tag(visited, tags, 1) == 8


def test_half_widening_is_exact_for_every_value():
    """Kernels read f16 vectors through as_f32 (LLVM's half-to-float): bit for
    bit numpy's float16 -> float32 for all 65,536 patterns (NaNs stay NaN)."""
    from needle_mm._kernels.halves import widen_all

    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    got, want = widen_all(bits), bits.view(np.float16).astype(np.float32)
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), np.flatnonzero(~same)[:10]


def test_an_f16_graph_is_the_graph_of_its_rounded_vectors(tmp_path, demo_data):
    """The build reads an f16 collection's halves directly (half the memory
    traffic); widening is exact, so the graph must equal the one built from
    the same values stored as float32, link for link."""
    x = demo_data["vectors"][:700]
    rounded = x.astype(np.float16).astype(np.float32)
    graphs = []
    for dtype, data in (("f16", x), ("f32", rounded)):
        path = tmp_path / f"{dtype}.needle"
        with needle.Database.open(path) as db:
            c = db.create_collection("c", 384, seed=3, dtype=dtype)
            c.insert_many([str(i) for i in range(500)], data[:500])
            db.save()
            c.insert_many([str(i) for i in range(500, 700)], data[500:])  # extends the same segment's graph
        with needle.Database.open(path, read_only=True) as db:
            v = db.engine.snapshot.segments("c")[0]
            graphs.append((np.array(v.hnsw_links0), np.array(v.hnsw_upper_links), v.descriptor.hnsw))
    assert np.array_equal(graphs[0][0], graphs[1][0]) and np.array_equal(graphs[0][1], graphs[1][1])
    assert graphs[0][2] == graphs[1][2]


@pytest.mark.parametrize("scale, halves", [(1.0, True), (1e6, False), (1e-7, False)])
def test_a_float32_graph_is_built_on_halves_only_where_they_are_faithful(tmp_path, demo_data, scale, halves):
    # The build reads float32 rows rounded to halves (half the memory traffic) unless rounding would
    # move a row's norm: rows too large overflow a half, rows too small fall into its subnormals. Either
    # way the graph must find what brute force finds, and searches measure the stored float32 rows.
    from needle_mm._index.hnsw import _build_rows

    x = demo_data["vectors"][:1500] * np.float32(scale)
    norms = np.linalg.norm(x.astype(np.float64), axis=1).astype(np.float32)
    rows, _ = _build_rows([x[:700], x[700:]], len(x), norms, "f32")
    assert rows.dtype == (np.uint16 if halves else np.float32)
    if not halves:
        assert np.array_equal(rows, x)
    path = str(tmp_path / "v.needle")
    with needle.Database.open(path) as db:
        c = db.create_collection("c", 384, "euclidean")
        c.insert_many([f"r{i}" for i in range(len(x))], x)
        db.save()
        hits, queries = 0, demo_data["queries"]
        for q in queries:
            q = q * np.float32(scale)
            want, want_d = brute_force(x, q, 10, "euclidean")
            got = c.search(q, 10)
            hits += len({r.id for r in got} & {f"r{i}" for i in want})
            exact = c.search(q, 10, exact=True)
            assert [r.id for r in exact] == [f"r{i}" for i in want]
        assert hits / (10 * len(queries)) >= 0.95
