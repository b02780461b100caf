"""The `needle` command, run as a user would: a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT


def needle_cmd(*args, timeout=600, env=None):
    env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run([sys.executable, "-m", "needle_mm", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_demo_runs_end_to_end(tmp_path):
    path = tmp_path / "demo.needle"
    out = needle_cmd("demo", "--path", str(path), "--workers", "2")
    assert out.returncode == 0, out.stderr
    assert "3000 records" in out.stdout
    assert '{"source": "pros_cons"}' in out.stdout and "[pros_cons," in out.stdout
    assert out.stdout.count("(sees the new record)") == 2
    assert "every reader saw the writer's checkpoint" in out.stdout
    info = needle_cmd("info", str(path))
    assert info.returncode == 0 and "sentences: 3001 records, dense, dim 384, distance cosine" in info.stdout
    verify = needle_cmd("verify", str(path))
    assert verify.returncode == 0 and "3001 live records: OK" in verify.stdout


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
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]
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
