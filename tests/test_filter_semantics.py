"""Filter semantics against a reference nobody here wrote: mongomock.

Hypothesis draws documents (numbers, strings, booleans, nulls, missing
fields, nested objects, arrays of scalars) and filters over them (every
operator mongomock knows, dotted paths, logical combinations); the ids
Needle's ``find`` returns — from committed segments (columnar evaluation)
and from unsaved records (the reference evaluator) — must equal the ids
mongomock's ``find`` returns, as sets. ``$contains`` is Needle's own and is
checked against Python's ``in``.

Where mongomock is not MongoDB, the generators stay out of its way (each
place says why): booleans vs 0/1, ``$gte``/``$lte`` null, and dotted paths
through a scalar or an array, ``$size`` on a non-array (mongomock matches
strings) — for paths mongomock contradicts itself: ``$ne: 1``
and ``$not: {$eq: 1}`` disagree, and ``$exists`` true and false can both
match one document). Needle's own rules for those are in test_filters.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import needle_mm as needle

mongomock = pytest.importorskip("mongomock")

STRINGS = ["books", "music", "", "Books", "b", "x y"]
# No 0 or 1: mongomock compares with Python's ==, so False matches 0 and True
# matches 1 there, unlike MongoDB (and Needle), where a boolean is no number.
NUMBERS = [2, -1, 2.5, 10, 1e9, -3, 3]
SCALARS = st.one_of(st.sampled_from(STRINGS), st.sampled_from(NUMBERS), st.booleans(), st.none())
FIELDS = ["a", "n", "s", "tags", "o.c", "o.d"]

EXAMPLES = int(os.environ.get("NEEDLE_FILTER_EXAMPLES", "120"))
DOCS, FILTERS = 20, 5  # each example checks DOCS x FILTERS filter/document cases


def _value():
    return st.one_of(SCALARS, st.lists(SCALARS, max_size=3))


@st.composite
def documents(draw):
    doc = {}
    for key in ("a", "n", "s"):
        if draw(st.booleans()):
            doc[key] = draw(_value())
    if draw(st.booleans()):
        doc["tags"] = draw(st.lists(SCALARS, max_size=3))
    if draw(st.booleans()):  # always an object: see the module docstring
        inner = {}
        for key in ("c", "d"):
            if draw(st.booleans()):
                inner[key] = draw(_value())
        doc["o"] = inner
    return doc


def _operand():
    return SCALARS


@st.composite
def field_condition(draw):
    op = draw(st.sampled_from(["eq-implicit", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin",
                               "$exists", "$not", "$all", "$size", "$elemMatch", "array-literal"]))
    if op == "eq-implicit":
        return draw(_operand())
    if op == "array-literal":
        return draw(st.lists(SCALARS, max_size=2))
    if op == "$all":  # no null: MongoDB reads {$all: [null]} as {$eq: null}; mongomock never matches it
        return {op: draw(st.lists(_operand().filter(lambda v: v is not None), min_size=1, max_size=3))}
    if op in ("$in", "$nin"):
        return {op: draw(st.lists(_operand(), max_size=3))}
    if op == "$exists":
        return {op: draw(st.booleans())}
    if op == "$size":
        return {op: draw(st.integers(0, 3))}
    if op == "$not":
        inner = draw(st.sampled_from(["$gt", "$lt", "$eq", "$in"]))
        arg = draw(st.lists(_operand(), max_size=2)) if inner == "$in" else draw(_operand())
        return {"$not": {inner: arg}}
    if op == "$elemMatch":
        inner = draw(st.sampled_from(["$gt", "$lt", "$eq", "$gte"]))
        return {op: {inner: draw(st.sampled_from(NUMBERS + STRINGS))}}
    if op in ("$gt", "$gte", "$lt", "$lte"):
        # not null: MongoDB reads {$gte: null} / {$lte: null} as "null or missing"
        # (as Needle does); mongomock matches only null there.
        return {op: draw(_operand().filter(lambda v: v is not None))}
    return {op: draw(_operand())}


@st.composite
def filters(draw, depth=0):
    if depth < 2 and draw(st.integers(0, 4)) == 0:
        op = draw(st.sampled_from(["$and", "$or", "$nor"]))
        return {op: draw(st.lists(filters(depth + 1), min_size=1, max_size=3))}
    keys = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2, unique=True))
    out = {}
    for k in keys:
        cond = draw(field_condition())
        if isinstance(cond, dict) and "$size" in cond:
            k = "tags"  # mongomock's $size matches any string; "tags" is always an array
        out[k] = cond
    return out


def _mongo_ids(docs, flt) -> set[str]:
    coll = mongomock.MongoClient().db.c
    coll.insert_many([dict(d, _id=str(i)) for i, d in enumerate(docs)])
    return {d["_id"] for d in coll.find(flt, {"_id": 1})}


def _mongo_supported(flt) -> bool:
    """mongomock raises on some valid combinations; those cases are skipped, not counted."""
    try:
        _mongo_ids([{}], flt)
        return True
    except Exception:  # noqa: BLE001 - mongomock's own limitation
        return False


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(documents(), min_size=DOCS, max_size=DOCS), flts=st.lists(filters(), min_size=FILTERS,
                                                                                max_size=FILTERS))
def test_find_matches_mongomock(tmp_path_factory, docs, flts):
    path = str(tmp_path_factory.mktemp("sem") / "f.needle")
    vectors = np.random.default_rng(0).normal(size=(DOCS, 4)).astype(np.float32)
    half = DOCS // 2
    db = needle.Database.open(path)
    c = db.create_collection("c", 4)
    c.insert_many([str(i) for i in range(half)], vectors[:half], docs[:half])
    db.save()  # the first half is committed (columns), the second stays pending (reference evaluator)
    c.insert_many([str(i) for i in range(half, DOCS)], vectors[half:], docs[half:])
    for flt in flts:
        if not _mongo_supported(flt):
            continue
        want = _mongo_ids(docs, flt)
        got = {i for i, _ in c.find(flt)}
        diff = sorted(got ^ want, key=int)
        assert got == want, f"filter {flt!r}: differs on {[(i, docs[int(i)]) for i in diff][:4]}"
        assert c.count(flt) == len(want)
    db.close()


@settings(max_examples=30, deadline=None)
@given(docs=st.lists(st.dictionaries(st.sampled_from(["s", "t"]),
                                     st.one_of(st.text(alphabet="abc ", max_size=5),
                                               st.lists(st.text(alphabet="abc", max_size=3), max_size=3),
                                               st.integers(0, 3))), min_size=5, max_size=15),
       needle_text=st.text(alphabet="abc ", max_size=3))
def test_contains_is_substring_of_string_fields(tmp_path_factory, docs, needle_text):
    path = str(tmp_path_factory.mktemp("con") / "f.needle")
    with needle.Database.open(path) as db:
        db.create_collection("c", 2).insert_many([str(i) for i in range(len(docs))],
                                                 np.ones((len(docs), 2)), docs)
    with needle.Database.open(path, read_only=True) as db:
        got = {i for i, _ in db.collection("c").find({"s": {"$contains": needle_text}})}

    def has(v):
        values = v if isinstance(v, list) else [v]
        return any(isinstance(x, str) and needle_text in x for x in values)

    assert got == {str(i) for i, d in enumerate(docs) if "s" in d and has(d["s"])}
