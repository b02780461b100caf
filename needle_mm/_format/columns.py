"""Columnar projections of metadata (SPEC.md §5.6): built at commit, read by filters.

The orjson metadata log stays the source of truth. When a commit seals
records into a segment it also writes a *column chunk* for them: for every
dotted path of their metadata, typed arrays over the chunk's slots —

- ``kind`` (u8): what the path holds in each record (:data:`KIND_*`);
- ``num`` (f64) for numbers, ``code`` (i32, into the chunk's sorted string
  dictionary) for strings, ``flag`` (u8) for booleans;
- arrays of scalars in CSR form: ``elem_offsets`` (u64, count + 1) and per
  element ``elem_kind``, ``elem_num``, ``elem_code``, ``elem_flag``;

plus ``complex`` (u8): records holding something the columns do not model
(an array containing arrays or objects, a key with a ``.`` in it, or a key
that is all digits), which filters evaluate from the log instead.

A chunk is one region: ``u64 directory length``, the directory (orjson),
zero padding to 8, then the arrays, each at an 8-aligned offset the
directory names relative to the region start.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import orjson

from ..errors import CorruptFileError

KIND_MISSING, KIND_NULL, KIND_BOOL, KIND_NUMBER, KIND_STRING, KIND_ARRAY, KIND_OBJECT, KIND_OTHER = range(8)
KIND_NOTHING = 8  # only in evaluation: the path runs through a scalar, so no value at all

_FIELD_ARRAYS = {"kind": "u1", "num": "<f8", "code": "<i4", "flag": "u1", "elem_offsets": "<u8",
                 "elem_kind": "u1", "elem_num": "<f8", "elem_code": "<i4", "elem_flag": "u1"}
_PER_RECORD = ("kind", "num", "code", "flag")
_PER_ELEMENT = ("elem_kind", "elem_num", "elem_code", "elem_flag")
MAX_CHUNK_PATHS = 4096  # more distinct paths than this in one chunk: the rest are evaluated from the log


def _scalar_kind(v) -> int | None:
    if v is None:
        return KIND_NULL
    if isinstance(v, bool):
        return KIND_BOOL
    if isinstance(v, (int, float)):
        return KIND_NUMBER
    if isinstance(v, str):
        return KIND_STRING
    return None


class _FieldBuilder:
    def __init__(self, count: int):
        self.kind = np.zeros(count, dtype=np.uint8)
        self.num = np.zeros(count, dtype=np.float64)
        self.str: dict[int, str] = {}
        self.flag = np.zeros(count, dtype=np.uint8)
        self.arrays: dict[int, list] = {}


def build_chunk(metas: list[dict]) -> bytes:
    """The column chunk of records with these metadata dicts, encoded."""
    count = len(metas)
    fields: dict[str, _FieldBuilder] = {}
    complex_ = np.zeros(count, dtype=np.uint8)

    def put(path: str, value, slot: int) -> None:
        fb = fields.get(path)
        if fb is None:
            if len(fields) >= MAX_CHUNK_PATHS:
                complex_[slot] = 1
                return
            fb = fields[path] = _FieldBuilder(count)
        k = _scalar_kind(value)
        if k is not None:
            fb.kind[slot] = k
            if k == KIND_NUMBER:
                fb.num[slot] = float(value)
                if isinstance(value, int) and abs(value) > 2**53:  # float64 would round it
                    complex_[slot] = 1
            elif k == KIND_STRING:
                fb.str[slot] = value
            elif k == KIND_BOOL:
                fb.flag[slot] = value
        elif isinstance(value, dict):
            fb.kind[slot] = KIND_OBJECT
            walk(value, path + ".", slot)
        elif all(_scalar_kind(e) is not None and not (isinstance(e, int) and abs(e) > 2**53) for e in value):
            fb.kind[slot] = KIND_ARRAY
            fb.arrays[slot] = value
        else:
            fb.kind[slot] = KIND_OTHER
            complex_[slot] = 1

    def walk(obj: dict, prefix: str, slot: int) -> None:
        for key, value in obj.items():
            if not key or "." in key or key.isdigit() or key.startswith("$"):
                complex_[slot] = 1
                continue
            put(prefix + key, value, slot)

    for slot, meta in enumerate(metas):
        walk(meta, "", slot)

    strings = sorted({s for fb in fields.values() for s in fb.str.values()}
                     | {e for fb in fields.values() for arr in fb.arrays.values() for e in arr if isinstance(e, str)})
    code_of = {s: i for i, s in enumerate(strings)}
    arrays: list[tuple[str, np.ndarray]] = []
    directory: dict = {"count": count, "fields": {}}

    def add(array: np.ndarray) -> int:
        arrays.append(array)
        return len(arrays) - 1

    for path, fb in fields.items():
        code = np.full(count, -1, dtype=np.int32)
        for slot, s in fb.str.items():
            code[slot] = code_of[s]
        entry = {"kind": add(fb.kind), "num": add(fb.num), "code": add(code), "flag": add(fb.flag)}
        if fb.arrays:
            lengths = np.zeros(count + 1, dtype=np.uint64)
            for slot, arr in fb.arrays.items():
                lengths[slot + 1] = len(arr)
            offsets = np.cumsum(lengths, dtype=np.uint64)
            elems = [e for slot in sorted(fb.arrays) for e in fb.arrays[slot]]
            entry["elem_offsets"] = add(offsets)
            entry["elem_kind"] = add(np.array([_scalar_kind(e) for e in elems], dtype=np.uint8))
            entry["elem_num"] = add(np.array([float(e) if _scalar_kind(e) == KIND_NUMBER else 0.0 for e in elems],
                                             dtype=np.float64))
            entry["elem_code"] = add(np.array([code_of[e] if isinstance(e, str) else -1 for e in elems],
                                              dtype=np.int32))
            entry["elem_flag"] = add(np.array([1 if e is True else 0 for e in elems], dtype=np.uint8))
        directory["fields"][path] = entry
    encoded = [x.encode("utf-8") for x in strings]
    blob = b"".join(encoded)
    directory["string_offsets"] = add(np.cumsum([0] + [len(e) for e in encoded], dtype=np.uint64))
    directory["string_blob"] = add(np.frombuffer(blob, dtype=np.uint8))
    directory["complex"] = add(complex_)
    return _encode(directory, arrays)


def _encode(directory: dict, arrays: list[np.ndarray]) -> bytes:
    # Array offsets depend on the directory's length, which depends on the
    # offsets: iterate until the length settles (two or three rounds).
    head_len = 0
    while True:
        placed, pos = {}, _align8(8 + head_len)
        for i, a in enumerate(arrays):
            placed[i] = [pos, a.nbytes]
            pos = _align8(pos + a.nbytes)
        head = orjson.dumps(_resolve_refs(directory, placed))
        if len(head) == head_len:
            break
        head_len = len(head)
    out = bytearray(struct.pack("<Q", len(head)) + head)
    for i, a in enumerate(arrays):
        out += b"\0" * (placed[i][0] - len(out))
        out += a.tobytes()
    return bytes(out)


def _align8(x: int) -> int:
    return (x + 7) // 8 * 8


def _resolve_refs(directory: dict, placed: dict) -> dict:
    fields = {path: {name: placed[i] for name, i in entry.items()} for path, entry in directory["fields"].items()}
    return {"count": directory["count"], "fields": fields,
            **{k: placed[directory[k]] for k in ("string_offsets", "string_blob", "complex")}}


# ----------------------------------------------------------------- reading


@dataclass
class FieldColumns:
    kind: np.ndarray
    num: np.ndarray
    code: np.ndarray
    flag: np.ndarray
    elem_offsets: np.ndarray | None = None
    elem_kind: np.ndarray | None = None
    elem_num: np.ndarray | None = None
    elem_code: np.ndarray | None = None
    elem_flag: np.ndarray | None = None


class ChunkView:
    """A column chunk read from ``buf[offset:offset + length]``, fully validated
    (every count and code checked, so evaluation can index freely)."""

    def __init__(self, buf, offset: int, length: int, count: int, where: str):
        self.count = count
        try:
            self._parse(memoryview(buf)[offset:offset + length], count)
        except CorruptFileError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, struct.error,
                orjson.JSONDecodeError) as exc:
            raise CorruptFileError(f"{where}: column chunk is malformed ({type(exc).__name__}: {exc})") from None
        self.where = where

    def _parse(self, mv: memoryview, count: int) -> None:
        def bad(msg):
            raise CorruptFileError(f"column chunk: {msg}")

        (head_len,) = struct.unpack_from("<Q", mv, 0)
        if head_len > len(mv) - 8:
            bad("directory runs past the region")
        d = orjson.loads(bytes(mv[8:8 + head_len]))
        if not isinstance(d, dict) or d.get("count") != count or not isinstance(d.get("fields"), dict):
            bad(f"directory count {d.get('count') if isinstance(d, dict) else d!r} != {count}")

        def arr(ref, dtype, n=None):
            if not (isinstance(ref, list) and len(ref) == 2 and all(type(x) is int for x in ref)):
                bad(f"array reference {ref!r}")
            off, nbytes = ref
            dt = np.dtype(dtype)
            if off < 8 + head_len or off % 8 or nbytes < 0 or off + nbytes > len(mv) or nbytes % dt.itemsize:
                bad(f"array [{off}, +{nbytes}) lies outside the chunk")
            a = np.frombuffer(mv, dtype=dt, count=nbytes // dt.itemsize, offset=off)
            if n is not None and a.shape[0] != n:
                bad(f"array has {a.shape[0]} items, expected {n}")
            return a

        s_off = arr(d["string_offsets"], "<u8")
        blob = arr(d["string_blob"], "u1")
        if s_off.shape[0] < 1 or s_off[0] != 0 or np.any(np.diff(s_off.astype(np.int64)) < 0) \
                or int(s_off[-1]) > blob.shape[0]:
            bad("string dictionary offsets are not monotonic within the blob")
        raw = bytes(blob)
        offs = s_off.tolist()
        self.strings = [raw[offs[i]:offs[i + 1]].decode("utf-8") for i in range(len(offs) - 1)]
        n_strings = len(self.strings)
        self.complex = arr(d["complex"], "u1", count)
        self.fields: dict[str, FieldColumns] = {}
        for path, entry in d["fields"].items():
            cols = {name: arr(entry[name], _FIELD_ARRAYS[name], count) for name in _PER_RECORD}
            if int(cols["kind"].max(initial=0)) > KIND_OTHER:
                bad(f"field {path!r} has an unknown kind")
            if cols["code"].shape[0] and (int(cols["code"].min()) < -1 or int(cols["code"].max()) >= n_strings):
                bad(f"field {path!r} names a string outside the dictionary")
            if "elem_offsets" in entry:
                eo = arr(entry["elem_offsets"], "<u8", count + 1)
                if eo[0] != 0 or np.any(np.diff(eo.astype(np.int64)) < 0):
                    bad(f"field {path!r} element offsets are not monotonic")
                nnz = int(eo[-1])
                for name in _PER_ELEMENT:
                    cols[name] = arr(entry[name], _FIELD_ARRAYS[name], nnz)
                cols["elem_offsets"] = eo
                if nnz and (int(cols["elem_code"].min()) < -1 or int(cols["elem_code"].max()) >= n_strings):
                    bad(f"field {path!r} elements name a string outside the dictionary")
            self.fields[path] = FieldColumns(**cols)
