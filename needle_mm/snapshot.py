"""A snapshot: one committed generation of a file, mapped read-only.

Opening costs the same for a thousand records as for ten million: read the
header and both superblocks, read and validate the catalog (its size follows
the number of segments, not records), map the file. Nothing per record.

A snapshot never changes. Segments of a generation are immutable on disk, so
a snapshot stays valid for as long as the process holds it, whatever writers
commit meanwhile; ``refresh`` builds a new one.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

from ._format.catalog import Catalog, CollectionMeta, decode_catalog
from ._format.header import (
    DATA_START,
    HEADER_DTYPE,
    SUPERBLOCK_DTYPE,
    SUPERBLOCK_OFFSETS,
    Header,
    Superblock,
    choose_superblock,
    decode_header,
    decode_superblock,
)
from ._format.segment import SegmentView
from ._storage.io import FileIO
from .errors import CorruptFileError


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


class Snapshot:
    """Catalog + segment views of one generation."""

    def __init__(self, io: FileIO, superblock: Superblock, catalog: Catalog, mapping: Mapping, next_slot: bytes):
        self.io = io
        self.superblock = superblock
        # What the slot of the next generation held when this snapshot was
        # chosen: any commit since has rewritten it, so comparing it with the
        # file is a complete one-pread check for "is there something newer".
        self.next_slot = next_slot
        self.catalog = catalog
        self.mapping = mapping
        self._views: dict[str, list[SegmentView]] = {}

    @property
    def generation(self) -> int:
        return self.superblock.generation

    @classmethod
    def load(cls, io: FileIO, previous: "Snapshot | None" = None) -> "Snapshot":
        sb, next_slot = read_superblocks(io)
        if previous is not None and sb.generation == previous.generation:
            previous.next_slot = next_slot  # e.g. a commit torn before its superblock became valid
            return previous
        size = io.size()
        if sb.file_length < DATA_START or sb.file_length > size:
            raise CorruptFileError(
                f"{io.path!r}: superblock generation {sb.generation} says the file is "
                f"{sb.file_length} bytes but it is {size} bytes (truncated or damaged)"
            )
        if sb.catalog_offset < DATA_START or sb.catalog_offset + sb.catalog_length > sb.file_length:
            raise CorruptFileError(f"{io.path!r}: catalog region lies outside the file")
        raw = io.pread(sb.catalog_length, sb.catalog_offset)
        catalog = decode_catalog(raw, sb.catalog_crc, sb.generation, sb.file_length, io.path)
        mapping = map_file(io, sb.file_length, previous.mapping if previous else None)
        return cls(io, sb, catalog, mapping, next_slot)

    def is_current(self) -> bool:
        """False when a newer generation may have been committed since.

        Read through the map, not with a pread (a system call per search): a
        shared file map shows other processes' writes as they land, and the
        superblocks lie below DATA_START, which every valid file exceeds."""
        start = SUPERBLOCK_OFFSETS[self.generation % 2]  # generation g+1 goes to slot g mod 2
        return self.mapping.buffer[start:start + SUPERBLOCK_DTYPE.itemsize] == self.next_slot

    def collection(self, name: str) -> CollectionMeta | None:
        return self.catalog.collections.get(name)

    def segments(self, name: str) -> list[SegmentView]:
        views = self._views.get(name)
        if views is None:
            meta = self.catalog.collections[name]
            views = [SegmentView(self.mapping.buffer, s, meta.dim, meta.hnsw.m, self.io.path, meta.dtype)
                     for s in meta.segments]
            self._views[name] = views
        return views
