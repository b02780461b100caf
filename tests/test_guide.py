"""Every Needle snippet of docs/migration-guide.md runs as written.

The guide writes ``import needle``, and that is how they run: the ``needle``
package is ``needle_mm`` under its guide name (``needle/__init__.py``). The
source-side snippets (exporting from Chroma, Qdrant, ...) need the other
databases and are exercised by the importer tests; here their *output* shape
is built from real data and handed to the Needle-side snippets.
"""

from __future__ import annotations

import os
import re
import types

import numpy as np
import pytest

import needle_mm as needle
from conftest import ROOT, run_python

GUIDE = os.path.join(ROOT, "docs", "migration-guide.md")
N = 12_000  # > 10,000 so the guide's checkpoint branch runs


def guide_blocks() -> list[tuple[str, str, str]]:
    """(section, subsection, code) for every python block, in order."""
    out, section, sub, code = [], "", "", None
    with open(GUIDE, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    for line in lines:
        if code is not None:
            if line.startswith("```"):
                out.append((section, sub, "".join(code)))
                code = None
            else:
                code.append(line)
        elif line.startswith("```python"):
            code = []
        elif line.startswith("### "):
            sub = line[4:].strip()
        elif line.startswith("## "):
            section, sub = line[3:].strip(), ""
    return out


def needle_code(section: str, sub: str) -> str:
    blocks = [code for s, b, code in guide_blocks() if s == section and b == sub]
    assert len(blocks) == 1, (section, sub, len(blocks))
    code = blocks[0]
    assert re.search(r"^import needle$", code, re.M), code
    return code  # as written


def test_guide_has_the_snippets_we_run():
    blocks = guide_blocks()
    assert len(blocks) == 20
    assert sum("import needle\n" in code for _, _, code in blocks) == 7  # six imports and the checklist


@pytest.fixture
def records(demo_data):
    """N real-looking records: the demo embeddings, tiled with a little noise."""
    rng = np.random.default_rng(0)
    base = demo_data["vectors"]
    vectors = base[np.arange(N) % len(base)] + rng.normal(0, 0.01, size=(N, base.shape[1])).astype(np.float32)
    ids = [f"doc-{i}" for i in range(N)]
    metas = [{"source": demo_data["sources"][i % len(base)], "i": i} for i in range(N)]
    docs = [demo_data["texts"][i % len(base)] for i in range(N)]
    return ids, vectors.astype(np.float32), metas, docs


def check_file(path, name, ids, vectors, metas):
    """A fresh process sees exactly the imported records."""
    out = run_python("""
        import sys, json, numpy as np, needle_mm as needle
        db = needle.Database.open(sys.argv[1], read_only=True)
        c = db.collection(sys.argv[2])
        e = c.get(sys.argv[3])
        print(json.dumps({"count": c.count(), "meta": e.metadata, "vec": e.vector[:4].tolist(),
                          "top": c.search(e.vector, 1)[0].id}))
    """, path, name, ids[-1])
    assert out.returncode == 0, out.stderr
    import json

    got = json.loads(out.stdout)
    assert got["count"] == len(ids)
    assert got["meta"] == metas[-1]
    np.testing.assert_allclose(got["vec"], vectors[-1][:4], rtol=1e-6)
    assert got["top"] == ids[-1]


def run_snippet(code: str, namespace: dict, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, GUIDE, "exec"), namespace)
    return str(tmp_path / "vectors.needle")


def test_from_chroma(records, tmp_path, monkeypatch, capsys):
    ids, vectors, metas, docs = records
    data = {"ids": ids, "embeddings": vectors, "metadatas": [dict(m) for m in metas], "documents": docs}
    path = run_snippet(needle_code("From Chroma", "Import to Needle"), {"data": data}, tmp_path, monkeypatch)
    assert "Imported 10000 vectors" in capsys.readouterr().out
    check_file(path, "my_collection", ids, vectors, [dict(m, document=d) for m, d in zip(metas, docs)])


def test_from_qdrant(records, tmp_path, monkeypatch):
    ids, vectors, metas, _ = records
    points = [types.SimpleNamespace(id=i, vector=v.tolist(), payload=m) for i, (v, m) in enumerate(zip(vectors, metas))]
    path = run_snippet(needle_code("From Qdrant", "Import to Needle"), {"all_points": points}, tmp_path, monkeypatch)
    check_file(path, "my_collection", [str(i) for i in range(N)], vectors, metas)


@pytest.mark.parametrize("section,name,dim", [("From Pinecone", "my_collection", 1536),
                                              ("From pgvector", "items", 384),
                                              ("From Milvus", "my_collection", 384)])
