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
