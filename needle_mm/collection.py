"""The public Collection: records with string ids, vectors and JSON metadata."""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ._engine import search as _search
from ._engine import text_search as _text
from ._engine.engine import Engine
from ._engine.records import Records
from . import sparse as _sparse
from . import _input
from ._kernels import METRIC_CODES
from ._kernels import api as _kernels
from .config import CollectionConfig, DistanceFunction
from .errors import DuplicateIdError, InvalidArgumentError, InvalidVectorError, RecordNotFoundError
from .filters import compile_filter
from .results import Entry


__all__ = ["Collection"]

_MISSING = object()
# k and ef above this are clamped to the record count (counting costs microseconds on the hot path)
_CLAMP_ABOVE = 4096
# records read per step of an iteration (ids, vectors and metadata of one batch at a time)
_WALK_BATCH = 1024


def _result_count(state, k, as_arrays: bool, include_vector: bool) -> int:
    """A search's ``k``, checked, with the result shape it asks for; a ``k``
    above _CLAMP_ABOVE is clamped to the record count (never more results than
    records: that bounds every k-sized buffer)."""
    if type(k) is int and 0 <= k <= _CLAMP_ABOVE and not (as_arrays and include_vector):
        return k  # the common call, checked in one step
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise InvalidArgumentError(f"k must be a non-negative integer, got {k!r}")
    if as_arrays and include_vector:
        raise InvalidArgumentError("as_arrays returns ids and distances only: drop include_vector, or as_arrays")
    k = int(k)
    return min(k, state.count()) if k > _CLAMP_ABOVE else k


def _text_config(text) -> dict:
    """``CollectionConfig``'s text keywords for a collection's text index (None: none)."""
    if text is None:
        return {}
    return {"text_field": text.field, "text_options": {"k1": text.k1, "b": text.b, **{
        k: text.analyzer[k] for k in ("stemmer", "stop_words", "fold_accents")}}}


def _id_list(ids) -> list:
    """``ids`` as a list: any iterable of ids but a lone str or bytes (a str is one id, not its characters)."""
    if isinstance(ids, (str, bytes)) or ids is None:
        raise InvalidArgumentError(f"ids must be a list of str, got {type(ids).__name__}"
                                   + (" (for one record use insert/upsert)" if isinstance(ids, str) else ""))
    try:
        return list(ids)
    except TypeError:
        raise InvalidArgumentError(f"ids must be a list of str, got {type(ids).__name__}") from None


