"""Full-text chunks (SPEC §5.11): encoding (writers) and checked views (readers).

A text chunk is the BM25 index of a run of slots: for each distinct term key,
the slots whose text holds it and how often; every slot's document length;
and the chunk's vocabulary (each term with its key, so the index can be
inspected and a key collision seen). Chunks are immutable regions; a commit
adds one for its records and merges trailing ones, as metadata column chunks
and sparse posting chunks do (``plan._merge_start``).

Layout, little-endian, every section starting 8-aligned::

    header   u64 d (lists), e (postings), count (slots), v (vocabulary terms), vb (vocabulary bytes)
    keys            u64[d]      strictly ascending
    list_offsets    u64[d + 1]  0 .. e, non-decreasing (this version writes no empty list)
    slots           u32[e]      absolute slot numbers in [start, start + count), ascending within a list
    tfs             u32[e]      >= 1
    doc_lengths     u32[count]  tokens of each slot's text (0: none); = the sum of its postings' tfs
    vocab_keys      u64[v]      ascending; equal to keys when no two terms collide
    vocab_offsets   u64[v + 1]  0 .. vb, into
    vocab_blob      u8[vb]      the terms' UTF-8, in vocab_keys order (ties by term)
"""

from __future__ import annotations

import numpy as np

from ..errors import CorruptFileError

_HEADER = 40


def _align8(x: int) -> int:
    return (x + 7) & ~7


def _layout(d: int, e: int, count: int, v: int, vb: int) -> dict[str, int]:
    """Byte offset of each section, and "end"."""
    at, out = _HEADER, {}
    for name, size in (("keys", 8 * d), ("list_offsets", 8 * (d + 1)), ("slots", 4 * e), ("tfs", 4 * e),
                       ("doc_lengths", 4 * count), ("vocab_keys", 8 * v), ("vocab_offsets", 8 * (v + 1)),
                       ("vocab_blob", vb)):
        out[name] = at
        at = _align8(at + size)
    out["end"] = at
    return out


def encode_text_chunk(build) -> bytes:
    """The region bytes of a chunk from ``_index.text.build_text_chunk``'s result."""
    chunk, lengths, vocab = build.chunk, build.doc_lengths, build.vocabulary
    terms = [t.encode("utf-8") for t in vocab.terms]
    vocab_offsets = np.zeros(len(terms) + 1, dtype="<u8")
    np.cumsum([len(t) for t in terms], out=vocab_offsets[1:])
    blob = b"".join(terms)
    d, e, v = chunk.keys.shape[0], chunk.slots.shape[0], len(terms)
    lay = _layout(d, e, chunk.count, v, len(blob))
    out = bytearray(lay["end"])
    out[0:_HEADER] = np.array([d, e, chunk.count, v, len(blob)], dtype="<u8").tobytes()
    for name, data in (("keys", chunk.keys.astype("<u8")), ("list_offsets", chunk.list_offsets.astype("<u8")),
                       ("slots", chunk.slots.astype("<u4")), ("tfs", chunk.tfs.astype("<u4")),
                       ("doc_lengths", lengths.astype("<u4")), ("vocab_keys", vocab.keys.astype("<u8")),
                       ("vocab_offsets", vocab_offsets)):
        raw = data.tobytes()
        out[lay[name]:lay[name] + len(raw)] = raw
    out[lay["vocab_blob"]:lay["vocab_blob"] + len(blob)] = blob
    return bytes(out)


class TextChunk:
    """Read-only posting lists of the slots ``[start, start + count)``:
    ``keys`` (uint64 [d], strictly ascending), ``list_offsets`` (uint64
    [d + 1]), ``slots`` (uint32 [e], ascending within each list), ``tfs``
    (uint32 [e], each >= 1)."""

    __slots__ = ("keys", "list_offsets", "slots", "tfs", "start", "count")

    def __init__(self, keys, list_offsets, slots, tfs, start: int, count: int):
        self.keys, self.list_offsets, self.slots, self.tfs = keys, list_offsets, slots, tfs
        self.start, self.count = start, count


