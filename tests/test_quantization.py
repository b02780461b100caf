"""Quantized collections (SPEC §5.10; binary codes' own tests: test_binary_codes.py): codes beside the vectors, the graph
walked on the codes, the best candidates rescored exactly.

What could go wrong: codes that drift from the vectors (a commit encoding
with other parameters than the segment's, a relocation that keeps stale
codes), a walk whose code distances rank badly (recall), rescoring that
returns approximate distances or loses the order, a reader in another
process that answers differently, hostile parameter or code bytes read as
if they were right, and a crash mid-commit leaving codes behind.
"""

from __future__ import annotations

import json
import os
import zlib

import numpy as np
import pytest

import needle_mm as needle
from needle_mm._index.quantize import encode_int8, train_int8
from needle_mm.errors import CorruptFileError, InvalidArgumentError, InvalidConfigError
from needle_mm.ops.rebuild import rebuild
from needle_mm.ops.verify import verify_file

from conftest import brute_force, run_python, tool_module
from test_hnsw import real_set, recall


@pytest.fixture(scope="module")
def quantized_sets(tmp_path_factory):
    out = {}
    for name in ("minilm-384-cosine-10k", "siftsmall-128-euclidean"):
        x, q, gt, metric = real_set(name)
        path = str(tmp_path_factory.mktemp("quant") / f"{name}.needle")
        with needle.Database.open(path) as db:
            db.create_collection("c", x.shape[1], metric, quantization="int8").insert_many(
                [str(i) for i in range(len(x))], x)
        out[name] = (path, x, q, gt, metric)
    return out


@pytest.mark.parametrize("name", ["minilm-384-cosine-10k", "siftsmall-128-euclidean"])
def test_recall_at_default_ef_with_int8(quantized_sets, name):
    path, x, q, gt, _ = quantized_sets[name]
    with needle.Database.open(path, read_only=True) as db:
        c = db.collection("c")
        assert c.config.quantization == "int8"
        assert recall(c, q, gt) >= 0.95


@pytest.mark.parametrize("name", ["minilm-384-cosine-10k", "siftsmall-128-euclidean"])
def test_rescored_distances_are_exact_and_rescore_0_is_code_order(quantized_sets, name):
    path, x, q, gt, metric = quantized_sets[name]
    with needle.Database.open(path, read_only=True) as db:
        c = db.collection("c")
        view = db.engine.snapshot.segments("c")[0]
        codes, params = np.asarray(view.quant_codes, np.float32), view.quant_params
        for query in q[:20]:
            hits = c.search(query, k=10)
            ids = [int(h.id) for h in hits]
            _, exact = brute_force(x[ids], query, len(ids), metric)  # exact distances of exactly these rows
            np.testing.assert_allclose(sorted(h.distance for h in hits), np.sort(exact), rtol=1e-4, atol=1e-5)
            assert [h.distance for h in hits] == sorted(h.distance for h in hits)
            raw = c.search(query, k=10, rescore=0)
            # code distances, recomputed here from the codes (float64): the order and values returned
            approx_dot = codes[[int(h.id) for h in raw]] @ (query * params[1]).astype(np.float64) + query @ params[0]
            qn, xn = np.linalg.norm(query), np.linalg.norm(x[[int(h.id) for h in raw]], axis=1)
            if metric == "cosine":
                want = 1 - approx_dot / (qn * xn)
            else:
                want = np.sqrt(np.maximum(qn * qn + xn * xn - 2 * approx_dot, 0))
            np.testing.assert_allclose([h.distance for h in raw], want, rtol=1e-3, atol=2e-3)
            assert [h.distance for h in raw] == sorted(h.distance for h in raw)


def test_batch_filter_and_deletes_work_as_unquantized(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 24)).astype(np.float32)
    path = str(tmp_path / "q.needle")
    with needle.Database.open(path) as db:
        c = db.create_collection("c", 24, "euclidean", quantization="int8", m=8)
        c.insert_many([str(i) for i in range(3000)], x, [{"g": i % 10} for i in range(3000)])
        db.save()
        c.delete([str(i) for i in range(0, 3000, 3)])
        db.save()
        queries = rng.normal(size=(12, 24)).astype(np.float32)
        batch = c.search_batch(queries, k=10, filter={"g": {"$lt": 5}}, ef=200)
        for query, row in zip(queries, batch):
            single = c.search(query, k=10, filter={"g": {"$lt": 5}}, ef=200)
            assert [h.id for h in single] == [h.id for h in row]
            assert all(int(h.id) % 3 and int(h.id) % 10 < 5 for h in row)
            allowed = np.array([i for i in range(3000) if i % 3 and i % 10 < 5])
            top, _ = brute_force(x[allowed], query, 10, "euclidean")
            assert len({int(h.id) for h in row} & set(allowed[top].tolist())) >= 9
        for bad in (-1, 1.5, True, "3"):
            with pytest.raises(InvalidArgumentError, match="rescore"):
                c.search(queries[0], k=3, rescore=bad)


