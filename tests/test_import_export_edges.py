"""Exports and imports at their edges: the recorded configuration, empty exports,
odd first lines, and an import that fails inside a caller's Database."""

import json

import numpy as np
import pytest

import needle_mm as needle
from needle_mm import importers
from needle_mm.ops.export import export


def _lines(path, docs):
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return str(path)


def test_a_first_record_with_a_needle_collection_field_is_a_record(tmp_path):
    for extra in ({"needle_collection_id": 7}, {"needle_collection": "x"}, {"needle_collection": {"dimension": 3}}):
        src = _lines(tmp_path / "s.jsonl", [{"id": "a", "vector": [1, 2, 3], **extra}, {"id": "b", "vector": [3, 2, 1]}])
        target = tmp_path / f"t{len(list(tmp_path.iterdir()))}.needle"
        importers.from_jsonl(target, src, distance="euclidean")
        with needle.Database.open(target, read_only=True) as db:
            assert list(db.collection("s").ids()) == ["a", "b"], extra


@pytest.mark.parametrize("fmt", ["jsonl", "npy", "parquet"])
def test_an_empty_export_imports_back_with_its_configuration(tmp_path, fmt):
    pytest.importorskip("pyarrow")
    with needle.Database.open(tmp_path / "x.needle") as db:
        coll = db.create_collection("c", 7, "dot", m=12)
        assert export(coll, fmt, str(tmp_path / f"c.{fmt}")) == 0
    getattr(importers, f"from_{fmt}")(tmp_path / "back.needle", str(tmp_path / f"c.{fmt}"), into="c")
    with needle.Database.open(tmp_path / "back.needle", read_only=True) as db:
        config = db.collection("c").config
        assert (config.dimension, config.distance.value, config.m, db.collection("c").count()) == (7, "dot", 12, 0)


def test_distance_names_and_bad_recorded_configuration(tmp_path):
    src = _lines(tmp_path / "s.jsonl", [{"id": "a", "vector": [1, 2]}])
    for name, want in (("l2", "euclidean"), ("ip", "dot"), ("Cosine", "cosine")):
        report = importers.from_jsonl(tmp_path / f"{name}.needle", src, distance=name)
        with needle.Database.open(tmp_path / f"{name}.needle", read_only=True) as db:
            assert db.collection(report.collection).distance.value == want
    bad = _lines(tmp_path / "b.jsonl", [{"needle_collection": {"distance": "bogus", "dimension": 2}},
                                        {"id": "a", "vector": [1, 2]}])
    with pytest.raises(needle.InvalidConfigError, match="unknown distance 'bogus'"):
        importers.from_jsonl(tmp_path / "bad.needle", bad)
    bad = _lines(tmp_path / "b2.jsonl", [{"needle_collection": {"dimension": "two"}}, {"id": "a", "vector": [1, 2]}])
    with pytest.raises(needle.SourceError, match="dimension"):
        importers.from_jsonl(tmp_path / "bad2.needle", bad, distance="cosine")


def test_an_import_that_fails_in_a_callers_database_can_be_resumed(tmp_path):
    """Records inserted after the last checkpoint are taken back out, so the
    caller's next commit cannot save them without the import's position."""
    src = _lines(tmp_path / "s.jsonl", [{"id": f"r{i}", "vector": [1.0, float(i)]} for i in range(250)])
    path = tmp_path / "t.needle"
    db = needle.Database.open(path, autocommit=True)
    try:
        def interrupt(done, total):
            if done >= 150:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            importers.from_jsonl(db, src, into="t", distance="cosine", batch_size=50, save_every=100, progress=interrupt)
        assert db.collection("t").count() == 100
        db.create_collection("other", 2)  # any later commit of the caller's
        report = importers.from_jsonl(db, src, into="t", distance="cosine", batch_size=50, save_every=100, resume=True)
        assert report.imported == 150 and db.collection("t").count() == 250
        assert sorted(db.collection("t").ids(), key=lambda i: int(i[1:])) == [f"r{i}" for i in range(250)]
    finally:
        db.close()


def test_an_import_that_fails_before_its_first_checkpoint_leaves_no_collection(tmp_path):
    src = _lines(tmp_path / "s.jsonl", [{"id": f"r{i}", "vector": [1.0, float(i)]} for i in range(30)]
                 + [{"id": "bad", "vector": [0.0, 0.0]}])  # a zero vector under cosine
    with needle.Database.open(tmp_path / "t.needle") as db:
        with pytest.raises(needle.InvalidVectorError):
            importers.from_jsonl(db, src, into="t", distance="cosine", batch_size=10)
        assert db.list_collections() == [] and not db.dirty


def test_export_to_a_text_only_stdout_says_so(tmp_path, monkeypatch):
    import io
    import sys

    with needle.Database.open(tmp_path / "x.needle") as db:
        coll = db.create_collection("c", 2)
        coll.insert("a", np.ones(2))
        monkeypatch.setattr(sys, "stdout", io.StringIO())
        with pytest.raises(needle.InvalidArgumentError, match="give out= a file path"):
            export(coll, "jsonl", None)
