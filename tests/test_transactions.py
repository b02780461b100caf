"""`db.transaction()`: one checkpoint for everything in the block, or nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import ROOT, run_python

import needle_mm as needle
from needle_mm.errors import LockTimeoutError, ReadOnlyError, TransactionError


def _two_collections(path):
    with needle.Database.open(path) as db:
        db.create_collection("orders", 4)
        db.create_collection("ledger", 4)
        db.collection("orders").insert("o0", [1, 0, 0, 0], {"state": "new"})


def test_commit_makes_every_write_visible_at_once(db_path):
    _two_collections(db_path)
    reader = needle.Database.open(db_path, read_only=True)
    db = needle.Database.open(db_path)
    generation = reader.generation
    with db.transaction():
        db.collection("orders").upsert("o0", [1, 0, 0, 0], {"state": "paid"})
        db.collection("ledger").insert("l1", [0, 1, 0, 0], {"order": "o0"})
        assert db.collection("orders").get("o0").metadata == {"state": "paid"}  # reads see own writes
        assert reader.collection("ledger").count() == 0 and reader.generation == generation
    assert reader.collection("ledger").get("l1").metadata == {"order": "o0"}
    assert reader.collection("orders").get("o0").metadata == {"state": "paid"}
    assert reader.generation == generation + 1  # one checkpoint
    db.close()
    reader.close()


def test_a_failing_block_leaves_nothing_and_keeps_earlier_pending_writes(db_path):
    _two_collections(db_path)
    db = needle.Database.open(db_path)
    orders = db.collection("orders")
    orders.insert("before", [0, 0, 1, 0])  # pending before the block: not part of it
    generation = db.generation
    with pytest.raises(RuntimeError, match="payment declined"):
        with db.transaction():
            orders.upsert("o0", [1, 0, 0, 0], {"state": "paid"})
            orders.delete("before")
            db.collection("ledger").insert("l1", [0, 1, 0, 0])
            db.create_collection("audit", 4).insert("a1", [1, 1, 1, 1])
            db.drop_collection("ledger")
            raise RuntimeError("payment declined")
    assert db.generation == generation
    assert orders.get("o0").metadata == {"state": "new"} and "before" in orders
    assert db.list_collections() == ["ledger", "orders"] and db.collection("ledger").count() == 0
    db.save()
    with needle.Database.open(db_path, read_only=True) as other:
        assert sorted(i for i, _ in other.collection("orders").find()) == ["before", "o0"]
        assert other.collection("orders").get("o0").metadata == {"state": "new"}
    db.close()


def test_misuse_is_a_clear_error(db_path):
    _two_collections(db_path)
    db = needle.Database.open(db_path)
    with db.transaction():
        with pytest.raises(TransactionError, match="do not nest"):
            with db.transaction():
                pass
        with pytest.raises(TransactionError, match="commits when its block ends"):
            db.save()
        db.collection("orders").insert("o1", [1, 2, 3, 4])
    assert needle.Database.open(db_path, read_only=True).collection("orders").count() == 2
    with pytest.raises(ReadOnlyError):
        with needle.Database.open(db_path, read_only=True).transaction():
            pass
    db.close()


OTHER_WRITER = """
import sys, needle_mm as needle
db = needle.Database.open(sys.argv[1], lock_timeout=float(sys.argv[2]))
db.collection("ledger").insert("from-other", [1, 1, 1, 1])
try:
    db.save()
    print("saved")
except needle.errors.LockTimeoutError:
    print("timeout")
