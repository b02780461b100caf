"""Turning user input into what the engine stores, or a clear error.

Every public write passes through here *before* anything changes, so a bad
record raises without altering stored or pending state.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from ._kernels.api import QUERY_IN_PLACE, query_norms, square_norm
from .errors import InvalidIdError, InvalidMetadataError, InvalidVectorError

MAX_ID_BYTES = 65535
_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY


def id_bytes(id: Any) -> bytes:
    """UTF-8 bytes of a record id; ids are non-empty ``str``."""
    if not isinstance(id, str):
        raise InvalidIdError(f"record ids must be str, got {type(id).__name__} {id!r} (convert with str())")
    if not id:
        raise InvalidIdError("record ids must be non-empty strings, got ''")
    try:
        raw = id.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidIdError(f"record id {id!r} is not valid Unicode (lone surrogate)") from None
    if len(raw) > MAX_ID_BYTES:
        raise InvalidIdError(f"record id is {len(raw)} bytes of UTF-8; the limit is {MAX_ID_BYTES}")
    return raw


def vector(value: Any, dim: int, what: str = "vector") -> np.ndarray:
    """A finite float32 vector of length ``dim``."""
    arr = _as_float_array(value, what)
    if arr.ndim != 1:
        raise InvalidVectorError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != dim:
        raise InvalidVectorError(f"{what} has dimension {arr.shape[0]}, the collection expects {dim}")
    if not np.isfinite(arr).all():
        raise InvalidVectorError(f"{what} contains NaN or infinity (after conversion to float32)")
    return arr


def matrix(value: Any, dim: int, what: str = "vectors") -> np.ndarray:
    """A finite C-contiguous float32 matrix ``[n, dim]``."""
    arr = _as_float_array(value, what)
    if arr.ndim != 2:
        raise InvalidVectorError(f"{what} must be 2-D [n, {dim}], got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise InvalidVectorError(f"{what} have dimension {arr.shape[1]}, the collection expects {dim}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise InvalidVectorError(f"{what} row {int(np.flatnonzero(bad)[0])} contains NaN or infinity")
    return np.ascontiguousarray(arr)


def half_precision(arr: np.ndarray, what: str = "vectors") -> np.ndarray:
    """``arr`` rounded to float16 as an ``f16`` collection stores it (kept as
    float32 until written, so pending and committed records rank alike);
    values beyond float16's range are refused, not stored as infinity."""
    with np.errstate(over="ignore"):
        half = arr.astype(np.float16)
    bad = ~np.isfinite(half).all(axis=1)
    if bad.any():
        raise InvalidVectorError(f"{what} row {int(np.flatnonzero(bad)[0])} has values beyond float16's range "
                                 f"(±65504): this collection stores its vectors as f16")
    return half.astype(np.float32)


