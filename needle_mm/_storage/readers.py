"""The reader table ``<file>.readers``: which generations live processes still read (SPEC §7.3).

A writer may reuse the bytes of regions that no committed generation a live
process may still read refers to. Each process that holds snapshots of a
file owns one 64-byte *slot* of the table and keeps in it the oldest
generation it holds; it owns the slot by holding an open-file-description
lock (Linux ``F_OFD_SETLK``) on the slot's bytes, which the kernel drops when
the process dies, however it dies. A writer reads the table under the writer
lock and counts a slot only while its lock is held: a crashed reader never
blocks reuse, a pinned or stalled one blocks reuse of what it can see.

Only a writer creates the table, under the writer lock, and records in its
header the file's length then (its *floor*): a reader that found no table
holds a generation whose bytes all lie below that floor, and nothing below
it is ever reused, so it needs no slot. Readers never create the table; where
it cannot be opened for writing (a read-only file system, no permission) a
reader runs unregistered, which is safe where no writer can exist. Where OFD
locks are missing (not Linux), writers never reuse space (``reuse_supported``).

Registering costs a reader one small write and one superblock read per
snapshot, never anything per query.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
import weakref
from collections import Counter

SLOT_SIZE = 64
SLOT = struct.Struct("<QQ")  # generation (0: holds nothing), pid (informational)
HEADER = struct.Struct("<8sQ")  # magic, floor; slot 0 of the file (never claimed)
MAGIC = b"NDLREADS"
GROW_SLOTS = 64
_FLOCK = "hh4xqqi4x"  # struct flock on Linux x86-64/aarch64: type, whence, start, len, pid
_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)
_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", None)


def reuse_supported() -> bool:
    return _OFD_SETLK is not None and _OFD_GETLK is not None


def table_path(real_path: str) -> str:
    return real_path + ".readers"


def _lock(fd: int, cmd: int, kind: int, slot: int) -> bytes:
    return fcntl.fcntl(fd, cmd, struct.pack(_FLOCK, kind, os.SEEK_SET, slot * SLOT_SIZE, SLOT_SIZE, 0))


class ReaderTable:
    """This process's view of one file's reader table: one descriptor, one
    slot (claimed when first needed), and a count of each generation the
    process holds. Thread-safe."""

    def __init__(self, path: str, fd: int, floor: int):
        self.path = path
        self.floor = floor  # nothing below it is ever reused (see the module docstring)
        self._fd = fd
        self._slot: int | None = None
        self._held: Counter = Counter()
        self._published = 0
        self._mutex = threading.Lock()

    # ----------------------------------------------------------------- readers

    def hold(self, generation: int) -> None:
        with self._mutex:
            self._held[generation] += 1
            self._publish()

    def release(self, generation: int) -> None:
        with self._mutex:
            if self._held[generation] > 0:
                self._held[generation] -= 1
                if not self._held[generation]:
                    del self._held[generation]
            self._publish()

    def _publish(self) -> None:
        oldest = min(self._held) if self._held else 0
        if oldest == self._published:
            return
        if self._slot is None:
            if not oldest:
                return
            self._slot = self._claim()
        os.pwrite(self._fd, SLOT.pack(oldest, os.getpid()).ljust(SLOT_SIZE, b"\0"), self._slot * SLOT_SIZE)
        self._published = oldest

    def _claim(self) -> int:
        """The first slot whose lock nobody holds (free, or its process died), locked."""
        slot = 1
        while True:
            count = max(os.fstat(self._fd).st_size // SLOT_SIZE, slot + 1)
            for s in range(slot, count):
                try:
                    _lock(self._fd, _OFD_SETLK, fcntl.F_WRLCK, s)
                except OSError as exc:
                    if exc.errno in (errno.EACCES, errno.EAGAIN):
                        continue
                    raise
                return s
            slot = count
            os.ftruncate(self._fd, (count + GROW_SLOTS) * SLOT_SIZE)

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's descriptor and slot lock are shared
        with it, so the child opens its own and publishes what it holds."""
        fd = os.open(self.path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        os.close(self._fd)
        self._fd, self._slot, self._published = fd, None, 0
        self._mutex = threading.Lock()
        self._publish()

    # ----------------------------------------------------------------- writers

    def oldest_read(self) -> int | None:
        """The oldest generation a live process holds (None: none holds any).

        Probed through a descriptor of its own, so this process's slot (locked
        through the other one) counts like any other process's."""
        probe = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            size = os.fstat(probe).st_size
            data = os.pread(probe, size, 0)
            oldest = None
            for s in range(1, size // SLOT_SIZE):
                generation, _pid = SLOT.unpack_from(data, s * SLOT_SIZE)
                if not generation or (oldest is not None and generation >= oldest):
                    continue
                answer = _lock(probe, _OFD_GETLK, fcntl.F_RDLCK, s)
                if struct.unpack(_FLOCK, answer)[0] != fcntl.F_UNLCK:  # someone holds the slot: alive
                    oldest = generation
            return oldest
        finally:
            os.close(probe)


_tables: dict[str, ReaderTable] = {}
_tables_lock = threading.Lock()


def _open(path: str) -> ReaderTable | None:
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return None
        raise
    raw = os.pread(fd, HEADER.size, 0)
    magic, floor = HEADER.unpack(raw) if len(raw) == HEADER.size else (b"", 0)
    if magic != MAGIC:  # not ours (or damaged): never trust it, never reuse space through it
        os.close(fd)
        return None
    return ReaderTable(path, fd, floor)


def table_for(real_path: str) -> ReaderTable | None:
    """The process's reader table of a file, or None: no table yet (looked for
    again on the next call), not openable for writing, or no OFD locks."""
    if not reuse_supported():
        return None
    with _tables_lock:
        table = _tables.get(real_path)
        if table is None:
            table = _open(table_path(real_path))
            if table is not None:
                _tables[real_path] = table
        return table


def create_table(real_path: str, floor: int) -> ReaderTable | None:
    """The file's reader table, made now if missing with ``floor`` the file's
    length; the caller holds the writer lock (so two writers never race).
    Made whole under a temporary name and renamed, so a reader sees no
    table or a complete one."""
    table = table_for(real_path)
    if table is not None or not reuse_supported():
        return table
    path = table_path(real_path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return None
        raise
    try:
        os.pwrite(fd, HEADER.pack(MAGIC, floor).ljust(SLOT_SIZE, b"\0"), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    return table_for(real_path)


def forget(real_path: str) -> None:
    """Drop the process's table of a file whose reader table was removed (a
    rebuild's own copy): its next use opens the file's table anew. Pins of
    the old one release into it harmlessly."""
    with _tables_lock:
        _tables.pop(real_path, None)


class Pin:
    """One hold of a generation in the reader table, released when the last
    object referring to the pin (a snapshot and its segment views) is gone."""

    __slots__ = ("generation", "__weakref__")

    def __init__(self, table: ReaderTable | None, generation: int):
        self.generation = generation
        if table is not None:
            table.hold(generation)
            weakref.finalize(self, table.release, generation)


def _after_fork_in_child() -> None:
    global _tables_lock
    _tables_lock = threading.Lock()
    for table in _tables.values():
        if table is not None:
            try:
                table.reset_after_fork()
            except OSError:
                pass


os.register_at_fork(after_in_child=_after_fork_in_child)
