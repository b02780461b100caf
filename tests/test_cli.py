"""The `needle` command, run as a user would: a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from conftest import ROOT


def _interruptible():
    # A suite started in the background (``cmd &``) inherits SIGINT ignored, and
    # so would the CLI: give it Ctrl-C's default, as a terminal's user has it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def needle_cmd(*args, timeout=600, env=None):
    env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run([sys.executable, "-m", "needle_mm", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, preexec_fn=_interruptible)


def test_demo_runs_end_to_end(tmp_path):
    path = tmp_path / "demo.needle"
    out = needle_cmd("demo", "--path", str(path), "--workers", "2")
    assert out.returncode == 0, out.stderr
    assert "3,000 records" in out.stdout and "preparing the search kernels ..." in out.stdout
    assert '{"source": "pros_cons"}' in out.stdout and "[pros_cons," in out.stdout
    assert out.stdout.count("(sees the new record)") == 2
    assert "every reader saw the writer's checkpoint" in out.stdout
    info = needle_cmd("info", str(path))
    assert info.returncode == 0 and "sentences: 3,001 records, dense, dim 384, distance cosine" in info.stdout
    verify = needle_cmd("verify", str(path))
    assert verify.returncode == 0 and "3,001 live records: OK" in verify.stdout
    assert info.stdout.rstrip().endswith("1 segment") and "1 segment," in verify.stdout  # plurals right


def test_errors_are_reported_not_raised(tmp_path):
    bad = tmp_path / "bad.needle"
    bad.write_bytes(b"not a needle file at all")
    out = needle_cmd("info", str(bad))
    assert out.returncode == 2 and "not a Needle file" in out.stderr and "Traceback" not in out.stderr


def _small_file(tmp_path):
    import numpy as np

    import needle_mm as needle

    path = str(tmp_path / "x.needle")
    ids = ["a", "b\nwith newline", "ü", "d"]
    vectors = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    metas = [{"k": 1, "tags": ["x"]}, {"k": 2}, None, {"k": 4}]
    with needle.Database.open(path) as db:
        db.create_collection("c", 5).insert_many(ids, vectors, metas)
    db = needle.Database.open(path)
    db.collection("c").delete("d")
    db.save()
    db.collection("c").insert("e", np.ones(5), {"k": 5})  # never saved: not exported
    db.close()
    return path, {i: (v, m or {}) for i, v, m in zip(ids[:3], vectors[:3], metas[:3])}


def test_export_jsonl_and_npy_round_trip(tmp_path):
    import json

    import numpy as np

    path, want = _small_file(tmp_path)
    out = needle_cmd("export", path, "--collection", "c", "--format", "jsonl", "--out", str(tmp_path / "o.jsonl"))
    assert out.returncode == 0 and "exported 3 records" in out.stdout, out.stderr
    header, *rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]
    assert header["needle_collection"]["distance"] == "cosine" and header["needle_collection"]["dimension"] == 5
    assert {r["id"] for r in rows} == set(want)
    for r in rows:
        np.testing.assert_array_equal(np.array(r["vector"], dtype=np.float32), want[r["id"]][0])
        assert r["metadata"] == want[r["id"]][1]
    out = needle_cmd("export", path, "--collection", "c", "--format", "npy", "--out", str(tmp_path / "o"))
    assert out.returncode == 0, out.stderr
    vectors = np.load(tmp_path / "o" / "vectors.npy")
    ids = [json.loads(x) for x in (tmp_path / "o" / "ids.jsonl").read_text(encoding="utf-8").splitlines()]
    metas = [json.loads(x) for x in (tmp_path / "o" / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(ids) == sorted(want) and vectors.dtype == np.float32
    for i, v, m in zip(ids, vectors, metas):
        np.testing.assert_array_equal(v, want[i][0])
        assert m == want[i][1]


def test_search_command_with_filter(tmp_path):
    import json

    import numpy as np

    path, want = _small_file(tmp_path)
    np.save(tmp_path / "q.npy", np.stack([want["a"][0], want["ü"][0]]))
    out = needle_cmd("search", path, "--collection", "c", "--vector-file", str(tmp_path / "q.npy"), "-k", "2",
                     "--filter", '{"k": {"$exists": true}}')
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows[0][0]["id"] == "a" and rows[0][0]["distance"] < 1e-6
    assert all({h["id"] for h in row} == {"a", "b\nwith newline"} for row in rows)  # "ü" has no "k"
    bad = needle_cmd("search", path, "--collection", "c", "--vector-file", str(tmp_path / "q.npy"),
                     "--filter", '{"k": {"$bogus": 1}}')
    assert bad.returncode == 2 and "$bogus" in bad.stderr and "Traceback" not in bad.stderr
    missing = needle_cmd("export", path, "--collection", "nope", "--out", str(tmp_path / "n.jsonl"))
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_search_command_by_text_and_hybrid(tmp_path):
    """--text alone (BM25), with --vector-file (hybrid: each hit's scores), repeated --text (a
    batch), --fusion as a name or JSON, --candidates: the lines are the embedded answers."""
    import json

    import numpy as np

    import needle_mm as needle
    from needle_mm.ops.demo import load_demo_data

    data = load_demo_data()
    vectors, texts = data["vectors"].astype(np.float32), [str(t) for t in data["texts"]]
    path = str(tmp_path / "t.needle")
    with needle.Database.open(path) as db:
        db.create_collection("docs", 384, text_field="document").insert_many(
            [f"d{i}" for i in range(800)], vectors[:800], [{"document": t, "n": i} for i, t in enumerate(texts[:800])])
        db.create_collection("plain", 384).insert("p", vectors[0])
    queries = vectors[900:902]
    np.save(tmp_path / "q.npy", queries)
    np.save(tmp_path / "q1.npy", queries[0])

    def lines(*args):
        out = needle_cmd("search", path, "--collection", "docs", *args)
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines()]

    def same(rows, want):
        assert len(rows) == len(want)
        for row, hits in zip(rows, want):
            assert [h["id"] for h in row] == [h.id for h in hits]
            assert [h["metadata"] for h in row] == [h.metadata for h in hits]
            assert [h["distance"] for h in row] == [float(h.distance) for h in hits]
            for h, w in zip(row, hits):
                scores = getattr(w, "scores", None)
                assert ("scores" in h) == (scores is not None)
                if scores is not None:
                    assert h["scores"] == {key: None if v is None else float(v) for key, v in scores.items()}

    with needle.Database.open(path, read_only=True) as db:
        c = db.collection("docs")
        rows = lines("--text", "the movie was funny", "-k", "5", "--filter", '{"n": {"$lt": 400}}')
        same(rows, [c.search(text="the movie was funny", k=5, filter={"n": {"$lt": 400}})])
        assert rows[0] and rows[0][0]["distance"] < 0
        same(lines("--text", "great battery life", "--text", "a very bad film", "-k", "3"),
             c.search_batch(texts=["great battery life", "a very bad film"], k=3))
        same(lines("--vector-file", str(tmp_path / "q1.npy"), "--text", "the movie was funny", "-k", "4", "--exact"),
             [c.search(queries[0], text="the movie was funny", k=4, exact=True)])
        rows = lines("--vector-file", str(tmp_path / "q.npy"), "--text", "funny", "--text", "battery", "-k", "4",
                     "--exact", "--fusion", '{"method": "weighted", "alpha": 0.7}', "--candidates", "20")
        same(rows, c.search_batch(queries, texts=["funny", "battery"], k=4, exact=True,
                                  fusion={"method": "weighted", "alpha": 0.7}, candidates=20))
        assert all(set(h["scores"]) == {"vector", "text"} for row in rows for h in row)
        same(lines("--vector-file", str(tmp_path / "q.npy"), "--text", "funny", "-k", "3", "--exact",
                   "--fusion", "weighted"),  # one text for every query vector
             c.search_batch(queries, texts=["funny", "funny"], k=3, exact=True, fusion="weighted"))
        same(lines("--vector-file", str(tmp_path / "q.npy"), "-k", "3"), c.search_batch(queries, k=3))
    for args, message in ((("--text", "x", "--vector-file", str(tmp_path / "q1.npy"), "--fusion", "max"),
                           "fusion method must be 'rrf' or 'weighted', got 'max'"),
                          (("--text", "x", "--vector-file", str(tmp_path / "q1.npy"), "--fusion", "{bad"),
                           "--fusion is not JSON"),
                          (("--text", "x", "--vector-file", str(tmp_path / "q1.npy"), "--candidates", "0"),
                           "candidates must be an integer from 1 to 65536, got 0"),
                          ((), "--vector-file FILE (.npy), --text TEXT, or both")):
        bad = needle_cmd("search", path, "--collection", "docs", *args)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)
    bad = needle_cmd("search", path, "--collection", "plain", "--text", "x")
    assert bad.returncode == 2 and "has no text index" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_version():
    import needle_mm

    out = needle_cmd("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"needle {needle_mm.__version__} (needle_mm)"


def test_missing_files_are_one_line_errors(tmp_path):
    missing = str(tmp_path / "nope.needle")
    for args in (("rebuild", missing), ("compact", missing), ("info", missing), ("verify", missing),
                 ("export", missing, "--collection", "c"), ("import", "jsonl", "--input", str(tmp_path / "x.jsonl"),
                                                            str(tmp_path / "t.needle"))):
        out = needle_cmd(*args)
        lines = out.stderr.strip().splitlines()
        assert out.returncode != 0 and len(lines) == 1 and lines[0].startswith("needle: error: "), (args, out.stderr)
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "nope.needle").exists()
    typo = needle_cmd("import", "jsonl", "--input", str(tmp_path / "x.jsonl"), str(tmp_path / "typo" / "t.needle"))
    assert typo.returncode == 2 and not (tmp_path / "typo").exists()


def test_export_to_stdout_imports_back_with_its_configuration(tmp_path):
    import numpy as np

    import needle_mm as needle

    path = str(tmp_path / "x.needle")
    rng = np.random.default_rng(1)
    with needle.Database.open(path) as db:
        db.create_collection("c", 6, "euclidean", dtype="f16", m=8).insert_many(
            [f"r{i}" for i in range(40)], rng.normal(size=(40, 6)), [{"i": i} for i in range(40)])
    out = needle_cmd("export", path, "--collection", "c")
    assert out.returncode == 0 and out.stdout.count("\n") == 41 and "exported 40 records" in out.stderr
    (tmp_path / "c.jsonl").write_text(out.stdout, encoding="utf-8")
    assert needle_cmd("export", path, "--collection", "c", "--format", "npy", "--out", str(tmp_path / "c_npy")).returncode == 0
    assert needle_cmd("export", path, "--collection", "c", "--format", "parquet",
                      "--out", str(tmp_path / "c.parquet")).returncode == 0
    for source, flag in (("jsonl", "c.jsonl"), ("npy", "c_npy"), ("parquet", "c.parquet")):
        target = str(tmp_path / f"back-{source}.needle")
        back = needle_cmd("import", source, "--input", str(tmp_path / flag), target, "--into", "c", "--no-progress")
        assert back.returncode == 0, back.stderr
        with needle.Database.open(target, read_only=True) as db, needle.Database.open(path, read_only=True) as orig:
            config, want = db.collection("c").config, orig.collection("c").config
            assert config == want, source  # distance, dimension, dtype and HNSW parameters, no flags given
            assert [e.id for e in db.collection("c")] == [e.id for e in orig.collection("c")]
            np.testing.assert_array_equal(db.collection("c").get("r7").vector, orig.collection("c").get("r7").vector)


def test_ctrl_c_during_import_says_how_to_resume(tmp_path):
    import json

    import needle_mm as needle

    source = tmp_path / "big.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", "vector": [1.0, i % 7, 2.0], "metadata": {"i": i}}) + "\n"
                              for i in range(3000)), encoding="utf-8")
    target = str(tmp_path / "t.needle")
    args = ("import", "jsonl", "--input", str(source), target, "--distance", "euclidean", "--save-every", "1000",
            "--batch-size", "500")
    out = needle_cmd(*args, env={"NEEDLE_FAILPOINTS": "import.after_checkpoint=sigint"})  # Ctrl-C after a checkpoint
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 130 and "Traceback" not in out.stderr
    assert lines[-1].startswith("needle: error: interrupted") and "--resume" in lines[-1]
    with needle.Database.open(target, read_only=True) as db:
        assert db.collection("big").count() == 1000
    resumed = needle_cmd(*args, "--resume", "--no-progress")
    assert resumed.returncode == 0 and "imported 2,000 records" in resumed.stdout and "3,000 in all" in resumed.stdout
    again = needle_cmd(*args, "--resume", "--no-progress")
    assert again.returncode == 0 and "inf" not in again.stdout and "imported 0 records" in again.stdout


def test_export_into_a_closed_pipe_exits_quietly(tmp_path):
    import numpy as np

    import needle_mm as needle

    path = str(tmp_path / "x.needle")
    with needle.Database.open(path) as db:
        # distinct vectors: identical ones make the graph build needlessly slow; 6,000 records are
        # several times a pipe's 64 KiB buffer, so the export is still writing when the pipe closes
        db.create_collection("c", 4).insert_many([f"r{i}" for i in range(6000)],
                                                 np.random.default_rng(0).normal(size=(6000, 4)))
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "needle_mm", "export", path, "--collection", "c"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    with proc.stderr:
        first = proc.stdout.readline()
        proc.stdout.close()  # as `| head -1` does
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=600) == 0 and err == "" and b"needle_collection" in first
