"""The verbs users of Chroma and LanceDB reach for: get-or-create, get_many,
listing and paging, iteration, peek, and search results as arrays."""

import numpy as np
import pytest

import needle_mm as needle


@pytest.fixture
def db(tmp_path):
    with needle.Database.open(tmp_path / "v.needle") as db:
        yield db


def _fill(coll, n, start=0, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"r{i}" for i in range(start, start + n)]
    coll.insert_many(ids, rng.random((n, dim)) + 0.01, [{"i": i, "even": i % 2 == 0} for i in range(start, start + n)])
    return ids


def test_get_or_create_returns_the_existing_collection_with_its_records(db):
    coll = db.get_or_create_collection("docs", 8)
    _fill(coll, 5)
    db.save()
    again = db.get_or_create_collection("docs", 8)
    assert len(again) == 5
    assert db.create_collection("docs", 8, exist_ok=True).count() == 5
    assert db.list_collections() == ["docs"]


def test_get_or_create_names_every_difference(db):
    db.create_collection("docs", 8, "cosine", m=8)
    with pytest.raises(needle.CollectionExistsError) as err:
        db.get_or_create_collection("docs", 9, "l2", m=12)
    message = str(err.value)
    assert "dimension is 8, not 9" in message and "distance is 'cosine', not 'euclidean'" in message
    assert "m is 8, not 12" in message
    # parameters not given are not compared: the importer's m=8 is accepted
    assert db.get_or_create_collection("docs", 8).config.m == 8
    with pytest.raises(needle.CollectionExistsError):
        db.create_collection("docs", 8)  # without exist_ok, a taken name is an error as before


def test_get_or_create_survives_reopen(tmp_path):
    path = tmp_path / "v.needle"
    for run in range(3):  # the script re-run that used to raise CollectionExistsError
        with needle.Database.open(path) as db:
            coll = db.get_or_create_collection("docs", 8, dtype="f16")
            _fill(coll, 2, start=2 * run)
    with needle.Database.open(path, read_only=True) as db:
        assert db.collection("docs").count() == 6
        assert db.collection("docs").config.dtype == "f16"


def test_create_collection_refuses_unknown_parameters_by_name(db):
    with pytest.raises(needle.InvalidConfigError, match="unknown parameter.*'ef'"):
        db.create_collection("x", 3, ef=5)


def test_get_many_keeps_order_and_marks_missing(db):
    coll = db.create_collection("docs", 8)
    _fill(coll, 4)
    db.save()
    coll.delete("r2")
    coll.upsert("r9", np.ones(8), {"new": True})
    got = coll.get_many(["r3", "nope", "r9", "r2", "r0"])
    assert [e.id if e else None for e in got] == ["r3", None, "r9", None, "r0"]
    assert got[2].metadata == {"new": True}
    np.testing.assert_array_equal(got[0].vector, coll.get("r3").vector)
    with pytest.raises(needle.InvalidArgumentError):
        coll.get_many("r3")
    with pytest.raises(needle.InvalidIdError):
        coll.get_many(["r3", 7])


def test_ids_and_iteration_cover_committed_and_pending_in_a_stable_order(db):
    coll = db.create_collection("docs", 8)
    _fill(coll, 30)
    db.save()
    _fill(coll, 5, start=30)
    coll.delete(["r3", "r31"])
    expected = [f"r{i}" for i in range(35) if i not in (3, 31)]
    assert list(coll.ids()) == expected
    assert list(coll.ids()) == expected  # stable
    assert [e.id for e in coll] == expected
    entries = {e.id: e for e in coll}
    assert entries["r7"] == coll.get("r7") and entries["r33"] == coll.get("r33")
    assert list(coll.ids(filter={"even": True})) == [i for i in expected if int(i[1:]) % 2 == 0]


