"""Reading a Needle file without changing it: the header, the superblocks,
and read-only memory maps (with the huge-page hint)."""

from __future__ import annotations

import mmap
from dataclasses import dataclass

from .._format.header import (HEADER_DTYPE, SUPERBLOCK_DTYPE, SUPERBLOCK_OFFSETS, Header, Superblock,
                              choose_superblock, decode_header, decode_superblock)
from .io import FileIO


def read_header(io: FileIO) -> Header:
    return decode_header(io.pread(HEADER_DTYPE.itemsize, 0), io.path)


def read_superblock(io: FileIO) -> Superblock:
    return read_superblocks(io)[0]


def read_superblocks(io: FileIO) -> tuple[Superblock, bytes]:
    """The current superblock, and the raw bytes of the other slot: the one
    the next commit will write (generation g+1 goes to slot g mod 2)."""
    raws = [io.pread(SUPERBLOCK_DTYPE.itemsize, off) for off in SUPERBLOCK_OFFSETS]
    sb = choose_superblock([decode_superblock(raw, i) for i, raw in enumerate(raws)], io.path)
    return sb, raws[sb.generation % 2]


@dataclass
class Mapping:
    """A read-only map of the first ``length`` bytes of the file."""

    buffer: mmap.mmap
    length: int
    inode: tuple[int, int]


def map_file(io: FileIO, length: int, previous: Mapping | None) -> Mapping:
    inode = io.inode()
    if previous is not None and previous.length >= length and previous.inode == inode:
        return previous
    buffer = mmap.mmap(io.fd, length, access=mmap.ACCESS_READ)
    # Pages this map faults in from disk then arrive as 2 MB page-cache folios
    # (where the file system supports them, e.g. ext4 on Linux >= 6.16),
    # mapped by one TLB entry each: minilm-384 HNSW search 5-9 % faster,
    # measured. (Pages a writer's large pwrite put in the cache are often
    # 2 MB already.)
    ask_huge_pages(buffer)
    return Mapping(buffer, length, inode)


def ask_huge_pages(area: mmap.mmap) -> None:
    """Ask the OS to back ``area`` with huge (2 MB) pages: searches and builds
    read rows at random, and with 4 KB pages nearly every row read also
    misses the TLB. Only a hint: where it is refused or unknown, nothing changes."""
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            area.madvise(mmap.MADV_HUGEPAGE)
        except OSError:  # e.g. transparent huge pages disabled
            pass


PAGE = mmap.PAGESIZE
_budget: list[int | None] = []  # computed once per process


def memory_budget() -> int | None:
    """Bytes this process may keep in memory, page cache included: its cgroup's
    limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) when it has one,
    else the machine's ``MemAvailable``; None where neither can be read."""
    if _budget:
        return _budget[0]
    found = None
    try:
        with open("/proc/self/cgroup", encoding="ascii") as f:
            lines = f.read().splitlines()
        for line in lines:
            hid, controllers, rel = line.split(":", 2)
            if hid == "0" and controllers == "":
                candidate = f"/sys/fs/cgroup{rel}/memory.max"
            elif "memory" in controllers.split(","):
                candidate = f"/sys/fs/cgroup/memory{rel}/memory.limit_in_bytes"
            else:
                continue
            try:
                with open(candidate, encoding="ascii") as f:
                    value = f.read().strip()
            except OSError:
                continue
            if value.isdigit() and int(value) < 1 << 60:  # "max" or v1's huge number: no limit
                found = int(value) if found is None else min(found, int(value))
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    found = available if found is None else min(found, available)
                    break
    except (OSError, ValueError, IndexError):
        pass
    _budget.append(found)
    return found


def random_access(area: mmap.mmap, offset: int, length: int) -> None:
    """Tell the OS that ``area[offset:offset+length]`` is read at random: a fault
    there reads its own page, not the read-ahead window around it (which, for
    rows read one here and one there, would fill a small memory with rows no
    one asked for). Only a hint."""
    start = offset - offset % PAGE
    try:
        area.madvise(mmap.MADV_RANDOM, start, offset + length - start)
    except (OSError, ValueError, AttributeError):
        pass


def will_need(area: mmap.mmap, offsets, length: int) -> None:
    """Start reading the pages of ``area[o:o+length]`` for every ``o`` in
    ``offsets`` now, all at once (``MADV_WILLNEED``): their reads from disk
    overlap instead of each waiting for the one before. Only a hint."""
    try:
        for o in offsets:
            start = o - o % PAGE
            area.madvise(mmap.MADV_WILLNEED, start, o + length - start)
    except (OSError, ValueError, AttributeError):
        pass


_MADV_PAGEOUT, _MADV_COLD = 21, 20  # Linux >= 5.4 (the mmap module names neither)


def release(area: mmap.mmap, offsets, length: int) -> None:
    """Let the OS reclaim the pages of ``area[o:o+length]`` first (``MADV_PAGEOUT``,
    else ``MADV_COLD``): rows read once to rescore a search, which would
    otherwise push out of a small memory the pages every search reads (codes
    and graph). Only a hint."""
    for advice in (_MADV_PAGEOUT, _MADV_COLD):
        try:
            for o in offsets:
                start = o - o % PAGE
                area.madvise(advice, start, o + length - start)
            return
        except (OSError, ValueError, AttributeError):
            continue
