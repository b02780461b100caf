"""``needle verify``: a structural walk of a whole file, in pure Python/numpy.

It never calls a numba kernel and never trusts one structure to check another:
each region is bounds-checked, CRC-checked and decoded on its own, then the
cross-structure invariants of SPEC.md §8 are checked. The result is a list of
problems (empty = the file is sound) plus counts for the report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import orjson

from .._format.header import SUPERBLOCK_DTYPE, SUPERBLOCK_OFFSETS, crc32, decode_superblock
from .._format.segment import graph_problems, id_hash
from .._storage.io import FileIO
from .._progress import plural
from ..errors import CorruptFileError, NeedleError
from .._engine.snapshot import Snapshot
from .._storage.mapping import read_header

__all__ = ["verify_file", "VerifyReport"]


@dataclass
class VerifyReport:
    path: str
    generation: int = 0
    collections: int = 0
    records: int = 0
    segments: int = 0
    valid_superblocks: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = (f"{self.path}: generation {self.generation}, {plural(self.collections, 'collection')}, "
                f"{plural(self.segments, 'segment')}, {plural(self.records, 'live record')}")
        if self.ok:
            return head + ": OK"
        return head + f": {plural(len(self.problems), 'problem')}\n" + "\n".join(f"  - {p}" for p in self.problems)


def verify_file(path: str) -> VerifyReport:
    report = VerifyReport(path=path)
    if not os.path.isfile(path):
        report.problems.append("no such file")
        return report
    io = FileIO(path, writable=False)
    try:
        try:
            read_header(io)
        except NeedleError as exc:
            report.problems.append(f"header: {exc}")
            return report
        valid_slots = sum(decode_superblock(io.pread(SUPERBLOCK_DTYPE.itemsize, off), i) is not None
                          for i, off in enumerate(SUPERBLOCK_OFFSETS))
        report.valid_superblocks = valid_slots  # one may be torn by a crash mid-commit: not a problem
        try:
            snap = Snapshot.load(io)
        except NeedleError as exc:
            report.problems.append(f"open: {exc}")
            return report
        report.generation = snap.generation
        report.collections = len(snap.catalog.collections)
        extents = []
        for name, meta in snap.catalog.collections.items():
            seen_ids: set[bytes] = set()
            for view in snap.segments(name):
                report.segments += 1
                where = f"collection {name!r} segment {view.descriptor.segment_id}"
                for rname, ref in view.descriptor.regions.items():
                    extents.append((ref.offset, ref.offset + ref.reserved, f"{where} {rname}"))
                    data = snap.mapping.buffer[ref.offset:ref.offset + ref.length]
                    if crc32(data) != ref.crc32:
                        report.problems.append(f"{where}: region {rname} fails its CRC")
                for label, chunks in (("column", view.descriptor.columns), ("posting", view.descriptor.postings),
                                      ("id index", view.descriptor.id_chunks), ("text", view.descriptor.text_chunks)):
                    for chunk in chunks:
                        ref = chunk.region
                        extents.append((ref.offset, ref.offset + ref.reserved, f"{where} {label}s@{chunk.start}"))
                        if crc32(snap.mapping.buffer[ref.offset:ref.offset + ref.length]) != ref.crc32:
                            report.problems.append(f"{where}: {label} chunk at slot {chunk.start} fails its CRC")
                for i, ref in enumerate(view.descriptor.graph_patches):
                    extents.append((ref.offset, ref.offset + ref.reserved, f"{where} graph patch {i}"))
                    if crc32(snap.mapping.buffer[ref.offset:ref.offset + ref.length]) != ref.crc32:
                        report.problems.append(f"{where}: graph patch {i} fails its CRC")
                report.records += _check_segment(view, where, seen_ids, report.problems)
                if not report.problems:
                    _check_columns(view, where, report.problems)
                if not report.problems and view.sparse:
                    _check_postings(view, where, report.problems)
                if not report.problems and meta.text is not None:
                    _check_text(view, meta.text, where, report.problems)
        extents.append((snap.superblock.catalog_offset,
                        snap.superblock.catalog_offset + snap.superblock.catalog_length, "catalog"))
        for offset, length, released, _ in snap.catalog.free:  # free space must not overlap anything in use
            extents.append((offset, offset + length, f"free extent (released by generation {released})"))
        extents.sort()
        for (s1, e1, w1), (s2, e2, w2) in zip(extents, extents[1:]):
            if s2 < e1 and e1 > s1 and e2 > s2:
                report.problems.append(f"regions overlap: {w1} [{s1},{e1}) and {w2} [{s2},{e2})")
    finally:
        io.close()
    return report


def _check_segment(view, where: str, seen_ids: set, problems: list[str]) -> int:
    n = view.n
    before = len(problems)
    id_off, meta_off = view.id_offsets, view.meta_offsets
    for label, off, blob in (("id", id_off, view.id_blob), ("metadata", meta_off, view.meta_blob)):
        if int(off[0]) != 0 or int(off[-1]) != blob.shape[0] or np.any(np.diff(off.astype(np.int64)) < 0):
            problems.append(f"{where}: {label} offsets are not a monotone cover of the blob")
    if len(problems) > before:
        return 0
    try:
        pieces = view.id_pieces()
    except NeedleError as exc:
        problems.append(f"{where}: {exc}")
        return 0
    order = np.concatenate([p[1] for p in pieces]).astype(np.int64)
    starts = [0] + [c.start for c in view.descriptor.id_chunks] + [n]
    for (hashes, slots), lo, hi in zip(pieces, starts, starts[1:]):
        if not np.array_equal(np.sort(slots.astype(np.int64)), np.arange(lo, hi)):
            problems.append(f"{where}: the id index piece of slots {lo}..{hi - 1} is not a permutation of them")
            return 0
        if hashes.shape[0] > 1 and np.any(np.diff(hashes.astype(np.uint64)) < 0):
            problems.append(f"{where}: the id index piece of slots {lo}..{hi - 1} is not sorted")
    tomb = view.tombstones
    deleted = np.zeros(n, dtype=bool)
    if tomb.shape[0]:
        bits = np.unpackbits(tomb, bitorder="little")
        deleted = bits[:n].astype(bool)
        if bits[n:].any():
            problems.append(f"{where}: tombstone padding bits are set")
    if int(deleted.sum()) != view.descriptor.n_deleted:
        problems.append(f"{where}: n_deleted={view.descriptor.n_deleted} but {int(deleted.sum())} tombstone bits set")
    id_blob = view.id_blob.tobytes()
    meta_blob = view.meta_blob.tobytes()
    hashes_by_slot = np.empty(n, dtype=np.uint64)
    hashes_by_slot[order] = np.concatenate([p[0] for p in pieces])
    if view.sparse:
        _check_sparse_rows(view, where, problems)
    else:
        vectors, norms = view.vectors, view.norms
        if not np.isfinite(vectors).all():
            problems.append(f"{where}: vectors contain NaN or infinity")
        expect = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))
        if not np.allclose(expect, norms, rtol=1e-4, atol=1e-6):
            problems.append(f"{where}: norms do not match the vectors")
        if view.quantized:
            _check_codes(view, where, problems)
    if view.descriptor.hnsw is not None:
        _check_graph(view, where, problems)
    for slot in range(n):
        raw_id = id_blob[int(id_off[slot]):int(id_off[slot + 1])]
        if id_hash(raw_id) != int(hashes_by_slot[slot]):
            problems.append(f"{where}: slot {slot} id hash does not match its id")
        try:
            raw_id.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{where}: slot {slot} id is not UTF-8")
        raw_meta = meta_blob[int(meta_off[slot]):int(meta_off[slot + 1])]
        if crc32(raw_meta) != int(view.meta_crc[slot]):
            problems.append(f"{where}: slot {slot} metadata fails its CRC")
        else:
            try:
                if not isinstance(orjson.loads(raw_meta), dict):
                    problems.append(f"{where}: slot {slot} metadata is not a JSON object")
            except orjson.JSONDecodeError:
                problems.append(f"{where}: slot {slot} metadata is not JSON")
        if not deleted[slot]:
            if raw_id in seen_ids:
                problems.append(f"{where}: id {raw_id!r} is live in two places")
            seen_ids.add(raw_id)
        if len(problems) - before > 20:
            problems.append(f"{where}: more problems not listed")
            break
    return int(n - deleted.sum())



def _check_codes(view, where: str, problems: list[str]) -> None:
    """The codes (int8 or binary) are exactly what this version encodes from the
    stored vectors with the segment's parameters (SPEC §5.10)."""
    from .._index.quantize import CODECS

    try:
        params = view.quant_params
    except CorruptFileError as exc:
        problems.append(f"{where}: {exc}")
        return
    encode = CODECS[view.quantization][1]
    bad = np.flatnonzero((encode(view.kernel_vectors, params) != view.quant_codes).any(axis=1))
    if bad.size:
        problems.append(f"{where}: the {view.quantization} codes of {bad.size:,} slots (first: {int(bad[0])}) are "
                        "not those of their vectors")


