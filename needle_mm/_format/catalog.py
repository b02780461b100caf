"""The catalog: which collections exist and which immutable regions hold them.

A catalog is an orjson object written as one region per commit and referenced
by the superblock (SPEC.md §4). It is small (its size grows with the number of
collections and segments, never with the number of records), so every commit
writes a complete new one and readers parse it whole at open.

Everything in a catalog comes from disk and may be hostile: ``decode_catalog``
checks every type, every count and every region reference against the
snapshot's ``file_length`` before anything else may use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import orjson

from ..errors import CorruptFileError, NeedleError, UnsupportedVersionError
from .._kernels import METRIC_CODES
from .header import DATA_START, REGION_ALIGN, align_up, crc32

CATALOG_FORMAT = 1
SPARSE_CATALOG_FORMAT = 2  # written when a sparse collection is present (SPEC §5.7)
HALF_CATALOG_FORMAT = 3  # written when a collection stores f16 vectors (SPEC §5.8)
PATCHED_GRAPH_CATALOG_FORMAT = 4  # written when a graph grows in place or has patches (SPEC §5.9)
QUANTIZED_CATALOG_FORMAT = 5  # written when a collection keeps quantized codes (SPEC §5.10)
TEXT_CATALOG_FORMAT = 6  # written when a collection keeps a full-text index (SPEC §5.11)
MAX_CATALOG_FORMAT = TEXT_CATALOG_FORMAT
DISTANCES = tuple(METRIC_CODES)  # the metrics the kernels compute, by the names the file records
DTYPES = ("f32", "f16")
VECTOR_DTYPES = {"f32": "<f4", "f16": "<f2"}  # storage dtype -> the `vectors` region's element type
KINDS = ("dense", "sparse")
QUANTIZATIONS = ("int8", "binary")  # codes a dense collection may keep beside its vectors (SPEC §5.10)
MAX_DIM = 65536
MAX_SPARSE_DIM = 2**32 - 1
MAX_NAME_BYTES = 255
MAX_PROPERTIES_BYTES = 65536

# Segment regions: name -> (numpy dtype, length rule, reserve rule).
# Length rules name the element count of the used part: "n*dim", "n", "n+1",
# "bits" (ceil(n/8)), "n*m0" (n x 2M), "rows*m" (a multiple of M), "bytes"
# (free), "dim", "2*dim", "n*words" (n x ceil(dim/64)). Reserve rules:
# "cap*dim", "cap*words", "cap", "cap+1" for growable fixed-stride
# regions (capacity = the segment's "capacity"), "free" for growable blobs,
# "=" for regions written whole by one commit (reserved == length).
SEGMENT_REGIONS: dict[str, tuple[str, str, str]] = {
    "vectors": ("<f4", "n*dim", "cap*dim"),
    "norms": ("<f4", "n", "cap"),
    "id_offsets": ("<u8", "n+1", "cap+1"),
    "id_blob": ("u1", "bytes", "free"),
    "meta_offsets": ("<u8", "n+1", "cap+1"),
    "meta_crc": ("<u4", "n", "cap"),
    "meta_blob": ("u1", "bytes", "free"),
    "id_hashes": ("<u8", "n", "="),
    "id_order": ("<u4", "n", "="),
}
DENSE_ONLY_REGIONS = ("vectors", "norms")
SPARSE_REGIONS: dict[str, tuple[str, str, str]] = {
    "sparse_offsets": ("<u8", "n+1", "cap+1"),
    "sparse_indices": ("<u4", "bytes", "free"),
    "sparse_values": ("<f4", "bytes", "free"),
}
OPTIONAL_SEGMENT_REGIONS: dict[str, tuple[str, str, str]] = {
    "tombstones": ("u1", "bits", "="),
}
HNSW_REGIONS: dict[str, tuple[str, str, str]] = {
    "hnsw_levels": ("u1", "n", "cap"),
    "hnsw_links0": ("<i4", "n*m0", "cap*m0"),
    "hnsw_upper_offsets": ("<u4", "n+1", "cap+1"),
    "hnsw_upper_links": ("<i4", "rows*m", "free"),
}
# The codes of a quantized collection's segment (SPEC §5.10), by quantization:
# its parameters (written whole), then one code row per record. int8:
# per-dimension offsets then scales, a byte per dimension; binary: the
# per-dimension centre, a bit per dimension in uint64 words ("words" = ceil(dim / 64)).
QUANT_REGIONS_OF: dict[str, dict[str, tuple[str, str, str]]] = {
    "int8": {"quant_params": ("<f4", "2*dim", "="), "quant_codes": ("i1", "n*dim", "cap*dim")},
    "binary": {"quant_centre": ("<f4", "dim", "="), "quant_bits": ("<u8", "n*words", "cap*words")},
}
QUANT_REGIONS: dict[str, tuple[str, str, str]] = {name: rule for regions in QUANT_REGIONS_OF.values()
                                                  for name, rule in regions.items()}
# The sorted id index of slots 0 .. id_base - 1; later slots are in id_chunks (SPEC §5.2).
ID_INDEX_REGIONS = ("id_hashes", "id_order")
# Graph regions grow in place since catalog format 4 (SPEC §5.9); earlier
# files wrote them whole (reserved == length), which stays valid.
GRAPH_REGIONS = ("hnsw_links0", "hnsw_upper_offsets", "hnsw_upper_links")
ALL_SEGMENT_REGIONS = {**SEGMENT_REGIONS, **SPARSE_REGIONS, **OPTIONAL_SEGMENT_REGIONS, **HNSW_REGIONS,
                       **QUANT_REGIONS}


def required_regions(kind: str, with_graph: bool, dtype: str = "f32",
                     quantization: str | None = None) -> dict[str, tuple[str, str, str]]:
    """The regions a segment of a collection of ``kind`` (storage ``dtype``,
    ``quantization``) must have."""
    if kind == "sparse":
        common = {k: v for k, v in SEGMENT_REGIONS.items() if k not in DENSE_ONLY_REGIONS}
        return {**common, **SPARSE_REGIONS}
    _, rule, reserve = SEGMENT_REGIONS["vectors"]
    vectors = {"vectors": (VECTOR_DTYPES[dtype], rule, reserve)}
    return {**SEGMENT_REGIONS, **vectors, **(HNSW_REGIONS if with_graph else {}),
            **(QUANT_REGIONS_OF[quantization] if quantization else {})}


def catalog_format(collections) -> int:
    """The lowest catalog ``format`` that can hold these collections (SPEC §4)."""
    def grows_in_place(s) -> bool:
        return any(s.regions[r].reserved > s.regions[r].length for r in GRAPH_REGIONS if r in s.regions)

    if any(c.text is not None for c in collections):
        return TEXT_CATALOG_FORMAT
    if any(c.quantization for c in collections):
        return QUANTIZED_CATALOG_FORMAT
    if any(s.graph_patches or s.id_chunks or grows_in_place(s) for c in collections for s in c.segments):
        return PATCHED_GRAPH_CATALOG_FORMAT
    if any(c.dtype == "f16" for c in collections):
        return HALF_CATALOG_FORMAT
    if any(c.kind == "sparse" for c in collections):
        return SPARSE_CATALOG_FORMAT
    return CATALOG_FORMAT


MAX_LEVEL = 31


@dataclass(frozen=True)
class RegionRef:
    """``[offset, length, crc32, reserved]``: ``length`` bytes are in use and
    covered by ``crc32``; ``reserved`` >= ``length`` bytes belong to the region
    (a growable region is appended to in place, past ``length``)."""

    offset: int
    length: int
    crc32: int
    reserved: int

    def to_json(self) -> list[int]:
        return [self.offset, self.length, self.crc32, self.reserved]


@dataclass(frozen=True)
class HnswGraph:
    entry_point: int
    max_level: int

    def to_json(self) -> dict:
        return {"entry_point": self.entry_point, "max_level": self.max_level}


@dataclass(frozen=True)
class ColumnChunk:
    """Columns of slots ``start .. start + count - 1`` (SPEC.md §5.6)."""

    start: int
    count: int
    region: RegionRef

    def to_json(self) -> list[int]:
        return [self.start, self.count, *self.region.to_json()]


@dataclass(frozen=True)
class SegmentDescriptor:
    segment_id: int
    n: int
    n_deleted: int
    generation: int
    capacity: int
    regions: dict[str, RegionRef]
    hnsw: HnswGraph | None = None
    columns: tuple[ColumnChunk, ...] = ()
    postings: tuple[ColumnChunk, ...] = ()  # sparse segments: posting-list chunks (SPEC §5.7)
    graph_patches: tuple[RegionRef, ...] = ()  # replaced graph rows, oldest first (SPEC §5.9)
    id_chunks: tuple[ColumnChunk, ...] = ()  # sorted id index of the last slots (SPEC §5.2)
    text_chunks: tuple[ColumnChunk, ...] = ()  # full-text index chunks, covering every slot (SPEC §5.11)

    @property
    def id_base(self) -> int:
        """Slots the ``id_hashes``/``id_order`` regions index; ``id_chunks`` index the rest."""
        return self.n - sum(c.count for c in self.id_chunks)

    def to_json(self) -> dict:
        out = {
            "segment_id": self.segment_id,
            "n": self.n,
            "n_deleted": self.n_deleted,
            "generation": self.generation,
            "capacity": self.capacity,
            "regions": {k: v.to_json() for k, v in sorted(self.regions.items())},
        }
        if self.hnsw is not None:
            out["hnsw"] = self.hnsw.to_json()
        if self.columns:
            out["columns"] = [c.to_json() for c in self.columns]
        if self.postings:
            out["postings"] = [c.to_json() for c in self.postings]
        if self.graph_patches:
            out["graph_patches"] = [r.to_json() for r in self.graph_patches]
        if self.id_chunks:
            out["id_chunks"] = [c.to_json() for c in self.id_chunks]
        if self.text_chunks:
            out["text_chunks"] = [c.to_json() for c in self.text_chunks]
        return out


@dataclass(frozen=True)
class HnswParams:
    m: int = 16
    ef_construction: int = 200
    ef_search: int = 64
    seed: int = 0

    def to_json(self) -> dict:
        return {"M": self.m, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search, "seed": self.seed}


DEFAULT_HNSW = HnswParams()  # the one place HNSW defaults live: config, the server and the CLI read them

BM25_K1, BM25_B = 1.2, 0.75  # Lucene's defaults (SPEC §5.11)


@dataclass(frozen=True)
class TextIndex:
    """A collection's full-text index (SPEC §5.11): the metadata field whose
    string values are indexed, how text is analysed (``Analyzer.to_json()``),
    and the BM25 parameters searches rank with."""

    field: str
    analyzer: dict
    k1: float = BM25_K1
    b: float = BM25_B

    def to_json(self) -> dict:
        return {"field": self.field, "analyzer": self.analyzer, "k1": self.k1, "b": self.b}


@dataclass(frozen=True)
class CollectionDescriptor:
    name: str
    dim: int
    distance: str
    dtype: str = "f32"
    kind: str = "dense"
    hnsw: HnswParams = field(default_factory=HnswParams)
    quantization: str | None = None  # "int8" or "binary": each segment keeps codes beside its vectors (SPEC §5.10)
    text: TextIndex | None = None  # a full-text index over one metadata field (SPEC §5.11)
    next_segment_id: int = 1
    segments: tuple[SegmentDescriptor, ...] = ()
    # Small JSON bookkeeping committed with the records it describes (SPEC §4),
    # e.g. an import's position in its source under "needle.import".
    properties: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(s.n - s.n_deleted for s in self.segments)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "dim": self.dim,
            "distance": self.distance,
            "dtype": self.dtype,
            "kind": self.kind,
            "hnsw": self.hnsw.to_json(),
            **({"quantization": self.quantization} if self.quantization else {}),
            **({"text": self.text.to_json()} if self.text is not None else {}),
            "next_segment_id": self.next_segment_id,
            "segments": [s.to_json() for s in self.segments],
            **({"properties": self.properties} if self.properties else {}),
        }

    def with_segments(self, segments, next_segment_id: int) -> "CollectionDescriptor":
        return replace(self, segments=tuple(segments), next_segment_id=next_segment_id)


@dataclass(frozen=True)
class Catalog:
    generation: int
    collections: dict[str, CollectionDescriptor]
    # Set by the last commit to a file that `needle rebuild`/`compact` has
    # replaced at its path: processes reading it reopen the path (SPEC §7).
    superseded: bool = False
    # Space reuse (SPEC §6.1): extents no region references, each with the
    # generation that released it; offsets below reuse_floor are never freed;
    # the bytes this catalog's own extent reserves.
    free: tuple[tuple[int, int, int, int], ...] = ()
    reuse_floor: int | None = None
    catalog_reserved: int | None = None
    # Commit shipping (SPEC §6.2): the byte ranges each of the latest commits
    # wrote besides its catalog and superblock, newest last: (generation, ((offset, length), ...)).
    written: tuple[tuple[int, tuple[tuple[int, int], ...]], ...] = ()

    def encode(self) -> bytes:
        fmt = catalog_format(self.collections.values())
        if self.reuse_floor is not None:
            fmt = max(fmt, PATCHED_GRAPH_CATALOG_FORMAT)
        doc = {
            "format": fmt,
            "generation": self.generation,
            "collections": [self.collections[k].to_json() for k in sorted(self.collections)],
            **({"superseded": True} if self.superseded else {}),
            **({"reuse_floor": self.reuse_floor, "catalog_reserved": self.catalog_reserved,
                "free": [list(f) for f in self.free]} if self.reuse_floor is not None else {}),
            **({"written": [[g, [list(r) for r in ranges]] for g, ranges in self.written]} if self.written else {}),
        }
        return orjson.dumps(doc)

    def used(self, catalog_offset: int, catalog_length: int) -> list[tuple[int, int]]:
        """``(offset, end)`` of the bytes this generation reads: each region's
        used length (not its reserve, which later commits append into) and the catalog."""
        out = [(catalog_offset, catalog_offset + catalog_length)]
        out.extend((r.offset, r.offset + r.length) for r in self._refs() if r.length)
        return out

    def extents(self, catalog_offset: int, catalog_length: int) -> list[tuple[int, int]]:
        """``(offset, end)`` of every byte range this generation references:
        each region with its reserve (to the next 64-byte boundary) and the
        catalog's own extent."""
        out = [(catalog_offset, catalog_offset + (self.catalog_reserved or align_up(catalog_length)))]
        out.extend((r.offset, r.offset + align_up(r.reserved)) for r in self._refs())
        return out

    def _refs(self):
        """Every region reference of every segment: regions, graph patches and chunks of each kind."""
        for c in self.collections.values():
            for s in c.segments:
                yield from s.regions.values()
                yield from s.graph_patches
                for ch in (*s.columns, *s.postings, *s.id_chunks, *s.text_chunks):
                    yield ch.region


