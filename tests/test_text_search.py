"""Full-text and hybrid search through the collection API (SPEC §5.11).

What could go wrong once the BM25 layer (tests/test_text_layer.py) sits in
the file: statistics taken from one segment or one commit instead of the
collection (scores that change with how records were split), deleted or
replaced records still counted, a filter that changes scores, unsaved
records missing, chunks that drift from the metadata as commits merge them,
a reader in another process analysing queries differently, fusion that is
not the documented formula, and hostile chunk bytes read as if they were
right. The reference here is the formula written out in Python over the
surviving texts, tokenised by the collection's own analyzer; the layer's
tests compare that analyzer-and-kernel pair with bm25s.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import Counter

import numpy as np
import pytest

import needle_mm as needle
from needle_mm._engine.text_search import analyzer_of
from needle_mm.errors import CorruptFileError, InvalidArgumentError, InvalidConfigError
from needle_mm.ops.rebuild import rebuild
from needle_mm.ops.verify import verify_file

from conftest import run_python, tool_module


@pytest.fixture(scope="module")
def demo(demo_data):
    return demo_data["texts"], demo_data["vectors"], demo_data["sources"]


def reference_bm25(texts: dict[str, str], query: str, analyzer, k1=1.2, b=0.75) -> list[tuple[str, float]]:
    """Lucene's BM25 over ``texts`` (id -> text: the live records), written out:
    every (id, score) with a positive score, best first, ties by id."""
    docs = {i: Counter(analyzer.tokens(t)) for i, t in texts.items()}
    lengths = {i: sum(c.values()) for i, c in docs.items()}
    with_text = [i for i in docs if lengths[i] > 0]
    n = len(with_text)
    if not n:
        return []
    avgdl = sum(lengths[i] for i in with_text) / n
    q = Counter(analyzer.tokens(query))
    scores = {}
    for term, count in q.items():
        df = sum(1 for i in with_text if term in docs[i])
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i in with_text:
            tf = docs[i].get(term, 0)
            if tf:
                scores[i] = scores.get(i, 0.0) + count * idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[i] / avgdl))
    return sorted(scores.items(), key=lambda x: (-x[1], x[0]))


def _groups(pairs):
    """Runs of equal scores (ties, to 1e-9 relative): [(score, {ids})]."""
    out = []
    for i, s in pairs:
        if out and abs(out[-1][0] - s) <= 1e-9 * max(1.0, abs(s)):
            out[-1][1].add(i)
        else:
            out.append((s, {i}))
    return out


def assert_matches(hits, want, k):
    """The same scores in the same order, and the same ids for each score,
    tied ids in any order (the last group, cut by k, a subset of the tie)."""
    got = [(h.id, -h.distance) for h in hits]
    assert len(got) == min(k, len(want))
    for (_, gs), (_, ws) in zip(got, want):
        assert gs == pytest.approx(ws, rel=1e-9, abs=1e-12)
    mine, theirs = _groups(got), _groups(want)
    for j, (score, ids) in enumerate(mine):
        assert ids == theirs[j][1] if j < len(mine) - 1 else ids <= theirs[j][1], (score, ids, theirs[j])


QUERIES = ["the movie was funny", "great battery life", "government and the people", "a very bad film",
           "sound quality", "ZZZ unknown words qqq", "Film! FILM; film?"]


def test_text_search_matches_the_formula_across_commits_deletes_and_upserts(tmp_path, demo):
    texts, vectors, _ = demo
    path = str(tmp_path / "t.needle")
    with needle.Database.open(path) as db:
        c = db.create_collection("docs", 384, text_field="document")
        analyzer = analyzer_of(db.engine.state("docs").descriptor.text)
        live = {}
        for start in (0, 1000, 1400, 1410):  # a big commit, then smaller ones: chunks merge as columns do
            stop = {0: 1000, 1000: 1400, 1400: 1410, 1410: 1500}[start]
            c.insert_many([f"d{i}" for i in range(start, stop)], vectors[start:stop],
                          [{"document": texts[i], "n": i} for i in range(start, stop)])
            live.update({f"d{i}": texts[i] for i in range(start, stop)})
            db.save()
        c.delete([f"d{i}" for i in range(0, 1500, 7)])
        for i in range(0, 1500, 7):
            live.pop(f"d{i}")
        c.upsert("d3", vectors[3], {"document": "funny funny movie about a battery", "n": 3})
        live["d3"] = "funny funny movie about a battery"
        c.upsert("d5", vectors[5], {"n": 5})  # its text is gone: no longer a document
        live.pop("d5")
        for q in QUERIES:  # unsaved changes are searched too
            assert_matches(c.search(text=q, k=10), reference_bm25(live, q, analyzer), 10)
        db.save()
        for q in QUERIES:
            assert_matches(c.search(text=q, k=10), reference_bm25(live, q, analyzer), 10)
        view = db.engine.snapshot.segments("docs")[0]
        assert len(view.descriptor.text_chunks) >= 2  # merged, not one chunk per commit and not one in all
    assert verify_file(path).ok


def test_cached_statistics_and_impacts_follow_every_change(tmp_path, demo):
    """A view caches N, the token total, each term's df and the per-posting impacts (from its second
    query with one avgdl): repeated queries between deletes, upserts, unsaved inserts (which move
    avgdl at every insert) and saves must each see the collection as it is then."""
    texts, vectors, _ = demo
    path = str(tmp_path / "c.needle")
    with needle.Database.open(path) as db:
        c = db.create_collection("docs", 384, text_field="document")
        analyzer = analyzer_of(db.engine.state("docs").descriptor.text)
        meta = lambda i, text: {"document": text, "third": i % 3 == 0}  # noqa: E731
        c.insert_many([f"d{i}" for i in range(1200)], vectors[:1200], [meta(i, texts[i]) for i in range(1200)])
        live = {f"d{i}": texts[i] for i in range(1200)}
        db.save()

        def check():
            for _ in range(3):  # the first query fills the caches, the later ones read them
                for q in QUERIES[:5]:
                    assert_matches(c.search(text=q, k=10), reference_bm25(live, q, analyzer), 10)
                    want = [(i, s) for i, s in reference_bm25(live, q, analyzer) if int(i[1:]) % 3 == 0]
                    assert_matches(c.search(text=q, k=5, filter={"third": True}), want, 5)

        check()
        c.delete([f"d{i}" for i in range(0, 1200, 5)])
        for i in range(0, 1200, 5):
            live.pop(f"d{i}")
        check()  # deleted, not yet saved: the view's tombstones are not the state's
        db.save()
        check()
        for i in range(1200, 1210):  # unsaved inserts: avgdl moves at each one
            c.insert(f"d{i}", vectors[i], meta(i, texts[i]))
            live[f"d{i}"] = texts[i]
            for q in QUERIES[:3]:
                assert_matches(c.search(text=q, k=10), reference_bm25(live, q, analyzer), 10)
        c.upsert("d1", vectors[1], meta(1, "great battery life battery"))
        live["d1"] = "great battery life battery"
        check()
        db.save()
        check()


def test_a_filter_narrows_the_list_without_changing_scores(tmp_path, demo):
    texts, vectors, sources = demo
    path = str(tmp_path / "f.needle")
    with needle.Database.open(path) as db:
        c = db.create_collection("docs", 384, text_field="document")
        c.insert_many([f"d{i}" for i in range(800)], vectors[:800],
                      [{"document": texts[i], "src": sources[i]} for i in range(800)])
        analyzer = analyzer_of(db.engine.state("docs").descriptor.text)
        everyone = reference_bm25({f"d{i}": texts[i] for i in range(800)}, "the movie", analyzer)
        src = sources[0]
        allowed = {f"d{i}" for i in range(800) if sources[i] == src}
        want = [(i, s) for i, s in everyone if i in allowed]
        assert_matches(c.search(text="the movie", k=10, filter={"src": src}), want, 10)


def test_hybrid_rrf_and_weighted_are_the_documented_formulas(tmp_path, demo):
    texts, vectors, _ = demo
    path = str(tmp_path / "h.needle")
    with needle.Database.open(path) as db:
        c = db.create_collection("docs", 384, text_field="document")
        c.insert_many([f"d{i}" for i in range(1500)], vectors[:1500], [{"document": t} for t in texts[:1500]])
        db.save()
        for j, q in enumerate(["the movie was funny", "great battery life"]):
            qv = vectors[1500 + j]
            dense = c.search(qv, k=30, exact=True)
            textual = c.search(text=q, k=30)
            fused = {}
            for ranked in (dense, textual):
                for r, h in enumerate(ranked, 1):
                    fused[h.id] = fused.get(h.id, 0.0) + 1 / (60 + r)
            want = sorted(fused, key=lambda i: (-fused[i], i))[:10]
            got = c.search(qv, text=q, k=10, candidates=30, exact=True)
            assert [h.id for h in got] == want
            np.testing.assert_allclose([-h.distance for h in got], [fused[i] for i in want], rtol=1e-12)
            by_id = {h.id: h for h in dense}
            for h in got:
                assert h.scores["vector"] == (by_id[h.id].distance if h.id in by_id else None)
            # weighted: alpha * normalised similarity + (1 - alpha) * normalised BM25
            sim = {h.id: -h.distance for h in dense}
            bm = {h.id: -h.distance for h in textual}

            def norm(d):
                lo, hi = min(d.values()), max(d.values())
                return {i: (v - lo) / (hi - lo) if hi > lo else 1.0 for i, v in d.items()}

            ns, nb = norm(sim), norm(bm)
            total = {i: 0.7 * ns.get(i, 0.0) + 0.3 * nb.get(i, 0.0) for i in set(ns) | set(nb)}
            want = sorted(total, key=lambda i: (-total[i], i))[:10]
            got = c.search(qv, text=q, k=10, candidates=30, exact=True, fusion={"method": "weighted", "alpha": 0.7})
            assert [h.id for h in got] == want
            got = c.search(vector=qv, text=q, k=5, candidates=30, exact=True, fusion={"method": "rrf", "k": 10},
                           as_arrays=True)
            fused = {}
            for ranked in (dense, textual):
                for r, h in enumerate(ranked, 1):
                    fused[h.id] = fused.get(h.id, 0.0) + 1 / (10 + r)
            assert got[0].tolist() == sorted(fused, key=lambda i: (-fused[i], i))[:5]


def _fused_by_hand(dense, textual, k, method, value):
    """The documented fusion of two ranked result lists, record by record (ids and fused scores)."""
    fused = {}
    if method == "rrf":
        for ranked in (dense, textual):
            for r, h in enumerate(ranked, 1):
                fused[h.id] = fused.get(h.id, 0.0) + 1 / (value + r)
    else:
        for weight, ranked in ((value, dense), (1 - value, textual)):
            sims = [-h.distance for h in ranked]
            lo, hi = (min(sims), max(sims)) if sims else (0.0, 0.0)
            for h, v in zip(ranked, sims):
                fused[h.id] = fused.get(h.id, 0.0) + weight * ((v - lo) / (hi - lo) if hi > lo else 1.0)
    order = sorted(fused, key=lambda i: (-fused[i], i))[:k]
    return order, fused


def test_fusion_over_segments_unsaved_records_deletes_and_filters_is_the_formula(tmp_path, demo):
    """The fused list is the formula over the two rankings as each search returns them, when the
    candidates come from two segments and this process's unsaved records, some deleted, under a
    filter; each hit's scores, vector and metadata are its record's."""
    texts, vectors, _ = demo
    with needle.Database.open(str(tmp_path / "f.needle")) as db:
        c = db.create_collection("docs", 384, text_field="document")
        meta = [{"document": t, "half": i % 2} for i, t in enumerate(texts[:1400])]
        ids = [f"d{i}" for i in range(1400)]
        c.insert_many(ids[:800], vectors[:800], meta[:800])
        db.save()
        c.insert_many(ids[800:1200], vectors[800:1200], meta[800:1200])
        db.save()
        c.insert_many(ids[1200:], vectors[1200:1400], meta[1200:])  # unsaved
        c.delete(ids[3:600:7] + ids[1201:1400:9])
        for j, q in enumerate(QUERIES[:4]):
            qv = vectors[1450 + j]
            for flt in (None, {"half": 1}):
                dense = c.search(qv, k=40, exact=True, filter=flt)
                textual = c.search(text=q, k=40, filter=flt)
                for method, value in (("rrf", 60.0), ("rrf", 5.0), ("weighted", 0.3)):
                    fusion = {"method": method, ("k" if method == "rrf" else "alpha"): value}
                    want, fused = _fused_by_hand(dense, textual, 12, method, value)
                    got = c.search(qv, text=q, k=12, candidates=40, exact=True, filter=flt, fusion=fusion,
                                   include_vector=True)
                    assert [h.id for h in got] == want
                    assert [-h.distance for h in got] == [fused[i] for i in want]
                    by_vector = {h.id: h.distance for h in dense}
                    by_text = {h.id: -h.distance for h in textual}
                    for h in got:
                        assert h.scores == {"vector": by_vector.get(h.id), "text": by_text.get(h.id)}
                        assert np.array_equal(h.vector, c.get(h.id).vector)
                        assert h.metadata == c.get(h.id).metadata
                        assert flt is None or h.metadata["half"] == 1
                    arrays = c.search(qv, text=q, k=12, candidates=40, exact=True, filter=flt, fusion=fusion,
                                      as_arrays=True)
                    assert arrays[0].tolist() == want + [None] * (12 - len(want))
                    assert arrays[1][:len(want)].tolist() == [float(np.float32(-fused[i])) for i in want]
            batch = c.search_batch(vectors[1450:1454], texts=QUERIES[:4], k=12, candidates=40, exact=True)
            # (exact vector distances of a batch may differ from one query's in the last bit: ranks do not)
            assert [[(h.id, h.distance, h.scores["text"]) for h in r] for r in batch] == \
                [[(h.id, h.distance, h.scores["text"]) for h in c.search(v, text=t, k=12, candidates=40, exact=True)]
                 for v, t in zip(vectors[1450:1454], QUERIES[:4])]


def test_hybrid_over_nothing_answers_empty(tmp_path):
    """No records, k=0, a filter no record passes, a text no record holds: every shape of
    answer as a search over nothing gives it (one empty list per query, None / inf arrays)."""
    with needle.Database.open(str(tmp_path / "e.needle")) as db:
        c = db.create_collection("docs", 4, text_field="document")
        q, qs = np.ones(4, np.float32), np.ones((2, 4), np.float32)
        assert c.search(q, text="cat", k=3) == []
        ids, dists = c.search(q, text="cat", k=3, as_arrays=True)
        assert ids.tolist() == [None] * 3 and np.isinf(dists).all()
        assert c.search_batch(qs, texts=["a", "b"], k=3) == [[], []]
        assert c.search_batch(qs, texts=["a", "b"], k=3, as_arrays=True)[0].shape == (2, 3)
        c.insert_many(["a", "b"], np.eye(4, dtype=np.float32)[:2], [{"document": "the cat", "x": 1},
                                                                   {"document": "a dog", "x": 2}])
        for saved in (False, True):
            assert c.search(q, text="cat", k=0) == []
            assert c.search(q, text="cat", k=3, filter={"x": 9}) == []
            assert c.search_batch(qs, texts=["cat", "dog"], k=3, filter={"x": 9}) == [[], []]
            got = c.search(q, text="zebra", k=3)  # the vector ranking alone
            assert [h.id for h in got] == ["a", "b"] and all(h.scores["text"] is None for h in got)
            db.save()


def test_answers_identical_in_another_process(tmp_path, demo):
    texts, vectors, _ = demo
    path = str(tmp_path / "p.needle")
    with needle.Database.open(path) as db:
        c = db.create_collection("docs", 384, text_field="document",
                                 text_options={"stop_words": "english", "k1": 1.5, "b": 0.6})
        c.insert_many([f"d{i}" for i in range(600)], vectors[:600], [{"document": t} for t in texts[:600]])
        db.save()
        here = [[(h.id, h.distance) for h in c.search(text=q, k=8)] for q in QUERIES]
        here += [[(h.id, h.distance) for h in c.search(vectors[700], text=q, k=8)] for q in QUERIES[:2]]
        assert c.config.text_options == {"k1": 1.5, "b": 0.6, "stemmer": None, "stop_words": "english",
                                         "fold_accents": True}
    np.save(tmp_path / "v.npy", vectors[700])
    out = run_python("""
        import json, sys
        import numpy as np
        import needle_mm as needle
        queries = json.loads(sys.argv[2])
        v = np.load(sys.argv[3])
        with needle.Database.open(sys.argv[1], read_only=True) as db:
            c = db.collection("docs")
            out = [[(h.id, h.distance) for h in c.search(text=q, k=8)] for q in queries]
            out += [[(h.id, h.distance) for h in c.search(v, text=q, k=8)] for q in queries[:2]]
            print(json.dumps(out))
        """, path, json.dumps(QUERIES), str(tmp_path / "v.npy"))
    assert out.returncode == 0, out.stderr
    assert [[tuple(h) for h in row] for row in json.loads(out.stdout)] == here


def test_create_text_index_builds_at_the_next_save(tmp_path, demo, capsys):
    texts, vectors, _ = demo
    path = str(tmp_path / "late.needle")
    with needle.Database.open(path) as db:
        c = db.create_collection("docs", 384)
        c.insert_many([f"d{i}" for i in range(500)], vectors[:500], [{"body": t} for t in texts[:500]])
        db.save()
        with pytest.raises(InvalidArgumentError, match="no text index"):
            c.search(text="movie")
        c.create_text_index("body", stemmer=None)
        c.create_text_index("body")  # the same settings again: nothing to do
        with pytest.raises(InvalidArgumentError, match="next save"):
            c.search(text="movie")
        with pytest.raises(InvalidArgumentError, match="already has a text index"):
            c.create_text_index("other")
        db.save()
        analyzer = analyzer_of(db.engine.state("docs").descriptor.text)
        want = reference_bm25({f"d{i}": texts[i] for i in range(500)}, "a funny movie", analyzer)
        assert_matches(c.search(text="a funny movie", k=10), want, 10)
    assert verify_file(path).ok
    from needle_mm.cli import main
    assert main(["info", path]) == 0
    assert "text index on 'body'" in capsys.readouterr().out
    rebuild(path, text_field="none")
    with needle.Database.open(path, read_only=True) as db:
        assert db.collection("docs").config.text_field is None
    assert main(["rebuild", path, "--text-field", "body", "--no-progress"]) == 0
    with needle.Database.open(path, read_only=True) as db:
        assert_matches(db.collection("docs").search(text="a funny movie", k=10), want, 10)


def test_bad_arguments_are_named(tmp_path, demo):
    texts, vectors, _ = demo
    with needle.Database.open(str(tmp_path / "bad.needle")) as db:
        c = db.create_collection("docs", 384, text_field="document")
        c.insert_many(["a", "b"], vectors[:2], [{"document": texts[0]}, {"document": 42}])  # 42: no text
        assert [h.id for h in c.search(text=texts[0], k=5)] == ["a"]
        for kwargs, match in (({"text": 3}, "str"), ({"text": "x", "fusion": "max"}, "fusion"),
                              ({"text": "x", "fusion": {"method": "weighted", "alpha": 2}}, "alpha"),
                              ({"text": "x", "candidates": 0}, "candidates"), ({"text": "x", "k": -1}, "k")):
            with pytest.raises(InvalidArgumentError, match=match):
                c.search(vectors[0], **kwargs)
        with pytest.raises(InvalidArgumentError, match="query vector, a text"):
            c.search()
        with pytest.raises(InvalidArgumentError, match="once"):
            c.search(vectors[0], vector=vectors[0])
    for kwargs, match in (({"text_field": ""}, "text_field"), ({"text_options": {"k1": 1.0}}, "text_field"),
                          ({"text_field": "d", "text_options": {"stemmer": "klingon"}}, "klingon"),
                          ({"text_field": "d", "text_options": {"b": 2}}, "b"),
                          ({"text_field": "d", "text_options": {"colour": 1}}, "colour")):
        with pytest.raises(InvalidConfigError, match=match):
            needle.CollectionConfig(8, **kwargs)


def _tampered(tmp_path, demo, at: int, data: bytes) -> str:
    texts, vectors, _ = demo
    path = str(tmp_path / "hostile.needle")
    with needle.Database.open(path) as db:
        db.create_collection("docs", 384, text_field="document").insert_many(
            [f"d{i}" for i in range(300)], vectors[:300], [{"document": t} for t in texts[:300]])
    fuzz = tool_module("fuzz_files")
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    sb, catalog = fuzz.current(bytes(raw))
    ref = catalog["collections"][0]["segments"][0]["text_chunks"][0]
    raw[ref[2] + at:ref[2] + at + len(data)] = data
    ref[4] = zlib.crc32(bytes(raw[ref[2]:ref[2] + ref[3]])) & 0xFFFFFFFF
    with open(path, "wb") as f:
        f.write(fuzz.with_catalog(bytes(raw), sb, catalog))
    return path


@pytest.mark.parametrize("at, data, match", [
    (0, np.uint64(1 << 40).tobytes(), "does not fit"),  # the list count
    (40, np.uint64(2**63).tobytes(), "ascending"),  # the first term key
    (16, np.uint64(299).tobytes(), "does not fit"),  # the slot count
])
def test_hostile_text_chunks_are_refused(tmp_path, demo, at, data, match):
    path = _tampered(tmp_path, demo, at, data)
    with needle.Database.open(path, read_only=True) as db:
        with pytest.raises(CorruptFileError, match=match):
            db.collection("docs").search(text="movie")
        assert len(db.collection("docs").search(demo[1][0], k=3)) == 3  # vector search still answers
    report = verify_file(path)
    assert not report.ok and any("text chunk" in p for p in report.problems), report.problems


def test_text_indexes_need_catalog_format_6(tmp_path, demo):
    path = _tampered(tmp_path, demo, 0, b"")  # untouched bytes: a valid file with a text index
    fuzz = tool_module("fuzz_files")
    with open(path, "rb") as f:
        raw = f.read()
    sb, catalog = fuzz.current(raw)
    assert catalog["format"] == 6 and catalog["collections"][0]["text"]["field"] == "document"
    assert verify_file(path).ok
    for change, match in ((lambda c: c.update(format=5), "a text index 6"),
                          (lambda c: c["collections"][0]["text"].update(k1=-1), "k1"),
                          (lambda c: c["collections"][0]["text"]["analyzer"].update(stemmer="klingon"), "klingon"),
                          (lambda c: c["collections"][0]["segments"][0].pop("text_chunks"), "text chunks cover")):
        bad = json.loads(json.dumps(catalog))
        change(bad)
        with open(path, "wb") as f:
            f.write(fuzz.with_catalog(raw, sb, bad))
        with pytest.raises(CorruptFileError, match=match):
            needle.Database.open(path, read_only=True)


def test_batches_equal_single_queries(tmp_path, demo):
    texts, vectors, _ = demo
    with needle.Database.open(str(tmp_path / "b.needle")) as db:
        c = db.create_collection("docs", 384, text_field="document")
        c.insert_many([f"d{i}" for i in range(1000)], vectors[:1000], [{"document": t} for t in texts[:1000]])
        db.save()
        c.insert_many([f"p{i}" for i in range(50)], vectors[1000:1050], [{"document": t} for t in texts[1000:1050]])
        qs = QUERIES[:5]
        rows = c.search_batch(texts=qs, k=7)
        assert [[(h.id, h.distance) for h in r] for r in rows] == \
            [[(h.id, h.distance) for h in c.search(text=q, k=7)] for q in qs]
        ids, dists = c.search_batch(texts=qs, k=7, as_arrays=True)
        assert ids.tolist() == [[h.id for h in r] + [None] * (7 - len(r)) for r in rows]
        hybrid = c.search_batch(vectors[1100:1105], texts=qs, k=7, exact=True)
        assert [[h.id for h in r] for r in hybrid] == \
            [[h.id for h in c.search(v, text=q, k=7, exact=True)] for v, q in zip(vectors[1100:1105], qs)]
        with pytest.raises(InvalidArgumentError, match="one text per query"):
            c.search_batch(vectors[:3], texts=qs, k=3)
        with pytest.raises(InvalidArgumentError, match="list of strings"):
            c.search_batch(texts="one string", k=3)


def test_verify_finds_a_chunk_that_reads_well_but_is_not_its_texts(tmp_path, demo):
    """A hostile chunk whose structure passes every reader check (a term
    frequency raised with its document length, so the sums still agree) is
    still not what the texts make: verify rebuilds it and says so."""
    from needle_mm._format.text_chunk import _layout

    texts, vectors, _ = demo
    path = _tampered(tmp_path, demo, 0, b"")  # a valid file; the chunk is edited below
    fuzz = tool_module("fuzz_files")
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    sb, catalog = fuzz.current(bytes(raw))
    ref = catalog["collections"][0]["segments"][0]["text_chunks"][0]
    start, base = ref[0], ref[2]
    d, e, count, v, vb = np.frombuffer(bytes(raw[base:base + 40]), dtype="<u8").tolist()
    lay = _layout(d, e, count, v, vb)
    slot = int(np.frombuffer(bytes(raw[base + lay["slots"]:base + lay["slots"] + 4]), dtype="<u4")[0])
    for at in (lay["tfs"], lay["doc_lengths"] + 4 * (slot - start)):
        value = int(np.frombuffer(bytes(raw[base + at:base + at + 4]), dtype="<u4")[0])
        raw[base + at:base + at + 4] = np.uint32(value + 1).tobytes()
    ref[4] = zlib.crc32(bytes(raw[ref[2]:ref[2] + ref[3]])) & 0xFFFFFFFF
    with open(path, "wb") as f:
        f.write(fuzz.with_catalog(bytes(raw), sb, catalog))
    with needle.Database.open(path, read_only=True) as db:  # every reader check passes: it answers
        assert db.collection("docs").search(text=texts[slot], k=3)
    report = verify_file(path)
    assert not report.ok and any("is not the index of their 'document' texts" in p for p in report.problems), \
        report.problems
