"""A Needle collection as a LlamaIndex vector store (extra ``[llama-index]``).

:class:`NeedleVectorStore` keeps LlamaIndex nodes (their embeddings, text and
metadata) in one collection of a Needle file, so an index survives the
process and can be shared with other processes reading the same file::

    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding  # stands in for your embedding model
    from llama_index.core.vector_stores import FilterOperator, MetadataFilter, MetadataFilters
    from needle_mm.integrations.llama_index import NeedleVectorStore

    with NeedleVectorStore(path="vectors.needle", collection_name="llama_index") as store:
        index = VectorStoreIndex.from_documents(
            [Document(text="Needle keeps vectors in one file.", metadata={"year": 2024}),
             Document(text="Cats sleep most of the day.", metadata={"year": 2020})],
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=MockEmbedding(embed_dim=8))
        recent = MetadataFilters(filters=[MetadataFilter(key="year", value=2022, operator=FilterOperator.GT)])
        for hit in index.as_retriever(similarity_top_k=2, filters=recent).retrieve("where are vectors kept?"):
            print(hit.score, hit.node.get_content())  # 1.0 Needle keeps vectors in one file.

    # Later, or in another process: the index is the file.
    with NeedleVectorStore(path="vectors.needle", collection_name="llama_index") as store:
        index = VectorStoreIndex.from_vector_store(store, embed_model=MockEmbedding(embed_dim=8))
        print(len(index.as_retriever(similarity_top_k=5).retrieve("anything")))  # 2

How a node is stored (one Needle record per node, id ``node.node_id``):

- the vector: ``node.embedding`` (the collection is created on the first
  ``add``, with that embedding's length as its dimension);
- metadata ``"document"`` (``text_key``): the node's text, the migration
  guide's convention for where a record's text lives;
- the node's own metadata, at the top level (made JSON as LlamaIndex does:
  datetimes become ISO strings, sets lists), so Needle filters name the
  user's keys directly: ``collection.search(v, filter={"topic": "storage"})``;
- ``"ref_doc_id"``: the id of the source document (absent if the node has
  none), what :meth:`NeedleVectorStore.delete` and ``doc_ids`` filter on;
- ``"_node_content"`` / ``"_node_type"``: the rest of the node (relationships,
  templates, excluded keys, ...) as a JSON string without the text, the
  metadata and the embedding, and its LlamaIndex class name.

These four keys are reserved: a node whose metadata uses one of them is
refused with :class:`~needle_mm.errors.InvalidMetadataError`. Records that
were not written by this store (imported from Chroma, say: ``"document"`` and
metadata only) read back as ``TextNode`` objects too.

Similarities: Needle returns distances (smaller is closer); the store
reports LlamaIndex similarities (larger is closer):

- ``cosine``: ``1 - distance``, the cosine similarity, in [-1, 1];
- ``dot``: ``1 - distance``, the dot product itself;
- ``euclidean``: ``1 / (1 + distance)``, in (0, 1].

Every write (``add``, ``delete``, ``delete_nodes``, ``clear``) ends with
``db.save()`` unless the store was made with ``autosave=False``, so what the
index holds is on disk and visible to other processes when the call returns.

Metadata filters (:class:`~llama_index.core.vector_stores.types.MetadataFilters`)
become Needle filters (:mod:`needle_mm.filters`, MongoDB semantics: a filter
on a field holding an array also matches when one element matches)::

    EQ ==  $eq        NE !=  $ne (matches a missing key)
    GT GTE LT LTE     $gt $gte $lt $lte
    IN  $in           NIN  $nin (matches a missing key)
    ANY      the array field has an element in the values  ($elemMatch/$in)
    ALL      the array field has every value               ($all)
    CONTAINS the array field has the value as an element   ($elemMatch/$eq)
    TEXT_MATCH  the string field contains the value        ($contains)
    IS_EMPTY    the key is missing, null, "" or []
    conditions AND / OR / NOT (none matches) -> $and / $or / $nor; nested MetadataFilters nest.

``TEXT_MATCH_INSENSITIVE`` has no Needle counterpart and raises
:class:`UnsupportedFilterError`; only ``VectorStoreQueryMode.DEFAULT``
(dense search) is served, other modes raise
:class:`~needle_mm.errors.InvalidArgumentError`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any, List, Optional, Sequence

import numpy as np
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node

from ..collection import Collection
from ..config import DistanceFunction
from ..database import Database
from ..errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    FilterError,
    InvalidArgumentError,
    InvalidIdError,
    InvalidMetadataError,
    InvalidVectorError,
    NeedleError,
)
from ..filters import compile_filter

__all__ = ["NeedleVectorStore", "UnsupportedFilterError", "to_needle_filter"]

REF_DOC_KEY = "ref_doc_id"
NODE_CONTENT_KEY = "_node_content"
NODE_TYPE_KEY = "_node_type"
DEFAULT_TEXT_KEY = "document"


class UnsupportedFilterError(FilterError):
    """A LlamaIndex metadata filter that Needle's filter language cannot express
    (a :class:`~needle_mm.errors.FilterError`, hence also a ``ValueError``)."""


# ---------------------------------------------------------------- arguments


def _list_of(name: str, value: Any, what: str) -> list:
    """A list of the items of ``value``, an iterable of ``what`` (not one str, bytes, dict or node)."""
    if isinstance(value, (str, bytes)):
        raise InvalidArgumentError(f"{name} must be a list of {what}, not a single {type(value).__name__} "
                                   f"({value!r:.60}); for one, wrap it in a list")
    if isinstance(value, (Mapping, BaseNode)) or not isinstance(value, Iterable):
        raise InvalidArgumentError(f"{name} must be a list of {what}, got {type(value).__name__}")
    return list(value)


def _id_list(name: str, ids: Any) -> List[str]:
    """``ids`` as a list of str node ids."""
    ids = _list_of(name, ids, "str ids")
    for i, id in enumerate(ids):
        if not isinstance(id, str):
            raise InvalidIdError(f"{name}[{i}] must be a str, got {type(id).__name__} {id!r:.60}")
    return ids


def _count(name: str, value: Any) -> int:
    """``value`` as an int: a Python or numpy integer >= 0, not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidArgumentError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


