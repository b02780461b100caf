"""Codes of dense vectors (SPEC §5.10): train a segment's parameters, encode rows.

int8: per dimension ``j``: ``offset[j] = (min + max) / 2`` and ``scale[j] = (max - min) / 254``
over the rows a segment is trained on (``scale`` 1 where every row holds the
same value), and a row's code is ``rint((x - offset) / scale)`` clipped to
−127..127, all in float32 in that order, so every process (and ``verify``)
computes the same bytes from the stored vectors. Rows added later are encoded
with the segment's parameters; a value outside the trained range clips (the
walk sees it a little closer than it is; exact rescoring corrects the order).

binary: the centre is the per-dimension mean of the trained rows, and a row's
code is one bit per dimension, set where the value exceeds the centre (1/32
of the float32 row; the walk compares codes by Hamming distance).
"""

from __future__ import annotations

import numpy as np

CODE_MAX = 127
ROWS_PER_PASS = 1 << 15  # rows converted at a time: bounded scratch memory whatever the segment's size


def _as_f32(rows: np.ndarray) -> np.ndarray:
    """Stored rows as float32 values (an f16 collection's uint16 bits included)."""
    if rows.dtype == np.uint16:
        rows = rows.view(np.float16)
    return rows.astype(np.float32, copy=False)


def train_int8(vectors: np.ndarray) -> np.ndarray:
    """``[2, dim]`` float32: the offsets, then the scales, for these stored rows (at least one)."""
    lo = hi = None
    for start in range(0, vectors.shape[0], ROWS_PER_PASS):
        block = _as_f32(vectors[start:start + ROWS_PER_PASS])
        b_lo, b_hi = block.min(axis=0), block.max(axis=0)
        lo = b_lo if lo is None else np.minimum(lo, b_lo)
        hi = b_hi if hi is None else np.maximum(hi, b_hi)
    offset = ((lo + hi) * np.float32(0.5)).astype(np.float32)
    scale = ((hi - lo) / np.float32(2 * CODE_MAX)).astype(np.float32)
    scale[~(scale > 0) | ~np.isfinite(scale)] = np.float32(1.0)
    offset[~np.isfinite(offset)] = np.float32(0.0)
    return np.ascontiguousarray(np.stack([offset, scale]), dtype=np.float32)


def encode_int8(vectors: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``[n, dim]`` int8 codes of stored rows under ``params`` (:func:`train_int8`)."""
    offset, scale = params[0].astype(np.float32), params[1].astype(np.float32)
    out = np.empty(vectors.shape, dtype=np.int8)
    for start in range(0, vectors.shape[0], ROWS_PER_PASS):
        block = _as_f32(vectors[start:start + ROWS_PER_PASS])
        codes = np.rint((block - offset) / scale)
        np.clip(codes, -CODE_MAX, CODE_MAX, out=codes)
        out[start:start + block.shape[0]] = codes.astype(np.int8)
    return out


def words_of(dim: int) -> int:
    """uint64 words per binary code row: one bit per dimension, rounded up to whole words."""
    return (dim + 63) // 64


def train_binary(vectors: np.ndarray) -> np.ndarray:
    """``[1, dim]`` float32: the per-dimension mean of these stored rows (at least one),
    the centre whose sign bits the binary codes keep."""
    total = np.zeros(vectors.shape[1], dtype=np.float64)
    for start in range(0, vectors.shape[0], ROWS_PER_PASS):
        total += _as_f32(vectors[start:start + ROWS_PER_PASS]).sum(axis=0, dtype=np.float64)
    centre = (total / vectors.shape[0]).astype(np.float32)
    centre[~np.isfinite(centre)] = np.float32(0.0)
    return np.ascontiguousarray(centre.reshape(1, -1))


def encode_binary(vectors: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``[n, words]`` uint64 binary codes of stored rows under ``params``
    (:func:`train_binary`): bit ``j % 64`` of word ``j // 64`` is set where
    ``x[j] - centre[j] > 0`` in float32; the bits past ``dim`` are 0."""
    centre = params[0].astype(np.float32)
    n, dim = vectors.shape
    out = np.zeros((n, words_of(dim) * 8), dtype=np.uint8)
    for start in range(0, n, ROWS_PER_PASS):
        block = _as_f32(vectors[start:start + ROWS_PER_PASS])
        packed = np.packbits((block - centre) > np.float32(0.0), axis=1, bitorder="little")
        out[start:start + block.shape[0], :packed.shape[1]] = packed
    return out.view("<u8")


# quantization -> (train, encode): what each kind of code is made with
CODECS = {"int8": (train_int8, encode_int8), "binary": (train_binary, encode_binary)}
