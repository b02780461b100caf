"""Planning a checkpoint: what bytes to write, and the catalog that names them.

``plan_catalog`` turns the pending state of every collection into pieces of
data to write and a new catalog; ``Engine.save`` writes them with the
protocol of SPEC.md §6. Nothing here performs I/O, and no byte that a
committed generation references is ever planned for writing:

- a collection's records live in one *segment* whose per-record regions
  (vectors, norms, ids, metadata, HNSW levels) are *growable*: a commit
  appends the new records past the used length, inside space the region
  reserved earlier and no generation references yet; when the reserve is too
  small the region is relocated (copied to a new, twice larger place);
- regions that change as a whole (the sorted id index, the tombstone bitmap,
  the HNSW adjacency) are written anew by each commit that changes them;
- a segment whose records are more than half deleted is rebuilt from its
  live records, with a fresh graph.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

import numpy as np

from .._format.catalog import (
    required_regions,
    QUANT_REGIONS_OF,
    ALL_SEGMENT_REGIONS,
    Catalog,
    CollectionDescriptor,
    GRAPH_REGIONS,
    ColumnChunk,
    HnswGraph,
    KINDS,
    RegionRef,
    SegmentDescriptor,
    VECTOR_DTYPES,
)
from .._format.header import align_up
from .._format.segment import SegmentView, concat_with_offsets, id_chunk_length, id_hashes, parse_metadata
from .._kernels import METRIC_CODES
from .._format.postings import encode_chunk
from .._format.columns import build_chunk
from .._format.csr import SparseRows
from .._format.graph_patch import encode_patch, merge_patches
from .._index.hnsw import (
    Graph,
    can_extend_in_place,
    draw_levels,
    effective_links,
    extend_committed,
    extend_graph,
    graph_of,
    remember_own_graph,
)
from .._index.quantize import CODECS
from .records import Records
from .space import FreeSpace
from .state import CollectionState, get_bit, set_bit

REBUILD_DELETED_FRACTION = 0.5
GROWTH = 2
# A graph whose patches replace more than this fraction of its layer-0 rows is
# written whole again (folded) by the next commit that extends it (SPEC §5.9).
PATCHED_FRACTION = 0.125

# Growable regions of each kind of segment, read off the catalog's region
# table (catalog.required_regions, in the order a segment writes them):
# fixed-stride ones (one entry per record; reserve "cap", "cap+1" or
# "cap*dim"), of which the offsets arrays lead with a 0 ("n+1"), and
# free-length blobs (reserve "free").
# The graph's own regions (GRAPH_REGIONS) grow too, but with the graph's
# rules: see _graph_regions.
_FIXED_STRIDE = ("cap", "cap+1", "cap*dim", "cap*words")
_FIXED_GROWABLE = {kind: tuple(name for name, (_, _, reserve) in required_regions(kind, True).items()
                               if reserve in _FIXED_STRIDE and name not in GRAPH_REGIONS) for kind in KINDS}
_BLOBS = {kind: tuple(name for name, (_, _, reserve) in required_regions(kind, True).items()
                      if reserve == "free" and name not in GRAPH_REGIONS) for kind in KINDS}
_OFFSETS = tuple(name for name, (_, _, reserve) in ALL_SEGMENT_REGIONS.items()
                 if reserve == "cap+1" and name not in GRAPH_REGIONS)


@dataclass
class RegionWriter:
    """Places new regions in reusable free space (``space``, SPEC §6.1) or
    back to back from ``start`` (64-byte aligned), and collects every piece
    of data to write, including appends into reserves. ``end`` is the file
    length the commit needs."""

    start: int
    space: FreeSpace | None = None
    pieces: list[tuple[int, bytes]] = field(default_factory=list)
    holes: list[tuple[int, int]] = field(default_factory=list)  # free extents whose blocks go back (SPEC §6.1)
    allocated: list[tuple[int, int]] = field(default_factory=list)  # (offset, end) of every region placed
    newest_reused: int = 0  # the latest release generation of the free space this commit writes
    released_now: list[tuple[int, int]] = field(default_factory=list)  # large extents this commit releases

    def __post_init__(self):
        self.end = align_up(self.start)

    def add(self, data, reserve: int = 0) -> RegionRef:
        data = _bytes(data)
        reserved = max(len(data), reserve)
        offset = self.space.take(align_up(reserved)) if self.space is not None and reserved else None
        return self.place(data, offset, reserved)

    def place(self, data, offset: int | None, reserved: int) -> RegionRef:
        """``data`` at ``offset`` (None: at the end) owning ``reserved`` bytes."""
        data = _bytes(data)
        if offset is None:
            offset = self.end
            self.end = align_up(offset + reserved)
        self.allocated.append((offset, offset + align_up(reserved)))
        if data:
            self.pieces.append((offset, data))
        return RegionRef(offset, len(data), zlib.crc32(data) & 0xFFFFFFFF, reserved)

    def append(self, ref: RegionRef, data) -> RegionRef:
        data = _bytes(data)
        if ref.length + len(data) > ref.reserved:  # a planner bug, never the file's: refuse to write past the region
            raise RuntimeError(f"needle_mm internal error: appending {len(data)} bytes to a region with "
                               f"{ref.reserved - ref.length} bytes of reserve left")
        if data:
            self.pieces.append((ref.offset + ref.length, data))
        return RegionRef(ref.offset, ref.length + len(data), zlib.crc32(data, ref.crc32) & 0xFFFFFFFF,
                         ref.reserved)


def _bytes(data) -> bytes:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).tobytes()
    return bytes(data)


def live_records(view: SegmentView, tombstones: np.ndarray) -> Records:
    if tombstones.shape[0]:
        slots = np.flatnonzero(~np.unpackbits(tombstones, bitorder="little")[: view.n].astype(bool))
    else:
        slots = np.arange(view.n)
    id_blob, meta_blob = bytes(view.id_blob), bytes(view.meta_blob)
    io_, mo = view.id_offsets.tolist(), view.meta_offsets.tolist()
    ids = [id_blob[io_[s]:io_[s + 1]] for s in slots]
    metas = [meta_blob[mo[s]:mo[s + 1]] for s in slots]
    for s, raw in zip(slots.tolist(), metas):
        if zlib.crc32(raw) & 0xFFFFFFFF != int(view.meta_crc[s]):
            view.meta_bytes_at(s)  # raises CorruptFileError naming the record
    if view.sparse:
        return Records(ids, SparseRows.from_list(view.vectors_at(slots.tolist())), None, metas)
    return Records(ids, np.asarray(view.vectors[slots]), np.asarray(view.checked_norms[slots]), metas)


def _id_index(hashes_by_slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(hashes_by_slot, kind="stable").astype(np.uint32)
    return hashes_by_slot[order].astype("<u8"), order.astype("<u4")


def _merge_sorted(pieces: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One sorted (hashes, slots) index of ``pieces`` (each sorted, slots of
    later pieces larger): equal hashes keep ascending slots, as one stable sort would."""
    hashes = np.concatenate([np.asarray(p[0]) for p in pieces]).astype("<u8")
    slots = np.concatenate([np.asarray(p[1]) for p in pieces]).astype("<u4")
    order = np.lexsort((slots, hashes))
    return hashes[order], slots[order]