def _check_text(view, text, where: str, problems: list[str]) -> None:
    """Every text chunk is, byte for byte, what this version builds from the
    texts of its slots' metadata (SPEC §5.11): its posting lists, document
    lengths and vocabulary."""
    from .._format.text_chunk import encode_text_chunk
    from .._index.text import analyzer_of, build_text_chunk, texts_of

    analyzer = analyzer_of(text)
    for chunk in view.descriptor.text_chunks:
        ref = chunk.region
        metas = [view.meta_bytes_at(slot) for slot in range(chunk.start, chunk.start + chunk.count)]
        want = encode_text_chunk(build_text_chunk(texts_of(metas, text.field), analyzer, chunk.start))
        if bytes(view._buf[ref.offset:ref.offset + ref.length]) != want:
            problems.append(f"{where}: the text chunk of slots [{chunk.start}, {chunk.start + chunk.count}) is not "
                            f"the index of their {text.field!r} texts")
    try:
        view.text_chunks()
    except NeedleError as exc:
        problems.append(f"{where}: {exc}")


def _check_sparse_rows(view, where: str, problems: list[str]) -> None:
    """CSR offsets cover the entries; each row's indices strictly ascend below dim; values are finite."""
    off = view.sparse_offsets.astype(np.int64)
    indices, values = view.sparse_indices.astype(np.int64), view.sparse_values
    nnz = indices.shape[0]
    if off[0] != 0 or off[-1] != nnz or np.any(np.diff(off) < 0):
        problems.append(f"{where}: sparse offsets are not a monotone cover of the {nnz} entries")
        return
    if (indices >= view.dim).any():
        problems.append(f"{where}: a sparse index is >= the dimension {view.dim}")
    row_start = np.zeros(nnz, dtype=bool)
    row_start[off[:-1][off[:-1] < nnz]] = True
    if nnz > 1 and (np.diff(indices)[~row_start[1:]] <= 0).any():
        problems.append(f"{where}: sparse indices are not strictly ascending within a record")
    if not np.isfinite(values).all():
        problems.append(f"{where}: sparse values contain NaN or infinity")