"""


def test_exclusive_holds_the_lock_for_the_whole_block(db_path):
    _two_collections(db_path)
    db = needle.Database.open(db_path)
    with db.transaction(exclusive=True):
        db.collection("orders").insert("o1", [1, 2, 3, 4])
        assert run_python(OTHER_WRITER, db_path, "0.5").stdout.strip() == "timeout"
    with db.transaction():  # not exclusive: another writer may commit meanwhile, and both land
        db.collection("orders").insert("o2", [1, 2, 3, 4])
        assert run_python(OTHER_WRITER, db_path, "5").stdout.strip() == "saved"
    with needle.Database.open(db_path, read_only=True) as other:
        assert {"o1", "o2"} <= {i for i, _ in other.collection("orders").find()}
        assert "from-other" in other.collection("ledger")
    db.close()
    with pytest.raises(LockTimeoutError):
        holder = needle.Database.open(db_path)
        with holder.transaction(exclusive=True):
            waiter = needle.Database.open(db_path, lock_timeout=0.2)
            with waiter.transaction(exclusive=True):
                pass


CRASHING_TRANSACTION = """
import sys, needle_mm as needle
db = needle.Database.open(sys.argv[1])
with db.transaction():
    db.collection("orders").upsert("o0", [1, 0, 0, 0], {"state": "paid"})
    db.collection("ledger").insert_many([f"l{i}" for i in range(50)], [[0, 1, 0, i] for i in range(50)])
"""


@pytest.mark.parametrize("failpoint, visible", [("commit.after_data_write", False), ("commit.after_data_sync", False),
                                                ("commit.after_superblock_write", None),
                                                ("commit.after_superblock_sync", True)])
def test_a_crash_inside_the_commit_leaves_all_or_nothing(db_path, failpoint, visible):
    _two_collections(db_path)
    out = run_python(CRASHING_TRANSACTION, db_path, env={"NEEDLE_FAILPOINTS": f"{failpoint}=kill"})
    assert out.returncode == -9
    with needle.Database.open(db_path, read_only=True) as db:
        paid = db.collection("orders").get("o0").metadata == {"state": "paid"}
        ledger = db.collection("ledger").count()
    assert (paid, ledger) in ((False, 0), (True, 50))  # never one without the other
    if visible is not None:
        assert paid is visible


WRITER = """
import sys, needle_mm as needle
db = needle.Database.open(sys.argv[1], lock_timeout=60)
w = sys.argv[2]
for i in range(40):
    try:
        with db.transaction(exclusive=i % 2 == 0):
            for name in ("orders", "ledger"):
                db.collection(name).insert_many([f"{w}-{i}-{j}" for j in range(5)], [[i, j, 1, 1] for j in range(5)])
            if i % 5 == 4:
                raise ValueError("rolled back")
    except ValueError:
        pass
"""


def test_two_processes_transactions_never_interleave_within_a_checkpoint(db_path):
    _two_collections(db_path)
    env = {"PYTHONPATH": ROOT}
    writers = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), db_path, w],
                                env={**os.environ, **env}, stderr=subprocess.PIPE) for w in "AB"]
    reader = needle.Database.open(db_path, read_only=True, auto_refresh=False)
    checks = 0
    while any(p.poll() is None for p in writers) or checks == 0:
        reader.refresh()
        orders = {i for i, _ in reader.collection("orders").find()} - {"o0"}
        ledger = {i for i, _ in reader.collection("ledger").find()}
        assert orders == ledger and len(orders) % 5 == 0  # whole transactions only, in both collections
        checks += 1
        time.sleep(0.01)
    results = [(p.wait(), p.communicate()[1]) for p in writers]
    assert all(code == 0 for code, _ in results), results
    reader.refresh()
    ids = {i for i, _ in reader.collection("ledger").find()}
    assert len(ids) == 2 * 32 * 5 and not any(i.split("-")[1] in ("4", "9", "14") for i in ids)
    assert reader.generation >= 1 + 64
    reader.close()


def test_closing_inside_a_transaction_commits_nothing_and_says_so(db_path):
    with needle.Database.open(db_path) as db:
        db.create_collection("c", 3).insert("a", [1, 0, 0])
        db.create_collection("d", 3)
    for change in (lambda db: db.drop_collection("d"), lambda db: db.collection("c").upsert("b", [0, 1, 0])):
        db = needle.Database.open(db_path)
        with pytest.raises(needle.DatabaseClosedError, match="closed inside a transaction"):
            with db.transaction():
                change(db)
                db.close()
        with needle.Database.open(db_path, read_only=True) as again:
            assert again.list_collections() == ["c", "d"] and [i for i, _ in again.collection("c").find()] == ["a"]
