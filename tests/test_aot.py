"""The ahead-of-time kernels (``needle_mm._kernels._aot``, built by setup.py) and
their router ``needle_mm._kernels.api``.

A reader on the extension must give the answers the JIT gives, bit for bit
(ids and distances), on every read path; never import numba; release the
GIL inside a kernel; send any argument the extension was not built for to
the JIT instead of crashing; and ignore an extension that does not belong
to the kernel sources beside it.

The extension is wherever ``needle_mm`` is imported from: the source tree
after ``pip install -e .`` or ``python setup.py build_ext --inplace``, or the
installed package (``pip install .``, as CI does; the tree then has none).
Tests that need it run children that import it from there (the installed
copy: a child outside the repository, without it on sys.path), and skip,
saying why, when neither has it. The JIT answers always come from the
source tree (its numba cache is the suite's), provided its kernel sources
are the ones the extension was built from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import needle_mm as needle
from needle_mm import _kernels
from needle_mm._kernels import aot_build, api

from conftest import ROOT

PROBE = """
import json, os, needle_mm
from needle_mm._kernels import api, aot_build
info = api.backend_info()
print(json.dumps({"file": needle_mm.__file__, "info": info,
                  "sources": aot_build.source_hash(os.path.dirname(aot_build.__file__))}))
"""


def child(code: str, *args: str, where: str, env: dict | None = None, timeout: float = 300,
          cwd: str | None = None) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter importing needle_mm from ``where``: "tree"
    (this checkout) or "installed" (site-packages: run outside the checkout,
    without it on sys.path)."""
    full = dict(os.environ)
    full.pop("PYTHONPATH", None)
    if where == "tree":
        full["PYTHONPATH"] = ROOT
    full.update(env or {})
    run_in = cwd or (ROOT if where == "tree" else tempfile.gettempdir())
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          env=full, cwd=run_in, timeout=timeout)


def json_out(out: subprocess.CompletedProcess):
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def aot():
    """Where a child finds the extension: {"where", "file", "info", "sources"}; skips when nowhere."""
    reasons = []
    for where in ("tree", "installed"):
        out = child(PROBE, where=where)
        if out.returncode:
            reasons.append(f"{where}: needle_mm does not import ({out.stderr.strip().splitlines()[-1:]})")
            continue
        found = json.loads(out.stdout.strip().splitlines()[-1])
        if found["info"]["backend"] == "aot":
            return dict(found, where=where)
        reasons.append(f"{where} ({os.path.dirname(found['file'])}): {found['info']['reason']}")
    pytest.skip("the ahead-of-time kernels are not available: " + "; ".join(reasons))


@pytest.fixture(scope="module")
def same_sources(aot):
    tree = aot_build.source_hash(os.path.join(ROOT, "needle_mm", "_kernels"))
    if aot["info"]["build"]["sources"] != tree:
        pytest.skip(f"the extension in {os.path.dirname(aot['file'])} was built from other kernel sources "
                    "than this checkout's, so the JIT answers of the checkout are not its reference")


# ----------------------------------------------------------------- (a), (b): same answers, no numba

DIM = 16


