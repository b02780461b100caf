"""A snapshot: one committed generation of a file, mapped read-only.

Opening costs the same for a thousand records as for ten million: read the
header and both superblocks, read and validate the catalog (its size follows
the number of segments, not records), map the file. Nothing per record.

A snapshot never changes. Segments of a generation are immutable on disk, so
a snapshot stays valid for as long as the process holds it, whatever writers
commit meanwhile; ``refresh`` builds a new one.
"""

from __future__ import annotations


from .._format.catalog import Catalog, CollectionDescriptor, decode_catalog
from .._format.header import DATA_START, SUPERBLOCK_DTYPE, SUPERBLOCK_OFFSETS, Superblock
from .._format.segment import SegmentView
from .._storage.io import FileIO
from .._storage.mapping import Mapping, map_file, read_superblocks
from .._storage.readers import Pin
from .._storage import readers
from ..errors import CorruptFileError


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
        # This generation's hold in the reader table, shared by the segment
        # views (released when the snapshot and every view of it are gone).
        self.pin: Pin | None = None

    @property
    def generation(self) -> int:
        return self.superblock.generation

    @classmethod
    def load(cls, io: FileIO, previous: "Snapshot | None" = None) -> "Snapshot":
        while True:
            sb, next_slot = read_superblocks(io)
            if previous is not None and sb.generation == previous.generation:
                previous.next_slot = next_slot  # e.g. a commit torn before its superblock became valid
                return previous
            # Register the generation, then check it is still current: a writer
            # that read the reader table before we registered plans on top of
            # this generation, and reuses nothing it references. No table yet
            # (looked for after choosing the generation): every byte of it lies
            # below the floor of the table a writer makes later (SPEC §7.3).
            table = readers.table_for(io.real_path, io.file_uuid)
            pin = Pin(table, sb.generation)
            if table is None or read_superblocks(io)[0].generation == sb.generation:
                break
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
        if catalog.catalog_reserved is not None and not (
                sb.catalog_length <= catalog.catalog_reserved
                and sb.catalog_offset + catalog.catalog_reserved <= sb.file_length):
            raise CorruptFileError(f"{io.path!r}: catalog_reserved {catalog.catalog_reserved} does not cover the "
                                   f"catalog ({sb.catalog_length} bytes) inside the file")
        mapping = map_file(io, sb.file_length, previous.mapping if previous else None)
        snapshot = cls(io, sb, catalog, mapping, next_slot)
        snapshot.pin = pin
        return snapshot

    def is_current(self) -> bool:
        """False when a newer generation may have been committed since.

        Read through the map, not with a pread (a system call per search): a
        shared file map shows other processes' writes as they land, and the
        superblocks lie below DATA_START, which every valid file exceeds."""
        start = SUPERBLOCK_OFFSETS[self.generation % 2]  # generation g+1 goes to slot g mod 2
        return self.mapping.buffer[start:start + SUPERBLOCK_DTYPE.itemsize] == self.next_slot

    def collection(self, name: str) -> CollectionDescriptor | None:
        return self.catalog.collections.get(name)

    def segments(self, name: str) -> list[SegmentView]:
        views = self._views.get(name)
        if views is None:
            meta = self.catalog.collections[name]
            views = [SegmentView(self.mapping.buffer, s, meta.dim, meta.hnsw.m, self.io.path, meta.dtype, self.pin)
                     for s in meta.segments]
            self._views[name] = views
        return views
