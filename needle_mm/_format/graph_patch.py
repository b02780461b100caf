"""Graph patch chunks: committed HNSW rows replaced without rewriting the adjacency (SPEC.md §5.9).

A commit that adds ``r`` records to a segment changes the rows of the ~2M·r
committed nodes that gain a reverse link. Instead of writing the whole
adjacency again it writes those rows, in one *patch chunk*: newer chunks
replace older ones row by row, and the binary counter of column chunks
(§5.6) keeps their number logarithmic. A chunk region holds, each array at
the next 8-aligned offset from the region start:

    u64 count0, u64 count_upper
    i32 keys0[count0]                 layer-0 nodes, strictly ascending
    i32 rows0[count0, 2M]
    i32 keys_upper[count_upper]       upper-layer row numbers, strictly ascending
    i32 rows_upper[count_upper, M]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HEADER = np.dtype([("count0", "<u8"), ("count_upper", "<u8")])


def _layout(count0: int, count_upper: int, m: int) -> tuple[int, int, int, int, int]:
    """Byte offsets of keys0, rows0, keys_upper, rows_upper, and the end."""
    def up(x):
        return (x + 7) & ~7

    k0 = HEADER.itemsize
    r0 = up(k0 + 4 * count0)
    ku = up(r0 + 4 * count0 * 2 * m)
    ru = up(ku + 4 * count_upper)
    return k0, r0, ku, ru, up(ru + 4 * count_upper * m)


def encode_patch(keys0: np.ndarray, rows0: np.ndarray, keys_upper: np.ndarray, rows_upper: np.ndarray,
                 m: int) -> bytes:
    k0, r0, ku, ru, end = _layout(len(keys0), len(keys_upper), m)
    out = bytearray(end)
    out[:HEADER.itemsize] = np.array([(len(keys0), len(keys_upper))], dtype=HEADER).tobytes()
    for offset, array in ((k0, keys0), (r0, rows0), (ku, keys_upper), (ru, rows_upper)):
        data = np.ascontiguousarray(array, dtype="<i4").tobytes()
        out[offset:offset + len(data)] = data
    return bytes(out)


@dataclass(frozen=True)
class PatchView:
    """One validated chunk, its arrays viewed in place; ``*_word`` are the
    offsets of the arrays in the file counted in int32 words (as the search
    kernels address them)."""

    keys0: np.ndarray
    rows0: np.ndarray
    keys_upper: np.ndarray
    rows_upper: np.ndarray
    keys0_word: int
    rows0_word: int
    keys_upper_word: int
    rows_upper_word: int


def read_patch(buffer, offset: int, length: int, n: int, upper_rows: int, m: int) -> PatchView | str:
    """The chunk at ``offset``, or what is wrong with it: its counts must fill
    ``length`` exactly, keys be strictly ascending and name existing rows, and
    every link be -1 or a node below ``n`` (the kernels trust these)."""
    if length < HEADER.itemsize:
        return f"graph patch of {length} bytes is shorter than its header"
    head = np.frombuffer(buffer, dtype=HEADER, count=1, offset=offset)[0]
    count0, count_upper = int(head["count0"]), int(head["count_upper"])
    if count0 > n or count_upper > upper_rows:
        return f"graph patch counts {count0}/{count_upper} exceed the segment's {n} nodes/{upper_rows} upper rows"
    k0, r0, ku, ru, end = _layout(count0, count_upper, m)
    if end != length:
        return f"graph patch is {length} bytes, its counts {count0}/{count_upper} say {end}"

    def view(at, count):
        return np.frombuffer(buffer, dtype="<i4", count=count, offset=offset + at)

    keys0, keys_upper = view(k0, count0), view(ku, count_upper)
    rows0 = view(r0, count0 * 2 * m).reshape(count0, 2 * m)
    rows_upper = view(ru, count_upper * m).reshape(count_upper, m)
    for name, keys, bound in (("layer-0 keys", keys0, n), ("upper keys", keys_upper, upper_rows)):
        if keys.size and (int(keys[0]) < 0 or int(keys[-1]) >= bound or not (np.diff(keys) > 0).all()):
            return f"graph patch {name} are not strictly ascending within [0, {bound})"
    for name, rows in (("layer-0 rows", rows0), ("upper rows", rows_upper)):
        if rows.size and (int(rows.min()) < -1 or int(rows.max()) >= n):
            return f"graph patch {name} hold neighbour ids outside [0, {n})"
    if count0 and (rows0 == keys0[:, None]).any():
        return "a graph patch links a node to itself on layer 0"
    word = offset // 4
    return PatchView(keys0, rows0, keys_upper, rows_upper, word + k0 // 4, word + r0 // 4, word + ku // 4,
                     word + ru // 4)


def merge_patches(chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> tuple:
    """One chunk's arrays equal to ``chunks`` (oldest first) applied in order:
    for a key in several, the newest row wins."""
    def merged(keys_list, rows_list, width):
        if not keys_list:
            return np.zeros(0, np.int32), np.zeros((0, width), np.int32)
        keys = np.concatenate(keys_list[::-1])
        rows = np.concatenate(rows_list[::-1])
        unique, first = np.unique(keys, return_index=True)  # first occurrence = newest chunk
        return unique.astype(np.int32), rows[first]

    width0 = chunks[0][1].shape[1]
    width_upper = chunks[0][3].shape[1]
    k0, r0 = merged([c[0] for c in chunks], [c[1] for c in chunks], width0)
    ku, ru = merged([c[2] for c in chunks], [c[3] for c in chunks], width_upper)
    return k0, r0, ku, ru
