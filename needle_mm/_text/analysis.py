"""Text analysis: the one function from a text to its terms, the same in every process.

A text index is only as good as the agreement between the terms a document
was indexed under and the terms its queries are analysed into, possibly in
another process, years later. So the rules are few, fixed and written down
here, an :class:`Analyzer` is a frozen value whose :meth:`Analyzer.to_json`
the file records, and a change of rules gets a new ``version``.

The rules, applied in this order:

1. **Normalisation**: Unicode NFKC, then ``str.casefold``, then NFKC again
   where casefolding left a non-normalised string (``"ﬁ"`` -> ``"fi"``,
   ``"Straße"`` -> ``"strasse"``, full-width ``"Ａ１"`` -> ``"a1"``). ASCII
   text takes the equivalent shortcut ``str.lower``.
2. **Tokens**: maximal runs of letters, digits and combining marks of any
   script (Python's ``\\w`` without the underscore, plus every character of
   Unicode category M, so Devanagari or Thai vowel signs stay inside their
   word). Everything else separates tokens: spaces, punctuation, symbols,
   the underscore (``snake_case`` -> ``snake``, ``case``), hyphens
   (``state-of-the-art`` -> four tokens), apostrophes (``don't`` -> ``don``,
   ``t``; ``l'homme`` -> ``l``, ``homme``, so a query for ``dog`` finds
   ``dog's``), the decimal point (``3.14`` -> ``3``, ``14``). Soft hyphen,
   zero-width (non-)joiner and word joiner (U+00AD, U+200C, U+200D, U+2060)
   join, and are dropped from the token. Han ideographs and Hiragana are
   one token per character (written without spaces; as Lucene's
   StandardTokenizer does), Katakana and Hangul runs are words. Scripts
   written without spaces and without such a rule (Thai, Lao, Khmer,
   Myanmar) come out as runs between spaces and punctuation: no dictionary
   segmentation.
3. **Digits**: decimal digits of every script become ASCII ``0``-``9``
   (Arabic-Indic ``"٣"`` matches ``"3"``); other numerals (``"三"``,
   Roman ``"Ⅻ"`` after NFKC ``"xii"``) are left as they are.
4. **Stop words** (optional, per language): a token is dropped when it is
   on the language's list, compared after accent folding when accents are
   folded (so ``"ete"`` is dropped like ``"été"``). The lists are the
   Snowball project's (BSD, shipped in ``stopwords/``, credited there),
   each entry analysed by rules 1-3; entries the tokenizer splits (English
   contractions such as ``don't``) can never equal a token and are left
   out, and their pieces are not stop words.
5. **Stemming** (optional, per language): the Snowball stemmer of that
   language (PyStemmer, the ``[text]`` extra), applied to the case-folded
   token before accents are folded, since stemmers read accents
   (French, Spanish, ...).
6. **Accent folding** (on by default): the token is decomposed (NFD), every
   nonspacing mark (category Mn) that follows a Latin, Greek or Cyrillic
   letter is dropped, the rest is recomposed (NFC), and eight letters that
   do not decompose are mapped: ø->o, ł->l, đ->d, ħ->h, ı->i, ŧ->t,
   æ->ae, œ->oe. Marks of other scripts (Devanagari's virama, Arabic's
   harakat, Hebrew's points) are kept: there they are part of the spelling.
   ``"Ünïcödé"`` -> ``"unicode"``, ``"Ἀθῆναι"`` -> ``"αθηναι"``,
   ``"ёлка"`` -> ``"елка"`` (and ``"й"`` -> ``"и"``).

A token that ends up empty is dropped. By default nothing is removed and
nothing stemmed.

What this does not promise: the rules use Python's Unicode database
(``unicodedata.unidata_version``, :func:`environment`), so a character that
a later Unicode version assigns or reclassifies may tokenise differently
under a newer Python, and a new PyStemmer (a new Snowball release) may stem
a few words differently; a writer that cares records :func:`environment`
beside the analyzer's JSON and warns when a reader's differs.

Terms are keyed by :func:`term_key`: the first 8 bytes of BLAKE2b (digest
size 8) over the term's UTF-8, as a little-endian uint64. Keys of ``V``
distinct terms collide with probability about ``V**2 / 2**65`` (a million
terms: 3e-8; ten million: 3e-6); two colliding terms share one posting
list, which the vocabulary (every term with its key) makes visible.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import threading
import unicodedata
from importlib import resources

import numpy as np

from ..errors import CorruptFileError, InvalidArgumentError, MissingDependencyError, UnsupportedVersionError

ANALYZER_VERSION = 1  # the rules above; a change of any of them is a new version

# The Snowball algorithms PyStemmer 3 ships (Stemmer.algorithms()): fixed here so
# an analyzer validates the same with or without PyStemmer installed.
STEMMER_LANGUAGES = frozenset({
    "arabic", "armenian", "basque", "catalan", "czech", "danish", "dutch", "dutch_porter", "english", "esperanto",
    "estonian", "finnish", "french", "german", "greek", "hindi", "hungarian", "indonesian", "irish", "italian",
    "lithuanian", "nepali", "norwegian", "persian", "polish", "porter", "portuguese", "romanian", "russian",
    "serbian", "sesotho", "spanish", "swedish", "tamil", "turkish", "yiddish"})

# One token per character (rule 2): Hiragana, CJK Unified Ideographs Extension A,
# the Unified Ideographs, the Compatibility Ideographs, and planes 2-3 (Extensions B-H).
_SINGLE = "\u3040-\u309f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff"
_JOINERS = "\u00ad\u200c\u200d\u2060"
_FOLDING_SCRIPTS = ("LATIN ", "GREEK ", "CYRILLIC ")
_LETTERS_WITHOUT_DECOMPOSITION = str.maketrans({"ø": "o", "ł": "l", "đ": "d", "ħ": "h", "ı": "i", "ŧ": "t",
                                                "æ": "ae", "œ": "oe"})
_CACHE_LIMIT = 1 << 20  # distinct raw tokens memoised per analyzer; the memo starts over past it
_KEY_CACHE_LIMIT = 1 << 20

_ASCII_TOKEN = re.compile("[a-z0-9]+")  # rule 2 on lower-cased ASCII

_JSON_KEYS = ("version", "fold_accents", "stemmer", "stop_words")


@functools.lru_cache(maxsize=None)
def _tables() -> tuple[re.Pattern, dict]:
    """The token pattern and the translation of joiners and non-ASCII digits,
    built once per process from the Unicode database (about 30 ms: planes 0,
    1 and 14 hold every combining mark and decimal digit; planes 2-3 hold
    ideographs only)."""
    marks, translate = [], {ord(j): None for j in _JOINERS}
    start = None
    for cp in [*range(0x20000), *range(0xE0000, 0xE1000)]:
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if cat == "Nd" and cp >= 0x80:
            translate[cp] = chr(0x30 + unicodedata.decimal(ch))
        if cat[0] == "M":
            if start is None:
                start = cp
        elif start is not None:
            marks.append((start, cp - 1))
            start = None
    if start is not None:
        marks.append((start, cp))
    mark_class = "".join(chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in marks)
    # a token: one character of _SINGLE with its marks, or a maximal run of word characters
    # (minus "_" and _SINGLE), marks and joiners, written so the common case (a run of
    # letters) matches one character class at a time: (?:W|M)+ measured 40 % slower
    word, join = f"[^\\W_{_SINGLE}]", f"[{mark_class}{_JOINERS}]"
    pattern = re.compile(f"[{_SINGLE}][{mark_class}]*|{word}+(?:{join}+{word}*)*|{join}+(?:{word}+{join}*)*")
    return pattern, translate


def normalize(text: str) -> str:
    """Rule 1: NFKC, casefold, NFKC again where casefolding broke it."""
    if text.isascii():
        return text.lower()  # ASCII's casefold, and already NFKC
    folded = unicodedata.normalize("NFKC", text).casefold()
    if not unicodedata.is_normalized("NFKC", folded):
        folded = unicodedata.normalize("NFKC", folded)
    return folded


@functools.lru_cache(maxsize=4096)
def _mark_folds_after(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith(_FOLDING_SCRIPTS)


def strip_accents(token: str) -> str:
    """Rule 6: drop the nonspacing marks that follow Latin, Greek and Cyrillic
    letters, map the eight letters that do not decompose."""
    if token.isascii():
        return token
    out, drop = [], False
    for ch in unicodedata.normalize("NFD", token):
        if unicodedata.category(ch) == "Mn":
            if drop:
                continue
        else:
            drop = _mark_folds_after(ch)
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out)).translate(_LETTERS_WITHOUT_DECOMPOSITION)


def split(text: str) -> list[str]:
    """Rules 1-3: the raw tokens of ``text`` (normalised, digits in ASCII),
    before stop words, stemming and accent folding."""
    if text.isascii():  # the same rules, for ASCII: no marks, joiners or other digits
        return _ASCII_TOKEN.findall(text.lower())
    pattern, translate = _tables()
    tokens = [t if t.isascii() else t.translate(translate) for t in pattern.findall(normalize(text))]
    return [t for t in tokens if t]  # a run of joiners alone is no token


def stop_word_languages() -> tuple[str, ...]:
    """The languages with a shipped stop-word list (the Snowball project's)."""
    return _STOP_LANGUAGES


def _list_stop_languages() -> tuple[str, ...]:
    folder = resources.files(__package__).joinpath("stopwords")
    return tuple(sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".txt")))


