"""autocommit=True (every write call is its own commit) and the ResourceWarning
for unsaved writes discarded by close() or by dropping a Database."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
from conftest import run_python

import needle_mm as needle
from needle_mm.errors import DuplicateIdError


def test_every_write_call_is_its_own_commit(db_path):
    db = needle.Database.open(db_path, autocommit=True)
    c = db.create_collection("c", 3)
    g = db.generation
    steps = [lambda: c.insert("a", [1, 0, 0], {"v": 1}), lambda: c.upsert_many(["b", "c"], np.eye(3)[1:]),
             lambda: c.update_metadata("a", {"v": 2}), lambda: c.delete("c")]
    for i, step in enumerate(steps, start=1):
        step()
        assert not db.dirty and db.generation == g + i
        with needle.Database.open(db_path, read_only=True) as other:  # visible to another reader at once
            assert other.generation == g + i
    with needle.Database.open(db_path, read_only=True) as other:
        oc = other.collection("c")
        assert sorted(i for i, _ in oc.find()) == ["a", "b"] and oc.get("a").metadata == {"v": 2}
    db.close()  # nothing pending: no warning (warnings are errors in this suite)


def test_a_transaction_is_still_one_commit_and_a_failed_commit_keeps_the_write_pending(db_path):
    # auto_refresh=False: the insert below is made against an older generation, so
    # only its commit can find the race (with auto_refresh the insert itself refuses)
    db = needle.Database.open(db_path, autocommit=True, auto_refresh=False)
    c = db.create_collection("c", 3)
    g = db.generation
    with db.transaction():
        c.insert("a", [1, 0, 0])
        c.insert("b", [0, 1, 0])
        assert db.dirty and db.generation == g
    assert db.generation == g + 1 and not db.dirty
    # another writer commits "x" first: this insert's own commit is refused, the write stays pending
    c.insert("y", [0, 0, 1])
    proc = run_python(f"""
        import needle_mm as needle
        with needle.Database.open({db_path!r}) as other:
            other.collection("c").insert("x", [1, 1, 0])
    """)
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(DuplicateIdError, match="meanwhile committed by another writer"):
        c.insert("x", [0, 1, 1])
    assert db.dirty and c.get("x").vector.tolist() == [0, 1, 1]  # refused at commit, still pending
    c.upsert("x", [0, 1, 1], {"by": "me"})  # replacing knowingly: committed with it
    assert not db.dirty
    db.close()
    with needle.Database.open(db_path, read_only=True) as other:
        assert other.collection("c").get("x").metadata == {"by": "me"} and other.collection("c").count() == 4


def test_closing_with_unsaved_writes_warns_how_many(db_path):
    with needle.Database.open(db_path) as db:
        db.create_collection("c", 3).insert("a", [1, 0, 0])
    db = needle.Database.open(db_path)
    c = db.collection("c")
    c.upsert_many(["b", "c"], np.eye(3)[1:])
    c.delete("a")
    with pytest.warns(ResourceWarning, match="3 unsaved writes, now discarded"):
        db.close()
    with needle.Database.open(db_path, read_only=True) as again:  # discarded indeed
        assert [i for i, _ in again.collection("c").find()] == ["a"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        needle.Database.open(db_path, read_only=True).close()  # a reader has nothing to lose
        clean = needle.Database.open(db_path)
        clean.collection("c").count()
        clean.close()


def test_dropping_a_database_with_unsaved_writes_warns(db_path):
    with needle.Database.open(db_path) as db:
        db.create_collection("c", 3)
    db = needle.Database.open(db_path)
    db.collection("c").insert("a", [1, 0, 0])
    with pytest.warns(ResourceWarning, match="1 unsaved write,"):
        del db
        gc.collect()


class _Interrupted(Exception):
    pass


def _counting_source(fail_at=None):
    from needle_mm.importers._run import Batch, Source

    class Counting(Source):
        kind, description, dim, distance = "test", {"test": 1}, 4, "euclidean"

        def count(self):
            return 100

        def batches(self, position, batch_size):
            for s in range(position or 0, 100, batch_size):
                if fail_at is not None and s >= fail_at:
                    raise _Interrupted("interrupted (as Ctrl-C would)")
                ids = [f"r{i}" for i in range(s, min(s + batch_size, 100))]
                yield Batch(ids, np.full((len(ids), 4), float(s + 1)), [None] * len(ids), s + len(ids))

    return Counting()


@pytest.mark.parametrize("autocommit", [False, True])
def test_an_interrupted_import_resumes_whatever_the_commit_mode(db_path, autocommit):
    """An import commits its records with its progress, autocommit or not."""
    from needle_mm.importers import run_import

    db = needle.Database.open(db_path, autocommit=autocommit)
    with pytest.raises(_Interrupted):
        run_import(_counting_source(fail_at=50), db, "c", batch_size=10, save_every=30, progress=False)
    db.close()
    with needle.Database.open(db_path, read_only=True) as r:  # exactly what the progress says
        assert r.collection("c").count() == 30
        assert r.engine.collection_properties("c")["needle.import"]["position"] == 30
    db = needle.Database.open(db_path, autocommit=autocommit)
    run_import(_counting_source(), db, "c", batch_size=10, save_every=30, progress=False, resume=True)
    assert db.collection("c").count() == 100 and not db.dirty
    db.close()


def test_an_error_leaving_the_block_is_the_error_not_a_warning(db_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ResourceWarning would replace the KeyError
        with pytest.raises(KeyError, match="boom"):
            with needle.Database.open(db_path) as db:
                db.create_collection("c", 3).insert("a", [1, 0, 0])
                raise KeyError("boom")


def test_deleting_unknown_ids_is_no_write(db_path):
    with needle.Database.open(db_path) as db:
        db.create_collection("c", 3).insert("a", [1, 0, 0])
    db = needle.Database.open(db_path, autocommit=True)
    g = db.generation
    assert db.collection("c").delete(["nope", "neither"]) == 0
    assert not db.dirty and db.generation == g  # nothing pending, no empty commit
    db.close()
