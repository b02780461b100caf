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

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .. import _progress
from .._storage import failpoints
from ..config import CollectionConfig, DistanceFunction
from ..errors import ImportStateError, InvalidArgumentError, NeedleError

PROGRESS_KEY = "needle.import"
# what a new collection takes from an export's recorded configuration, unless given
_RECORDED = ("dtype", "m", "ef_construction", "ef_search", "seed")
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
    config: dict = {}  # a Needle export's recorded collection configuration (importers/files.py)

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
    def rate(self) -> float | None:
        """Records per second of this run (None when it imported nothing or took no measurable time)."""
        return self.imported / self.seconds if self.seconds > 0 and self.imported else None

    def summary(self) -> str:
        resumed = f", resumed at {self.resumed_from!r}" if self.resumed_from is not None else ""
        rate = f"{self.rate:,.0f} records/s; " if self.rate is not None else ""
        return (f"imported {_progress.plural(self.imported, 'record')} into {self.collection!r} in "
                f"{self.seconds:.1f} s ({rate}{self.total:,} in all{resumed})")


class _Progress:
    """Records imported: a tqdm bar or a callable (``progress=``), else an INFO log line every few seconds."""

    def __init__(self, progress, total, initial: int, label: str):
        self.sink = _progress.make(progress, label)
        if self.sink is not None and self.sink.bar is not None:
            self.sink.bar.leave = True  # the import's own bar stays, as its summary line does
        self.count = self.initial = initial
        self.started = self.last = time.perf_counter()
        if self.sink is not None:
            self.sink.expect(total if total is not None else 0)
            self.sink.advance(initial)

    def update(self, n: int) -> None:
        self.count += n
        if self.sink is not None:
            if self.count > self.sink.total:  # a source that could not count ahead
                self.sink.expect(self.count - self.sink.total)
            self.sink.advance(n)
        elif time.perf_counter() - self.last > 5 and _progress.log.isEnabledFor(logging.INFO):
            self.last = time.perf_counter()
            _progress.log.info("imported %s so far (%s/s)", _progress.plural(self.count, "record"),
                               f"{(self.count - self.initial) / max(self.last - self.started, 1e-9):,.0f}")

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


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
    recorded = {k: v for k, v in source.config.items() if k in _RECORDED and k not in hnsw}
    config = CollectionConfig(source.dim, DistanceFunction.parse(distance), sparse=getattr(source, "sparse", False),
                              **recorded, **hnsw)
    return db.create_collection_with_config(name, config), None, 0


def run_import(source: Source, db, collection: str, *, batch_size: int = DEFAULT_BATCH,
               save_every: int = DEFAULT_SAVE_EVERY, resume: bool = False, progress=None,
               distance: str | None = None, verify: bool = False, **hnsw) -> ImportReport:
    """Stream ``source`` into ``collection`` of ``db`` (a Database or a path).

    ``progress``: ``True`` draws a bar of records imported, and one of the graph
    nodes indexed during each checkpoint (tqdm); a callable receives
    ``(records done, records in the source)``. The result is logged on the
    ``needle_mm`` logger (INFO)."""
    for name, value in (("batch_size", batch_size), ("save_every", save_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    db, owned = _open_db(db)
    try:
        created = collection not in db.list_collections()
        coll, previous, total = _target(db, collection, source, distance, hnsw, resume)
        if previous is not None and previous["complete"]:
            report = ImportReport(collection, 0, total, 0.0, previous["position"], notes=["already complete"])
        else:
            with db.engine.explicit_commits():  # records commit with their progress, autocommit or not
                report = _stream(source, db, coll, previous, total, batch_size, save_every, progress,
                                 undo=not owned, created=created)
        if verify:
            from ._verify import verify_import

            report.verify = verify_import(source, coll)
        _progress.log.info("%s", report.summary())
        return report
    except BaseException:
        if owned:
            db.engine.close(warn=False)  # interrupted: the error says what happened, not a warning
        raise
    finally:
        source.close()
        if owned:
            db.close()


def _stream(source, db, coll, previous, total, batch_size, save_every, progress, undo: bool,
            created: bool) -> ImportReport:
    """Insert the source's batches, checkpointing every ``save_every`` records.

    ``undo``: the caller's Database outlives a failure, so on one the records
    inserted since the last checkpoint are taken back out (and a collection this
    import created and never checkpointed is dropped): a later save of the
    caller's must not commit records without the position that says they are
    in, or ``resume`` would insert them again."""
    position = previous["position"] if previous else None
    unsaved_ids: list[str] = []
    checkpoints = 0
    started = time.perf_counter()
    imported = unsaved = 0
    bar = _Progress(progress, source.count(), total, f"{source.kind} -> {coll.name}")

    def checkpoint(complete: bool) -> None:
        db.engine.set_collection_properties(coll.name, {PROGRESS_KEY: {
            "source": source.description, "position": position, "imported": total + imported,
            "complete": complete}})
        db.save(progress=True if progress is True else None)  # a bar of its own: indexing is the slow part

    try:
        for batch in source.batches(position, batch_size):
            if batch.ids:
                coll.insert_many(batch.ids, batch.vectors, batch.metadatas)
                if undo:
                    unsaved_ids.extend(batch.ids)
            position = batch.position
            imported += len(batch.ids)
            unsaved += len(batch.ids)
            bar.update(len(batch.ids))
            if unsaved >= save_every:
                checkpoint(False)
                unsaved, checkpoints = 0, checkpoints + 1
                unsaved_ids.clear()
                failpoints.hit("import.after_checkpoint")
        checkpoint(True)
    except BaseException:
        if undo and not db.engine.closed:
            with contextlib.suppress(NeedleError):  # the failure itself is what the caller must see
                if created and not checkpoints and coll.name in db.list_collections():
                    db.drop_collection(coll.name)
                elif unsaved_ids:
                    coll.delete(unsaved_ids)
        raise
    finally:
        bar.close()
    return ImportReport(coll.name, imported, total + imported, time.perf_counter() - started,
                        previous["position"] if previous else None)
