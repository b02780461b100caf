"""One collection as this process sees it: committed segments + pending writes.

Writes since the last checkpoint live here, in memory, and are visible to this
process at once; other processes see them only after ``save``. The invariant
that keeps reads simple: an id has at most one live record. A write or delete
of an id "touches" it: its committed record (if any) is hidden from this
process's reads now (the ``excluded`` bitmaps) and tombstoned at the commit.
"""

from __future__ import annotations

import numpy as np
import orjson

from .._format.catalog import CollectionDescriptor
from .._format.segment import SegmentView, id_hash, id_hashes
from .._kernels import readonly
from ..results import Entry
from .records import Records


def set_bit(bitmap: np.ndarray, slot: int) -> None:
    bitmap[slot >> 3] |= np.uint8(1 << (slot & 7))


def get_bit(bitmap: np.ndarray, slot: int) -> bool:
    return bitmap.shape[0] > 0 and bool((bitmap[slot >> 3] >> (slot & 7)) & 1)


class PendingRecords:
    """Records written since the last checkpoint, in growable arrays (dense
    vectors) or a list of SparseVector (sparse collections). A
    ``_format.segment.RecordSource``, like a committed segment's view."""

    def __init__(self, dim: int, sparse: bool = False):
        self.dim = dim
        self.sparse = sparse
        self.n = 0
        self.ids: list[str] = []
        self.ids_utf8: list[bytes] = []
        self.metas: list[bytes] = []
        self.vectors = [] if sparse else np.empty((16, dim), dtype=np.float32)
        self.norms = np.empty(16, dtype=np.float32)  # unused (zeros) for sparse
        self.dead = np.zeros(2, dtype=np.uint8)  # packed bitmap, like tombstones
        self.index: dict[str, int] = {}  # live id -> position
        self._postings = None  # (n, chunk) of the sparse records, built for search
        self._text = None  # ((n, text index), TextBuild) of the records' texts, built for text search

    def _reserve(self, extra: int) -> None:
        need = self.n + extra
        cap = self.norms.shape[0]
        if need > cap:
            cap = max(need, cap * 2)
            if not self.sparse:
                vectors = np.empty((cap, self.dim), dtype=np.float32)
                vectors[: self.n] = self.vectors[: self.n]
                self.vectors = vectors
            norms = np.empty(cap, dtype=np.float32)
            norms[: self.n] = self.norms[: self.n]
            dead = np.zeros((cap + 7) // 8, dtype=np.uint8)
            dead[: self.dead.shape[0]] = self.dead
            self.norms, self.dead = norms, dead

    def append(self, recs: Records) -> None:
        ids, ids_utf8, vectors, norms, metas = recs.ids, recs.ids_utf8, recs.vectors, recs.norms, recs.metas
        m = len(ids)
        self._reserve(m)
        start = self.n
        if self.sparse:
            self.vectors.extend(vectors)
        else:
            self.vectors[start:start + m] = vectors
        self.norms[start:start + m] = norms
        self.ids.extend(ids)
        self.ids_utf8.extend(ids_utf8)
        self.metas.extend(metas)
        for j, id in enumerate(ids):
            old = self.index.get(id)
            if old is not None:
                set_bit(self.dead, old)
            self.index[id] = start + j
        self.n += m

    def clone(self) -> "PendingRecords":
        """An independent copy (a transaction's rollback point)."""
        other = PendingRecords(self.dim, self.sparse)
        other.n = self.n
        other.ids, other.ids_utf8, other.metas = list(self.ids), list(self.ids_utf8), list(self.metas)
        other.vectors, other.norms, other.dead = self.vectors.copy(), self.norms.copy(), self.dead.copy()
        other.index = dict(self.index)
        return other

    def kill(self, id: str) -> bool:
        pos = self.index.pop(id, None)
        if pos is None:
            return False
        set_bit(self.dead, pos)
        return True

    def meta_bytes_at(self, pos: int) -> bytes:
        return self.metas[pos]

    def metadata_at(self, pos: int) -> dict:
        return orjson.loads(self.metas[pos])  # encoded by validation.metadata: always an object

    def id_at(self, pos: int) -> str:
        return self.ids[pos]

    def ids_at(self, positions: list[int]) -> list[str]:
        ids = self.ids
        return [ids[p] for p in positions]

    def ids_of(self, positions: np.ndarray) -> list[str]:
        """As ``SegmentView.ids_of``: ids of an int64 array of positions, ``""`` for -1."""
        ids = self.ids
        return [ids[p] if p >= 0 else "" for p in positions.ravel().tolist()]

    descriptor = None  # pending records have no committed segment descriptor (and no graph)

    def dense_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.n
        return readonly(self.vectors[:n]), readonly(self.norms[:n])

    def vector_at(self, pos: int):
        return self.vectors[pos] if self.sparse else self.vectors[pos].copy()

    def vectors_at(self, positions: list[int]):
        if self.sparse:
            return [self.vectors[p] for p in positions]
        return self.vectors[positions].copy()

    def posting_chunks(self) -> list:
        """The unsaved sparse records as one in-memory posting chunk (rebuilt when records were added)."""
        if self._postings is None or self._postings[0] != self.n:
            from .._format.postings import PostingChunk
            from .._format.csr import SparseRows

            rows = SparseRows.from_list(self.vectors[: self.n])
            self._postings = (self.n, PostingChunk.in_memory(rows.offsets, rows.indices, rows.values))
        return [self._postings[1]]

    def text_build(self, text):
        """The unsaved records' texts under the text index ``text`` as one
        in-memory chunk (``_index.text.TextBuild``), rebuilt when records were
        added (records are only appended: their count says what is covered)."""
        key = (self.n, text)
        if self._text is None or self._text[0] != key:
            from .._index.text import analyzer_of, build_text_chunk, texts_of

            self._text = (key, build_text_chunk(texts_of(self.metas[: self.n], text.field), analyzer_of(text), 0))
        return self._text[1]

    def live_positions(self) -> np.ndarray:
        return np.fromiter(sorted(self.index.values()), dtype=np.int64, count=len(self.index))


class CollectionState:
    """Reads and pending writes of one collection in one process."""

    def __init__(self, meta: CollectionDescriptor, views: list[SegmentView], fresh: bool):
        self.descriptor = meta
        self.views = views
        self.fresh = fresh  # created since the last checkpoint: nothing committed under it
        # Set when another process committed a different collection of the same
        # name over this fresh one: why it can be neither read, written nor saved
        # (Engine._adopt); dropping it discards this process's version only.
        self.clash: str | None = None
        self.pending = PendingRecords(meta.dim, meta.kind == "sparse")
        self.touched: set[str] = set()
        self.hidden = 0  # committed live records hidden by touches
        self.excluded: list[np.ndarray] = [v.tombstones for v in views]
        self._excluded_owned = [False] * len(views)
        self.property_changes: dict = {}  # key -> new value (None: remove), committed with the records
        # A text index this process gave the collection (create_text_index), built and committed by the next save.
        self.text_index = None
        # Ids whose pending record came from ``insert`` (which never replaces),
        # and those of them another writer has committed since: save refuses
        # to commit while any conflict remains (SPEC §9, promise 8).
        self.inserted: set[str] = set()
        self.conflicts: set[str] = set()
        # The lean one-query search bound to this state's segment (search.quick), built on first use.
        self.quick = None

    @property
    def dirty(self) -> bool:
        return (self.fresh or bool(self.touched) or self.pending.n > 0 or bool(self.property_changes)
                or self.text_index is not None)

    def properties(self) -> dict:
        """The collection's properties as this process sees them (committed + pending changes)."""
        merged = {**self.descriptor.properties, **self.property_changes}
        return {k: v for k, v in merged.items() if v is not None}

    # ------------------------------------------------------------ lookups

    def committed_live(self, id_utf8: bytes, h: int) -> tuple[int, int] | None:
        """(segment index, slot) of the committed live record of an id, ignoring touches."""
        for s in range(len(self.views) - 1, -1, -1):
            view = self.views[s]
            slot = view.find_slot(id_utf8, h)
            if slot >= 0:
                return s, slot
        return None

    def committed_live_many(self, ids_utf8: list[bytes], hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        segs = np.full(len(ids_utf8), -1, dtype=np.int64)
        slots = np.full(len(ids_utf8), -1, dtype=np.int64)
        if len(ids_utf8) <= 4:  # scalar lookups beat numpy's per-call overhead
            for i, (raw, h) in enumerate(zip(ids_utf8, hashes.tolist())):
                loc = self.committed_live(raw, h)
                if loc is not None:
                    segs[i], slots[i] = loc
            return segs, slots
        for s, view in enumerate(self.views):
            found = view.find_slots(ids_utf8, hashes)
            for i in np.flatnonzero(found >= 0):
                segs[i], slots[i] = s, int(found[i])
        return segs, slots

    def is_live(self, id: str, id_utf8: bytes) -> bool:
        if id in self.pending.index:
            return True
        if id in self.touched:
            return False
        return self.committed_live(id_utf8, id_hash(id_utf8)) is not None

    def live_ids_among(self, ids: list[str], ids_utf8: list[bytes]) -> list[str]:
        """The ids of this batch that already have a live record."""
        out = [id for id in ids if id in self.pending.index]
        rest = [(id, raw) for id, raw in zip(ids, ids_utf8)
                if id not in self.pending.index and id not in self.touched]
        if rest and self.views:
            raws = [raw for _, raw in rest]
            segs, _ = self.committed_live_many(raws, id_hashes(raws))
            out.extend(rest[i][0] for i in np.flatnonzero(segs >= 0))
        return out

    def get(self, id: str, id_utf8: bytes) -> Entry | None:
        pos = self.pending.index.get(id)
        if pos is not None:
            return Entry(id, self.pending.vector_at(pos), orjson.loads(self.pending.metas[pos]))
        if id in self.touched:
            return None
        loc = self.committed_live(id_utf8, id_hash(id_utf8))
        if loc is None:
            return None
        view = self.views[loc[0]]
        return Entry(id, view.vector_at(loc[1]), view.metadata_at(loc[1]))

    def count(self) -> int:
        return self.descriptor.count - self.hidden + len(self.pending.index)

    # ------------------------------------------------------------ writes

    def _hide(self, s: int, slot: int) -> None:
        if not self._excluded_owned[s]:
            n = self.views[s].n
            owned = np.zeros((n + 7) // 8, dtype=np.uint8)
            src = self.excluded[s]
            owned[: src.shape[0]] = src
            self.excluded[s] = owned
            self._excluded_owned[s] = True
        set_bit(self.excluded[s], slot)
        self.hidden += 1

    def touch_many(self, ids: list[str], ids_utf8: list[bytes], known_absent: bool = False) -> None:
        """Hide the committed records of these ids (``known_absent``: the caller
        has just checked that none of them has a live committed record)."""
        new = [(id, raw) for id, raw in zip(ids, ids_utf8) if id not in self.touched]
        if not new:
            return
        # Deduplicate while keeping order: a batch may name one id twice.
        seen = {}
        for id, raw in new:
            seen.setdefault(id, raw)
        self.touched.update(seen)
        if not self.views or known_absent:
            return
        raws = list(seen.values())
        segs, slots = self.committed_live_many(raws, id_hashes(raws))
        for s, slot in zip(segs.tolist(), slots.tolist()):
            if s >= 0:
                self._hide(s, slot)

    def write(self, recs: Records, known_absent: bool = False, same_record: bool = False) -> None:
        """Insert-or-replace records (input already validated); ``known_absent``:
        an insert, whose ids the caller found not live; ``same_record``: a new
        version of a live record (a metadata update), which keeps whether its
        id was inserted here."""
        # An id touched before (deleted or replaced here) may still have its
        # old committed record: inserting it again replaces what this process
        # chose to remove, so it is not checked for conflicts.
        ids = recs.ids
        fresh_ids = [i for i in ids if i not in self.touched] if known_absent else ()
        self.touch_many(ids, recs.ids_utf8, known_absent)
        self.pending.append(recs)
        if known_absent:
            self.inserted.update(fresh_ids)
        elif self.inserted and not same_record:
            self._forget_inserts(ids)

    def _forget_inserts(self, ids) -> None:
        """These ids were upserted or deleted since their insert: replacing is now what was asked."""
        self.inserted.difference_update(ids)
        self.conflicts.difference_update(ids)

    def delete(self, ids: list[str], ids_utf8: list[bytes]) -> int:
        deleted = 0
        live_committed = set(self.live_ids_among(ids, ids_utf8)) - set(self.pending.index)
        for id in dict.fromkeys(ids):
            if self.pending.kill(id) or id in live_committed:
                deleted += 1
        # Only ids with a live committed record are touched: deleting an unknown id
        # changes nothing (as in Chroma and Qdrant), and must not remove a record
        # another writer commits with that id later.
        hit = [(id, raw) for id, raw in zip(ids, ids_utf8) if id in live_committed]
        self.touch_many([id for id, _ in hit], [raw for _, raw in hit])
        if self.inserted:
            self._forget_inserts(ids)
        return deleted

    def clone(self) -> "CollectionState":
        """An independent copy of the pending writes (a transaction's rollback point)."""
        other = CollectionState(self.descriptor, self.views, self.fresh)
        other.pending = self.pending.clone()
        other.touched = set(self.touched)
        other.hidden = self.hidden
        other.excluded = [e.copy() if owned else e for e, owned in zip(self.excluded, self._excluded_owned)]
        other._excluded_owned = list(self._excluded_owned)
        other.property_changes = dict(self.property_changes)
        other.text_index = self.text_index
        other.inserted, other.conflicts = set(self.inserted), set(self.conflicts)
        other.clash = self.clash
        return other

    def rebase(self, meta: CollectionDescriptor, views: list[SegmentView]) -> "CollectionState":
        """The same pending writes on top of a newer committed state."""
        fresh = CollectionState(meta, views, fresh=False)
        fresh.pending = self.pending
        fresh.property_changes = self.property_changes
        fresh.text_index = self.text_index if meta.text is None else None  # another writer's index came first
        fresh.inserted = self.inserted
        fresh.conflicts = set(self.conflicts)
        if self.inserted and views:  # ids inserted here that another writer has committed since
            inserted = list(self.inserted)
            raws = [i.encode("utf-8") for i in inserted]
            segs, _ = fresh.committed_live_many(raws, id_hashes(raws))
            fresh.conflicts.update(i for i, s in zip(inserted, segs.tolist()) if s >= 0)
        ids = list(self.touched)
        fresh.touch_many(ids, [i.encode("utf-8") for i in ids])
        return fresh

