"""Offline rebuild and compaction: ``needle rebuild`` and ``needle compact``.

Both write a new file holding only the live records, one segment (one HNSW
graph, built on every core) per collection, then atomically put it at the
original path. The sequence, and why it is safe (SPEC.md §7):

1. Read one snapshot of the source and write the new file beside it
   (``<path>.rebuild-<pid>``), fsynced by its own checkpoint. No lock is held:
   writers keep committing to the source meanwhile.
2. Take the source's writer lock. If a writer committed since step 1, start
   again from its newer generation (so nothing it saved is lost).
3. ``os.replace`` the new file onto the path, fsync the directory.
4. Still under the lock, commit one last generation to the *old* file saying
   ``superseded``: every process that has the old file open sees a new
   generation at its next operation, reads the flag and reopens the path.
   A crash between 3 and 4 leaves old readers on the old (complete,
   consistent) file until they call ``refresh()``, which also compares the
   path's inode with the open file's.

A crash before step 3 leaves the original untouched and a stray
``.rebuild-<pid>`` file, which the next writer to open the file removes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


from .._format.catalog import DTYPES, QUANTIZATIONS
from .._progress import log, plural
from .._format.segment import parse_metadata
from .._storage import readers
from ..config import CollectionConfig, DistanceFunction
from ..errors import DatabaseNotFoundError, InvalidArgumentError, NeedleError
from .export import records

MAX_ATTEMPTS = 3


@dataclass
class RebuildReport:
    path: str
    collections: dict[str, int]  # name -> live records written
    bytes_before: int
    bytes_after: int
    seconds: float
    replaced: bool

    def summary(self) -> str:
        total = sum(self.collections.values())
        where = self.path if self.replaced else "the new file"
        return (f"{where}: {plural(total, 'record')} in {plural(len(self.collections), 'collection')}, "
                f"{self.bytes_before:,} -> {self.bytes_after:,} bytes, {self.seconds:.1f} s")


def _check_params(m, ef_construction, ef_search, dtype, quantization=None) -> None:
    if dtype is not None and dtype not in DTYPES:
        raise InvalidArgumentError(f"storage dtype {dtype!r} is not supported (supported: {', '.join(DTYPES)})")
    if quantization is not None and quantization not in ("none", *QUANTIZATIONS):
        raise InvalidArgumentError(f"quantization {quantization!r} is not supported (supported: none, "
                                   f"{', '.join(QUANTIZATIONS)})")
    for name, value in (("m", m), ("ef_construction", ef_construction), ("ef_search", ef_search)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")


def _text_keywords(old, text_field) -> dict:
    """The copy's text index: the source collection's, unless ``text_field``
    names another field (default options) or is "none" (no index)."""
    if old.sparse or text_field is None or text_field == old.text_field:
        return {"text_field": old.text_field, "text_options": old.text_options}
    return {} if text_field == "none" else {"text_field": text_field}


def _write_copy(src, dst_path: str, m, ef_construction, ef_search, dtype, progress,
                quantization=None, text_field=None) -> dict[str, int]:
    """Every live record of every collection of ``src`` into a new file at ``dst_path``
    (``dtype`` and ``quantization`` apply to dense collections; sparse ones keep
    float32 values and no codes; ``quantization`` "none" drops the codes).

    If a record cannot be copied (an f32 value beyond float16's range under
    ``dtype="f16"``), the new file is removed and the error raised: ``src``
    is never touched."""
    from .._engine.engine import create_file
    from ..database import Database

    counts = {}
    try:
        # The copy continues the source's numbering: readers that move to it
        # never see the generation go backwards (SPEC §7.1).
        create_file(dst_path, src.generation + 1)
        with Database.open(dst_path) as dst:
            for name in src.list_collections():
                source = src.collection(name)
                old = source.config
                config = CollectionConfig(old.dimension, DistanceFunction(old.distance),
                                          m=m or old.m, ef_construction=ef_construction or old.ef_construction,
                                          ef_search=ef_search or old.ef_search, seed=old.seed, sparse=old.sparse,
                                          dtype=old.dtype if old.sparse or dtype is None else dtype,
                                          quantization=old.quantization if old.sparse or quantization is None
                                          else None if quantization == "none" else quantization,
                                          **_text_keywords(old, text_field))
                target = dst.create_collection_with_config(name, config)
                dst.engine.set_collection_properties(name, src.engine.collection_properties(name))
                n = 0
                for ids, vectors, metas in records(source, batch=65536):
                    target.insert_many(ids, vectors, [parse_metadata(meta, f"{src.path!r}: metadata of record {i!r}")
                                                      for i, meta in zip(ids, metas)])
                    n += len(ids)
                counts[name] = n
            # One save: one segment and one graph per collection.
            dst.save(progress)
    except BaseException:
        for leftover in (dst_path, *_sidecars(dst_path)):
            if os.path.exists(leftover):
                os.remove(leftover)
        readers.forget(os.path.realpath(dst_path))
        raise
    for sidecar in _sidecars(dst_path):  # none if nothing was saved (no collections)
        if os.path.exists(sidecar):
            os.remove(sidecar)
    readers.forget(os.path.realpath(dst_path))
    return counts


def _sidecars(path: str) -> tuple[str, str]:
    """The lock and the reader table a new file's writer made: nobody else knows
    the new file yet, and at its final name it uses that name's own."""
    return path + ".lock", path + ".readers"