def test_codes_follow_commits_and_relocations(tmp_path):
    """Appended records are encoded with the segment's parameters; a commit
    that rewrites the codes whole (relocation) retrains; verify recomputes
    every code from the stored vectors."""
    rng = np.random.default_rng(5)
    path = str(tmp_path / "grow.needle")
    with needle.Database.open(path) as db:
        c = db.create_collection("c", 16, quantization="int8", m=8, dtype="f16")
        c.insert_many([f"a{i}" for i in range(2000)], rng.normal(size=(2000, 16)))
        db.save()
        c.insert_many([f"b{i}" for i in range(1000)], rng.normal(size=(1000, 16)) * 3)  # relocates: retrained
        db.save()
        view = db.engine.snapshot.segments("c")[0]
        params = view.quant_params.copy()
        np.testing.assert_array_equal(params, train_int8(view.kernel_vectors))
        for k in range(4):  # small commits: appended in place, same parameters
            c.insert_many([f"c{k}-{i}" for i in range(5)], rng.normal(size=(5, 16)) * 10)  # outside the range: clipped
            db.save()
        view = db.engine.snapshot.segments("c")[0]
        assert view.n == 3020 and len(db.engine.snapshot.segments("c")) == 1
        np.testing.assert_array_equal(view.quant_params, params)
        np.testing.assert_array_equal(view.quant_codes, encode_int8(view.kernel_vectors, params))
        assert int(np.abs(view.quant_codes[-20:]).max()) == 127
        assert c.get("c3-4").vector.dtype == np.float32  # get returns the stored vector
        np.testing.assert_array_equal(c.get("a7").vector, view.vectors[7].astype(np.float32))
    assert verify_file(path).ok


@pytest.mark.parametrize("quantization", ["int8", "binary"])
def test_answers_identical_in_another_process(tmp_path, quantization):
    rng = np.random.default_rng(8)
    path = str(tmp_path / "p.needle")
    q = rng.normal(size=(6, 32)).astype(np.float32)
    with needle.Database.open(path) as db:
        c = db.create_collection("c", 32, "dot", quantization=quantization, m=8)
        c.insert_many([str(i) for i in range(2500)], rng.normal(size=(2500, 32)))
        db.save()
        here = [[(h.id, h.distance) for h in c.search(v, k=8, rescore=r)] for v in q for r in (0, 3)]
    np.save(tmp_path / "q.npy", q)
    out = run_python("""
        import json, sys
        import numpy as np
        import needle_mm as needle
        q = np.load(sys.argv[2])
        with needle.Database.open(sys.argv[1], read_only=True) as db:
            c = db.collection("c")
            print(json.dumps([[(h.id, h.distance) for h in c.search(v, k=8, rescore=r)] for v in q for r in (0, 3)]))
        """, path, str(tmp_path / "q.npy"))
    assert out.returncode == 0, out.stderr
    there = [[tuple(h) for h in row] for row in json.loads(out.stdout)]
    assert there == here


