"""The public API: collections, records, search, checkpoints."""

from __future__ import annotations

import os

import numpy as np
import pytest

import needle_mm as needle
from conftest import brute_force, run_python


def make(db_path, dim=8, distance="cosine", **kw):
    db = needle.Database.open(db_path)
    db.create_collection("c", dim, distance, **kw)
    return db, db.collection("c")


def test_quick_tour_from_the_issue(db_path):
    rng = np.random.default_rng(1)
    vec, q = rng.normal(size=384), rng.normal(size=384)
    db = needle.Database.open(db_path)
    db.create_collection("my_collection", 384)
    collection = db.collection("my_collection")
    collection.insert("a", vec, {"category": "books", "price": 12.5})
    collection.insert("b", -vec, {"category": "books", "price": 99})
    collection.insert("c", vec, {"category": "music", "price": 1})
    db.save()
    res = collection.search(q, k=10, filter={"$and": [{"category": "books"}, {"price": {"$lt": 50}}]})
    assert [r.id for r in res] == ["a"]
    assert res[0].metadata == {"category": "books", "price": 12.5}
    assert res[0].distance == pytest.approx(1 - vec @ q / np.linalg.norm(vec) / np.linalg.norm(q), abs=1e-5)


@pytest.mark.parametrize("distance", ["cosine", "euclidean", "dot"])
def test_search_matches_brute_force(db_path, demo_data, distance):
    vectors = demo_data["vectors"][:1500] * np.linspace(0.5, 2, 1500, dtype=np.float32)[:, None]
    db, coll = make(db_path, 384, distance)
    ids = [f"r{i}" for i in range(len(vectors))]
    coll.insert_many(ids[:1000], vectors[:1000])
    db.save()
    coll.insert_many(ids[1000:], vectors[1000:])  # pending on top of committed
    hits = 0
    for q in demo_data["queries"]:
        want_idx, want_d = brute_force(vectors, q, 10, distance)
        got = coll.search(q, 10, exact=True)
        assert [r.id for r in got] == [ids[i] for i in want_idx]
        np.testing.assert_allclose([r.distance for r in got], want_d, rtol=1e-4, atol=2e-5)
        approx = coll.search(q, 10)  # HNSW on the committed part, exact on the pending part
        hits += len({r.id for r in approx} & {ids[i] for i in want_idx})
        assert all(r.distance == pytest.approx(d, rel=1e-4, abs=2e-5)
                   for r, d in zip(approx, sorted(r.distance for r in approx)))
    assert hits / (10 * len(demo_data["queries"])) >= 0.95
    batch = coll.search_batch(demo_data["queries"], k=10, exact=True)
    assert [[r.id for r in row] for row in batch] == [[r.id for r in coll.search(q, 10, exact=True)]
                                                     for q in demo_data["queries"]]
    batch = coll.search_batch(demo_data["queries"], k=10)
    assert [[r.id for r in row] for row in batch] == [[r.id for r in coll.search(q, 10)]
                                                     for q in demo_data["queries"]]


@pytest.mark.parametrize("quantization", [None, "int8"])
def test_every_form_of_a_query_gives_one_answer_and_the_query_is_left_as_it_was(db_path, demo_data, quantization):
    # A float32, C-contiguous, writable query is read in place (no copy); every other form is copied
    # first. Each must give the same answer, on the graph, by brute force and as arrays, and none may
    # be written to.
    vectors = demo_data["vectors"][:600]
    db, coll = make(db_path, 384, "euclidean", quantization=quantization)
    coll.insert_many([f"r{i}" for i in range(600)], vectors)
    db.save()
    for q in demo_data["queries"][:5]:
        base = np.ascontiguousarray(q, dtype=np.float32)
        frozen = base.copy()
        frozen.flags.writeable = False
        wide = np.zeros((384, 2), dtype=np.float32)
        wide[:, 0] = base
        forms = {"float32": base.copy(), "read-only": frozen, "strided": wide[:, 0],
                 "float64": base.astype(np.float64), "list": base.tolist()}
        for exact in (False, True):
            want = [(r.id, r.distance) for r in coll.search(base.copy(), 10, exact=exact)]
            for name, form in forms.items():
                before = np.array(form, dtype=np.float64, copy=True)
                got = [(r.id, r.distance) for r in coll.search(form, 10, exact=exact)]
                assert got == want, (name, exact)
                ids, dists = coll.search(form, 10, exact=exact, as_arrays=True)
                assert list(ids) == [i for i, _ in want] and np.allclose(dists, [d for _, d in want]), (name, exact)
                assert np.array_equal(np.asarray(form, dtype=np.float64), before), name
    db.close()