def region_element_count(rule: str, n: int, dim: int, m: int) -> int | None:
    """Elements a region must hold under ``rule`` (None: free)."""
    return {
        "n*dim": n * dim, "n": n, "n+1": n + 1, "bits": (n + 7) // 8, "n*m0": n * 2 * m,
        "cap*dim": n * dim, "cap": n, "cap+1": n + 1, "cap*m0": n * 2 * m, "2*dim": 2 * dim, "dim": dim,
        "n*words": n * ((dim + 63) // 64), "cap*words": n * ((dim + 63) // 64),
    }.get(rule)


# --------------------------------------------------------------------------
# Decoding: trust nothing.


class _Bad(Exception):
    pass


def _int(obj, key: str, lo: int = 0, hi: int = 2**62) -> int:
    v = obj.get(key) if isinstance(obj, dict) else None
    if type(v) is not int or not lo <= v <= hi:
        raise _Bad(f"field {key!r} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _str(obj, key: str, choices=None) -> str:
    v = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(v, str) or (choices is not None and v not in choices):
        raise _Bad(f"field {key!r} must be {'one of ' + repr(choices) if choices else 'a string'}, got {v!r}")
    return v


def _region(raw, name: str, file_length: int, itemsize: int, expected_count: int | None,
            reserved_count: int | None, multiple: int = 1) -> RegionRef:
    if not (isinstance(raw, list) and len(raw) == 4 and all(type(x) is int for x in raw)):
        raise _Bad(f"region {name!r} must be [offset, length, crc32, reserved], got {raw!r}")
    offset, length, crc, reserved = raw
    if (offset < DATA_START or offset % REGION_ALIGN or not 0 <= length <= reserved
            or offset + reserved > file_length):
        raise _Bad(f"region {name!r} [{offset}, +{length}/{reserved}) lies outside the data area "
                   f"[{DATA_START}, {file_length}) or uses more than it reserves")
    if not 0 <= crc < 2**32:
        raise _Bad(f"region {name!r} crc32 {crc} out of range")
    if length % (itemsize * multiple) or reserved % itemsize:
        raise _Bad(f"region {name!r} length {length} is not a multiple of its row size {itemsize * multiple}")
    if expected_count is not None and length != expected_count * itemsize:
        raise _Bad(f"region {name!r} length {length} != {expected_count} items x {itemsize} bytes")
    if reserved_count is not None and reserved != reserved_count * itemsize:
        raise _Bad(f"region {name!r} reserves {reserved} bytes, not {reserved_count} items x {itemsize}")
    return RegionRef(offset, length, crc, reserved)


def _chunks(raw, key: str, n: int, file_length: int, first: int = 0) -> tuple[ColumnChunk, ...]:
    """A list of ``[start, count, offset, length, crc32, reserved]`` chunks that
    continue one another from slot ``first`` and stay within ``n`` slots."""
    chunks_raw = raw.get(key, [])
    if not isinstance(chunks_raw, list):
        raise _Bad(f"segment {key!r} is not a list")
    chunks = []
    covered = first
    for c in chunks_raw:
        if not (isinstance(c, list) and len(c) == 6 and all(type(x) is int for x in c)):
            raise _Bad(f"{key} chunk must be [start, count, offset, length, crc32, reserved], got {c!r}")
        start, count = c[0], c[1]
        if start != covered or not 1 <= count <= n - covered:
            raise _Bad(f"{key} chunk [{start}, +{count}) does not continue the chunks before it within n={n}")
        chunks.append(ColumnChunk(start, count, _region(c[2:], key, file_length, 1, None, None)))
        covered += count
    return tuple(chunks)


def _segment(raw, kind: str, vector_dtype: str, dim: int, m: int, file_length: int,
             quantization: str | None = None, with_text: bool = False) -> SegmentDescriptor:
    import numpy as np  # local: keeps this module importable for docs tooling

    if not isinstance(raw, dict):
        raise _Bad("segment entry is not an object")
    n = _int(raw, "n", 1, 2**31 - 1)
    n_deleted = _int(raw, "n_deleted", 0, n)
    capacity = _int(raw, "capacity", n, 2**31 - 1)
    regions_raw = raw.get("regions")
    if not isinstance(regions_raw, dict):
        raise _Bad("segment 'regions' is not an object")
    id_raw = raw.get("id_chunks", [])
    counts = [c[1] for c in id_raw if isinstance(c, list) and len(c) == 6 and type(c[1]) is int] \
        if isinstance(id_raw, list) else []
    id_base = n - sum(counts)
    if not 0 <= id_base < n and counts:
        raise _Bad(f"id chunks cover {sum(counts)} slots of n={n}")
    id_chunks = _chunks(raw, "id_chunks", n, file_length, first=id_base)
    if id_chunks and id_chunks[-1].start + id_chunks[-1].count != n:
        raise _Bad(f"id chunks do not end at n={n}")
    hnsw = None
    if "hnsw" in raw and kind == "dense":
        h = raw["hnsw"]
        hnsw = HnswGraph(entry_point=_int(h, "entry_point", 0, n - 1), max_level=_int(h, "max_level", 0, MAX_LEVEL))
    regions = {}
    required = required_regions(kind, hnsw is not None, vector_dtype, quantization)
    allowed = {**required, **OPTIONAL_SEGMENT_REGIONS}
    for name, (dtype, rule, reserve) in allowed.items():
        if name not in regions_raw:
            if name in required:
                raise _Bad(f"segment lacks required region {name!r}")
            continue
        reserved = region_element_count(reserve, capacity, dim, m) if reserve != "=" else None
        expected = region_element_count(rule, id_base if name in ID_INDEX_REGIONS else n, dim, m)
        raw_ref = regions_raw[name]
        if name in GRAPH_REGIONS and isinstance(raw_ref, list) and len(raw_ref) == 4 and raw_ref[1] == raw_ref[3]:
            reserved = None  # written whole, as before format 4
        ref = _region(raw_ref, name, file_length, np.dtype(dtype).itemsize, expected, reserved,
                      multiple=m if rule == "rows*m" else 1)
        if reserve == "=" and ref.reserved != ref.length:
            raise _Bad(f"region {name!r} is written whole but reserves {ref.reserved} != {ref.length} bytes")
        regions[name] = ref
    unknown = set(regions_raw) - set(regions)
    if unknown:
        raise _Bad(f"segment has unknown regions {sorted(unknown)}")
    if n_deleted and "tombstones" not in regions:
        raise _Bad("segment has n_deleted > 0 but no tombstones region")
    if kind == "sparse":
        nnz = regions["sparse_indices"].length // 4
        if regions["sparse_values"].length != 4 * nnz:
            raise _Bad("regions 'sparse_indices' and 'sparse_values' hold different entry counts")
    elif "postings" in raw:
        raise _Bad("a dense segment has 'postings'")
    columns = _chunks(raw, "columns", n, file_length)
    postings = _chunks(raw, "postings", n, file_length)
    patches_raw = raw.get("graph_patches", [])
    if not isinstance(patches_raw, list) or (patches_raw and hnsw is None):
        raise _Bad("segment 'graph_patches' is not a list, or the segment has no graph")
    graph_patches = tuple(_region(p, "graph_patches", file_length, 8, None, None) for p in patches_raw)
    if any(p.reserved != p.length for p in graph_patches):
        raise _Bad("a graph patch reserves more than its length")
    if kind == "sparse" and sum(c.count for c in postings) != n:
        raise _Bad(f"posting chunks cover {sum(c.count for c in postings)} slots, not n={n}")
    text_chunks = _chunks(raw, "text_chunks", n, file_length)
    if text_chunks and not with_text:
        raise _Bad("segment has 'text_chunks' but its collection has no text index")
    if with_text and sum(c.count for c in text_chunks) != n:
        raise _Bad(f"text chunks cover {sum(c.count for c in text_chunks)} slots, not n={n}")
    return SegmentDescriptor(
        segment_id=_int(raw, "segment_id", 1),
        n=n,
        n_deleted=n_deleted,
        generation=_int(raw, "generation", 1),
        capacity=capacity,
        regions=regions,
        hnsw=hnsw,
        columns=columns,
        postings=postings,
        graph_patches=graph_patches,
        id_chunks=id_chunks,
        text_chunks=text_chunks,
    )


def _collection(raw, file_length: int) -> CollectionDescriptor:
    if not isinstance(raw, dict):
        raise _Bad("collection entry is not an object")
    name = _str(raw, "name")
    if not name or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise _Bad(f"collection name {name!r} is empty or longer than {MAX_NAME_BYTES} bytes")
    kind = _str(raw, "kind", KINDS)
    dim = _int(raw, "dim", 1, MAX_SPARSE_DIM if kind == "sparse" else MAX_DIM)
    distance = _str(raw, "distance", ("dot",) if kind == "sparse" else DISTANCES)
    hnsw_raw = raw.get("hnsw")
    hnsw = HnswParams(
        m=_int(hnsw_raw, "M", 2, 1024),
        ef_construction=_int(hnsw_raw, "ef_construction", 1, 1 << 20),
        ef_search=_int(hnsw_raw, "ef_search", 1, 1 << 20),
        seed=_int(hnsw_raw, "seed", 0, 2**62),
    )
    segs_raw = raw.get("segments")
    if not isinstance(segs_raw, list):
        raise _Bad("collection 'segments' is not a list")
    dtype = _str(raw, "dtype", ("f32",) if kind == "sparse" else DTYPES)
    quantization = None
    if "quantization" in raw:
        quantization = _str(raw, "quantization", () if kind == "sparse" else QUANTIZATIONS)
    text = _text_index(raw["text"], name) if "text" in raw else None
    segments = tuple(_segment(s, kind, dtype, dim, hnsw.m, file_length, quantization, text is not None)
                     for s in segs_raw)
    next_id = _int(raw, "next_segment_id", 1)
    ids = [s.segment_id for s in segments]
    if len(set(ids)) != len(ids) or any(i >= next_id for i in ids):
        raise _Bad("segment ids are duplicated or not below next_segment_id")
    properties = raw.get("properties", {})
    if not isinstance(properties, dict):
        raise _Bad(f"collection {name!r}: 'properties' is not an object")
    if len(orjson.dumps(properties)) > MAX_PROPERTIES_BYTES:
        raise _Bad(f"collection {name!r}: 'properties' is larger than {MAX_PROPERTIES_BYTES} bytes")
    return CollectionDescriptor(
        name=name,
        dim=dim,
        distance=distance,
        dtype=dtype,
        kind=kind,
        hnsw=hnsw,
        quantization=quantization,
        text=text,
        next_segment_id=next_id,
        segments=segments,
        properties=properties,
    )


def _text_index(raw, collection: str) -> TextIndex:
    """A collection's ``text`` entry (SPEC §5.11), every key checked."""
    if not isinstance(raw, dict) or set(raw) != {"field", "analyzer", "k1", "b"}:
        raise _Bad(f"collection {collection!r}: 'text' must be an object with field, analyzer, k1 and b")
    field_name = raw["field"]
    if not isinstance(field_name, str) or not field_name or len(field_name.encode("utf-8", "surrogatepass")) > 255:
        raise _Bad(f"collection {collection!r}: the text field must be a non-empty string of at most 255 bytes")
    k1, b = raw["k1"], raw["b"]
    if type(k1) not in (int, float) or not 0 <= k1 <= 100 or type(b) not in (int, float) or not 0 <= b <= 1:
        raise _Bad(f"collection {collection!r}: BM25 k1 must be in [0, 100] and b in [0, 1], got {k1!r}, {b!r}")
    from .._text.analysis import Analyzer  # the analyzer's own strict decoder

    try:
        analyzer = Analyzer.from_json(raw["analyzer"], where=f"collection {collection!r}")
    except UnsupportedVersionError:
        raise
    except NeedleError as exc:
        raise _Bad(str(exc)) from None
    return TextIndex(field_name, analyzer.to_json(), float(k1), float(b))


def decode_catalog(raw: bytes, expected_crc: int, generation: int, file_length: int, path: str) -> Catalog:
    """Parse and fully validate a catalog region (SPEC.md §4)."""
    if crc32(raw) != expected_crc:
        raise CorruptFileError(f"{path!r}: catalog CRC mismatch (generation {generation})")
    try:
        doc = orjson.loads(raw)
        if not isinstance(doc, dict):
            raise _Bad("catalog is not a JSON object")
        fmt = _int(doc, "format", 1)
        if fmt > MAX_CATALOG_FORMAT:
            raise UnsupportedVersionError(
                f"{path!r}: catalog format {fmt} was written by a newer needle_mm (this one reads "
                f"formats up to {MAX_CATALOG_FORMAT}); upgrade needle_mm to read it")
        if _int(doc, "generation", 1) != generation:
            raise _Bad("catalog generation differs from its superblock's")
        cols_raw = doc.get("collections")
        if not isinstance(cols_raw, list):
            raise _Bad("'collections' is not a list")
        collections = {}
        for c in cols_raw:
            meta = _collection(c, file_length)
            if meta.name in collections:
                raise _Bad(f"collection {meta.name!r} appears twice")
            collections[meta.name] = meta
        if fmt < catalog_format(collections.values()):
            raise _Bad(f"catalog format {fmt} cannot hold its collections (sparse needs 2, f16 vectors 3, "
                       "a graph growing in place or patched 4, quantized codes 5, a text index 6)")
        superseded = doc.get("superseded", False)
        if not isinstance(superseded, bool):
            raise _Bad("'superseded' is not a boolean")
        reuse_floor = catalog_reserved = None
        free: list[tuple[int, int, int, int]] = []
        if "reuse_floor" in doc:
            if fmt < PATCHED_GRAPH_CATALOG_FORMAT:
                raise _Bad(f"catalog format {fmt} cannot hold a free-space list (needs 4)")
            reuse_floor = _int(doc, "reuse_floor", DATA_START, file_length)
            catalog_reserved = _int(doc, "catalog_reserved", 0, file_length)
            free_raw = doc.get("free")
            if not isinstance(free_raw, list):
                raise _Bad("'free' is not a list")
            end = reuse_floor
            for f in free_raw:
                if not (isinstance(f, list) and len(f) == 4 and all(type(x) is int for x in f)):
                    raise _Bad(f"free extent must be [offset, length, released, punched], got {f!r}")
                offset, length, released, punched = f
                if (offset < end or offset % REGION_ALIGN or length <= 0 or length % REGION_ALIGN
                        or offset + length > file_length or not 1 <= released <= generation or punched not in (0, 1)):
                    raise _Bad(f"free extent {f!r} is unaligned, overlaps the one before or the reuse floor, "
                               f"lies outside the file or names a generation after {generation}")
                free.append((offset, length, released, punched))
                end = offset + length
        elif "free" in doc or "catalog_reserved" in doc:
            raise _Bad("'free' or 'catalog_reserved' without 'reuse_floor'")
        written = _written(doc.get("written", []), generation, file_length)
    except orjson.JSONDecodeError as exc:
        raise CorruptFileError(f"{path!r}: catalog is not valid JSON ({exc})") from None
    except _Bad as exc:
        raise CorruptFileError(f"{path!r}: catalog (generation {generation}): {exc}") from None
    return Catalog(generation=generation, collections=collections, superseded=superseded, free=tuple(free),
                   reuse_floor=reuse_floor, catalog_reserved=catalog_reserved, written=written)


WRITTEN_KEPT = 4  # commits whose written ranges a catalog lists (SPEC §6.2): a follower may lag this many


def _written(raw, generation: int, file_length: int) -> tuple:
    """The ``written`` list (SPEC §6.2): at most WRITTEN_KEPT consecutive
    generations ending at this one, each with ascending, non-overlapping
    ``[offset, length]`` ranges inside the data area of the file."""
    if not isinstance(raw, list) or len(raw) > WRITTEN_KEPT:
        raise _Bad(f"'written' must be a list of at most {WRITTEN_KEPT} commits")
    out = []
    for j, entry in enumerate(raw):
        if not (isinstance(entry, list) and len(entry) == 2 and type(entry[0]) is int and isinstance(entry[1], list)):
            raise _Bad(f"'written' entry must be [generation, [[offset, length], ...]], got {entry!r:.80}")
        g, ranges = entry
        if g != generation - len(raw) + 1 + j:
            raise _Bad(f"'written' must list consecutive generations ending at {generation}")
        end, parsed = DATA_START, []
        for r in ranges:
            if not (isinstance(r, list) and len(r) == 2 and all(type(x) is int for x in r)):
                raise _Bad(f"a written range must be [offset, length], got {r!r:.80}")
            if r[0] < end or r[1] <= 0 or r[0] + r[1] > file_length:
                raise _Bad(f"written range {r!r} of generation {g} overlaps the one before or lies outside the file")
            end = r[0] + r[1]
            parsed.append((r[0], r[1]))
        out.append((g, tuple(parsed)))
    return tuple(out)