# ---------------------------------------------------------------- filters


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _one_filter(f: MetadataFilter) -> dict:
    key, value, op = f.key, f.value, FilterOperator(f.operator)
    if op == FilterOperator.EQ:
        return {key: {"$eq": value}}
    if op == FilterOperator.NE:
        return {key: {"$ne": value}}
    if op in (FilterOperator.GT, FilterOperator.GTE, FilterOperator.LT, FilterOperator.LTE):
        needle_op = {FilterOperator.GT: "$gt", FilterOperator.GTE: "$gte",
                     FilterOperator.LT: "$lt", FilterOperator.LTE: "$lte"}[op]
        return {key: {needle_op: value}}
    if op == FilterOperator.IN:
        return {key: {"$in": _as_list(value)}}
    if op == FilterOperator.NIN:
        return {key: {"$nin": _as_list(value)}}
    if op == FilterOperator.ANY:
        return {key: {"$elemMatch": {"$in": _as_list(value)}}}
    if op == FilterOperator.ALL:
        return {key: {"$all": _as_list(value)}}
    if op == FilterOperator.CONTAINS:
        return {key: {"$elemMatch": {"$eq": value}}}
    if op == FilterOperator.TEXT_MATCH:
        return {key: {"$contains": value}}
    if op == FilterOperator.IS_EMPTY:
        return {key: {"$in": [None, "", []]}}
    why = ": Needle's filters have no case-insensitive match" if op == FilterOperator.TEXT_MATCH_INSENSITIVE else ""
    raise UnsupportedFilterError(f"NeedleVectorStore cannot filter with FilterOperator.{op.name} ({op.value!r}) "
                                 f"on key {key!r}{why}")


def _filters_doc(filters: MetadataFilters) -> Optional[dict]:
    parts = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            sub = _filters_doc(f)
            if sub is not None:
                parts.append(sub)
        elif isinstance(f, MetadataFilter):
            parts.append(_one_filter(f))
        else:
            raise UnsupportedFilterError(f"not a MetadataFilter or MetadataFilters: {f!r}")
    condition = FilterCondition(filters.condition or FilterCondition.AND)
    if condition == FilterCondition.NOT:
        return {"$nor": parts} if parts else None
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    if condition == FilterCondition.AND:
        return {"$and": parts}
    if condition == FilterCondition.OR:
        return {"$or": parts}
    raise UnsupportedFilterError(f"NeedleVectorStore cannot combine filters with FilterCondition.{condition.name}")


