"""``needle_mm.AsyncClient``: :class:`~needle_mm.Client` for asyncio, on ``httpx``
(extra ``async``: ``pip install "needle_mm[async]"``).

The same methods, arguments, results and errors as the synchronous Client,
as coroutines; the collection accessors are coroutines too (they ask the
server), and return an :class:`AsyncRemoteCollection` whose methods are
coroutines::

    async with needle.AsyncClient("http://127.0.0.1:8000") as client:
        docs = await client.get_or_create_collection("docs", 384)
        await docs.insert("a", vector, {"category": "books"})
        hits = await docs.search(vector, k=5)
        async for id in docs.ids():          # walks are async iterators
            ...

What Python cannot make a coroutine is spelled as one: ``await docs.count()``
for ``len(docs)``, ``await docs.contains(id)`` for ``id in docs``, ``await
client.generation()`` for the ``generation`` property; ``async for entry in
docs`` iterates. Requests and answers are mapped by ``_wire``, the module the
synchronous Client uses too.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, AsyncIterator, Iterable, Sequence

from .. import errors as E
from ..config import CollectionConfig, DistanceFunction
from ..results import Entry, SearchResult, SearchResults
from . import _wire as W

try:
    import httpx
except ImportError:  # the extra is not installed: AsyncClient() says how to get it
    httpx = None

__all__ = ["AsyncClient", "AsyncRemoteCollection"]

if httpx is not None:
    # the request was not sent: no connection was made, or none was free in time
    _NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
    # the connection dropped before an answer arrived (a read is then sent again, once, on a fresh one)
    _DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class AsyncClient:
    """A Needle server, for asyncio: the methods of :class:`~needle_mm.Client` as coroutines.

    Parameters
    ----------
    url : str
        e.g. ``"http://127.0.0.1:8000"``.
    api_key : str, optional
        Sent as ``Authorization: Bearer ...`` (required by servers bound beyond loopback).
    timeout : float
        Seconds to connect, and to wait for each answer.

    Use ``async with AsyncClient(url) as client:`` or call :meth:`aclose`.
    Connections are pooled (``httpx.AsyncClient``); proxies and other settings
    from the environment are not used, as by the synchronous Client.

    Raises
    ------
    ImportError
        httpx is not installed (``pip install "needle_mm[async]"``).
    """

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0):
        if httpx is None:
            raise ImportError(f"needle_mm.AsyncClient needs httpx, which is not installed: {W.ASYNC_EXTRA}")
        W.check_url(url)
        self.url = url.rstrip("/")
        self._timeout = timeout
        # idle connections are dropped before the server's keep-alive (uvicorn: 5 s) would close them
        self._http = httpx.AsyncClient(base_url=self.url, headers=W.headers(api_key), timeout=timeout,
                                       trust_env=False, limits=httpx.Limits(keepalive_expiry=4.0))
        self._tx: contextvars.ContextVar = contextvars.ContextVar(f"needle_async_tx_{id(self)}", default=None)

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r})"

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections; the client cannot be used after it
        (:class:`~needle_mm.errors.DatabaseClosedError`, as a closed Database)."""
        await self._http.aclose()

    # ------------------------------------------------------------ transport

    def _check_open(self) -> None:
        if self._http.is_closed:
            raise W.closed("AsyncClient", self.url)

    def _unavailable(self, call: W.Call, exc: Exception) -> E.ServerUnavailableError:
        return W.unavailable(self.url, exc, sent=not isinstance(exc, _NOT_SENT), timeout=self._timeout,
                             write=not call.read)

    async def _request(self, call: W.Call) -> Any:
        """Send ``call`` and read its answer. A read whose connection dropped is sent again, once,
        on a fresh connection; a write is never sent twice (httpx does not resend either)."""
        self._check_open()
        data = call.data()
        for attempt in (0, 1):
            try:
                response = await self._http.request(call.method, call.path, content=data)
                break
            except httpx.TransportError as exc:
                if not attempt and call.read and isinstance(exc, _DROPPED) and not self._http.is_closed:
                    continue
                raise self._unavailable(call, exc) from exc
            except RuntimeError as exc:  # httpx: "the client has been closed", by aclose() meanwhile
                if not self._http.is_closed:
                    raise
                raise W.closed("AsyncClient", self.url) from exc
        return W.answer(response.status_code, response.content, self.url)

    async def _run(self, call: W.Call) -> Any:
        """The result of ``call``, or, for a write inside a transaction block, buffered."""
        tx = self._tx.get()
        if tx is not None and call.tx is not None:
            return tx.add(call)
        return call.parse(await self._request(call))

    async def _stream(self, call: W.Call) -> AsyncIterator[Any]:
        """The items of a streamed walk, read as they arrive."""
        self._check_open()
        try:
            async with self._http.stream(call.method, call.path, content=call.data()) as response:
                if response.status_code >= 400:
                    W.answer(response.status_code, await response.aread(), self.url)
                async for line in response.aiter_lines():
                    if not line:
                        continue
                    batch = W.stream_batch(line.encode(), self.url)
                    if batch is None:
                        return
                    for item in batch:
                        yield call.parse(item)
        except httpx.TransportError as exc:
            raise self._unavailable(call, exc) from exc
        except RuntimeError as exc:
            if not self._http.is_closed:
                raise
            raise W.closed("AsyncClient", self.url) from exc
        raise W.truncated(self.url)

    # ------------------------------------------------------------ Database's methods

    async def create_collection(self, name: str, dimension: int,
                                distance: DistanceFunction | str = DistanceFunction.Cosine, *,
                                m: int | None = None, ef_construction: int | None = None,
                                ef_search: int | None = None, seed: int | None = None, sparse: bool | None = None,
                                dtype: str | None = None, quantization: str | None = None,
                                text_field: str | None = None, text_options: dict | None = None,
                                exist_ok: bool = False, **unknown) -> "AsyncRemoteCollection":
        """Create a collection on the server; see :meth:`needle_mm.Client.create_collection`.

        Parameters
        ----------
        name : str
        dimension : int
        distance : DistanceFunction or str
        m, ef_construction, ef_search, seed : int, optional
            HNSW parameters.
        sparse : bool, optional
        dtype : str, optional
        quantization : str, optional
            ``"int8"`` / ``"binary"`` (``"none"`` with ``exist_ok``: unquantized).
        text_field, text_options : optional
            Index this metadata field for full-text and hybrid search.
        exist_ok : bool
            Return an existing collection of this name if it matches.

        Returns
        -------
        AsyncRemoteCollection
        """
        call = W.create_collection(name, dimension, distance, dict(m=m, ef_construction=ef_construction,
                                                                   ef_search=ef_search, seed=seed, sparse=sparse,
                                                                   dtype=dtype, quantization=quantization,
                                                                   text_field=text_field, text_options=text_options),
                                   exist_ok, unknown)
        return await self._collection_of(name, call)

    async def get_or_create_collection(self, name: str, dimension: int,
                                       distance: DistanceFunction | str = DistanceFunction.Cosine, *,
                                       m: int | None = None, ef_construction: int | None = None,
                                       ef_search: int | None = None, seed: int | None = None,
                                       sparse: bool | None = None, dtype: str | None = None,
                                       quantization: str | None = None, text_field: str | None = None,
                                       text_options: dict | None = None, **unknown) -> "AsyncRemoteCollection":
        """``create_collection(..., exist_ok=True)``; see :meth:`needle_mm.Database.get_or_create_collection`."""
        return await self.create_collection(name, dimension, distance, m=m, ef_construction=ef_construction,
                                            ef_search=ef_search, seed=seed, sparse=sparse, dtype=dtype,
                                            quantization=quantization, text_field=text_field,
                                            text_options=text_options, exist_ok=True, **W.without_exist_ok(unknown))

    async def create_collection_with_config(self, name: str, config: CollectionConfig) -> "AsyncRemoteCollection":
        """Create a collection from a :class:`~needle_mm.CollectionConfig`."""
        return await self._collection_of(name, W.create_collection_with_config(name, config))

    async def _collection_of(self, name: str, call: W.Call) -> "AsyncRemoteCollection":
        call.parse = lambda info: AsyncRemoteCollection(self, name, info)
        call.pending = AsyncRemoteCollection(self, name, None)
        return await self._run(call)

    async def collection(self, name: str) -> "AsyncRemoteCollection":
        """The collection called ``name``; :class:`~needle_mm.errors.CollectionNotFoundError` if there is none."""
        return AsyncRemoteCollection(self, name, await self._run(W.describe(name)))

    async def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        return await self._run(W.list_collections())

    async def drop_collection(self, name: str) -> None:
        """Delete a collection and all its records."""
        await self._run(W.drop_collection(name))

    async def save(self, progress: Any = None) -> None:
        """Nothing to flush (each write was committed by its request); kept for API parity
        (``progress`` is accepted and unused)."""
        if self._tx.get() is not None:
            raise W.save_in_transaction()
        await self._run(W.save(progress))

    async def generation(self) -> int:
        """The committed generation the server reads (the Client's ``generation`` property)."""
        return await self._run(W.generation())

    @contextlib.asynccontextmanager
    async def transaction(self, exclusive: bool = False) -> AsyncIterator[W.Transaction]:
        """``async with client.transaction() as tx:`` -- the block's writes are buffered
        and sent at its end as one request, run by the server as one transaction
        (all or none); nothing is sent if the block raises. Reads inside the
        block do not see its own writes. See :meth:`needle_mm.Client.transaction`.

        The block is its task's (tasks it starts inherit it, so their writes
        join it too); other tasks' writes are sent at once.
        """
        if self._tx.get() is not None:
            raise W.nested()
        tx = W.Transaction(exclusive)
        token = self._tx.set(tx)
        try:
            yield tx
        finally:
            self._tx.reset(token)
            tx.closed = True
        if tx.calls:
            await self._run(tx.commit_call())
        else:
            tx.results = []


