"""The engine under ``Database``: one open file, its snapshots, the pending
writes of its collections, and the commit protocol (SPEC.md §6, §7).

Any number of processes may open a file. Each holds an immutable snapshot of
one committed generation through a read-only memory map. Writes collect in
memory in the writing process and become one new generation at ``save()``,
which appends regions and then flips a superblock slot while holding the
writer lock ``<file>.lock`` (``<file>`` the path with symlinks resolved, so
every spelling of one file shares one lock). Threads may share one Engine
(SPEC §7.2, ``thread_guard``): every call runs inside ``reading()`` or
``changing()``, and in-place edits of the state inside ``exclusive()``.

``Database`` and ``Collection`` are its faces; ``ops`` and ``importers`` use
its methods without a leading underscore, never the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import os
import threading
import time
import warnings

import numpy as np

from .. import _progress
from .._format.catalog import Catalog, CollectionDescriptor
from .._format.header import (
    DATA_START,
    PAGE_SIZE,
    SUPERBLOCK_OFFSETS,
    WRITE_VERSION,
    Superblock,
    crc32,
    encode_header,
    encode_superblock,
)
from .._storage import failpoints
from .._storage.io import FileIO, replace_file, write_new_file
from .._storage.lock import DEFAULT_TIMEOUT, WriterLock
from .._storage.mapping import read_header, read_superblock
from .._version import __version__ as _version
from ..errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    DatabaseClosedError,
    DatabaseNotFoundError,
    DuplicateIdError,
    InvalidArgumentError,
    DurabilityError,
    LinkedFileError,
    ReadOnlyError,
    TransactionError,
    UnsupportedVersionError,
)
from . import search
from .plan import RegionWriter, plan_catalog
from .space import FreeSpace, check_free_list, finish as finish_space, spans as _spans
from .._storage import readers
from .snapshot import Snapshot
from .state import CollectionState
from .thread_guard import ThreadGuard

__all__ = ["Engine", "create_file"]


class _Calls(threading.local):
    depth = 0  # this thread's nested API calls on one Database: only the outermost refreshes


def create_file(path: str, generation: int = 1) -> None:
    """Create an empty database file at ``path`` (atomically: SPEC §6) whose
    first generation is ``generation`` (a rebuild continues the numbering of
    the file it replaces, so no process sees the generation go backwards)."""
    header = encode_header(f"needle_mm {_version}")
    catalog = Catalog(generation=generation, collections={}).encode()
    slot = (generation - 1) % 2  # generation g sits in slot (g - 1) mod 2 (SPEC §3)
    sb = Superblock(generation=generation, file_length=DATA_START + len(catalog), catalog_offset=DATA_START,
                    catalog_length=len(catalog), catalog_crc=crc32(catalog), slot=slot,
                    commit_time_ns=time.time_ns())
    pieces = [
        (0, header.ljust(PAGE_SIZE, b"\0")),
        (SUPERBLOCK_OFFSETS[slot], encode_superblock(sb).ljust(PAGE_SIZE, b"\0")),
        (SUPERBLOCK_OFFSETS[1 - slot], b"\0" * PAGE_SIZE),
        (DATA_START, catalog),
    ]
    write_new_file(path, pieces)


def _create_if_missing(path: str, real_path: str, timeout: float) -> None:
    """Create the file under its writer lock; if that fails (a full disk) and
    no file exists, the lock file this call made is removed again."""
    lock = WriterLock(real_path, timeout)
    lock_path = lock.path
    made_lock = not os.path.exists(lock_path)
    try:
        with lock:
            if not os.path.exists(path):
                create_file(path)
    except BaseException:
        if made_lock and not os.path.exists(path):
            with contextlib.suppress(OSError):
                os.remove(lock_path)
        raise


def _remove_stale_rebuilds(real_path: str) -> None:
    """Remove ``<file>.rebuild-<pid>`` copies left by a rebuild whose process is gone (SPEC §7.1)."""
    for leftover in glob.glob(glob.escape(real_path) + ".rebuild-*"):
        pid = leftover.rsplit("-", 1)[1].removesuffix(".lock").removesuffix(".readers")
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)
        except OSError:  # alive, owned by another user
            pass


def _check_single_link(io: FileIO, path: str) -> None:
    """Writers refuse a file with several hard links (SPEC §7): the lock is
    found by path, so writers through two links would not exclude each
    other, and a rebuild replaces the file by rename, which a link cannot follow."""
    links = os.fstat(io.fd).st_nlink
    if links > 1:
        raise LinkedFileError(
            f"{path!r} has {links} hard links: Needle cannot lock one file reached through several links; "
            "open it with read_only=True, or give it a single name (copy it, or use a symlink)")


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


class Engine:
    """One open Needle file and this process's view of it (see the module docstring)."""

    def __init__(self, path: str, io: FileIO, snapshot: Snapshot, read_only: bool, lock_timeout: float,
                 auto_refresh: bool, autocommit: bool = False):
        self.path = path
        self.read_only = read_only
        self.auto_refresh = auto_refresh
        self.autocommit = autocommit
        self._io = io
        self._snapshot = snapshot
        self._real_path = os.path.realpath(path)
        self._lock = None if read_only else WriterLock(self._real_path, lock_timeout)
        self._states: dict[str, CollectionState] = {}
        self._dropped: set[str] = set()
        self._closed = False
        self._transaction_thread: int | None = None  # the thread whose transaction is open
        self._guard = ThreadGuard()
        # A read-only Database never changes its state in place (a refresh
        # swaps whole objects), so its readers need no shared hold.
        self._view_lock = None if read_only else self._guard.view
        self._calls = _Calls()
        self._deferred = 0  # >0: autocommit waits for explicit saves (an import's checkpoints)
        self._synced_generation = 0  # the last generation this Engine committed and synced itself

    # ------------------------------------------------------------ open/close

    @classmethod
    def open(cls, path: str | os.PathLike, read_only: bool = False, *,
             lock_timeout: float = DEFAULT_TIMEOUT, auto_refresh: bool = True, autocommit: bool = False) -> "Engine":
        """Open (and, unless ``read_only``, create) the file at ``path``: see ``Database.open``."""
        path = os.fspath(path)
        if not path:
            raise DatabaseNotFoundError("the database path is empty")
        if os.path.isdir(path):
            raise DatabaseNotFoundError(f"{path!r} is a directory, not a database file")
        if read_only:
            if not os.path.exists(path):
                raise DatabaseNotFoundError(f"no database file at {path!r} (read-only open does not create one)")
        else:
            real = os.path.realpath(path)
            if not os.path.exists(path):
                folder = os.path.dirname(real)
                if not os.path.isdir(folder):  # a typo must not create a directory tree (the lock file would)
                    raise DatabaseNotFoundError(f"cannot create {path!r}: the folder {folder!r} does not exist")
                _create_if_missing(path, real, lock_timeout)
            _remove_stale_rebuilds(real)
        try:
            io = FileIO(path, writable=not read_only)
        except IsADirectoryError:
            raise DatabaseNotFoundError(f"{path!r} is a directory, not a database file") from None
        if not read_only:
            try:
                _check_single_link(io, path)
            except BaseException:
                io.close()
                raise
        snapshot = _first_snapshot(io, path, read_only)
        return cls(path, io, snapshot, read_only, lock_timeout, bool(auto_refresh), bool(autocommit) and not read_only)

    def close(self, warn: bool = True, stacklevel: int = 3) -> None:
        """Release the file. Unsaved writes are discarded, with a ResourceWarning
        that says how many (``warn=False``: on an error path, where the error is
        the news). Waits for calls of other threads that are running on this Database."""
        discarded = 0
        with self._guard.mutation, self.exclusive():
            if not self._closed:
                discarded = self._unsaved()
                self._closed = True
                self._states = {}
                self._dropped = set()
                self._snapshot = None
                self._io.close()
        if discarded and warn:  # after releasing everything: a warning turned into an error leaves nothing open
            self._warn_discarded(discarded, stacklevel + 1)

    def pending_writes(self) -> int:
        """How many writes a close would discard: records written (inserted,
        upserted, updated), ids deleted, collections created or dropped,
        property changes."""
        count = len(self._dropped)
        for state in list(self._states.values()):
            pending = len(state.pending.index)
            count += pending + len(state.touched - state.pending.index.keys()) + bool(state.property_changes)
            count += state.text_index is not None
            count += state.fresh
        return count

    def _unsaved(self) -> int:
        """What closing now would discard (0 for a reader or a clean Engine)."""
        return 0 if self.read_only or not self.dirty else self.pending_writes()

    def _warn_discarded(self, count: int, stacklevel: int) -> None:
        advice = ("their commit failed; call save() to retry it before closing" if self.autocommit else
                  "call save() (or use the Database as a context manager, or open it with autocommit=True)")
        warnings.warn(f"{self.path!r} was closed with {count} unsaved write{'s' if count != 1 else ''}, now "
                      f"discarded: {advice}", ResourceWarning, stacklevel=stacklevel)

    def __del__(self):
        # Dropped without close(): released, with the same warning if writes are lost.
        if getattr(self, "_closed", True):
            return
        discarded = self._unsaved()
        self._closed = True
        self._io.close()
        if discarded:
            self._warn_discarded(discarded, 2)

    # ------------------------------------------------------------ collections

    def check_open(self) -> None:
        if self._closed:
            raise DatabaseClosedError(f"database {self.path!r} is closed")

    def names(self) -> list[str]:
        snapshot = self._snapshot
        if snapshot is None:
            self.check_open()
        names = set(snapshot.catalog.collections) - self._dropped
        names.update(self._states)
        return sorted(names)

    # ------------------------------------------------------------ threads
    #
    # Every public call runs inside one of these (see thread_guard): reads
    # between begin_read/end_read, changes inside changing, and in-place
    # changes of the state additionally inside exclusive.

    def begin_read(self) -> None:
        calls = self._calls
        depth = calls.depth
        if not depth and self.auto_refresh:
            snapshot = self._snapshot
            if snapshot is None:  # closed
                self.check_open()
            if not snapshot.is_current():
                self._refresh_unless_busy()
        lock = self._view_lock
        if lock is not None:
            lock.acquire_shared()
        calls.depth = depth + 1
        if self._closed:
            self.end_read()
            self.check_open()

    def end_read(self) -> None:
        self._calls.depth -= 1
        lock = self._view_lock
        if lock is not None:
            lock.release_shared()

    @contextlib.contextmanager
    def reading(self):
        self.begin_read()
        try:
            yield
        finally:
            self.end_read()

    def _refresh_unless_busy(self) -> None:
        """Auto-refresh for a read: skipped while another thread changes the
        state (a save moves this Database to the newest generation itself)."""
        mutation = self._guard.mutation
        if mutation.acquire(blocking=False):
            try:
                if not self._closed:
                    self._refresh_locked()
            finally:
                mutation.release()

    @contextlib.contextmanager
    def changing(self, what: str):
        """Hold the mutation lock for a change (refreshed first, for an outermost call)."""
        self.check_writable(what)
        with self._guard.mutation:
            depth = self._calls.depth
            self._calls.depth = depth + 1
            try:
                self.check_open()
                if not depth and self.auto_refresh and not self._snapshot.is_current():
                    self._refresh_locked()
                yield
                # autocommit: the outermost write call is its own commit (not inside a
                # transaction, nor while an operation groups its own commits)
                if not depth and self.autocommit and self._transaction_thread is None and not self._deferred:
                    self._save()
            finally:
                self._calls.depth = depth

    @contextlib.contextmanager
    def exclusive(self):
        """No reader runs while the state changes in place (caller holds the mutation lock)."""
        lock = self._guard.view
        lock.acquire_exclusive()
        try:
            yield
        finally:
            lock.release_exclusive()

    def state(self, name: str) -> CollectionState:
        """The state of collection ``name``; the caller is inside ``reading`` or ``changing``."""
        states = self._states  # before the snapshot: swaps write them the other way round (_adopt)
        state = states.get(name)
        if state is not None:
            if state.clash is not None:
                raise CollectionExistsError(state.clash)
            return state
        snapshot = self._snapshot
        if snapshot is None:
            self.check_open()  # closed meanwhile (a read-only Engine's readers hold no lock)
        meta = snapshot.collection(name) if name not in self._dropped else None
        if meta is None:
            raise CollectionNotFoundError(f"no collection named {name!r} in {self.path!r}; "
                                          f"collections: {self.names()}")
        state = CollectionState(meta, snapshot.segments(name), fresh=False)
        # Two readers may both build it: either object is the same committed state.
        return states.setdefault(name, state)

    def writable_state(self, name: str) -> CollectionState:
        self.check_open()
        if self.read_only:
            raise ReadOnlyError(f"database {self.path!r} was opened read-only; cannot write to {name!r}")
        return self.state(name)

    def check_writable(self, what: str) -> None:
        self.check_open()
        if self.read_only:
            raise ReadOnlyError(f"database {self.path!r} was opened read-only; cannot {what}")

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def snapshot(self) -> Snapshot:
        """The committed generation this process reads (immutable)."""
        snapshot = self._snapshot
        if snapshot is None:
            self.check_open()
            raise DatabaseClosedError(f"database {self.path!r} is closed")
        return snapshot

    def create_collection(self, name: str, meta: CollectionDescriptor) -> None:
        """Add a new, empty collection described by ``meta`` (committed at the next save)."""
        with self.changing(f"create collection {name!r}"):
            if name in self.names():
                raise CollectionExistsError(f"collection {name!r} already exists in {self.path!r}")
            with self.exclusive():
                self._states[name] = CollectionState(meta, [], fresh=True)

    @contextlib.contextmanager
    def explicit_commits(self):
        """Within the block, commits happen only at ``save()``, even under autocommit:
        for operations whose commits must group writes with what they record
        about them (an import commits its records with its progress)."""
        with self._guard.mutation:
            self._deferred += 1
        try:
            yield
        finally:
            with self._guard.mutation:
                self._deferred -= 1

    def live_batches(self, name: str, size: int = 4096):
        """``(ids, vectors, metadata JSON bytes)`` of every live record of collection
        ``name``, in batches of ``size``; vectors a float32 ``[m, dim]`` array, or
        a list of SparseVector for a sparse collection. The sources are taken
        under one read hold: committed segments never change, so batches may be
        consumed after it (a writer's own pending records are read as they are)."""
        with self.reading():
            sources = list(search.sources(self.state(name), None))
        for source, f in sources:
            slots = np.flatnonzero(search.live_mask(source.n, f.excluded))
            for start in range(0, slots.shape[0], size):
                part = slots[start:start + size].tolist()
                yield source.ids_at(part), source.vectors_at(part), [source.meta_bytes_at(s) for s in part]

    def collection_properties(self, name: str) -> dict:
        """The properties of collection ``name`` (committed, with this process's pending changes)."""
        with self.reading():
            return dict(self.state(name).properties())

    def set_collection_properties(self, name: str, changes: dict) -> None:
        """Set properties of collection ``name`` (a value of None removes one); committed with the next save."""
        with self.changing(f"set properties of collection {name!r}"):
            state = self.writable_state(name)
            with self.exclusive():
                state.property_changes.update(changes)

    def create_text_index(self, name: str, text) -> None:
        """Give collection ``name`` the full-text index ``text`` (a ``catalog.TextIndex``),
        built over every record and committed by the next ``save`` (SPEC §5.11)."""
        with self.changing(f"create a text index on collection {name!r}"):
            state = self.writable_state(name)
            meta = state.descriptor
            current = meta.text or state.text_index
            if current is not None:
                if current == text:
                    return
                raise InvalidArgumentError(f"collection {name!r} already has a text index on field "
                                           f"{current.field!r} with other settings: rebuild the file to change it "
                                           "(needle rebuild --text-field)")
            if meta.kind != "dense":
                raise InvalidArgumentError(f"collection {name!r} is sparse: text indexes are for dense collections")
            with self.exclusive():
                state.text_index = text

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        with self.reading():
            return self.names()

    def drop_collection(self, name: str) -> None:
        """Delete a collection and all its records (on disk at the next ``save``)."""
        with self.changing(f"drop collection {name!r}"):
            clashed = self._states.get(name)
            if clashed is not None and clashed.clash is not None:  # ours only: theirs stays
                with self.exclusive():
                    del self._states[name]
                return
            self.state(name)  # raises if unknown
            with self.exclusive():
                del self._states[name]
                if name in self._snapshot.catalog.collections:
                    self._dropped.add(name)

    # ------------------------------------------------------------ checkpoints

    @property
    def dirty(self) -> bool:
        """True when there are writes not yet saved."""
        # (a copy: readers of other threads may add clean states meanwhile)
        return bool(self._dropped) or any(s.dirty for s in list(self._states.values()))

    def refresh(self) -> bool:
        """Move to the newest committed generation (of the file at our real path): see ``Database.refresh``."""
        self.check_open()
        with self._guard.mutation:
            self.check_open()
            return self._refresh_locked()

    def _refresh_locked(self) -> bool:
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
        """The inode at this file's real path (fixed at open: neither a later
        chdir nor a retargeted symlink makes this Engine follow another file;
        a rebuild replaces exactly that name, SPEC §7.1)."""
        try:
            st = os.stat(self._real_path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _reopen(self) -> Snapshot | None:
        """Open the file now at our path in place of the one we hold (None: it is the same file)."""
        try:
            io = FileIO(self._real_path, writable=not self.read_only)
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
        for name, state in list(self._states.items()):
            meta = snapshot.collection(name)
            if not state.dirty:
                continue  # recreated lazily from the new snapshot
            if state.fresh and meta is not None and name not in self._dropped:
                # Both created it: our records join theirs if they hold the same kind of
                # vectors (the index parameters are theirs: the first commit decides them).
                ours = state.descriptor
                differences = [f"{what} {theirs!r} (here {mine!r})" for what, theirs, mine in (
                    ("dimension", meta.dim, ours.dim), ("distance", meta.distance, ours.distance),
                    ("kind", meta.kind, ours.kind), ("dtype", meta.dtype, ours.dtype),
                    ("quantization", meta.quantization, ours.quantization)) if theirs != mine]
                if differences:
                    # Kept as it is, marked: every other collection stays usable, and
                    # save refuses until this one is dropped (which drops ours only).
                    state.clash = (f"collection {name!r} was created meanwhile by another process with "
                                   + ", ".join(differences) + "; this process's writes to it cannot be saved: "
                                   "drop it here (db.drop_collection, which keeps the other process's) and "
                                   "write to it again, or write to another name")
                else:
                    state = state.rebase(meta, snapshot.segments(name))
            elif not state.fresh:
                if meta is None:  # dropped by another writer: our pending records form it anew
                    fresh = CollectionState(state.descriptor.with_segments((), state.descriptor.next_segment_id), [], True)
                    fresh.pending = state.pending
                    fresh.property_changes = state.property_changes
                    fresh.text_index = state.text_index
                    fresh.inserted = state.inserted
                    state = fresh
                else:
                    state = state.rebase(meta, snapshot.segments(name))
            states[name] = state
        # Snapshot before states: a lock-free reader (read-only Engine) reads
        # states first, so a state it builds from the old snapshot lands only in
        # the old dict, never in the new one (see state()).
        with self.exclusive():
            self._snapshot = snapshot
            self._states = states

    def _plan(self, current: Superblock, superseded: bool = False) -> tuple[RegionWriter, object]:
        """Everything the next generation writes, planned on top of ``current``
        (our snapshot's generation: the caller checks that under the lock)."""
        old = self._snapshot.catalog
        sb = self._snapshot.superblock
        check_free_list(old, sb.catalog_offset, sb.catalog_length, self.path)
        floor = old.reuse_floor if old.reuse_floor is not None else sb.file_length
        table = readers.table_for(self._real_path, self._io.file_uuid)
        reusable = None
        if table is not None:
            floor = max(floor, min(table.floor, sb.file_length))
            # Readers register before they read, and only the generation current
            # then (SPEC §7.3): reading the table before the lock is safe for a
            # plan on top of this generation (the caller checks it under the lock).
            # What this generation released is written into only once the
            # generation is durable (see _write_generation, SPEC §6.1).
            oldest = table.oldest_read()
            reusable = sb.generation if oldest is None else min(sb.generation, oldest)
        space = FreeSpace(tuple(f for f in old.free if f[0] >= floor), reusable)
        writer = RegionWriter(current.file_length, space)
        catalog = plan_catalog(old.collections, dict(self._states), self._dropped, writer, current.generation + 1)
        if superseded:
            catalog = dataclasses.replace(catalog, superseded=True)
        _, ref = finish_space(catalog, old, sb.catalog_offset, sb.catalog_length, floor, space, writer)
        return writer, ref

    def save(self, progress=None) -> None:
        """Commit every pending write (SPEC §6); what it raises: see ``Database.save``."""
        self.check_writable("save")
        with self._guard.mutation:
            self.check_open()
            if self._transaction_thread == threading.get_ident():
                raise TransactionError("save() inside a transaction: the transaction commits when its block ends")
            with _progress.reporting(progress, "indexing", " node"):
                self._save()

    def _save(self) -> None:
        """Commit the pending writes; the caller holds the mutation lock."""
        if not self.dirty:
            return
        self._check_clashes()
        started = time.perf_counter()
        records = sum(state.pending.n for state in self._states.values())
        # Plan (graph insertion included: the slow part) against our snapshot
        # without the file lock; under it, write the plan if the file is the
        # one we planned against (same inode, same generation), else re-plan
        # on top of the newer generation or of the file that replaced ours.
        planned = self._plan(self._snapshot.superblock)
        with self._lock:
            _check_single_link(self._io, self.path)
            current = read_superblock(self._io)
            at_path = self._path_inode()
            if at_path is None:
                raise DatabaseNotFoundError(f"{self.path!r} was removed; nothing was saved")
            if current.generation != self._snapshot.generation or at_path != self._io.inode():
                self._adopt(self._newest_snapshot(check_path=True))
                current = read_superblock(self._io)
                planned = None
            self._check_inserts()
            if planned is None or current.generation != self._snapshot.generation:
                planned = self._plan(current)
            # Under the lock: the reader table's floor is this generation's length.
            readers.create_table(self._real_path, self._io.file_uuid, current.file_length)
            self._write_generation(current, planned)
        if _progress.log.isEnabledFor(logging.INFO):
            written = sum(len(data) for _, data in planned[0].pieces)
            _progress.log.info("saved %s generation %d: %d record%s written, %s bytes, in %.3f s", self.path,
                               self._snapshot.generation, records, "" if records == 1 else "s", f"{written:,}",
                               time.perf_counter() - started)

    def _check_clashes(self) -> None:
        for state in list(self._states.values()):
            if state.clash is not None:
                raise CollectionExistsError(state.clash)

    def _check_inserts(self) -> None:
        """An ``insert`` never replaces a record: raise if another writer committed one of its ids
        meanwhile (or a different collection of the same name as one created here)."""
        self._check_clashes()
        for name, state in list(self._states.items()):
            if state.conflicts:
                ids = sorted(state.conflicts)
                raise DuplicateIdError(
                    f"id {ids[0]!r}" + (f" (and {len(ids) - 1} more)" if len(ids) > 1 else "")
                    + f" was inserted here and meanwhile committed by another writer to collection {name!r}; "
                    "nothing was saved: upsert or delete it, then save again")

    @contextlib.contextmanager
    def transaction(self, exclusive: bool = False):
        """One commit for the block, or nothing if it raises; other threads' changes wait for the
        block (the change lock is held throughout): see ``Database.transaction``."""
        self.check_writable("start a transaction")
        me = threading.get_ident()
        with self._guard.mutation:  # other threads' writes and saves wait for the whole block
            self.check_open()
            if self._transaction_thread is not None:
                raise TransactionError(f"a transaction is already open on {self.path!r}; transactions do not nest")
            if exclusive:
                self._lock.__enter__()
            # Rollback point: pending writes are only in this process's memory.
            saved = ({name: state.clone() for name, state in list(self._states.items())}, set(self._dropped),
                     self._snapshot)
            self._transaction_thread = me
            try:
                yield self
                if self._closed:  # closed inside the block: its writes went with it
                    raise DatabaseClosedError(f"database {self.path!r} was closed inside a transaction; "
                                              "nothing of the block was committed")
                self._save()
            except DurabilityError:
                raise  # committed: nothing to roll back
            except BaseException:
                if not self._closed:
                    with self.exclusive():
                        states, dropped, self._snapshot = saved  # snapshot before states: see _adopt
                        self._states, self._dropped = states, dropped
                raise
            finally:
                self._transaction_thread = None
                if exclusive:
                    self._lock.__exit__(None, None, None)

    def replace_file(self, new_path: str, generation: int) -> bool:
        """Put the file at ``new_path`` in place of this one (SPEC §7.1 steps 2-4)
        if nothing was committed since ``generation``; False (and this Engine
        refreshed) if something was. Under the writer lock: the rename (with
        the directory synced) and the last, ``superseded`` commit to the old file."""
        self.check_writable("replace the file")
        with self._guard.mutation, self._lock:
            if read_superblock(self._io).generation != generation or self._path_inode() != self._io.inode():
                self._refresh_locked()
                return False
            replace_file(new_path, self._real_path)
            self._mark_superseded()
        return True

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
        if writer.newest_reused >= current.generation and self._synced_generation != current.generation:
            # We write into what generation g released. g may be only in the
            # page cache (its writer killed before syncing its superblock), and
            # a power cut would then bring back g - 1, which still uses those
            # bytes: make g durable first (SPEC §6.1).
            io.fsync()
        # Data goes only to bytes no committed generation references: past
        # file_length, or past the used length inside a growable region's reserve.
        # Disk blocks are reserved for what is written, not for reserves (they
        # stay holes until appended to: a full disk then fails that pwrite).
        for start, stop in _spans(writer.pieces, current.file_length):
            io.allocate(start, stop - start)
        for offset, data in writer.pieces:
            io.pwrite(data, offset)
        for offset, length in writer.holes:  # free bytes no live snapshot references (SPEC §6.1)
            io.punch_hole(offset, length)
        io.extend(file_length)
        failpoints.hit("commit.after_data_write")
        io.fsync()
        failpoints.hit("commit.after_data_sync")
        slot = current.generation % 2  # generation g+1 goes to slot g mod 2 (SPEC §3)
        sb = Superblock(current.generation + 1, file_length, catalog_ref.offset, catalog_ref.length,
                        catalog_ref.crc32, slot, time.time_ns())
        try:
            io.pwrite(encode_superblock(sb), SUPERBLOCK_OFFSETS[slot])
            failpoints.hit("commit.after_superblock_write")
            io.fsync()
            failpoints.hit("commit.after_superblock_sync")
        except OSError as exc:
            # The superblock may be in the page cache, where other processes
            # already read it: if the file now names our generation, it is
            # committed, and this Database must agree with the file.
            try:
                published = read_superblock(io).generation == sb.generation
            except Exception:
                published = False
            if not published:
                raise
            self._become(Snapshot.load(io, self._snapshot))
            raise DurabilityError(
                f"{self.path!r}: generation {sb.generation} is committed and visible to other processes, but "
                f"syncing it failed ({exc.strerror or exc}): it may not survive a power loss") from exc
        self._synced_generation = sb.generation
        self._become(Snapshot.load(io, self._snapshot))
        self._trim(writer.released_now, sb.generation)

    def _trim(self, extents: list[tuple[int, int]], generation: int) -> None:
        """Give back the disk blocks of what our commit (``generation``,
        durable) released, if no live process holds an older generation: no
        one can read those bytes any more, and the file can open only at
        ``generation`` or later (SPEC §6.1). An optimisation only: the next
        commit does it otherwise, and a failure here changes nothing."""
        if not extents:
            return
        table = readers.table_for(self._real_path, self._io.file_uuid)
        try:
            oldest = table.oldest_read() if table is not None else None
            if oldest is None or oldest < generation:
                return
            for offset, length in extents:
                self._io.punch_hole(offset, length)
        except OSError:
            pass

    def _become(self, snapshot: Snapshot) -> None:
        """Read ``snapshot``, our own commit: nothing is pending any more."""
        with self.exclusive():
            self._snapshot = snapshot  # before the states: see _adopt
            self._states = {}
            self._dropped = set()
