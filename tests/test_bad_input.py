"""Bad input raises a NeedleError subclass naming the problem and changes nothing."""

from __future__ import annotations

import datetime
import decimal
import os
import uuid

import numpy as np
import pytest

import needle_mm as needle
from needle_mm._format.header import READ_VERSION, WRITE_VERSION, crc32


def _deep(levels: int, op: str = "$and") -> dict:
    if op == "$not":  # {"x": {"$not": {"$not": ... {"$eq": 1}}}}
        ops = {"$eq": 1}
        for _ in range(levels):
            ops = {"$not": ops}
        return {"x": ops}
    f = {"x": 1}
    for _ in range(levels):
        f = {op: [f]}
    return f


def _nested_list(levels: int) -> list:
    v = [1]
    for _ in range(levels):
        v = [v]
    return v


def fingerprint(db):
    out = {}
    for name in db.list_collections():
        c = db.collection(name)
        out[name] = sorted((i, repr(m), tuple(c.get(i).vector.tolist())) for i, m in c.find())
    return out


@pytest.fixture
def populated(db_path):
    db = needle.Database.open(db_path)
    coll = db.create_collection("c", 3)
    coll.insert_many(["a", "b"], [[1, 0, 0], [0, 1, 0]], [{"x": 1}, {"y": [1, 2]}])
    db.save()
    coll.insert("pending", [0, 0, 1], {"p": True})
    return db, coll


BAD_WRITES = [
    ("wrong dimension", lambda c: c.insert("n", [1, 2]), needle.InvalidVectorError, "dimension 2"),
    ("2-D vector", lambda c: c.insert("n", [[1, 2, 3]]), needle.InvalidVectorError, "1-D"),
    ("NaN", lambda c: c.insert("n", [1, float("nan"), 0]), needle.InvalidVectorError, "NaN"),
    ("inf", lambda c: c.upsert("a", [1, np.inf, 0]), needle.InvalidVectorError, "infinity"),
    ("float32 overflow", lambda c: c.insert("n", np.array([1e39, 0, 0])), needle.InvalidVectorError, "NaN or infinity"),
    ("string vector", lambda c: c.insert("n", ["a", "b", "c"]), needle.InvalidVectorError, "real numbers"),
    ("complex vector", lambda c: c.insert("n", np.ones(3, dtype=complex)), needle.InvalidVectorError, "real numbers"),
    ("zero vector under cosine", lambda c: c.insert("n", [0, 0, 0]), needle.InvalidVectorError, "all zeros"),
    ("int id", lambda c: c.insert(5, [1, 0, 0]), needle.InvalidIdError, "must be str"),
    ("empty id", lambda c: c.insert("", [1, 0, 0]), needle.InvalidIdError, "non-empty"),
    ("surrogate id", lambda c: c.insert("\ud800", [1, 0, 0]), needle.InvalidIdError, "surrogate"),
    ("duplicate id", lambda c: c.insert("a", [1, 0, 0]), needle.DuplicateIdError, "'a' already exists"),
    ("duplicate pending id", lambda c: c.insert("pending", [1, 0, 0]), needle.DuplicateIdError, "'pending'"),
    ("duplicate in batch", lambda c: c.insert_many(["n", "n"], np.eye(3)[:2]), needle.DuplicateIdError, "more than once"),
    ("one bad row in a batch", lambda c: c.insert_many(["n1", "n2"], [[1, 0, 0], [np.nan, 0, 0]]),
     needle.InvalidVectorError, "row 1"),
    ("batch with existing id", lambda c: c.insert_many(["n1", "b"], np.eye(3)[:2]), needle.DuplicateIdError, "'b'"),
    ("ids/vectors mismatch", lambda c: c.insert_many(["n1"], np.eye(3)[:2]), needle.InvalidVectorError, "1 ids but 2"),
    ("list metadata", lambda c: c.insert("n", [1, 0, 0], [1, 2]), needle.InvalidMetadataError, "dict"),
    ("unencodable metadata", lambda c: c.insert("n", [1, 0, 0], {"f": object()}), needle.InvalidMetadataError, "JSON"),
    ("non-str key", lambda c: c.insert("n", [1, 0, 0], {1: "x"}), needle.InvalidMetadataError, "JSON"),
    ("NaN metadata", lambda c: c.insert("n", [1, 0, 0], {"v": float("nan")}), needle.InvalidMetadataError, "metadata.v"),
    # values that would read back as something else (a string, a list) are refused, naming the key
    ("datetime metadata", lambda c: c.insert("n", [1, 0, 0], {"when": datetime.datetime(2026, 1, 2)}),
     needle.InvalidMetadataError, "metadata.when is a datetime"),
    ("date metadata", lambda c: c.upsert("a", [1, 0, 0], {"d": datetime.date(2026, 1, 2)}),
     needle.InvalidMetadataError, "metadata.d is a date"),
    ("UUID metadata", lambda c: c.insert("n", [1, 0, 0], {"u": [uuid.uuid4()]}), needle.InvalidMetadataError,
     "metadata.u[0] is a UUID"),
    ("Decimal metadata", lambda c: c.update_metadata("a", {"p": {"q": decimal.Decimal("1.5")}}),
     needle.InvalidMetadataError, "metadata.p.q is a Decimal"),
    ("bytes metadata", lambda c: c.insert("n", [1, 0, 0], {"b": b"raw"}), needle.InvalidMetadataError, "bytes"),
    ("update missing", lambda c: c.update_metadata("zz", {}), needle.RecordNotFoundError, "'zz'"),
    ("update bad metadata", lambda c: c.update_metadata("a", {"s": {1, 2}}), needle.InvalidMetadataError, "JSON"),
    ("bad filter", lambda c: c.search([1, 0, 0], 3, filter={"x": {"$bogus": 1}}), needle.FilterError, "$bogus"),
    ("$in non-list", lambda c: c.search([1, 0, 0], 3, filter={"x": {"$in": 5}}), needle.FilterError, "needs a list"),
    ("negative k", lambda c: c.search([1, 0, 0], -1), needle.InvalidArgumentError, "k must"),
    ("query dimension", lambda c: c.search([1, 0], 3), needle.InvalidVectorError, "dimension 2"),
    # A vector whose squared norm overflows float32 is refused when stored, as it is as a query.
    ("squared norm overflow", lambda c: c.insert("n", np.array([1e20, 0, 0])), needle.InvalidVectorError,
     "squared norm overflows"),
    ("squared norm overflow in a batch", lambda c: c.upsert_many(["n", "m"], np.array([[1, 0, 0], [0, 2e19, 0]])),
     needle.InvalidVectorError, "squared norm overflows"),
    ("huge query", lambda c: c.search(np.array([1e20, 0, 0]), 3), needle.InvalidVectorError, "squared norm overflows"),
    ("huge batch query", lambda c: c.search_batch(np.array([[1e20, 0, 0]]), 3), needle.InvalidVectorError,
     "squared norm overflows"),
    ("deep filter (search)", lambda c: c.search([1, 0, 0], 3, filter=_deep(400)), needle.FilterError, "deeper than 100"),
    ("deep filter (find)", lambda c: c.find(_deep(400, "$not")), needle.FilterError, "deeper than 100"),
    ("deep filter (count)", lambda c: c.count(_deep(1000, "$or")), needle.FilterError, "deeper than 100"),
    ("deep filter (delete)", lambda c: c.delete(filter=_deep(400)), needle.FilterError, "deeper than 100"),
    ("deep literal", lambda c: c.count({"x": {"$in": _nested_list(200)}}), needle.FilterError, "deeper than 100"),
]


