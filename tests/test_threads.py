"""Threads sharing one Database (SPEC §7.2): reads concurrent, changes and saves serialised.

Every loop here is bounded by a count, never by time; a thread that fails
records its exception and the test reports it.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import run_python

import needle_mm as needle
from needle_mm.errors import DuplicateIdError, NeedleError
from needle_mm.ops.verify import verify_file

DIM = 8


def _vec(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.standard_normal(DIM).astype(np.float32) + 0.1


def _run(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
        assert not t.is_alive(), "a thread is stuck (deadlock?)"


def test_two_threads_saving_their_own_ids_never_corrupt_the_file(db_path):
    """The reported case: each thread inserts its ids and saves, at once."""
    with needle.Database.open(db_path) as db:
        db.create_collection("c", DIM, "euclidean")
    db = needle.Database.open(db_path)
    coll = db.collection("c")
    errors = []
    barrier = threading.Barrier(2)

    def writer(t: int) -> None:
        try:
            for round_ in range(15):
                ids = [f"t{t}-{round_}-{j}" for j in range(20)]
                coll.insert_many(ids, np.stack([_vec(hash(i) % 10_000) for i in ids]))
                barrier.wait(timeout=60)  # both save at the same instant
                db.save()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    _run([threading.Thread(target=writer, args=(t,)) for t in range(2)])
    db.close()
    assert not errors, errors
    report = verify_file(db_path)
    assert report.ok, report.problems
    with needle.Database.open(db_path, read_only=True) as db:
        assert db.collection("c").count() == 2 * 15 * 20


def test_many_threads_hammering_insert_search_save_lose_nothing(db_path):
    with needle.Database.open(db_path) as db:
        db.create_collection("c", DIM, "cosine", m=8, ef_construction=32)
        db.collection("c").insert_many([f"seed{i}" for i in range(50)], np.stack([_vec(i) for i in range(50)]))
    db = needle.Database.open(db_path)
    coll = db.collection("c")
    errors: list[BaseException] = []
    writers, rounds, per = 4, 12, 15

    def writer(t: int) -> None:
        try:
            for r in range(rounds):
                ids = [f"w{t}-{r}-{j}" for j in range(per)]
                coll.insert_many(ids, np.stack([_vec(1000 + t * 10_000 + r * 100 + j) for j in range(per)]),
                                 [{"t": t, "r": r}] * per)
                if r % 3 == 2:
                    coll.delete(ids[0])
                    coll.update_metadata(ids[1], {"t": t, "r": r, "updated": True})
                db.save()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def reader(t: int) -> None:
        try:
            for i in range(150):
                q = _vec(50_000 + t * 1000 + i)
                hits = coll.search(q, k=5)
                assert len(hits) == 5 and all(h.distance == h.distance for h in hits)
                batch = coll.search_batch(np.stack([q, -q, q * 2, q + 1]), k=3, filter={"t": {"$gte": 0}})
                assert len(batch) == 4
                assert coll.get("seed3").id == "seed3"
                assert coll.count() >= 50
                coll.find({"t": t % writers}, limit=5)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    _run([threading.Thread(target=writer, args=(t,)) for t in range(writers)]
         + [threading.Thread(target=reader, args=(t,)) for t in range(3)])
    db.close()
    assert not errors, errors[:3]
    assert verify_file(db_path).ok
    expected = {f"seed{i}" for i in range(50)}
    for t in range(writers):
        for r in range(rounds):
            ids = [f"w{t}-{r}-{j}" for j in range(per)]
            expected.update(ids[1:] if r % 3 == 2 else ids)
    with needle.Database.open(db_path, read_only=True) as db:
        c = db.collection("c")
        assert c.count() == len(expected)
        found = {i for i, _ in c.find()}
        assert found == expected
        assert c.get("w1-2-1").metadata == {"t": 1, "r": 2, "updated": True}


def test_a_transaction_holds_off_other_threads_writes(db_path):
    """A thread's transaction is all or nothing even while other threads write:
    their writes wait for the block and are never rolled back with it."""
    with needle.Database.open(db_path) as db:
        db.create_collection("c", DIM)
    db = needle.Database.open(db_path)
    coll = db.collection("c")
    inside, go = threading.Event(), threading.Event()
    other_errors = []

    def other() -> None:
        inside.wait(timeout=60)
        go.set()
        try:
            coll.insert("other", _vec(2))  # waits for the transaction to end
            db.save()
        except BaseException as exc:  # noqa: BLE001
            other_errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    with pytest.raises(RuntimeError):
        with db.transaction():
            coll.insert("mine", _vec(1))
            inside.set()
            go.wait(timeout=60)
            raise RuntimeError("roll back")
    t.join(timeout=600)
    assert not other_errors
    assert "mine" not in coll and "other" in coll
    db.close()
    with needle.Database.open(db_path, read_only=True) as db:
        assert [i for i, _ in db.collection("c").find()] == ["other"]


def test_save_from_another_thread_waits_for_a_transaction_instead_of_failing(db_path):
    with needle.Database.open(db_path) as db:
        db.create_collection("c", DIM)
    db = needle.Database.open(db_path)
    coll = db.collection("c")
    started, errors = threading.Event(), []

    def saver() -> None:
        started.wait(timeout=60)
        try:
            db.save()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=saver)
    t.start()
    with db.transaction():
        coll.insert("a", _vec(1))
        started.set()
        t.join(timeout=0.2)  # the saver is blocked on the transaction, not failing
        assert t.is_alive() and not errors
    t.join(timeout=600)
    assert not errors
    assert db.generation == 3 and "a" in coll  # 2: the collection, 3: the transaction
    db.close()


@pytest.mark.parametrize("read_only", [False, True])
def test_closing_while_other_threads_read_gives_them_a_clear_error(db_path, read_only):
    with needle.Database.open(db_path) as db:
        db.create_collection("c", DIM).insert_many([str(i) for i in range(100)], np.stack([_vec(i) for i in range(100)]))
    db = needle.Database.open(db_path, read_only=read_only)
    coll = db.collection("c")
    unexpected = []
    barrier = threading.Barrier(3)

    def reader() -> None:
        barrier.wait(timeout=60)
        for i in range(300):
            try:
                coll.search(_vec(i), k=3)
            except NeedleError:
                return  # DatabaseClosedError once closed
            except BaseException as exc:  # noqa: BLE001
                unexpected.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    barrier.wait(timeout=60)
    db.close()
    for t in threads:
        t.join(timeout=600)
    assert not unexpected, unexpected


def test_insert_raced_by_another_process_is_a_duplicate_at_save(db_path):
    """Process B inserted x; A commits x first; B's save must not replace A's record."""
    with needle.Database.open(db_path) as db:
        db.create_collection("c", DIM)
    b = needle.Database.open(db_path)
    cb = b.collection("c")
    cb.insert("x", _vec(2), {"by": "B"})
    cb.insert("y", _vec(3), {"by": "B"})
    proc = run_python(f"""
        import numpy as np, needle_mm as needle
        with needle.Database.open({db_path!r}) as db:
            db.collection("c").insert("x", np.ones({DIM}, dtype=np.float32), {{"by": "A"}})
    """)
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(DuplicateIdError, match="'x'"):
        b.save()
    # nothing was committed, and B's writes are still pending
    assert b.dirty and cb.get("y").metadata == {"by": "B"}
    with needle.Database.open(db_path, read_only=True) as other:
        assert other.collection("c").get("x").metadata == {"by": "A"}
        assert "y" not in other.collection("c")
    cb.upsert("x", _vec(2), {"by": "B, knowingly"})  # replacing is now what B asks for
    b.save()
    b.close()
    with needle.Database.open(db_path, read_only=True) as other:
        assert other.collection("c").get("x").metadata == {"by": "B, knowingly"}
        assert other.collection("c").count() == 2


def test_an_inserted_record_edited_before_save_still_refuses_to_replace(db_path):
    """update_metadata of one's own pending insert is not an upsert: the race is still refused."""
    with needle.Database.open(db_path) as db:
        db.create_collection("c", DIM)
    b = needle.Database.open(db_path)
    cb = b.collection("c")
    cb.insert("x", _vec(2), {"by": "B"})
    cb.update_metadata("x", {"by": "B", "edited": True})
    with needle.Database.open(db_path) as a:
        a.collection("c").insert("x", _vec(1), {"by": "A"})
    with pytest.raises(DuplicateIdError, match="'x'"):
        b.save()
    b.close()
    with needle.Database.open(db_path, read_only=True) as other:
        assert other.collection("c").get("x").metadata == {"by": "A"}


