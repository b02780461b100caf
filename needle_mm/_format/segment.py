"""Segment regions: encoding records into arrays, and typed views onto them.

A segment is a batch of records (SPEC.md §5). Its regions are
structure-of-arrays with fixed strides so a reader can use them straight from
the memory map: ``vectors[n, dim]``, ``norms[n]``, a sorted id-hash index,
offset-indexed blobs for the id strings and the orjson metadata, and the HNSW
graph. A view covers the ``n`` records of one generation; later generations
may append past them, never change them.
"""

from __future__ import annotations

import hashlib
import sys
from functools import cached_property
from typing import Protocol

import numpy as np
import orjson

from .._kernels.api import gather_blobs
from ..errors import CorruptFileError
from .catalog import ALL_SEGMENT_REGIONS, MAX_LEVEL, VECTOR_DTYPES, SegmentDescriptor
from .header import crc32


def id_hash(id_bytes: bytes) -> int:
    """The 64-bit id hash of SPEC.md §5.2: blake2b-64 of the UTF-8 id, little-endian."""
    return int.from_bytes(hashlib.blake2b(id_bytes, digest_size=8).digest(), "little")


def id_hashes(ids_utf8: list[bytes]) -> np.ndarray:
    return np.fromiter((id_hash(b) for b in ids_utf8), dtype=np.uint64, count=len(ids_utf8))


def concat_with_offsets(items: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(items) + 1, dtype=np.uint64)
    if items:
        np.cumsum(np.fromiter(map(len, items), dtype=np.uint64, count=len(items)), out=offsets[1:])
    blob = np.frombuffer(b"".join(items), dtype=np.uint8)
    return offsets, blob


def parse_metadata(raw: bytes, where: str) -> dict:
    """One record's metadata bytes as a dict. Bytes that passed their CRC can
    still be damaged (written damaged, or CRC and bytes damaged together), so
    what is not a JSON object is a ``CorruptFileError`` naming ``where``."""
    try:
        meta = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CorruptFileError(f"{where} is not JSON") from None
    if not isinstance(meta, dict):
        raise CorruptFileError(f"{where} is not a JSON object")
    return meta


