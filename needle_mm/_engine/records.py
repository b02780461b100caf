"""One type for a batch of records on its way to the file: what ``Collection``
validated, what the pending state appends, what the commit planner writes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._format.csr import SparseRows


@dataclass
class Records:
    """Records to write.

    ``ids_utf8``: the ids as UTF-8; ``vectors``: a float32 ``[m, dim]``
    matrix, or for a sparse collection a list of SparseVector (from users) or
    SparseRows (in the planner); ``norms``: float32 ``[m]`` (zeros, or None in
    the planner, for sparse); ``metas``: each record's metadata as JSON bytes;
    ``ids``: the ids as ``str`` where they are known (records read back from a
    segment carry only their bytes)."""

    ids_utf8: list[bytes]
    vectors: np.ndarray | SparseRows | list
    norms: np.ndarray | None
    metas: list[bytes]
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids_utf8)

    @staticmethod
    def concat(parts: list["Records"]) -> "Records":
        ids = [i for p in parts for i in p.ids_utf8]
        metas = [x for p in parts for x in p.metas]
        if isinstance(parts[0].vectors, SparseRows):
            return Records(ids, SparseRows.concat([p.vectors for p in parts]), None, metas)
        dim = parts[0].vectors.shape[1]
        return Records(ids, np.concatenate([p.vectors for p in parts]).reshape(-1, dim),
                       np.concatenate([p.norms for p in parts]), metas)
