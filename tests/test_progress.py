"""Long work reports itself: the needle_mm logger and progress= on save, rebuild, compact and imports."""

import json
import logging
import threading

import numpy as np
import pytest

import needle_mm as needle
from needle_mm import importers
from needle_mm.ops.rebuild import compact, rebuild


def _fill(db, n=600, dim=8, name="c"):
    coll = db.get_or_create_collection(name, dim)
    coll.insert_many([f"r{i}" for i in range(n)], np.random.default_rng(n).random((n, dim)) + 0.01)
    return coll


def test_save_logs_and_reports_progress(tmp_path, caplog):
    seen = []
    with needle.Database.open(tmp_path / "x.needle") as db:
        _fill(db, 600)
        with caplog.at_level(logging.INFO, logger="needle_mm"):
            db.save(progress=lambda done, total: seen.append((done, total)))
        assert seen and seen[-1][0] == seen[-1][1] >= 599  # every node but the entry point is inserted
        assert all(d <= t for d, t in seen) and [d for d, _ in seen] == sorted(d for d, _ in seen)
        (record,) = [r for r in caplog.records if r.name == "needle_mm"]
        assert record.levelno == logging.INFO
        assert "generation 2: 600 records written" in record.getMessage() and "bytes, in" in record.getMessage()
        caplog.clear()
        db.save(progress=lambda done, total: seen.append("again"))  # nothing to save: no report, no log
        assert "again" not in seen and not caplog.records


def test_progress_true_draws_a_bar_and_the_library_prints_nothing_else(tmp_path, capsys):
    pytest.importorskip("tqdm")
    with needle.Database.open(tmp_path / "x.needle") as db:
        _fill(db, 300)
        db.save()
        assert capsys.readouterr() == ("", "")  # silent unless asked
        _fill(db, 300, name="d")
        db.save(progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "indexing" in err


def test_bad_progress_argument_is_refused_before_any_work(tmp_path):
    with needle.Database.open(tmp_path / "x.needle") as db:
        _fill(db, 10)
        with pytest.raises(needle.InvalidArgumentError, match="progress"):
            db.save(progress="yes")
        assert db.dirty  # nothing was committed
        db.save()


def test_progress_is_per_thread(tmp_path):
    """A save in one thread never reports into another thread's callback."""
    mine, theirs = [], []
    db_a = needle.Database.open(tmp_path / "a.needle")
    db_b = needle.Database.open(tmp_path / "b.needle")
    try:
        _fill(db_a, 400)
        _fill(db_b, 300)
        worker = threading.Thread(target=db_b.save, kwargs={"progress": lambda d, t: theirs.append(t)})
        worker.start()
        db_a.save(progress=lambda d, t: mine.append(t))
        worker.join()
        assert mine and theirs and set(mine) == {399} and set(theirs) == {299}
    finally:
        db_a.close()
        db_b.close()


def test_rebuild_and_compact_log_and_report(tmp_path, caplog):
    path = tmp_path / "x.needle"
    with needle.Database.open(path) as db:
        coll = _fill(db, 500)
        db.save()
        coll.delete([f"r{i}" for i in range(100)])
    seen = []
    with caplog.at_level(logging.INFO, logger="needle_mm"):
        report = rebuild(path, progress=lambda d, t: seen.append((d, t)))
    assert report.collections == {"c": 400} and seen[-1][0] == seen[-1][1] == 399
    assert any("rebuilt" in r.getMessage() and "400 records in 1 collection," in r.getMessage() for r in caplog.records)
    seen.clear()
    compact(path, progress=lambda d, t: seen.append(d))
    assert seen[-1] == 399
    with pytest.raises(needle.DatabaseNotFoundError):
        rebuild(tmp_path / "missing.needle")


def test_import_reports_records_and_logs_its_summary(tmp_path, caplog):
    source = tmp_path / "s.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", "vector": [1.0, i % 5, 2.0]}) + "\n" for i in range(2500)),
                      encoding="utf-8")
    seen = []
    with caplog.at_level(logging.INFO, logger="needle_mm"):
        report = importers.from_jsonl(tmp_path / "t.needle", str(source), distance="euclidean", save_every=1000,
                                      progress=lambda d, t: seen.append((d, t)))
    assert report.imported == 2500 and seen[-1] == (2500, 2500)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert any("imported 2,500 records into 's'" in r.getMessage() for r in caplog.records)
    assert any("saved" in r.getMessage() for r in caplog.records)  # its checkpoints log as saves