class RecordSource(Protocol):
    """What search, filters, results and export read from a set of records:
    a committed segment (:class:`SegmentView`) or this process's pending
    records (``_engine.state.PendingRecords``). Slots (positions) are
    ``0 .. n-1``; deleted ones are excluded by a bitmap kept beside the source."""

    n: int
    descriptor: SegmentDescriptor | None  # the catalog descriptor of a committed segment; None for pending records

    def id_at(self, slot: int) -> str: ...

    def ids_at(self, slots: list[int]) -> list[str]: ...

    def ids_of(self, slots: np.ndarray) -> list[str]:
        """Ids of an int64 array of slots, ``""`` where a slot is -1."""

    def vector_at(self, slot: int): ...

    def vectors_at(self, slots: list[int]): ...

    def meta_bytes_at(self, slot: int) -> bytes: ...

    def metadata_at(self, slot: int) -> dict: ...

    def dense_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors, norms)`` as the search kernels take them (dense collections)."""

    def posting_chunks(self) -> list:
        """Posting chunks over the slots (sparse collections)."""


ID_CACHE = 1 << 15  # decoded ids a view keeps (ids_at, ids_of): a few MB for ids of common lengths

NO_TOMBSTONES = np.zeros(0, dtype=np.uint8)
NO_TOMBSTONES.flags.writeable = False  # read-only like every file-backed array kernels see

_DTYPES = {name: np.dtype(spec[0]) for name, spec in ALL_SEGMENT_REGIONS.items()}


class SegmentView:
    """Read-only typed views of one committed segment inside a memory map.

    Views are created on first use and cached; the map they point into stays
    alive as long as any view does. Offsets inside the id and metadata blobs
    come from the file, so every access checks them before slicing.
    """

    def __init__(self, buffer, meta: SegmentDescriptor, dim: int, m: int, path: str, dtype: str = "f32", pin=None):
        self._buf = buffer
        self._pin = pin  # keeps the generation registered as read while this view lives (SPEC §7.3)
        self.descriptor = meta
        # What indexes derive from this view and keep while it lives (views are
        # immutable): the HNSW search scratch and graph arguments, filter answers.
        self.caches: dict = {}
        self._ids_seen: dict[int, str] = {}  # slot -> id, filled by ids_at and ids_of
        self.dtype = dtype  # the collection's vector storage dtype: "f32" or "f16"
        self.dim = dim
        self.m = m
        self.path = path
        self.n = meta.n

    def _view(self, name: str, dtype: str | None = None) -> np.ndarray:
        ref = self.descriptor.regions[name]
        dt = _DTYPES[name] if dtype is None else np.dtype(dtype)
        return np.frombuffer(self._buf, dtype=dt, count=ref.length // dt.itemsize, offset=ref.offset)

    @cached_property
    def vectors(self) -> np.ndarray:
        """``[n, dim]`` as stored: float32, or float16 in an ``f16`` collection."""
        return self._view("vectors", VECTOR_DTYPES[self.dtype]).reshape(self.n, self.dim)

    @cached_property
    def kernel_vectors(self) -> np.ndarray:
        """:attr:`vectors` as kernels take them: float16 is seen as its uint16 bits
        (numba has no float16; kernels widen each element, ``_kernels/halves.py``)."""
        return self.vectors.view(np.uint16) if self.dtype == "f16" else self.vectors

    def column_chunks(self) -> list:
        """``[(start slot, ChunkView)]`` of the segment's metadata columns, parsed
        and validated on first use (lock-free: a racing thread parses twice)."""
        chunks = self.__dict__.get("_column_chunks")
        if chunks is None:
            from .columns import ChunkView

            chunks = [(c.start, ChunkView(self._buf, c.region.offset, c.region.length, c.count,
                                          f"{self.path!r}: segment {self.descriptor.segment_id}"))
                      for c in self.descriptor.columns]
            self.__dict__["_column_chunks"] = chunks
        return chunks

    @cached_property
    def norms(self) -> np.ndarray:
        return self._view("norms")

    @cached_property
    def checked_norms(self) -> np.ndarray:
        """:attr:`norms`, checked once per view to be finite and not negative:
        the kernels divide by them and compare what comes out (``verify``
        also checks that they match the vectors)."""
        norms = self.norms
        if norms.size and not (np.isfinite(norms).all() and float(norms.min()) >= 0.0):
            raise CorruptFileError(f"{self.path!r}: segment {self.descriptor.segment_id}: the norms region holds "
                                   "NaN, infinite or negative values")
        return norms

    def dense_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors[n, dim], norms[n])`` as the search kernels take them (norms checked)."""
        return self.kernel_vectors, self.checked_norms

    @cached_property
    def quantization(self) -> str | None:
        """"int8", "binary" (the codes this segment keeps, SPEC §5.10) or None."""
        regions = self.descriptor.regions
        return "int8" if "quant_codes" in regions else "binary" if "quant_bits" in regions else None

    @property
    def quantized(self) -> bool:
        return self.quantization is not None

    @cached_property
    def quant_codes(self) -> np.ndarray:
        """The codes of the vectors (SPEC §5.10): int8 ``[n, dim]``, or binary
        ``[n, ceil(dim / 64)]`` uint64 words."""
        if self.quantization == "binary":
            return self._view("quant_bits").reshape(self.n, (self.dim + 63) // 64)
        return self._view("quant_codes").reshape(self.n, self.dim)

    @cached_property
    def quant_params(self) -> np.ndarray:
        """int8: ``[2, dim]``, the per-dimension offsets, then the scales, of the
        codes; binary: ``[1, dim]``, the centre. Checked once per view to be
        finite, int8 scales positive (kernels divide by none of them, but a NaN
        would make every code distance NaN)."""
        if self.quantization == "binary":
            params = self._view("quant_centre").reshape(1, self.dim)
            if not np.isfinite(params).all():
                raise CorruptFileError(f"{self.path!r}: segment {self.descriptor.segment_id}: the quant_centre region "
                                       "holds NaN or infinite values")
            return params
        params = self._view("quant_params").reshape(2, self.dim)
        if not (np.isfinite(params).all() and float(params[1].min()) > 0.0):
            raise CorruptFileError(f"{self.path!r}: segment {self.descriptor.segment_id}: the quant_params region "
                                   "holds NaN, infinite or non-positive scales")
        return params

    @property
    def sparse(self) -> bool:
        return "sparse_offsets" in self.descriptor.regions

    @cached_property
    def sparse_offsets(self) -> np.ndarray:
        return self._view("sparse_offsets")

    @cached_property
    def sparse_indices(self) -> np.ndarray:
        return self._view("sparse_indices")

    @cached_property
    def sparse_values(self) -> np.ndarray:
        return self._view("sparse_values")

    def vector_at(self, slot: int):
        """The vector of one slot: a float32 copy, or a SparseVector (also a copy)."""
        if not self.sparse:
            return np.array(self.vectors[slot], dtype=np.float32)
        from .csr import SparseVector

        a, b = int(self.sparse_offsets[slot]), int(self.sparse_offsets[slot + 1])
        if not 0 <= a <= b <= self.sparse_indices.shape[0]:
            raise CorruptFileError(f"{self.path!r}: segment {self.descriptor.segment_id} sparse offsets of slot "
                                   f"{slot} [{a}, {b}) fall outside its {self.sparse_indices.shape[0]} entries")
        return SparseVector(self.sparse_indices[a:b].astype(np.uint32), self.sparse_values[a:b].astype(np.float32))

    def sparse_rows(self, start: int, stop: int):
        """Slots ``start .. stop-1`` of a sparse segment as SparseRows (views into the map)."""
        from .csr import SparseRows

        off = self.sparse_offsets[start:stop + 1].astype(np.uint64)
        a, b = int(off[0]), int(off[-1])
        if not 0 <= a <= b <= self.sparse_indices.shape[0] or np.any(np.diff(off.astype(np.int64)) < 0):
            raise CorruptFileError(f"{self.path!r}: segment {self.descriptor.segment_id} sparse offsets of slots "
                                   f"[{start}, {stop}) are not a monotone cover of its entries")
        return SparseRows(off - off[0], self.sparse_indices[a:b], self.sparse_values[a:b])

    def vectors_at(self, slots: list[int]):
        """Vectors of several slots: ``[m, dim]`` float32, or a list of SparseVector."""
        if not self.sparse:
            return np.asarray(self.vectors[slots], dtype=np.float32)
        return [self.vector_at(s) for s in slots]

    def posting_chunks(self) -> list:
        """The sparse segment's posting chunks (SPEC §5.7), validated on first use."""
        chunks = self.__dict__.get("_posting_chunks")
        if chunks is None:
            from .postings import PostingChunk

            where = f"{self.path!r}: segment {self.descriptor.segment_id}"
            chunks = [PostingChunk.from_region(self._buf, c.region.offset, c.region.length, c.start, c.count,
                                               self.dim, where) for c in self.descriptor.postings]
            self.__dict__["_posting_chunks"] = chunks
        return chunks

    def text_chunks(self) -> list:
        """The full-text index chunks (SPEC §5.11), validated on first use (``TextChunkView``)."""
        chunks = self.__dict__.get("_text_chunks")
        if chunks is None:
            from .text_chunk import TextChunkView

            where = f"{self.path!r}: segment {self.descriptor.segment_id}"
            chunks = [TextChunkView.from_region(self._buf, c.region.offset, c.region.length, c.start, c.count, where)
                      for c in self.descriptor.text_chunks]
            self.__dict__["_text_chunks"] = chunks
        return chunks

    @cached_property
    def text_doc_lengths(self) -> np.ndarray:
        """uint32 [n]: every slot's document length, from its text chunk (SPEC §5.11)."""
        chunks = self.text_chunks()
        if len(chunks) == 1:
            return chunks[0].doc_lengths
        out = np.concatenate([c.doc_lengths for c in chunks]) if chunks else np.zeros(0, np.uint32)
        out.flags.writeable = False
        return out

    @cached_property
    def id_hashes(self) -> np.ndarray:
        return self._view("id_hashes")

    @cached_property
    def id_order(self) -> np.ndarray:
        return self._view("id_order")

    @cached_property
    def id_offsets(self) -> np.ndarray:
        return self._view("id_offsets")

    @cached_property
    def id_blob(self) -> np.ndarray:
        return self._view("id_blob")

    @cached_property
    def meta_offsets(self) -> np.ndarray:
        return self._view("meta_offsets")

    @cached_property
    def meta_crc(self) -> np.ndarray:
        return self._view("meta_crc")

    @cached_property
    def meta_blob(self) -> np.ndarray:
        return self._view("meta_blob")

    @cached_property
    def hnsw_levels(self) -> np.ndarray:
        return self._view("hnsw_levels")

    @cached_property
    def hnsw_links0(self) -> np.ndarray:
        return self._view("hnsw_links0").reshape(self.n, 2 * self.m)

    @cached_property
    def hnsw_upper_offsets(self) -> np.ndarray:
        return self._view("hnsw_upper_offsets")

    @cached_property
    def hnsw_upper_links(self) -> np.ndarray:
        return self._view("hnsw_upper_links").reshape(-1, self.m)

    def graph_patches(self) -> list:
        """The segment's graph patch chunks (SPEC §5.9) as validated
        ``PatchView`` chunks (``graph_patch.py``), oldest first, parsed on first use."""
        found = self.__dict__.get("_graph_patches")
        if found is None:
            from .graph_patch import read_patch

            found = []
            upper_rows = self.hnsw_upper_links.shape[0]
            for ref in self.descriptor.graph_patches:
                chunk = read_patch(self._buf, ref.offset, ref.length, self.n, upper_rows, self.m)
                if isinstance(chunk, str):
                    raise CorruptFileError(f"{self.path!r}: segment {self.descriptor.segment_id}: {chunk}")
                found.append(chunk)
            self.__dict__["_graph_patches"] = found
        return found

    @cached_property
    def tombstones(self) -> np.ndarray:
        """Packed deletion bitmap (bit i of byte i//8, little bit order); empty if none."""
        if "tombstones" not in self.descriptor.regions:
            return NO_TOMBSTONES
        return self._view("tombstones")

    def is_deleted(self, slot: int) -> bool:
        t = self.tombstones
        return bool(t.size) and bool((t[slot >> 3] >> (slot & 7)) & 1)

    def _blob_slice(self, offsets: np.ndarray, blob: np.ndarray, slot: int, what: str) -> bytes:
        start, end = int(offsets[slot]), int(offsets[slot + 1])
        if not 0 <= start <= end <= blob.shape[0]:
            raise CorruptFileError(
                f"{self.path!r}: segment {self.descriptor.segment_id} {what} offsets of slot {slot} "
                f"[{start}, {end}) fall outside its blob of {blob.shape[0]} bytes"
            )
        return bytes(blob[start:end])

    def id_at(self, slot: int) -> str:
        raw = self._blob_slice(self.id_offsets, self.id_blob, slot, "id")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptFileError(f"{self.path!r}: segment {self.descriptor.segment_id} id of slot {slot} "
                                   "is not UTF-8") from None

    @cached_property
    def _id_reader(self) -> tuple:
        """(offsets as plain ints, blob start in the map, map) for :meth:`ids_at`.

        The offsets are checked once here to be a monotone cover of the id
        blob (O(n) numpy work, once per view), so the per-search loop needs
        no bounds check: a slice between checked offsets never leaves the blob."""
        offsets = self.id_offsets
        blob = self.descriptor.regions["id_blob"]
        n = offsets.shape[0] - 1
        if n >= 0 and (int(offsets[0]) != 0 or int(offsets[-1]) != blob.length
                       or bool((offsets[1:] < offsets[:-1]).any())):
            raise CorruptFileError(f"{self.path!r}: segment {self.descriptor.segment_id} id offsets are not a monotone "
                                   f"cover of its id blob of {blob.length} bytes")
        if sys.byteorder != "little":  # the file is little-endian; a cast would misread
            plain = offsets.astype(np.uint64).tolist()
        else:
            ref = self.descriptor.regions["id_offsets"]
            plain = memoryview(self._buf)[ref.offset:ref.offset + ref.length].cast("Q")
        return plain, blob.offset, self._buf

    def check_ids(self) -> None:
        """Raise CorruptFileError now if the id offsets are damaged (checked once
        per view): results that decode their ids later (``SearchResults``) then
        cannot fail for that reason once returned."""
        self._id_reader

    def ids_at(self, slots: list[int]) -> list[str]:
        """Ids of several slots (``0 <= slot < n``, plain Python ints).

        Ids once decoded are kept (up to ID_CACHE entries per view; then the
        cache starts again): a search's hits are mostly ids returned before,
        and a dict lookup costs a fifth of a decode (measured)."""
        seen = self._ids_seen
        try:
            return [seen[s] for s in slots]
        except KeyError:
            pass
        offsets, base, buf = self._id_reader
        try:  # bytes.decode is utf-8 and 30 % faster than str(b, "utf-8"), measured
            ids = [buf[base + offsets[s]:base + offsets[s + 1]].decode() for s in slots]
        except UnicodeDecodeError:
            for s in slots:
                self.id_at(s)  # raises CorruptFileError naming the slot
            raise
        self._remember(slots, ids)
        return ids

    def _remember(self, slots: list[int], ids: list[str]) -> None:
        """Keep decoded ids for :meth:`ids_at` / :meth:`ids_of` (bounded: ID_CACHE)."""
        seen = self._ids_seen
        if len(seen) + len(ids) > ID_CACHE:
            seen.clear()
        seen.update(zip(slots, ids))

    def ids_of(self, slots: np.ndarray) -> list[str]:
        """Ids of an int64 array of slots (``-1`` or ``0 <= slot < n``), read
        row-major, ``""`` for -1: the search hot path, from the ids
        :meth:`ids_at` keeps when it has them all (a fifth of the time,
        measured), else gathered by one kernel call and decoded once."""
        seen = self._ids_seen
        flat = slots.ravel().tolist()
        try:
            return [seen[s] for s in flat]
        except KeyError:
            pass
        self._id_reader  # the offsets are checked before a kernel trusts them
        raw, bounds = gather_blobs(self.id_offsets, self.id_blob, slots)
        b = bounds.tolist()
        try:
            text = raw.tobytes().decode("utf-8")
        except UnicodeDecodeError:
            self.ids_at([s for s in flat if s >= 0])  # raises CorruptFileError naming the slot
            raise
        if len(text) == len(raw):  # one byte per character: byte bounds are str bounds
            names = [text[b[j]:b[j + 1]] for j in range(len(b) - 1)]
        else:
            names = [str(raw[b[j]:b[j + 1]], "utf-8") for j in range(len(b) - 1)]
        self._remember(flat, names)  # (-1 -> "" too: what this method reads it as)
        return names

    def meta_bytes_at(self, slot: int) -> bytes:
        raw = self._blob_slice(self.meta_offsets, self.meta_blob, slot, "metadata")
        if crc32(raw) != int(self.meta_crc[slot]):
            raise CorruptFileError(f"{self.path!r}: segment {self.descriptor.segment_id} metadata of slot {slot} fails its CRC")
        return raw

    def metadata_at(self, slot: int) -> dict:
        """The metadata of ``slot``, parsed (``CorruptFileError`` if it is not a JSON object)."""
        return parse_metadata(self.meta_bytes_at(slot),
                              f"{self.path!r}: segment {self.descriptor.segment_id} metadata of slot {slot}")

    def id_pieces(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The sorted id index as ``(hashes, slots)`` pieces (SPEC §5.2): the
        ``id_hashes``/``id_order`` regions, then each of ``id_chunks``."""
        found = self.__dict__.get("_id_pieces")
        if found is None:
            found = [(self.id_hashes, self.id_order)]
            for c in self.descriptor.id_chunks:
                ref = c.region
                if ref.length != id_chunk_length(c.count):
                    raise CorruptFileError(f"{self.path!r}: segment {self.descriptor.segment_id}: id chunk at slot "
                                           f"{c.start} is {ref.length} bytes, not {id_chunk_length(c.count)}")
                if ref.reserved != ref.length:
                    raise CorruptFileError(f"{self.path!r}: segment {self.descriptor.segment_id}: id chunk at slot "
                                           f"{c.start} reserves more than its length")
                hashes = np.frombuffer(self._buf, dtype="<u8", count=c.count, offset=ref.offset)
                slots = np.frombuffer(self._buf, dtype="<u4", count=c.count, offset=ref.offset + 8 * c.count)
                if c.count and not (c.start <= int(slots.min()) and int(slots.max()) < c.start + c.count):
                    raise CorruptFileError(f"{self.path!r}: segment {self.descriptor.segment_id}: id chunk at slot "
                                           f"{c.start} names slots outside {c.start}..{c.start + c.count - 1}")
                found.append((hashes, slots))
            self.__dict__["_id_pieces"] = found
        return found

    def find_slot(self, id_utf8: bytes, h: int) -> int:
        """The live (not tombstoned) slot holding this id, or -1.

        A segment may hold several records of one id, all but one deleted:
        an upsert tombstones the old slot and appends the new one.
        """
        for hashes, order in self.id_pieces():
            pos = int(np.searchsorted(hashes, np.uint64(h), side="left"))
            while pos < hashes.shape[0] and int(hashes[pos]) == h:
                slot = int(order[pos])
                if slot >= self.n:
                    raise CorruptFileError(f"{self.path!r}: segment {self.descriptor.segment_id} id index names "
                                           f"slot {slot} >= n={self.n}")
                if not self.is_deleted(slot) and self._blob_slice(self.id_offsets, self.id_blob, slot, "id") == id_utf8:
                    return slot
                pos += 1
        return -1

    def find_slots(self, ids_utf8: list[bytes], hashes: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`find_slot`: live slot per id or -1."""
        out = np.full(len(ids_utf8), -1, dtype=np.int64)
        if self.n == 0 or not ids_utf8:
            return out
        hit = np.zeros(len(ids_utf8), dtype=bool)
        for table, _ in self.id_pieces():
            if not table.shape[0]:
                continue
            pos = np.searchsorted(table, hashes, side="left")
            inside = pos < table.shape[0]
            hit[inside] |= table[pos[inside]] == hashes[inside]
        for i in np.flatnonzero(hit):
            out[i] = self.find_slot(ids_utf8[i], int(hashes[i]))
        return out


def id_chunk_length(count: int) -> int:
    """Bytes of an id chunk of ``count`` slots: u64 hashes, then u32 slots, padded to 8."""
    return (12 * count + 7) & ~7


def graph_problems(view) -> list[str]:
    """What is wrong with a segment's committed graph (SPEC §8), empty if nothing.

    Writers run it before extending a graph (the build kernels trust the
    arrays they extend, and a link that is out of range now could become in
    range once nodes are added, laundering the damage); ``verify`` reports it."""
    n, h = view.n, view.descriptor.hnsw
    levels = view.hnsw_levels.astype(np.int64)
    if levels.shape[0] != n:
        return [f"hnsw_levels holds {levels.shape[0]} levels for {n} records"]
    if levels.max(initial=0) > MAX_LEVEL:
        return [f"an HNSW level exceeds {MAX_LEVEL}"]
    offsets = view.hnsw_upper_offsets.astype(np.int64)
    if offsets.shape[0] != n + 1 or offsets[0] != 0 or not np.array_equal(np.diff(offsets), levels):
        return ["hnsw_upper_offsets do not match hnsw_levels"]
    if offsets[-1] != view.hnsw_upper_links.shape[0]:
        return [f"hnsw_upper_links has {view.hnsw_upper_links.shape[0]} rows, offsets say {offsets[-1]}"]
    problems = []
    if n and (levels[h.entry_point] != h.max_level or levels.max(initial=0) != h.max_level):
        problems.append(f"entry point level {levels[h.entry_point]} / max_level {h.max_level} disagree")
    for name, links in (("hnsw_links0", view.hnsw_links0), ("hnsw_upper_links", view.hnsw_upper_links)):
        if links.size and (int(links.min()) < -1 or int(links.max()) >= n):
            problems.append(f"{name} holds neighbour ids outside [0, {n})")
    if n and (view.hnsw_links0 == np.arange(n)[:, None]).any():
        problems.append("a node links to itself on layer 0")
    try:
        patches = view.graph_patches()
    except CorruptFileError as exc:
        problems.append(str(exc))
        return problems
    if problems:
        return problems
    # an upper row of layer l may only name nodes that have layer l
    rows = view.hnsw_upper_links.shape[0]
    if rows:
        owner = np.repeat(np.arange(n), levels)
        layer = np.arange(rows) - offsets[owner] + 1
        for keys, links in [(np.arange(rows), view.hnsw_upper_links)] + [(c.keys_upper, c.rows_upper) for c in patches]:
            if links.size:
                need = np.broadcast_to(layer[keys][:, None], links.shape)
                named = links >= 0
                if (levels[links[named]] < need[named]).any():
                    problems.append("an upper-layer row names a node below that layer")
                    break
    return problems
