"""The public Database: one file, named collections, checkpoints.

Concurrency model (SPEC.md §6, §7): any number of processes may open a file.
Each holds an immutable snapshot of one committed generation through a
read-only memory map. Writes collect in memory in the writing process and
become one new generation at ``save()``, which appends regions and then flips
a superblock slot while holding the writer lock ``<path>.lock``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time

from . import __version__ as _version
from ._format.catalog import MAX_NAME_BYTES, Catalog, CollectionMeta, HnswParams
from ._format.header import (
    DATA_START,
    PAGE_SIZE,
    SUPERBLOCK_OFFSETS,
    WRITE_VERSION,
    Superblock,
    crc32,
    encode_header,
    encode_superblock,
)
from ._storage import failpoints
from ._storage.io import FileIO, write_new_file
from ._storage.lock import DEFAULT_TIMEOUT, WriterLock
from .collection import Collection
from .commit import RegionWriter, plan_catalog
from .config import CollectionConfig, DistanceFunction
from .errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    DatabaseClosedError,
    DatabaseNotFoundError,
    InvalidConfigError,
    ReadOnlyError,
    TransactionError,
    UnsupportedVersionError,
)
from .snapshot import Snapshot, read_header, read_superblock
from .state import CollectionState

__all__ = ["Database"]


def _initial_file(path: str) -> None:
    header = encode_header(f"needle_mm {_version}")
    catalog = Catalog(generation=1, collections={}).encode()
    sb = Superblock(generation=1, file_length=DATA_START + len(catalog), catalog_offset=DATA_START,
                    catalog_length=len(catalog), catalog_crc=crc32(catalog), slot=0,
                    commit_time_ns=time.time_ns())
    pieces = [
        (0, header.ljust(PAGE_SIZE, b"\0")),
        (SUPERBLOCK_OFFSETS[0], encode_superblock(sb).ljust(PAGE_SIZE, b"\0")),
        (SUPERBLOCK_OFFSETS[1], b"\0" * PAGE_SIZE),
        (DATA_START, catalog),
    ]
    write_new_file(path, pieces)


def _first_snapshot(io: FileIO, path: str, read_only: bool) -> Snapshot:
    """The current generation of a just-opened file (its version checked); closes ``io`` on failure."""
    try:
        header = read_header(io)
        if not read_only and header.write_version > WRITE_VERSION:
            raise UnsupportedVersionError(
                f"{path!r} has format write version {header.write_version}; this needle_mm writes "
                f"version {WRITE_VERSION}: open it with read_only=True or upgrade needle_mm"
            )
        return Snapshot.load(io)
    except BaseException:
        io.close()
        raise


def _check_name(name) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidConfigError(f"collection names must be non-empty strings, got {name!r}")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidConfigError(f"collection name is longer than {MAX_NAME_BYTES} bytes of UTF-8")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidConfigError(f"collection name {name!r} is not valid Unicode") from None
    return name


class Database:
    """A Needle file. Open with :meth:`Database.open`.

    Use as a context manager to save on a clean exit and close always::

        with needle.Database.open("vectors.needle") as db:
            db.create_collection("docs", 384)
            ...
    """

    def __init__(self, path: str, io: FileIO, snapshot: Snapshot, read_only: bool, lock_timeout: float,
                 auto_refresh: bool):
        self.path = path
        self.read_only = read_only
        self.auto_refresh = auto_refresh
        self._io = io
        self._snapshot = snapshot
        self._lock = None if read_only else WriterLock(path, lock_timeout)
        self._states: dict[str, CollectionState] = {}
        self._dropped: set[str] = set()
        self._closed = False
        self._in_transaction = False

    # ------------------------------------------------------------ open/close

    @classmethod
    def open(cls, path: str | os.PathLike, read_only: bool = False, *,
             lock_timeout: float = DEFAULT_TIMEOUT, auto_refresh: bool = True) -> "Database":
        """Open (and, unless ``read_only``, create if missing) the database file at ``path``.

        Parameters
        ----------
        path : str or path-like
            The ``.needle`` file. Its writer lock is ``<path>.lock``.
        read_only : bool
            Open for reading only: never writes anything, not even a lock file.
        lock_timeout : float
            Seconds a ``save()`` waits for another writer before raising
            :class:`~needle_mm.errors.LockTimeoutError`.
        auto_refresh : bool
            Before each operation, check (one 64-byte read) whether another
            process has saved a newer generation, and move to it as
            :meth:`refresh` does. With ``False`` the process keeps reading the
            generation it has until it calls :meth:`refresh` or :meth:`save`.
        """
        path = os.fspath(path)
        if read_only:
            if not os.path.exists(path):
                raise DatabaseNotFoundError(f"no database file at {path!r} (read-only open does not create one)")
        elif not os.path.exists(path):
            with WriterLock(path, lock_timeout):
                if not os.path.exists(path):
                    _initial_file(path)
        try:
            io = FileIO(path, writable=not read_only)
        except IsADirectoryError:
            raise DatabaseNotFoundError(f"{path!r} is a directory, not a database file") from None
        snapshot = _first_snapshot(io, path, read_only)
        return cls(path, io, snapshot, read_only, lock_timeout, bool(auto_refresh))

    def close(self) -> None:
        """Release the file. Unsaved writes are discarded."""
        if not self._closed:
            self._closed = True
            self._states.clear()
            self._snapshot = None
            self._io.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and not self._closed and not self.read_only:
                self.save()
        finally:
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"generation {self._snapshot.generation}"
        return f"Database({self.path!r}, {'read-only, ' if self.read_only else ''}{state})"

    # ------------------------------------------------------------ collections

    def _check_open(self) -> None:
        if self._closed:
            raise DatabaseClosedError(f"database {self.path!r} is closed")

    def _names(self) -> list[str]:
        names = set(self._snapshot.catalog.collections) - self._dropped
        names.update(self._states)
        return sorted(names)

    def _check_open_and_current(self) -> None:
        self._check_open()
        if self.auto_refresh and not self._snapshot.is_current():
            self.refresh()

    def _state(self, name: str) -> CollectionState:
        self._check_open_and_current()
        state = self._states.get(name)
        if state is not None:
            return state
        meta = self._snapshot.collection(name) if name not in self._dropped else None
        if meta is None:
            raise CollectionNotFoundError(f"no collection named {name!r} in {self.path!r}; "
                                          f"collections: {self._names()}")
        state = CollectionState(meta, self._snapshot.segments(name), fresh=False)
        self._states[name] = state
        return state

    def _writable_state(self, name: str) -> CollectionState:
        self._check_open()
        if self.read_only:
            raise ReadOnlyError(f"database {self.path!r} was opened read-only; cannot write to {name!r}")
        return self._state(name)

    def _check_writable(self, what: str) -> None:
        self._check_open()
        if self.read_only:
            raise ReadOnlyError(f"database {self.path!r} was opened read-only; cannot {what}")

    def create_collection(self, name: str, dimension: int, distance: DistanceFunction | str = DistanceFunction.Cosine,
                          **hnsw) -> Collection:
        """Create a collection of ``dimension``-long vectors (cosine distance by default).

        Extra keyword arguments are those of :class:`CollectionConfig`: the HNSW
        parameters (``m``, ``ef_construction``, ``ef_search``, ``seed``) and
        ``sparse=True`` for a sparse collection (with ``distance="dot"``).
        """
        return self.create_collection_with_config(name, CollectionConfig(dimension, distance, **hnsw))

    def create_collection_with_config(self, name: str, config: CollectionConfig) -> Collection:
        """Create a collection from a :class:`CollectionConfig`."""
        self._check_writable(f"create collection {name!r}")
        _check_name(name)
        if not isinstance(config, CollectionConfig):
            raise InvalidConfigError(f"config must be a CollectionConfig, got {type(config).__name__}")
        if name in self._names():
            raise CollectionExistsError(f"collection {name!r} already exists in {self.path!r}")
        meta = CollectionMeta(
            name=name, dim=config.dimension, distance=config.distance.value, dtype=config.dtype,
            kind="sparse" if config.sparse else "dense",
            hnsw=HnswParams(config.m, config.ef_construction, config.ef_search, config.seed),
        )
        self._states[name] = CollectionState(meta, [], fresh=True)
        return Collection(self, name)

    def collection(self, name: str) -> Collection:
        """The collection called ``name``; :class:`CollectionNotFoundError` if there is none."""
        self._state(name)
        return Collection(self, name)

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        self._check_open_and_current()
        return self._names()

    def drop_collection(self, name: str) -> None:
        """Delete a collection and all its records (on disk at the next ``save``)."""
        self._check_writable(f"drop collection {name!r}")
        self._state(name)  # raises if unknown
        del self._states[name]
        if name in self._snapshot.catalog.collections:
            self._dropped.add(name)

    # ------------------------------------------------------------ checkpoints

    @property
    def generation(self) -> int:
        """The committed generation this process reads (grows with every save)."""
        self._check_open()
        return self._snapshot.generation

    @property
    def dirty(self) -> bool:
        """True when there are writes not yet saved."""
        return bool(self._dropped) or any(s.dirty for s in self._states.values())

    def refresh(self) -> bool:
        """Move to the newest committed generation; returns True if it changed.

        Pending (unsaved) writes of this process are kept and stay on top. If
        ``needle rebuild`` or ``needle compact`` has replaced the file at this
        path, the process moves to the new file (SPEC §7).
        """
        self._check_open()
        previous = self._snapshot
        snapshot = self._newest_snapshot(check_path=True)
        if snapshot is previous:
            return False
        self._adopt(snapshot)
        return True

    def _newest_snapshot(self, check_path: bool = False) -> Snapshot:
        """The newest generation of the file at our path: of the file we have
        open, or of the one that replaced it (its last commit says so, or, with
        ``check_path``, the path now names another inode)."""
        snapshot = Snapshot.load(self._io, self._snapshot)
        if snapshot.catalog.superseded or (check_path and self._path_inode() not in (None, self._io.inode())):
            snapshot = self._reopen() or snapshot
        return snapshot

    def _path_inode(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _reopen(self) -> Snapshot | None:
        """Open the file now at our path in place of the one we hold (None: it is the same file)."""
        try:
            io = FileIO(self.path, writable=not self.read_only)
        except FileNotFoundError:
            raise DatabaseNotFoundError(f"{self.path!r} was replaced and then removed") from None
        try:
            same = io.inode() == self._io.inode()
        except BaseException:
            io.close()
            raise
        if same:
            io.close()
            return None
        snapshot = _first_snapshot(io, self.path, self.read_only)
        # Arrays handed out earlier keep the old mapping alive on their own.
        self._io.close()
        self._io = io
        return snapshot

    def _adopt(self, snapshot: Snapshot) -> None:
        states = {}
        for name, state in self._states.items():
            meta = snapshot.collection(name)
            if not state.dirty:
                continue  # recreated lazily from the new snapshot
            if state.fresh and meta is not None and name not in self._dropped:
                if (meta.dim, meta.distance) != (state.meta.dim, state.meta.distance):
                    raise CollectionExistsError(
                        f"collection {name!r} was created meanwhile by another process with "
                        f"dimension {meta.dim} and distance {meta.distance}")
                state = state.rebase(meta, snapshot.segments(name))
            elif not state.fresh:
                if meta is None:  # dropped by another writer: our pending records form it anew
                    fresh = CollectionState(state.meta.with_segments((), state.meta.next_segment_id), [], True)
                    fresh.pending = state.pending
                    fresh.property_changes = state.property_changes
                    state = fresh
                else:
                    state = state.rebase(meta, snapshot.segments(name))
            states[name] = state
        self._states = states
        self._snapshot = snapshot

    def _plan(self, current: Superblock, superseded: bool = False) -> tuple[RegionWriter, object]:
        """Everything the next generation writes, planned on top of ``current``."""
        writer = RegionWriter(current.file_length)
        catalog = plan_catalog(self._snapshot.catalog.collections, self._states, self._dropped, writer,
                               current.generation + 1)
        if superseded:
            catalog = dataclasses.replace(catalog, superseded=True)
        return writer, writer.add(memoryview(catalog.encode()))

    def save(self) -> None:
        """Checkpoint: make every write so far durable and visible to other processes.

        Raises
        ------
        LockTimeoutError
            Another writer held ``<path>.lock`` longer than ``lock_timeout``.
        OSError
            The disk is full or failing; the previous checkpoint is intact and
            the writes stay pending, so ``save()`` can be retried.
        """
        self._check_writable("save")
        if self._in_transaction:
            raise TransactionError("save() inside a transaction: the transaction commits when its block ends")
        self._save()

    def _save(self) -> None:
        if not self.dirty:
            return
        # Plan (graph insertion included: the slow part) against our snapshot
        # without the lock; under the lock, write it if no other writer
        # committed meanwhile, else re-plan on top of their generation (or of
        # the file that replaced ours).
        planned = self._plan(self._snapshot.superblock)
        with self._lock:
            current = read_superblock(self._io)
            if current.generation != self._snapshot.generation:
                self._adopt(self._newest_snapshot())
                current = self._snapshot.superblock
                planned = self._plan(current)
            self._write_generation(current, planned)

    @contextlib.contextmanager
    def transaction(self, exclusive: bool = False):
        """Group writes into one checkpoint: all of them become visible to other
        processes together when the block ends, or none if it raises.

        ::

            with db.transaction():
                db.collection("orders").upsert("o1", v, {"state": "paid"})
                db.collection("ledger").insert("l9", w, {"order": "o1"})

        Reads inside the block see its own writes. Writes made before the block
        and not yet saved are committed with it (and kept if it rolls back).
        The writer lock is taken only to commit, at the end; with
        ``exclusive=True`` it is held for the whole block, so no other process
        commits in between (its ``save()`` waits, up to its ``lock_timeout``).
        Transactions do not nest, and ``save()`` inside one raises
        :class:`TransactionError`.
        """
        self._check_writable("start a transaction")
        if self._in_transaction:
            raise TransactionError(f"a transaction is already open on {self.path!r}; transactions do not nest")
        if exclusive:
            self._lock.__enter__()
        # Rollback point: pending writes are only in this process's memory.
        saved = ({name: state.clone() for name, state in self._states.items()}, set(self._dropped), self._snapshot)
        self._in_transaction = True
        try:
            yield self
            self._save()
        except BaseException:
            if not self._closed:
                self._states, self._dropped, self._snapshot = saved
            raise
        finally:
            self._in_transaction = False
            if exclusive:
                self._lock.__exit__(None, None, None)

    def _mark_superseded(self) -> None:
        """Commit one last generation saying the file at our path is another
        one now; the caller holds the writer lock and has replaced the path."""
        current = read_superblock(self._io)
        if current.generation != self._snapshot.generation:
            self._adopt(Snapshot.load(self._io, self._snapshot))
        self._write_generation(current, self._plan(current, superseded=True))

    def _write_generation(self, current: Superblock, planned) -> None:
        """The commit protocol (SPEC.md §6); the caller holds the writer lock."""
        io = self._io
        writer, catalog_ref = planned
        file_length = writer.end
        # Data goes only to bytes no committed generation references: past
        # file_length, or past the used length inside a growable region's reserve.
        io.allocate(current.file_length, writer.end - current.file_length)
        for offset, data in writer.pieces:
            io.pwrite(data, offset)
        io.extend(file_length)
        failpoints.hit("commit.after_data_write")
        io.fsync()
        failpoints.hit("commit.after_data_sync")
        slot = current.generation % 2  # generation g+1 goes to slot g mod 2 (SPEC §3)
        sb = Superblock(current.generation + 1, file_length, catalog_ref.offset, catalog_ref.length,
                        catalog_ref.crc32, slot, time.time_ns())
        io.pwrite(encode_superblock(sb), SUPERBLOCK_OFFSETS[slot])
        failpoints.hit("commit.after_superblock_write")
        io.fsync()
        failpoints.hit("commit.after_superblock_sync")
        snapshot = Snapshot.load(io, self._snapshot)
        self._states = {}
        self._dropped = set()
        self._snapshot = snapshot
