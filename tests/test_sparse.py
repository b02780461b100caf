"""Sparse collections: exact dot-product search by posting lists, against a
scipy.sparse matrix product over the same data; input forms and bad input;
filters, deletes, upserts, checkpoints and reopening in another process."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp

import needle_mm as needle
from needle_mm.errors import CorruptFileError, InvalidConfigError, InvalidVectorError

from conftest import run_python

DIM = 5000


def random_rows(rng, n: int, dim: int = DIM, max_nnz: int = 30) -> sp.csr_matrix:
    """Rows with a Zipf-like index distribution (as text has), some empty."""
    rows, cols, vals = [], [], []
    for i in range(n):
        nnz = int(rng.integers(0, max_nnz))
        idx = np.unique(np.minimum(rng.zipf(1.3, nnz) - 1, dim - 1))
        rows += [i] * len(idx)
        cols += idx.tolist()
        vals += rng.normal(size=len(idx)).tolist()
    return sp.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(n, dim))


def as_dicts(m: sp.csr_matrix) -> list[dict]:
    return [{"indices": m.indices[a:b].tolist(), "values": m.data[a:b].tolist()}
            for a, b in zip(m.indptr[:-1], m.indptr[1:])]


def reference(matrix: sp.csr_matrix, live: np.ndarray, query: sp.csr_matrix, k: int) -> list[tuple[int, float]]:
    """Top-k (row, 1 - dot) among live rows sharing an index with the query, in float64."""
    scores = (matrix.astype(np.float64) @ query.astype(np.float64).T).toarray().ravel()
    reached = (abs(matrix) @ abs(query).T).toarray().ravel() > 0
    rows = np.flatnonzero(reached & live)
    order = rows[np.argsort(-scores[rows], kind="stable")][:k]
    return [(int(r), 1.0 - scores[r]) for r in order]


def check_against_reference(coll, matrix, live, queries, k=10):
    results = coll.search_batch(queries, k)
    for qi in range(queries.shape[0]):
        want = reference(matrix, live, queries[qi], k)
        got = results[qi]
        assert [r.distance for r in got] == pytest.approx([d for _, d in want], abs=1e-4)
        # ids agree except among ties (equal distances)
        assert {r.id for r in got if all(abs(r.distance - d) > 1e-5 for _, d in want[-1:])} <= \
            {f"d{r}" for r, _ in want}


def test_search_equals_scipy_product_across_commits_deletes_and_upserts(db_path):
    rng = np.random.default_rng(1)
    matrix = random_rows(rng, 3000)
    queries = random_rows(rng, 40)
    live = np.ones(3000, dtype=bool)
    with needle.Database.open(db_path) as db:
        coll = db.create_collection("s", DIM, "dot", sparse=True)
        # many commits: several posting chunks, merged like a binary counter
        for start in range(0, 3000, 250):
            coll.insert_many([f"d{i}" for i in range(start, start + 250)], matrix[start:start + 250],
                             [{"i": i, "even": i % 2 == 0} for i in range(start, start + 250)])
            if start < 2500:
                db.save()
        check_against_reference(coll, matrix, live, queries)  # committed + pending
        gone = rng.choice(3000, 300, replace=False)
        coll.delete([f"d{i}" for i in gone])
        live[gone] = False
        matrix = matrix.tolil()
        for i in rng.choice(np.flatnonzero(live), 50, replace=False):  # replace vectors in place
            matrix[i] = random_rows(rng, 1)
            coll.upsert(f"d{i}", matrix[i], {"i": int(i), "even": int(i) % 2 == 0})
        matrix = matrix.tocsr()
        check_against_reference(coll, matrix, live, queries)
        db.save()
        check_against_reference(coll, matrix, live, queries)
        segment = db.engine.snapshot.catalog.collections["s"].segments[0]
        assert 1 < len(segment.postings) <= 12
    # another process sees the same results
    code = """
        import sys, json, needle_mm as needle
        db = needle.Database.open(sys.argv[1], read_only=True)
        q = json.loads(sys.argv[2])
        print(json.dumps([[r.id, r.distance] for r in db.collection("s").search(q, 10)]))
    """
    q = as_dicts(queries[:1])[0]
    out = run_python(code, db_path, __import__("json").dumps(q))
    assert out.returncode == 0, out.stderr
    with needle.Database.open(db_path, read_only=True) as db:
        here = [[r.id, r.distance] for r in db.collection("s").search(q, 10)]
    assert __import__("json").loads(out.stdout) == here
    assert needle_verify_ok(db_path)


def needle_verify_ok(path: str) -> bool:
    from needle_mm.ops.verify import verify_file

    report = verify_file(path)
    assert report.ok, report.problems
    return True


def test_filters_restrict_results_exactly(db_path):
    rng = np.random.default_rng(2)
    matrix = random_rows(rng, 2000)
    queries = random_rows(rng, 20)
    with needle.Database.open(db_path) as db:
        coll = db.create_collection("s", DIM, "dot", sparse=True)
        coll.insert_many([f"d{i}" for i in range(2000)], matrix, [{"bucket": i % 10} for i in range(2000)])
        db.save()
        for flt, keep in (({"bucket": 3}, lambda i: i % 10 == 3), ({"bucket": {"$in": [1, 2]}},
                                                                   lambda i: i % 10 in (1, 2))):
            live = np.array([keep(i) for i in range(2000)])
            for qi in range(queries.shape[0]):
                got = coll.search(queries[qi], 5, filter=flt)
                want = reference(matrix, live, queries[qi], 5)
                assert [r.distance for r in got] == pytest.approx([d for _, d in want], abs=1e-4)
                assert all(keep(r.metadata["bucket"] * 0 + int(r.id[1:])) for r in got)
        assert coll.count({"bucket": 3}) == 200
        assert coll.delete(filter={"bucket": 3}) == 200
        assert all(r.metadata["bucket"] != 3 for q in range(5) for r in coll.search(queries[q], 50))


def test_every_input_form_stores_the_same_vector(db_path):
    with needle.Database.open(db_path) as db:
        coll = db.create_collection("s", 100, needle.DistanceFunction.DotProduct, sparse=True)
        assert coll.sparse and coll.config.sparse
        forms = {
            "lists": {"indices": [3, 7, 42], "values": [0.5, 1.0, -2.0]},
            "dict": {42: -2.0, 3: 0.5, 7: 1.0},  # any order: sorted on the way in
            "json-keys": {"42": -2.0, "3": 0.5, "7": 1.0},
            "scipy": sp.csr_matrix(([0.5, 1.0, -2.0], ([0, 0, 0], [3, 7, 42])), shape=(1, 100)),
            "object": needle.SparseVector(np.array([3, 7, 42], np.uint32), np.array([0.5, 1, -2], np.float32)),
        }
        for name, form in forms.items():
            coll.insert(name, form)
        coll.insert("empty", {"indices": [], "values": []})
        db.save()
        want = coll.get("lists").vector
        assert want.indices.tolist() == [3, 7, 42] and want.values.tolist() == [0.5, 1.0, -2.0]
        for name in forms:
            assert coll.get(name).vector == want
        assert len(coll.get("empty").vector) == 0
        hits = coll.search({7: 2.0}, 10, include_vector=True)
        assert {r.id for r in hits} == set(forms) and all(r.distance == pytest.approx(-1.0) for r in hits)
        assert hits[0].vector == want
        assert coll.search({99: 1.0}, 10) == []  # nothing shares index 99
        coll.update_metadata("lists", {"tag": "x"})
        assert coll.get("lists").vector == want and coll.get("lists").metadata == {"tag": "x"}


@pytest.mark.parametrize("bad, message", [
    ({"indices": [5, 3], "values": [1, 1]}, "out of order"),
    ({"indices": [3, 3], "values": [1, 1]}, "duplicate index"),
    ({"indices": [3, 100], "values": [1, 1]}, "outside [0, 100)"),
    ({"indices": [-1], "values": [1]}, "outside [0, 100)"),
    ({"indices": [1, 2], "values": [1]}, "2 indices but 1 values"),
    ({"indices": [1], "values": [float("nan")]}, "NaN"),
    ({"indices": [1], "values": [1e39]}, "infinite"),
    ({"indices": [1.5], "values": [1]}, "integers"),
    ({"x": 1.0}, "not a non-negative integer index"),
    ([0.1] * 100, "must be {'indices'"),
    (sp.csr_matrix((1, 99)), "shape (1, 99)"),
])
def test_bad_sparse_input_is_refused_and_changes_nothing(db_path, bad, message):
    with needle.Database.open(db_path) as db:
        coll = db.create_collection("s", 100, "dot", sparse=True)
        coll.insert("keep", {1: 1.0}, {"a": 1})
        db.save()
        with pytest.raises(InvalidVectorError, match=message.replace("(", r"\(").replace(")", r"\)")
                           .replace("[", r"\[").replace("{", r"\{")):
            coll.upsert("keep", bad)
        with pytest.raises(InvalidVectorError):
            coll.insert_many(["a", "b"], [{2: 1.0}, bad])
        with pytest.raises(InvalidVectorError):
            coll.search(bad)
        assert coll.count() == 1 and "a" not in coll and coll.get("keep").vector.indices.tolist() == [1]
        assert not db.dirty


def test_sparse_config_errors():
    with pytest.raises(InvalidConfigError, match="dot product"):
        needle.CollectionConfig(100, "cosine", sparse=True)
    with pytest.raises(InvalidConfigError, match="dimension"):
        needle.CollectionConfig(2**32, "dot", sparse=True)
    assert needle.CollectionConfig(30522, "dot", sparse=True).sparse  # a SPLADE vocabulary
    assert needle.CollectionConfig(2**32 - 1, "dot", sparse=True).dimension == 2**32 - 1


def test_sparse_collections_need_catalog_format_2_and_dense_ones_1(db_path):
    """What the collections need (SPEC §4); a file this version commits is
    format 4 whatever they need, for its free-space list (SPEC §6.1)."""
    from needle_mm._engine.snapshot import Snapshot
    from needle_mm._format.catalog import catalog_format
    import orjson

    with needle.Database.open(db_path) as db:
        db.create_collection("dense", 4)
    with needle.Database.open(db_path) as db:
        assert catalog_format(db.engine.snapshot.catalog.collections.values()) == 1
        assert orjson.loads(db.engine.snapshot.catalog.encode())["format"] == 4
        db.create_collection("s", 10, "dot", sparse=True).insert("a", {1: 1.0})
    with needle.Database.open(db_path) as db:
        assert catalog_format(db.engine.snapshot.catalog.collections.values()) == 2
        assert isinstance(db.engine.snapshot, Snapshot)


def test_a_damaged_posting_chunk_is_corrupt_file_error_not_a_crash(db_path):
    with needle.Database.open(db_path) as db:
        coll = db.create_collection("s", 1000, "dot", sparse=True)
        coll.insert_many([f"d{i}" for i in range(50)], [{i: 1.0, i + 1: 2.0} for i in range(50)])
    with needle.Database.open(db_path, read_only=True) as db:
        chunk = db.engine.snapshot.catalog.collections["s"].segments[0].postings[0].region
    # point a slot entry far outside the segment (CRC is not checked on the read path; the structure is)
    with open(db_path, "r+b") as f:
        f.seek(chunk.offset)
        d, e = np.frombuffer(f.read(16), "<u8")
        slots_at = chunk.offset + ((16 + 4 * int(d) + 7) & ~7) + 8 * (int(d) + 1)
        f.seek(slots_at)
        f.write(np.array([10**6], "<u4").tobytes())
    with needle.Database.open(db_path, read_only=True) as db:
        with pytest.raises(CorruptFileError, match="posting chunk"):
            db.collection("s").search({3: 1.0})
    from needle_mm.ops.verify import verify_file

    assert not verify_file(db_path).ok


def test_export_rebuild_and_transactions_keep_sparse_records(db_path, tmp_path):
    from needle_mm.ops.export import export
    from needle_mm.ops.rebuild import rebuild

    rng = np.random.default_rng(3)
    matrix = random_rows(rng, 500, dim=300)
    with needle.Database.open(db_path) as db:
        coll = db.create_collection("s", 300, "dot", sparse=True)
        with db.transaction():
            coll.insert_many([f"d{i}" for i in range(500)], matrix, [{"i": i} for i in range(500)])
        coll.delete([f"d{i}" for i in range(0, 500, 3)])
        db.save()
        before = {r.id: r.distance for r in coll.search(matrix[7], 20)}
        out = str(tmp_path / "s.jsonl")
        assert export(coll, "jsonl", out) == 500 - 167
        with pytest.raises(needle.InvalidArgumentError, match="sparse"):
            export(coll, "npy", str(tmp_path / "npy"))
    report = rebuild(db_path)
    assert report.collections == {"s": 333}
    with needle.Database.open(db_path) as db:
        coll = db.collection("s")
        assert {r.id: r.distance for r in coll.search(matrix[7], 20)} == pytest.approx(before)
        assert len(db.engine.snapshot.catalog.collections["s"].segments[0].postings) == 1
    assert needle_verify_ok(db_path)
    import orjson

    with open(out, "rb") as f:
        header, line = orjson.loads(f.readline()), orjson.loads(f.readline())
    assert header["needle_collection"]["sparse"] is True and header["needle_collection"]["dimension"] == 300
    assert set(line["vector"]) == {"indices", "values"}
    assert os.path.getsize(out) > 0


def test_needle_export_then_import_round_trips_a_sparse_collection(db_path, tmp_path):
    from test_cli import needle_cmd

    rng = np.random.default_rng(4)
    matrix = random_rows(rng, 400, dim=700)
    with needle.Database.open(db_path) as db:
        db.create_collection("terms", 700, "dot", sparse=True).insert_many(
            [f"d{i}" for i in range(400)], matrix, [{"i": i} for i in range(400)])
    out = str(tmp_path / "terms.jsonl")
    assert needle_cmd("export", db_path, "--collection", "terms", "--format", "jsonl", "--out", out).returncode == 0
    target = str(tmp_path / "copy.needle")
    res = needle_cmd("import", "jsonl", "--input", out, "--dim", "700", "--verify", "--no-progress", target)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "100/100 equal" in res.stdout
    with needle.Database.open(db_path, read_only=True) as a, needle.Database.open(target, read_only=True) as b:
        ca, cb = a.collection("terms"), b.collection("terms")
        assert cb.sparse and cb.dimension == 700 and cb.count() == 400
        for i in range(0, 400, 37):
            assert cb.get(f"d{i}") == ca.get(f"d{i}")
        q = matrix[5]
        assert [(r.id, r.distance) for r in cb.search(q, 10)] == [(r.id, r.distance) for r in ca.search(q, 10)]