def _lean_and_checked(coll, q, **kw):
    """One query through the lean call (a float32 query, read in place) and through the checked path (the
    same values as float64, which the lean call never takes), as (id, distance) lists or array pairs."""
    def plain(found):
        if kw.get("as_arrays"):
            return found[0].tolist(), found[1].tolist()
        return [(r.id, r.distance) for r in found]

    return plain(coll.search(q, **kw)), plain(coll.search(q.astype(np.float64), **kw))


@pytest.mark.parametrize("distance", ["cosine", "euclidean", "dot"])
@pytest.mark.parametrize("kind", [("f32", None), ("f16", None), ("f32", "int8"), ("f32", "binary"), ("f16", "int8")])
def test_the_lean_call_answers_as_the_checked_path(db_path, demo_data, distance, kind):
    # A one-query search of a collection held in one committed segment takes the lean call (one kernel
    # call, no argument conversion); everything else takes the checked path. Both must give the same
    # answers whatever happens to the state between calls: deletes, unsaved records, a save, another thread.
    dtype, quantization = kind
    vectors = demo_data["vectors"][:700] * np.linspace(0.5, 2, 700, dtype=np.float32)[:, None]
    db, coll = make(db_path, 384, distance, dtype=dtype, quantization=quantization)
    coll.insert_many([f"r{i}" for i in range(600)], vectors[:600], [{"i": i} for i in range(600)])
    db.save()
    queries = np.ascontiguousarray(demo_data["queries"][:4], dtype=np.float32)
    calls = [{"k": 10}, {"k": 1}, {"k": 10, "ef": 3}, {"k": 25, "ef": 80}, {"k": 10, "as_arrays": True},
             {"k": 10, "rescore": 0}, {"k": 10, "rescore": 5}, {"k": 650}, {"k": 650, "as_arrays": True}]

    def agree(when):
        for q in queries:
            for kw in calls:
                lean, checked = _lean_and_checked(coll, q, **kw)
                assert lean == checked, (when, kw)
                if not kw.get("as_arrays"):
                    assert len(lean) == min(kw["k"], coll.count()), (when, kw)

    agree("one segment")
    assert coll._state().quick is not None  # the lean call was taken (and is what was compared)
    got = coll.search(queries[0], 3)
    assert got[0].metadata == {"i": int(got[0].id[1:])}
    coll.delete(["r1", "r2", got[0].id])  # this process's deletes: a new exclusion bitmap
    agree("after deletes")
    coll.insert("new", vectors[650])  # an unsaved record: the checked path
    agree("with an unsaved record")
    db.save()  # two segments now
    agree("after the save")
    with needle.Database.open(db_path, read_only=True) as ro:
        c = ro.collection("c")
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:  # threads share the lean call (scratch and outputs per thread)
            futures = [pool.submit(lambda q=q: [(r.id, r.distance) for r in c.search(q, 10)]) for q in queries]
            assert [f.result() for f in futures] == [_lean_and_checked(c, q, k=10)[1] for q in queries]
    db.close()