@pytest.fixture(scope="module")
def read_db(tmp_path_factory):
    """A file with every read path to take: dense f32/f16 x cosine/euclidean/dot
    in two segments with deletes, array metadata for filters, a sparse collection."""
    path = str(tmp_path_factory.mktemp("aot") / "read.needle")
    rng = np.random.default_rng(19)
    n = 1600
    meta = [{"i": i, "grp": i % 50, "tags": [["a"], ["a", "b"], ["c"], []][i % 4]} for i in range(n)]
    with needle.Database.open(path) as db:
        for dtype in ("f32", "f16"):
            for distance in ("cosine", "euclidean", "dot"):
                c = db.create_collection(f"{dtype}-{distance}", DIM, distance, m=8, ef_construction=48, ef_search=16,
                                         dtype=dtype)
                c.insert_many([f"r{i}" for i in range(1200)], rng.normal(size=(1200, DIM)), meta[:1200])
        s = db.create_collection("sparse", 500, "dot", sparse=True)
        s.insert_many([f"s{i}" for i in range(1500)],
                      [{"indices": sorted(rng.choice(500, 6, replace=False).tolist()),
                        "values": rng.random(6).tolist()} for _ in range(1500)], meta[:1500])
    with needle.Database.open(path) as db:  # a second segment, then deletes in both
        for dtype in ("f32", "f16"):
            for distance in ("cosine", "euclidean", "dot"):
                c = db.collection(f"{dtype}-{distance}")
                c.insert_many([f"r{i}" for i in range(1200, n)], rng.normal(size=(n - 1200, DIM)), meta[1200:])
    with needle.Database.open(path) as db:
        for dtype in ("f32", "f16"):
            for distance in ("cosine", "euclidean", "dot"):
                db.collection(f"{dtype}-{distance}").delete([f"r{i}" for i in range(0, n, 7)])
        db.collection("sparse").delete([f"s{i}" for i in range(0, 1500, 9)])
    with needle.Database.open(path) as db:  # one segment each: one-query searches take the lean call
        for dtype, quantization, distance in (("f32", None, "euclidean"), ("f16", None, "cosine"),
                                              ("f32", "int8", "cosine"), ("f32", "binary", "dot")):
            c = db.create_collection(f"one-{dtype}-{quantization}-{distance}", DIM, distance, m=8,
                                     ef_construction=48, ef_search=16, dtype=dtype, quantization=quantization)
            c.insert_many([f"r{i}" for i in range(1200)], rng.normal(size=(1200, DIM)), meta[:1200])
    with needle.Database.open(path) as db:
        for name in db.list_collections():
            if name.startswith("one-"):
                db.collection(name).delete([f"r{i}" for i in range(0, 1200, 11)])
    return path


ANSWERS = """
import json, sys
import numpy as np
import needle_mm as needle
from needle_mm._kernels import api

def hits(rows):
    return [[(h.id, h.distance) for h in row] for row in rows]

def arrays(pair):
    ids, dists = pair
    return [ids.tolist(), dists.astype(float).tolist()]

rng = np.random.default_rng(7)
q = rng.normal(size=(128, %(dim)d)).astype(np.float32)  # 128 x 1200 x 16 rows: the parallel exact kernel
out = {}
with needle.Database.open(sys.argv[1], read_only=True) as db:
    for dtype in ("f32", "f16"):
        for distance in ("cosine", "euclidean", "dot"):
            name = f"{dtype}-{distance}"
            c = db.collection(name)
            out[name + " single"] = hits([c.search(q[j], k=10) for j in range(5)])
            out[name + " batch"] = arrays(c.search_batch(q[:12], k=10, as_arrays=True))
            out[name + " batch results"] = hits(c.search_batch(q[:5], k=10))
            out[name + " exact single"] = hits([c.search(q[0], k=10, exact=True)])
            out[name + " exact batch"] = arrays(c.search_batch(q[:9], k=10, exact=True, as_arrays=True))
            out[name + " exact batch, parallel"] = arrays(c.search_batch(q, k=7, exact=True, as_arrays=True))
            for label, flt in (("walk", {"grp": {"$lt": 25}}), ("two-hop", {"grp": {"$lt": 4}}),
                               ("exact", {"i": {"$lt": 30}}), ("array any", {"tags": "b"}),
                               ("array size", {"tags": {"$size": 1}})):
                out[f"{name} filter {label}"] = hits([c.search(q[1], k=10, filter=flt)])
                out[f"{name} filter {label} batch"] = arrays(c.search_batch(q[:6], k=10, filter=flt, as_arrays=True))
    for name in db.list_collections():
        if name.startswith("one-"):
            c = db.collection(name)
            out[name + " single"] = hits([c.search(q[j], k=10) for j in range(5)])
            out[name + " single arrays"] = [arrays(c.search(q[j], k=10, as_arrays=True)) for j in range(3)]
            out[name + " single rescore 0"] = hits([c.search(q[j], k=10, rescore=0) for j in range(3)])
    c = db.collection("f32-cosine")
    out["get"] = [(e.id, e.metadata, e.vector.tolist()) if e is not None else None
                  for e in [c.get("r5"), *c.get_many(["r1", "r7", "nope", "r1599"])]]
    out["find"] = c.find({"tags": "b"}, limit=20)
    out["find size"] = c.find({"tags": {"$size": 0}}, limit=20, offset=3)
    s = db.collection("sparse")
    sq = [{"indices": sorted(rng.choice(500, 4, replace=False).tolist()), "values": rng.random(4).tolist()}
          for _ in range(10)]
    out["sparse single"] = hits([s.search(x, k=8) for x in sq[:3]])
    out["sparse batch"] = arrays(s.search_batch(sq, k=8, as_arrays=True))
    out["sparse filtered"] = hits([s.search(sq[0], k=8, filter={"grp": {"$lt": 10}})])
info = api.backend_info()
print(json.dumps({"answers": out, "backend": info["backend"], "reason": info["reason"],
                  "fallbacks": info["fallbacks"], "numba": "numba" in sys.modules,
                  "aot module": "needle_mm._kernels._aot" in sys.modules}, default=str))
""" % {"dim": DIM}