def test_from_list_of_dicts(records, tmp_path, monkeypatch, section, name, dim):
    ids, vectors, metas, _ = records
    if dim != vectors.shape[1]:  # the Pinecone example uses OpenAI's 1536-d embeddings
        vectors = np.tile(vectors, (1, dim // vectors.shape[1] + 1))[:, :dim]
    all_vectors = [{"id": i, "vector": v.tolist(), "metadata": m} for i, v, m in zip(ids, vectors, metas)]
    path = run_snippet(needle_code(section, "Import to Needle"), {"all_vectors": all_vectors}, tmp_path, monkeypatch)
    check_file(path, name, ids, vectors, metas)


def test_from_faiss(records, tmp_path, monkeypatch):
    ids, vectors, metas, _ = records
    ns = {"vectors": vectors, "ids": ids, "metadata": metas, "dimension": vectors.shape[1]}
    path = run_snippet(needle_code("From FAISS", "Import to Needle"), ns, tmp_path, monkeypatch)
    check_file(path, "my_collection", ids, vectors, metas)


def test_rust_example_pattern_in_python(records, db_path):
    """The guide's Rust migrate() with CollectionConfig / DistanceFunction.Cosine, in Python."""
    ids, vectors, metas, _ = records
    db = needle.Database.open(db_path)
    config = needle.CollectionConfig(vectors.shape[1], needle.DistanceFunction.Cosine)
    db.create_collection_with_config("migrated", config)
    collection = db.collection("migrated")
    count = 0
    for id, vector, metadata in zip(ids, vectors, metas):
        collection.insert(id, vector, metadata)
        count += 1
        if count % 10000 == 0:
            db.save()
    db.save()
    check_file(db_path, "migrated", ids, vectors, metas)


def test_query_and_filter_translations(records, tmp_path, monkeypatch):
    ids, vectors, metas, _ = records
    db = needle.Database.open(str(tmp_path / "q.needle"))
    collection = db.create_collection("c", vectors.shape[1])
    collection.insert_many(ids[:2000], vectors[:2000],
                           [dict(m, category="books" if i % 3 else "music", price=i % 90) for i, m in
                            enumerate(metas[:2000])])
    ns = {"collection": collection, "query_vector": vectors[5]}
    for section, sub in [("From Chroma", "Code Changes"), ("From pgvector", "Query Translation")]:
        blocks = [c for s, b, c in guide_blocks() if s == section and b == sub and "collection.search" in c]
        assert len(blocks) == 1
        exec(blocks[0], ns)
        assert len(ns["results"]) == 10 and all(r.metadata["category"] == "books" for r in ns["results"])
    block = [c for s, b, c in guide_blocks() if s == "From Qdrant" and b == "Filter Translation" and "$and" in c][0]
    exec(block, ns)
    results = collection.search(vectors[5], k=10, filter=ns["filter"])
    assert results and all(r.metadata["category"] == "books" and r.metadata["price"] < 50 for r in results)


def test_verification_checklist(tmp_path, monkeypatch, demo_data, capsys):
    monkeypatch.chdir(tmp_path)
    with needle.Database.open("vectors.needle") as db:
        c = db.create_collection("my_collection", 384)
        c.insert_many(["id1", "id2", "id3", "id4"], demo_data["vectors"][:4], [{"n": i} for i in range(4)])
    code = needle_code("Verification Checklist", "")
    exec(code, {"expected_count": 4, "test_query": demo_data["vectors"][1]})
    out = capsys.readouterr().out
    assert "Vector count: 4" in out and "ID: id1, Vector dims: 384" in out
    assert "Search results: ['id2'" in out and "Verification passed!" in out


def test_dual_write_collection(db_path, demo_data):
    blocks = [c for s, b, c in guide_blocks() if s == "Rollback Plan"]
    assert len(blocks) == 1
    ns: dict = {}
    exec(blocks[0], ns)

    class OldDatabase:  # stands in for the source database being migrated away from
        def __init__(self):
            self.rows = {}

        def insert(self, id, vector, metadata):
            self.rows[id] = (np.asarray(vector), metadata)

        def search(self, query, k):
            return sorted(self.rows, key=lambda i: -float(self.rows[i][0] @ query))[:k]

    db = needle.Database.open(db_path)
    dual = ns["DualWriteCollection"](OldDatabase(), db.create_collection("c", 384))
    for i in range(50):
        dual.insert(f"id{i}", demo_data["vectors"][i], {"i": i})
    q = demo_data["vectors"][7]
    old = dual.search(q, 5)
    new = [r.id for r in dual.search(q, 5, use_needle=True)]
    assert old[0] == new[0] == "id7" and len(set(old) & set(new)) >= 4
