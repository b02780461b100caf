"""Sparse vectors: what users pass in, validated into :class:`SparseVector`.

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

import numpy as np

from ._format.csr import SparseVector
from .errors import InvalidVectorError

__all__ = ["SparseVector"]


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


def queries(value: Any, dim: int, batch: bool) -> list[SparseVector]:
    if batch:
        return vectors(value, dim, "queries")
    return [vector(value, dim, "query")]