@pytest.fixture(scope="module")
def aot_answers(aot, read_db):
    return json_out(child(ANSWERS, read_db, where=aot["where"]))


@pytest.fixture(scope="module")
def jit_answers(read_db):
    return json_out(child(ANSWERS, read_db, where="tree", env={"NEEDLE_MM_JIT": "1"}, timeout=900))


def test_aot_and_jit_give_the_same_answers(aot_answers, jit_answers, same_sources):
    assert aot_answers["backend"] == "aot"
    assert jit_answers["backend"] == "jit" and "NEEDLE_MM_JIT" in jit_answers["reason"]
    a, j = aot_answers["answers"], jit_answers["answers"]
    assert a.keys() == j.keys()
    different = [key for key in a if a[key] != j[key]]
    assert different == [], f"AOT and JIT differ on: {different}"
    # real answers: every unfiltered single query found its 10
    assert all(len(row) == 10 for key, rows in a.items() if key.endswith(" single") and "sparse" not in key
               for row in rows)


def test_a_reader_on_the_extension_never_imports_numba(aot_answers):
    """Every read path above (dense, batch, exact, filtered, sparse, get/find) ran
    on the extension: no call went to the JIT, and numba was never imported."""
    assert aot_answers["fallbacks"] == {}
    assert aot_answers["aot module"]
    assert aot_answers["numba"] is False


