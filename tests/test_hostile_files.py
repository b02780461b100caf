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