def test_iteration_reads_one_generation_while_others_write(tmp_path):
    path = tmp_path / "v.needle"
    with needle.Database.open(path) as db:
        _fill(db.create_collection("docs", 8), 3000)
    reader = needle.Database.open(path, read_only=True)
    writer = needle.Database.open(path)
    try:
        walk = reader.collection("docs").ids()
        first = [next(walk) for _ in range(10)]
        writer.collection("docs").delete([f"r{i}" for i in range(2000, 3000)])
        _fill(writer.collection("docs"), 10, start=5000)
        writer.save()
        rest = list(walk)
        assert first + rest == [f"r{i}" for i in range(3000)]
        assert reader.collection("docs").count() == 2010  # a new walk sees the new generation
    finally:
        reader.close()
        writer.close()


def test_iteration_is_not_moved_by_this_process_writes(db):
    coll = db.create_collection("docs", 8)
    _fill(coll, 2000)  # pending, not saved
    walk = iter(coll)
    assert next(walk).id == "r0"
    coll.delete("r1")
    _fill(coll, 3, start=9000)
    assert len(list(walk)) == 1999


def test_find_pages_with_offset(db):
    coll = db.create_collection("docs", 8)
    _fill(coll, 20)
    db.save()
    _fill(coll, 5, start=20)  # pages run on from committed into pending records
    everything = coll.find()
    pages = [coll.find(limit=7, offset=o) for o in range(0, 28, 7)]
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    assert sum(pages, []) == everything
    assert coll.find({"even": True}, limit=3, offset=2) == [(f"r{i}", {"i": i, "even": True}) for i in (4, 6, 8)]
    assert coll.find(offset=100) == []
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(needle.InvalidArgumentError, match="offset"):
            coll.find(offset=bad)


def test_peek(db):
    coll = db.create_collection("docs", 8)
    assert coll.peek() == []
    _fill(coll, 15)
    assert [e.id for e in coll.peek()] == [f"r{i}" for i in range(10)]
    assert [e.id for e in coll.peek(3)] == ["r0", "r1", "r2"]
    with pytest.raises(needle.InvalidArgumentError):
        coll.peek(-1)


@pytest.mark.parametrize("distance", ["cosine", "euclidean", "dot"])
def test_search_as_arrays_matches_result_objects(db, distance):
    coll = db.create_collection("docs", 8, distance)
    _fill(coll, 300)
    db.save()
    _fill(coll, 20, start=300, seed=1)  # a second source: the merge path
    coll.delete(["r5", "r305"])
    queries = np.random.default_rng(2).random((6, 8))
    for kwargs in ({}, {"exact": True}, {"filter": {"even": True}}):
        objects = coll.search_batch(queries, k=7, **kwargs)
        ids, dists = coll.search_batch(queries, k=7, as_arrays=True, **kwargs)
        assert ids.shape == dists.shape == (6, 7) and ids.dtype == object and dists.dtype == np.float32
        assert ids.tolist() == [[r.id for r in row] for row in objects]
        np.testing.assert_allclose(dists, [[r.distance for r in row] for row in objects], rtol=1e-6)
        one_ids, one_d = coll.search(queries[0], k=7, as_arrays=True, **kwargs)
        assert one_ids.shape == (7,) and one_ids.tolist() == ids[0].tolist()


def test_search_as_arrays_of_one_source_matches_result_objects(db):
    """One committed segment (the path without merging), full rows, short rows and empty rows."""
    coll = db.create_collection("docs", 8)
    _fill(coll, 300)
    coll.delete(["r5"])
    db.save()
    queries = np.random.default_rng(3).random((5, 8))
    for kwargs in ({}, {"exact": True}, {"filter": {"i": {"$lt": 4}}}, {"filter": {"i": {"$gt": 999}}}):
        for k in (1, 7):
            objects = coll.search_batch(queries, k=k, **kwargs)
            ids, dists = coll.search_batch(queries, k=k, as_arrays=True, **kwargs)
            want = [[r.id for r in row] + [None] * (k - len(row)) for row in objects]
            assert ids.tolist() == want
            np.testing.assert_allclose(dists, [[r.distance for r in row] + [np.inf] * (k - len(row))
                                               for row in objects], rtol=1e-6)
            for q, row in zip(queries[:2], want):
                one_ids, one_d = coll.search(q, k=k, as_arrays=True, **kwargs)
                missing = np.array([i is None for i in row])
                assert one_ids.tolist() == row and np.isinf(one_d[missing]).all() and np.isfinite(one_d[~missing]).all()


