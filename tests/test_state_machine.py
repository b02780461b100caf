"""A hypothesis state machine: Needle against a dict and brute force.

Rules insert, upsert, delete, update metadata, save, reopen (dropping unsaved
writes, as a crash or close would) and search; after every step the
collection must agree with the model, and after reopen with the saved model.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import needle_mm as needle
from conftest import brute_force

DIM = 4
IDS = st.sampled_from([f"id{i}" for i in range(12)] + ["é", "a b", "x" * 40])
VECTORS = st.lists(st.integers(-4, 4), min_size=DIM, max_size=DIM).filter(any).map(
    lambda v: np.array(v, dtype=np.float32))
METAS = st.one_of(st.none(), st.fixed_dictionaries({"n": st.integers(-3, 3)}, optional={"s": st.sampled_from(["a", "b"])}))


class _SavesAndReopens(RuleBasedStateMachine):
    """Rules both machines share: save (the model becomes the saved state) and
    reopen (unsaved writes are dropped, as a crash or close would)."""

    name = ""

    @rule()
    def save(self):
        self.db.save()
        self.saved = dict(self.model)

    @rule()
    def reopen(self):
        self.db.close()
        self.db = needle.Database.open(self.path)
        self.coll = self.db.collection(self.name)
        self.model = dict(self.saved)


class NeedleVsDict(_SavesAndReopens):
    name = "c"

    def __init__(self):
        super().__init__()
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        self.path = f"{self.dir.name}/sm.needle"
        self.model: dict[str, tuple[np.ndarray, dict]] = {}
        self.saved: dict[str, tuple[np.ndarray, dict]] = {}

    # Small integer vectors are exact in float16, so an f16 collection (SPEC
    # §5.8) must behave exactly like an f32 one here.
    @initialize(distance=st.sampled_from(["cosine", "euclidean", "dot"]), dtype=st.sampled_from(["f32", "f16"]))
    def open_db(self, distance, dtype):
        self.distance = distance
        self.db = needle.Database.open(self.path)
        self.db.create_collection("c", DIM, distance, dtype=dtype)
        self.db.save()
        self.coll = self.db.collection("c")

    def teardown(self):
        if hasattr(self, "db"):
            self.db.close()
        self.dir.cleanup()

    @rule(id=IDS, vec=VECTORS, meta=METAS)
    def insert(self, id, vec, meta):
        if id in self.model:
            try:
                self.coll.insert(id, vec, meta)
            except needle.DuplicateIdError:
                return
            raise AssertionError("insert of a live id did not raise")
        self.coll.insert(id, vec, meta)
        self.model[id] = (vec, meta or {})

    @rule(ids=st.lists(IDS, min_size=1, max_size=5, unique=True), data=st.data())
    def upsert_many(self, ids, data):
        vecs = [data.draw(VECTORS) for _ in ids]
        metas = [data.draw(METAS) for _ in ids]
        self.coll.upsert_many(ids, np.array(vecs), metas)
        for i, v, m in zip(ids, vecs, metas):
            self.model[i] = (v, m or {})

    @rule(ids=st.lists(IDS, min_size=1, max_size=4))
    def delete(self, ids):
        expected = len(set(ids) & set(self.model))
        assert self.coll.delete(ids) == expected
        for i in ids:
            self.model.pop(i, None)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), meta=METAS)
    def update_metadata(self, data, meta):
        id = data.draw(st.sampled_from(sorted(self.model)))
        self.coll.update_metadata(id, meta)
        self.model[id] = (self.model[id][0], meta or {})

    @rule(q=VECTORS, k=st.integers(1, 6), flt=st.one_of(st.none(), st.just({"n": {"$gte": 0}})))
    def search(self, q, k, flt):
        ids = sorted(i for i, (_, m) in self.model.items() if flt is None or m.get("n", -1) >= 0)
        got = self.coll.search(q, k, filter=flt, exact=True)
        assert len(got) == min(k, len(ids))
        approx = self.coll.search(q, k, filter=flt)
        assert len(approx) <= len(got) and all(r.id in ids for r in approx)
        if not ids:
            return
        vectors = np.array([self.model[i][0] for i in ids])
        _, want_d = brute_force(vectors, q, len(ids), self.distance)
        # Ties may order differently; distances must match position by position.
        np.testing.assert_allclose([r.distance for r in got], want_d[:len(got)], rtol=1e-4, atol=1e-4)
        for r in got:
            assert r.id in self.model and r.metadata == self.model[r.id][1]

    @invariant()
    def agrees_with_model(self):
        if not hasattr(self, "coll"):
            return
        assert self.coll.count() == len(self.model)
        for id, (vec, meta) in self.model.items():
            e = self.coll.get(id)
            assert np.array_equal(e.vector, vec) and e.metadata == meta
        assert sorted(i for i, _ in self.coll.find()) == sorted(self.model)


NeedleVsDict.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
test_needle_vs_dict = NeedleVsDict.TestCase


SPARSE_DIM = 8
SPARSE = st.dictionaries(st.integers(0, SPARSE_DIM - 1), st.integers(-3, 3).filter(bool).map(float), max_size=4)


class SparseNeedleVsDict(_SavesAndReopens):
    """The same for a sparse collection: posting chunks merged across saves,
    tombstones, automatic segment rebuilds, pending records, all against a dict."""

    name = "s"

    def __init__(self):
        super().__init__()
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        self.path = f"{self.dir.name}/sparse.needle"
        self.model: dict[str, tuple[dict, dict]] = {}
        self.saved: dict[str, tuple[dict, dict]] = {}
        self.db = needle.Database.open(self.path)
        self.db.create_collection("s", SPARSE_DIM, "dot", sparse=True)
        self.db.save()
        self.coll = self.db.collection("s")

    def teardown(self):
        self.db.close()
        self.dir.cleanup()

    @rule(ids=st.lists(IDS, min_size=1, max_size=5, unique=True), data=st.data())
    def upsert_many(self, ids, data):
        vecs = [data.draw(SPARSE) for _ in ids]
        metas = [data.draw(METAS) for _ in ids]
        self.coll.upsert_many(ids, vecs, metas)
        for i, v, m in zip(ids, vecs, metas):
            self.model[i] = (v, m or {})

    @rule(ids=st.lists(IDS, min_size=1, max_size=4))
    def delete(self, ids):
        assert self.coll.delete(ids) == len(set(ids) & set(self.model))
        for i in ids:
            self.model.pop(i, None)

    @rule(q=SPARSE, k=st.integers(1, 6), flt=st.one_of(st.none(), st.just({"n": {"$gte": 0}})))
    def search(self, q, k, flt):
        want = sorted(1.0 - sum(v[i] * x for i, x in q.items() if i in v)
                      for v, m in self.model.values()
                      if set(v) & set(q) and (flt is None or m.get("n", -1) >= 0))
        got = self.coll.search(q, k, filter=flt)
        np.testing.assert_allclose([r.distance for r in got], want[:k], atol=1e-5)
        for r in got:
            assert set(self.model[r.id][0]) & set(q)

    @invariant()
    def agrees_with_model(self):
        assert self.coll.count() == len(self.model)
        for id, (vec, meta) in self.model.items():
            e = self.coll.get(id)
            assert dict(zip(e.vector.indices.tolist(), e.vector.values.tolist())) == vec and e.metadata == meta


SparseNeedleVsDict.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                                suppress_health_check=[HealthCheck.too_slow])
test_sparse_needle_vs_dict = SparseNeedleVsDict.TestCase
