"""Small commits grow the graph and the id index in place (SPEC §5.2, §5.9).

What could go wrong: a reader following a patched row to the wrong place
(stale row, another chunk's row, a row of the wrong width), a commit that
rewrites what it should only append, a fold that loses a patch, an id that
lands in a chunk and can no longer be found, and hostile patch bytes read
out of bounds.
"""

from __future__ import annotations

import numpy as np
import pytest

import needle_mm as needle
from needle_mm._format.catalog import decode_catalog
from needle_mm._format.header import crc32
from needle_mm._index import hnsw
from needle_mm._kernels import hnsw as kernels
from needle_mm._kernels import scratch_width
from needle_mm.errors import CorruptFileError
from needle_mm.ops.verify import verify_file

DIM = 16


def _segment(db, name="c"):
    return db.engine.snapshot.collection(name).segments[0]


def _view(db, name="c"):
    return db.engine.snapshot.segments(name)[0]


def _grow(path, base=2000, commits=12, per_commit=7, seed=0, m=8):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((base + commits * per_commit, DIM)).astype(np.float32)
    with needle.Database.open(path) as db:
        c = db.create_collection("c", DIM, "cosine", m=m)
        c.insert_many([f"b{i}" for i in range(base)], vectors[:base], [{"i": i} for i in range(base)])
        db.save()
        for k in range(commits):
            lo = base + k * per_commit
            c.insert_many([f"n{i}" for i in range(lo, lo + per_commit)], vectors[lo:lo + per_commit],
                          [{"i": i} for i in range(lo, lo + per_commit)])
            db.save()
    return vectors


def test_small_commits_append_rows_and_write_patches(tmp_path):
    path = str(tmp_path / "g.needle")
    sizes = []
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((2100, DIM)).astype(np.float32)
    with needle.Database.open(path) as db:
        c = db.create_collection("c", DIM, "cosine", m=8)
        c.insert_many([f"b{i}" for i in range(2000)], vectors[:2000])
        db.save()
        c.insert("first", vectors[2000])
        db.save()  # the graph is written once more, with room to grow
        links0 = _segment(db).regions["hnsw_links0"]
        assert links0.reserved == _segment(db).capacity * 16 * 4 > links0.length
        for k in range(1, 10):
            c.insert(f"x{k}", vectors[2000 + k])
            before = __import__("os").path.getsize(path)
            db.save()
            sizes.append(__import__("os").path.getsize(path) - before)
            seg = _segment(db)
            # appended in place: the layer-0 region did not move
            assert seg.regions["hnsw_links0"].offset == links0.offset
            assert seg.regions["hnsw_links0"].length == seg.n * 16 * 4
            assert seg.graph_patches and seg.id_chunks
        # pieces stay logarithmic (binary counters)
        assert len(seg.graph_patches) <= 5 and len(seg.id_chunks) <= 5
    # a one-record commit writes kilobytes, not the 128 KB adjacency
    assert max(sizes) < 40_000, sizes
    assert verify_file(path).ok


def test_patched_search_equals_search_of_the_folded_graph(tmp_path):
    """The reader's patched rows are exactly the graph a fold would write."""
    path = str(tmp_path / "g.needle")
    vectors = _grow(path)
    with needle.Database.open(path, read_only=True) as db:
        view = _view(db)
        assert view.descriptor.graph_patches, "the test needs a patched graph"
        links0, upper = hnsw.effective_links(view)
        assert not np.array_equal(links0, view.hnsw_links0)  # patches do change rows
        vecs, norms = view.dense_arrays()
        h = view.descriptor.hnsw
        queries = vectors[::37]
        qn = np.linalg.norm(queries, axis=1).astype(np.float32)
        out = []
        for patch, l0, up in ((hnsw.patch_arguments(view), view.hnsw_links0, view.hnsw_upper_links),
                              (hnsw._EMPTY_PATCH, hnsw.readonly(links0), hnsw.readonly(upper))):
            n = view.n
            d = np.empty((len(queries), 10)), np.empty((len(queries), 10), dtype=np.int64)
            visited, tags = np.zeros((1, n), np.uint16), np.zeros(1, np.uint16)
            row = scratch_width(n, l0.shape[1])  # the walk's heaps and two-hop batch
            status = kernels.search_knn(vecs, norms, 0, l0, view.hnsw_levels, view.hnsw_upper_offsets, up, patch,
                                        h.entry_point, h.max_level, queries, qn, np.zeros(0, np.uint8), 10, 64,
                                        visited, tags, np.empty((1, row), np.float32), np.empty((1, row), np.int32),
                                        False, d[0], d[1])
            assert status == kernels.STATUS_OK
            out.append(d[1])
        np.testing.assert_array_equal(out[0], out[1])
        # a scratch row one short of what the walk keeps there is refused, never overrun
        short = row - 1
        status = kernels.search_knn(vecs, norms, 0, l0, view.hnsw_levels, view.hnsw_upper_offsets, up, patch,
                                    h.entry_point, h.max_level, queries, qn, np.zeros(0, np.uint8), 10, 64,
                                    visited, tags, np.empty((1, short), np.float32), np.empty((1, short), np.int32),
                                    False, d[0], d[1])
        assert status == kernels.STATUS_CORRUPT


