"""The text index's layer pieces (issue 21): analysis (needle_mm._text), the
BM25 kernels (needle_mm._kernels.text) and the chunk builder and top-k driver
(needle_mm._index.text), against bm25s's Lucene BM25 on real sentences."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from needle_mm import errors
from needle_mm._text import Analyzer, split, stop_word_languages, stop_word_set, strip_accents, term_key, term_keys

from conftest import run_python

# ----------------------------------------------------------------- analysis: the rules


@pytest.mark.parametrize("text, tokens", [
    ("", []),
    ("   \t\n ", []),
    ("!?-- ... ,", []),
    ("The Cat SAT", ["the", "cat", "sat"]),
    ("Straße STRASSE", ["strasse", "strasse"]),                      # casefold, not lower
    ("ﬁne Ａ１ x²", ["fine", "a1", "x2"]),                             # NFKC
    ("Ünïcödé café naïve", ["unicode", "cafe", "naive"]),            # accents folded
    ("Øresund Łódź İstanbul Æsir", ["oresund", "lodz", "istanbul", "aesir"]),
    ("Ἀθῆναι ΣΟΦΊΑ σοφία", ["αθηναι", "σοφια", "σοφια"]),             # Greek: tonos and final sigma
    ("Москва ёлка", ["москва", "елка"]),                             # Cyrillic
    ("don't dog's l'homme rock’n’roll", ["don", "t", "dog", "s", "l", "homme", "rock", "n", "roll"]),
    ("snake_case state-of-the-art e-mail", ["snake", "case", "state", "of", "the", "art", "e", "mail"]),
    ("3.14 1,000 covid19 B2B", ["3", "14", "1", "000", "covid19", "b2b"]),
    ("٣ ٤٥ ۷ १२", ["3", "45", "7", "12"]),                          # decimal digits of any script -> ASCII
    ("東京都に住む", ["東", "京", "都", "に", "住", "む"]),             # Han and Hiragana: one token each
    ("三百 第２回", ["三", "百", "第", "2", "回"]),                     # CJK numerals stay, full-width digits fold
    ("カタカナ 한국어 텍스트", ["カタカナ", "한국어", "텍스트"]),        # Katakana and Hangul runs
    ("हिन्दी भाषा", ["हिन्दी", "भाषा"]),                                 # Devanagari marks stay inside, unfolded
    ("co\u00adoperate zero\u200bwidth a\u200db", ["cooperate", "zero", "width", "ab"]),
    ("e\u0301te\u0301 été", ["ete", "ete"]),                          # decomposed input equals composed
])
def test_tokenizer_rules(text, tokens):
    assert Analyzer().tokens(text) == tokens


def test_accents_kept_when_asked():
    a = Analyzer(fold_accents=False)
    assert a.tokens("Café ÉTÉ e\u0301te\u0301") == ["café", "été", "été"]


def test_ascii_shortcut_equals_the_general_rules():
    # split() takes a shortcut for ASCII text; the same text with one non-ASCII
    # character appended goes the general way and must agree on the rest
    text = "Hello, World_42! it's 3.14 -- a_b C++ x86-64 _under_ MiXeD"
    assert split(text) == split(text + " é")[:-1]


def test_stop_words_and_stemming():
    pytest.importorskip("Stemmer")
    a = Analyzer(stemmer="english", stop_words="english")
    assert a.tokens("The cats were running and they didn't like the dogs' toys") == [
        "cat", "run", "didn", "t", "like", "dog", "toy"]
    f = Analyzer(stemmer="french", stop_words="french")
    # "était" is a stop word, accent-insensitively; stems are folded after stemming
    assert f.tokens("L'été était chaud, les enfants jouaient ETAIT") == ["ete", "chaud", "enfant", "jou"]


def test_stop_words_without_stemming():
    a = Analyzer(stop_words="english")
    assert a.tokens("This is THE end of it") == ["end"]
    assert "english" in stop_word_languages() and "french" in stop_word_languages()
    words = stop_word_set("english")
    assert {"the", "a", "and", "ourselves"} <= words
    assert "don" not in words and "t" not in words  # "don't" is two tokens: left out, pieces not stop words
    assert all(split(w) == [w] for w in words)


def test_every_stop_list_loads_and_is_folded():
    for language in stop_word_languages():
        words = stop_word_set(language)
        assert len(words) > 20, language
        assert all(strip_accents(w) == w for w in words), language
        assert Analyzer(stop_words=language).tokens(" ".join(sorted(words))) == []


def test_stemming_without_pystemmer_says_what_to_install():
    r = run_python("""
        import sys
        sys.modules["Stemmer"] = None  # as if PyStemmer were not installed
        from needle_mm._text import Analyzer
        from needle_mm.errors import MissingDependencyError, NeedleError
        try:
            Analyzer(stemmer="english")
        except MissingDependencyError as exc:
            assert isinstance(exc, NeedleError) and "pip install needle-mm[text]" in str(exc), exc
        else:
            raise AssertionError("no error")
        # read from a file: fine until a text is analysed with it
        a = Analyzer.from_json({"version": 1, "fold_accents": True, "stemmer": "english", "stop_words": None},
                               where="catalog")
        try:
            a.tokens("running")
        except MissingDependencyError:
            pass
        else:
            raise AssertionError("no error")
        assert Analyzer(stop_words="english").tokens("the end") == ["end"]  # stop words need no PyStemmer
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_tokens_are_the_same_in_another_process():
    texts = ["Ünïcödé Straße", "東京都 ٣", "The cats' toys, don't"]
    r = run_python("""
        import json, sys
        from needle_mm._text import Analyzer, term_key
        a = Analyzer()
        print(json.dumps([[(t, term_key(t)) for t in a.tokens(x)] for x in json.loads(sys.argv[1])]))
    """, __import__("json").dumps(texts), env={"PYTHONHASHSEED": "12345"})
    assert r.returncode == 0, r.stderr
    here = [[[t, term_key(t)] for t in Analyzer().tokens(x)] for x in texts]
    assert __import__("json").loads(r.stdout) == here


