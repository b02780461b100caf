"""`needle verify` finds damage, and passes sound files (each bad case has a good twin)."""

from __future__ import annotations

import numpy as np
import pytest

import needle_mm as needle
from conftest import run_python
from needle_mm.ops.verify import verify_file


@pytest.fixture
def sound(db_path):
    with needle.Database.open(db_path) as db:
        c = db.create_collection("c", 8)
        c.insert_many([f"r{i}" for i in range(200)], np.random.default_rng(0).normal(size=(200, 8)),
                      [{"i": i} for i in range(200)])
        db.save()
        c.delete(["r1", "r2"])
    return db_path


def region(db_path, name):
    with needle.Database.open(db_path, read_only=True) as db:
        seg = db.engine.snapshot.collection("c").segments[0]
        return seg.regions[name]


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))


def test_sound_file_verifies(sound):
    report = verify_file(sound)
    assert report.ok, report.summary()
    assert report.records == 198 and report.segments == 1 and report.collections == 1


@pytest.mark.parametrize("name", ["vectors", "id_blob", "meta_blob", "id_hashes", "tombstones"])
def test_flipped_region_byte_is_reported(sound, name):
    ref = region(sound, name)
    flip(sound, ref.offset + ref.length // 2)
    report = verify_file(sound)
    assert not report.ok
    assert any(f"region {name} fails its CRC" in p for p in report.problems), report.problems


def test_cli_verify_exit_codes(sound):
    ok = run_python("import sys; from needle_mm.cli import main; sys.exit(main(['verify', sys.argv[1]]))", sound)
    assert ok.returncode == 0 and ": OK" in ok.stdout
    ref = region(sound, "meta_blob")
    flip(sound, ref.offset + 3)
    bad = run_python("import sys; from needle_mm.cli import main; sys.exit(main(['verify', sys.argv[1]]))", sound)
    assert bad.returncode == 1 and "meta_blob fails its CRC" in bad.stdout


def test_corrupt_catalog_is_a_clear_error(sound):
    with needle.Database.open(sound, read_only=True) as db:
        sb = db.engine.snapshot.superblock
    flip(sound, sb.catalog_offset + 10)
    with pytest.raises(needle.CorruptFileError, match="catalog CRC"):
        needle.Database.open(sound, read_only=True)
    assert "catalog CRC" in verify_file(sound).summary()