def test_the_lean_call_refuses_what_the_checked_path_refuses(db_path, demo_data):
    db, coll = make(db_path, 384, "cosine")
    coll.insert_many([f"r{i}" for i in range(300)], demo_data["vectors"][:300])
    db.save()
    q = np.ascontiguousarray(demo_data["queries"][0], dtype=np.float32)
    coll.search(q, 5)
    for bad, words in [(np.full(384, np.nan, np.float32), "NaN"), (np.zeros(384, np.float32), "zeros"),
                       (np.full(384, 1e30, np.float32), "too large")]:
        with pytest.raises(needle.InvalidVectorError, match=words):
            coll.search(bad, 5)
    for kw, words in [({"k": -1}, "k must"), ({"ef": 0}, "ef must"), ({"ef": 2.5}, "ef must"),
                      ({"rescore": -1}, "rescore must"), ({"k": True}, "k must")]:
        with pytest.raises(needle.InvalidArgumentError, match=words):
            coll.search(q, **{"k": 5, **kw})
    assert [r.id for r in coll.search(q, 5)] == [r.id for r in coll.search(q.astype(np.float64), 5)]
    db.close()


def test_distances_are_documented_values(db_path):
    x, q = np.array([3.0, 4.0]), np.array([1.0, 0.0])
    for distance, expected in [("cosine", 1 - 3 / 5), ("euclidean", np.hypot(2, 4)), ("dot", 1 - 3)]:
        with needle.Database.open(db_path) as db:
            db.create_collection(distance, 2, distance)
            db.collection(distance).insert("x", x)
            assert db.collection(distance).search(q, 1)[0].distance == pytest.approx(expected, rel=1e-6)


def test_get_count_upsert_delete_update(db_path):
    db, coll = make(db_path, 3)
    coll.insert("a", [1, 0, 0], {"n": 1})
    coll.insert("b", (0, 1, 0))
    assert coll.count() == 2 and len(coll) == 2 and "a" in coll and "zz" not in coll
    e = coll.get("b")
    assert e.id == "b" and e.metadata == {} and e.vector.dtype == np.float32 and list(e.vector) == [0, 1, 0]
    coll.upsert("a", [0, 0, 1], {"n": 2})
    assert coll.count() == 2 and coll.get("a").metadata == {"n": 2} and list(coll.get("a").vector) == [0, 0, 1]
    db.save()
    coll.upsert("a", [1, 1, 0], {"n": 3})  # replace a committed record
    assert coll.count() == 2 and coll.get("a").metadata == {"n": 3}
    coll.update_metadata("b", {"tag": "x"})
    assert coll.get("b").metadata == {"tag": "x"} and list(coll.get("b").vector) == [0, 1, 0]
    assert coll.delete("b") == 1 and coll.delete("b") == 0 and coll.delete(["nope"]) == 0
    assert coll.count() == 1 and coll.get("b", None) is None
    with pytest.raises(needle.RecordNotFoundError, match="'b'"):
        coll.get("b")
    with pytest.raises(KeyError):
        coll.get("b")
    with pytest.raises(needle.RecordNotFoundError):
        coll.update_metadata("b", {})
    db.save()
    db.close()
    with needle.Database.open(db_path, read_only=True) as ro:
        c = ro.collection("c")
        assert c.count() == 1 and c.get("a").metadata == {"n": 3} and list(c.get("a").vector) == [1, 1, 0]
        assert [r.id for r in c.search([1, 1, 0], 5)] == ["a"]


def test_reinsert_after_delete_and_batch_semantics(db_path):
    db, coll = make(db_path, 2)
    coll.insert_many(["a", "b", "c"], np.eye(2)[[0, 1, 0]] + 0.1, [{"i": 0}, None, {"i": 2}])
    db.save()
    coll.delete("a")
    coll.insert("a", [0, 1], {"again": True})  # allowed once deleted
    assert coll.get("a").metadata == {"again": True}
    coll.upsert_many(["x", "x"], [[1, 0], [0, 1]], [{"v": 1}, {"v": 2}])  # last one wins
    assert coll.get("x").metadata == {"v": 2} and coll.count() == 4
    db.save()
    assert coll.count() == 4 and coll.get("x").metadata == {"v": 2}


def test_search_k_larger_than_count_and_zero(db_path):
    db, coll = make(db_path, 2)
    coll.insert("a", [1, 0])
    assert [r.id for r in coll.search([1, 0], 100)] == ["a"]
    assert coll.search([1, 0], 0) == []
    assert coll.search([1, 0], k=5, filter={"missing": 1}) == []
    empty = db.create_collection("e", 2)
    assert empty.search([1, 0], 3) == [] and empty.count() == 0


