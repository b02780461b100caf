"""MongoDB filter semantics of the reference evaluator (the filter issue adds mongomock)."""

from __future__ import annotations

import numpy as np
import pytest

import needle_mm as needle
from needle_mm.filters import compile_filter

DOCS = [
    {"category": "books", "price": 12.5, "tags": ["sci-fi", "classic"], "author": {"name": "x"}},
    {"category": "books", "price": 80, "tags": ["romance"], "stock": None},
    {"category": "music", "price": 5, "flag": True},
    {"category": "music", "price": "5"},
    {"nested": [{"a": 1}, {"a": 2}]},
    {},
]

CASES = [
    ({"category": "books"}, [0, 1]),
    ({"$and": [{"category": "books"}, {"price": {"$lt": 50}}]}, [0]),
    ({"price": {"$gte": 12.5}}, [0, 1]),
    ({"price": 5}, [2]),  # a number never equals a string
    ({"price": "5"}, [3]),
    ({"price": {"$gt": "1"}}, [3]),
    ({"price": {"$ne": 5}}, [0, 1, 3, 4, 5]),
    ({"price": {"$in": [5, 80]}}, [1, 2]),
    ({"price": {"$nin": [5, 80]}}, [0, 3, 4, 5]),
    ({"tags": "sci-fi"}, [0]),
    ({"tags": {"$in": ["romance", "nope"]}}, [1]),
    ({"tags": {"$all": ["classic", "sci-fi"]}}, [0]),
    ({"tags": {"$size": 1}}, [1]),
    ({"author.name": "x"}, [0]),
    ({"nested.a": 2}, [4]),
    ({"nested": {"$elemMatch": {"a": {"$gt": 1}}}}, [4]),
    ({"stock": None}, [0, 1, 2, 3, 4, 5]),  # null matches missing
    ({"stock": {"$exists": True}}, [1]),
    ({"stock": {"$exists": False}}, [0, 2, 3, 4, 5]),
    ({"flag": True}, [2]),
    ({"flag": 1}, []),  # a boolean is not a number
    ({"$or": [{"category": "music"}, {"price": {"$gt": 50}}]}, [1, 2, 3]),
    ({"$nor": [{"category": "music"}, {"price": {"$gt": 50}}]}, [0, 4, 5]),
    ({"price": {"$not": {"$gt": 20}}}, [0, 2, 3, 4, 5]),
    ({"category": {"$contains": "oo"}}, [0, 1]),
    ({}, [0, 1, 2, 3, 4, 5]),
    # the corners the mongomock comparison leaves out (see test_filter_semantics.py)
    ({"price": {"$gte": None}}, [4, 5]),  # MongoDB: {$gte: null} is "null or missing"
    ({"price": {"$gt": None}}, []),
    ({"flag": {"$all": [None]}}, [0, 1, 3, 4, 5]),  # $all of one value is equality
    ({"category.x": None}, [4, 5]),  # a string has no fields: nothing there, not "missing"
    ({"category.x": {"$exists": False}}, [0, 1, 2, 3, 4, 5]),
    ({"nested.b": None}, [0, 1, 2, 3, 4, 5]),  # an element without the key counts as missing
    ({"nested.a": None}, [0, 1, 2, 3, 5]),
    ({"category": {"$size": 5}}, []),  # $size only matches arrays
]


@pytest.mark.parametrize("flt,expected", CASES, ids=[str(c[0]) for c in CASES])
def test_semantics(flt, expected):
    pred = compile_filter(flt)
    got = [i for i, d in enumerate(DOCS) if pred is None or pred(d)]
    assert got == expected


@pytest.mark.parametrize("flt,fragment", [
    ({"x": {"$bogus": 1}}, "$bogus"),
    ({"$where": "1"}, "$where"),
    ({"x": {"$in": 3}}, "$in needs a list"),
    ({"$and": {}}, "$and needs a non-empty list"),
    ({"x": {"$exists": 1}}, "true or false"),
    ({"x": {"$gt": [1]}}, "operand"),
    ({"x": {"$gt": 1, "y": 2}}, "cannot mix"),
    ({"$or": [{"x": 1}, 5]}, "$or[1]"),
    ("category", "must be a dict"),
])
def test_malformed_filters_name_the_part(flt, fragment):
    with pytest.raises(needle.FilterError) as info:
        compile_filter(flt)
    assert fragment in str(info.value)


def test_filters_through_the_api(db_path):
    with needle.Database.open(db_path) as db:
        c = db.create_collection("c", 2)
        c.insert_many([f"d{i}" for i in range(len(DOCS))], np.ones((len(DOCS), 2)) + np.arange(len(DOCS))[:, None] * [1, 0],
                      DOCS)
        for flt, expected in CASES:
            want = {f"d{i}" for i in expected}
            assert {r.id for r in c.search([1, 1], k=10, filter=flt)} == want
            assert c.count(filter=flt) == len(expected)
            assert {i for i, _ in c.find(flt)} == want


def test_delete_by_filter_committed_and_pending(db_path):
    with needle.Database.open(db_path) as db:
        c = db.create_collection("c", 2)
        c.insert_many([f"d{i}" for i in range(len(DOCS))], np.ones((len(DOCS), 2)), DOCS)
    db = needle.Database.open(db_path)
    c = db.collection("c")
    c.insert("pending-book", [1, 2], {"category": "books"})
    assert c.delete(filter={"category": "books"}) == 3  # two committed, one unsaved
    assert c.delete(["d2", "d3"], filter={"price": 5}) == 1  # only listed ids that match
    with pytest.raises(needle.InvalidArgumentError):
        c.delete(filter={})
    with pytest.raises(needle.FilterError, match=r"\$bogus"):
        c.delete(filter={"x": {"$bogus": 1}})
    db.save()
    db.close()
    with needle.Database.open(db_path, read_only=True) as db:
        assert sorted(i for i, _ in db.collection("c").find()) == ["d3", "d4", "d5"]
