"""Free space: which bytes a commit may write again (SPEC §6.1).

A commit releases the extents its predecessor referenced and it does not
(an adjacency written whole again, a relocated region, merged chunks, the
old catalog); the catalog lists them with the generation that released
them. An extent released by generation ``f`` is referenced by no generation
``>= f``, so once every live process holds only generations ``>= f`` (the
reader table, ``_storage/readers.py``) a commit may place new regions in it.
Offsets below ``reuse_floor`` are never freed: they may be read by versions
of needle_mm that do not register in the reader table (SPEC §6.1 says why
that is enough).
"""

from __future__ import annotations

from dataclasses import replace

from .._format.catalog import WRITTEN_KEPT, Catalog
from .._format.header import align_up
from ..errors import CorruptFileError


class FreeSpace:
    """The free extents of one commit: those released at or before
    ``reusable_through`` may receive new regions (best fit)."""

    def __init__(self, free: tuple[tuple[int, int, int, int], ...], reusable_through: int | None):
        # touching extents that are all reusable now are one (a region may span them)
        self.extents = [list(f) for f in _merged(list(free), reusable_through)]
        self.reusable_through = reusable_through
        self.newest_used = 0  # the latest release generation of an extent this commit writes into

    def take(self, size: int) -> int | None:
        """The offset of ``size`` bytes carved from a reusable extent, or None."""
        if self.reusable_through is None:
            return None
        best = None
        for e in self.extents:
            if e[2] <= self.reusable_through and e[1] >= size and (best is None or e[1] < best[1]):
                best = e
        if best is None:
            return None
        offset = best[0]
        self.newest_used = max(self.newest_used, best[2])
        best[0] += size
        best[1] -= size
        if not best[1]:
            self.extents.remove(best)
        return offset


def check_free_list(old: Catalog, catalog_offset: int, catalog_length: int, path: str) -> None:
    """A free list that overlaps a referenced byte would let a commit overwrite
    live data: refuse such a file (it is damaged or hostile) before planning on it."""
    # (an empty region, e.g. the postings of a sparse collection whose vectors are all
    # empty, owns no bytes: its offset may lie in freed space without overlapping it)
    used = sorted(e for e in old.extents(catalog_offset, catalog_length) if e[1] > e[0])
    free = sorted((f[0], f[0] + f[1]) for f in old.free)
    i = 0
    for a, b in free:
        while i < len(used) and used[i][1] <= a:
            i += 1
        if i < len(used) and used[i][0] < b:
            raise CorruptFileError(f"{path!r}: the free-space list names bytes [{a}, {b}) that a region uses; "
                                   "no commit can write to this file (run needle verify; needle compact rewrites it)")


def _merged(extents: list[tuple[int, int, int, int]], reusable_through: int | None) -> list[tuple[int, int, int, int]]:
    """Touching extents joined where that delays no reuse: both released by one
    generation, or both reusable already (the join takes the later release)."""
    def reusable(released: int) -> bool:
        return reusable_through is not None and released <= reusable_through

    out: list[list[int]] = []
    for offset, length, released, punched in sorted(extents):
        if out and out[-1][0] + out[-1][1] == offset and (
                out[-1][2] == released or (reusable(out[-1][2]) and reusable(released))):
            out[-1][1] += length
            out[-1][2] = max(out[-1][2], released)
            out[-1][3] = min(out[-1][3], punched)
        else:
            out.append([offset, length, released, punched])
    return [tuple(e) for e in out]


PUNCH_MIN = 64 * 1024  # smaller free extents keep their blocks (not worth a system call)


def spans(pieces: list[tuple[int, bytes]], start: int) -> list[tuple[int, int]]:
    """The byte ranges ``pieces`` cover at or past ``start``, merged where they touch."""
    spans: list[list[int]] = []
    for offset, data in sorted(pieces):
        lo, hi = max(offset, start), offset + len(data)
        if hi <= lo:
            continue
        if spans and lo <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    return [(lo, hi) for lo, hi in spans]


def finish(catalog: Catalog, old: Catalog, old_offset: int, old_length: int, floor: int,
           space: FreeSpace, writer) -> tuple[Catalog, object]:
    """``catalog`` with its free list, placed: the released extents of this
    commit at or above ``floor`` added, the catalog's own extent carved from
    free space (or appended by ``writer``), and reusable extents not yet
    given back to the file system listed in ``writer.holes`` (their blocks
    are freed; they read as zeros). Returns (catalog, its region reference)."""
    now = set(catalog.extents(0, 0)[1:])  # the regions, without a catalog extent
    released = [(a, b - a, catalog.generation, 0) for a, b in set(old.extents(old_offset, old_length)) - now
                if a >= floor and b > a]
    # bytes this commit placed but no region references (a segment dropped after
    # planning): free at once, as if released by this generation
    released += [(a, b - a, catalog.generation, 0) for a, b in writer.allocated if (a, b) not in now and b > a]
    free = _merged([tuple(e) for e in space.extents] + released, space.reusable_through)
    # what this commit writes besides its catalog, after what the latest ones wrote (SPEC §6.2)
    ranges = tuple((a, b - a) for a, b in spans(writer.pieces, 0))
    before = old.written[-(WRITTEN_KEPT - 1):] if old.written and old.written[-1][0] == catalog.generation - 1 else ()
    written = (*before, (catalog.generation, ranges))
    reserved = align_up(len(replace(catalog, free=tuple(free), reuse_floor=floor, catalog_reserved=0).encode())
                        + 1024)
    while True:
        spare = FreeSpace(tuple(free), space.reusable_through)
        offset = spare.take(reserved)
        holes = []
        extents = []
        for e in spare.extents:
            if not e[3] and e[1] >= PUNCH_MIN and spare.reusable_through is not None and e[2] <= spare.reusable_through:
                holes.append((e[0], e[1]))
                spare.newest_used = max(spare.newest_used, e[2])
                e = [e[0], e[1], e[2], 1]
            extents.append(tuple(e))
        final = replace(catalog, free=tuple(extents), reuse_floor=floor, catalog_reserved=reserved,
                        written=written)
        data = final.encode()
        if len(data) <= reserved:
            break
        reserved = align_up(2 * len(data))
    writer.holes = holes
    writer.newest_reused = max(space.newest_used, spare.newest_used)
    writer.released_now = [(e[0], e[1]) for e in extents if e[2] == catalog.generation and e[1] >= PUNCH_MIN]
    ref = writer.place(memoryview(data), offset, reserved)
    return final, ref
