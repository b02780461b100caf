"""The kernels under NUMBA_BOUNDSCHECK=1: every array index checked.

numba does no bounds checks by default, so an off-by-one in a kernel would
read or write memory silently. This lane recompiles every kernel with
checks (in its own NUMBA_CACHE_DIR, so the normal cache is untouched) and
drives builds, incremental commits, deletes, every search path and the
hostile-file corpus through them; an out-of-bounds index raises IndexError
and fails the test. The lane runs on the JIT (NEEDLE_MM_JIT=1): the
ahead-of-time kernels, where built, were compiled without the checks.
"""

from __future__ import annotations

import pytest

from conftest import ROOT, run_python

LANE = """
import os, sys
import numpy as np, needle_mm as needle
sys.path.insert(0, os.path.join(sys.argv[2], "tools"))
import fuzz_files
import numba

@numba.njit
def probe(a):
    return a[a.shape[0]]

try:  # the lane is only a lane if the checks are really on
    probe(np.zeros(3))
    sys.exit("NUMBA_BOUNDSCHECK is not in effect")
except IndexError:
    pass
path = os.path.join(sys.argv[1], "bc.needle")
rng = np.random.default_rng(0)
for distance in ("cosine", "euclidean", "dot"):
    with needle.Database.open(path) as db:
        c = db.create_collection(distance, 16, distance, m=6, ef_construction=40)
        c.insert_many([f"a{i}" for i in range(700)], rng.normal(size=(700, 16)), [{"i": i} for i in range(700)])
    for step in range(3):  # incremental commits into the same graph, with deletes
        with needle.Database.open(path) as db:
            c = db.collection(distance)
            c.insert_many([f"s{step}-{i}" for i in range(150)], rng.normal(size=(150, 16)))
            c.delete([f"a{i}" for i in range(step, 700, 5)])
    with needle.Database.open(path, read_only=True) as db:
        c = db.collection(distance)
        q = rng.normal(size=(9, 16)).astype(np.float32)
        for k in (1, 10, 2000):
            c.search(q[0], k)
            c.search(q[0], k, exact=True)
            c.search_batch(q, k)
            c.search_batch(q, k, exact=True)
        c.search(q[0], 5, filter={"i": {"$lt": 50}})
    db = needle.Database.open(path)
    db.collection(distance).insert_many(["tail1", "tail2"], rng.normal(size=(2, 16)))
    db.collection(distance).search(q[0], 5)  # committed graph + unsaved tail
    db.close()
print("corpus", sorted(set(fuzz_files.replay().values())))
print("LANE-OK")
"""


@pytest.mark.slow
def test_kernels_under_numba_boundscheck(tmp_path):
    cache = tmp_path / "numba-cache"
    out = run_python(LANE, str(tmp_path), ROOT,
                     env={"NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(cache), "NEEDLE_MM_JIT": "1"}, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "LANE-OK" in out.stdout
    assert "unhandled" not in out.stdout
