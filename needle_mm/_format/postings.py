"""Posting chunks of sparse segments: encoding (writers) and checked views (readers).

A chunk is the inverted index of a run of slots (SPEC.md §5.7): for each
distinct index, the slots holding it and their values. Chunks are immutable
regions like every other; a commit adds one for its records and merges
trailing ones, as metadata column chunks do.
"""

from __future__ import annotations

import numpy as np

from ..errors import CorruptFileError

_HEADER = 16


def _align8(x: int) -> int:
    return (x + 7) & ~7


def _layout(d: int, e: int) -> tuple[int, int, int, int, int]:
    """Byte offsets of dims, list_offsets, slots, values and the end, for ``d`` lists of ``e`` entries."""
    dims = _HEADER
    offsets = _align8(dims + 4 * d)
    slots = offsets + 8 * (d + 1)
    values = _align8(slots + 4 * e)
    return dims, offsets, slots, values, values + 4 * e


def invert(offsets: np.ndarray, indices: np.ndarray, values: np.ndarray, start: int):
    """The posting lists of CSR rows numbered from slot ``start``:
    ``(dims u32, list_offsets u64, slots u32, values f32)``."""
    n = offsets.shape[0] - 1
    row = np.repeat(np.arange(start, start + n, dtype=np.uint32), np.diff(offsets).astype(np.int64))
    order = np.argsort(indices, kind="stable")  # entries are in slot order, so lists come out ascending
    sorted_idx = indices[order]
    dims, counts = np.unique(sorted_idx, return_counts=True)
    list_offsets = np.zeros(dims.shape[0] + 1, dtype=np.uint64)
    np.cumsum(counts, out=list_offsets[1:])
    return (dims.astype(np.uint32), list_offsets, row[order].astype(np.uint32),
            values[order].astype(np.float32))


def encode_chunk(offsets: np.ndarray, indices: np.ndarray, values: np.ndarray, start: int) -> bytes:
    """The region bytes of a posting chunk over CSR rows that start at slot ``start``."""
    dims, list_offsets, slots, vals = invert(offsets, indices, values, start)
    d, e = dims.shape[0], slots.shape[0]
    p_dims, p_off, p_slots, p_vals, end = _layout(d, e)
    out = bytearray(end)
    out[0:_HEADER] = np.array([d, e], dtype="<u8").tobytes()
    out[p_dims:p_dims + 4 * d] = dims.astype("<u4").tobytes()
    out[p_off:p_off + 8 * (d + 1)] = list_offsets.astype("<u8").tobytes()
    out[p_slots:p_slots + 4 * e] = slots.astype("<u4").tobytes()
    out[p_vals:p_vals + 4 * e] = vals.astype("<f4").tobytes()
    return bytes(out)


class PostingChunk:
    """Read-only arrays of one chunk: ``dims``, ``list_offsets``, ``slots``, ``values``."""

    __slots__ = ("dims", "list_offsets", "slots", "values", "start", "count")

    def __init__(self, dims, list_offsets, slots, values, start: int, count: int):
        self.dims, self.list_offsets, self.slots, self.values = dims, list_offsets, slots, values
        self.start, self.count = start, count

    @classmethod
    def in_memory(cls, offsets, indices, values, start: int = 0) -> "PostingChunk":
        dims, list_offsets, slots, vals = invert(offsets, indices, values, start)
        arrays = [dims, list_offsets, slots, vals]
        for a in arrays:
            a.flags.writeable = False  # the kernels see one array type for files and memory
        return cls(*arrays, start, offsets.shape[0] - 1)

    @classmethod
    def from_region(cls, buffer, offset: int, length: int, start: int, count: int, dim: int,
                    where: str) -> "PostingChunk":
        """A validated view of a chunk inside a file map (CorruptFileError if anything is off)."""
        from .._kernels.api import check_chunk

        if length < _HEADER:
            raise CorruptFileError(f"{where}: posting chunk of {length} bytes is shorter than its header")
        d, e = (int(x) for x in np.frombuffer(buffer, dtype="<u8", count=2, offset=offset))
        if d > 2**32 or e > 2**40 or _layout(d, e)[4] != length:
            raise CorruptFileError(f"{where}: posting chunk says {d} lists of {e} entries, "
                                   f"which does not fit its {length} bytes")
        p_dims, p_off, p_slots, p_vals, _ = _layout(d, e)
        chunk = cls(np.frombuffer(buffer, dtype="<u4", count=d, offset=offset + p_dims),
                    np.frombuffer(buffer, dtype="<u8", count=d + 1, offset=offset + p_off),
                    np.frombuffer(buffer, dtype="<u4", count=e, offset=offset + p_slots),
                    np.frombuffer(buffer, dtype="<f4", count=e, offset=offset + p_vals), start, count)
        problem = check_chunk(chunk.dims, chunk.list_offsets, chunk.slots, np.int64(start), np.int64(count), np.int64(dim))
        if problem:
            what = {1: "its indices are not strictly ascending or exceed the dimension",
                    2: "its list offsets are not monotonic from 0 to the entry count",
                    3: "it names a slot outside its range"}[problem]
            raise CorruptFileError(f"{where}: posting chunk of slots [{start}, {start + count}): {what}")
        return chunk


__all__ = ["PostingChunk", "encode_chunk", "invert"]
