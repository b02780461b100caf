"""Shards built and searched on a real local Ray runtime (needle_mm.distributed)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import orjson
import pytest

import needle_mm as needle
from needle_mm.ops.verify import verify_file

from conftest import run_python

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
ray_data = pytest.importorskip("ray.data")

from needle_mm.distributed import ShardedCollection, build_shards, read_manifest, shard_of  # noqa: E402

# Ray's own modules warn about their dependencies under pytest's "warnings are errors".
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
              pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

SHARDS = 4
K = 10


@pytest.fixture(scope="module")
def runtime():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             object_store_memory=300 * 1024 * 1024)
    ray_data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def records(demo_data):
    vectors = demo_data["vectors"]
    ids = [f"doc-{i}" for i in range(len(vectors))]
    metas = [{"source": s, "n": i} for i, s in enumerate(demo_data["sources"])]
    return ids, vectors, metas


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory, records):
    ids, vectors, metas = records
    where = tmp_path_factory.mktemp("parquet")
    table = pa.table({"id": ids,
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]),
                      "source": [m["source"] for m in metas], "n": [m["n"] for m in metas]})
    for part in range(3):  # three files, so blocks from several sources feed every shard
        lo, hi = part * len(ids) // 3, (part + 1) * len(ids) // 3
        pq.write_table(table.slice(lo, hi - lo), str(where / f"part-{part}.parquet"))
    return where


@pytest.fixture(scope="module")
def built(runtime, parquet_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    return build_shards(str(parquet_dir / "*.parquet"), str(out), shards=SHARDS, dim=384, id_column="id",
                        vector_column="embedding", distance="cosine", collection="docs")


@pytest.fixture(scope="module")
def sharded(built):
    docs = ShardedCollection.open(built, read_only=True)
    yield docs
    docs.close()


def brute_force_ids(vectors, ids, queries, k, keep=None):
    d = 1.0 - queries.astype(np.float64) @ vectors.astype(np.float64).T
    if keep is not None:
        d[:, ~keep] = np.inf
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return [[ids[j] for j in row if np.isfinite(d[r, j])] for r, row in enumerate(order)]


def test_every_shard_is_an_ordinary_file_holding_the_ids_routed_to_it(built, records):
    ids, _, _ = records
    manifest = read_manifest(built)
    assert len(manifest.shards) == SHARDS and sum(manifest.records) == len(ids)
    # the output holds the manifest and the shards, none of the build's side files
    assert sorted(os.listdir(os.path.dirname(manifest.shards[0]))) == sorted(
        [os.path.basename(built)] + [os.path.basename(p) for p in manifest.shards])
    for index, path in enumerate(manifest.shards):
        report = verify_file(path)
        assert report.ok, report.summary()
        with needle.Database.open(path, read_only=True) as db:
            held = list(db.collection("docs").ids())
        assert len(held) == manifest.records[index] > 0
        assert all(shard_of(i, SHARDS) == index for i in held)


def test_exact_search_equals_brute_force_over_all_records(sharded, records, demo_data):
    ids, vectors, metas = records
    queries = demo_data["queries"]
    want = brute_force_ids(vectors, ids, queries, K)
    got_ids, got_d = sharded.search_batch(queries, k=K, exact=True, as_arrays=True)
    assert [list(row) for row in got_ids] == want
    ref = 1.0 - queries @ vectors.T
    for r, row in enumerate(got_ids):
        np.testing.assert_allclose(got_d[r], [ref[r, ids.index(i)] for i in row], atol=1e-5)
    hits = sharded.search(queries[0], k=K, exact=True)
    assert [h.id for h in hits] == want[0]
    assert [h.metadata for h in hits] == [metas[ids.index(h.id)] for h in hits]


def test_a_large_batch_is_searched_one_shard_at_a_time_and_still_equals_brute_force(sharded, records):
    # 4 shards on ray.init(num_cpus=2): a batch of at least WAVE_MIN_QUERIES goes to one shard
    # at a time; the merged answer must be the same as all at once, record for record.
    from needle_mm.distributed.sharded import WAVE_MIN_QUERIES

    ids, vectors, _ = records
    assert sharded.searching_at_once == 1
    # ... each actor searching on all of the node's CPUs
    threads = ray.get([a.__ray_call__.remote(lambda self: os.environ.get("NUMBA_NUM_THREADS"))
                       for a in sharded._actors])
    assert threads == ["2"] * SHARDS
    queries = vectors[7::37][:WAVE_MIN_QUERIES + 6] * 0.9 + vectors[3::37][:WAVE_MIN_QUERIES + 6] * 0.1
    assert len(queries) >= WAVE_MIN_QUERIES
    want = brute_force_ids(vectors, ids, queries, K)
    got_ids, _ = sharded.search_batch(queries, k=K, exact=True, as_arrays=True)
    assert [list(row) for row in got_ids] == want
    got = sharded.search_batch(queries, k=K, exact=True)
    assert [[h.id for h in row] for row in got] == want
    small = sharded.search_batch(queries[:5], k=K, exact=True, as_arrays=True)[0]  # all at once
    assert [list(row) for row in small] == want[:5]


def test_exact_search_with_a_filter_equals_brute_force(sharded, records, demo_data):
    ids, vectors, metas = records
    queries = demo_data["queries"][:20]
    source = metas[0]["source"]
    flt = {"source": source, "n": {"$lt": 2000}}
    keep = np.array([m["source"] == source and m["n"] < 2000 for m in metas])
    want = brute_force_ids(vectors, ids, queries, K, keep)
    got = sharded.search_batch(queries, k=K, filter=flt, exact=True)
    assert [[h.id for h in row] for row in got] == want
    assert sharded.count(flt) == int(keep.sum())


def test_hnsw_recall_matches_one_file_at_the_same_ef(sharded, records, demo_data, tmp_path):
    ids, vectors, metas = records
    queries = demo_data["queries"]
    truth = brute_force_ids(vectors, ids, queries, K)
    single = tmp_path / "one.needle"
    with needle.Database.open(single) as db:
        db.create_collection("docs", 384).insert_many(ids, vectors, metas)
        db.save()
        one = db.collection("docs")
        for ef in (16, 64):
            one_ids, _ = one.search_batch(queries, k=K, ef=ef, as_arrays=True)
            shard_ids, _ = sharded.search_batch(queries, k=K, ef=ef, as_arrays=True)
            recall_one = np.mean([len(set(a) & set(t)) / K for a, t in zip(one_ids, truth)])
            recall_shards = np.mean([len(set(a) & set(t)) / K for a, t in zip(shard_ids, truth)])
            assert recall_shards >= recall_one - 0.01, (ef, recall_shards, recall_one)


def test_batch_and_single_agree_and_short_answers_pad(sharded, demo_data):
    queries = demo_data["queries"][:5]
    batch = sharded.search_batch(queries, k=K)
    for q, row in zip(queries, batch):
        assert [h.id for h in sharded.search(q, k=K)] == [h.id for h in row]
    ids, dist = sharded.search(queries[0], k=5, filter={"n": {"$in": [3, 4]}}, exact=True, as_arrays=True)
    assert sorted(ids[:2]) == ["doc-3", "doc-4"] and list(ids[2:]) == [None] * 3
    assert np.isinf(dist[2:]).all()
    assert sharded.search_batch(queries, k=0, as_arrays=True)[0].shape == (5, 0)


def test_count_get_and_reads(sharded, records):
    ids, vectors, metas = records
    assert sharded.count() == len(sharded) == len(ids)
    entry = sharded.get("doc-17")
    assert entry.metadata == metas[17] and np.array_equal(entry.vector, vectors[17])
    assert sharded.get("nope", None) is None
    with pytest.raises(needle.RecordNotFoundError, match="nope"):
        sharded.get("nope")
    got = sharded.get_many(["doc-1", "nope", "doc-2"])
    assert [e and e.id for e in got] == ["doc-1", None, "doc-2"]
    assert sorted(sharded.ids({"n": {"$lt": 3}})) == ["doc-0", "doc-1", "doc-2"]


def test_read_only_collection_refuses_writes(sharded, records):
    with pytest.raises(needle.ReadOnlyError):
        sharded.upsert("doc-1", records[1][1])


def test_bad_arguments_are_refused_before_any_shard_is_asked(sharded):
    with pytest.raises(needle.InvalidVectorError, match="dimension"):
        sharded.search(np.ones(3, np.float32))
    with pytest.raises(needle.FilterError):
        sharded.search(np.ones(384, np.float32), filter={"n": {"$bogus": 1}})
    with pytest.raises(needle.InvalidArgumentError, match="k must be"):
        sharded.search(np.ones(384, np.float32), k=-1)


def test_writes_are_routed_by_id_and_saved_per_shard(runtime, built, records, tmp_path):
    ids, vectors, metas = records
    copy = tmp_path / "copy"
    shutil.copytree(os.path.dirname(built), copy)
    manifest = str(copy / "manifest.json")
    with ShardedCollection.open(manifest) as docs:
        target = "doc-5"
        home = docs.shard_of(target)
        docs.upsert(target, vectors[6], {"n": -5})
        docs.insert("brand-new", vectors[7], {"n": -7})
        assert docs.delete(["doc-8", "not-there"]) == 1
        before = docs.count()
        with pytest.raises(needle.DuplicateIdError, match="doc-9"):
            docs.insert_many(["fresh-1", "doc-9"], vectors[:2])  # doc-9 is live: nothing is added
        assert docs.get("fresh-1", None) is None and docs.count() == before
        saved = docs.save()
        assert home in saved and set(saved) <= set(range(SHARDS))
        assert docs.save() == {}  # nothing touched since
    paths = read_manifest(manifest).shards
    with needle.Database.open(paths[home], read_only=True) as db:
        assert db.collection("docs").get(target).metadata == {"n": -5}
    for index, path in enumerate(paths):
        with needle.Database.open(path, read_only=True) as db:
            held = set(db.collection("docs").ids())
        assert ("brand-new" in held) == (shard_of("brand-new", SHARDS) == index)
        assert "doc-8" not in held
        assert all(shard_of(i, SHARDS) == index for i in held)
    with ShardedCollection.open(manifest, read_only=True) as again:
        assert again.count() == len(ids)  # +1 inserted, -1 deleted
        assert again.get("brand-new").metadata == {"n": -7}
        hit = again.search(vectors[6], k=2, exact=True)
        assert {h.id for h in hit} == {"doc-5", "doc-6"}
    with ShardedCollection.open(manifest) as docs:
        removed = docs.delete(filter={"n": {"$lt": 0}})
        assert removed == 2
        docs.save()
        assert docs.count() == len(ids) - 2


def test_a_missing_or_corrupt_shard_is_named(runtime, built, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(os.path.dirname(built), copy)
    manifest = str(copy / "manifest.json")
    victim = read_manifest(manifest).shards[2]
    saved = victim + ".saved"
    os.rename(victim, saved)
    with pytest.raises(needle.ShardError, match=r"shard 2 .*shard-00002\.needle.* missing"):
        ShardedCollection.open(manifest)
    shutil.copy(saved, victim)
    with open(victim, "r+b") as f:
        f.write(b"\x00" * 8192)
    with pytest.raises(needle.ShardError, match=r"shard 2 .*shard-00002\.needle.*cannot be opened"):
        ShardedCollection.open(manifest)
    other = tmp_path / "other.needle"
    with needle.Database.open(other) as db:
        db.create_collection("docs", 8).insert("x", np.ones(8, np.float32))
        db.save()
    shutil.copy(other, victim)
    with pytest.raises(needle.ShardError, match=r"shard 2 .*dimension 8"):
        ShardedCollection.open(manifest)


def test_malformed_manifests_are_named(tmp_path, built):
    bad = tmp_path / "m.json"
    with pytest.raises(needle.ShardError, match="does not exist"):
        read_manifest(bad)
    bad.write_text("{not json")
    with pytest.raises(needle.ShardError, match="not JSON"):
        read_manifest(bad)
    doc = orjson.loads(open(built, "rb").read())
    doc["routing"]["shards"] = 3
    bad.write_bytes(orjson.dumps(doc))
    with pytest.raises(needle.ShardError, match="routes over 3"):
        read_manifest(bad)
    doc["routing"] = {"rule": "python-hash", "shards": SHARDS}
    bad.write_bytes(orjson.dumps(doc))
    with pytest.raises(needle.ShardError, match="python-hash"):
        read_manifest(bad)


def test_build_from_npy_and_from_a_dataset(runtime, records, tmp_path):
    ids, vectors, metas = records
    first, second = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(first, vectors[:700])
    np.save(second, vectors[700:1000])
    manifest = build_shards([str(first), str(second)], str(tmp_path / "npy"), shards=3, dim=384)
    with ShardedCollection.open(manifest, read_only=True) as docs:
        assert docs.count() == 1000
        assert np.array_equal(docs.get("999").vector, vectors[999])
        assert docs.search(vectors[812], k=1, exact=True)[0].id == "812"
    items = [{"key": i, "vec": vectors[i], "tag": "even" if i % 2 == 0 else "odd"} for i in range(200)]
    manifest = build_shards(ray_data.from_items(items), str(tmp_path / "ds"), shards=2, dim=384,
                            id_column="key", vector_column="vec", distance="euclidean", m=8)
    with ShardedCollection.open(manifest, read_only=True) as docs:
        assert docs.count({"tag": "even"}) == 100
        assert docs.get("41").metadata == {"tag": "odd"}
    with needle.Database.open(read_manifest(manifest).shards[0], read_only=True) as db:
        assert db.collection("default").config.m == 8


def test_a_shard_no_row_routes_to_is_written_empty(runtime, records, tmp_path):
    _, vectors, _ = records
    manifest = build_shards(ray_data.from_items([{"id": "only", "vector": vectors[0]}]), str(tmp_path / "one"),
                            shards=3, dim=384)
    plan = read_manifest(manifest)
    assert sorted(plan.records) == [0, 0, 1]
    with ShardedCollection.open(manifest) as docs:
        assert docs.count() == 1
        empty = plan.records.index(0)
        new_id = next(f"n{i}" for i in range(1000) if shard_of(f"n{i}", 3) == empty)
        docs.insert(new_id, vectors[1])
        assert list(docs.save()) == [empty]
        assert docs.get(new_id).id == new_id


def test_bad_build_input_gets_a_clear_error_and_no_manifest(runtime, records, tmp_path, parquet_dir):
    _, vectors, _ = records
    out = tmp_path / "out"
    with pytest.raises(needle.InvalidArgumentError, match="no column 'vectors'"):
        build_shards(str(parquet_dir), str(out), shards=2, dim=384, vector_column="vectors")
    with pytest.raises(needle.InvalidVectorError, match="expects 128"):
        build_shards(str(parquet_dir), str(out), shards=2, dim=128, vector_column="embedding")
    items = [{"id": "a", "vector": vectors[0]}, {"id": "a", "vector": vectors[1]}]
    with pytest.raises(needle.DuplicateIdError, match="'a'"):
        build_shards(ray_data.from_items(items), str(out), shards=2, dim=384)
    assert not (out / "manifest.json").exists()
    with pytest.raises(needle.InvalidArgumentError, match="shards must be"):
        build_shards(str(parquet_dir), str(out), shards=0, dim=384)
    with pytest.raises(needle.InvalidConfigError):
        build_shards(str(parquet_dir), str(out), shards=2, dim=384, distance="hamming")
    with pytest.raises(needle.InvalidArgumentError, match="no parquet"):
        build_shards(str(tmp_path / "nothing-*.parquet"), str(out), shards=2, dim=384)
    good = build_shards(ray_data.from_items(items[:1]), str(out), shards=2, dim=384)
    with pytest.raises(needle.InvalidArgumentError, match="overwrite=True"):
        build_shards(ray_data.from_items(items[:1]), str(out), shards=2, dim=384)
    assert build_shards(ray_data.from_items(items[1:]), str(out), shards=2, dim=384, overwrite=True) == good


def test_without_ray_the_error_names_the_extra():
    proc = run_python("""
        import sys
        sys.modules["ray"] = None
        import needle_mm
        from needle_mm.distributed.runtime import ray_module
        try:
            ray_module()
        except needle_mm.MissingDependencyError as e:
            print("refused:", e)
    """)
    assert "refused:" in proc.stdout and "needle_mm[ray]" in proc.stdout, proc.stderr


def test_one_shard_is_the_whole_collection(runtime, records, tmp_path):
    _, vectors, _ = records
    items = [{"id": f"r{i}", "vector": vectors[i]} for i in range(50)]
    manifest = build_shards(ray_data.from_items(items), str(tmp_path / "single"), shards=1, dim=384)
    assert read_manifest(manifest).records == (50,)
    with ShardedCollection.open(manifest, read_only=True) as docs:
        assert docs.search(vectors[3], k=1, exact=True)[0].id == "r3"
