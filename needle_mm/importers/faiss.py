"""FAISS: vectors from the index (``reconstruct_n``), ids and metadata from side files.

FAISS stores neither string ids nor metadata; ``ids`` is a text file with one
id per line (default: the row number) and ``metadata`` a JSON-lines file with
one object per row. Position: rows read.
"""

from __future__ import annotations

import numpy as np

from ..errors import SourceError
from ._run import Batch, Source
from .files import read_ids, read_metadata


class FaissSource(Source):
    kind = "faiss"

    def __init__(self, index_path: str, ids_path: str | None = None, metadata_path: str | None = None,
                 distance: str | None = None):
        import faiss

        try:
            self.index = faiss.read_index(index_path)
        except RuntimeError as exc:
            raise SourceError(f"cannot read FAISS index {index_path!r}: {exc}") from None
        n = self.index.ntotal
        try:
            faiss.extract_index_ivf(self.index).make_direct_map()  # IVF indexes reconstruct through it
        except RuntimeError:
            pass
        self.ids = read_ids(ids_path, n) if ids_path else [str(i) for i in range(n)]
        self.metadata = read_metadata(metadata_path, n) if metadata_path else None
        self.dim = self.index.d
        ip = self.index.metric_type == faiss.METRIC_INNER_PRODUCT
        self.distance = distance or ("dot" if ip else "euclidean")
        self.row = {id: r for r, id in enumerate(self.ids)}
        self.description = {"kind": "faiss", "index": index_path, "ids": ids_path, "metadata": metadata_path}

    def count(self) -> int:
        return self.index.ntotal

    def _meta(self, rows):
        return [self.metadata[r] for r in rows] if self.metadata is not None else [{} for _ in rows]

    def batches(self, position, batch_size):
        n = self.index.ntotal
        for start in range(position or 0, n, batch_size):
            stop = min(start + batch_size, n)
            try:
                vectors = self.index.reconstruct_n(start, stop - start)
            except RuntimeError as exc:
                raise SourceError(f"this FAISS index cannot give its vectors back ({exc}); "
                                  "import from the original vectors (needle import npy)") from None
            yield Batch(self.ids[start:stop], vectors, self._meta(range(start, stop)), stop)

    def fetch(self, ids):
        rows = [self.row[i] for i in ids if i in self.row]
        return {self.ids[r]: (self.index.reconstruct(r), m) for r, m in zip(rows, self._meta(rows))}

    def search(self, vector, k):
        _, rows = self.index.search(np.asarray(vector, dtype=np.float32)[None, :], k)
        return [self.ids[r] for r in rows[0] if r >= 0]