_STOP_LANGUAGES = _list_stop_languages()


@functools.lru_cache(maxsize=None)
def stop_word_set(language: str, folded: bool = True) -> frozenset[str]:
    """The stop words of ``language`` as tokens (rule 4): each entry of the
    list analysed by rules 1-3 and, if ``folded``, accent-folded; entries
    that are not one token are left out."""
    text = resources.files(__package__).joinpath("stopwords", f"{language}.txt").read_text(encoding="utf-8")
    out = set()
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        tokens = split(line.strip())
        if len(tokens) == 1:
            out.add(strip_accents(tokens[0]) if folded else tokens[0])
    return frozenset(out)


def environment() -> dict:
    """What the rules depend on besides this code: Python's Unicode database
    version and PyStemmer's version (None when it is not installed)."""
    try:
        import Stemmer
        stemmer = str(Stemmer.version())
    except ImportError:
        stemmer = None
    return {"unicode": unicodedata.unidata_version, "pystemmer": stemmer}


_key_cache: dict[str, int] = {}


def term_key(term: str) -> int:
    """The 64-bit key of a term: BLAKE2b-64 over its UTF-8, little-endian."""
    key = _key_cache.get(term)
    if key is None:
        key = int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest(), "little")
        if len(_key_cache) >= _KEY_CACHE_LIMIT:
            _key_cache.clear()
        _key_cache[term] = key
    return key