@pytest.mark.parametrize("label,action,error,message", BAD_WRITES, ids=[b[0] for b in BAD_WRITES])
def test_bad_input_raises_and_changes_nothing(populated, db_path, label, action, error, message):
    db, coll = populated
    before = fingerprint(db)
    with pytest.raises(error) as info:
        action(coll)
    assert isinstance(info.value, needle.NeedleError)
    assert message in str(info.value)
    assert fingerprint(db) == before
    db.save()
    db.close()
    with needle.Database.open(db_path, read_only=True) as again:
        assert fingerprint(again) == before


def test_numpy_scalars_and_any_float_dtype_are_accepted(db_path):
    with needle.Database.open(db_path) as db:
        c = db.create_collection("c", 3)
        c.insert("f16", np.array([1, 2, 3], dtype=np.float16), {"n": np.int64(3), "f": np.float32(0.5)})
        c.insert("ints", [1, 2, 4], None)
        c.insert("tuple", (1.0, 2.0, 5.0), {"arr": np.arange(3)})
    with needle.Database.open(db_path, read_only=True) as db:
        c = db.collection("c")
        assert c.get("f16").metadata == {"n": 3, "f": 0.5} and c.get("ints").metadata == {}
        assert c.get("tuple").metadata == {"arr": [0, 1, 2]}


CONFIG_ERRORS = [
    (lambda db: db.create_collection("x", 0), needle.InvalidConfigError, "dimension"),
    (lambda db: db.create_collection("x", 3.5), needle.InvalidConfigError, "dimension"),
    (lambda db: db.create_collection("x", 3, "hamming"), needle.InvalidConfigError, "unknown distance 'hamming'"),
    (lambda db: db.create_collection("", 3), needle.InvalidConfigError, "non-empty"),
    (lambda db: db.create_collection("c", 3), needle.CollectionExistsError, "'c' already exists"),
    (lambda db: db.create_collection("x", 3, m=1), needle.InvalidConfigError, "m must"),
    (lambda db: db.collection("nope"), needle.CollectionNotFoundError, "'nope'"),
    (lambda db: db.drop_collection("nope"), needle.CollectionNotFoundError, "'nope'"),
    (lambda db: db.create_collection_with_config("x", {"dim": 3}), needle.InvalidConfigError, "CollectionConfig"),
    (lambda db: db.create_collection("x", 3, foo=1), needle.InvalidConfigError, "unknown parameter"),
    (lambda db: db.create_collection("x", 3, M=16), needle.InvalidConfigError, "'M'"),
]


