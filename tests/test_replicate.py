"""Replicas that follow a file by copying what each commit wrote (SPEC §6.2).

What could go wrong: a replica that is, for an instant, not a valid file
(ranges written over bytes its generation reads, the superblock before the
data), a follower killed halfway leaving a torn replica, ranges missed when
the follower falls behind, a reader of the replica whose generation is
overwritten under it, more bytes shipped than the commit wrote, and a
follower that does not stop on a signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import needle_mm as needle
from needle_mm._format.header import SUPERBLOCK_OFFSETS
from needle_mm.errors import DatabaseNotFoundError, InvalidArgumentError
from needle_mm.ops.replicate import ship
from needle_mm.ops.verify import verify_file

from conftest import ROOT, run_python


def _answers(path: str, queries) -> list:
    with needle.Database.open(path, read_only=True) as db:
        c = db.collection("c")
        return [c.count(), [[(h.id, round(h.distance, 5)) for h in c.search(q, k=5)] for q in queries],
                [h.id for h in c.search(text="word7 hello", k=5)]]


def _generation(path: str) -> int:
    with needle.Database.open(path, read_only=True) as db:
        return db.generation


def _filled(db, rng, n: int = 2000):
    """A new collection "c" of ``n`` records with texts, committed."""
    c = db.create_collection("c", 16, text_field="t")
    c.insert_many([str(i) for i in range(n)], rng.random((n, 16)), [{"t": "x"} for _ in range(n)])
    db.save()
    return c


def _commit(db, c, rng, step: int) -> None:
    c.insert_many([f"n{step}-{i}" for i in range(20)], rng.random((20, 16)), [{"t": "hello world"}] * 20)
    c.delete([str(step * 7)])
    c.upsert(str(step * 7 + 1), rng.random(16), {"t": f"word{step} replaced"})
    db.save()


def test_each_commit_ships_as_its_ranges_and_the_replica_verifies(tmp_path):
    rng = np.random.default_rng(0)
    src, dst = str(tmp_path / "src.needle"), str(tmp_path / "dst.needle")
    queries = rng.random((4, 16))
    with needle.Database.open(src) as db:
        c = db.create_collection("c", 16, text_field="t")
        c.insert_many([str(i) for i in range(3000)], rng.random((3000, 16)), [{"t": f"word{i % 50}"} for i in range(3000)])
        db.save()
        first = ship(src, dst)
        assert first.mode == "copy" and first.previous is None and first.generation == db.generation
        for step in range(6):
            _commit(db, c, rng, step)
            catalog, sb = db.engine.snapshot.catalog, db.engine.snapshot.superblock
            wrote = sum(n for _, n in catalog.written[-1][1]) + sb.catalog_length + 64
            s = ship(src, dst)
            assert (s.mode, s.previous, s.generation) == ("ranges", db.generation - 1, db.generation), s
            assert s.bytes <= 1.1 * wrote
            assert verify_file(dst).ok
            assert _answers(dst, queries) == _answers(src, queries)
        assert ship(src, dst).mode == "none"


def test_a_replica_behind_by_several_commits_catches_up(tmp_path):
    rng = np.random.default_rng(1)
    src, dst = str(tmp_path / "src.needle"), str(tmp_path / "dst.needle")
    with needle.Database.open(src) as db:
        c = _filled(db, rng)
        ship(src, dst)
        for step in range(3):
            _commit(db, c, rng, step)
        s = ship(src, dst)
        assert s.generation == db.generation and s.previous == db.generation - 3
        # by ranges where the source reused nothing the replica reads, else a whole copy, said why
        assert s.mode == "ranges" or "reused space" in s.why
        queries = rng.random((2, 16))
        assert verify_file(dst).ok and _answers(dst, queries) == _answers(src, queries)


def _set_uuid(path: str, uuid: bytes) -> None:
    """Give the file another ``file_uuid`` (header CRC rewritten to match)."""
    from needle_mm._format.header import UUID_OFFSET
    from zlib import crc32

    with open(path, "r+b") as f:
        raw = bytearray(f.read(64))
        raw[UUID_OFFSET : UUID_OFFSET + 16] = uuid
        raw[60:64] = crc32(bytes(raw[:60])).to_bytes(4, "little")
        f.seek(0)
        f.write(raw)


@pytest.mark.parametrize("uuid", [bytes(range(1, 15)) + b"\0\0", bytes(16)])
def test_a_file_whose_uuid_ends_in_nul_bytes_is_a_replica_of_itself(tmp_path, uuid):
    """One uuid in 256 ends in a NUL byte, which numpy's "S16" field drops:
    the replica then looked like a copy of another file and was copied whole."""
    rng = np.random.default_rng(4)
    src, dst = str(tmp_path / "src.needle"), str(tmp_path / "dst.needle")
    with needle.Database.open(src) as db:
        db.create_collection("c", 16, text_field="t")
    _set_uuid(src, uuid)
    with needle.Database.open(src) as db:
        c = db.collection("c")
        c.insert_many([str(i) for i in range(200)], rng.random((200, 16)), [{"t": "x"}] * 200)
        db.save()
        assert ship(src, dst).mode == "copy"
        _commit(db, c, rng, 0)
        s = ship(src, dst)
        assert (s.mode, s.previous, s.generation) == ("ranges", db.generation - 1, db.generation), s
    assert verify_file(dst).ok


def test_a_replica_that_is_not_one_is_copied_whole_and_says_why(tmp_path):
    rng = np.random.default_rng(5)
    src, other, dst = (str(tmp_path / n) for n in ("src.needle", "other.needle", "dst.needle"))
    with needle.Database.open(other) as db:
        _filled(db, rng, n=50)
    with needle.Database.open(src) as db:
        _filled(db, rng, n=50)
        g = db.generation
    os.replace(other, dst)  # another database's file where the replica should be
    s = ship(src, dst)
    assert (s.mode, s.previous, s.generation) == ("copy", None, g) and "another file" in s.why, s
    with open(dst, "r+b") as f:  # both superblocks torn: the replica no longer opens
        for offset in SUPERBLOCK_OFFSETS:
            f.seek(offset)
            f.write(b"\xff" * 64)
    s = ship(src, dst)
    assert (s.mode, s.previous) == ("copy", None) and "does not open" in s.why, s
    assert verify_file(dst).ok and _generation(dst) == g


def test_a_reader_of_the_replica_keeps_its_generation(tmp_path):
    rng = np.random.default_rng(2)
    src, dst = str(tmp_path / "src.needle"), str(tmp_path / "dst.needle")
    q = rng.random(16)
    with needle.Database.open(src) as db:
        c = _filled(db, rng)
        ship(src, dst)
        with needle.Database.open(dst, read_only=True, auto_refresh=False) as reader:
            before = [(h.id, h.distance) for h in reader.collection("c").search(q, k=10)]
            held = reader.generation
            for step in range(4):
                _commit(db, c, rng, step)
                s = ship(src, dst)
                assert s.generation == db.generation
                if s.generation > held + 1:  # the reader's generation may be older than the replica's now
                    assert s.mode == "copy"
                # the reader still reads its own generation, whole
                assert [(h.id, h.distance) for h in reader.collection("c").search(q, k=10)] == before
        assert verify_file(dst).ok and _generation(dst) == db.generation


@pytest.mark.parametrize("point, mode", [("replicate.after_ranges", "ranges"), ("replicate.before_rename", "copy")])
def test_a_follower_killed_halfway_leaves_the_previous_generation(tmp_path, point, mode):
    rng = np.random.default_rng(3)
    src, dst = str(tmp_path / "src.needle"), str(tmp_path / "dst.needle")
    with needle.Database.open(src) as db:
        c = _filled(db, rng)
        ship(src, dst)
        _commit(db, c, rng, 0)
        if mode == "copy":
            _commit(db, c, rng, 1)
            _commit(db, c, rng, 2)
            os.remove(dst)  # a new replica: copied whole
        before = None if mode == "copy" else _generation(dst)
        out = run_python("""
            import sys
            from needle_mm.ops.replicate import ship
            ship(sys.argv[1], sys.argv[2])
            """, src, dst, env={"NEEDLE_FAILPOINTS": f"{point}=kill"})
        assert out.returncode != 0, out.stderr
        if before is None:
            assert not os.path.exists(dst)  # the whole copy was never renamed into place
        else:
            assert verify_file(dst).ok and _generation(dst) == before
        s = ship(src, dst)  # restarted: it resumes
        assert s.generation == db.generation and verify_file(dst).ok
        assert not [n for n in os.listdir(tmp_path) if ".replica-" in n]


def test_follow_ships_every_commit_of_a_writer_and_stops_on_sigint(tmp_path):
    rng = np.random.default_rng(4)
    src, dst = str(tmp_path / "src.needle"), str(tmp_path / "dst.needle")
    with needle.Database.open(src) as db:
        c = db.create_collection("c", 16, text_field="t")
        c.insert_many([str(i) for i in range(1000)], rng.random((1000, 16)), [{"t": "x"} for _ in range(1000)])
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    follower = subprocess.Popen([sys.executable, "-m", "needle_mm", "replicate", src, dst, "--follow",
                                 "--interval", "0.05"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
    try:
        seen = set()
        with needle.Database.open(src) as db:
            c = db.collection("c")
            for step in range(8):
                _commit(db, c, rng, step)
                # wait (bounded by count, not time) until the replica reaches this generation,
                # checking the replica whole at every generation it shows
                for _ in range(6000):
                    if os.path.exists(dst):
                        g = _generation(dst)
                        if g not in seen:
                            assert verify_file(dst).ok, g
                            seen.add(g)
                        if g == db.generation:
                            break
                    time.sleep(0.01)
                assert _generation(dst) == db.generation
        assert len(seen) >= 2
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=120)
        assert follower.returncode == 0, err
        assert "replica at generation" in out
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()


def test_bad_arguments_are_named(tmp_path):
    src = str(tmp_path / "src.needle")
    with pytest.raises(DatabaseNotFoundError):
        ship(src, str(tmp_path / "d.needle"))
    with needle.Database.open(src) as db:
        db.create_collection("c", 4)
    with pytest.raises(InvalidArgumentError, match="source itself"):
        ship(src, src)
    with pytest.raises(InvalidArgumentError, match="interval"):
        needle.replicate(src, str(tmp_path / "d.needle"), follow=True, interval=0)


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_an_object_store_replica_restores_every_generation_it_kept(tmp_path, scheme):
    from needle_mm.ops.object_replica import generations, restore

    rng = np.random.default_rng(5)
    src = str(tmp_path / "src.needle")
    url = f"file://{tmp_path}/store" if scheme == "file" else f"memory://needle-test-{os.getpid()}-{id(tmp_path)}"
    queries = rng.random((3, 16))
    held = {}
    with needle.Database.open(src) as db:
        c = _filled(db, rng)
        assert ship(src, url).mode == "copy"
        held[db.generation] = _answers(src, queries)
        for step in range(5):
            _commit(db, c, rng, step)
            if step == 2:
                _commit(db, c, rng, 10)  # two commits between shipments: one object holds both
            s = ship(src, url)
            assert s.mode == "ranges" and s.generation == db.generation
            held[db.generation] = _answers(src, queries)
        assert ship(src, url).mode == "none"
    assert generations(url) == sorted(held)
    for g, want in held.items():
        out = str(tmp_path / f"at-{g}.needle")
        assert restore(url, out, g) == g
        assert verify_file(out).ok and _generation(out) == g
        assert _answers(out, queries) == want
    with pytest.raises(InvalidArgumentError, match="not kept"):
        restore(url, str(tmp_path / "x.needle"), 999)
    with pytest.raises(InvalidArgumentError, match="already exists"):
        restore(url, str(tmp_path / f"at-{max(held)}.needle"))


def test_an_interrupted_upload_leaves_the_manifest_at_the_previous_generation(tmp_path):
    from needle_mm.cli import main
    from needle_mm.ops.object_replica import generations

    rng = np.random.default_rng(6)
    src, url = str(tmp_path / "src.needle"), f"file://{tmp_path}/store"
    with needle.Database.open(src) as db:
        c = db.create_collection("c", 16)
        c.insert_many([str(i) for i in range(1000)], rng.random((1000, 16)))
        db.save()
        assert main(["replicate", src, url]) == 0
        before = generations(url)
        _commit(db, c, rng, 0)
        out = run_python("""
            import sys
            import fsspec.implementations.local as local
            from needle_mm.ops.replicate import ship
            real = local.LocalFileSystem.pipe_file
            def killed(self, path, *a, **k):  # the object is up, the manifest never is
                import os
                os._exit(9)
            local.LocalFileSystem.pipe_file = killed
            ship(sys.argv[1], sys.argv[2])
            """, src, url)
        assert out.returncode != 0
        assert generations(url) == before
        assert main(["restore", url, str(tmp_path / "r.needle")]) == 0
        assert _generation(str(tmp_path / "r.needle")) == before[-1]
        assert main(["replicate", src, url]) == 0  # resumed
        assert generations(url)[-1] == db.generation
