"""Building a checkpoint: new segments, tombstones, merges and the catalog.

``plan_commit`` turns the pending state of every collection into a list of
regions to append and a new catalog; ``Database.save`` then writes them with
the protocol of SPEC.md §6. Nothing here writes to the file, and nothing
already committed is modified: a changed tombstone bitmap is a new region,
a merged segment is a new segment, and the old ones simply stop being
referenced by the new catalog.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._format.catalog import Catalog, CollectionMeta, RegionRef, SegmentMeta
from ._format.header import align_up, crc32
from ._format.segment import SegmentView, encode_segment_arrays
from .state import CollectionState, get_bit, set_bit

MERGE_FACTOR = 8  # segments of one size tier that trigger a merge
MERGE_MIN_SIZE = 1024  # tier 0 holds segments below MERGE_MIN_SIZE * MERGE_FACTOR live records
MERGE_DELETED_FRACTION = 0.5  # a segment with more deleted records than this is rewritten


@dataclass
class RegionWriter:
    """Lays regions out back to back from ``start`` (64-byte aligned)."""

    start: int
    pieces: list[tuple[int, bytes]] = field(default_factory=list)

    def __post_init__(self):
        self.end = align_up(self.start)

    def add(self, array: np.ndarray) -> RegionRef:
        data = np.ascontiguousarray(array).tobytes()
        offset = self.end
        self.pieces.append((offset, data))
        self.end = align_up(offset + len(data))
        return RegionRef(offset, len(data), crc32(data))


def _write_segment(writer: RegionWriter, segment_id: int, generation: int, ids_utf8: list[bytes],
                   vectors: np.ndarray, norms: np.ndarray, metas: list[bytes]) -> SegmentMeta:
    arrays = encode_segment_arrays(ids_utf8, vectors, norms, metas)
    regions = {name: writer.add(arr) for name, arr in arrays.items()}
    return SegmentMeta(segment_id=segment_id, n=len(ids_utf8), n_deleted=0,
                       generation=generation, regions=regions)


@dataclass
class _Seg:
    """A segment during planning: its view (None if new) and current tombstones."""

    meta: SegmentMeta
    view: SegmentView | None
    tombstones: np.ndarray | None  # packed; None = unchanged from meta
    records: tuple | None = None  # (ids_utf8, vectors, norms, metas) for a new segment

    @property
    def live(self) -> int:
        return self.meta.n - self.meta.n_deleted


def _live_records(seg: _Seg):
    """(ids_utf8, vectors, norms, metas) of the live records of a segment."""
    if seg.records is not None:
        return seg.records
    view = seg.view
    bitmap = seg.tombstones if seg.tombstones is not None else view.tombstones
    if bitmap.shape[0]:
        alive = ~np.unpackbits(bitmap, bitorder="little")[: view.n].astype(bool)
        slots = np.flatnonzero(alive)
    else:
        slots = np.arange(view.n)
    id_blob = view.id_blob.tobytes()
    meta_blob = view.meta_blob.tobytes()
    io_, mo = view.id_offsets, view.meta_offsets
    ids = [id_blob[int(io_[s]):int(io_[s + 1])] for s in slots]
    metas = []
    for s in slots:
        raw = meta_blob[int(mo[s]):int(mo[s + 1])]
        if crc32(raw) != int(view.meta_crc[s]):
            view.meta_bytes_at(int(s))  # raises CorruptFileError with details
        metas.append(raw)
    return ids, np.asarray(view.vectors[slots]), np.asarray(view.norms[slots]), metas


def _tier(live: int) -> int:
    if live < MERGE_MIN_SIZE * MERGE_FACTOR:
        return 0
    return int(math.log(live / MERGE_MIN_SIZE, MERGE_FACTOR))


def plan_merges(segs: list[_Seg]) -> list[list[int]]:
    """Groups of segment indexes to merge (tiered, like Lucene's policy).

    Invariant afterwards: fewer than MERGE_FACTOR segments per size tier, so a
    collection of n records has O(MERGE_FACTOR * log(n)) segments; and no
    segment is more than half deleted.
    """
    tiers: dict[int, list[int]] = {}
    groups = []
    for i, s in enumerate(segs):
        if s.meta.n and s.meta.n_deleted > MERGE_DELETED_FRACTION * s.meta.n:
            groups.append([i])
            continue
        tiers.setdefault(_tier(s.live), []).append(i)
    for members in tiers.values():
        if len(members) >= MERGE_FACTOR:
            groups.append(members)
    return groups


def plan_collection(state: CollectionState, writer: RegionWriter, generation: int) -> CollectionMeta:
    """The committed form of one dirty collection after this checkpoint."""
    meta = state.meta
    next_id = meta.next_segment_id
    segs = [_Seg(m, v, None) for m, v in zip(meta.segments, state.views)]

    # 1. Tombstone the committed record of every touched id.
    if state.touched and segs:
        ids = list(state.touched)
        raws = [i.encode("utf-8") for i in ids]
        from ._format.segment import id_hashes

        seg_idx, slots = state.committed_live_many(raws, id_hashes(raws))
        for s, slot in zip(seg_idx.tolist(), slots.tolist()):
            if s < 0:
                continue
            seg = segs[s]
            if seg.tombstones is None:
                seg.tombstones = np.zeros((seg.meta.n + 7) // 8, dtype=np.uint8)
                old = seg.view.tombstones
                seg.tombstones[: old.shape[0]] = old
            if not get_bit(seg.tombstones, slot):
                set_bit(seg.tombstones, slot)
                seg.meta = SegmentMeta(seg.meta.segment_id, seg.meta.n, seg.meta.n_deleted + 1,
                                       seg.meta.generation, seg.meta.regions)

    # 2. Pending live records become a new segment.
    pending = state.pending
    positions = pending.live_positions()
    if positions.size:
        records = ([pending.ids_utf8[p] for p in positions], pending.vectors[positions],
                   pending.norms[positions], [pending.metas[p] for p in positions])
        placeholder = SegmentMeta(next_id, positions.size, 0, generation, {})
        next_id += 1
        segs.append(_Seg(placeholder, None, None, records))

    # 3. Merge policy; merged groups become one new segment each.
    for group in plan_merges(segs):
        parts = [_live_records(segs[i]) for i in group]
        ids = [x for p in parts for x in p[0]]
        vectors = np.concatenate([p[1] for p in parts]) if parts else None
        norms = np.concatenate([p[2] for p in parts])
        metas = [x for p in parts for x in p[3]]
        merged = _Seg(SegmentMeta(next_id, len(ids), 0, generation, {}), None, None,
                      (ids, vectors.reshape(len(ids), meta.dim), norms, metas))
        next_id += 1
        for i in group:
            segs[i] = None
        segs.append(merged)
    segs = [s for s in segs if s is not None and s.live > 0]

    # 4. Emit regions.
    out = []
    for s in segs:
        if s.records is not None:
            out.append(_write_segment(writer, s.meta.segment_id, generation, *s.records))
        elif s.tombstones is not None:
            regions = dict(s.meta.regions)
            regions["tombstones"] = writer.add(s.tombstones)
            out.append(SegmentMeta(s.meta.segment_id, s.meta.n, s.meta.n_deleted, s.meta.generation, regions))
        else:
            out.append(s.meta)
    return meta.with_segments(out, next_id)


def plan_catalog(base: dict[str, CollectionMeta], states: dict[str, CollectionState], dropped: set[str],
                 writer: RegionWriter, generation: int) -> Catalog:
    """The catalog of the next generation, appending new regions to ``writer``."""
    collections = {name: meta for name, meta in base.items() if name not in dropped}
    for name, state in states.items():
        if state.dirty:
            collections[name] = plan_collection(state, writer, generation)
        elif name not in collections:
            collections[name] = state.meta
    return Catalog(generation=generation, collections=collections)
