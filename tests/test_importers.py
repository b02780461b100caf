"""`needle import` from every source, each a real one (Pinecone: a local
stand-in of its HTTP API), run as a user would: the CLI in a subprocess, with
--verify; then the collection is compared with what went in, record by record."""

from __future__ import annotations

import json
import os
import uuid

import numpy as np
import orjson
import pytest
from conftest import run_python
from test_cli import needle_cmd

import needle_mm as needle
from needle_mm import importers
from needle_mm.errors import ImportStateError, InvalidVectorError, SourceError

N = 1200


@pytest.fixture(scope="module")
def records(demo_data):
    """Real sentence embeddings with metadata of every JSON kind and the sentence as a document."""
    vectors = demo_data["vectors"][:N]
    ids = [f"doc-{i}" for i in range(N)]
    metas = [{"source": demo_data["sources"][i], "n": i, "even": i % 2 == 0, "tags": ["a", "b"][: i % 3],
              "nested": {"len": len(demo_data["texts"][i])}} for i in range(N)]
    return ids, vectors, metas, demo_data["texts"][:N]


def _contents(path, name):
    with needle.Database.open(path, read_only=True) as db:
        c = db.collection(name)
        return {i: (c.get(i).vector, m) for i, m in c.find()}


def _assert_same(path, name, ids, vectors, metas):
    got = _contents(path, name)
    assert sorted(got) == sorted(ids)
    for i, v, m in zip(ids, vectors, metas):
        np.testing.assert_allclose(got[i][0], v, rtol=1e-6, atol=1e-7)
        assert got[i][1] == m, i


def _import(*args):
    out = needle_cmd("import", *args, "--verify", "--no-progress")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verify: OK" in out.stdout and "Traceback" not in out.stderr
    return out.stdout


def test_chroma(tmp_path, records):
    chromadb = pytest.importorskip("chromadb")
    ids, vectors, metas, texts = records
    client = chromadb.PersistentClient(str(tmp_path / "chroma"))
    coll = client.create_collection("docs", metadata={"hnsw:space": "cosine"})
    flat = [{k: v for k, v in m.items() if k in ("source", "n", "even")} for m in metas]  # Chroma: scalars only
    for s in range(0, N, 500):
        coll.add(ids=ids[s:s + 500], embeddings=vectors[s:s + 500], metadatas=flat[s:s + 500],
                 documents=texts[s:s + 500])
    del client
    path = str(tmp_path / "v.needle")
    out = _import("chroma", "--path", str(tmp_path / "chroma"), "--collection", "docs", path)
    assert f"imported {N:,} records into 'docs'" in out and "top-10 overlap (20 queries)  source search" in out
    _assert_same(path, "docs", ids, vectors, [{**m, "document": t} for m, t in zip(flat, texts)])
    with needle.Database.open(path, read_only=True) as db:
        assert db.collection("docs").distance == needle.DistanceFunction.Cosine