def _append_id_index(writer: RegionWriter, seg: SegmentDescriptor, view: SegmentView, new_hashes: np.ndarray,
                     regions: dict) -> tuple:
    """The id index with the new records' slots ``seg.n ..`` added: a new
    chunk, absorbing trailing chunks no larger than it (a binary counter, as
    column chunks), and the ``id_hashes``/``id_order`` base when it is no
    larger either. Returns the new ``id_chunks``; may replace the base regions."""
    order = np.argsort(new_hashes, kind="stable")
    pieces = view.id_pieces()
    chunks = list(seg.id_chunks)
    new_piece = (new_hashes[order], (order + seg.n).astype(np.uint32))
    absorbed = [new_piece]
    count = len(new_hashes)
    while chunks and chunks[-1].count <= count:
        count += chunks.pop().count
        absorbed.insert(0, pieces[len(chunks) + 1])
    if not chunks and seg.id_base <= count:
        hashes, slots = _merge_sorted([pieces[0], *absorbed])
        regions["id_hashes"] = writer.add(hashes)
        regions["id_order"] = writer.add(slots)
        return ()
    hashes, slots = _merge_sorted(absorbed)
    start = chunks[-1].start + chunks[-1].count if chunks else seg.id_base
    data = hashes.tobytes() + slots.tobytes()
    data += bytes(id_chunk_length(len(hashes)) - len(data))
    return (*chunks, ColumnChunk(start, len(hashes), writer.add(data)))


