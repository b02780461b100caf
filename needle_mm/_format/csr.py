"""Sparse vectors as the format holds them: one vector (:class:`SparseVector`)
and many in CSR form (:class:`SparseRows`: offsets, indices, values), SPEC.md §5.7."""

from __future__ import annotations

import numpy as np

__all__ = ["SparseVector", "SparseRows"]


class SparseVector:
    """A sparse vector: ``indices`` (uint32, strictly ascending) and ``values`` (float32).

    One built by hand may hold any array-likes (``SparseVector([1, 4], [0.5, 2.0])``):
    they are kept as numpy arrays (their dtype as given), and checked when the
    vector is written or searched with."""

    __slots__ = ("indices", "values")

    def __init__(self, indices, values):
        self.indices = _array(indices)
        self.values = _array(values)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __eq__(self, other) -> bool:
        return (isinstance(other, SparseVector) and np.array_equal(self.indices, other.indices)
                and np.array_equal(self.values, other.values))

    def __repr__(self) -> str:
        if not (isinstance(self.indices, np.ndarray) and isinstance(self.values, np.ndarray)
                and self.indices.ndim == self.values.ndim == 1):
            return f"SparseVector(indices={self.indices!r}, values={self.values!r})"
        pairs = ", ".join(f"{i}: {v:g}" for i, v in zip(self.indices[:4].tolist(), self.values[:4].tolist()))
        more = f", ... ({len(self)} entries)" if len(self) > 4 else ""
        return f"SparseVector({{{pairs}{more}}})"

    def to_dict(self) -> dict:
        """``{"indices": [...], "values": [...]}`` (JSON-ready)."""
        return {"indices": self.indices.tolist(), "values": self.values.tolist()}

    def dot(self, other: "SparseVector") -> float:
        common, a, b = np.intersect1d(self.indices, other.indices, assume_unique=True, return_indices=True)
        return float(np.dot(self.values[a].astype(np.float64), other.values[b].astype(np.float64)))


def _array(value):
    """``value`` as a numpy array (the stored kind already is one); what numpy cannot make
    one of is kept as given, for the check of a write or search to name it."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (TypeError, ValueError):
        return value


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