def test_search_as_arrays_pads_missing_slots(db):
    coll = db.create_collection("docs", 8)
    _fill(coll, 4)
    ids, dists = coll.search(np.ones(8), k=6, as_arrays=True)
    assert ids.tolist()[4:] == [None, None] and all(isinstance(i, str) for i in ids[:4])
    assert np.isinf(dists[4:]).all() and np.isfinite(dists[:4]).all()
    ids, dists = coll.search_batch(np.ones((2, 8)), k=3, as_arrays=True, filter={"i": {"$gt": 99}})
    assert ids.tolist() == [[None] * 3] * 2 and np.isinf(dists).all()
    ids, dists = coll.search_batch(np.ones((2, 8)), k=0, as_arrays=True)
    assert ids.shape == (2, 0)
    with pytest.raises(needle.InvalidArgumentError, match="as_arrays"):
        coll.search(np.ones(8), as_arrays=True, include_vector=True)


def test_sparse_search_as_arrays(db):
    coll = db.create_collection("s", 1000, "dot", sparse=True)
    coll.insert_many(["a", "b"], [{"indices": [1, 2], "values": [1.0, 2.0]}, {"indices": [2], "values": [0.5]}])
    ids, dists = coll.search({"indices": [2], "values": [1.0]}, k=3, as_arrays=True)
    assert ids.tolist() == ["a", "b", None]
    np.testing.assert_allclose(dists[:2], [1 - 2.0, 1 - 0.5])


def test_get_many_and_get_or_create_refuse_bad_arguments_clearly(db):
    coll = db.get_or_create_collection("docs", 8)
    for bad in (None, 5, b"r1"):
        with pytest.raises(needle.InvalidArgumentError, match="list of ids"):
            coll.get_many(bad)
    with pytest.raises(needle.InvalidConfigError, match="unknown parameter.*'foo'"):
        db.get_or_create_collection("docs", 8, foo=1)


def test_two_processes_creating_different_collections_of_one_name(tmp_path):
    """The second to save is told what differs, keeps every other write, and can drop only its own version."""
    path = tmp_path / "v.needle"
    needle.Database.open(path).close()
    a, b = needle.Database.open(path), needle.Database.open(path)
    try:
        b.get_or_create_collection("docs", 8, "dot", sparse=True).insert("s1", {"indices": [1], "values": [1.0]})
        _fill(b.create_collection("other", 8), 3)
        _fill(a.create_collection("docs", 8, "dot"), 2)
        a.save()
        with pytest.raises(needle.CollectionExistsError, match="kind 'dense' \\(here 'sparse'\\)"):
            b.save()
        with pytest.raises(needle.CollectionExistsError, match="drop it here"):
            b.collection("docs").count()
        assert b.collection("other").count() == 3  # the rest stays usable
        b.drop_collection("docs")  # this process's version only
        b.save()
    finally:
        a.close()
        b.close()
    with needle.Database.open(path, read_only=True) as db:
        assert db.collection("docs").count() == 2 and not db.collection("docs").sparse
        assert db.collection("other").count() == 3


def test_id_lists_must_be_lists(db):
    coll = db.create_collection("docs", 2)
    for call in (lambda: coll.delete(5), lambda: coll.insert_many(5, np.ones((1, 2))),
                 lambda: coll.insert_many(None, np.ones((1, 2))), lambda: coll.upsert_many("ab", np.ones((2, 2)))):
        with pytest.raises(needle.InvalidArgumentError, match="ids must be a list of str"):
            call()
    coll.insert_many(iter(["a"]), np.ones((1, 2)))  # any iterable of ids
    assert coll.delete("a") == 1 and len(coll) == 0