def to_needle_filter(filters: Optional[MetadataFilters], *, doc_ids: Optional[Sequence[str]] = None) -> Optional[dict]:
    """The Needle filter (a MongoDB-style dict, see :mod:`needle_mm.filters`) of
    LlamaIndex ``filters``, restricted to nodes of the documents ``doc_ids`` if
    given; ``None`` when nothing is restricted.

    Raises :class:`UnsupportedFilterError` for an operator Needle cannot express
    and :class:`~needle_mm.errors.FilterError` for an operand it refuses (a list
    given to ``GT``, a number to ``TEXT_MATCH``, ...).
    """
    parts = []
    if filters is not None:
        if not isinstance(filters, MetadataFilters):
            raise UnsupportedFilterError(f"filters must be a llama_index MetadataFilters, got {type(filters).__name__}")
        doc = _filters_doc(filters)
        if doc is not None:
            parts.append(doc)
    if doc_ids is not None:
        parts.append({REF_DOC_KEY: {"$in": _list_of("doc_ids", doc_ids, "source document ids")}})
    if not parts:
        return None
    doc = parts[0] if len(parts) == 1 else {"$and": parts}
    compile_filter(doc)  # validate now: a FilterError names the offending part before any search
    return doc


# ---------------------------------------------------------------- the store


