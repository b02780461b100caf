"""LangChain vector store on a Needle collection (extra ``needle_mm[langchain]``).

:class:`NeedleVectorStore` is a :class:`langchain_core.vectorstores.VectorStore`
whose documents live in one collection of a Needle file, so they persist, and
every process that opens the file sees them::

    from langchain_core.documents import Document
    from langchain_core.embeddings import DeterministicFakeEmbedding  # any Embeddings

    from needle_mm.integrations.langchain import NeedleVectorStore

    store = NeedleVectorStore(embedding=DeterministicFakeEmbedding(size=64), path="vectors.needle")
    store.add_documents([
        Document(page_content="Needle keeps vectors in one file", metadata={"topic": "storage", "year": 2024}),
        Document(page_content="HNSW finds near neighbours fast", metadata={"topic": "search", "year": 2023}),
    ], ids=["a", "b"])
    store.similarity_search("one file", k=1, filter={"topic": "storage"})
    store.similarity_search_with_score("neighbours", k=2, filter={"year": {"$gte": 2023}})
    store.as_retriever(search_type="mmr", search_kwargs={"k": 1}).invoke("vectors")
    store.close()

How records are stored
----------------------
- The text of a document is the metadata key ``"document"`` (:data:`TEXT_KEY`),
  as Needle's Chroma importer and the migration guide store it; the document's
  own metadata sits beside it in the same JSON object. So a collection imported
  from Chroma can be searched through this class as it is, and filters name
  metadata keys directly: ``{"topic": "storage"}``, ``{"year": {"$gt": 2000}}``.
  A document whose metadata has a key ``"document"`` is refused
  (:class:`~needle_mm.errors.InvalidMetadataError`) rather than silently losing
  its text or its metadata. A filter may use the text too:
  ``{"document": {"$contains": "HNSW"}}``.
- Ids are the record ids: ``ids=`` or ``Document.id``, else a new uuid4 string.
  Adding an id that is stored replaces that record (upsert).
- Every call that writes (``add_texts``, ``add_documents``, ``delete``) ends
  with ``Database.save()``: when it returns, the change is on disk and other
  processes see it. Called inside the caller's own ``db.transaction()`` block,
  the write joins the transaction instead and is committed when the block ends.

Filters are Needle's MongoDB-style filters (:mod:`needle_mm.filters`), which is
also LangChain's convention for dict filters: ``$eq $ne $gt $gte $lt $lte $in
$nin $exists $not $contains $all $size $elemMatch`` on fields and ``$and $or
$nor`` around them. A malformed filter raises
:class:`~needle_mm.errors.FilterError` before the query is embedded.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from ..collection import Collection
from ..config import DistanceFunction
from ..database import Database
from ..errors import (CollectionExistsError, CollectionNotFoundError, InvalidArgumentError, InvalidConfigError,
                      InvalidIdError, InvalidMetadataError, InvalidVectorError, NeedleError, TransactionError)
from ..filters import compile_filter

__all__ = ["NeedleVectorStore", "TEXT_KEY"]

TEXT_KEY = "document"
"""The metadata key that holds a document's text (``page_content``)."""


def _clamp01(x: float) -> float:
    return 0.0 if x <= 0.0 else (1.0 if x >= 1.0 else float(x))


def _cosine_relevance(distance: float) -> float:
    """Cosine similarity (``1 - distance``), negative similarity counted as 0."""
    return _clamp01(1.0 - distance)


def _euclidean_relevance(distance: float) -> float:
    """For unit-length vectors ``1 - d**2 / 2`` is their cosine similarity; clamped to [0, 1]."""
    return _clamp01(1.0 - distance * distance / 2.0)


def _dot_relevance(distance: float) -> float:
    """The dot product (``1 - distance``), clamped to [0, 1]: the cosine similarity of unit-length vectors."""
    return _clamp01(1.0 - distance)


_RELEVANCE = {
    DistanceFunction.Cosine: _cosine_relevance,
    DistanceFunction.Euclidean: _euclidean_relevance,
    DistanceFunction.DotProduct: _dot_relevance,
}