def test_results_carry_the_ids_vectors_and_metadata_of_what_was_found(db_path):
    """Ids are gathered in bulk (one kernel call per batch, decoded once): every
    result must still name its own record, whatever the ids' script, in single
    and batch search, in full and padded rows, from one source or several."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    ids = [f"doc-{i}" if i % 3 else f"文書-{i}-é" for i in range(60)]
    db, coll = make(db_path, 8, "euclidean")

    def check(n, queries, k, **kw):
        for exact in (False, True):
            batch = coll.search_batch(queries, k, exact=exact, include_vector=True, **kw)
            single = [coll.search(q, k, exact=exact, **kw) for q in queries]
            for q, row, one in zip(queries, batch, single):
                order, _ = brute_force(x[:n], q, n, "euclidean")
                keep = [j for j in order if "filter" not in kw or j % 2 == 0][:k]
                assert [r.id for r in one] == [ids[j] for j in keep]
                assert [r.id for r in row] == [ids[j] for j in keep]
                assert all(np.array_equal(r.vector, x[j]) for r, j in zip(row, keep))
                assert [r.metadata for r in row] == [{"i": j, "even": j % 2 == 0} for j in keep]
                assert all(r.vector is None for r in one)

    coll.insert_many(ids[:40], x[:40], [{"i": i, "even": i % 2 == 0} for i in range(40)])
    db.save()
    check(40, x[:6], 5)  # one committed segment, full rows
    check(40, x[:6], 45)  # rows padded past the 40 records
    check(40, x[:6], 30, filter={"even": True})  # 20 pass: padded rows
    coll.insert_many(ids[40:], x[40:], [{"i": i, "even": i % 2 == 0} for i in range(40, 60)])
    check(60, x[35:45], 7)  # committed + pending sources merged


def test_damaged_id_offsets_are_reported_not_misread(db_path):
    db, coll = make(db_path, 2)
    coll.insert_many([f"id-{i}" for i in range(20)], [[1, i] for i in range(20)])
    db.save()
    ref = db.engine.snapshot.catalog.collections["c"].segments[0].regions["id_offsets"]
    db.close()
    with open(db_path, "r+b") as f:  # offsets of slots 5.. jump past the blob
        f.seek(ref.offset + 8 * 5)
        f.write(np.uint64(1 << 40).tobytes())
    with needle.Database.open(db_path, read_only=True) as db:
        # by the search, not later by its results (which decode their ids when read)
        with pytest.raises(needle.CorruptFileError, match="id offsets"):
            db.collection("c").search(np.array([1, 3], dtype=np.float32), 3)  # the lean call
        with pytest.raises(needle.CorruptFileError, match="id offsets"):
            db.collection("c").search_batch([[1, 3], [1, 7]], 3)


def test_include_vector_and_lazy_metadata(db_path):
    db, coll = make(db_path, 2)
    coll.insert("a", [1, 2], {"k": [1, 2, {"z": None}]})
    r = coll.search([1, 2], 1, include_vector=True)[0]
    assert list(r.vector) == [1, 2] and r.metadata == {"k": [1, 2, {"z": None}]}
    assert coll.search([1, 2], 1)[0].vector is None


def test_collections_lifecycle(db_path):
    db = needle.Database.open(db_path)
    db.create_collection("a", 2)
    db.create_collection_with_config("b", needle.CollectionConfig(3, needle.DistanceFunction.Euclidean, m=8))
    assert db.list_collections() == ["a", "b"]
    assert db.collection("b").config.m == 8 and db.collection("b").distance is needle.DistanceFunction.Euclidean
    db.save()
    db.drop_collection("a")
    assert db.list_collections() == ["b"]
    with pytest.raises(needle.CollectionNotFoundError):
        db.collection("a")
    db.create_collection("a", 5)  # recreate under the same name, fresh
    assert db.collection("a").dimension == 5
    db.save()
    db.close()
    with needle.Database.open(db_path) as db:
        assert db.list_collections() == ["a", "b"] and db.collection("a").dimension == 5
        db.drop_collection("b")
    with needle.Database.open(db_path, read_only=True) as db:
        assert db.list_collections() == ["a"]


def test_context_manager_saves_on_success_and_discards_on_error(db_path):
    with needle.Database.open(db_path) as db:
        db.create_collection("c", 2).insert("kept", [1, 0])
    with pytest.raises(RuntimeError):
        with needle.Database.open(db_path) as db:
            db.collection("c").insert("lost", [0, 1])
            raise RuntimeError("boom")
    with needle.Database.open(db_path, read_only=True) as db:
        assert db.collection("c").count() == 1 and "kept" in db.collection("c")


def test_closed_database_raises(db_path):
    db, coll = make(db_path)
    db.close()
    with pytest.raises(needle.DatabaseClosedError):
        coll.count()
    with pytest.raises(needle.DatabaseClosedError):
        db.list_collections()


def test_many_commits_keep_one_segment_and_exact_results(db_path):
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    db, coll = make(db_path, 16, "euclidean")
    for start in range(0, 3000, 100):
        coll.insert_many([str(i) for i in range(start, start + 100)], vectors[start:start + 100])
        coll.delete([str(i) for i in range(start, start + 100, 7)])
        db.save()
    segments = db.engine.snapshot.collection("c").segments
    assert len(segments) == 1 and segments[0].hnsw is not None
    alive = np.array([(i % 100) % 7 != 0 for i in range(3000)])
    assert coll.count() == alive.sum()
    for q in rng.normal(size=(5, 16)).astype(np.float32):
        idx, _ = brute_force(vectors[alive], q, 10, "euclidean")
        assert [r.id for r in coll.search(q, 10, exact=True)] == [str(i) for i in np.flatnonzero(alive)[idx]]


def test_second_process_sees_saved_not_unsaved(db_path):
    db, coll = make(db_path, 2)
    coll.insert("saved", [1, 0], {"x": 1})
    db.save()
    coll.insert("unsaved", [0, 1])
    out = run_python("""
        import sys, needle_mm as needle
        db = needle.Database.open(sys.argv[1], read_only=True)
        c = db.collection("c")
        print(c.count(), [r.id for r in c.search([0, 1], 5)], c.get("saved").metadata)
    """, db_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "1 ['saved'] {'x': 1}"
    db.save()
    out = run_python("""
        import sys, needle_mm as needle
        with needle.Database.open(sys.argv[1], read_only=True) as db:
            print(db.collection("c").count())
    """, db_path)
    assert out.stdout.strip() == "2"


def test_refresh_picks_up_other_writer_and_keeps_pending(db_path):
    db, coll = make(db_path, 2)
    coll.insert("mine-saved", [1, 0])
    db.save()
    reader = needle.Database.open(db_path, read_only=True, auto_refresh=False)
    auto_reader = needle.Database.open(db_path, read_only=True)
    coll.insert("mine-pending", [0, 1])
    out = run_python("""
        import sys, needle_mm as needle
        with needle.Database.open(sys.argv[1]) as db:
            c = db.collection("c")
            c.insert("theirs", [1, 1])
            c.delete("mine-saved")
    """, db_path)
    assert out.returncode == 0, out.stderr
    assert reader.collection("c").count() == 1 and "mine-saved" in reader.collection("c")
    assert reader.refresh() and reader.collection("c").count() == 1 and "theirs" in reader.collection("c")
    # the default: the next operation notices the new generation by itself
    assert "theirs" in auto_reader.collection("c") and "mine-saved" not in auto_reader.collection("c")
    db.save()  # rebases onto the other writer's generation: nothing of theirs is lost
    with needle.Database.open(db_path, read_only=True) as fresh:
        c = fresh.collection("c")
        assert sorted(i for i, _ in c.find()) == ["mine-pending", "theirs"]


@pytest.mark.parametrize("distance", ["cosine", "euclidean", "dot"])
def test_f16_collections_store_rounded_vectors_and_search_them_exactly(tmp_path, distance):
    """dtype="f16" (SPEC §5.8): get() and every search see the float16-rounded
    vector, whether the record is pending or committed, in this process or another."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 48)).astype(np.float32) * 3
    rounded = x.astype(np.float16).astype(np.float32)
    half_path, full_path = str(tmp_path / "half.needle"), str(tmp_path / "full.needle")
    for path, dtype in ((half_path, "f16"), (full_path, "f32")):
        with needle.Database.open(path) as db:
            c = db.create_collection("c", 48, distance, dtype=dtype)
            c.insert_many([str(i) for i in range(300)], x[:300])
    db = needle.Database.open(half_path)
    c = db.collection("c")
    assert c.config.dtype == "f16"
    c.insert_many([str(i) for i in range(300, 400)], x[300:])  # pending, beside the committed 300
    for i in (0, 299, 300, 399):
        assert np.array_equal(c.get(str(i)).vector, rounded[i]) and c.get(str(i)).vector.dtype == np.float32
    for q in x[:5] + 0.01:
        order, dist = brute_force(rounded, q, 10, distance)
        found = c.search(q, 10, exact=True)
        assert [r.id for r in found] == [str(j) for j in order]
        np.testing.assert_allclose([r.distance for r in found], dist, rtol=1e-4, atol=1e-4)
        assert len({r.id for r in c.search(q, 10)} & {str(j) for j in order}) >= 9
    db.save()
    out = run_python("""
        import sys, numpy as np, needle_mm as needle
        c = needle.Database.open(sys.argv[1], read_only=True).collection("c")
        print(c.count(), c.get("350").vector.tobytes().hex())
    """, half_path)
    assert out.stdout.split() == ["400", rounded[350].tobytes().hex()]
    db.close()
    with needle.Database.open(full_path) as full:  # the same two commits in float32
        full.collection("c").insert_many([str(i) for i in range(300, 400)], x[300:])
    # the vectors take half the bytes; the graph, ids and metadata the same (disk usage: reserves are holes)
    sizes = {}
    for path in (half_path, full_path):
        with needle.Database.open(path, read_only=True) as r:
            sizes[path] = r.engine.snapshot.collection("c").segments[0].regions["vectors"].length
    assert sizes[half_path] * 2 == sizes[full_path] == 400 * 48 * 4
    from needle_mm.ops import compact

    for path in (half_path, full_path):  # what garbage a file still holds depends on its commits: compare live data
        compact(path)
    assert os.path.getsize(full_path) - os.path.getsize(half_path) >= 0.9 * 400 * 48 * 2