class NeedleVectorStore(BasePydanticVectorStore):
    """LlamaIndex vector store over one collection of a Needle database file.

    Parameters
    ----------
    path : str or path-like, optional
        The ``.needle`` file, opened (created if missing) by the store, which
        then owns it: :meth:`close` closes it. Default ``"vectors.needle"``
        when no ``database`` is given.
    collection_name : str
        The collection holding the nodes (created on the first ``add``).
    distance : str, optional
        ``"cosine"`` (default), ``"euclidean"`` or ``"dot"`` for a new
        collection. If the collection exists with another distance,
        :class:`~needle_mm.errors.CollectionExistsError`; ``None`` takes the
        existing collection's (cosine if there is none).
    database : needle_mm.Database, optional
        An open Database to use instead of ``path``; the store does not close it.
    text_key : str
        The metadata key holding each node's text (default ``"document"``).
    autosave : bool
        ``db.save()`` after every write (default). With ``False`` the caller
        saves (e.g. to group many ``add`` calls, or inside ``db.transaction()``).

    ``client`` is the :class:`~needle_mm.Database`; ``collection`` the
    :class:`~needle_mm.Collection` (``None`` before the first ``add``).
    """

    stores_text: bool = True

    path: str
    collection_name: str = "llama_index"
    distance: str = "cosine"
    text_key: str = DEFAULT_TEXT_KEY
    autosave: bool = True

    _db: Any = PrivateAttr(default=None)
    _owns_db: bool = PrivateAttr(default=False)
    _coll: Any = PrivateAttr(default=None)

    def __init__(self, path: Optional[str | os.PathLike] = None, collection_name: str = "llama_index",
                 distance: Optional[str] = "cosine", *, database: Optional[Database] = None,
                 text_key: str = DEFAULT_TEXT_KEY, autosave: bool = True, **kwargs: Any) -> None:
        if database is not None and path is not None:
            raise InvalidArgumentError("give NeedleVectorStore a path or an open database, not both")
        if database is not None and not isinstance(database, Database):
            raise InvalidArgumentError(f"database must be a needle_mm.Database, got {type(database).__name__}")
        if not isinstance(text_key, str) or not text_key or text_key in (REF_DOC_KEY, NODE_CONTENT_KEY, NODE_TYPE_KEY):
            raise InvalidArgumentError(f"text_key must be a non-empty string other than {REF_DOC_KEY!r}, "
                                       f"{NODE_CONTENT_KEY!r}, {NODE_TYPE_KEY!r}; got {text_key!r}")
        wanted = None if distance is None else DistanceFunction.parse(distance)
        owns = database is None
        db = Database.open("vectors.needle" if path is None else path) if owns else database
        try:
            coll = NeedleVectorStore._lookup(db, collection_name)
            if coll is not None:
                existing = coll.distance
                if wanted is not None and wanted != existing:
                    raise CollectionExistsError(
                        f"collection {collection_name!r} exists with distance {existing.value!r}, not {wanted.value!r} "
                        "(pass distance=None to use the existing collection's)")
                wanted = existing
            super().__init__(path=db.path, collection_name=collection_name,
                             distance=(wanted or DistanceFunction.Cosine).value, text_key=text_key,
                             autosave=autosave, **kwargs)
        except BaseException:
            if owns:
                db.close()
            raise
        self._db, self._owns_db, self._coll = db, owns, coll

    @classmethod
    def class_name(cls) -> str:
        return "NeedleVectorStore"

    # ------------------------------------------------------------ handles

    @staticmethod
    def _lookup(db: Database, name: str) -> Optional[Collection]:
        try:
            return db.collection(name)
        except CollectionNotFoundError:
            return None

    @property
    def client(self) -> Database:
        """The Needle :class:`~needle_mm.Database` the store reads and writes."""
        return self._db

    @property
    def collection(self) -> Optional[Collection]:
        """The Needle collection holding the nodes, or ``None`` if nothing was added yet."""
        if self._coll is None:
            self._coll = self._lookup(self._db, self.collection_name)
        return self._coll

    def close(self) -> None:
        """Close the database if the store opened it (from ``path``); a
        ``database=`` given by the caller stays open."""
        if self._owns_db and self._db is not None:
            self._db.close()
        self._coll = None

    def __enter__(self) -> "NeedleVectorStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _saved(self) -> None:
        if self.autosave:
            self._db.save()

    # ------------------------------------------------------------ nodes <-> records

    def _record(self, node: BaseNode) -> dict:
        content = node.model_dump(mode="json")  # JSON values only, as LlamaIndex's own node_to_metadata_dict
        metadata = content.pop("metadata", None) or {}
        reserved = {self.text_key, REF_DOC_KEY, NODE_CONTENT_KEY, NODE_TYPE_KEY}
        clash = sorted(k for k in metadata if k in reserved)
        if clash:
            raise InvalidMetadataError(
                f"node {node.node_id!r}: metadata key(s) {', '.join(map(repr, clash))} are reserved by "
                f"NeedleVectorStore (text under {self.text_key!r}, ref_doc_id, _node_content, _node_type); "
                "rename them, or choose another text_key")
        content.pop("embedding", None)
        if isinstance(content.get("text"), str):  # TextNode and its kin: the text lives in text_key only
            text = content["text"]
            content["text"] = ""
        else:  # nodes holding their text elsewhere (text_resource) keep it in _node_content too
            text = node.get_content(metadata_mode=MetadataMode.NONE)
        record = dict(metadata)
        record[self.text_key] = text
        if node.ref_doc_id is not None:
            record[REF_DOC_KEY] = node.ref_doc_id
        record[NODE_CONTENT_KEY] = json.dumps(content, ensure_ascii=False)
        record[NODE_TYPE_KEY] = node.class_name()
        return record

    def _node(self, id: str, record: dict, vector: Any = None) -> BaseNode:
        reserved = (self.text_key, REF_DOC_KEY, NODE_CONTENT_KEY, NODE_TYPE_KEY)
        metadata = {k: v for k, v in record.items() if k not in reserved}
        text = record.get(self.text_key)
        text = "" if text is None else str(text)
        embedding = None if vector is None else [float(x) for x in vector]
        raw = record.get(NODE_CONTENT_KEY)
        if not isinstance(raw, str):  # a record written by something else: its text and metadata
            return TextNode(id_=id, text=text, metadata=metadata, embedding=embedding)
        content = json.loads(raw)
        content["metadata"] = metadata
        content["id_"] = id
        if "text" in content:
            content["text"] = text
        node = metadata_dict_to_node({NODE_CONTENT_KEY: json.dumps(content), NODE_TYPE_KEY: record.get(NODE_TYPE_KEY)})
        node.embedding = embedding
        return node

    # ------------------------------------------------------------ writes

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        """Upsert ``nodes`` (each by ``node.node_id``, with its embedding) and
        save; returns their ids. The first add creates the collection with
        the embeddings' dimension."""
        nodes = _list_of("nodes", nodes, "nodes")
        if not nodes:
            return []
        ids, vectors, records = [], [], []
        for i, node in enumerate(nodes):
            if not isinstance(node, BaseNode):
                raise InvalidArgumentError(f"nodes[{i}] must be a llama_index node (BaseNode), got {type(node).__name__}")
            if node.embedding is None:
                raise InvalidVectorError(f"node {node.node_id!r} has no embedding: embed nodes before adding them "
                                         "(VectorStoreIndex does it with its embed_model)")
            ids.append(node.node_id)
            vectors.append(node.embedding)
            records.append(self._record(node))
        try:
            lengths = {len(v) for v in vectors}
        except TypeError:
            raise InvalidVectorError("the nodes' embeddings must be lists of floats") from None
        if len(lengths) != 1:
            raise InvalidVectorError(f"the nodes' embeddings have different lengths: {sorted(lengths)}")
        try:
            matrix = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidVectorError("the nodes' embeddings must be lists of floats") from None
        coll, created = self.collection, False
        if coll is None:
            try:
                coll, created = self._db.create_collection(self.collection_name, matrix.shape[1], self.distance), True
            except CollectionExistsError:  # made meanwhile (another process or thread): use it if it matches
                coll = self._db.get_or_create_collection(self.collection_name, matrix.shape[1], self.distance)
        try:
            coll.upsert_many(ids, matrix, records)  # all or nothing: Needle validates the batch first
        except BaseException:
            if created:  # created for this batch: refused records leave no empty collection behind
                try:
                    self._db.drop_collection(self.collection_name)
                except NeedleError:
                    pass  # (the database closed meanwhile, say): the refusal is the error to report
            raise
        self._coll = coll
        self._saved()
        return ids

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> List[str]:
        """:meth:`add` in a worker thread (a Database may be shared by threads)."""
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``, and save."""
        if not isinstance(ref_doc_id, str):
            raise InvalidArgumentError(f"ref_doc_id must be a str (a source document's id), got "
                                       f"{type(ref_doc_id).__name__} {ref_doc_id!r:.60}")
        coll = self.collection
        if coll is None:
            return
        if coll.delete(filter={REF_DOC_KEY: {"$eq": ref_doc_id}}):
            self._saved()

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    def delete_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                     **delete_kwargs: Any) -> None:
        """Delete the nodes with these ids, or matching ``filters``, or (both
        given) the listed ones that match; and save. With neither,
        :class:`~needle_mm.errors.InvalidArgumentError` (use :meth:`clear`)."""
        flt = to_needle_filter(filters)
        if node_ids is not None:
            node_ids = _id_list("node_ids", node_ids)
        elif flt is None:
            raise InvalidArgumentError("delete_nodes needs node_ids or filters; clear() deletes every node")
        coll = self.collection
        if coll is None:
            return
        if node_ids is not None and not node_ids:
            return
        if coll.delete(node_ids, filter=flt):
            self._saved()

    async def adelete_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                            **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    def clear(self) -> None:
        """Delete every node: drops the collection (the next ``add`` creates it
        again, with that add's dimension), and saves."""
        if self.collection is not None:
            self._db.drop_collection(self.collection_name)
            self._coll = None
            self._saved()

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    # ------------------------------------------------------------ reads

    def get_nodes(self, node_ids: Optional[List[str]] = None,
                  filters: Optional[MetadataFilters] = None) -> List[BaseNode]:
        """The stored nodes (with their embeddings) with these ids (in that
        order, missing ones skipped), or matching ``filters``, or both; every
        node if neither is given."""
        flt = to_needle_filter(filters)
        if node_ids is not None:
            node_ids = _id_list("node_ids", node_ids)
        coll = self.collection
        if coll is None:
            return []
        if node_ids is None:
            if flt is None:
                return [self._node(e.id, e.metadata, e.vector) for e in coll]
            node_ids = list(coll.ids(flt))
        predicate = compile_filter(flt)
        return [self._node(e.id, e.metadata, e.vector) for e in coll.get_many(node_ids)
                if e is not None and (predicate is None or predicate(e.metadata))]

    async def aget_nodes(self, node_ids: Optional[List[str]] = None,
                         filters: Optional[MetadataFilters] = None) -> List[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    def _similarity(self, distance: float) -> float:
        if self.distance == DistanceFunction.Euclidean.value:
            return 1.0 / (1.0 + float(distance))
        if self.distance == DistanceFunction.Cosine.value:  # the cosine similarity (float32 rounding clamped off)
            return min(1.0, max(-1.0, 1.0 - float(distance)))
        return 1.0 - float(distance)  # dot: the dot product

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``query.similarity_top_k`` nodes nearest to ``query.query_embedding``,
        closest first, among those matching ``query.filters`` and, if given
        and not empty, ``query.doc_ids`` (source documents) and ``query.node_ids``.

        ``similarities`` are Needle's distances turned around (see the module
        docstring): larger is closer. Only ``VectorStoreQueryMode.DEFAULT``."""
        if not isinstance(query, VectorStoreQuery):
            raise InvalidArgumentError(f"query must be a llama_index VectorStoreQuery, got {type(query).__name__}")
        try:
            mode = VectorStoreQueryMode(query.mode)
        except ValueError:
            raise InvalidArgumentError(f"unknown VectorStoreQueryMode {query.mode!r}") from None
        if mode != VectorStoreQueryMode.DEFAULT:
            raise InvalidArgumentError(f"NeedleVectorStore serves dense queries only (VectorStoreQueryMode.DEFAULT), "
                                       f"not {mode.name} ({mode.value!r})")
        if query.query_embedding is None:
            raise InvalidArgumentError("the query has no query_embedding: NeedleVectorStore searches by vector")
        # An empty doc_ids/node_ids list restricts nothing: VectorStoreIndex.as_retriever passes
        # node_ids=[] (its own node list, empty when the store keeps the nodes), as other stores read it.
        doc_ids = None if query.doc_ids is None else _list_of("doc_ids", query.doc_ids, "source document ids")
        node_ids = None if query.node_ids is None else _id_list("node_ids", query.node_ids)
        flt = to_needle_filter(query.filters, doc_ids=doc_ids or None)
        k = _count("similarity_top_k", query.similarity_top_k)
        coll = self.collection
        if coll is None or not k:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        if node_ids:
            hits = self._among(coll, node_ids, query.query_embedding, k, flt)
        else:
            hits = [(h.id, h.distance, h.metadata) for h in coll.search(query.query_embedding, k=k, filter=flt)]
        return VectorStoreQueryResult(nodes=[self._node(i, m) for i, _, m in hits],
                                      similarities=[self._similarity(d) for _, d, _ in hits],
                                      ids=[i for i, _, _ in hits])

    def _among(self, coll: Collection, node_ids: List[str], query: Any, k: int, flt: Optional[dict]) -> list:
        """(id, distance, metadata) of the ``k`` nearest of the listed records
        matching ``flt``, computed exactly (the listed records are read by id)."""
        try:
            q = np.asarray(query, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidVectorError(f"the query must be {coll.dimension} finite floats") from None
        if q.ndim != 1 or q.shape[0] != coll.dimension or not np.isfinite(q).all():
            raise InvalidVectorError(f"the query must be {coll.dimension} finite floats")
        predicate = compile_filter(flt)
        entries = [e for e in coll.get_many(list(dict.fromkeys(node_ids)))
                   if e is not None and (predicate is None or predicate(e.metadata))]
        if not entries:
            return []
        vectors = np.stack([np.asarray(e.vector, dtype=np.float64) for e in entries])
        if self.distance == DistanceFunction.Cosine.value:
            qn = float(np.linalg.norm(q))
            if qn == 0.0 or not math.isfinite(qn):
                raise InvalidVectorError("a cosine query must not be the zero vector")
            distances = 1.0 - (vectors @ q) / (np.linalg.norm(vectors, axis=1) * qn)
        elif self.distance == DistanceFunction.Euclidean.value:
            distances = np.sqrt(((vectors - q) ** 2).sum(axis=1))
        else:
            distances = 1.0 - vectors @ q
        order = np.argsort(distances, kind="stable")[:k]
        return [(entries[i].id, float(distances[i]), entries[i].metadata) for i in order]

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """:meth:`query` in a worker thread."""
        return await asyncio.to_thread(self.query, query, **kwargs)