def _count(name: str, value: Any, *, positive: bool = False) -> int:
    """``value`` as an int: a Python or numpy integer, not a bool, ``>= 1`` if ``positive`` else ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (1 if positive else 0):
        raise InvalidArgumentError(f"{name} must be a {'positive' if positive else 'non-negative'} integer, "
                                   f"got {value!r}")
    return int(value)


def _as_list(name: str, value: Any, what: str) -> list:
    """A list of the items of ``value``, an iterable of ``what`` (not one str, bytes or dict)."""
    if isinstance(value, (str, bytes)):
        raise InvalidArgumentError(f"{name} must be a list of {what}, not a single {type(value).__name__} "
                                   f"({value!r:.60}); for one, wrap it in a list")
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise InvalidArgumentError(f"{name} must be a list of {what}, got {type(value).__name__}")
    return list(value)


def _id_list(name: str, ids: Any, *, allow_none: bool = False) -> list:
    """``ids`` as a list of str ids (``None`` entries kept if ``allow_none``)."""
    ids = _as_list(name, ids, "str ids")
    for i, id in enumerate(ids):
        if not (isinstance(id, str) or (allow_none and id is None)):
            raise InvalidIdError(f"{name}[{i}] must be a str, got {type(id).__name__} {id!r:.60}")
    return ids


def _query(query: Any) -> str:
    if not isinstance(query, str):
        raise InvalidArgumentError(f"the query must be a str, got {type(query).__name__}")
    return query


def _no_extra(method: str, kwargs: dict) -> None:
    if kwargs:
        raise InvalidArgumentError(f"NeedleVectorStore.{method}() got unexpected keyword argument(s) "
                        f"{', '.join(map(repr, sorted(kwargs)))}")


class NeedleVectorStore(VectorStore):
    """A LangChain vector store kept in a collection of a Needle file.

    Parameters
    ----------
    embedding : Embeddings
        Embeds documents (``embed_documents``) and queries (``embed_query``).
    path : str or path-like, optional
        The ``.needle`` file, created if missing. The store opens it, owns it,
        and releases it in :meth:`close`. Give ``path`` or ``database``, not both.
    collection_name : str
        The collection holding the documents (default ``"langchain"``). It is
        created on the first add, with the dimension of the embeddings; if it
        exists it is used as it is.
    distance : str or DistanceFunction
        ``"cosine"`` (default), ``"euclidean"`` or ``"dot"``: the distance of a
        collection this store creates. An existing collection must have this
        distance (:class:`~needle_mm.errors.CollectionExistsError` otherwise).
    database : needle_mm.Database, optional
        An open Database to use instead of ``path``, e.g. to keep several stores
        (collections) in one file, or to open it with options
        (``read_only``, ``lock_timeout``). The store never closes it.
    relevance_score_fn : callable, optional
        Distance -> relevance in [0, 1], replacing the default of
        :meth:`_select_relevance_score_fn` (whose Euclidean and dot-product
        functions assume unit-length embeddings).

    Scores: :meth:`similarity_search_with_score` returns Needle's distance
    (smaller is closer: cosine ``1 - cos``, Euclidean L2, dot ``1 - x·q``);
    ``similarity_search_with_relevance_scores`` returns relevance in [0, 1]
    (larger is closer). Search methods take ``filter`` (a Needle filter dict)
    and Needle's search options ``ef`` (HNSW breadth) and ``exact`` (brute force).

    The async methods are LangChain's defaults, which run the sync ones in an
    executor; a Database is safe to share between threads.
    """

    def __init__(self, embedding: Embeddings, path: str | os.PathLike | None = None,
                 collection_name: str = "langchain", distance: str | DistanceFunction = "cosine", *,
                 database: Database | None = None, relevance_score_fn: Callable[[float], float] | None = None):
        if not isinstance(embedding, Embeddings):
            raise InvalidArgumentError(f"embedding must be a langchain_core Embeddings, got {type(embedding).__name__}")
        if (path is None) == (database is None):
            raise InvalidArgumentError("NeedleVectorStore needs either path= (a .needle file) or database= "
                                       "(an open needle_mm.Database), and not both")
        if database is not None and not isinstance(database, Database):
            raise InvalidArgumentError(f"database must be a needle_mm.Database, got {type(database).__name__}")
        if not isinstance(collection_name, str) or not collection_name:
            raise InvalidConfigError(f"collection_name must be a non-empty string, got {collection_name!r}")
        if relevance_score_fn is not None and not callable(relevance_score_fn):
            raise InvalidArgumentError("relevance_score_fn must be a function of one distance")
        self._embedding = embedding
        self.collection_name = collection_name
        self.distance = DistanceFunction.parse(distance)
        self._relevance_score_fn = relevance_score_fn
        self._owns_database = database is None
        self._db = Database.open(path) if database is None else database
        try:
            existing = self._collection()
            if existing is not None:
                self._check_existing(existing)
        except BaseException:
            if self._owns_database:
                self._db.close()
            raise

    def _check_existing(self, coll: Collection) -> None:
        config = coll.config
        if config.sparse:
            raise InvalidConfigError(f"collection {self.collection_name!r} holds sparse vectors; "
                                     "a LangChain store needs a dense collection")
        if config.distance != self.distance:
            raise CollectionExistsError(
                f"collection {self.collection_name!r} exists with distance {config.distance.value!r}, "
                f"not {self.distance.value!r}: pass distance={config.distance.value!r}")

    # ------------------------------------------------------------ plumbing

    @property
    def embeddings(self) -> Embeddings:
        """The embedding model this store uses."""
        return self._embedding

    @property
    def database(self) -> Database:
        """The Needle Database holding the collection."""
        return self._db

    @property
    def collection(self) -> Collection | None:
        """The Needle collection, or ``None`` until the first add creates it."""
        return self._collection()

    def _collection(self) -> Collection | None:
        # Looked up on every call (a few microseconds): another store, thread or
        # process may create the collection after this store was made.
        try:
            return self._db.collection(self.collection_name)
        except CollectionNotFoundError:
            return None

    def _save(self) -> None:
        try:
            self._db.save()
        except TransactionError:
            pass  # inside the caller's db.transaction(): the block's end commits this write with the rest

    def close(self) -> None:
        """Release the Needle file if this store opened it (``path=``); a Database
        passed as ``database=`` stays open. Every write is already saved."""
        if self._owns_database:
            self._db.close()

    def __enter__(self) -> "NeedleVectorStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"NeedleVectorStore({self._db.path!r}, collection_name={self.collection_name!r}, "
                f"distance={self.distance.value!r})")

    @staticmethod
    def _document(id: str, metadata: dict) -> Document:
        meta = dict(metadata)
        text = meta.pop(TEXT_KEY, "")
        return Document(id=id, page_content=text if isinstance(text, str) else str(text), metadata=meta)

    # ------------------------------------------------------------ writes

    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
                  ids: list[str | None] | None = None, batch_size: int | None = None, **kwargs: Any) -> list[str]:
        """Embed ``texts`` and store them; returns their ids.

        Parameters
        ----------
        texts : iterable of str
        metadatas : list of dict, optional
            One per text. JSON values; the key ``"document"`` is reserved for the text.
        ids : list of str, optional
            One per text (``None`` entries get a new uuid4). An id already stored
            is replaced, vector, text and metadata.
        batch_size : int, optional
            Embed at most this many texts per ``embed_documents`` call (all are
            stored, and saved, together at the end).

        The collection is created on the first call, with the embeddings' dimension.
        The records are saved to disk before this returns.
        """
        _no_extra("add_texts", kwargs)
        texts = _as_list("texts", texts, "str")
        n = len(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidArgumentError(f"texts[{i}] must be a str, got {type(text).__name__}")
        if metadatas is None:
            metadatas = [None] * n
        else:
            metadatas = _as_list("metadatas", metadatas, "dicts (one per text)")
            if len(metadatas) != n:
                raise InvalidArgumentError(f"{n} texts but {len(metadatas)} metadatas")
        if ids is None:
            ids = [None] * n
        else:
            ids = _id_list("ids", ids, allow_none=True)
            if len(ids) != n:
                raise InvalidArgumentError(f"{n} texts but {len(ids)} ids")
        ids = [str(uuid.uuid4()) if i is None else i for i in ids]
        records = []
        for i, (text, meta) in enumerate(zip(texts, metadatas)):
            if meta is None:
                meta = {}
            elif not isinstance(meta, dict):
                raise InvalidMetadataError(f"metadatas[{i}] must be a dict, got {type(meta).__name__}")
            elif TEXT_KEY in meta:
                raise InvalidMetadataError(
                    f"metadatas[{i}] has the key {TEXT_KEY!r}, which NeedleVectorStore keeps for the document's "
                    "text: rename that key")
            records.append({**meta, TEXT_KEY: text})
        step = n if batch_size is None else _count("batch_size", batch_size, positive=True)
        if not n:
            return []
        vectors: list = []
        for start in range(0, n, step):
            vectors.extend(self._embedding.embed_documents(texts[start:start + step]))
        if len(vectors) != n:
            raise InvalidArgumentError(f"the embedding model returned {len(vectors)} vectors for {n} texts")
        try:
            dim = len(vectors[0])
        except TypeError:
            raise InvalidVectorError(f"the embedding model returned a {type(vectors[0]).__name__}, "
                                     "not a list of floats") from None
        coll, created = self._collection(), False
        if coll is None:
            try:
                coll, created = self._db.create_collection(self.collection_name, dim, self.distance), True
            except CollectionExistsError:  # made meanwhile (another store, thread or process)
                coll = None
        if not created:  # an existing collection must have this dimension and distance
            coll = self._db.get_or_create_collection(self.collection_name, dim, self.distance)
        try:
            coll.upsert_many(ids, vectors, records)  # all or nothing: Needle validates the batch first
        except BaseException:
            if created:  # made for this call: a refused batch leaves no empty collection pending
                try:
                    self._db.drop_collection(self.collection_name)
                except NeedleError:
                    pass  # (the database closed meanwhile, say): the refusal is the error to report
            raise
        self._save()
        return ids

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None, *,
                   ids: list[str] | None = None, **kwargs: Any) -> "NeedleVectorStore":
        """A store made with ``NeedleVectorStore(embedding, **kwargs)`` (``path=`` or
        ``database=``, ``collection_name=``, ``distance=``, ...) holding ``texts``.

        ``from_documents`` (inherited) does the same for Documents, with their ids.
        """
        store = cls(embedding, **kwargs)
        try:
            store.add_texts(texts, metadatas, ids=ids)
        except BaseException:
            store.close()
            raise
        return store

    def delete(self, ids: list[str] | None = None, *, filter: dict | None = None, **kwargs: Any) -> bool:
        """Delete the records with these ids (unknown ids are ignored); returns True.

        With ``filter``, delete the records matching it (only those among ``ids``
        if both are given). With neither, raises
        :class:`~needle_mm.errors.InvalidArgumentError` rather than deleting
        everything: for that, :meth:`delete_collection`. Saved to disk before
        this returns. ``ids`` is a list: a single str is refused
        (:class:`~needle_mm.errors.InvalidArgumentError`), not read as its characters.
        """
        _no_extra("delete", kwargs)
        if ids is None and filter is None:
            raise InvalidArgumentError("delete needs ids or a filter; to delete every document, call delete_collection()")
        if ids is not None:
            ids = _id_list("ids", ids)
        compile_filter(filter)
        coll = self._collection()
        if coll is None or (ids is not None and not ids):
            return True
        coll.delete(ids, filter=filter)
        self._save()
        return True

    def delete_collection(self) -> None:
        """Drop the whole collection (every document; saved). The next add creates it again."""
        if self._collection() is not None:
            self._db.drop_collection(self.collection_name)
            self._save()

    # ------------------------------------------------------------ reads

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents with these ids, in the order of ``ids``; ids not stored
        are skipped, and a repeated id gives its document once."""
        ids = list(dict.fromkeys(_id_list("ids", ids)))
        coll = self._collection()
        if coll is None or not ids:
            return []
        return [self._document(e.id, e.metadata) for e in coll.get_many(ids) if e is not None]

    def _search(self, vector, k: int, filter: dict | None, include_vector: bool, ef: int | None, exact: bool):
        k = _count("k", k)
        if ef is not None:
            ef = _count("ef", ef, positive=True)
        coll = self._collection()
        if coll is None:
            return []
        return coll.search(vector, k=k, filter=filter, ef=ef, exact=exact, include_vector=include_vector)

    def similarity_search_with_score_by_vector(self, embedding: list[float], k: int = 4, *, filter: dict | None = None,
                                               ef: int | None = None, exact: bool = False,
                                               **kwargs: Any) -> list[tuple[Document, float]]:
        """The ``k`` documents nearest to ``embedding`` with their distances (smaller is closer)."""
        _no_extra("similarity_search_with_score_by_vector", kwargs)
        compile_filter(filter)
        return [(self._document(hit.id, hit.metadata), float(hit.distance))
                for hit in self._search(embedding, k, filter, False, ef, exact)]

    def similarity_search_with_score(self, query: str, k: int = 4, *, filter: dict | None = None,
                                     ef: int | None = None, exact: bool = False,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        """The ``k`` documents nearest to ``query``, closest first, each with its
        Needle distance (smaller is closer), optionally only those matching ``filter``."""
        _no_extra("similarity_search_with_score", kwargs)
        compile_filter(filter)  # a bad filter fails before the query is embedded
        _count("k", k)
        return self.similarity_search_with_score_by_vector(self._embedding.embed_query(_query(query)), k, filter=filter,
                                                           ef=ef, exact=exact)

    def similarity_search(self, query: str, k: int = 4, *, filter: dict | None = None, ef: int | None = None,
                          exact: bool = False, **kwargs: Any) -> list[Document]:
        """The ``k`` documents nearest to ``query``, closest first (matching ``filter`` if given)."""
        _no_extra("similarity_search", kwargs)
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter=filter, ef=ef, exact=exact)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, *, filter: dict | None = None,
                                    ef: int | None = None, exact: bool = False, **kwargs: Any) -> list[Document]:
        """The ``k`` documents nearest to an embedding vector, closest first."""
        _no_extra("similarity_search_by_vector", kwargs)
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, filter=filter, ef=ef,
                                                                              exact=exact)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Distance -> relevance in [0, 1] (1 closest), for ``similarity_search_with_relevance_scores``.

        ``relevance_score_fn`` if one was given, else by the collection's distance:

        - cosine: the cosine similarity ``1 - d``;
        - Euclidean: ``1 - d**2 / 2``, the cosine similarity of unit-length vectors;
        - dot: the dot product ``1 - d``, the cosine similarity of unit-length vectors;

        each clamped to [0, 1] (vectors pointing away from the query score 0). For
        unit-length embeddings (OpenAI's, most sentence-transformers) the three
        agree; for others, cosine is the exact one, or pass ``relevance_score_fn``.
        """
        if self._relevance_score_fn is not None:
            return self._relevance_score_fn
        return _RELEVANCE[self.distance]

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, *, filter: dict | None = None,
                                                ef: int | None = None, exact: bool = False,
                                                **kwargs: Any) -> list[Document]:
        """``k`` documents chosen by maximal marginal relevance among the ``fetch_k``
        nearest to ``embedding``: similar to the query and different from each other
        (``lambda_mult`` 1 ranks by similarity alone, 0 by diversity alone)."""
        _no_extra("max_marginal_relevance_search_by_vector", kwargs)
        compile_filter(filter)
        if (isinstance(lambda_mult, bool) or not isinstance(lambda_mult, (int, float, np.integer, np.floating))
                or not 0.0 <= lambda_mult <= 1.0):  # NaN fails it too
            raise InvalidArgumentError(f"lambda_mult must be a number between 0 and 1, got {lambda_mult!r}")
        k, fetch_k = _count("k", k), _count("fetch_k", fetch_k)
        hits = self._search(embedding, max(k, fetch_k), filter, True, ef, exact)
        if not hits or k == 0:
            return []
        chosen = maximal_marginal_relevance(np.asarray(embedding, dtype=np.float32),
                                            np.stack([hit.vector for hit in hits]), lambda_mult=lambda_mult, k=k)
        return [self._document(hits[i].id, hits[i].metadata) for i in chosen]

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, *,
                                      filter: dict | None = None, ef: int | None = None, exact: bool = False,
                                      **kwargs: Any) -> list[Document]:
        """``k`` documents chosen by maximal marginal relevance among the ``fetch_k``
        nearest to ``query`` (see :meth:`max_marginal_relevance_search_by_vector`)."""
        _no_extra("max_marginal_relevance_search", kwargs)
        compile_filter(filter)
        _count("k", k)
        _count("fetch_k", fetch_k)
        return self.max_marginal_relevance_search_by_vector(self._embedding.embed_query(_query(query)), k, fetch_k,
                                                            lambda_mult, filter=filter, ef=ef, exact=exact)
