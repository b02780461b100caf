"""The reader table ``<file>.readers``: which generations live processes still read (SPEC §7.3).

A writer may reuse the bytes of regions that no committed generation a live
process may still read refers to. Each process that holds snapshots of a
file owns one 64-byte *slot* of the table and keeps in it the oldest
generation it holds; it owns the slot by holding an open-file-description
lock (Linux ``F_OFD_SETLK``) on the slot's bytes, which the kernel drops when
the process dies, however it dies. A writer reads the table under the writer
lock and counts a slot only while its lock is held: a crashed reader never
blocks reuse, a pinned or stalled one blocks reuse of what it can see.

The table belongs to one file: its header names the file's ``file_uuid``
(a rebuilt file has a new one, and its writer makes a new table), and a
process checks at every snapshot that the table it uses is still the one at
the path. Only a writer creates a table, under the writer lock, and records
in its header the file's length then (its *floor*): a reader that found no
table holds a generation whose bytes all lie below that floor, and nothing
below it is ever reused, so it needs no slot. A reader that may read the
table but not write it holds a shared lock on the *anonymous* bytes of the
header instead, and writers reuse nothing while such a lock exists. Where
OFD locks are missing (not Linux), writers never reuse space.

Registering costs a reader one small write, a stat and one superblock read
per snapshot, never anything per query.
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
HEADER = struct.Struct("<8sQ16s")  # magic, floor, file_uuid; slot 0 of the file (never claimed)
MAGIC = b"NDLREADS"
ANONYMOUS = (48, 16)  # bytes of slot 0 that readers without write access lock (shared)
GROW_SLOTS = 64
_FLOCK = "hh4xqqi4x"  # struct flock on Linux x86-64/aarch64: type, whence, start, len, pid
_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)
_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", None)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NO_ACCESS = (errno.EROFS, errno.EACCES, errno.EPERM)


def reuse_supported() -> bool:
    return _OFD_SETLK is not None and _OFD_GETLK is not None


def table_path(real_path: str) -> str:
    return real_path + ".readers"


def _lock(fd: int, cmd: int, kind: int, start: int, length: int) -> bytes:
    return fcntl.fcntl(fd, cmd, struct.pack(_FLOCK, kind, os.SEEK_SET, start, length, 0))


def _held_by_someone(fd: int, start: int, length: int) -> bool:
    answer = _lock(fd, _OFD_GETLK, fcntl.F_WRLCK, start, length)
    return struct.unpack(_FLOCK, answer)[0] != fcntl.F_UNLCK


class ReaderTable:
    """This process's view of one file's reader table: one descriptor, one
    slot (claimed when first needed), and a count of each generation the
    process holds. Thread-safe; re-entrant, because a snapshot's hold may be
    released by the garbage collector while this table is being updated."""

    def __init__(self, path: str, fd: int, floor: int, file_uuid: bytes, writable: bool):
        self.path = path
        self.floor = floor  # nothing below it is ever reused (see the module docstring)
        self.file_uuid = file_uuid
        self.writable = writable  # False: registers anonymously (a shared lock, no slot)
        self.inode = os.fstat(fd).st_ino
        self._fd = fd
        self._slot: int | None = None
        self._held: Counter = Counter()
        self._published = 0
        self._mutex = threading.RLock()
        self._disabled = False  # a forked child that could not open its own descriptor

    # ----------------------------------------------------------------- readers

    def hold(self, generation: int) -> None:
        with self._mutex:
            self._held[generation] += 1
            try:
                self._publish()
            except BaseException:
                self._drop(generation)
                raise

    def release(self, generation: int) -> None:
        with self._mutex:
            self._drop(generation)
            try:
                self._publish()
            except OSError:
                pass  # an older value stays published: it only holds back more reuse

    def _drop(self, generation: int) -> None:
        if self._held[generation] > 0:
            self._held[generation] -= 1
        if not self._held[generation]:
            del self._held[generation]

    def _publish(self) -> None:
        if self._disabled:
            return
        oldest = min(self._held) if self._held else 0
        if oldest == self._published:
            return
        if not self.writable:
            _lock(self._fd, _OFD_SETLK, fcntl.F_RDLCK if oldest else fcntl.F_UNLCK, *ANONYMOUS)
            self._published = oldest
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
                    _lock(self._fd, _OFD_SETLK, fcntl.F_WRLCK, s * SLOT_SIZE, SLOT_SIZE)
                except OSError as exc:
                    if exc.errno in (errno.EACCES, errno.EAGAIN):
                        continue
                    raise
                return s
            slot = count
            grown = (count + GROW_SLOTS) * SLOT_SIZE
            if os.fstat(self._fd).st_size < grown:  # only ever grow: others may have grown it meanwhile
                os.ftruncate(self._fd, grown)

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's descriptor and slot lock are shared
        with it, so the child opens its own and publishes what it holds (if
        it cannot, it publishes nothing rather than write the parent's slot)."""
        self._mutex = threading.RLock()
        try:
            fd = os.open(self.path, (os.O_RDWR if self.writable else os.O_RDONLY) | _CLOEXEC)
        except OSError:
            self._disabled = True
            return
        os.close(self._fd)
        self._fd, self._slot, self._published = fd, None, 0
        self._publish()

    # ----------------------------------------------------------------- writers

    def oldest_read(self) -> int | None:
        """The oldest generation a live process holds (None: none holds any;
        0: a reader without write access holds something, so nothing may be reused).

        Probed through a new open of this process's own descriptor (the path
        may name another file by now), so this process's slot, locked through
        the other one, counts like any other process's."""
        try:
            probe = os.open(f"/proc/self/fd/{self._fd}", os.O_RDONLY | _CLOEXEC)
        except OSError:
            return 0  # cannot look: reuse nothing
        try:
            if _held_by_someone(probe, *ANONYMOUS):
                return 0
            size = os.fstat(probe).st_size
            data = os.pread(probe, size, 0)
            oldest = None
            for s in range(1, size // SLOT_SIZE):
                generation, _pid = SLOT.unpack_from(data, s * SLOT_SIZE)
                if not generation or (oldest is not None and generation >= oldest):
                    continue
                if _held_by_someone(probe, s * SLOT_SIZE, SLOT_SIZE):  # its process is alive
                    oldest = generation
            return oldest
        finally:
            os.close(probe)


_tables: dict[str, ReaderTable] = {}
_tables_lock = threading.Lock()


def _open(path: str, file_uuid: bytes) -> ReaderTable | None:
    writable = True
    try:
        fd = os.open(path, os.O_RDWR | _CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno not in _NO_ACCESS:
            raise
        writable = False
        try:
            fd = os.open(path, os.O_RDONLY | _CLOEXEC)
        except OSError as exc2:
            if exc2.errno in _NO_ACCESS or exc2.errno == errno.ENOENT:
                return None
            raise
    raw = os.pread(fd, HEADER.size, 0)
    magic, floor, uuid = HEADER.unpack(raw) if len(raw) == HEADER.size else (b"", 0, b"")
    if magic != MAGIC or uuid != file_uuid:  # not this file's (a replaced file's, or damaged)
        os.close(fd)
        return None
    return ReaderTable(path, fd, floor, uuid, writable)


def table_for(real_path: str, file_uuid: bytes) -> ReaderTable | None:
    """The process's reader table of the file ``file_uuid`` at ``real_path``,
    or None: no table of this file yet (looked for again on the next call),
    not readable, or no OFD locks."""
    if not reuse_supported():
        return None
    path = table_path(real_path)
    with _tables_lock:
        table = _tables.get(real_path)
        if table is not None:
            try:
                current = os.stat(path).st_ino
            except OSError:
                current = None
            if table.file_uuid == file_uuid and table.inode == current:
                return table
            del _tables[real_path]  # replaced or removed: the old one keeps serving the holds it has
        table = _open(path, file_uuid)
        if table is not None:
            _tables[real_path] = table
        return table


def create_table(real_path: str, file_uuid: bytes, floor: int) -> ReaderTable | None:
    """The file's reader table, made now if missing (or left by a file that
    was replaced) with ``floor`` the file's length; the caller holds the
    writer lock, so two writers never race. Made whole under a temporary
    name, then linked in (never over a table of this file: readers that use
    it would vanish from writers' sight) or renamed over a stale one."""
    table = table_for(real_path, file_uuid)
    if table is not None or not reuse_supported():
        return table
    path = table_path(real_path)
    stale = os.path.exists(path)
    if stale:
        try:
            with open(path, "rb") as f:
                raw = f.read(HEADER.size)
        except OSError:
            return None  # exists, unreadable: leave it, reuse nothing
        if len(raw) == HEADER.size and HEADER.unpack(raw)[0] == MAGIC and HEADER.unpack(raw)[2] == file_uuid:
            return None  # this file's table, but we may not write it: reuse nothing
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | _CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno in _NO_ACCESS:
            return None
        raise
    try:
        os.pwrite(fd, HEADER.pack(MAGIC, floor, file_uuid).ljust(SLOT_SIZE, b"\0"), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if stale:
            os.rename(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # made meanwhile (a writer that did not hold the lock?): use what is there
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return table_for(real_path, file_uuid)


def forget(real_path: str) -> None:
    """Drop the process's table of a file whose reader table was removed (a
    rebuild's own copy): its next use opens the file's table anew. Holds of
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
        table.reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
