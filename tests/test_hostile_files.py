"""Damaged files: every truncation and every superblock bit flip is caught.

Each sweep runs in a child process (a crash there fails the test instead of
killing pytest) and prints one line of counts.
"""

from __future__ import annotations

import numpy as np
import pytest

import needle_mm as needle
from conftest import run_python


@pytest.fixture
def two_generations(db_path):
    with needle.Database.open(db_path) as db:
        c = db.create_collection("c", 4)
        c.insert_many([f"a{i}" for i in range(40)], np.random.default_rng(0).normal(size=(40, 4)),
                      [{"i": i} for i in range(40)])
    with needle.Database.open(db_path) as db:
        c = db.collection("c")
        c.insert_many([f"b{i}" for i in range(20)], np.random.default_rng(1).normal(size=(20, 4)))
        c.delete(["a1", "a2"])
    return db_path


TRUNCATE = """
import os, sys, shutil, needle_mm as needle
src = sys.argv[1]
data = open(src, "rb").read()
ok = errors = 0
for cut in range(0, len(data), 512):
    path = src + ".cut"
    with open(path, "wb") as f:
        f.write(data[:cut])
    try:
        with needle.Database.open(path, read_only=True) as db:
            c = db.collection("c")
            for i, _ in c.find():
                c.get(i)
            c.search([1, 0, 0, 0], 5)
        ok += 1
    except needle.NeedleError:
        errors += 1
print(f"cuts={ok + errors} opened={ok} errors={errors} signals=0")
"""


def test_truncated_at_every_512_bytes(two_generations):
    out = run_python(TRUNCATE, two_generations)
    assert out.returncode == 0, out.stderr
    counts = dict(kv.split("=") for kv in out.stdout.split())
    assert int(counts["cuts"]) > 20 and int(counts["opened"]) == 0, out.stdout  # every cut loses needed bytes


FLIPS = """
import sys, needle_mm as needle
from needle_mm._format.header import SUPERBLOCK_OFFSETS, decode_superblock
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
with needle.Database.open(path, read_only=True) as db:
    current = db.generation
flips = detected = wrong = opened_older = 0
for slot, base in enumerate(SUPERBLOCK_OFFSETS):
    for byte in range(64):
        for bit in range(8):
            flipped = bytearray(data[base:base + 64])
            flipped[byte] ^= 1 << bit
            flips += 1
            if decode_superblock(bytes(flipped), slot) is None:
                detected += 1
            damaged = bytearray(data)
            damaged[base + byte] ^= 1 << bit
            with open(path + ".flip", "wb") as f:
                f.write(damaged)
            try:
                with needle.Database.open(path + ".flip", read_only=True) as db:
                    g = db.generation
                    db.collection("c").count()
                    if g == current - 1:
                        opened_older += 1
                    elif g != current:
                        wrong += 1
            except needle.NeedleError:
                pass
print(f"flips={flips} detected={detected} wrong={wrong} fell_back={opened_older}")
"""


def test_every_superblock_bit_flip_is_detected(two_generations):
    out = run_python(FLIPS, two_generations)
    assert out.returncode == 0, out.stderr
    counts = dict(kv.split("=") for kv in out.stdout.split())
    assert counts["flips"] == "1024" and counts["detected"] == "1024" and counts["wrong"] == "0", out.stdout
    assert int(counts["fell_back"]) == 512  # a flip in the current slot falls back to the previous generation


def test_nan_vectors_in_a_cosine_collection_never_hang_a_search(tmp_path):
    """NaN distances made the greedy walk loop forever under fast-math; now a
    distance that is not finite ranks last, and searches (graph, exact,
    batch) and a writer's graph build return."""
    path = str(tmp_path / "nan.needle")
    with needle.Database.open(path) as db:
        db.create_collection("c", 8, "cosine", m=4).insert_many(
            [f"r{i}" for i in range(200)], np.random.default_rng(3).normal(size=(200, 8)) + 0.1)
    out = run_python("""
        import json, sys, numpy as np, needle_mm as needle
        path = sys.argv[1]
        with needle.Database.open(path, read_only=True) as db:
            seg = db.engine.snapshot.catalog.collections["c"].segments[0]
            ref = seg.regions["vectors"]
        data = bytearray(open(path, "rb").read())
        nan = np.full(8 * 40, np.nan, dtype="<f4").tobytes()  # 40 records' vectors, words spliced
        data[ref.offset:ref.offset + len(nan)] = nan
        open(path, "wb").write(bytes(data))
        with needle.Database.open(path) as db:
            c = db.collection("c")
            q = np.ones(8, dtype=np.float32)
            hits = c.search(q, 10)
            exact = c.search(q, 10, exact=True)
            batch = c.search_batch(np.stack([q, -q, q]), 5)
            c.insert_many([f"n{i}" for i in range(50)], np.random.default_rng(4).normal(size=(50, 8)) + 0.1)
            db.save()
            after = c.search(q, 10)
        print(json.dumps([len(hits), len(exact), [len(b) for b in batch], len(after),
                          all(h.distance == h.distance for h in hits + exact + after)]))
    """, path, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[10, 10, [5, 5, 5], 10, true]"