def test_import_and_open_never_import_numba(aot, read_db):
    out = child("""
        import sys, needle_mm
        db = needle_mm.Database.open(sys.argv[1], read_only=True)
        db.collection("f16-dot").search([0.5] * 16, k=3)
        db.close()
        print("numba" in sys.modules, "llvmlite" in sys.modules)
        """, read_db, where=aot["where"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------- writers: graph construction

BUILD = """
import hashlib, json, sys
import numpy as np
import needle_mm as needle
from needle_mm._kernels import api

rng = np.random.default_rng(23)
digests = {}
with needle.Database.open(sys.argv[1]) as db:
    for dtype, distance in (("f32", "euclidean"), ("f16", "cosine")):
        c = db.create_collection(dtype, 24, distance, m=8, ef_construction=40, dtype=dtype)
        c.insert_many([f"a{i}" for i in range(3000)], rng.normal(size=(3000, 24)))
        db.save()  # a fresh graph: every batch of a build
        for k in range(2):  # a few new nodes: inserted into the committed graph (the second time, rows copied
            c.insert_many([f"b{k}-{i}" for i in range(10)], rng.normal(size=(10, 24)))  # into a patch, SPEC 5.9)
            db.save()
with needle.Database.open(sys.argv[1], read_only=True) as db:
    for name in ("f32", "f16"):
        c = db.collection(name)
        digests[name] = [(h.id, h.distance) for h in c.search(np.ones(24), k=20, ef=80)]
        for s, view in enumerate(db.engine.snapshot.segments(name)):  # the graph as the file holds it
            h = hashlib.sha256()
            arrays = [view.hnsw_levels, view.hnsw_links0, view.hnsw_upper_offsets, view.hnsw_upper_links]
            for p in view.graph_patches():
                arrays += [p.keys0, p.rows0, p.keys_upper, p.rows_upper]
            for x in arrays:
                h.update(np.ascontiguousarray(x).tobytes())
            digests[f"{name} segment {s}"] = [h.hexdigest(), len(arrays), view.descriptor.hnsw.entry_point]
info = api.backend_info()
print(json.dumps({"digests": digests, "backend": info["backend"], "fallbacks": info["fallbacks"],
                  "numba": "numba" in sys.modules}))
"""


def test_a_build_on_the_extension_equals_the_jit_and_never_imports_numba(aot, same_sources, tmp_path):
    """A writer builds graphs on the extension's phase kernels (no compile on a
    fresh install): the graphs it commits, a fresh build and an insertion into
    a committed graph with its patch rows, are the JIT's byte for byte, and
    numba is never loaded."""
    a = json_out(child(BUILD, str(tmp_path / "aot.needle"), where=aot["where"]))
    j = json_out(child(BUILD, str(tmp_path / "jit.needle"), where="tree", env={"NEEDLE_MM_JIT": "1"}, timeout=900))
    assert (a["backend"], j["backend"]) == ("aot", "jit")
    assert a["fallbacks"] == {} and a["numba"] is False
    assert len(a["digests"]["f32"]) == 20
    assert a["digests"]["f32 segment 0"][1] > 4, "the second commit did not patch the committed graph"
    assert a["digests"] == j["digests"]


def test_pulled_ranges_cover_the_items_once():
    from collections import Counter
    for count, grain, workers in ((0, 4, 2), (1, 4, 2), (7, 2, 2), (64, 16, 3), (1000, 7, 4), (5, 1, 8)):
        seen = Counter()
        lock = __import__("threading").Lock()

        def work(w, lo, hi):
            assert 0 <= w < max(1, workers) and 0 <= lo < hi <= count and hi - lo <= grain
            with lock:
                seen.update(range(lo, hi))

        api._pulled(count, grain, workers, work)
        assert seen == Counter(range(count))


# ----------------------------------------------------------------- (c): the GIL

GIL = """
import json, sys, threading, time
import numpy as np
from needle_mm._kernels import api
assert api.backend() == "aot", api.backend_info()
rng = np.random.default_rng(0)
V = rng.standard_normal((40000, 64), dtype=np.float32)
V.flags.writeable = False
N = np.linalg.norm(V, axis=1).astype(np.float32)
E, R = np.zeros(0, np.uint8), np.zeros(0, np.int64)

def queries(m):
    Q = rng.standard_normal((m, 64), dtype=np.float32)
    return Q, np.linalg.norm(Q, axis=1).astype(np.float32)

t = time.perf_counter()
api.exact_topk_serial(V, N, *queries(8), 0, E, 10, R)
m = int(min(4096, max(8, 8 * 0.3 / max(time.perf_counter() - t, 1e-4))))  # one call of ~0.3 s
Q, QN = queries(m)
took = []

def work():
    for _ in range(3):
        t = time.perf_counter()
        api.exact_topk_serial(V, N, Q, QN, 0, E, 10, R)
        took.append(time.perf_counter() - t)

worker = threading.Thread(target=work)
last = time.perf_counter()
worker.start()
gap = 0.0
while worker.is_alive():  # this thread runs Python only while the worker's kernel call lets go of the GIL
    now = time.perf_counter()
    gap = max(gap, now - last)
    last = now
worker.join()
print(json.dumps({"call": min(took), "gap": gap, "fallbacks": api.backend_info()["fallbacks"],
                  "numba": "numba" in sys.modules}))
"""


def test_the_extension_releases_the_gil(aot):
    r = json_out(child(GIL, where=aot["where"]))
    assert r["fallbacks"] == {} and r["numba"] is False
    # holding the GIL, the kernel would stop this thread for the whole call
    assert r["gap"] < r["call"] / 2, r


# ----------------------------------------------------------------- (d): arguments the extension was not built for

FALLBACK = """
import json, sys
import numpy as np
from needle_mm._kernels import api
assert api.backend() == "aot", api.backend_info()
rng = np.random.default_rng(3)
V = rng.standard_normal((2000, 16), dtype=np.float32)
V.flags.writeable = False
N = np.linalg.norm(V, axis=1).astype(np.float32)
Q = rng.standard_normal((5, 16), dtype=np.float32)
QN = np.linalg.norm(Q, axis=1).astype(np.float32)
E, R = np.zeros(0, np.uint8), np.zeros(0, np.int64)
ref_d, ref_i = api.exact_topk_serial(V, N, Q, QN, 0, E, 10, R)
out = {"clean": api.backend_info()["fallbacks"] == {} and "numba" not in sys.modules}

wide = np.zeros((2000, 32), dtype=np.float32)
wide[:, ::2] = V
raw = np.zeros(V.nbytes + 1, dtype=np.uint8)
unaligned = raw[1:].view(np.float32).reshape(V.shape)
unaligned[:] = V
cases = {
    "non-contiguous vectors": (wide[:, ::2], N, Q, QN, R),
    "Fortran-order queries": (V, N, np.asfortranarray(Q), QN, R),
    "float64 queries": (V, N, Q.astype(np.float64), QN, R),
    "unaligned vectors": (unaligned, N, Q, QN, R),
    "int32 row list": (V, N, Q, QN, np.arange(2000, dtype=np.int32)),
}
for label, (v, n, q, qn, rows) in cases.items():
    d, i = api.exact_topk_serial(v, n, q, qn, 0, E, 10, rows)
    out[label] = bool(np.array_equal(i, ref_i) and np.allclose(d, ref_d, rtol=1e-5, atol=1e-6))

offsets = np.arange(0, 3 * 101, 3, dtype=np.uint64)
blob = rng.integers(0, 255, 300, dtype=np.uint8)
slots = rng.integers(0, 100, (2, 3, 4)).astype(np.int64)
raw3, bounds3 = api.gather_blobs(offsets, blob, slots)  # 3-d slots: no such export
raw1, bounds1 = api.gather_blobs(offsets, blob, slots.ravel())
out["3-d slots"] = bool(np.array_equal(raw3, raw1) and np.array_equal(bounds3, bounds1))

for label, args in (("1-d queries", (V, N, Q[0], QN, 0, E, 10, R)),  # what the kernel cannot take at all:
                    ("float64 vectors", (V.astype(np.float64), N, Q, QN, 0, E, 10, R)),  # the JIT refuses it
                    ("big-endian norms", (V, N.astype(">f4"), Q, QN, 0, E, 10, R))):
    try:
        api.exact_topk_serial(*args)
        out[label] = "answered"
    except Exception as exc:
        out[label] = "raised " + type(exc).__name__

scores = np.zeros((1, 10), np.float32)
scores.flags.writeable = False  # the kernel writes into it: not into read-only memory
try:
    api.rank_serial(scores, np.zeros((1, 10), np.uint8), np.zeros((1, 10), np.uint32), np.zeros(1, np.int64), E, 3,
                    np.zeros((1, 3), np.float32), np.zeros((1, 3), np.int64))
    out["read-only scratch"] = "answered"
except Exception as exc:
    out["read-only scratch"] = "raised " + type(exc).__name__
out["fallbacks"] = api.backend_info()["fallbacks"]
out["numba"] = "numba" in sys.modules
print(json.dumps(out))
"""


def test_arguments_that_do_not_fit_go_to_the_jit(aot):
    r = json_out(child(FALLBACK, where=aot["where"], timeout=900))
    assert r.pop("clean") is True
    for refused in ("1-d queries", "float64 vectors", "big-endian norms"):
        assert r.pop(refused).startswith("raised"), refused
    assert r.pop("read-only scratch").startswith("raised")
    fallbacks, numba_loaded = r.pop("fallbacks"), r.pop("numba")
    assert r == dict.fromkeys(r, True), r
    assert fallbacks["exact_topk_serial"] >= 8 and fallbacks["gather_blobs__1d"] >= 1 and fallbacks["rank_serial"] >= 1
    assert numba_loaded


# ----------------------------------------------------------------- (e): an extension that does not belong here

def _copy_package(aot, tmp_path) -> str:
    package = os.path.dirname(aot["file"])
    root = tmp_path / "copy"
    shutil.copytree(package, root / "needle_mm", ignore=shutil.ignore_patterns("__pycache__"))
    return str(root)


OPENS = """
import json, sys
sys.path.insert(0, sys.argv[1])
import needle_mm
from needle_mm._kernels import api
assert needle_mm.__file__.startswith(sys.argv[1]), needle_mm.__file__
info = api.backend_info()
print(json.dumps({"backend": info["backend"], "reason": info["reason"],
                  "loaded": "needle_mm._kernels._aot" in sys.modules}))
"""


def _record(aot, root: str) -> str:
    """The build record of the extension in the copy at ``root``."""
    return aot_build.record_path(os.path.join(root, "needle_mm", "_kernels", os.path.basename(aot["info"]["extension"])))


def _edit_record(aot, root: str, change) -> None:
    path = _record(aot, root)
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    change(record)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f)


def test_the_copy_itself_uses_the_extension(aot, tmp_path):
    """The control for the cases below: an unedited copy does."""
    r = json_out(child(OPENS, _copy_package(aot, tmp_path), where="installed", cwd=str(tmp_path)))
    assert r["backend"] == "aot" and r["loaded"]


@pytest.mark.parametrize("case", ["edited kernel", "edited export table", "foreign CPU", "other build", "no record"])
def test_an_extension_that_does_not_belong_is_ignored(aot, tmp_path, case):
    root = _copy_package(aot, tmp_path)
    kernels = os.path.join(root, "needle_mm", "_kernels")
    if case == "edited kernel":
        with open(os.path.join(kernels, "heaps.py"), "a", encoding="utf-8") as f:
            f.write("\n# an edit after the build\n")
    elif case == "edited export table":
        with open(os.path.join(kernels, "aot_build.py"), "a", encoding="utf-8") as f:
            f.write("\n")
    elif case == "foreign CPU":
        _edit_record(aot, root, lambda r: r.update(cpu_flags=sorted((r.get("cpu_flags") or []) + ["avx9000"])))
    elif case == "other build":
        _edit_record(aot, root, lambda r: r.update(build="0" * 32))
    else:
        os.remove(_record(aot, root))
    r = json_out(child(OPENS, root, where="installed", cwd=str(tmp_path)))
    assert r["backend"] == "jit"
    expected = {"edited kernel": "stale", "edited export table": "stale", "foreign CPU": "avx9000",
                "other build": "another build", "no record": "not built"}[case]
    assert expected in r["reason"], r
    # a stale or foreign binary is never even loaded; one whose record is edited must be, to compare
    assert r["loaded"] == (case == "other build")


# ----------------------------------------------------------------- the router itself (no extension needed)

def test_checks_refuse_what_would_crash_the_extension():
    ro = api._check_of("f32:2")
    rw = api._check_of("f32:2w")
    a = np.zeros((3, 4), np.float32)
    frozen = a.copy()
    frozen.flags.writeable = False
    assert api._fits((a,), (ro,)) and api._fits((frozen,), (ro,)) and api._fits((a,), (rw,))
    assert not api._fits((frozen,), (rw,))  # the kernel writes: never into read-only memory
    assert not api._fits((a.tolist(),), (ro,))  # not an array at all (segfaults the extension)
    assert not api._fits((a[:, ::2],), (ro,)) and not api._fits((a.T,), (ro,))
    assert not api._fits((a.astype(np.float64),), (ro,)) and not api._fits((a.astype(">f4"),), (ro,))
    assert not api._fits((a[0],), (ro,)) and not api._fits((a[None],), (ro,))
    assert not api._fits((np.zeros(49, np.uint8)[1:].view(np.float32).reshape(3, 4),), (ro,))
    assert not api._fits((a, a), (ro,))
    patch = api._check_of("patch")
    good = (np.zeros(0, np.uint8), np.zeros(0, np.int32), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64))
    assert api._fits((good,), (patch,))
    assert not api._fits((list(good),), (patch,)) and not api._fits((good[:3],), (patch,))
    assert not api._fits(((good[0], good[1], good[2], good[3].astype(np.int32)),), (patch,))
    assert api._fits((1, True), (api._check_of("i64"), api._check_of("bool")))