def test_term_keys():
    assert term_key("cat") == int.from_bytes(__import__("hashlib").blake2b(b"cat", digest_size=8).digest(), "little")
    keys = term_keys(["cat", "dog", "cat"])
    assert keys.dtype == np.uint64 and keys[0] == keys[2] != keys[1]
    assert term_keys([]).shape == (0,)
    keys, tfs, length = Analyzer().term_counts("the cat and the hat and the bat")
    assert length == 8 and np.all(np.diff(keys.astype(np.float64)) > 0) and tfs.dtype == np.uint32
    assert dict(zip(keys.tolist(), tfs.tolist())) == {term_key("the"): 3, term_key("and"): 2, term_key("cat"): 1,
                                                     term_key("hat"): 1, term_key("bat"): 1}
    keys, tfs, length = Analyzer().term_counts("")
    assert keys.shape == tfs.shape == (0,) and length == 0


def test_analyzer_is_a_value():
    a = Analyzer(stop_words="english")
    assert a == Analyzer(stop_words="english") and hash(a) == hash(Analyzer(stop_words="english"))
    assert a != Analyzer()
    b = pickle.loads(pickle.dumps(a))
    assert b == a and b.tokens("the end") == ["end"]
    with pytest.raises(Exception):
        a.stop_words = None  # frozen
    with pytest.raises(errors.InvalidArgumentError):
        a.tokens(b"bytes")
    with pytest.raises(errors.InvalidArgumentError):
        a.tokens(None)


# ----------------------------------------------------------------- analysis: the JSON record

def test_json_round_trip():
    for a in (Analyzer(), Analyzer(fold_accents=False), Analyzer(stop_words="german")):
        d = a.to_json()
        assert __import__("json").loads(__import__("json").dumps(d)) == d
        assert Analyzer.from_json(d) == a and Analyzer.from_json(d, where="catalog") == a
    assert Analyzer().to_json() == {"version": 1, "fold_accents": True, "stemmer": None, "stop_words": None}