class TextChunkView:
    """A checked, read-only view of one text chunk inside a file map:
    ``chunk`` (the :class:`TextChunk` the kernels read), ``doc_lengths``,
    and the vocabulary, decoded on demand (:meth:`terms`)."""

    __slots__ = ("chunk", "doc_lengths", "vocab_keys", "_vocab_offsets", "_vocab_blob", "where")

    def __init__(self, chunk, doc_lengths, vocab_keys, vocab_offsets, vocab_blob, where: str):
        self.chunk, self.doc_lengths, self.vocab_keys = chunk, doc_lengths, vocab_keys
        self._vocab_offsets, self._vocab_blob, self.where = vocab_offsets, vocab_blob, where

    def terms(self) -> list[str]:
        """Every vocabulary term, in ``vocab_keys`` order (CorruptFileError if not UTF-8)."""
        offsets, blob = self._vocab_offsets.tolist(), self._vocab_blob.tobytes()
        try:
            return [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
        except UnicodeDecodeError:
            raise CorruptFileError(f"{self.where}: a vocabulary term is not UTF-8") from None

    @classmethod
    def from_region(cls, buffer, offset: int, length: int, start: int, count: int, where: str) -> "TextChunkView":
        """A validated view (CorruptFileError naming ``where`` and the slots if anything is off)."""
        from .._kernels.api import check_text_chunk

        where = f"{where}: text chunk of slots [{start}, {start + count})"
        if length < _HEADER:
            raise CorruptFileError(f"{where}: {length} bytes are shorter than its header")
        d, e, c, v, vb = (int(x) for x in np.frombuffer(buffer, dtype="<u8", count=5, offset=offset))
        if c != count or max(d, v) > 2**32 or max(e, vb) > 2**40 or _layout(d, e, c, v, vb)["end"] != length:
            raise CorruptFileError(f"{where}: its header ({d} lists, {e} postings, {c} slots, {v} terms) "
                                   f"does not fit its {length} bytes")
        lay = _layout(d, e, c, v, vb)

        def part(name, dtype, n):
            return np.frombuffer(buffer, dtype=dtype, count=n, offset=offset + lay[name])

        chunk = TextChunk(part("keys", "<u8", d), part("list_offsets", "<u8", d + 1), part("slots", "<u4", e),
                          part("tfs", "<u4", e), start, count)
        lengths = part("doc_lengths", "<u4", c)
        problem = check_text_chunk(chunk.keys, chunk.list_offsets, chunk.slots, chunk.tfs, np.int64(start),
                                   np.int64(count))
        if problem:
            raise CorruptFileError(f"{where}: {_PROBLEMS.get(problem, 'its posting lists are malformed')}")
        # Each slot's length is the sum of its postings' frequencies: the lengths BM25 divides by are those of the lists.
        sums = np.bincount(chunk.slots.astype(np.int64) - start, weights=chunk.tfs, minlength=count)
        if not np.array_equal(sums, lengths):
            raise CorruptFileError(f"{where}: its document lengths differ from its postings' term frequencies")
        vocab_keys, vocab_offsets = part("vocab_keys", "<u8", v), part("vocab_offsets", "<u8", v + 1)
        if (v < d or (v and bool((vocab_keys[1:] < vocab_keys[:-1]).any()))
                or not np.array_equal(np.unique(vocab_keys), chunk.keys)
                or int(vocab_offsets[0]) != 0 or int(vocab_offsets[-1]) != vb
                or bool((vocab_offsets[1:] < vocab_offsets[:-1]).any())):
            raise CorruptFileError(f"{where}: its vocabulary does not name exactly its posting lists")
        return cls(chunk, lengths, vocab_keys, vocab_offsets, part("vocab_blob", "u1", vb), where)


# check_text_chunk's codes
_PROBLEMS = {1: "its term keys are not strictly ascending",
             2: "its list offsets are not monotonic from 0 to the posting count",
             3: "it names a slot outside its range, or twice in one list",
             4: "it holds a term frequency of 0"}


__all__ = ["TextChunk", "TextChunkView", "encode_text_chunk"]