def test_qdrant_local_mode_with_int_and_uuid_ids(tmp_path, records):
    pytest.importorskip("qdrant_client")
    from qdrant_client import QdrantClient, models

    ids, vectors, metas, _ = records
    qids = [i if i % 2 else str(uuid.UUID(int=i + 1)) for i in range(N)]
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    client.create_collection("docs", vectors_config=models.VectorParams(size=384, distance=models.Distance.DOT))
    client.upsert("docs", points=[models.PointStruct(id=q, vector=v.tolist(), payload=m)
                                  for q, v, m in zip(qids, vectors, metas)])
    client.close()
    path = str(tmp_path / "v.needle")
    _import("qdrant", "--path", str(tmp_path / "qdrant"), "--collection", "docs", "--batch-size", "256", path)
    _assert_same(path, "docs", [str(q) for q in qids], vectors, metas)
    with needle.Database.open(path, read_only=True) as db:
        assert db.collection("docs").distance == needle.DistanceFunction.DotProduct


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A real PostgreSQL with pgvector, from the pgserver wheel."""
    pgserver = pytest.importorskip("pgserver")
    pytest.importorskip("psycopg")
    server = pgserver.get_server(str(tmp_path_factory.mktemp("pg")), cleanup_mode="stop")
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    yield server.get_uri()
    server.cleanup()


@pytest.mark.parametrize("transfer", ["binary", "text"])
def test_pgvector(tmp_path, records, postgres, transfer):
    import psycopg

    ids, vectors, metas, _ = records
    table = f"items_{transfer}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, embedding vector(384), metadata jsonb)")
        with conn.cursor().copy(f"COPY {table} (id, embedding, metadata) FROM STDIN") as copy:
            for i, v, m in zip(range(N), vectors, metas):
                copy.write_row((i, "[" + ",".join(repr(float(x)) for x in v) + "]", json.dumps(m)))
    path = str(tmp_path / "v.needle")
    extra = ["--text"] if transfer == "text" else []
    _import("pgvector", "--dsn", postgres, "--table", table, "--distance", "cosine", "--batch-size", "500",
            *extra, path)
    _assert_same(path, table, [str(i) for i in range(N)], vectors, metas)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_faiss_with_side_files(tmp_path, records, kind):
    faiss = pytest.importorskip("faiss")
    ids, vectors, metas, _ = records
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat":
        index = faiss.IndexFlatIP(384)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(384, 16, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(384), 384, 8, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        index.nprobe = 8  # every list: exact, so the overlap check compares like with like
    index.add(x)
    faiss.write_index(index, str(tmp_path / "my.faiss"))
    (tmp_path / "ids.txt").write_text("".join(i + "\n" for i in ids))
    (tmp_path / "meta.jsonl").write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in metas))
    path = str(tmp_path / "v.needle")
    _import("faiss", "--index", str(tmp_path / "my.faiss"), "--ids", str(tmp_path / "ids.txt"),
            "--metadata", str(tmp_path / "meta.jsonl"), "--distance", "cosine", path)
    _assert_same(path, "my", ids, vectors, metas)


def test_milvus_lite(tmp_path, records):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    ids, vectors, metas, _ = records
    uri = str(tmp_path / "milvus.db")
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "meta.json").write_bytes(orjson.dumps(metas))
    # Built in another process: milvus-lite keeps its data directory locked
    # for as long as the process that opened it lives.
    built = run_python("""
        import sys, json, numpy as np
        from pymilvus import MilvusClient
        uri, vectors, metas = sys.argv[1], np.load(sys.argv[2]), json.load(open(sys.argv[3]))
        client = MilvusClient(uri)
        client.create_collection("docs", dimension=384, metric_type="COSINE")  # dynamic fields hold metadata
        client.insert("docs", [{"id": i, "vector": v.tolist(), **m} for i, (v, m) in enumerate(zip(vectors, metas))])
        client.close()
    """, uri, str(tmp_path / "v.npy"), str(tmp_path / "meta.json"))
    assert built.returncode == 0, built.stderr
    path = str(tmp_path / "v.needle")
    _import("milvus", "--uri", uri, "--collection", "docs", "--batch-size", "300", path)
    _assert_same(path, "docs", [str(i) for i in range(N)], vectors, metas)


def test_pinecone_against_a_local_standin(tmp_path, records):
    from pinecone_standin import PineconeStandIn

    ids, vectors, metas, _ = records
    (tmp_path / "ids.txt").write_text("".join(i + "\n" for i in ids + ["deleted-since"]))
    with PineconeStandIn(ids, vectors, metas) as standin:
        path = str(tmp_path / "v.needle")
        _import("pinecone", "--host", standin.url, "--ids", str(tmp_path / "ids.txt"), "--api-key", "test-key",
                "--into", "docs", path)
        bad = needle_cmd("import", "pinecone", "--host", standin.url, "--ids", str(tmp_path / "ids.txt"),
                         "--api-key", "wrong", str(tmp_path / "w.needle"))
    _assert_same(path, "docs", ids, vectors, metas)
    assert bad.returncode == 2 and "HTTP 401" in bad.stderr


@pytest.mark.parametrize("fmt", ["jsonl", "npy", "parquet"])
def test_export_then_import_round_trips(tmp_path, records, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    ids, vectors, metas, _ = records
    src = str(tmp_path / "src.needle")
    with needle.Database.open(src) as db:
        db.create_collection("docs", 384).insert_many(ids, vectors, metas)
    out = str(tmp_path / ("docs" if fmt == "npy" else f"docs.{fmt}"))
    assert needle_cmd("export", src, "--collection", "docs", "--format", fmt, "--out", out).returncode == 0
    path = str(tmp_path / "v.needle")
    _import(fmt, "--input", out, "--distance", "cosine", path)
    _assert_same(path, "docs", ids, vectors, metas)


def test_parquet_with_metadata_in_plain_columns(tmp_path, records):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    ids, vectors, metas, _ = records
    table = pa.table({"id": ids, "vector": [v.tolist() for v in vectors], "source": [m["source"] for m in metas],
                      "n": [m["n"] for m in metas]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=300)
    path = str(tmp_path / "v.needle")
    report = importers.from_parquet(path, str(tmp_path / "t.parquet"), distance="cosine", batch_size=128,
                                    progress=False, verify=True)
    assert report.verify.ok and report.imported == N
    _assert_same(path, "t", ids, vectors, [{"source": m["source"], "n": m["n"]} for m in metas])


def _npy_source(tmp_path, records):
    ids, vectors, metas, _ = records
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "ids.txt").write_text("".join(i + "\n" for i in ids))
    (tmp_path / "meta.jsonl").write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in metas))
    return ["npy", "--input", str(tmp_path / "v.npy"), "--ids", str(tmp_path / "ids.txt"),
            "--metadata", str(tmp_path / "meta.jsonl"), "--distance", "cosine", "--batch-size", "100",
            "--save-every", "200", "--no-progress"]


def _mutating_calls(tmp_path, args) -> list[str]:
    trace = tmp_path / "trace"
    env = {"NEEDLE_IO_TRACE": str(trace)}
    out = needle_cmd(*args, str(tmp_path / "count.needle"), env=env)
    assert out.returncode == 0, out.stderr
    raw, pos, calls = trace.read_bytes(), 0, []
    while pos < len(raw):  # JSON line, then a pwrite's bytes
        end = raw.index(b"\n", pos)
        entry = json.loads(raw[pos:end])
        pos = end + 1 + (entry["length"] if entry["op"] == "pwrite" else 0)
        calls.append(entry["op"])
    return calls


@pytest.mark.parametrize("where", ["kill", "tear"])
def test_killed_import_resumes_with_exactly_the_source_records(tmp_path, records, where):
    ids, vectors, metas, _ = records
    args = ["import", *_npy_source(tmp_path, records)]
    calls = _mutating_calls(tmp_path, args)
    path = str(tmp_path / "v.needle")
    for fraction in (0.3, 0.5):  # killed twice: a resumed import can be resumed again (it has ~70% left to do)
        if where == "tear":  # only a pwrite tears: the N-th of them
            plan = f"pwrite.{int(calls.count('pwrite') * fraction)}=tear"
        else:
            plan = f"io.{int(len(calls) * fraction)}=kill"
        dead = needle_cmd(*args, *(["--resume"] if fraction > 0.3 else []), path, env={"NEEDLE_FAILPOINTS": plan})
        assert dead.returncode == -9, dead.stderr
        with needle.Database.open(path, read_only=True) as db:
            progress = db.engine.collection_properties("v")["needle.import"]
            assert not progress["complete"] and 0 < progress["imported"] < N
            assert db.collection("v").count() == progress["imported"] == progress["position"]
    plain = needle_cmd(*args, path)
    assert plain.returncode == 2 and "pass resume=True (--resume)" in plain.stderr
    done = needle_cmd(*args, "--resume", "--verify", path)
    assert done.returncode == 0, done.stderr
    assert "resumed at" in done.stdout and "verify: OK" in done.stdout
    _assert_same(path, "v", ids, vectors, metas)


def test_bad_records_stop_the_import_and_keep_its_checkpoints(tmp_path, records):
    ids, vectors, metas, _ = records
    lines = [orjson.dumps({"id": i, "vector": v.tolist(), "metadata": m}) for i, v, m in zip(ids, vectors, metas)]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(lines[:449] + [b'{"id": "x", "vector": [' + b"1," * 383 + b'"no"]}'] + lines[450:]))
    path = str(tmp_path / "v.needle")
    with pytest.raises(InvalidVectorError):
        importers.from_jsonl(path, str(bad), distance="cosine", save_every=200, batch_size=100, progress=False)
    assert len(_contents(path, "bad")) == 400  # the two checkpoints before the bad batch
    (tmp_path / "nan.jsonl").write_bytes(b"\n".join(lines[:10] + [b'{"id": "n", "vector": [NaN]}']))
    with pytest.raises(SourceError, match="line 11 is not an object with id and vector"):
        importers.from_jsonl(path, str(tmp_path / "nan.jsonl"), distance="cosine", progress=False)
    with pytest.raises(ImportStateError, match="no collection 'other' to resume"):
        importers.from_jsonl(path, str(bad), into="other", resume=True, progress=False)
    with pytest.raises(ImportStateError, match="was imported from"):
        importers.from_npy(path, *_npy_source(tmp_path, records)[2:3], into="bad", resume=True, progress=False)
    assert len(_contents(path, "bad")) == 400
    assert os.path.exists(path)


def test_import_into_an_f16_collection_verifies_against_the_rounded_source(tmp_path, records):
    """`needle import ... --dtype f16`: a new collection stores half floats, and
    --verify compares the source rounded as the collection stores it."""
    ids, vectors, metas, _ = records
    path = str(tmp_path / "v.needle")
    out = needle_cmd("import", *_npy_source(tmp_path, records), "--dtype", "f16", "--verify", path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "100/100 equal" in out.stdout
    with needle.Database.open(path, read_only=True) as db:
        c = db.collection("v")
        assert c.config.dtype == "f16" and c.count() == len(ids)
        assert np.array_equal(c.get(ids[7]).vector, np.asarray(vectors[7], dtype=np.float16).astype(np.float32))