def _check_postings(view, where: str, problems: list[str]) -> None:
    """Each posting chunk equals, byte for byte, the one built from the CSR of its slots."""
    from .._format.postings import encode_chunk

    for chunk in view.descriptor.postings:
        rows = view.sparse_rows(chunk.start, chunk.start + chunk.count)
        expected = encode_chunk(rows.offsets, rows.indices, rows.values, chunk.start)
        ref = chunk.region
        if bytes(view._buf[ref.offset:ref.offset + ref.length]) != expected:
            problems.append(f"{where}: posting chunk at slot {chunk.start} does not match the sparse records")


def _check_columns(view, where: str, problems: list[str]) -> None:
    """Each column chunk parses and equals the projection of its records' metadata."""
    from .._format.columns import build_chunk

    for chunk in view.descriptor.columns:
        ref = chunk.region
        stored = bytes(view._buf[ref.offset:ref.offset + ref.length])
        try:
            expected = build_chunk([view.metadata_at(s)
                                    for s in range(chunk.start, chunk.start + chunk.count)])
        except NeedleError as exc:
            problems.append(f"{where}: column chunk at slot {chunk.start}: {exc}")
            continue
        if stored != expected:
            problems.append(f"{where}: column chunk at slot {chunk.start} does not match the metadata log")


def _check_graph(view, where: str, problems: list[str]) -> None:
    problems.extend(f"{where}: {p}" for p in graph_problems(view))