def test_f16_refuses_what_it_cannot_hold_and_keeps_what_it_has(db_path):
    db, coll = make(db_path, 2, "euclidean", dtype="f16")
    coll.insert("a", [1, 2])
    db.save()
    with pytest.raises(needle.InvalidVectorError, match="beyond float16's range"):
        coll.insert_many(["b", "c"], [[1, 2], [7e4, 0]])
    with pytest.raises(needle.InvalidVectorError, match="beyond float16's range"):
        coll.upsert("a", [-1e5, 0])
    assert coll.count() == 1 and coll.get("a").vector.tolist() == [1, 2]
    with pytest.raises(needle.InvalidConfigError, match="dtype must be 'f32' or 'f16'"):
        db.create_collection("x", 2, dtype="int8")
    with pytest.raises(needle.InvalidConfigError, match="sparse collections store float32"):
        db.create_collection("y", 2, "dot", sparse=True, dtype="f16")


def test_config_shows_a_text_index_asked_for_before_the_save_that_builds_it(tmp_path):
    with needle.Database.open(tmp_path / "t.needle") as db:
        coll = db.create_collection("docs", 2)
        coll.insert("a", [1.0, 0.0], {"body": "the cat"})
        assert coll.config.text_field is None
        coll.create_text_index("body", stemmer=None)
        assert coll.config.text_field == "body"  # before the save builds it
        db.save()
        assert coll.config.text_field == "body"
        assert [h.id for h in coll.search(text="cat")] == ["a"]
