"""What a search returns: SearchResults, whose ids and objects are made when first read.

What could go wrong: ids decoded after the search from bytes a later commit
reused (the generation must stay held while the results exist), unsaved
records changing under results that read them late, and a sequence that
does not behave like the list it replaced. (A damaged id region is still
reported by the search itself: test_api's damaged id offsets test.)
"""

from __future__ import annotations

import numpy as np
import pytest

import needle_mm as needle
from needle_mm.results import SearchResult, SearchResults


def _filled(path: str, n: int = 300, dim: int = 8, seed: int = 0, prefix: str = "r"):
    rng = np.random.default_rng(seed)
    db = needle.Database.open(path)
    c = db.get_or_create_collection("c", dim, "euclidean")
    c.insert_many([f"{prefix}{i}" for i in range(n)], rng.random((n, dim), dtype=np.float32),
                  [{"i": i} for i in range(n)])
    db.save()
    return db, c, rng


def test_results_read_late_equal_the_exact_answer_and_behave_as_a_list(db_path):
    db, c, rng = _filled(db_path)
    q = rng.random(8, dtype=np.float32)
    hits = c.search(q, k=5)  # the lean call: one committed segment, no filter
    exact = c.search(q, k=5, exact=True)
    assert type(hits) is SearchResults and len(hits) == 5 and hits
    assert hits.ids == [h.id for h in exact] and hits.distances == pytest.approx([h.distance for h in exact])
    assert [h.metadata["i"] for h in hits] == [int(i[1:]) for i in hits.ids]
    assert all(type(h) is SearchResult for h in hits) and hits[0] is hits[0]  # made once
    assert hits == list(hits) and list(hits) == hits and hits == tuple(hits) and hits != hits.ids
    assert hits[1:3] == [hits[1], hits[2]] and hits[-1] is hits[4] and list(reversed(hits))[0] is hits[4]
    assert hits + [] == list(hits) and [] + hits == list(hits) and hits.index(hits[2]) == 2 and hits[3] in hits
    assert repr(hits) == repr(list(hits))
    with pytest.raises(TypeError):
        hash(hits)
    nothing = c.search(q, k=5, filter={"i": -1})
    assert nothing == [] and not nothing and len(nothing) == 0 and nothing.ids == []
    batch = c.search_batch(np.stack([q, q]), k=5)
    assert all(type(r) is SearchResults for r in batch) and batch[0] == batch[0] and batch[1].ids == hits.ids
    db.close()
    assert hits.ids == [h.id for h in exact]  # after close: the results hold what they read


def test_results_read_after_later_commits_rewrote_everything_still_name_their_records(db_path):
    """The results hold their segment view, whose generation stays in the reader table: the
    writer's later commits (every record deleted, new ones written, space reused where it may)
    never touch the bytes they decode their ids from."""
    db, c, rng = _filled(db_path, n=400)
    blob = db.engine.snapshot.catalog.collections["c"].segments[0].regions["id_blob"]
    rewrote = False  # (dropping the results instead rewrites these bytes in this same sequence: checked)
    reader = needle.Database.open(db_path, read_only=True)
    queries = rng.random((6, 8), dtype=np.float32)
    rc = reader.collection("c")
    late = [rc.search(q, k=7) for q in queries] + rc.search_batch(queries, k=7)
    want = [[h.id for h in c.search(q, k=7, exact=True)] for q in queries] * 2
    for step in range(4):  # each commit replaces every record: nothing the old ids occupied is needed any more
        c.delete([f"{'r' if step == 0 else f's{step - 1}-'}{i}" for i in range(400)])
        c.insert_many([f"s{step}-{i}" for i in range(400)], rng.random((400, 8), dtype=np.float32))
        db.save()
        rewrote |= any(a < blob.offset + blob.length and a + n > blob.offset
                       for a, n in db.engine.snapshot.catalog.written[-1][1])
        rc.search(queries[0], k=1)  # the reader moves on to the newest generation
    assert rc.count() == 400 and rc.search(queries[0], k=1)[0].id.startswith("s3-")
    assert not rewrote
    got = [r.ids for r in late]
    assert [[h.id for h in r] for r in late] == got and [len(r) for r in got] == [7] * 12
    # HNSW over 400 records at the default ef finds the exact top 7 here: checked, not assumed
    assert got == want
    reader.close()
    db.close()


def test_results_over_unsaved_records_are_read_at_once(db_path):
    db, c, rng = _filled(db_path, n=50)
    c.insert_many([f"u{i}" for i in range(20)], rng.random((20, 8), dtype=np.float32) + 5)
    q = np.full(8, 5.5, dtype=np.float32)
    hits = c.search(q, k=3)
    batch = c.search_batch(np.stack([q, q]), k=3)
    ids = [h.id for h in c.search(q, k=3, exact=True)]
    assert all(i.startswith("u") for i in ids)
    c.delete(ids)
    c.insert_many([f"v{i}" for i in range(20)], rng.random((20, 8), dtype=np.float32) + 5)
    db.save()  # the unsaved records the results came from are gone: they were read at once
    assert hits.ids == ids and [r.ids for r in batch] == [ids, ids]
    db.close()


def test_short_answers_with_vectors_from_segments_and_unsaved_records(db_path):
    """Fewer hits than k (slots of -1 pad the kernels' rows) for every way a result list is made."""
    db, c, rng = _filled(db_path, n=6)
    qs = rng.random((3, 8), dtype=np.float32)
    for unsaved in (False, True):
        if unsaved:
            c.insert_many(["u0", "u1"], rng.random((2, 8), dtype=np.float32))  # now two sources: merged
        live = 8 if unsaved else 6
        for include_vector in (False, True):
            rows = c.search_batch(qs, k=10, include_vector=include_vector)
            one = c.search(qs[0], k=10, include_vector=include_vector, filter={"i": {"$lt": 4}})
            exact = [[h.id for h in c.search(q, k=10, exact=True)] for q in qs]
            assert [r.ids for r in rows] == exact and [len(r) for r in rows] == [live] * 3
            assert [h.id for h in one] == [i for i in exact[0] if i.startswith("r") and int(i[1:]) < 4]
            for h in (*rows[0], *one):
                assert (h.vector is not None) == include_vector
                if include_vector:
                    assert np.array_equal(h.vector, c.get(h.id).vector)
    db.save()
    rows = c.search_batch(qs[:1], k=10, include_vector=True)  # one segment again, with vectors
    assert len(rows[0]) == 8 and all(np.array_equal(h.vector, c.get(h.id).vector) for h in rows[0])
    db.close()


def test_a_collection_never_saved_answers_from_its_unsaved_records_alone(db_path):
    db = needle.Database.open(db_path)
    c = db.create_collection("fresh", 4, "euclidean")
    c.insert_many(["a", "b", "c"], [[0, 0, 0, 1], [0, 0, 1, 0], [5, 5, 5, 5]])
    hits = c.search(np.array([0, 0, 0, 1], dtype=np.float32), k=5)
    batch = c.search_batch(np.array([[0, 0, 1, 0]], dtype=np.float32), k=2, include_vector=True)
    c.delete(["a", "b"])
    c.insert_many(["d"], [[0, 0, 0, 1]])  # the unsaved records change after the answers were made
    assert hits.ids == ["a", "b", "c"] and [r.ids for r in batch] == [["b", "a"]]
    assert list(batch[0][0].vector) == [0, 0, 1, 0]
    db.close()
