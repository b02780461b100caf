"""Sparse vectors: what users pass in, how records are held, and exact search.

A sparse collection (``CollectionConfig(dim, "dot", sparse=True)``) stores
each vector as strictly ascending ``indices`` (< dim) with finite float32
``values``, in CSR regions, and searches by posting-list accumulation (SPEC.md
§5.7). Accepted inputs: ``{"indices": [...], "values": [...]}`` (Pinecone's
and Qdrant's shape), ``{index: value}``, a 1-row ``scipy.sparse`` matrix or
array, or a :class:`SparseVector`; for many records, a list of those or a 2-D
``scipy.sparse`` matrix.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from ._format.postings import PostingChunk
from ._kernels.sparse import accumulate_parallel, accumulate_serial, rank_parallel, rank_serial
from .errors import InvalidVectorError

__all__ = ["SparseVector"]

SCRATCH_BYTES = 1 << 26  # per batch of queries: scores + marks + hits of every slot (9 bytes each)
SERIAL_QUERIES = 4  # below this many queries per batch one thread is faster


class SparseVector:
    """A sparse vector: ``indices`` (uint32, strictly ascending) and ``values`` (float32)."""

    __slots__ = ("indices", "values")

    def __init__(self, indices, values):
        self.indices = indices
        self.values = values

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __eq__(self, other) -> bool:
        return (isinstance(other, SparseVector) and np.array_equal(self.indices, other.indices)
                and np.array_equal(self.values, other.values))

    def __repr__(self) -> str:
        pairs = ", ".join(f"{i}: {v:g}" for i, v in zip(self.indices[:4].tolist(), self.values[:4].tolist()))
        more = f", ... ({len(self)} entries)" if len(self) > 4 else ""
        return f"SparseVector({{{pairs}{more}}})"

    def to_dict(self) -> dict:
        """``{"indices": [...], "values": [...]}`` (JSON-ready)."""
        return {"indices": self.indices.tolist(), "values": self.values.tolist()}

    def dot(self, other: "SparseVector") -> float:
        common, a, b = np.intersect1d(self.indices, other.indices, assume_unique=True, return_indices=True)
        return float(np.dot(self.values[a].astype(np.float64), other.values[b].astype(np.float64)))


# ---------------------------------------------------------------- input


def _is_scipy_sparse(value: Any) -> bool:
    return hasattr(value, "tocsr") and hasattr(value, "shape") and hasattr(value, "nnz")


def vector(value: Any, dim: int, what: str = "sparse vector") -> SparseVector:
    """A validated :class:`SparseVector` from any accepted form, or InvalidVectorError."""
    if isinstance(value, SparseVector):
        return _checked(value.indices, value.values, dim, what, sort=False)
    if _is_scipy_sparse(value):
        shape = value.shape
        if len(shape) == 1:
            value = value.reshape(1, shape[0])
            shape = value.shape
        if shape[0] != 1 or shape[1] != dim:
            raise InvalidVectorError(f"{what} is a scipy.sparse matrix of shape {shape}; expected (1, {dim})")
        row = value.tocsr(copy=True)
        row.sum_duplicates()  # scipy's meaning of repeated entries is their sum
        return _checked(row.indices, row.data, dim, what, sort=True)
    if isinstance(value, dict):
        if set(value) == {"indices", "values"}:
            return _checked(value["indices"], value["values"], dim, what, sort=False)
        try:
            keys = [k if isinstance(k, int) and not isinstance(k, bool) else int(k) if isinstance(k, str)
                    and k.isdigit() else _bad_key(k) for k in value]
        except ValueError as exc:
            raise InvalidVectorError(f"{what}: {exc}") from None
        return _checked(keys, list(value.values()), dim, what, sort=True)
    raise InvalidVectorError(
        f"{what} must be {{'indices': [...], 'values': [...]}}, {{index: value}}, a 1-row scipy.sparse "
        f"matrix or a SparseVector, got {type(value).__name__}"
    )


def _bad_key(key):
    raise ValueError(f"key {key!r} is not a non-negative integer index (use {{'indices': ..., 'values': ...}} "
                     "or {index: value})")


def _checked(indices, values, dim: int, what: str, sort: bool) -> SparseVector:
    try:
        idx = np.asarray(indices)
        val = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise InvalidVectorError(f"{what}: indices and values must be numeric lists ({exc})") from None
    if idx.ndim != 1 or val.ndim != 1:
        raise InvalidVectorError(f"{what}: indices and values must be flat lists")
    if idx.shape[0] != val.shape[0]:
        raise InvalidVectorError(f"{what} has {idx.shape[0]} indices but {val.shape[0]} values")
    if idx.shape[0] and (idx.dtype.kind not in "iu" or idx.dtype == np.bool_):
        if idx.dtype.kind == "f" and np.isfinite(idx).all() and (idx == np.round(idx)).all():
            idx = idx.astype(np.int64)
        else:
            raise InvalidVectorError(f"{what}: indices must be integers, got {idx.dtype} values")
    if val.shape[0] and (val.dtype.kind not in "fiu" or val.dtype == np.bool_):
        raise InvalidVectorError(f"{what}: values must be real numbers, got dtype {val.dtype}")
    idx = idx.astype(np.int64, copy=False)
    if idx.shape[0] and (idx.min() < 0 or idx.max() >= dim):
        bad = int(idx[(idx < 0) | (idx >= dim)][0])
        raise InvalidVectorError(f"{what} has index {bad}, outside [0, {dim}) for a collection of dimension {dim}")
    with np.errstate(over="ignore", invalid="ignore"):
        val = val.astype(np.float32)
    if not np.isfinite(val).all():
        raise InvalidVectorError(f"{what} has a NaN or infinite value (after conversion to float32)")
    if sort:
        order = np.argsort(idx, kind="stable")
        idx, val = idx[order], val[order]
    steps = np.diff(idx)
    if (steps <= 0).any():
        j = int(np.flatnonzero(steps <= 0)[0])
        problem = "a duplicate index" if steps[j] == 0 else "indices out of order"
        raise InvalidVectorError(f"{what} has {problem} at position {j + 1} (index {int(idx[j + 1])} after "
                                 f"{int(idx[j])}); indices must be strictly ascending")
    indices32 = idx.astype(np.uint32)
    for a in (indices32, val):
        a.flags.writeable = False
    return SparseVector(indices32, val)


def vectors(value: Any, dim: int, what: str = "vectors") -> list[SparseVector]:
    """Many sparse vectors: a list of accepted forms or a 2-D scipy.sparse matrix."""
    if _is_scipy_sparse(value):
        if len(value.shape) != 2 or value.shape[1] != dim:
            raise InvalidVectorError(f"{what} is a scipy.sparse matrix of shape {value.shape}; expected (n, {dim})")
        csr = value.tocsr(copy=True)
        csr.sum_duplicates()
        return [_checked(csr.indices[a:b], csr.data[a:b], dim, f"{what} row {i}", sort=True)
                for i, (a, b) in enumerate(zip(csr.indptr[:-1].tolist(), csr.indptr[1:].tolist()))]
    if isinstance(value, (dict, SparseVector, str, bytes)) or not hasattr(value, "__iter__"):
        raise InvalidVectorError(f"{what} must be a list of sparse vectors or a 2-D scipy.sparse matrix, "
                                 f"got {type(value).__name__}")
    return [vector(v, dim, f"{what} row {i}") for i, v in enumerate(value)]


# ---------------------------------------------------------------- storage


class SparseRows:
    """Sparse vectors in CSR form: ``offsets`` (u64, n+1), ``indices`` (u32), ``values`` (f32)."""

    def __init__(self, offsets: np.ndarray, indices: np.ndarray, values: np.ndarray):
        self.offsets, self.indices, self.values = offsets, indices, values

    def __len__(self) -> int:
        return self.offsets.shape[0] - 1

    @classmethod
    def from_list(cls, rows: list[SparseVector]) -> "SparseRows":
        offsets = np.zeros(len(rows) + 1, dtype=np.uint64)
        if rows:
            np.cumsum([len(r) for r in rows], out=offsets[1:])
        indices = np.concatenate([r.indices for r in rows]) if rows else np.zeros(0, np.uint32)
        values = np.concatenate([r.values for r in rows]) if rows else np.zeros(0, np.float32)
        return cls(offsets, indices.astype(np.uint32, copy=False), values.astype(np.float32, copy=False))

    @classmethod
    def concat(cls, parts: list["SparseRows"]) -> "SparseRows":
        shifts = np.cumsum([0] + [p.indices.shape[0] for p in parts[:-1]]).astype(np.uint64)
        offsets = np.concatenate([np.zeros(1, np.uint64)] + [p.offsets[1:].astype(np.uint64) + shift
                                                             for p, shift in zip(parts, shifts)])
        return cls(offsets, np.concatenate([p.indices for p in parts]).astype(np.uint32, copy=False),
                   np.concatenate([p.values for p in parts]).astype(np.float32, copy=False))

    def row(self, i: int) -> SparseVector:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return SparseVector(self.indices[a:b], self.values[a:b])

    def rows(self) -> list[SparseVector]:
        return [self.row(i) for i in range(len(self))]


# ---------------------------------------------------------------- search


def queries(value: Any, dim: int, batch: bool) -> list[SparseVector]:
    if batch:
        return vectors(value, dim, "queries")
    return [vector(value, dim, "query")]


def topk(chunks: list[PostingChunk], n: int, qs: list[SparseVector], excluded: np.ndarray,
         k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(distances[m, k], slots[m, k])`` of one source (``1 - dot``, ascending;
    inf / -1 past the records reached). Queries run in batches sized so the
    per-slot scratch stays under ``SCRATCH_BYTES``."""
    m = len(qs)
    out_d = np.full((m, k), np.inf, dtype=np.float32)
    out_i = np.full((m, k), -1, dtype=np.int64)
    if n == 0 or k == 0:
        return out_d, out_i
    block = max(1, min(m, SCRATCH_BYTES // (9 * n)))
    parallel = block >= SERIAL_QUERIES and numba.get_num_threads() > 1
    accumulate, rank = (accumulate_parallel, rank_parallel) if parallel else (accumulate_serial, rank_serial)
    scores = np.zeros((block, n), dtype=np.float32)
    marks = np.zeros((block, n), dtype=np.uint8)
    hits = np.empty((block, n), dtype=np.uint32)
    for b0 in range(0, m, block):
        part = SparseRows.from_list(qs[b0:b0 + block])
        rows = len(part)
        nhits = np.zeros(rows, dtype=np.int64)
        q_off = part.offsets.astype(np.int64)
        for c in chunks:
            accumulate(c.dims, c.list_offsets, c.slots, c.values, q_off, part.indices, part.values,
                       scores[:rows], marks[:rows], hits[:rows], nhits)
        rank(scores[:rows], marks[:rows], hits[:rows], nhits, excluded, k, out_d[b0:b0 + rows],
             out_i[b0:b0 + rows])
    return out_d, out_i


def search(state, qs: list[SparseVector], k: int, predicate, include_vector: bool):
    """Exact top-k by dot product over every source of a sparse collection."""
    from . import search as _search

    srcs = _search.sources(state, predicate)
    if not srcs or k == 0:
        return [[] for _ in qs]
    found = [topk(source.posting_chunks(), source.n, qs, f.excluded, k) for source, f in srcs]
    return _search.merge(srcs, found, k, include_vector)

