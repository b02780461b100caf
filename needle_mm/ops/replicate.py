"""``needle replicate``: a replica that follows a file by copying what each commit wrote (SPEC §6.2).

A commit is a set of byte ranges plus a superblock flip (SPEC §6), and each
catalog lists the ranges its latest commits wrote (``Catalog.written``). A
follower whose replica is at generation ``d`` and finds the source at ``g``
copies the ranges of commits ``d + 1 .. g`` (their bytes as of ``g``), the
catalog, then, after an fsync, ``g``'s superblock into its slot, and fsyncs
again: the same order as a commit, so the replica is at every instant a valid
file at ``d`` or ``g`` (the copied ranges are bytes ``d`` does not reference,
as a commit's are). Where that cannot be shown, the replica is copied whole
into a new file that is renamed over it:

* the replica is new, not a copy of this source (another file identity),
  or further behind than the catalog's list of commits reaches;
* a range to write overlaps what ``d`` references (the source reused space
  ``d`` still held, which it may once no reader of the source holds it);
* a process reading the replica holds a generation older than ``d`` (its
  reader table, SPEC §7.3): its bytes may be among those ranges.

The source is read through an ordinary read-only open, which registers in
its reader table, so its writers leave the generation being copied alone.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from .._format.header import SUPERBLOCK_OFFSETS, encode_superblock
from .._storage import failpoints, readers
from .._storage.io import FileIO, replace_file, write_all
from .._storage.lock import WriterLock
from .._storage.mapping import read_header, read_superblock
from ..errors import DatabaseNotFoundError, InvalidArgumentError, NeedleError
from .shipping import Shipment, overlaps, pending_ranges

log = logging.getLogger("needle_mm")

COPY_BLOCK = 1 << 24  # bytes read and written at a time by a whole copy


def _replica_state(dest: str, uuid: bytes):
    """``((generation, catalog, superblock), None)`` of the replica if it is a
    copy of the file ``uuid`` and opens, else ``(None, why it is copied whole)``."""
    if not os.path.exists(dest):
        return None, "a new replica"
    from .._engine.snapshot import Snapshot

    try:
        io = FileIO(dest, writable=False)
    except OSError as exc:
        return None, f"the replica could not be opened ({exc.strerror or exc})"
    try:
        if read_header(io).file_uuid != uuid:
            return None, "the replica is a copy of another file"
        snap = Snapshot.load(io)
        return (snap.generation, snap.catalog, snap.superblock), None
    except NeedleError as exc:
        return None, f"the replica does not open ({exc})"
    finally:
        io.close()


def ship(source: str, dest: str, lock_timeout: float = 60.0) -> Shipment:
    """Bring the replica ``dest`` to the current generation of ``source`` (one
    step), holding the replica's writer lock (``<dest>.lock``: one follower
    per replica; whole copies a killed one left are removed under it)."""
    source, dest = os.fspath(source), os.fspath(dest)
    if not os.path.isfile(source):
        raise DatabaseNotFoundError(f"no database file at {source!r}")
    if is_url(dest):
        from .object_replica import ship_to_store

        return ship_to_store(source, dest)
    if os.path.realpath(source) == os.path.realpath(dest):
        raise InvalidArgumentError(f"{dest!r} is the source itself: a replica needs another path")
    with WriterLock(os.path.realpath(dest), lock_timeout):
        _clean_leftovers(dest)
        return _ship(source, dest)


def is_url(dest: str) -> bool:
    """Whether ``dest`` names an fsspec location (``scheme://...``) rather than a local file."""
    return "://" in dest


def _ship(source: str, dest: str) -> Shipment:
    from ..database import Database

    with Database.open(source, read_only=True, auto_refresh=False) as db:
        snap = db.engine.snapshot
        sb, catalog, buf = snap.superblock, snap.catalog, snap.mapping.buffer
        g = sb.generation
        uuid = db.engine._io.file_uuid
        replica, why = _replica_state(dest, uuid)
        if replica is not None and replica[0] == g:
            return Shipment(g, g, "none", 0)
        if replica is not None:
            d, d_catalog, d_sb = replica
            ranges = pending_ranges(catalog, d, g) if d < g else None
            if d > g:
                why = f"the replica is at generation {d}, past the source's {g}"
            elif ranges is None:
                why = f"the source's catalog no longer lists every commit since generation {d}"
            else:
                catalog_range = (sb.catalog_offset, sb.catalog_offset + sb.catalog_length)
                writes = sorted([*ranges, catalog_range])
                held = d_catalog.used(d_sb.catalog_offset, d_sb.catalog_length)
                table = readers.table_for(os.path.realpath(dest), uuid)
                oldest = table.oldest_read() if table is not None else None
                if overlaps(writes, held):
                    why = "the source reused space the replica's generation still references"
                elif table is None:
                    why = "the replica has no reader table (its readers cannot be seen)"
                elif oldest is not None and oldest < d:
                    why = f"a reader of the replica holds generation {oldest}"
                else:
                    return _ship_ranges(dest, buf, writes, sb, d)
        return _copy_whole(dest, buf, sb, replica[0] if replica else None, why, uuid)


def _ship_ranges(dest: str, buf, writes, sb, d: int) -> Shipment:
    """The commit protocol replayed on the replica: data, fsync, superblock, fsync."""
    io = FileIO(dest, writable=True)
    try:
        shipped = 0
        for lo, hi in writes:
            io.pwrite(buf[lo:hi], lo)
            shipped += hi - lo
        if io.size() < sb.file_length:
            io.extend(sb.file_length)
        failpoints.hit("replicate.after_ranges")
        io.fsync()
        raw = encode_superblock(sb)
        io.pwrite(raw, SUPERBLOCK_OFFSETS[sb.slot])
        io.fsync()
        return Shipment(sb.generation, d, "ranges", shipped + len(raw))
    finally:
        io.close()


def _copy_whole(dest: str, buf, sb, previous: int | None, why: str, uuid: bytes) -> Shipment:
    """The source's file as of ``sb`` into a new file renamed over ``dest``:
    its other superblock slot cleared (it may hold a newer, partly copied
    generation), so the copy opens at ``sb``'s generation. The replica's
    reader table is made first, so every process that opens the copy
    registers the generation it reads (and later shipments see it)."""
    tmp = f"{dest}.replica-{os.getpid()}-{threading.get_ident()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            length = sb.file_length
            for lo in range(0, length, COPY_BLOCK):
                hi = min(length, lo + COPY_BLOCK)
                write_all(fd, buf[lo:hi], lo)
            other = 1 - sb.slot
            write_all(fd, bytes(64), SUPERBLOCK_OFFSETS[other])
            write_all(fd, encode_superblock(sb), SUPERBLOCK_OFFSETS[sb.slot])
            failpoints.hit("replicate.before_rename")
            os.fsync(fd)
        finally:
            os.close(fd)
        real = os.path.realpath(dest)
        readers.forget(real)
        readers.create_table(real, uuid, sb.file_length)
        replace_file(tmp, dest)  # renames, then syncs the directory
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return Shipment(sb.generation, previous, "copy", sb.file_length, why)


def replicate(source, dest, *, follow: bool = False, interval: float = 0.2, stop: threading.Event | None = None,
              on_shipment=None) -> Shipment:
    """Make ``dest`` a replica of ``source`` at its current generation; with
    ``follow``, keep it so, checking every ``interval`` seconds, until ``stop``
    is set (or, from the command line, SIGINT/SIGTERM). Returns the last
    shipment; ``on_shipment`` is called with each one that wrote something."""
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval <= 3600:
        raise InvalidArgumentError(f"interval must be a number of seconds in (0, 3600], got {interval!r}")
    stop = stop or threading.Event()
    # Marks are taken before each shipment, never after: a commit landing just
    # after a shipment then still differs from the marks kept, and is shipped.
    seen = _marks(source, dest)
    last = ship(source, dest)
    _report(last, on_shipment)
    while follow and not stop.wait(interval):
        now = _marks(source, dest)
        if now is not None and now == seen:
            continue  # neither file changed since the last check: nothing to open, nothing to ship
        seen = now
        shipment = ship(source, dest)
        if shipment.mode != "none":
            last = shipment
            _report(shipment, on_shipment)
    return last


def _marks(source: str, dest: str):
    """What a follower compares between checks: the source's file and current
    generation (two superblock reads), and the replica's file; None if either
    cannot be read now (then it ships, which says why)."""
    if is_url(os.fspath(dest)):
        dest_mark = None  # an object store: its manifest is read by the shipment itself
    else:
        try:
            st = os.stat(dest)
        except OSError:
            return None
        dest_mark = (st.st_dev, st.st_ino, st.st_size)
    try:
        io = FileIO(os.fspath(source), writable=False)
    except OSError:
        return None
    try:
        return io.inode(), read_superblock(io).generation, dest_mark
    except NeedleError:
        return None
    finally:
        io.close()


def _report(shipment: Shipment, on_shipment) -> None:
    if shipment.mode == "none":
        return
    log.info("replica at generation %d (%s, %d bytes%s)", shipment.generation, shipment.mode, shipment.bytes,
             f": {shipment.why}" if shipment.why else "")
    if on_shipment is not None:
        on_shipment(shipment)


def _clean_leftovers(dest: str) -> None:
    """Whole copies a killed follower left beside the replica (never renamed: the replica is intact)."""
    folder, base = os.path.split(os.path.abspath(dest))
    for name in os.listdir(folder or "."):
        if name.startswith(base + ".replica-"):
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM (the main thread's handlers), for ``replicate(follow=True)``."""
    event = threading.Event()

    def handler(signum, frame):
        event.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return event


__all__ = ["Shipment", "replicate", "ship", "stop_on_signals"]