@pytest.mark.parametrize("action,error,message", CONFIG_ERRORS)
def test_bad_collection_config(populated, action, error, message):
    db, _ = populated
    before = fingerprint(db), db.list_collections()
    with pytest.raises(error, match=message.replace("$", r"\$")):
        action(db)
    assert (fingerprint(db), db.list_collections()) == before


def test_read_only_database_refuses_writes(populated, db_path):
    db, _ = populated
    db.save()
    ro = needle.Database.open(db_path, read_only=True)
    c = ro.collection("c")
    for action in (lambda: c.insert("n", [1, 0, 0]), lambda: c.delete("a"), lambda: ro.save(),
                   lambda: ro.create_collection("x", 2), lambda: ro.drop_collection("c"),
                   lambda: c.update_metadata("a", {})):
        with pytest.raises(needle.ReadOnlyError, match="read-only"):
            action()
    assert c.count() == 3


@pytest.mark.parametrize("read_only", [False, True])
def test_open_of_a_directory_or_an_empty_path(tmp_path, read_only):
    with pytest.raises(needle.DatabaseNotFoundError, match="is a directory"):
        needle.Database.open(tmp_path, read_only=read_only)
    with pytest.raises(needle.DatabaseNotFoundError, match="empty"):
        needle.Database.open("", read_only=read_only)
    assert list(tmp_path.iterdir()) == []


def test_open_in_a_missing_folder_creates_nothing(tmp_path):
    with pytest.raises(needle.DatabaseNotFoundError, match="does not exist"):
        needle.Database.open(tmp_path / "typo" / "dir" / "x.needle")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(needle.DatabaseNotFoundError):
        needle.Database.open(tmp_path / "typo" / "x.needle", read_only=True)
    assert list(tmp_path.iterdir()) == []


def test_metadata_that_reads_back_as_given_is_accepted(db_path):
    with needle.Database.open(db_path) as db:
        coll = db.create_collection("c", 3)
        coll.insert("a", [1, 0, 0], {"t": (1, 2), "n": np.int64(3), "f": np.float32(0.5), "arr": np.arange(2),
                                     "nested": {"ok": [None, True, "x"]}})
        assert coll.get("a").metadata == {"t": [1, 2], "n": 3, "f": 0.5, "arr": [0, 1], "nested": {"ok": [None, True, "x"]}}


def test_read_only_open_of_missing_file_creates_nothing(tmp_path):
    path = tmp_path / "missing.needle"
    with pytest.raises(needle.DatabaseNotFoundError):
        needle.Database.open(path, read_only=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"", b"hello world", b"SQLite format 3\0" + b"\0" * 5000, os.urandom(20000)],
                         ids=["empty", "text", "sqlite", "random"])  # ids, not bytes: the same in every pytest worker
def test_not_a_needle_file(tmp_path, content):
    path = tmp_path / "x.needle"
    path.write_bytes(content)
    for ro in (True, False):
        with pytest.raises(needle.NotANeedleFileError, match="not a Needle file"):
            needle.Database.open(path, read_only=ro)
    assert path.read_bytes() == content


def _bump_versions(path, read_version, write_version):
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    raw[8:12] = read_version.to_bytes(4, "little")
    raw[12:16] = write_version.to_bytes(4, "little")
    raw[60:64] = crc32(bytes(raw[:60])).to_bytes(4, "little")
    with open(path, "wb") as f:
        f.write(raw)


def test_newer_read_version_is_refused(populated, db_path):
    db, _ = populated
    db.close()
    _bump_versions(db_path, READ_VERSION + 1, WRITE_VERSION + 1)
    with pytest.raises(needle.UnsupportedVersionError, match="read version 2"):
        needle.Database.open(db_path, read_only=True)


def test_newer_write_version_opens_read_only_only(populated, db_path):
    db, _ = populated
    db.save()
    db.close()
    _bump_versions(db_path, READ_VERSION, WRITE_VERSION + 1)
    with pytest.raises(needle.UnsupportedVersionError, match="read_only=True"):
        needle.Database.open(db_path)
    with needle.Database.open(db_path, read_only=True) as ro:
        assert ro.collection("c").count() == 3


def test_filters_up_to_the_depth_limit_work_and_no_warning_leaks(populated):
    db, coll = populated
    f = {"x": 1}
    for _ in range(49):  # 49 nested $and: 99 levels of objects and lists
        f = {"$and": [f]}
    assert [i for i, _ in coll.find(f)] == ["a"]
    assert coll.count(f) == 1 and coll.delete(filter=f) == 1


def test_deep_sparse_filters_are_refused(db_path):
    with needle.Database.open(db_path) as db:
        c = db.create_collection("s", 100, "dot", sparse=True)
        c.insert("a", {"indices": [1], "values": [1.0]}, {"x": 1})
        with pytest.raises(needle.FilterError, match="deeper than 100"):
            c.search({"indices": [1], "values": [1.0]}, 3, filter=_deep(400))