def test_config_and_conversion(tmp_path, capsys):
    with pytest.raises(InvalidConfigError, match="quantization"):
        needle.CollectionConfig(8, quantization="int4")
    with pytest.raises(InvalidConfigError, match="sparse"):
        needle.CollectionConfig(8, "dot", sparse=True, quantization="int8")
    path = str(tmp_path / "conv.needle")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1500, 12)).astype(np.float32)
    with needle.Database.open(path) as db:
        c = db.create_collection("c", 12)
        c.insert_many([str(i) for i in range(1500)], x)
        with pytest.raises(needle.errors.CollectionExistsError, match="quantization"):
            db.get_or_create_collection("c", 12, quantization="int8")
        assert db.get_or_create_collection("c", 12, quantization="none").config.quantization is None
    rebuild(path, quantization="int8")
    with needle.Database.open(path, read_only=True) as db:
        c = db.collection("c")
        assert c.config.quantization == "int8" and c.count() == 1500
        np.testing.assert_array_equal(c.get("7").vector, x[7])
        assert db.get_or_create_collection("c", 12, quantization="int8") is not None
    from needle_mm.cli import main
    assert main(["info", path]) == 0
    assert "quantization int8" in capsys.readouterr().out
    assert main(["rebuild", path, "--quantization", "none", "--no-progress"]) == 0
    with needle.Database.open(path, read_only=True) as db:
        assert db.collection("c").config.quantization is None
        assert "quant_codes" not in db.engine.snapshot.segments("c")[0].descriptor.regions
    with pytest.raises(InvalidArgumentError, match="quantization"):
        rebuild(path, quantization="pq")


def _make(tmp_path) -> str:
    rng = np.random.default_rng(2)
    path = str(tmp_path / "hostile.needle")
    with needle.Database.open(path) as db:
        db.create_collection("c", 16, quantization="int8", m=8).insert_many(
            [str(i) for i in range(1200)], rng.normal(size=(1200, 16)))
    return path


def _tamper(path: str, region: str, at: int, data: bytes) -> None:
    """Bytes ``at ..`` of ``region`` of the collection's segment replaced, its CRC
    fixed (as a hostile writer would leave it), via the fuzzer's file surgery."""
    fuzz = tool_module("fuzz_files")
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    sb, catalog = fuzz.current(bytes(raw))
    ref = catalog["collections"][0]["segments"][0]["regions"][region]
    raw[ref[0] + at:ref[0] + at + len(data)] = data
    ref[2] = zlib.crc32(bytes(raw[ref[0]:ref[0] + ref[1]])) & 0xFFFFFFFF
    with open(path, "wb") as f:
        f.write(fuzz.with_catalog(bytes(raw), sb, catalog))


@pytest.mark.parametrize("value", [np.nan, np.inf, 0.0, -1.0])
def test_hostile_parameters_are_refused_at_search_and_by_verify(tmp_path, value):
    path = _make(tmp_path)
    _tamper(path, "quant_params", 4 * 16 + 4 * 5, np.float32(value).tobytes())  # a scale
    with needle.Database.open(path, read_only=True) as db:
        with pytest.raises(CorruptFileError, match="quant_params"):
            db.collection("c").search(np.ones(16), k=3)
    report = verify_file(path)
    assert not report.ok and any("quant_params" in p for p in report.problems)


@pytest.mark.parametrize("value", [-128, 127, 0])
def test_hostile_codes_are_found_by_verify_and_never_crash_a_search(tmp_path, value):
    path = _make(tmp_path)
    _tamper(path, "quant_codes", 16 * 100, np.full(16, value, np.int8).tobytes())
    report = verify_file(path)
    assert not report.ok and any("int8 codes of 1 slots (first: 100)" in p for p in report.problems), report.problems
    with needle.Database.open(path, read_only=True) as db:  # every code value is in range: answers, ranked exactly
        hits = db.collection("c").search(np.ones(16), k=5)
        assert len(hits) == 5


def test_quantized_collections_need_catalog_format_5(tmp_path):
    path = _make(tmp_path)
    with open(path, "rb") as f:
        raw = f.read()
    fuzz = tool_module("fuzz_files")
    sb, catalog = fuzz.current(raw)
    assert catalog["format"] == 5 and catalog["collections"][0]["quantization"] == "int8"
    catalog["format"] = 4
    with open(path, "wb") as f:
        f.write(fuzz.with_catalog(raw, sb, catalog))
    with pytest.raises(CorruptFileError, match="quantized codes 5"):
        needle.Database.open(path, read_only=True)