def test_every_export_has_a_router_entry_and_checks():
    for name, (_, _, args) in aot_build.export_names().items():
        assert all(a in ("i64", "bool", "patch") or a.split(":")[0] in aot_build.DTYPES for a in args), name
        [api._check_of(a) for a in args]
    for entry in aot_build.EXPORTS:
        assert entry in api._BY_VECTORS or any(n == entry or n.startswith(entry + "__")
                                               for n in aot_build.export_names()), entry


def test_shares_cover_the_work_once():
    for n in (0, 1, 5, 64):
        for parts in (1, 2, 3, 8, 100):
            shares = api._shares(n, parts)
            assert [i for a, b in shares for i in range(a, b)] == list(range(n))
            assert 1 <= len(shares) <= max(1, min(parts, n))


def test_kernel_threads_work_after_fork():
    """The thread pool does not survive a fork: a child makes its own (else a
    batch search in a forked worker would wait forever)."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import os, sys
        from needle_mm._kernels import api
        assert api._on_threads(lambda i: i * i, 3) == [0, 1, 4]
        pid = os.fork()
        if pid == 0:
            os._exit(0 if api._on_threads(lambda i: i + 1, 3) == [1, 2, 3] else 1)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """)], capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0"]


def test_kernel_threads_run_shares_in_order_raise_their_errors_and_never_queue():
    """Every task runs once and its result lands in its place; a task's error
    is raised in the caller (after every task has finished); callers that find
    no idle kernel thread run their shares themselves; stop_threads ends the
    idle ones, and the next call starts new ones."""
    import threading

    assert api._on_threads(lambda i: (i, threading.current_thread().name), 2)[1][1] == "needle-kernels"
    assert api._on_threads(lambda i: i * 10, 5) == [0, 10, 20, 30, 40]

    ran = []

    def failing(i):
        ran.append(i)
        if i == 1:
            raise KeyError("share 1")
        return i

    with pytest.raises(KeyError, match="share 1"):
        api._on_threads(failing, 3)
    assert sorted(ran) == [0, 1, 2]

    # many callers at once, each with more shares than there are kernel threads: all answer, in order
    answers, barrier = {}, threading.Barrier(6)

    def caller(c):
        barrier.wait()
        for _ in range(20):
            answers.setdefault(c, []).append(api._on_threads(lambda i: (c, i), 3))

    threads = [threading.Thread(target=caller, args=(c,)) for c in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == {c: [[(c, 0), (c, 1), (c, 2)]] * 20 for c in range(6)}
    assert api._workers <= api.get_num_threads()

    api.stop_threads()
    assert not [t for t in threading.enumerate() if t.name == "needle-kernels"]
    assert api._on_threads(lambda i: -i, 2) == [0, -1]


def test_get_num_threads_without_numba():
    out = subprocess.run([sys.executable, "-c", "import sys; from needle_mm._kernels import api; "
                          "print(api.get_num_threads(), 'numba' in sys.modules)"], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHONPATH=ROOT, NUMBA_NUM_THREADS="3"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "False"]


def test_backend_is_reported():
    assert _kernels.backend() in ("aot", "jit")
    info = api.backend_info()
    assert info["backend"] == _kernels.backend() and info["reason"]