def _per_record_parts(recs: Records, bases: dict[str, int], dtype: str) -> dict[str, bytes]:
    """The appended bytes of each growable region for these records (offsets
    arrays without their leading 0, shifted by the used length of their blob)."""
    id_off, id_blob = concat_with_offsets(recs.ids_utf8)
    meta_off, meta_blob = concat_with_offsets(recs.metas)
    crcs = np.fromiter((zlib.crc32(m) & 0xFFFFFFFF for m in recs.metas), dtype="<u4", count=len(recs))
    parts = {
        "id_offsets": (id_off[1:] + np.uint64(bases.get("id_blob", 0))).astype("<u8").tobytes(),
        "id_blob": id_blob.tobytes(),
        "meta_offsets": (meta_off[1:] + np.uint64(bases.get("meta_blob", 0))).astype("<u8").tobytes(),
        "meta_crc": crcs.tobytes(),
        "meta_blob": meta_blob.tobytes(),
    }
    if isinstance(recs.vectors, SparseRows):
        rows = recs.vectors
        parts["sparse_offsets"] = (rows.offsets[1:] + np.uint64(bases.get("sparse_indices", 0) // 4)).astype("<u8").tobytes()
        parts["sparse_indices"] = rows.indices.astype("<u4").tobytes()
        parts["sparse_values"] = rows.values.astype("<f4").tobytes()
    else:
        parts["vectors"] = np.ascontiguousarray(recs.vectors, dtype=VECTOR_DTYPES[dtype]).tobytes()
        parts["norms"] = np.ascontiguousarray(recs.norms, dtype="<f4").tobytes()
    return parts


def _graph_regions(writer: RegionWriter, graph: Graph, capacity: int, m: int) -> dict[str, RegionRef]:
    """A graph written whole, with room to grow in place to ``capacity`` nodes (SPEC §5.9)."""
    n = graph.links0.shape[0]
    upper = graph.upper_links.astype("<i4", copy=False)
    upper_reserve = -(-upper.nbytes * capacity // max(n, 1)) + 64 * m * 4  # rows at capacity, plus slack
    return {
        "hnsw_links0": writer.add(graph.links0.astype("<i4", copy=False), reserve=capacity * 2 * m * 4),
        "hnsw_upper_offsets": writer.add(graph.upper_offsets.astype("<u4", copy=False), reserve=(capacity + 1) * 4),
        "hnsw_upper_links": writer.add(upper, reserve=upper_reserve - upper_reserve % (m * 4)),
    }


def _extend_graph(writer: RegionWriter, meta: CollectionDescriptor, seg: SegmentDescriptor, view: SegmentView,
                  recs: Records, levels: np.ndarray, capacity: int) -> tuple[dict, tuple, HnswGraph]:
    """The graph regions and patch chunks of ``seg`` with ``recs`` added:
    in place when few records join a large graph (new rows appended, changed
    committed rows in a patch chunk, SPEC §5.9), else by a build over a copy."""
    h = meta.hnsw
    metric = METRIC_CODES[meta.distance]
    if not can_extend_in_place(seg.n, len(recs)):
        norms = np.concatenate([view.checked_norms, recs.norms])
        graph = extend_graph(graph_of(view), [view.vectors, recs.vectors], norms, h.m, h.ef_construction, metric,
                             levels, meta.dtype)
        return _graph_regions(writer, graph, capacity, h.m), (), graph.descriptor
    delta = extend_committed(view, recs.vectors, recs.norms, h.m, h.ef_construction, metric, levels)
    chunks = view.graph_patches()
    # Binary counter: the new chunk absorbs trailing chunks no larger than it.
    kept, size = len(chunks), delta.keys0.shape[0] + delta.keys_upper.shape[0]
    while kept and chunks[kept - 1].keys0.shape[0] + chunks[kept - 1].keys_upper.shape[0] <= size:
        kept -= 1
        size += chunks[kept].keys0.shape[0] + chunks[kept].keys_upper.shape[0]
    merged = merge_patches([(c.keys0, c.rows0, c.keys_upper, c.rows_upper) for c in chunks[kept:]]
                           + [(delta.keys0, delta.rows0, delta.keys_upper, delta.rows_upper)])
    patched = sum(c.keys0.shape[0] for c in chunks[:kept]) + merged[0].shape[0]
    links_ref, offsets_ref, upper_ref = (seg.regions[name] for name in GRAPH_REGIONS)
    new_links = delta.links0.astype("<i4").tobytes()
    new_offsets = delta.upper_offsets.astype("<u4").tobytes()
    new_upper = delta.upper_links.astype("<i4").tobytes()
    fits = (links_ref.length + len(new_links) <= links_ref.reserved
            and offsets_ref.length + len(new_offsets) <= offsets_ref.reserved
            and upper_ref.length + len(new_upper) <= upper_ref.reserved)
    if not fits or patched > seg.n * PATCHED_FRACTION:
        # Fold: the graph as it now is, written whole again with room to grow.
        links0, upper = effective_links(view)
        links0 = np.concatenate([links0, delta.links0])
        upper = np.concatenate([upper, delta.upper_links])
        links0[delta.keys0] = delta.rows0
        upper[delta.keys_upper] = delta.rows_upper
        offsets = np.concatenate([view.hnsw_upper_offsets, delta.upper_offsets])
        graph = Graph(np.concatenate([view.hnsw_levels, levels]), links0, offsets, upper, delta.entry_point,
                      delta.max_level)
        return _graph_regions(writer, graph, capacity, h.m), (), delta.descriptor
    regions = {
        "hnsw_links0": writer.append(links_ref, new_links),
        "hnsw_upper_offsets": writer.append(offsets_ref, new_offsets),
        "hnsw_upper_links": writer.append(upper_ref, new_upper),
    }
    patches = tuple(seg.graph_patches[:kept])
    if merged[0].shape[0] or merged[2].shape[0]:
        patches += (writer.add(encode_patch(*merged, h.m)),)
    return regions, patches, delta.descriptor


def _row_bytes(name: str, dim: int, dtype: str) -> int:
    """Bytes per record of a fixed-stride growable region (the catalog's item type and reserve rule)."""
    item, _, reserve = ALL_SEGMENT_REGIONS[name]
    size = np.dtype(VECTOR_DTYPES[dtype] if name == "vectors" else item).itemsize
    if reserve == "cap*words":
        return size * ((dim + 63) // 64)
    return size * dim if reserve == "cap*dim" else size


def new_segment(writer: RegionWriter, meta: CollectionDescriptor, segment_id: int, generation: int,
                recs: Records) -> SegmentDescriptor:
    """A segment holding ``recs`` and its index (an HNSW graph, or posting lists) built from scratch."""
    n = len(recs)
    parts = _per_record_parts(recs, {}, meta.dtype)
    graph = None
    if meta.kind == "dense":
        h = meta.hnsw
        levels = draw_levels(n, h.m, h.seed, segment_id, 0)
        graph = extend_graph(None, [recs.vectors], recs.norms, h.m, h.ef_construction, METRIC_CODES[meta.distance],
                             levels, meta.dtype)
        parts["hnsw_levels"] = levels.tobytes()
    regions = {}
    for name in _FIXED_GROWABLE[meta.kind]:
        data = parts[name]
        if name in _OFFSETS:
            data = bytes(8) + data  # offsets[0] = 0
        regions[name] = writer.add(data)
    for name in _BLOBS[meta.kind]:
        regions[name] = writer.add(parts[name])
    hashes, order = _id_index(id_hashes(recs.ids_utf8))
    regions["id_hashes"] = writer.add(hashes)
    regions["id_order"] = writer.add(order)
    if meta.quantization:
        regions.update(_quant_regions(writer, meta.quantization, _stored(recs.vectors, meta.dtype), n))
    postings = ()
    if graph is not None:
        regions.update(_graph_regions(writer, graph, n, meta.hnsw.m))
    else:
        rows = recs.vectors
        postings = (ColumnChunk(0, n, writer.add(encode_chunk(rows.offsets, rows.indices, rows.values, 0))),)
    columns = (_column_chunk(writer, 0, recs.metas, f"new segment {segment_id}"),)
    text_chunks = _append_text(writer, meta.text, (), 0, None, recs.metas) if meta.text is not None else ()
    return SegmentDescriptor(segment_id, n, 0, generation, n, regions, graph.descriptor if graph else None, columns,
                             postings, text_chunks=text_chunks)


def _stored(vectors: np.ndarray, dtype: str) -> np.ndarray:
    """Rows as the ``vectors`` region stores them (f16: rounded), which codes are computed from."""
    return np.ascontiguousarray(vectors, dtype=VECTOR_DTYPES[dtype])


def _quant_regions(writer: RegionWriter, quantization: str, stored: np.ndarray, capacity: int) -> dict[str, RegionRef]:
    """A segment's quantization regions written whole (SPEC §5.10): parameters
    trained on every stored row, and their codes, reserving room for
    ``capacity`` rows."""
    train, encode = CODECS[quantization]
    params_name, codes_name = QUANT_REGIONS_OF[quantization]
    params = train(stored)
    codes = encode(stored, params)
    return {params_name: writer.add(params.astype("<f4", copy=False)),
            codes_name: writer.add(codes, reserve=capacity * codes.shape[1] * codes.itemsize)}


def _column_chunk(writer: RegionWriter, start: int, metas: list[bytes], where: str) -> ColumnChunk:
    return ColumnChunk(start, len(metas), writer.add(build_chunk([parse_metadata(m, f"{where} metadata of slot {start + i}")
                                                                  for i, m in enumerate(metas)])))


def _merge_start(chunks: tuple, end: int, added: int) -> tuple[list, int]:
    """Where the next chunk starts when ``added`` records follow slot ``end``:
    trailing chunks are merged into it while the one before is no larger (a
    binary counter: O(log n) chunks, each record re-processed O(log n) times).
    Returns the chunks kept and the first slot of the new chunk."""
    kept = list(chunks)
    start, count = end, added
    while kept and kept[-1].count <= count:
        last = kept.pop()
        start, count = last.start, count + last.count
    return kept, start


def _append_columns(writer: RegionWriter, seg: SegmentDescriptor, view: SegmentView, new_metas: list[bytes]) -> tuple:
    """The segment's column chunks with one for the records not yet covered and the new ones."""
    covered = sum(c.count for c in seg.columns)
    kept, start = _merge_start(seg.columns, covered, seg.n - covered + len(new_metas))
    metas = [view.meta_bytes_at(slot) for slot in range(start, seg.n)] + list(new_metas)
    return (*kept, _column_chunk(writer, start, metas, f"{view.path!r}: segment {seg.segment_id}"))


def _append_text(writer: RegionWriter, text, chunks: tuple, n_old: int, old_meta_at, new_metas: list[bytes]) -> tuple:
    """A segment's text chunks (SPEC §5.11) with one for the slots not yet
    covered (all of them when the collection has just been given its index)
    and the new records, merged like column chunks; texts come from the
    records' metadata (``old_meta_at(slot)`` for committed slots)."""
    from .._format.text_chunk import encode_text_chunk
    from .._index.text import analyzer_of, build_text_chunk, texts_of

    covered = sum(c.count for c in chunks)
    kept, start = _merge_start(chunks, covered, n_old - covered + len(new_metas))
    metas = [old_meta_at(slot) for slot in range(start, n_old)] + list(new_metas)
    if not metas:
        return tuple(kept)
    build = build_text_chunk(texts_of(metas, text.field), analyzer_of(text), start)
    return (*kept, ColumnChunk(start, len(metas), writer.add(encode_text_chunk(build))))


def _append_postings(writer: RegionWriter, seg: SegmentDescriptor, view: SegmentView, new_rows: SparseRows) -> tuple:
    """The segment's posting chunks with one for the new records, merged like column chunks."""
    kept, start = _merge_start(seg.postings, seg.n, len(new_rows))
    rows = SparseRows.concat([view.sparse_rows(start, seg.n), new_rows])
    region = writer.add(encode_chunk(rows.offsets, rows.indices, rows.values, start))
    return (*kept, ColumnChunk(start, seg.n - start + len(new_rows), region))


def extend_segment(writer: RegionWriter, meta: CollectionDescriptor, seg: SegmentDescriptor, view: SegmentView,
                   tombstones: np.ndarray | None, generation: int, recs: Records) -> SegmentDescriptor:
    """``seg`` with ``recs`` appended and added to its index (graph or posting lists)."""
    n_old, n = seg.n, seg.n + len(recs)
    parts = _per_record_parts(recs, {name: seg.regions[name].length for name in _BLOBS[meta.kind]}, meta.dtype)
    regions = dict(seg.regions)
    capacity = seg.capacity
    relocate = n > capacity
    if relocate:
        capacity = max(GROWTH * capacity, n)
    graph_patches, hnsw = (), None
    if meta.kind == "dense":
        h = meta.hnsw
        levels = draw_levels(len(recs), h.m, h.seed, seg.segment_id, n_old)
        graph_regions, graph_patches, hnsw = _extend_graph(writer, meta, seg, view, recs, levels, capacity)
        regions.update(graph_regions)
        parts["hnsw_levels"] = levels.tobytes()
    for name in _FIXED_GROWABLE[meta.kind]:
        ref = regions[name]
        if relocate:
            extra = _row_bytes(name, meta.dim, meta.dtype)
            old = bytes(view._buf[ref.offset:ref.offset + ref.length])
            lead = extra if name in _OFFSETS else 0
            regions[name] = writer.add(old + parts[name], reserve=capacity * extra + lead)
        else:
            regions[name] = writer.append(ref, parts[name])
    for name in _BLOBS[meta.kind]:
        ref = regions[name]
        data = parts[name]
        if ref.length + len(data) <= ref.reserved:
            regions[name] = writer.append(ref, data)
        else:
            old = bytes(view._buf[ref.offset:ref.offset + ref.length])
            regions[name] = writer.add(old + data, reserve=max(GROWTH * ref.reserved, ref.length + len(data)))
    id_chunks = _append_id_index(writer, seg, view, id_hashes(recs.ids_utf8), regions)
    if meta.quantization:
        stored = _stored(recs.vectors, meta.dtype)
        codes_name = list(QUANT_REGIONS_OF[meta.quantization])[1]
        if relocate or codes_name not in regions:
            # The codes are written whole anyway: retrain on every row (O(1) amortised, as the relocation)
            everything = np.concatenate([view.vectors, stored])
            regions.update(_quant_regions(writer, meta.quantization, everything, capacity))
        else:  # appended in place, encoded with the parameters the segment was trained with
            encode = CODECS[meta.quantization][1]
            regions[codes_name] = writer.append(regions[codes_name], encode(stored, view.quant_params))
    postings = ()
    if meta.kind != "dense":
        postings = _append_postings(writer, seg, view, recs.vectors)
    n_deleted = seg.n_deleted
    if tombstones is not None or "tombstones" in regions:
        bits = tombstones if tombstones is not None else view.tombstones
        grown = np.zeros((n + 7) // 8, dtype=np.uint8)
        grown[: bits.shape[0]] = bits
        regions["tombstones"] = writer.add(grown)
    columns = _append_columns(writer, seg, view, recs.metas)
    text_chunks = _append_text(writer, meta.text, seg.text_chunks, seg.n, view.meta_bytes_at, recs.metas) \
        if meta.text is not None else ()
    out = SegmentDescriptor(seg.segment_id, n, n_deleted, seg.generation, capacity, regions, hnsw, columns, postings,
                            graph_patches, id_chunks, text_chunks)
    if hnsw is not None:
        remember_own_graph(view.path, out)
    return out


@dataclass
class _Seg:
    descriptor: SegmentDescriptor
    view: SegmentView
    tombstones: np.ndarray | None = None  # new bitmap, None = unchanged

    def bitmap(self) -> np.ndarray:
        return self.tombstones if self.tombstones is not None else self.view.tombstones


def plan_collection(state: CollectionState, writer: RegionWriter, generation: int) -> CollectionDescriptor:
    """The committed form of one dirty collection after this checkpoint."""
    meta = state.descriptor
    if state.text_index is not None:  # create_text_index: every segment gets its chunks at this commit
        meta = replace(meta, text=state.text_index)
    next_id = meta.next_segment_id
    segs = [_Seg(m, v) for m, v in zip(meta.segments, state.views)]

    # 1. Tombstone the committed record of every touched id.
    if state.touched and segs:
        raws = [i.encode("utf-8") for i in state.touched]
        seg_idx, slots = state.committed_live_many(raws, id_hashes(raws))
        for s, slot in zip(seg_idx.tolist(), slots.tolist()):
            if s < 0:
                continue
            seg = segs[s]
            if seg.tombstones is None:
                seg.tombstones = np.zeros((seg.descriptor.n + 7) // 8, dtype=np.uint8)
                old = seg.view.tombstones
                seg.tombstones[: old.shape[0]] = old
            if not get_bit(seg.tombstones, slot):
                set_bit(seg.tombstones, slot)
                m = seg.descriptor
                seg.descriptor = replace(m, n_deleted=m.n_deleted + 1)

    # 2. Pending live records.
    pending = state.pending
    positions = pending.live_positions()
    recs = None
    if positions.size:
        ids, metas = [pending.ids_utf8[p] for p in positions], [pending.metas[p] for p in positions]
        if pending.sparse:
            recs = Records(ids, SparseRows.from_list(pending.vectors_at(positions.tolist())), None, metas)
        else:
            recs = Records(ids, pending.vectors[positions], pending.norms[positions], metas)

    total = sum(s.descriptor.n for s in segs)
    deleted = sum(s.descriptor.n_deleted for s in segs)
    rebuild = bool(segs) and (deleted > REBUILD_DELETED_FRACTION * total
                              or (meta.kind == "dense" and segs[-1].descriptor.hnsw is None))

    out: list[SegmentDescriptor] = []
    if rebuild:
        parts = [live_records(s.view, s.bitmap()) for s in segs if s.descriptor.n > s.descriptor.n_deleted]
        if recs is not None:
            parts.append(recs)
        if parts and sum(map(len, parts)):
            out.append(new_segment(writer, meta, next_id, generation, Records.concat(parts)))
            next_id += 1
    else:
        for s in segs[:-1] if (recs is not None and segs) else segs:
            out.append(_with_text(writer, meta, s, _with_tombstones(writer, s)))
        if recs is not None:
            if segs:
                last = segs[-1]
                out.append(extend_segment(writer, meta, last.descriptor, last.view, last.tombstones, generation, recs))
            else:
                out.append(new_segment(writer, meta, next_id, generation, recs))
                next_id += 1
    out = [s for s in out if s.n > s.n_deleted]
    return replace(meta.with_segments(out, next_id), properties=state.properties())


def _with_text(writer: RegionWriter, meta: CollectionDescriptor, s: _Seg, seg: SegmentDescriptor) -> SegmentDescriptor:
    """``seg`` with text chunks over every slot when its collection has a text
    index that does not cover it yet (just created: built once, here)."""
    if meta.text is None or sum(c.count for c in seg.text_chunks) == seg.n:
        return seg
    return replace(seg, text_chunks=_append_text(writer, meta.text, seg.text_chunks, seg.n, s.view.meta_bytes_at, []))


def _with_tombstones(writer: RegionWriter, s: _Seg) -> SegmentDescriptor:
    if s.tombstones is None:
        return s.descriptor
    regions = dict(s.descriptor.regions)
    regions["tombstones"] = writer.add(s.tombstones)
    m = s.descriptor
    return replace(m, regions=regions)


def plan_catalog(base: dict[str, CollectionDescriptor], states: dict[str, CollectionState], dropped: set[str],
                 writer: RegionWriter, generation: int) -> Catalog:
    """The catalog of the next generation, collecting the data to write in ``writer``."""
    collections = {name: meta for name, meta in base.items() if name not in dropped}
    for name, state in states.items():
        if state.dirty:
            collections[name] = plan_collection(state, writer, generation)
        elif name not in collections:
            collections[name] = state.descriptor
    return Catalog(generation=generation, collections=collections)