@pytest.mark.parametrize("quantization", ["int8", "binary"])
def test_crash_while_extending_a_quantized_segment_loses_nothing(tmp_path, quantization):
    """A writer killed at each failpoint of a commit that appends to a quantized
    segment leaves the previous generation, whose codes still verify."""
    rng = np.random.default_rng(4)
    path = str(tmp_path / "crash.needle")
    with needle.Database.open(path) as db:
        c = db.create_collection("c", 8, quantization=quantization, m=8)
        c.insert_many([str(i) for i in range(1000)], rng.normal(size=(1000, 8)))
        db.save()
        c.insert_many([f"x{i}" for i in range(1000)], rng.normal(size=(1000, 8)))
        db.save()
    points = ["commit.after_data_write", "commit.after_data_sync", "commit.after_superblock_write"]
    for point in points:
        out = run_python("""
            import sys
            import numpy as np
            import needle_mm as needle
            with needle.Database.open(sys.argv[1]) as db:
                c = db.collection("c")
                c.insert_many([f"y{i}" for i in range(7)], np.random.default_rng(9).normal(size=(7, 8)))
                db.save()
            """, path, env={"NEEDLE_FAILPOINTS": f"{point}=kill"})
        assert out.returncode != 0, point
        report = verify_file(path)
        assert report.ok, (point, report.problems)
        with needle.Database.open(path, read_only=True) as db:
            n = db.collection("c").count()
            assert n in (2000, 2007), (point, n)  # the commit whole or not at all (same 7 ids each time)


from test_aot import aot, child, json_out, same_sources  # noqa: E402,F401  (fixtures: the extension, if built)

CODES_ANSWERS = """
import json, sys
import numpy as np
import needle_mm as needle
from needle_mm._kernels import api
q = np.random.default_rng(6).normal(size=(9, 24)).astype(np.float32)
out = {}
with needle.Database.open(sys.argv[1], read_only=True) as db:
    for name in db.list_collections():
        c = db.collection(name)
        out[name] = [[(h.id, h.distance) for h in c.search(v, k=7, rescore=r)] for v in q[:3] for r in (0, 2)]
        ids, d = c.search_batch(q, k=7, as_arrays=True)
        out[name + " batch"] = [ids.tolist(), d.astype(float).tolist()]
        out[name + " filtered"] = [[h.id for h in c.search(v, k=7, filter={"g": 1})] for v in q[:3]]
    two_step = any(v.caches.get("rows_may_fault") for name in db.list_collections()
                   for v in db.engine.snapshot.segments(name))
info = api.backend_info()
print(json.dumps({"answers": out, "backend": info["backend"], "fallbacks": info["fallbacks"],
                  "numba": "numba" in sys.modules, "two_step": two_step}))
"""


def test_the_extension_and_the_jit_search_codes_alike(aot, same_sources, tmp_path):
    path = str(tmp_path / "codes.needle")
    rng = np.random.default_rng(10)
    with needle.Database.open(path) as db:
        for quantization in ("int8", "binary"):
            for dtype in ("f32", "f16"):
                for distance in ("cosine", "euclidean", "dot"):
                    c = db.create_collection(f"{quantization}-{dtype}-{distance}", 24, distance,
                                             quantization=quantization, m=8, dtype=dtype)
                    c.insert_many([str(i) for i in range(1500)], rng.normal(size=(1500, 24)),
                                  [{"g": i % 3} for i in range(1500)])
    a = json_out(child(CODES_ANSWERS, path, where=aot["where"]))
    j = json_out(child(CODES_ANSWERS, path, where="tree", env={"NEEDLE_MM_JIT": "1"}, timeout=900))
    assert (a["backend"], j["backend"]) == ("aot", "jit")
    assert a["fallbacks"] == {} and a["numba"] is False
    assert a["answers"] == j["answers"]


def test_rescoring_in_two_steps_gives_the_same_answers(tmp_path):
    """Where rows to rescore are likely on disk, the search finds every
    candidate first, asks for their rows together, then ranks them: the
    answers are those of the one-call search, bit for bit (forced both ways)."""
    path = str(tmp_path / "two.needle")
    rng = np.random.default_rng(12)
    with needle.Database.open(path) as db:
        for quantization in ("int8", "binary"):
            for distance in ("cosine", "euclidean", "dot"):
                c = db.create_collection(f"{quantization}-{distance}", 24, distance, quantization=quantization, m=8,
                                         dtype="f16")
                c.insert_many([str(i) for i in range(1500)], rng.normal(size=(1500, 24)),
                              [{"g": i % 3} for i in range(1500)])
    one = run_python(CODES_ANSWERS, path, env={"NEEDLE_MM_PREFETCH_ROWS": "0"})
    two = run_python(CODES_ANSWERS, path, env={"NEEDLE_MM_PREFETCH_ROWS": "1"})
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    one, two = json.loads(one.stdout), json.loads(two.stdout)
    assert (one["two_step"], two["two_step"]) == (False, True)
    assert one["answers"] == two["answers"]
