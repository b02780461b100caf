"""The bytes: golden files still read as dumped; the layout table matches the code."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

import needle_mm as needle
from conftest import ROOT

FORMAT = os.path.join(ROOT, "format")
GOLDEN = sorted(f[:-7] for f in os.listdir(os.path.join(FORMAT, "golden")) if f.endswith(".needle"))


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_golden_files_exist():
    assert {"empty", "basic", "deletes", "columns", "sparse", "half", "patched", "quantized", "binary", "text"} <= set(GOLDEN)


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_file_reads_as_dumped(name, tmp_path):
    src = os.path.join(FORMAT, "golden", f"{name}.needle")
    want = load_json(os.path.join(FORMAT, "golden", f"{name}.json"))
    path = tmp_path / f"{name}.needle"
    shutil.copy(src, path)  # writes below must not touch the committed golden file
    with needle.Database.open(path, read_only=True) as db:
        assert db.generation == want["generation"]
        assert db.list_collections() == sorted(want["collections"])
        for cname, cwant in want["collections"].items():
            c = db.collection(cname)
            assert c.count() == cwant["count"] == len(cwant["records"])
            segs = [{"n": s.n, "n_deleted": s.n_deleted, "capacity": s.capacity,
                     "hnsw": s.hnsw.to_json() if s.hnsw else None} for s in db.engine.snapshot.collection(cname).segments]
            assert segs == cwant["segments"]
            assert c.dimension == cwant["dim"] and c.distance.value == cwant["distance"]
            assert c.config.dtype == cwant.get("dtype", "f32")  # f16 vectors: SPEC §5.8
            assert c.config.quantization == cwant.get("quantization")  # int8 codes: SPEC §5.10
            for id, rec in cwant["records"].items():
                e = c.get(id)
                assert e.metadata == rec["metadata"]
                if c.sparse:  # SPEC §5.7
                    assert e.vector.to_dict() == rec["vector"]
                    assert c.search(e.vector, 1)[0].distance <= 1 - e.vector.dot(e.vector) + 1e-6
                    continue
                np.testing.assert_array_equal(e.vector, np.array(rec["vector"], dtype=np.float32))
                assert c.search(e.vector, 1)[0].distance <= c.search(e.vector, 2)[-1].distance
            for flt, ids in cwant.get("filters", []):  # files with metadata columns (SPEC §5.6)
                assert sorted(i for i, _ in c.find(flt)) == ids, flt
            if "text" in cwant:  # a full-text index (SPEC §5.11): the same settings, the same answers
                assert db.engine.snapshot.collection(cname).text.to_json() == cwant["text"]
                for q, hits in cwant["text_search"]:
                    got = [[h.id, -h.distance] for h in c.search(text=q, k=5)]
                    assert [i for i, _ in got] == [i for i, _ in hits], q
                    np.testing.assert_allclose([s for _, s in got], [s for _, s in hits], rtol=1e-9, atol=1e-9)
    from needle_mm.ops.verify import verify_file

    assert verify_file(str(path)).ok
    # and a current writer can extend it
    with needle.Database.open(path) as db:
        for cname in db.list_collections():
            c = db.collection(cname)
            c.upsert("added", {0: 1.0} if c.sparse else np.ones(c.dimension))
    with needle.Database.open(path, read_only=True) as db:
        for cname, cwant in want["collections"].items():
            assert db.collection(cname).count() == cwant["count"] + ("added" not in cwant["records"])


def test_layout_table_matches_code():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_golden", os.path.join(ROOT, "tools", "make_golden.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.layout() == load_json(os.path.join(FORMAT, "layout.json"))


def test_spec_tables_match_layout():
    """Every header/superblock field and segment region in layout.json appears in SPEC.md's tables."""
    with open(os.path.join(ROOT, "SPEC.md"), encoding="utf-8") as f:
        spec = f.read()
    layout = load_json(os.path.join(FORMAT, "layout.json"))
    for table in ("header", "superblock"):
        for row in layout[table]:
            assert re.search(rf"\| {row['offset']} \| {row['size']} \| `{row['field']}` \|", spec), row
    for group in ("segment_regions", "optional_segment_regions", "hnsw_regions", "sparse_regions"):
        for name in layout[group]:
            assert f"| `{name}`" in spec, name
    for quantization, regions in layout["quant_regions"].items():
        for name in regions:
            assert f"| `{name}`" in spec, (quantization, name)
    for fp in layout["commit_failpoints"]:
        assert f"`{fp}`" in spec, fp


def test_catalog_format_says_what_a_reader_must_understand(tmp_path):
    """f16 vectors need catalog format 3 (SPEC §4): a catalog that holds them
    under a lower format is corrupt, and a format above 6 is refused as newer."""
    from needle_mm._format.catalog import decode_catalog
    from needle_mm._format.header import crc32
    from needle_mm.errors import CorruptFileError, UnsupportedVersionError

    path = tmp_path / "half.needle"
    shutil.copy(os.path.join(FORMAT, "golden", "half.needle"), path)
    with needle.Database.open(path, read_only=True) as db:
        sb = db.engine.snapshot.superblock
    with open(path, "rb") as f:
        f.seek(sb.catalog_offset)
        raw = f.read(sb.catalog_length)
    assert raw.startswith(b'{"format":3,')
    decode_catalog(raw, crc32(raw), sb.generation, sb.file_length, str(path))
    for fmt, error, message in ((b"2", CorruptFileError, "cannot hold"), (b"1", CorruptFileError, "cannot hold"),
                                (b"7", UnsupportedVersionError, "newer needle_mm")):
        bad = raw.replace(b'{"format":3,', b'{"format":' + fmt + b",", 1)
        with pytest.raises(error, match=message):
            decode_catalog(bad, crc32(bad), sb.generation, sb.file_length, str(path))
