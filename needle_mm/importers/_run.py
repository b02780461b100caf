"""Streaming an import into a collection, with checkpoints and ``--resume``.

Every source yields its records in a deterministic order, in batches, each
with the source *position* just after it (a row number, a scroll offset, the
last primary key: JSON, opaque to this module). Every ``save_every`` records
the runner saves, and the same checkpoint commits the collection property
``"needle.import"`` = {source, position, imported, complete}. The property and
the records it counts become visible together or not at all (SPEC §7.1), so
after a crash or Ctrl-C, ``resume=True`` restarts the source at exactly the
position the committed records end at: no duplicates, none missing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ..config import CollectionConfig, DistanceFunction
from ..errors import ImportStateError, InvalidArgumentError

PROGRESS_KEY = "needle.import"
DEFAULT_BATCH = 1000
DEFAULT_SAVE_EVERY = 10_000


@dataclass
class Batch:
    ids: list[str]
    vectors: Any  # [m, dim] array-like
    metadatas: list[dict | None]
    position: Any  # where the source continues after this batch (JSON)


class Source:
    """What every importer provides. Subclasses set ``kind``, ``description``
    (JSON naming the source, compared on resume), ``dim``, ``distance``."""

    kind = "?"
    description: dict = {}
    dim: int = 0
    distance: str | None = None  # None: the source does not say; the caller must

    def count(self) -> int | None:
        """Records in the source, if it can say cheaply."""
        return None

    def batches(self, position, batch_size: int) -> Iterator[Batch]:
        raise NotImplementedError

    def fetch(self, ids: list[str]) -> dict[str, tuple[np.ndarray, dict]]:
        """Vector and metadata (as imported) of these ids, for ``verify``."""
        raise NotImplementedError

    def search(self, vector: np.ndarray, k: int) -> list[str] | None:
        """The source's own top-k ids, or None if it cannot search."""
        return None

    def close(self) -> None:
        pass


@dataclass
class ImportReport:
    collection: str
    imported: int  # records added by this run
    total: int  # records the import has added over all its runs
    seconds: float
    resumed_from: Any = None
    verify: Any = None
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.imported / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        resumed = f", resumed at {self.resumed_from!r}" if self.resumed_from is not None else ""
        return (f"imported {self.imported} records into {self.collection!r} in {self.seconds:.1f} s "
                f"({self.rate:,.0f} records/s; {self.total} in all{resumed})")


class _Progress:
    """tqdm when installed (the importer extras bring it), else a line on stderr every few seconds."""

    def __init__(self, total, initial, enabled: bool, label: str):
        self.bar = None
        self.enabled = enabled
        self.count = initial
        self.started = time.perf_counter()
        self.last = 0.0
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, initial=initial, unit=" rec", unit_scale=True, desc=label, file=sys.stderr)

    def update(self, n: int) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.perf_counter() - self.last > 5:
            self.last = time.perf_counter()
            rate = self.count / max(self.last - self.started, 1e-9)
            print(f"imported {self.count} records ({rate:,.0f}/s)", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _open_db(db):
    from ..database import Database

    if isinstance(db, Database):
        return db, False
    return Database.open(db), True


def _target(db, name: str, source: Source, distance, hnsw: dict, resume: bool):
    """The collection to import into (created if missing) and where in the source to start."""
    if name in db.list_collections():
        coll = db.collection(name)
        progress = db.engine.collection_properties(name).get(PROGRESS_KEY)
        if coll.dimension != source.dim:
            raise InvalidArgumentError(f"collection {name!r} has dimension {coll.dimension} but the "
                                       f"{source.kind} source has {source.dim}")
        if progress is None:
            if resume:
                raise ImportStateError(f"collection {name!r} holds no interrupted import to resume")
            return coll, None, 0
        if progress["source"] != source.description:
            raise ImportStateError(f"collection {name!r} was imported from {progress['source']}, "
                                   f"not from {source.description}; resume needs the same source")
        if not resume:
            state = "a completed" if progress["complete"] else "an interrupted"
            raise ImportStateError(f"collection {name!r} already holds {state} import from this source "
                                   f"({progress['imported']} records); pass resume=True (--resume) to "
                                   "continue it, or import into another collection")
        return coll, progress, progress["imported"]
    if resume:
        raise ImportStateError(f"no collection {name!r} to resume an import into")
    distance = distance or source.distance
    if distance is None:
        raise InvalidArgumentError(f"the {source.kind} source does not record a distance; pass distance= "
                                   "(--distance cosine|euclidean|dot)")
    config = CollectionConfig(source.dim, DistanceFunction(distance), sparse=getattr(source, "sparse", False), **hnsw)
    return db.create_collection_with_config(name, config), None, 0


def run_import(source: Source, db, collection: str, *, batch_size: int = DEFAULT_BATCH,
               save_every: int = DEFAULT_SAVE_EVERY, resume: bool = False, progress: bool = True,
               distance: str | None = None, verify: bool = False, **hnsw) -> ImportReport:
    """Stream ``source`` into ``collection`` of ``db`` (a Database or a path)."""
    for name, value in (("batch_size", batch_size), ("save_every", save_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    db, owned = _open_db(db)
    try:
        coll, previous, total = _target(db, collection, source, distance, hnsw, resume)
        if previous is not None and previous["complete"]:
            report = ImportReport(collection, 0, total, 0.0, previous["position"], notes=["already complete"])
        else:
            with db.engine.explicit_commits():  # records commit with their progress, autocommit or not
                report = _stream(source, db, coll, previous, total, batch_size, save_every, progress)
        if verify:
            from ._verify import verify_import

            report.verify = verify_import(source, coll)
        return report
    except BaseException:
        if owned:
            db.engine.close(warn=False)  # interrupted: the error says what happened, not a warning
        raise
    finally:
        source.close()
        if owned:
            db.close()


def _stream(source, db, coll, previous, total, batch_size, save_every, progress) -> ImportReport:
    position = previous["position"] if previous else None
    started = time.perf_counter()
    imported = unsaved = 0
    bar = _Progress(source.count(), total, progress, f"{source.kind} -> {coll.name}")

    def checkpoint(complete: bool) -> None:
        db.engine.set_collection_properties(coll.name, {PROGRESS_KEY: {
            "source": source.description, "position": position, "imported": total + imported,
            "complete": complete}})
        db.save()

    try:
        for batch in source.batches(position, batch_size):
            if batch.ids:
                coll.insert_many(batch.ids, batch.vectors, batch.metadatas)
            position = batch.position
            imported += len(batch.ids)
            unsaved += len(batch.ids)
            bar.update(len(batch.ids))
            if unsaved >= save_every:
                checkpoint(False)
                unsaved = 0
        checkpoint(True)
    finally:
        bar.close()
    return ImportReport(coll.name, imported, total + imported, time.perf_counter() - started,
                        previous["position"] if previous else None)