def test_insert_after_deleting_the_same_id_is_not_a_conflict(db_path):
    with needle.Database.open(db_path) as db:
        db.create_collection("c", DIM).insert("x", _vec(1), {"v": 1})
    with needle.Database.open(db_path) as db:
        c = db.collection("c")
        c.delete("x")
        c.insert("x", _vec(2), {"v": 2})
        db.refresh()
        db.save()
    with needle.Database.open(db_path, read_only=True) as db:
        assert db.collection("c").get("x").metadata == {"v": 2}


def test_the_shared_exclusive_lock_excludes_writers_from_readers_and_each_other():
    """The lock itself, hammered: no reader ever overlaps a writer, writers
    never overlap, nested holds work, and everyone finishes (bounded by count)."""
    import sys

    from needle_mm._engine.thread_guard import SharedExclusiveLock

    lock = SharedExclusiveLock()
    inside = {"readers": 0, "writers": 0}
    counter = threading.Lock()
    problems = []
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads as often as possible: interleave every step

    def reader() -> None:
        for i in range(3000):
            lock.acquire_shared()
            if i % 7 == 0:
                lock.acquire_shared()  # nested
                lock.release_shared()
            with counter:
                inside["readers"] += 1
                if inside["writers"]:
                    problems.append("a reader overlapped a writer")
            with counter:
                inside["readers"] -= 1
            lock.release_shared()

    def writer() -> None:
        for i in range(600):
            lock.acquire_exclusive()
            lock.acquire_shared()  # a writer's thread may read
            lock.release_shared()
            with counter:
                inside["writers"] += 1
                if inside["writers"] > 1 or inside["readers"]:
                    problems.append(f"a writer overlapped {inside['readers']} readers / another writer")
            with counter:
                inside["writers"] -= 1
            lock.release_exclusive()

    try:
        _run([threading.Thread(target=reader) for _ in range(4)] + [threading.Thread(target=writer) for _ in range(2)])
    finally:
        sys.setswitchinterval(old_interval)
    assert problems == []
    assert lock._active == [] and lock._writer is None and lock._writers_waiting == 0