class AsyncRemoteCollection:
    """A collection behind a server, for asyncio: the methods of
    :class:`~needle_mm.remote.client.RemoteCollection` as coroutines.

    Obtain one with ``await client.collection(name)``. ``config``,
    ``dimension``, ``distance`` and ``sparse`` are plain properties (the server
    described the collection when it was obtained).
    """

    def __init__(self, client: AsyncClient, name: str, info: dict | None = None):
        self._client = client
        self.name = name
        self._info = info

    def __repr__(self) -> str:
        return f"AsyncRemoteCollection({self.name!r})"

    def __contains__(self, id: object) -> bool:
        """Not offered (``in`` cannot await): ``await collection.contains(id)``."""
        raise TypeError("'in' cannot wait for the server: use 'await collection.contains(id)'")

    def __len__(self) -> int:
        """Not offered (``len()`` cannot await): ``await collection.count()``."""
        raise TypeError("len() cannot wait for the server: use 'await collection.count()'")

    def __iter__(self):
        """Not offered: ``async for entry in collection``."""
        raise TypeError("iterate with 'async for entry in collection' (or 'async for id in collection.ids()')")

    def _described(self) -> dict:
        if self._info is None:
            raise E.TransactionError(f"collection {self.name!r} is created when the transaction block ends: "
                                     "its configuration is known after it (await client.collection(name))")
        return self._info

    @property
    def config(self) -> CollectionConfig:
        """The collection's :class:`~needle_mm.CollectionConfig`."""
        return W.config_of(self._described())

    @property
    def dimension(self) -> int:
        """Length of every vector."""
        return self._described()["dimension"]

    @property
    def distance(self) -> DistanceFunction:
        """The :class:`~needle_mm.DistanceFunction`."""
        return DistanceFunction(self._described()["distance"])

    @property
    def sparse(self) -> bool:
        """True for a collection of sparse vectors."""
        return self._described()["sparse"]

    # ------------------------------------------------------------ writes

    async def insert(self, id: str, vector, metadata: dict | None = None) -> None:
        """Add one record; :class:`~needle_mm.errors.DuplicateIdError` if ``id`` is live."""
        await self._client._run(W.records(self.name, "insert", id, vector, metadata, one=True, info=self._info))

    async def insert_many(self, ids: Sequence[str], vectors, metadatas: Iterable[dict | None] | None = None) -> None:
        """Add many records at once; all or nothing (see :meth:`needle_mm.Collection.insert_many`)."""
        await self._client._run(W.records(self.name, "insert", ids, vectors, metadatas, info=self._info))

    async def upsert(self, id: str, vector, metadata: dict | None = None) -> None:
        """Insert a record, or replace the one with the same id."""
        await self._client._run(W.records(self.name, "upsert", id, vector, metadata, one=True, info=self._info))

    async def upsert_many(self, ids: Sequence[str], vectors, metadatas: Iterable[dict | None] | None = None) -> None:
        """Insert or replace many records; a repeated id in the batch keeps its last record."""
        await self._client._run(W.records(self.name, "upsert", ids, vectors, metadatas, info=self._info))

    async def delete(self, ids: str | Sequence[str] | None = None, *, filter: dict | None = None) -> int | None:
        """Delete one id, a list of ids, or every record matching ``filter``; returns how many
        were deleted (``None`` inside a transaction block); see :meth:`needle_mm.Collection.delete`."""
        return await self._client._run(W.delete(self.name, ids, filter))

    async def update_metadata(self, id: str, metadata: dict | None) -> None:
        """Replace the metadata of a live record, keeping its vector."""
        await self._client._run(W.update_metadata(self.name, id, metadata))

    # ------------------------------------------------------------ reads

    async def get(self, id: str, default: Any = W.MISSING) -> Entry:
        """The live record with this id; :class:`~needle_mm.errors.RecordNotFoundError` (or ``default``) if none."""
        return await self._client._run(W.get(self.name, id, default))

    async def get_many(self, ids: Sequence[str]) -> list[Entry | None]:
        """The live records with these ids, in the order given; ``None`` where there is none."""
        return await self._client._run(W.get_many(self.name, ids))

    async def contains(self, id: object) -> bool:
        """``id in collection``: True if a live record has this id."""
        call = W.contains(self.name, id)
        return call if isinstance(call, bool) else await self._client._run(call)

    async def count(self, filter: dict | None = None) -> int:
        """Number of live records (matching ``filter`` if given); ``len()`` of the sync collection."""
        return await self._client._run(W.count(self.name, filter))

    async def find(self, filter: dict | None = None, limit: int | None = None,
                   offset: int = 0) -> list[tuple[str, dict]]:
        """``(id, metadata)`` of live records matching ``filter``, in storage order (see
        :meth:`needle_mm.remote.client.RemoteCollection.find`)."""
        return await self._client._run(W.find(self.name, filter, limit, offset))

    def ids(self, filter: dict | None = None) -> AsyncIterator[str]:
        """An async iterator over the ids of live records (matching ``filter``), in storage
        order, from one generation: ``async for id in collection.ids(): ...``.

        One streamed request, read as the iteration advances. To stop early
        and free its connection at once, close it: ``async with
        contextlib.aclosing(collection.ids()) as walk: async for id in walk: ...``."""
        return self._client._stream(W.ids(self.name, filter))

    def __aiter__(self) -> AsyncIterator[Entry]:
        """``async for entry in collection``: every live record as an :class:`~needle_mm.Entry`
        (one generation, as :meth:`ids`)."""
        return self._client._stream(W.scan(self.name))

    async def peek(self, n: int = 10) -> list[Entry]:
        """The first ``n`` records in storage order."""
        return [entry async for entry in self._client._stream(W.scan(self.name, n))]

    async def search(self, query=None, k: int = 10, filter: dict | None = None, *, text: str | None = None,
                     fusion="rrf", candidates: int = W.DEFAULT_CANDIDATES, ef: int | None = None, exact: bool = False,
                     include_vector: bool = False, as_arrays: bool = False, rescore: int | None = None,
                     vector=None):
        """The ``k`` nearest live records to ``query``, closest first; with ``text``, the best by
        BM25, or both rankings fused (hybrid: each hit's ``scores``); see
        :meth:`needle_mm.remote.client.RemoteCollection.search`.

        Returns
        -------
        SearchResults of SearchResult (``FusedResult`` for hybrid hits), or (ids, distances) numpy arrays of
        shape ``(k,)`` with ``as_arrays``
        """
        return await self._client._run(W.search(self.name, W.query_of(query, vector), False, k, filter, ef, exact,
                                                include_vector, as_arrays, self._info, text, fusion, candidates,
                                                rescore))

    async def search_batch(self, queries=None, k: int = 10, filter: dict | None = None, *, texts=None,
                           fusion="rrf", candidates: int = W.DEFAULT_CANDIDATES, ef: int | None = None, exact: bool = False,
                           include_vector: bool = False, as_arrays: bool = False,
                           rescore: int | None = None) -> list[SearchResults] | tuple:
        """:meth:`search` for each row of a 2-D array of queries: a list of result lists, or
        with ``as_arrays=True`` ``(ids, distances)`` arrays of shape ``(m, k)``. ``texts`` (a
        list of strings): text queries, alone or one per query row (hybrid)."""
        return await self._client._run(W.search(self.name, queries, True, k, filter, ef, exact, include_vector,
                                                as_arrays, self._info, texts, fusion, candidates, rescore))

    async def create_text_index(self, field: str, **options) -> None:
        """Index the string values of metadata ``field`` for full-text and hybrid search; see
        :meth:`needle_mm.remote.client.RemoteCollection.create_text_index`."""
        await self._client._run(W.create_text_index(self.name, field, options, self._described_as))

    def _described_as(self, info: dict) -> None:
        self._info = info  # the server's description of the collection after a change to its configuration
