"""``--verify``: the migration guide's checklist, automated.

1. counts: the source's against the collection's;
2. sampled records: vectors (float32-equal, or within 1e-6 relative where
   the source stores another precision; an ``f16`` collection is compared
   with the source rounded to float16) and metadata equal to the source;
3. search quality: top-10 overlap of Needle's HNSW search with the source's
   own search (or with exact search, for sources that cannot search) on
   sampled records used as queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._format.csr import SparseVector
from ..sparse import vector as sparse_vector

from ..ops.export import records

SAMPLE = 100
QUERIES = 20
MIN_OVERLAP = 0.9


@dataclass
class VerifyReport:
    rows: list[tuple[str, str, str, str]]  # check, source, needle, result
    ok: bool

    def table(self) -> str:
        header = ("check", "source", "needle", "result")
        widths = [max(len(r[i]) for r in [header, *self.rows]) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *self.rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append("verify: " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)


def _sample_ids(collection, k: int, seed: int = 0) -> list[str]:
    ids = [i for batch, _, _ in records(collection, batch=65536) for i in batch]
    if len(ids) <= k:
        return ids
    rng = np.random.default_rng(seed)
    return [ids[j] for j in sorted(rng.choice(len(ids), size=k, replace=False).tolist())]


def verify_import(source, collection) -> VerifyReport:
    rows, ok = [], True
    expected, actual = source.count(), collection.count()
    if expected is None:
        rows.append(("count", "n/a", str(actual), "source cannot count"))
    else:
        rows.append(("count", str(expected), str(actual), "ok" if expected == actual else "MISMATCH"))
        ok &= expected == actual

    sample = _sample_ids(collection, SAMPLE)
    fetched = source.fetch(sample)
    vec_ok = meta_ok = 0
    for id in sample:
        entry = collection.get(id)
        got = fetched.get(id)
        if got is None:
            continue
        vector, metadata = got
        if isinstance(entry.vector, SparseVector):
            vec_ok += entry.vector == sparse_vector(vector, collection.dimension)
        else:
            vector = np.asarray(vector, dtype=np.float64)
            if collection.config.dtype == "f16":
                vector = vector.astype(np.float16).astype(np.float64)
            vec_ok += bool(vector.shape == entry.vector.shape
                           and np.allclose(entry.vector, vector, rtol=1e-6, atol=1e-7))
        meta_ok += entry.metadata == metadata
    n = len(sample)
    rows.append((f"vectors ({n} sampled)", f"{len(fetched)} found", str(n), f"{vec_ok}/{n} equal"))
    rows.append((f"metadata ({n} sampled)", f"{len(fetched)} found", str(n), f"{meta_ok}/{n} equal"))
    ok &= vec_ok == n and meta_ok == n

    queries = [collection.get(id).vector for id in sample[:QUERIES]]
    overlaps, against = [], "source search"
    for q in queries:
        theirs = source.search(q, 10)
        if theirs is None:
            against = "exact search"
            theirs = [r.id for r in collection.search(q, 10, exact=True)]
        ours = [r.id for r in collection.search(q, 10)]
        if theirs:
            overlaps.append(len(set(ours) & set(theirs)) / len(theirs))
    if overlaps:
        mean = float(np.mean(overlaps))
        rows.append((f"top-10 overlap ({len(overlaps)} queries)", against, "hnsw",
                     f"{mean:.3f}" + ("" if mean >= MIN_OVERLAP else f" (< {MIN_OVERLAP})")))
        ok &= mean >= MIN_OVERLAP
    return VerifyReport(rows, bool(ok))