def test_every_record_is_found_after_small_commits(tmp_path):
    path = str(tmp_path / "g.needle")
    vectors = _grow(path)
    with needle.Database.open(path, read_only=True) as db:
        c = db.collection("c")
        assert c.count() == len(vectors)
        for i in range(0, len(vectors), 11):
            rid = f"b{i}" if i < 2000 else f"n{i}"
            assert c.get(rid).metadata == {"i": i}
        new = vectors[2000:]
        hits = c.search_batch(new, k=1)
        assert sum(h[0].id == f"n{2000 + j}" for j, h in enumerate(hits)) >= 0.95 * len(new)
        exact = [r.id for r in c.search(vectors[5], 10, exact=True)]
        assert len({r.id for r in c.search(vectors[5], 10, ef=200)} & set(exact)) >= 9
    assert verify_file(path).ok


def test_upsert_and_delete_of_ids_held_in_id_chunks(tmp_path):
    path = str(tmp_path / "g.needle")
    _grow(path, commits=6)
    with needle.Database.open(path) as db:
        c = db.collection("c")
        assert _segment(db).id_chunks
        c.upsert("n2001", np.ones(DIM), {"replaced": True})
        c.delete(["n2010", "b5"])
        db.save()
    with needle.Database.open(path, read_only=True) as db:
        c = db.collection("c")
        assert c.get("n2001").metadata == {"replaced": True}
        assert c.get("n2010", None) is None and c.get("b5", None) is None
        assert c.count() == 2000 + 6 * 7 - 2
    assert verify_file(path).ok


def test_a_fold_keeps_the_graph_and_drops_the_patches(tmp_path):
    """Enough small commits replace an eighth of the rows: the next one
    writes the graph whole, patches applied, and search answers stay."""
    path = str(tmp_path / "g.needle")
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((700, DIM)).astype(np.float32)
    folded = False
    with needle.Database.open(path) as db:
        c = db.create_collection("c", DIM, "euclidean", m=4)
        c.insert_many([str(i) for i in range(500)], vectors[:500])
        db.save()
        had_patches = False
        for k in range(40):
            c.insert_many([str(i) for i in range(500 + 5 * k, 505 + 5 * k)], vectors[500 + 5 * k:505 + 5 * k])
            db.save()
            patches = _segment(db).graph_patches
            had_patches |= bool(patches)
            folded |= had_patches and not patches
        assert folded
        # as a one-shot build of these 700 with M=4 does (it misses 6), nearly every record finds itself
        found = sum(c.search(vectors[i], 1, ef=100)[0].id == str(i) for i in range(700))
        assert found >= 690
    assert verify_file(path).ok


def _patch_word(path, word_index, value):
    """Word ``word_index`` of the newest graph patch set to ``value``, its CRC
    fixed (as a hostile writer would leave it), via the fuzzer's file surgery."""
    import importlib.util
    import os

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("fuzz_files", os.path.join(ROOT, "tools", "fuzz_files.py"))
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    sb, catalog = fuzz.current(bytes(data))
    ref = catalog["collections"][0]["segments"][0]["graph_patches"][-1]
    data[ref[0] + 4 * word_index:ref[0] + 4 * word_index + 4] = int(value).to_bytes(4, "little", signed=True)
    ref[2] = crc32(bytes(data[ref[0]:ref[0] + ref[1]]))
    with open(path, "wb") as f:
        f.write(fuzz.with_catalog(bytes(data), sb, catalog))


@pytest.mark.parametrize("where,value", [("first key", 10**6), ("last key", 10**6), ("first key", -5),
                                         ("first link", 10**6), ("first link", -7)])
def test_hostile_patch_bytes_are_refused(tmp_path, where, value):
    """A patch key or link out of range: CorruptFileError for readers and
    writers, never a read out of bounds."""
    path = str(tmp_path / "g.needle")
    vectors = _grow(path, commits=3)
    with needle.Database.open(path, read_only=True) as db:
        count0 = _view(db).graph_patches()[-1].keys0.shape[0]
    word = {"first key": 4, "last key": 4 + count0 - 1, "first link": ((16 + 4 * count0 + 7) & ~7) // 4}[where]
    _patch_word(path, word, value)
    with needle.Database.open(path, read_only=True) as db:
        with pytest.raises(CorruptFileError, match="graph patch"):
            db.collection("c").search(vectors[0], 5)
    with needle.Database.open(path) as db:
        db.collection("c").insert("more", vectors[1])
        with pytest.raises(CorruptFileError, match="graph patch"):
            db.save()
        db.engine.close(warn=False)
    assert not verify_file(path).ok


def test_graph_patches_need_catalog_format_4(tmp_path):
    path = str(tmp_path / "g.needle")
    _grow(path, commits=2)
    with needle.Database.open(path, read_only=True) as db:
        sb = db.engine.snapshot.superblock
    with open(path, "rb") as f:
        f.seek(sb.catalog_offset)
        raw = f.read(sb.catalog_length)
    assert raw.startswith(b'{"format":4,')
    bad = raw.replace(b'{"format":4,', b'{"format":3,', 1)
    with pytest.raises(CorruptFileError, match="cannot hold"):
        decode_catalog(bad, crc32(bad), sb.generation, sb.file_length, path)