GOOD = {"version": 1, "fold_accents": True, "stemmer": None, "stop_words": None}
HOSTILE = [
    None, [], "analyzer", 1, [("version", 1)],
    {},
    {**GOOD, "extra": 1},
    {**GOOD, 1: 2},
    {k: v for k, v in GOOD.items() if k != "stop_words"},
    {**GOOD, "version": 0},
    {**GOOD, "version": "1"},
    {**GOOD, "version": True},
    {**GOOD, "version": 1.0},
    {**GOOD, "fold_accents": 1},
    {**GOOD, "fold_accents": "true"},
    {**GOOD, "fold_accents": None},
    {**GOOD, "stemmer": "klingon"},
    {**GOOD, "stemmer": ""},
    {**GOOD, "stemmer": 7},
    {**GOOD, "stemmer": ["english"]},
    {**GOOD, "stop_words": "klingon"},
    {**GOOD, "stop_words": "../../etc/passwd"},
    {**GOOD, "stop_words": "english.txt"},
    {**GOOD, "stop_words": True},
]


@pytest.mark.parametrize("d", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_json_from_a_file(d):
    with pytest.raises(errors.CorruptFileError, match="^catalog of docs: "):
        Analyzer.from_json(d, where="catalog of docs")


@pytest.mark.parametrize("d", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_json_from_a_user(d):
    with pytest.raises(errors.InvalidArgumentError):
        Analyzer.from_json(d)


def test_a_newer_version_in_a_file_says_upgrade():
    with pytest.raises(errors.UnsupportedVersionError, match="upgrade"):
        Analyzer.from_json({**GOOD, "version": 2}, where="catalog")
    with pytest.raises(errors.InvalidArgumentError):
        Analyzer.from_json({**GOOD, "version": 2})


@pytest.mark.parametrize("kwargs", [{"stemmer": "klingon"}, {"stemmer": 3}, {"stop_words": "klingon"},
                                    {"stop_words": b"english"}, {"fold_accents": 0}, {"fold_accents": "no"}])
def test_bad_constructor_arguments(kwargs):
    with pytest.raises(errors.InvalidArgumentError):
        Analyzer(**kwargs)


# ----------------------------------------------------------------- the chunk builder

from needle_mm._index.text import (BM25Stats, TextSource, bm25_stats, bm25_topk, build_text_chunk,  # noqa: E402
                                   chunk_impacts, corpus_stats, document_frequencies, METHODS, WINDOW)
from needle_mm._kernels.api import check_text_chunk  # noqa: E402

NONE = np.zeros(0, dtype=np.uint8)


def inverted_by_hand(texts, analyzer, start=0):
    """{key: [(slot, tf), ...]} and lengths, the slow obvious way."""
    lists, lengths = {}, []
    for i, text in enumerate(texts):
        terms = analyzer.tokens(text) if text is not None else []
        lengths.append(len(terms))
        for t in sorted(set(terms)):
            lists.setdefault(term_key(t), []).append((start + i, terms.count(t)))
    return lists, lengths


def test_build_matches_the_obvious_inversion():
    texts = ["the cat sat on the mat", None, "", "!!!", "The CAT, the hat and the bat", "mat mat mat", None, "zebra"]
    a = Analyzer()
    built = build_text_chunk(texts, a, start=100)
    c = built.chunk
    lists, lengths = inverted_by_hand(texts, a, start=100)
    assert (c.start, c.count) == (100, len(texts))
    assert built.doc_lengths.tolist() == lengths and built.doc_lengths.dtype == np.uint32
    assert c.keys.tolist() == sorted(lists)
    assert c.keys.dtype == np.uint64 and c.list_offsets.dtype == np.uint64
    assert c.slots.dtype == np.uint32 and c.tfs.dtype == np.uint32
    for j, key in enumerate(c.keys.tolist()):
        lo, hi = int(c.list_offsets[j]), int(c.list_offsets[j + 1])
        assert list(zip(c.slots[lo:hi].tolist(), c.tfs[lo:hi].tolist())) == lists[key]
    vocab = built.vocabulary
    assert vocab.keys.tolist() == c.keys.tolist()  # no collision among these
    assert [term_key(t) for t in vocab.terms] == vocab.keys.tolist()
    assert set(vocab.terms) == {t for x in texts if x for t in a.tokens(x)}
    assert check_text_chunk(c.keys, c.list_offsets, c.slots, c.tfs, np.int64(100), np.int64(len(texts))) == 0
    for arr in (c.keys, c.list_offsets, c.slots, c.tfs, built.doc_lengths):
        assert not arr.flags.writeable


def test_build_of_nothing():
    for texts in ([], [None, None], ["", "..."]):
        built = build_text_chunk(texts, Analyzer())
        c = built.chunk
        assert c.keys.shape == (0,) and c.list_offsets.tolist() == [0] and c.slots.shape == c.tfs.shape == (0,)
        assert built.doc_lengths.tolist() == [0] * len(texts) and built.vocabulary.terms == ()
        assert check_text_chunk(c.keys, c.list_offsets, c.slots, c.tfs, np.int64(0), np.int64(len(texts))) == 0
        d, i = bm25_topk([c], built.doc_lengths, len(texts), [["x"]], NONE, 5)
        assert (i == -1).all() and np.isinf(d).all()


def test_build_rejects_what_is_not_text():
    with pytest.raises(errors.InvalidArgumentError):
        build_text_chunk(["fine", 42], Analyzer())


def test_check_text_chunk_names_each_problem():
    c = build_text_chunk(["a b c", "b c d", "c d e"], Analyzer(), start=10).chunk

    def check(keys=c.keys, offsets=c.list_offsets, slots=c.slots, tfs=c.tfs, start=10, count=3):
        return check_text_chunk(keys, offsets, slots, tfs, np.int64(start), np.int64(count))

    assert check() == 0  # the positive twin
    assert check(keys=c.keys[::-1].copy()) == 1
    offsets = c.list_offsets.copy()
    offsets[1] = offsets[2] + 1
    assert check(offsets=offsets) == 2
    assert check(offsets=c.list_offsets[:-1].copy()) == 2
    assert check(tfs=c.tfs[:-1].copy()) == 2
    assert check(start=11) == 3 and check(count=2) == 3
    slots = c.slots.copy()
    lo = int(c.list_offsets[np.argmax(np.diff(c.list_offsets.astype(np.int64)))])  # a list of 2+ slots
    slots[lo], slots[lo + 1] = slots[lo + 1], slots[lo]
    assert check(slots=slots) == 3
    tfs = c.tfs.copy()
    tfs[0] = 0
    assert check(tfs=tfs) == 4


# ----------------------------------------------------------------- BM25 against bm25s

def _bm25s():
    return pytest.importorskip("bm25s")


def reference_scores(doc_tokens, query_tokens, k1=1.2, b=0.75):
    """bm25s's Lucene BM25 (float64) of every document for each query, times (k1 + 1):
    bm25s drops Lucene's constant (k1 + 1) factor, which leaves rankings as they are."""
    bm25s = _bm25s()
    ref = bm25s.BM25(method="lucene", k1=k1, b=b, dtype="float64")
    ref.index(doc_tokens, show_progress=False)
    out = []
    for q in query_tokens:
        known = [t for t in q if t in ref.vocab_dict]
        out.append(ref.get_scores(known) * (k1 + 1) if known else np.zeros(len(doc_tokens)))
    return out


def agreement(ours_ids, ours_d, ref_scores, k, rtol=1e-6, score_rtol=1e-9):
    """Top-k overlap ignoring ties at the cut: a reference hit counts as found
    if ours has it, or if its score ties (within rtol) the k-th best score."""
    found = total = 0
    for ids, d, scores in zip(ours_ids, ours_d, ref_scores):
        positive = np.flatnonzero(scores > 0)
        order = positive[np.lexsort((positive, -scores[positive]))][:k]
        if len(order) == 0:
            assert (ids == -1).all()
            continue
        cut = scores[order[-1]]
        got = set(ids[ids >= 0].tolist())
        assert len(got) == len(order)
        for slot in order:
            total += 1
            found += slot in got or abs(scores[slot] - cut) <= rtol * cut
        # our distances are the reference scores of our hits, negated
        hit = ids[ids >= 0]
        np.testing.assert_allclose(-d[: len(hit)], scores[hit], rtol=score_rtol)
    return found / max(total, 1)


@pytest.fixture(scope="module")
def corpus(demo_data):
    """The 3,000 shipped real sentences (tests/conftest.py: demo_data), analysed,
    as one chunk and as three chunks; queries: the 12 shipped query sentences,
    and 200 snippets of corpus sentences (3-6 of their words)."""
    texts = demo_data["texts"]
    a = Analyzer()
    rng = np.random.default_rng(21)
    queries = [str(q) for q in __import__("needle_mm.ops.demo", fromlist=["load_demo_data"]).load_demo_data()["query_texts"]]
    for i in rng.choice(len(texts), 200, replace=False):
        words = texts[i].split()
        at = rng.integers(0, max(1, len(words) - 3))
        queries.append(" ".join(words[at:at + rng.integers(3, 7)]))
    built = build_text_chunk(texts, a)
    parts = [build_text_chunk(texts[lo:hi], a, start=lo) for lo, hi in ((0, 1000), (1000, 1700), (1700, len(texts)))]
    return {"texts": texts, "analyzer": a, "tokens": [a.tokens(t) for t in texts], "built": built,
            "chunks": [p.chunk for p in parts], "lengths": built.doc_lengths,
            "queries": [a.tokens(q) for q in queries]}


def test_bm25_top10_equals_bm25s(corpus):
    n = len(corpus["texts"])
    assert corpus["lengths"].min() > 0  # every sentence has a token: bm25s's N is ours
    d, i = bm25_topk([corpus["built"].chunk], corpus["lengths"], n, corpus["queries"], NONE, 10)
    ref = reference_scores(corpus["tokens"], corpus["queries"])
    assert agreement(i, d, ref, 10) >= 0.99
    # deterministic ranking: descending score, ties by slot ascending
    for ids, dist in zip(i, d):
        live = ids >= 0
        pairs = list(zip(dist[live].tolist(), ids[live].tolist()))
        assert pairs == sorted(pairs)


def test_chunks_batches_impacts_and_threads_agree(corpus):
    n = len(corpus["texts"])
    qs = corpus["queries"]
    one = bm25_topk([corpus["built"].chunk], corpus["lengths"], n, qs, NONE, 10)
    three = bm25_topk(corpus["chunks"], corpus["lengths"], n, qs, NONE, 10)
    assert np.array_equal(one[1], three[1]) and np.allclose(one[0], three[0], rtol=1e-12)
    singles = [bm25_topk(corpus["chunks"], corpus["lengths"], n, [q], NONE, 10) for q in qs[:40]]
    assert np.array_equal(np.concatenate([s[1] for s in singles]), three[1][:40])
    stats = bm25_stats([TextSource(corpus["chunks"], corpus["lengths"])], qs)
    impacts = [chunk_impacts(c, corpus["lengths"], 1.2, 0.75, stats.avgdl) for c in corpus["chunks"]]
    plain = bm25_topk(corpus["chunks"], corpus["lengths"], n, qs, NONE, 10, stats=stats)
    for method in METHODS:
        # impacts are the very values the formula path multiplies by: the same scores, bit for bit
        fast = bm25_topk(corpus["chunks"], corpus["lengths"], n, qs, NONE, 10, stats=stats, impacts=impacts,
                         method=method)
        assert np.array_equal(fast[0], plain[0]) and np.array_equal(fast[1], plain[1])


def test_parallel_kernels_equal_serial(corpus, monkeypatch):
    from needle_mm._index import text as index_text
    n = len(corpus["texts"])
    qs = corpus["queries"][:64]
    monkeypatch.setattr(index_text, "get_num_threads", lambda: 1)
    serial = bm25_topk(corpus["chunks"], corpus["lengths"], n, qs, NONE, 10)
    monkeypatch.setattr(index_text, "get_num_threads", lambda: 2)
    parallel = bm25_topk(corpus["chunks"], corpus["lengths"], n, qs, NONE, 10)
    assert np.array_equal(serial[1], parallel[1]) and np.array_equal(serial[0], parallel[0])


@pytest.fixture(scope="module")
def wide(demo_data):
    """The shipped sentences repeated (each copy shuffled, every tenth one cut short, some empty) to
    70,000 slots (many windows), in chunks whose bounds fall inside windows; its 3,000 distinct
    sentences repeat, so many documents tie; queries of one to forty terms, rare and common."""
    rng = np.random.default_rng(2121)
    base = demo_data["texts"]
    texts = []
    while len(texts) < 70_000:
        for j in rng.permutation(len(base)):
            t = base[j]
            texts.append(None if j % 97 == 0 else t[: len(t) // 3] if j % 10 == 0 else t)
    a = Analyzer()
    bounds = [0, 5000, 3 * WINDOW + 17, len(texts)]
    parts = [build_text_chunk(texts[lo:hi], a, start=lo) for lo, hi in zip(bounds, bounds[1:])]
    lengths = np.concatenate([p.doc_lengths for p in parts])
    vocab = sorted({t for p in parts for t in p.vocabulary.terms})
    queries = [[t] for t in rng.choice(vocab, 20)] + [["the"], ["the", "and", "of", "a"]]
    queries += [a.tokens(base[j]) for j in rng.choice(len(base), 40)]
    queries += [list(rng.choice(vocab, 40)), a.tokens(" ".join(base[:6]))]
    return {"texts": texts, "chunks": [p.chunk for p in parts], "lengths": lengths, "queries": queries}


@pytest.mark.parametrize("k", [1, 10, 100, 2000])
def test_window_kernels_equal_the_reference_bit_for_bit(wide, k):
    """The window kernel against the whole-source accumulation, over several windows and chunk
    bounds inside them, with and without impacts, deletes and a filter: the same scores, slots and
    order (ties by slot), including k above the matches."""
    n = len(wide["texts"])
    qs = wide["queries"]
    rng = np.random.default_rng(k)
    tomb = packed(rng.choice(n, n // 7, replace=False).tolist(), n)
    odd = packed(range(0, n, 2), n)
    stats = bm25_stats([TextSource(wide["chunks"], wide["lengths"], tomb)], qs)
    impacts = [chunk_impacts(c, wide["lengths"], 1.2, 0.75, stats.avgdl) for c in wide["chunks"]]
    for excluded in (NONE, tomb, tomb | odd):
        ref = bm25_topk(wide["chunks"], wide["lengths"], n, qs, excluded, k, stats=stats, method="accumulate")
        assert (ref[1] >= 0).any()
        for kw in ({}, {"impacts": impacts}):
            got = bm25_topk(wide["chunks"], wide["lengths"], n, qs, excluded, k, stats=stats, method="windows", **kw)
            assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])
            one = [bm25_topk(wide["chunks"], wide["lengths"], n, [q], excluded, k, stats=stats, **kw) for q in qs[:25]]
            assert np.array_equal(np.concatenate([o[1] for o in one]), ref[1][:25])
        if excluded.shape[0]:
            dead = np.unpackbits(excluded, bitorder="little")[:n].astype(bool)
            assert not dead[ref[1][ref[1] >= 0]].any()


@pytest.mark.parametrize("window", [8, 64, 1000])
def test_small_windows_equal_the_reference(corpus, monkeypatch, window):
    """Windows far smaller than a chunk (and not dividing its bounds): every cursor crosses many."""
    from needle_mm._index import text as index_text
    n = len(corpus["texts"])
    qs = corpus["queries"]
    tomb = packed(range(3, n, 11), n)
    ref = bm25_topk(corpus["chunks"], corpus["lengths"], n, qs, tomb, 25, method="accumulate")
    monkeypatch.setattr(index_text, "WINDOW", window)
    got = bm25_topk(corpus["chunks"], corpus["lengths"], n, qs, tomb, 25)
    assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])


def test_bad_method_is_named(corpus):
    with pytest.raises(errors.InvalidArgumentError, match="method"):
        bm25_topk(corpus["chunks"], corpus["lengths"], len(corpus["texts"]), [["the"]], NONE, 10, method="fast")


def packed(excluded_slots, n):
    bits = np.zeros(n, dtype=bool)
    bits[list(excluded_slots)] = True
    return np.packbits(bits, bitorder="little")


def test_deleted_records_leave_the_statistics(corpus):
    """Deletions change N, df and avgdl: the reference is built over the survivors only."""
    n = len(corpus["texts"])
    rng = np.random.default_rng(5)
    dead = set(rng.choice(n, n // 5, replace=False).tolist())
    tomb = packed(dead, n)
    qs = corpus["queries"]
    source = TextSource(corpus["chunks"], corpus["lengths"], tomb)
    stats = bm25_stats([source], qs)
    alive = [s for s in range(n) if s not in dead]
    assert stats.n_docs == len(alive)
    assert stats.avgdl == pytest.approx(np.mean([len(corpus["tokens"][s]) for s in alive]))
    d, i = bm25_topk(corpus["chunks"], corpus["lengths"], n, qs, tomb, 10, stats=stats)
    assert not set(i[i >= 0].tolist()) & dead
    ref = reference_scores([corpus["tokens"][s] for s in alive], qs)
    back = np.array(alive)
    # map the reference's positions back to slots: its scores as an array over slots
    ref_by_slot = []
    for scores in ref:
        full = np.zeros(n)
        full[back] = scores
        ref_by_slot.append(full)
    assert agreement(i, d, ref_by_slot, 10) >= 0.99
    # stats=None: the same statistics, from this one source and its bitmap
    d2, i2 = bm25_topk(corpus["chunks"], corpus["lengths"], n, qs, tomb, 10)
    assert np.array_equal(i, i2)


def test_a_filter_narrows_without_rescoring(corpus):
    """Statistics from the tombstones alone; a filter's bitmap only hides records."""
    n = len(corpus["texts"])
    qs = corpus["queries"][:50]
    hidden = packed(range(0, n, 2), n)  # the filter keeps odd slots
    stats = bm25_stats([TextSource(corpus["chunks"], corpus["lengths"])], qs)
    full_d, full_i = bm25_topk(corpus["chunks"], corpus["lengths"], n, qs, NONE, n, stats=stats)
    d, i = bm25_topk(corpus["chunks"], corpus["lengths"], n, qs, hidden, 10, stats=stats)
    for row in range(len(qs)):
        keep = (full_i[row] >= 0) & (full_i[row] % 2 == 1)
        want = full_i[row][keep][:10]
        assert i[row][: len(want)].tolist() == want.tolist()
        assert np.array_equal(d[row][: len(want)], full_d[row][keep][:10])


def test_zero_hit_and_empty_queries(corpus):
    n = len(corpus["texts"])
    qs = [["qwertyuiopasdf"], [], ["zzzzzz", "xxxxxxyyy"]]
    d, i = bm25_topk(corpus["chunks"], corpus["lengths"], n, qs, NONE, 10)
    assert (i == -1).all() and np.isinf(d).all() and (d > 0).all()
    d, i = bm25_topk(corpus["chunks"], corpus["lengths"], n, [], NONE, 10)
    assert d.shape == i.shape == (0, 10)
    d, i = bm25_topk(corpus["chunks"], corpus["lengths"], n, corpus["queries"][:3], NONE, 0)
    assert d.shape == i.shape == (3, 0)
    # everything deleted: N = 0, nothing matches
    d, i = bm25_topk(corpus["chunks"], corpus["lengths"], n, corpus["queries"][:3], packed(range(n), n), 10)
    assert (i == -1).all()


def test_fewer_matches_than_k(corpus):
    n = len(corpus["texts"])
    term = next(t for t in corpus["built"].vocabulary.terms if sum(t in d for d in corpus["tokens"]) == 3)
    d, i = bm25_topk(corpus["chunks"], corpus["lengths"], n, [[term]], NONE, 10)
    assert sorted(i[0][:3].tolist()) == [s for s, toks in enumerate(corpus["tokens"]) if term in toks]
    assert (i[0][3:] == -1).all() and np.isinf(d[0][3:]).all() and np.isfinite(d[0][:3]).all()


def test_repeated_query_terms_count_per_occurrence(corpus):
    """As in bm25s (and Lucene's BooleanQuery): "cat cat dog" weighs cat twice."""
    n = len(corpus["texts"])
    qs = [["good", "good", "movie"], ["movie", "good", "good"], ["the", "the", "the", "film"]]
    d, i = bm25_topk(corpus["chunks"], corpus["lengths"], n, qs, NONE, 10)
    ref = reference_scores(corpus["tokens"], qs)
    assert agreement(i, d, ref, 10) >= 0.99
    assert np.array_equal(d[0], d[1]) and np.array_equal(i[0], i[1])  # word order does not matter
    once = bm25_topk(corpus["chunks"], corpus["lengths"], n, [["good", "movie"]], NONE, 10)
    assert not np.array_equal(once[0][0], d[0])


def test_rare_and_common_terms_both_match_brute_force(corpus):
    """Few postings accumulate sparsely (marks), many densely: both exact."""
    n = len(corpus["texts"])
    vocab = corpus["built"].vocabulary.terms
    df = {t: sum(t in set(toks) for toks in corpus["tokens"]) for t in ("the", "a", "of", "movie", "film")}
    rare = [t for t in vocab if 1 < sum(t in toks for toks in corpus["tokens"][:600]) < 4][:5]
    qs = [rare, ["the", "of", "a"], [rare[0], "the"], list(df)]
    d, i = bm25_topk(corpus["chunks"], corpus["lengths"], n, qs, NONE, 10)
    assert agreement(i, d, reference_scores(corpus["tokens"], qs), 10) == 1.0


def test_ties_break_by_slot():
    texts = ["red fox", "blue fish", "red fox", "red fox", "green fox"]
    built = build_text_chunk(texts, Analyzer())
    d, i = bm25_topk([built.chunk], built.doc_lengths, 5, [["red"], ["fox"]], NONE, 5)
    assert i[0].tolist() == [0, 2, 3, -1, -1] and d[0][0] == d[0][1] == d[0][2] < 0
    assert i[1][:3].tolist() == [0, 2, 3] and i[1][3] == 4 and i[1][4] == -1


def test_statistics_helpers(corpus):
    n = len(corpus["texts"])
    # two sources sharing one lengths array would count every record twice: each excludes the other's slots
    first = packed(range(1700, n), n)
    second = packed(range(0, 1700), n)
    sources = [TextSource(corpus["chunks"][:2], corpus["lengths"], first),
               TextSource(corpus["chunks"][2:], corpus["lengths"], second)]
    docs, total = corpus_stats(sources)
    assert docs == n and total == sum(len(t) for t in corpus["tokens"])
    keys = term_keys(["the", "movie", "qwertyuiop"])
    df = document_frequencies(sources, keys)
    assert df.tolist() == [sum(w in set(t) for t in corpus["tokens"]) for w in ("the", "movie", "qwertyuiop")]
    stats = bm25_stats(sources, [["the", "movie"]])
    assert stats.n_docs == n and stats.df[term_key("the")] == df[0]
    assert stats.idf(term_key("the")) == pytest.approx(math.log(1 + (n - df[0] + 0.5) / (df[0] + 0.5)))
    assert stats.idf(term_key("qwertyuiop")) == 0.0


@pytest.mark.parametrize("kwargs", [{"k": -1}, {"k": 1.5}, {"k": True}, {"k1": -0.1}, {"k1": float("nan")},
                                    {"b": 1.5}, {"b": -0.1}, {"b": "0.75"}])
def test_bad_bm25_arguments(corpus, kwargs):
    args = {"k": 10, "k1": 1.2, "b": 0.75, **kwargs}
    with pytest.raises(errors.InvalidArgumentError):
        bm25_topk(corpus["chunks"], corpus["lengths"], len(corpus["texts"]), [["the"]], NONE, **args)


def test_short_lengths_or_bitmap_are_refused(corpus):
    n = len(corpus["texts"])
    with pytest.raises(errors.InvalidArgumentError):
        bm25_topk(corpus["chunks"], corpus["lengths"][:-1], n, [["the"]], NONE, 10)
    with pytest.raises(errors.InvalidArgumentError):
        bm25_topk(corpus["chunks"], corpus["lengths"], n, [["the"]], np.zeros(3, np.uint8), 10)
    with pytest.raises(errors.InvalidArgumentError):
        bm25_topk(corpus["chunks"], corpus["lengths"], n, [["the"]], NONE, 10,
                  impacts=[np.zeros(1, np.float32)])


def test_hostile_statistics_do_not_crash(corpus):
    """Statistics that do not add up (df > N, N = 1) give some ranking, never a crash or a repeat."""
    n = len(corpus["texts"])
    key = term_key("the")
    for stats in (BM25Stats(1, 10.0, {key: 10**9}), BM25Stats(10**12, 1e-300, {key: 1}),
                  BM25Stats(5, float("inf"), {key: 3})):
        d, i = bm25_topk(corpus["chunks"], corpus["lengths"], n, [["the"]], NONE, 10, stats=stats)
        hit = i[0][i[0] >= 0]
        assert len(set(hit.tolist())) == len(hit)
    # and the scratch is clean afterwards: a normal query answers as before
    good = bm25_topk(corpus["chunks"], corpus["lengths"], n, [["movie"]], NONE, 10)
    again = bm25_topk([corpus["built"].chunk], corpus["lengths"], n, [["movie"]], NONE, 10)
    assert np.array_equal(good[1], again[1])