def _check_count(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidArgumentError(f"{name} must be a non-negative integer{' or None' if allow_none else ''}, "
                                   f"got {value!r}")


class Collection:
    """A named set of records in a :class:`~needle_mm.Database`.

    Obtain one with ``db.collection(name)``. Writes are visible to this process
    at once and to other processes after ``db.save()``.
    """

    def __init__(self, engine: Engine, name: str):
        self._engine = engine
        self.name = name

    @property
    def engine(self) -> Engine:
        """The engine behind this collection (for needle_mm's own operations: export, import, rebuild)."""
        return self._engine

    def __repr__(self) -> str:
        return f"Collection({self.name!r})"

    # ------------------------------------------------------------ config

    def _state(self):
        """This collection's state; callers are inside ``_db.reading()`` or ``_db.changing()``."""
        return self._engine.state(self.name)

    def _meta(self):
        with self._engine.reading():
            return self._state().descriptor

    @property
    def config(self) -> CollectionConfig:
        """The collection's configuration, with a text index this process asked for
        (``create_text_index``) before the save that builds it."""
        with self._engine.reading():
            state = self._state()
            meta, text = state.descriptor, state.descriptor.text or state.text_index
        h = meta.hnsw
        return CollectionConfig(meta.dim, DistanceFunction(meta.distance), h.m, h.ef_construction,
                                h.ef_search, h.seed, sparse=meta.kind == "sparse", dtype=meta.dtype,
                                quantization=meta.quantization, **_text_config(text))

    @property
    def sparse(self) -> bool:
        """True for a collection of sparse vectors (see :mod:`needle_mm.sparse`)."""
        return self._meta().kind == "sparse"

    @property
    def dimension(self) -> int:
        return self._meta().dim

    @property
    def distance(self) -> DistanceFunction:
        return DistanceFunction(self._meta().distance)

    # ------------------------------------------------------------ writes

    def _prepare(self, ids: Sequence[str], vectors, metadatas, what: str) -> tuple:
        """(the writable state, the validated ``Records``) of a write of these inputs."""
        state = self._engine.writable_state(self.name)
        dim = state.descriptor.dim
        ids = _id_list(ids)
        ids_utf8 = [_input.id_bytes(i) for i in ids]
        sparse = state.descriptor.kind == "sparse"
        matrix = _sparse.vectors(vectors, dim, what) if sparse else _input.matrix(vectors, dim, what)
        if len(matrix) != len(ids):
            raise InvalidVectorError(f"{len(ids)} ids but {len(matrix)} vectors")
        if metadatas is None:
            metas = [b"{}"] * len(ids)
        else:
            metadatas = list(metadatas)
            if len(metadatas) != len(ids):
                raise _input.InvalidMetadataError(f"{len(ids)} ids but {len(metadatas)} metadata entries")
            metas = [_input.metadata(m) for m in metadatas]
        if sparse:
            return state, Records(ids_utf8, matrix, np.zeros(len(ids), dtype=np.float32), metas, ids)
        if state.descriptor.dtype == "f16":
            matrix = _input.half_precision(matrix, what)
        norms = _input.norms(matrix, what)
        if state.descriptor.distance == "cosine":
            _input.require_nonzero(norms, what)
        return state, Records(ids_utf8, matrix, norms, metas, ids)

    def _one(self, vector):
        """One vector as a batch of one (validated, so errors name a 'vector', not 'vectors')."""
        meta = self._engine.writable_state(self.name).descriptor
        if meta.kind == "sparse":
            return [_sparse.vector(vector, meta.dim, "vector")]
        return _input.vector(vector, meta.dim)[None, :]

    def _changing(self):
        return self._engine.changing(f"write to collection {self.name!r}")

    def insert(self, id: str, vector, metadata: dict | None = None) -> None:
        """Add one record; raises :class:`DuplicateIdError` if ``id`` is live (use :meth:`upsert`)."""
        with self._changing():
            self.insert_many([id], self._one(vector), None if metadata is None else [metadata])

    def insert_many(self, ids: Sequence[str], vectors, metadatas: Iterable[dict | None] | None = None) -> None:
        """Add many records at once: the fast path (``vectors`` a 2-D array ``[n, dim]``).

        All-or-nothing: if any record is invalid or any id is already live (or
        repeated in the batch), nothing is added.
        """
        with self._changing():
            state, recs = self._prepare(ids, vectors, metadatas, "vectors")
            ids = recs.ids
            if len(set(ids)) != len(ids):
                seen = set()
                dup = next(i for i in ids if i in seen or seen.add(i))
                raise DuplicateIdError(f"id {dup!r} appears more than once in this batch")
            live = state.live_ids_among(ids, recs.ids_utf8)
            if live:
                raise DuplicateIdError(
                    f"id {live[0]!r} already exists in collection {self.name!r}"
                    + (f" (and {len(live) - 1} more)" if len(live) > 1 else "") + "; use upsert to replace"
                )
            with self._engine.exclusive():
                state.write(recs, known_absent=True)

    def upsert(self, id: str, vector, metadata: dict | None = None) -> None:
        """Insert a record, or replace the one with the same id (vector and metadata)."""
        with self._changing():
            self.upsert_many([id], self._one(vector), None if metadata is None else [metadata])

    def upsert_many(self, ids: Sequence[str], vectors, metadatas: Iterable[dict | None] | None = None) -> None:
        """Insert or replace many records; a repeated id in the batch keeps its last record."""
        with self._changing():
            state, recs = self._prepare(ids, vectors, metadatas, "vectors")
            with self._engine.exclusive():
                state.write(recs)

    def delete(self, ids: str | Sequence[str] | None = None, *, filter: dict | None = None) -> int:
        """Delete one id, a list of ids, or every record matching ``filter``;
        returns how many live records were deleted.

        Unknown ids are ignored (as in Chroma and Qdrant). With both ``ids`` and
        ``filter``, only the listed ids that match the filter are deleted.
        """
        with self._changing():
            return self._delete(ids, filter)

    def _delete(self, ids, filter) -> int:
        state = self._engine.writable_state(self.name)
        if filter is not None:
            if compile_filter(filter) is None:
                raise InvalidArgumentError("delete(filter={}) would delete everything; pass the ids, or "
                                           "drop the collection")
            matched = [i for i, _ in self.find(filter)]
            if ids is not None:
                wanted = {ids} if isinstance(ids, str) else set(ids)
                matched = [i for i in matched if i in wanted]
            ids = matched
        elif ids is None:
            raise InvalidArgumentError("delete needs ids or a filter")
        ids = [ids] if isinstance(ids, str) else _id_list(ids)
        ids_utf8 = [_input.id_bytes(i) for i in ids]
        with self._engine.exclusive():
            return state.delete(ids, ids_utf8)

    def update_metadata(self, id: str, metadata: dict | None) -> None:
        """Replace the metadata of a live record, keeping its vector."""
        raw = _input.id_bytes(id)
        meta = _input.metadata(metadata)
        with self._changing():
            state = self._engine.writable_state(self.name)
            entry = state.get(id, raw)
            if entry is None:
                raise RecordNotFoundError(f"no record with id {id!r} in collection {self.name!r}")
            if isinstance(entry.vector, _sparse.SparseVector):
                vectors, norms = [entry.vector], np.zeros(1, dtype=np.float32)
            else:
                vectors = entry.vector[None, :]
                norms = _input.norms(vectors)
            with self._engine.exclusive():
                state.write(Records([raw], vectors, norms, [meta], [id]), same_record=True)

    # ------------------------------------------------------------ reads

    def get(self, id: str, default: Any = _MISSING) -> Entry:
        """The live record with this id; :class:`RecordNotFoundError` (or ``default``) if none."""
        raw = _input.id_bytes(id)
        with self._engine.reading():
            entry = self._state().get(id, raw)
        if entry is None:
            if default is not _MISSING:
                return default
            raise RecordNotFoundError(f"no record with id {id!r} in collection {self.name!r}")
        return entry

    def __contains__(self, id: object) -> bool:
        if not (isinstance(id, str) and id):
            return False
        raw = _input.id_bytes(id)
        with self._engine.reading():
            return self._state().is_live(id, raw)

    def __len__(self) -> int:
        return self.count()

    def count(self, filter: dict | None = None) -> int:
        """Number of live records (matching ``filter`` if given)."""
        flt = compile_filter(filter)
        with self._engine.reading():
            state = self._state()
            if flt is None:
                return state.count()
            return sum(int(np.count_nonzero(mask)) for _, mask in self._matching(state, flt))

    def get_many(self, ids: Sequence[str]) -> list[Entry | None]:
        """The live records with these ids, in the order given; ``None`` where there is none.

        All are read from one generation (a save by another process in between is not half-seen)."""
        if isinstance(ids, (str, bytes)):
            raise InvalidArgumentError("get_many takes a list of ids; use get() for one")
        try:
            ids = list(ids)
        except TypeError:
            raise InvalidArgumentError(f"get_many takes a list of ids, got {type(ids).__name__}") from None
        raws = [_input.id_bytes(i) for i in ids]
        with self._engine.reading():
            state = self._state()
            return [state.get(i, raw) for i, raw in zip(ids, raws)]

    def find(self, filter: dict | None = None, limit: int | None = None, offset: int = 0) -> list[tuple[str, dict]]:
        """``(id, metadata)`` of live records matching ``filter``, in storage order,
        skipping the first ``offset`` of them and returning at most ``limit``.

        Storage order is stable while the collection does not change, so
        ``offset`` pages through it; for a consistent walk over a collection
        that others write, use :meth:`ids` or iterate the collection."""
        _check_count("limit", limit, allow_none=True)
        _check_count("offset", offset)
        flt = compile_filter(filter)
        out = []
        skip = int(offset)
        with self._engine.reading():
            for source, mask in self._matching(self._state(), flt):
                slots = np.flatnonzero(mask)
                if skip:
                    taken = min(skip, slots.shape[0])
                    slots, skip = slots[taken:], skip - taken
                slots = slots.tolist()
                if limit is not None:
                    slots = slots[: limit - len(out)]
                out.extend(zip(source.ids_at(slots), (source.metadata_at(s) for s in slots)))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def ids(self, filter: dict | None = None) -> Iterator[str]:
        """An iterator over the ids of live records (matching ``filter`` if given), in storage order.

        The walk reads the generation current when it starts: records saved by
        others later are not seen, and records deleted later still are."""
        for source, slots in self._walk(filter):
            for start in range(0, len(slots), _WALK_BATCH):
                yield from source.ids_at(slots[start:start + _WALK_BATCH])

    def __iter__(self) -> Iterator[Entry]:
        """Every live record as an :class:`Entry`, in storage order (one generation, as :meth:`ids`)."""
        for source, slots in self._walk(None):
            for start in range(0, len(slots), _WALK_BATCH):
                part = slots[start:start + _WALK_BATCH]
                vectors = source.vectors_at(part)
                for j, (i, s) in enumerate(zip(source.ids_at(part), part)):
                    yield Entry(i, vectors[j], source.metadata_at(s))

    def peek(self, n: int = 10) -> list[Entry]:
        """The first ``n`` records in storage order (as Chroma's ``peek``)."""
        _check_count("n", n)
        out = []
        for entry in self:
            if len(out) >= n:
                break
            out.append(entry)
        return out

    def _walk(self, filter) -> list:
        """(source, slots of its live records matching ``filter``) for every source, taken
        under one read hold. Committed segments never change, and this process's
        pending records are only ever appended to, so the slots stay valid after it."""
        flt = compile_filter(filter)
        with self._engine.reading():
            return [(source, np.flatnonzero(mask).tolist()) for source, mask in self._matching(self._state(), flt)]

    def _matching(self, state, flt):
        """(source, bool mask of its live records matching ``flt``) for every source."""
        for source, f in _search.sources(state, None):
            live = _search.live_mask(source.n, f.excluded)
            yield source, (live if flt is None else live & _search.matching(source, flt))

    def search(self, query=None, k: int = 10, filter: dict | None = None, *, text: str | None = None,
               fusion="rrf", candidates: int = _text.DEFAULT_CANDIDATES, ef: int | None = None,
               exact: bool = False, include_vector: bool = False, as_arrays: bool = False, rescore: int | None = None,
               vector=None):
        """The ``k`` nearest live records to ``query``, closest first; with
        ``text``, the best by BM25, or both rankings fused.

        Parameters
        ----------
        query : array-like of float, length ``dimension``
            (sparse collections: a sparse vector; results are the records
            sharing at least one index with it, by ``1 - dot``, always exact).
            Also accepted as ``vector=``. None with ``text``: text search only.
        text : str, optional
            A full-text query (collections with a text index, see
            :meth:`create_text_index`): ranked by BM25 alone (``distance`` is
            minus the score), or, with ``query``, fused with the vector
            ranking (hybrid; each hit's ``scores`` holds both rankings').
        fusion : str or dict
            Hybrid only: ``"rrf"`` (default: Reciprocal Rank Fusion,
            ``{"method": "rrf", "k": 60}``) or ``{"method": "weighted",
            "alpha": 0.5}`` (``alpha`` times the normalised vector similarity
            plus ``1 - alpha`` times the normalised BM25 score).
        candidates : int
            Hybrid only: how many hits each ranking contributes to the fusion
            (default 100; at least ``k`` are taken).
        k : int
            How many results at most.
        filter : dict, optional
            MongoDB-style filter on metadata (see :mod:`needle_mm.filters`).
        ef : int, optional
            HNSW search breadth for this query (more = better recall, slower);
            default: the collection's ``ef_search``.
        exact : bool
            Brute force instead of the HNSW index: exact results, slower.
        include_vector : bool
            Also return each result's vector.
        rescore : int, optional
            Quantized collections only: the walk over the codes keeps the best
            ``k * rescore`` candidates, which are ranked again by their exact
            distances to the stored vectors (default 2 for int8 codes, 16 for
            binary ones; ``0``: the code
            distances' order and values, no stored vector read). The beam is
            widened to at least ``k * rescore``.
        as_arrays : bool
            Return ``(ids, distances)``, two numpy arrays of shape ``(k,)``
            instead of result objects: ``ids`` of dtype ``object`` holding
            ``str`` and ``None`` past the last hit, ``distances`` float32 with
            ``inf`` there (the cheap path: no metadata, no objects per hit).
            A ``k`` above 4096 is first clamped to the record count (as it is
            for result lists), and the arrays have that many columns.

        Returns
        -------
        SearchResults (a sequence of SearchResult), or (ids, distances) with ``as_arrays``
        """
        if vector is not None:
            if query is not None:
                raise InvalidArgumentError("give the query vector once: as query or as vector=")
            query = vector
        engine = self._engine
        engine.begin_read()
        try:
            if text is None:
                if query is None:
                    raise InvalidArgumentError("search needs a query vector, a text, or both")
                state = self._state()
                if filter is None and type(query) is np.ndarray and not (exact or include_vector):
                    found = _search.quick(state, query, k, ef, rescore, as_arrays)  # the lean call, if it applies
                    if found is not None:
                        return found
                found = self._search(state, query, False, k, filter, include_vector, ef, exact, as_arrays, rescore)
            else:
                found = self._search_text(self._state(), query, text, k, filter, fusion, candidates, include_vector,
                                          ef, exact, as_arrays, rescore)
        finally:
            engine.end_read()
        return (found[0][0], found[1][0]) if as_arrays else found[0]

    def _search_text(self, state, query, text, k, filter, fusion, candidates, include_vector, ef, exact, as_arrays,
                     rescore, batch=False):
        """Text-only (BM25) or hybrid search (SPEC §5.11) of one query, or of a batch."""
        k = _result_count(state, k, as_arrays, include_vector)
        texts = _text.query_texts(text, batch)
        _text.active_index(state)  # no index: say so before anything else
        if query is None:
            predicate = compile_filter(filter)
            return _text.search_text(state, texts, k, predicate, include_vector, as_arrays)
        method, value = _text.fusion_of(fusion)
        n = max(k, _text.check_candidates(candidates))
        predicate = compile_filter(filter)
        if batch:
            dense = self._search(state, query, batch, n, filter, False, ef, exact, rescore=rescore, ranked=True)
            if len(query) != len(texts):  # (a 2-D batch: _search checked it)
                raise InvalidArgumentError(f"hybrid search needs one text per query: {len(query)} queries, "
                                           f"{len(texts)} texts")
            textual = _text.text_topk(state, texts, n, predicate)
        else:
            # One query: the two rankings at once, the vector walk on a kernel thread (the kernels release
            # the GIL), under this call's read of the state; their errors are raised here, the vector's first.
            def ranking(which):
                try:
                    if which:
                        return self._search(state, query, False, n, filter, False, ef, exact, rescore=rescore,
                                            ranked=True), None
                    # hand the GIL to the kernel thread first: the walk's Python runs and its kernel starts
                    # before this thread analyses the text (measured: 840 -> 760 us a hybrid query)
                    time.sleep(0)
                    return _text.text_topk(state, texts, n, predicate), None
                except Exception as exc:  # noqa: BLE001 (re-raised below, in the caller's thread)
                    return None, exc

            (textual, text_error), (dense, dense_error) = _kernels.on_threads(ranking, 2)
            if dense_error is not None or text_error is not None:
                raise dense_error if dense_error is not None else text_error
        return _text.fuse(dense, textual, len(texts), k, method, value, include_vector, as_arrays)

    def create_text_index(self, field: str, **options) -> None:
        """Index the string values of metadata ``field`` for full-text and
        hybrid search (``search(text=...)``), analysed and ranked as
        ``options`` say (``stemmer``, ``stop_words``, ``fold_accents``, ``k1``,
        ``b``; see :class:`CollectionConfig`). The index of every record is
        built by the next :meth:`Database.save` (and kept up to date by every
        save after it); a collection created with ``text_field`` has it from
        the start. Calling it again with the same settings does nothing."""
        self._engine.create_text_index(self.name, _text.text_index(field, options))

    def search_batch(self, queries=None, k: int = 10, filter: dict | None = None, *, texts=None, fusion="rrf",
                     candidates: int = _text.DEFAULT_CANDIDATES, ef: int | None = None,
                     exact: bool = False, include_vector: bool = False, as_arrays: bool = False,
                     rescore: int | None = None):
        """:meth:`search` for each row of a 2-D array of queries, in parallel: a list of
        result lists, or with ``as_arrays=True`` ``(ids, distances)`` arrays of shape ``(m, k)``.
        ``texts`` (a list of strings): text queries, alone or one per query row (hybrid)."""
        engine = self._engine
        engine.begin_read()
        try:
            if texts is None:
                if queries is None:
                    raise InvalidArgumentError("search_batch needs queries, texts, or both")
                return self._search(self._state(), queries, True, k, filter, include_vector, ef, exact, as_arrays,
                                    rescore)
            return self._search_text(self._state(), queries, texts, k, filter, fusion, candidates, include_vector,
                                     ef, exact, as_arrays, rescore, batch=True)
        finally:
            engine.end_read()

    def _search(self, state, queries, batch, k, filter, include_vector, ef, exact, as_arrays=False, rescore=None,
                ranked=False):
        """Dense or sparse search of ``queries``: result lists, ``(ids, distances)`` arrays, or
        with ``ranked`` (dense only) each source's own top-k, unmerged (``search.dense_topk``)."""
        k = _result_count(state, k, as_arrays, include_vector)
        predicate = compile_filter(filter)
        meta = state.descriptor
        if meta.kind == "sparse":  # always exact: ef and exact do not apply
            return _search.search_sparse(state, _sparse.queries(queries, meta.dim, batch), int(k), predicate,
                                         include_vector, as_arrays)
        metric = METRIC_CODES[meta.distance]
        qs, qnorms = _input.queries(queries, meta.dim, meta.distance == "cosine", batch)
        if ef is None:
            ef = meta.hnsw.ef_search
        elif type(ef) is not int and (isinstance(ef, bool) or not isinstance(ef, (int, np.integer))) or ef < 1:
            raise InvalidArgumentError(f"ef must be a positive integer, got {ef!r}")
        if ef > _CLAMP_ABOVE:  # a beam wider than the collection finds nothing more
            ef = min(int(ef), max(k, state.count(), 1))
        if rescore is None:
            rescore = _search.DEFAULT_RESCORE.get(meta.quantization, 0)
        elif isinstance(rescore, bool) or not isinstance(rescore, (int, np.integer)) or not 0 <= rescore <= 1 << 20:
            raise InvalidArgumentError(f"rescore must be a non-negative integer, got {rescore!r}")
        if ranked:
            return _search.dense_topk(state, qs, qnorms, k, metric, predicate, None if exact else int(ef),
                                      int(rescore))
        return _search.search_dense(state, qs, qnorms, k, metric, predicate, include_vector,
                                    None if exact else int(ef), as_arrays, int(rescore))