def term_keys(terms) -> np.ndarray:
    """:func:`term_key` of each term, as uint64, in the order given."""
    return np.array(term_key_list(terms), dtype=np.uint64)


def term_key_list(terms) -> list[int]:
    """:func:`term_key` of each term, as Python ints, in the order given (a query's few terms)."""
    get = _key_cache.get
    return [get(t) or term_key(t) for t in terms]  # (a key of 0 is just recomputed)


def _load_stemmer(language: str):
    try:
        import Stemmer
    except ImportError:
        raise MissingDependencyError(
            f"stemming ({language!r}) needs PyStemmer, which is not installed: pip install needle-mm[text]") from None
    return Stemmer.Stemmer(language)


@dataclasses.dataclass(frozen=True)
class Analyzer:
    """How texts become terms: the rules of this module with their options.

    Parameters
    ----------
    stemmer : str or None
        A Snowball language (:data:`STEMMER_LANGUAGES`, e.g. ``"english"``) to
        stem with; needs PyStemmer (``pip install needle-mm[text]``). None: no
        stemming (the default).
    stop_words : str or None
        A language with a shipped stop-word list (:func:`stop_word_languages`)
        whose words are dropped. None: nothing dropped (the default).
    fold_accents : bool
        Fold accents (rule 6); True by default.

    Bad arguments raise :class:`~needle_mm.errors.InvalidArgumentError`;
    asking for stemming without PyStemmer raises
    :class:`~needle_mm.errors.MissingDependencyError`. An analyzer read from a
    file (:meth:`from_json` with ``where``) checks for PyStemmer only when it
    first analyses a text, so a file is readable (vector search, inspection)
    where PyStemmer is not installed.

    Instances are immutable and safe to share between threads; each memoises
    what it made of every distinct token (bounded), which is what makes a
    corpus of short texts fast.
    """

    stemmer: str | None = None
    stop_words: str | None = None
    fold_accents: bool = True

    def __post_init__(self):
        _check_options(self.stemmer, self.stop_words, self.fold_accents, InvalidArgumentError, "")
        self._start(_load_stemmer(self.stemmer) if self.stemmer else None)

    def _start(self, stemmer) -> None:
        # not fields: the state is derived from the fields, so equality and hashing ignore it
        object.__setattr__(self, "_memo", {})
        object.__setattr__(self, "_stemmer", stemmer)
        object.__setattr__(self, "_lock", threading.Lock())
        stop = stop_word_set(self.stop_words, self.fold_accents) if self.stop_words else frozenset()
        object.__setattr__(self, "_stop", stop)

    def __reduce__(self):
        return (Analyzer, (self.stemmer, self.stop_words, self.fold_accents))

    # ------------------------------------------------------------ analysis

    def _finish(self, raw: str) -> str | None:
        """Rules 4-6 for one raw token (memoised by the caller)."""
        folded = strip_accents(raw) if self.fold_accents else raw
        if folded in self._stop:
            return None
        if self.stemmer:
            with self._lock:  # a PyStemmer object is not safe to share between threads
                if self._stemmer is None:
                    object.__setattr__(self, "_stemmer", _load_stemmer(self.stemmer))
                stemmed = self._stemmer.stemWord(raw)
            folded = strip_accents(stemmed) if self.fold_accents else stemmed
        return folded or None

    def tokens(self, text: str) -> list[str]:
        """The terms of ``text``, in order, repeats kept (its length is the
        document length BM25 uses)."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"a text must be a str, got {type(text).__name__}")
        memo = self._memo
        out = []
        for raw in split(text):
            try:
                term = memo[raw]
            except KeyError:
                term = self._finish(raw)
                if len(memo) >= _CACHE_LIMIT:
                    memo.clear()
                memo[raw] = term
            if term is not None:
                out.append(term)
        return out

    def term_counts(self, text: str) -> tuple[np.ndarray, np.ndarray, int]:
        """``(keys, tfs, length)`` of one text: its distinct term keys (sorted
        uint64), how often each occurs (uint32), and its token count."""
        terms = self.tokens(text)
        keys, tfs = np.unique(term_keys(terms), return_counts=True)
        return keys, tfs.astype(np.uint32), len(terms)

    # ------------------------------------------------------------ the record in the file

    def to_json(self) -> dict:
        """A small JSON-able dict that :meth:`from_json` turns back into an equal analyzer."""
        return {"version": ANALYZER_VERSION, "fold_accents": self.fold_accents, "stemmer": self.stemmer,
                "stop_words": self.stop_words}

    @classmethod
    def from_json(cls, d, *, where: str | None = None) -> "Analyzer":
        """The analyzer ``d`` (:meth:`to_json`'s form) describes, checked strictly.

        ``where`` says the dict came from a file (e.g. ``"catalog of docs"``):
        problems then raise :class:`~needle_mm.errors.CorruptFileError` (an
        unknown version: :class:`~needle_mm.errors.UnsupportedVersionError`)
        naming it, and PyStemmer is looked for only at the first analysis.
        Without it, problems raise :class:`~needle_mm.errors.InvalidArgumentError`.
        """
        error = InvalidArgumentError if where is None else CorruptFileError
        prefix = "" if where is None else f"{where}: "
        if not isinstance(d, dict):
            raise error(f"{prefix}a text analyzer must be a JSON object, got {type(d).__name__}")
        unknown = sorted(str(key) for key in d if key not in _JSON_KEYS)
        if unknown:
            raise error(f"{prefix}text analyzer has unknown keys {unknown}")
        missing = [key for key in _JSON_KEYS if key not in d]
        if missing:
            raise error(f"{prefix}text analyzer lacks {missing}")
        version = d["version"]
        if type(version) is not int:
            raise error(f"{prefix}text analyzer version must be an integer, got {version!r}")
        if version != ANALYZER_VERSION:
            if where is not None and version > ANALYZER_VERSION:
                raise UnsupportedVersionError(f"{prefix}text analyzer version {version} is newer than this "
                                              f"needle_mm knows ({ANALYZER_VERSION}): upgrade needle_mm")
            raise error(f"{prefix}text analyzer version must be {ANALYZER_VERSION}, got {version}")
        _check_options(d["stemmer"], d["stop_words"], d["fold_accents"], error, prefix)
        if where is None:
            return cls(d["stemmer"], d["stop_words"], d["fold_accents"])
        self = object.__new__(cls)
        object.__setattr__(self, "stemmer", d["stemmer"])
        object.__setattr__(self, "stop_words", d["stop_words"])
        object.__setattr__(self, "fold_accents", d["fold_accents"])
        self._start(None)  # PyStemmer is loaded at the first stemmed token
        return self


def _check_options(stemmer, stop, fold, error, prefix: str) -> None:
    if stemmer is not None:
        if not isinstance(stemmer, str):
            raise error(f"{prefix}stemmer must be a language name or None, got {type(stemmer).__name__}")
        if stemmer not in STEMMER_LANGUAGES:
            raise error(f"{prefix}no Snowball stemmer for {stemmer!r}; languages: {', '.join(sorted(STEMMER_LANGUAGES))}")
    if stop is not None:
        if not isinstance(stop, str):
            raise error(f"{prefix}stop_words must be a language name or None, got {type(stop).__name__}")
        if stop not in _STOP_LANGUAGES:
            raise error(f"{prefix}no stop-word list for {stop!r}; languages: {', '.join(_STOP_LANGUAGES)}")
    if type(fold) is not bool:
        raise error(f"{prefix}fold_accents must be True or False, got {fold!r}")


__all__ = ["ANALYZER_VERSION", "Analyzer", "STEMMER_LANGUAGES", "environment", "normalize", "split", "stop_word_languages",
           "stop_word_set", "strip_accents", "term_key", "term_key_list", "term_keys"]