def rebuild(path: str | os.PathLike, out: str | os.PathLike | None = None, *, m: int | None = None,
            ef_construction: int | None = None, ef_search: int | None = None, dtype: str | None = None,
            quantization: str | None = None, text_field: str | None = None, lock_timeout: float = 60.0,
            progress=None) -> RebuildReport:
    """Rewrite ``path`` with one segment per collection (and optionally new HNSW parameters).

    With ``out``, the new file goes there and ``path`` is left alone; otherwise
    it replaces ``path`` atomically and processes that have it open move to it
    (see the module docstring). ``quantization`` ("int8", "binary" or "none") converts
    the dense collections (the codes are trained anew either way). ``text_field``
    gives the dense collections a full-text index of that metadata field
    (SPEC §5.11; default analysis and BM25 parameters), or with "none" drops
    theirs. Deleted and replaced records are not copied,
    so this is also :func:`compact`.

    ``progress``: ``True`` draws a bar of the graph nodes built (tqdm), a
    callable receives ``(done, total)``. The result is logged on the
    ``needle_mm`` logger (INFO).
    """
    from ..database import Database

    _check_params(m, ef_construction, ef_search, dtype, quantization)
    if text_field is not None and text_field != "none":
        from .._engine.text_search import text_index

        text_index(text_field, None)  # a bad field name fails before anything is copied
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatabaseNotFoundError(f"no database file at {path!r}")
    started = time.perf_counter()
    bytes_before = os.path.getsize(path)
    if out is not None:
        out = os.fspath(out)
        if os.path.exists(out):
            raise InvalidArgumentError(f"{out!r} already exists; rebuild --out writes a new file")
        with Database.open(path, read_only=True, auto_refresh=False) as src:
            counts = _write_copy(src, out, m, ef_construction, ef_search, dtype, progress, quantization, text_field)
        return _logged(RebuildReport(out, counts, bytes_before, os.path.getsize(out), time.perf_counter() - started,
                                     False))

    target = os.path.realpath(path)  # replace the file, not a symlink that names it
    tmp = f"{target}.rebuild-{os.getpid()}"
    with Database.open(path, lock_timeout=lock_timeout, auto_refresh=False) as old:
        for _ in range(MAX_ATTEMPTS):
            generation = old.generation
            for stale in (tmp, *_sidecars(tmp)):
                if os.path.exists(stale):
                    os.remove(stale)
            readers.forget(tmp)
            counts = _write_copy(old, tmp, m, ef_construction, ef_search, dtype, progress, quantization, text_field)
            if old.engine.replace_file(tmp, generation):
                break
            # a writer committed meanwhile: copy its generation instead
        else:
            os.remove(tmp)
            raise NeedleError(f"{path!r} changed during each of {MAX_ATTEMPTS} rebuild attempts; "
                              "run the rebuild when writers are quieter")
    return _logged(RebuildReport(path, counts, bytes_before, os.path.getsize(path), time.perf_counter() - started,
                                 True))


def compact(path: str | os.PathLike, *, lock_timeout: float = 60.0, progress=None) -> RebuildReport:
    """Reclaim the space of deleted and replaced records (a :func:`rebuild` with the same parameters)."""
    return rebuild(path, lock_timeout=lock_timeout, progress=progress)


def _logged(report: RebuildReport) -> RebuildReport:
    log.info("rebuilt %s", report.summary())
    return report