def _as_float_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise InvalidVectorError(f"{what} is not a numeric array: {exc}") from None
    if arr.dtype.kind not in "fiu" or arr.dtype.kind == "b":
        if arr.dtype == object:
            try:
                arr = arr.astype(np.float64)
            except (ValueError, TypeError):
                raise InvalidVectorError(f"{what} holds non-numeric values") from None
        else:
            raise InvalidVectorError(f"{what} must hold real numbers, got dtype {arr.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(np.float32, copy=False)


def queries(value: Any, dim: int, cosine: bool, batch: bool) -> tuple[np.ndarray, np.ndarray]:
    """Queries as a writable float32 ``[m, dim]`` matrix and their norms.

    Every query's norm is ``kernels.square_norm``'s, the lean call's kernel's
    own, so one query ranks alike on every path and in a batch. The squared
    norm also proves the query finite (NaN, infinity and float32 overflow
    all make it exceed float32's range), so no other pass looks for them
    unless one is found.
    """
    if not batch:
        if type(value) is np.ndarray and value.shape == (dim,) and value.dtype.kind == "f":
            if value.dtype == _FLOAT32 and value.flags.num & QUERY_IN_PLACE == QUERY_IN_PLACE:
                v = value  # read as it is (kernels never write a query): no copy
            else:
                v = value.astype(np.float32)  # a copy: C-contiguous and writable, as the kernels are compiled for
        else:
            v = vector(value, dim, "query").astype(np.float32)
        sq = square_norm(v)
        if not sq <= _FLOAT32_MAX:  # NaN fails too
            vector(v, dim, "query")  # names NaN/infinity if present
            raise InvalidVectorError("query values are too large: the squared norm overflows float32")
        if cosine and sq == 0.0:
            raise InvalidVectorError("query is all zeros: cosine distance is undefined for it")
        return v.reshape(1, dim), np.array([math.sqrt(sq)], dtype=np.float32)
    arr = _as_float_array(value, "queries")
    if arr.ndim != 2 or arr.shape[1] != dim:
        matrix(arr, dim, "queries")  # names the shape
    q = np.require(arr, np.float32, ["C", "W", "A"])
    qn, bad = query_norms(q, cosine)  # one pass: the norms, and whether every row is a query
    if bad >= 0:
        matrix(q, dim, "queries")  # names a row with NaN or infinity
        if not square_norm(q[bad]) <= _FLOAT32_MAX:
            raise InvalidVectorError(f"query row {bad} values are too large: the squared norm overflows float32")
        raise InvalidVectorError(f"query row {bad} is all zeros: cosine distance is undefined for it")
    return q, qn


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32 = np.dtype(np.float32)


def norms(arr: np.ndarray, what: str = "vector") -> np.ndarray:
    """Row L2 norms (float32). The squared norm must be finite in float32, as
    the kernels compute dot products in float32: one rule for stored vectors
    and queries alike (a vector stored must also be a valid query)."""
    squares = np.einsum("ij,ij->i", arr, arr, dtype=np.float64)
    if not (squares <= _FLOAT32_MAX).all():  # NaN fails too
        raise InvalidVectorError(f"{what} values are too large: the squared norm overflows float32")
    n = np.sqrt(squares).astype(np.float32)
    return n


def require_nonzero(n: np.ndarray, what: str = "vector") -> None:
    if (n == 0).any():
        raise InvalidVectorError(
            f"{what} row {int(np.flatnonzero(n == 0)[0])} is all zeros: cosine distance is undefined for it"
        )


def metadata(value: Any) -> bytes:
    """orjson bytes of a metadata object (``None`` is stored as ``{}``)."""
    if value is None:
        return b"{}"
    if not isinstance(value, dict):
        raise InvalidMetadataError(f"metadata must be a dict (JSON object) or None, got {type(value).__name__}")
    _reject_non_finite(value, "metadata")
    try:
        return orjson.dumps(value, option=_ORJSON_OPTS)
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise InvalidMetadataError(f"metadata cannot be stored as JSON: {exc}") from None


# What reads back as it was given (tuples and numeric numpy values read back as
# lists and numbers). Everything else orjson would write -- datetime, UUID,
# dataclasses -- reads back as something else (a string, a dict), so it is refused.
_SCALARS = (str, int, float, type(None), np.bool_, np.integer, np.floating)
_HINTS = {"datetime": "store value.isoformat() or a timestamp", "date": "store value.isoformat()",
          "time": "store value.isoformat()", "UUID": "store str(value)", "Decimal": "store str(value) or float(value)",
          "set": "store a sorted list", "frozenset": "store a sorted list", "bytes": "store text (e.g. base64)"}


def _reject_non_finite(value: Any, path: str, depth: int = 0) -> None:
    """Refuse what JSON cannot hold as given: NaN/inf (orjson writes null) and
    values of types that would read back as another type."""
    if depth > 200:
        raise InvalidMetadataError(f"metadata nests deeper than 200 levels at {path}")
    if isinstance(value, dict):
        for k, v in value.items():
            _reject_non_finite(v, f"{path}.{k}", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _reject_non_finite(v, f"{path}[{i}]", depth + 1)
    elif isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise InvalidMetadataError(f"metadata value at {path} is {value}: JSON has no NaN or infinity")
    elif isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise InvalidMetadataError(f"metadata array at {path} has dtype {value.dtype}: only numeric or bool "
                                       "arrays are stored (as lists)")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise InvalidMetadataError(f"metadata array at {path} contains NaN or infinity")
    elif not isinstance(value, _SCALARS):
        kind = type(value).__name__
        hint = _HINTS.get(kind, "store a str, number, bool, None, list or dict")
        raise InvalidMetadataError(f"metadata value at {path} is a {kind}, which would not read back as one "
                                   f"(JSON has no {kind}): {hint}")
