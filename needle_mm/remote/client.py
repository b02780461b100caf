"""``needle_mm.Client``: the server's API with the embedded API's shape.

``Client(url)`` mirrors :class:`~needle_mm.Database` and ``client.collection(name)``
mirrors :class:`~needle_mm.Collection` (same methods, same arguments, same
results, same ``NeedleError`` subclasses raised), so switching between an
embedded file and a server is one line::

    db = needle.Database.open("vectors.needle")     # embedded
    db = needle.Client("http://127.0.0.1:8000")     # the same file behind `needle serve`

Differences that cannot be hidden:

- Every write is committed when the call returns (the server runs each
  request as a transaction), so ``save()`` has nothing to flush.
- ``transaction()`` buffers the block's writes in the client and sends them
  when the block ends, as one request the server runs as one transaction;
  reads inside the block do not see the block's own writes (see
  :meth:`Client.transaction`).
- A connection that fails raises :class:`~needle_mm.errors.ServerUnavailableError`.

Only the standard library is used (one keep-alive HTTP connection per thread,
and one more for each walk in progress: ``ids()``, iteration). The
asyncio twin is :class:`~needle_mm.AsyncClient`; both build their requests
with ``_wire``.
"""

from __future__ import annotations

import contextlib
import contextvars
import http.client
import select
import threading
import time
from typing import Any, Iterable, Iterator, Sequence

from .. import errors as E
from ..config import CollectionConfig, DistanceFunction
from ..results import Entry, SearchResult, SearchResults
from . import _wire as W

__all__ = ["Client", "RemoteCollection"]

# An idle keep-alive connection is dropped after this many seconds, before the server's (uvicorn: 5 s) would
# close it under a request in flight: a request sent there might or might not have been processed.
KEEPALIVE_EXPIRY = 4.0
# What a keep-alive connection the server closed in the meantime raises when it is used.
_DROPPED = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class Client:
    """A Needle server, with the methods of :class:`~needle_mm.Database`.

    Parameters
    ----------
    url : str
        e.g. ``"http://127.0.0.1:8000"``.
    api_key : str, optional
        Sent as ``Authorization: Bearer ...`` (required by servers bound beyond loopback).
    timeout : float
        Seconds to connect, and to wait for each answer.

    A Client may be shared by threads: each thread has its own connection.

    A read whose connection fails is sent once more on a fresh connection; a
    write is sent once (never twice: a failure after it was sent raises
    :class:`~needle_mm.errors.ServerUnavailableError` saying it may or may not
    have been applied).
    """

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0):
        parts = W.check_url(url)
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = W.headers(api_key)
        self._timeout = timeout
        self._local = threading.local()
        self._open: list[http.client.HTTPConnection] = []  # every thread's connection, closed by close()
        self._open_lock = threading.Lock()
        self._closed = False
        self._tx: contextvars.ContextVar = contextvars.ContextVar(f"needle_client_tx_{id(self)}", default=None)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections of every thread; the client cannot be used after it
        (:class:`~needle_mm.errors.DatabaseClosedError`, as a closed Database)."""
        with self._open_lock:
            self._closed = True
            conns, self._open = self._open, []
        for conn in conns:
            conn.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------ transport

    def _new_conn(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self._timeout)

    def _check_open(self) -> None:
        if self._closed:
            raise W.closed("Client", self.url)

    def _conn(self) -> http.client.HTTPConnection:
        """This thread's connection: the kept-alive one if the server still holds it open, else a new one."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and (conn not in self._open or self._stale(conn)):
            self._forget(conn)
            conn = None
        if conn is None:
            conn = self._new_conn()
            with self._open_lock:
                self._check_open()
                self._open.append(conn)
            self._local.conn, self._local.used, self._local.idle_since = conn, False, time.monotonic()
        return conn

    def _stale(self, conn: http.client.HTTPConnection) -> bool:
        """A kept-alive connection idle for long, or that the server closed (it is readable:
        an end of file, or bytes nobody asked for)."""
        if conn.sock is None:
            return False
        if time.monotonic() - self._local.idle_since > KEEPALIVE_EXPIRY:
            return True
        try:
            return bool(select.select([conn.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def _forget(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._open_lock:
            if conn in self._open:
                self._open.remove(conn)

    def _send(self, conn: http.client.HTTPConnection, call: W.Call, data: bytes | None) -> None:
        """Send ``call`` on ``conn`` (connecting it first if need be: a failure to connect is a
        ServerUnavailableError). Once this returns, the server may have the whole request."""
        if conn.sock is None:
            try:
                conn.connect()
            except OSError as exc:
                conn.close()
                raise W.unavailable(self.url, exc, sent=False, timeout=self._timeout) from exc
        conn.request(call.method, self._prefix + call.path, body=data, headers=self._headers)

    def _request(self, call: W.Call) -> Any:
        """Send ``call`` and read its answer. Sent again on a fresh connection, once, only if it
        is certain the server did not act on it (the kept-alive connection failed while
        the request was being sent, so the server cannot have all of it), or if it is a
        read; a write whose answer did not arrive is never sent again."""
        self._check_open()
        data = call.data()
        for attempt in (0, 1):
            conn = self._conn()
            reused, sent = self._local.used, False
            try:
                self._send(conn, call, data)
                sent = True
                response = conn.getresponse()
                raw = response.read()
                break
            except E.ServerUnavailableError:
                self._forget(conn)
                raise
            except (OSError, http.client.HTTPException) as exc:
                self._forget(conn)
                # the kept-alive connection had been closed by the server (a restart, a keep-alive shorter than ours)
                if not attempt and reused and isinstance(exc, _DROPPED) and (call.read or not sent):
                    continue
                self._check_open()  # close() from another thread closed the connection under the request
                raise W.unavailable(self.url, exc, sent=True, timeout=self._timeout, write=not call.read) from exc
        if response.will_close:
            self._forget(conn)
        else:
            self._local.used, self._local.idle_since = True, time.monotonic()
        return W.answer(response.status, raw, self.url)

    def _run(self, call: W.Call) -> Any:
        """The result of ``call``, or, for a write inside a transaction block, buffered."""
        tx = self._tx.get()
        if tx is not None and call.tx is not None:
            return tx.add(call)
        return call.parse(self._request(call))

    def _stream(self, call: W.Call) -> Iterator[Any]:
        """The items of a streamed walk, read as they arrive on a connection of its own
        (so other calls, even this thread's, can run while the walk is in progress)."""
        self._check_open()
        conn = self._new_conn()
        try:
            try:
                self._send(conn, call, call.data())
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                if isinstance(exc, E.ServerUnavailableError):
                    raise
                raise W.unavailable(self.url, exc, sent=True, timeout=self._timeout, write=False) from exc
            if response.status >= 400:
                W.answer(response.status, response.read(), self.url)
            while True:
                try:
                    line = response.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise W.unavailable(self.url, exc, sent=True, timeout=self._timeout, write=False) from exc
                if not line:
                    raise W.truncated(self.url)
                batch = W.stream_batch(line, self.url)
                if batch is None:
                    return
                for item in batch:
                    yield call.parse(item)
        finally:
            conn.close()

    # ------------------------------------------------------------ Database's methods

    def create_collection(self, name: str, dimension: int, distance: DistanceFunction | str = DistanceFunction.Cosine,
                          *, m: int | None = None, ef_construction: int | None = None, ef_search: int | None = None,
                          seed: int | None = None, sparse: bool | None = None, dtype: str | None = None,
                          quantization: str | None = None, text_field: str | None = None,
                          text_options: dict | None = None, exist_ok: bool = False,
                          **unknown) -> "RemoteCollection":
        """Create a collection on the server; see :meth:`needle_mm.Database.create_collection`.

        Parameters
        ----------
        name : str
            The collection's name (up to 255 bytes of UTF-8).
        dimension : int
            Length of every vector (sparse collections: the index space).
        distance : DistanceFunction or str
            ``"cosine"`` (default), ``"euclidean"`` / ``"l2"`` or ``"dot"`` / ``"ip"``.
        m, ef_construction, ef_search, seed : int, optional
            HNSW parameters (defaults 16, 200, 64, 0).
        sparse : bool, optional
            A collection of sparse vectors (needs ``distance="dot"``).
        dtype : str, optional
            ``"f32"`` (default) or ``"f16"``.
        quantization : str, optional
            ``"int8"`` / ``"binary"``: search on one-byte / one-bit codes, rescored
            exactly (``search(rescore=...)``); ``"none"`` with ``exist_ok``: asks for an
            unquantized collection.
        text_field, text_options : optional
            Index this metadata field for full-text and hybrid search
            (``search(text=...)``), analysed and ranked as ``text_options`` say.
        exist_ok : bool
            Return an existing collection of this name if it matches (dimension,
            distance and every parameter given); a mismatch is a
            :class:`~needle_mm.errors.CollectionExistsError` naming each difference.

        Returns
        -------
        RemoteCollection
        """
        call = W.create_collection(name, dimension, distance, dict(m=m, ef_construction=ef_construction,
                                                                   ef_search=ef_search, seed=seed, sparse=sparse,
                                                                   dtype=dtype, quantization=quantization,
                                                                   text_field=text_field, text_options=text_options),
                                   exist_ok, unknown)
        return self._collection_of(name, call)

    def get_or_create_collection(self, name: str, dimension: int,
                                 distance: DistanceFunction | str = DistanceFunction.Cosine, *,
                                 m: int | None = None, ef_construction: int | None = None,
                                 ef_search: int | None = None, seed: int | None = None,
                                 sparse: bool | None = None, dtype: str | None = None,
                                 quantization: str | None = None, text_field: str | None = None,
                                 text_options: dict | None = None, **unknown) -> "RemoteCollection":
        """The collection called ``name``, created if it does not exist:
        ``create_collection(..., exist_ok=True)``; see :meth:`needle_mm.Database.get_or_create_collection`.

        Raises
        ------
        CollectionExistsError
            It exists with another dimension, distance or any parameter given here.
        """
        return self.create_collection(name, dimension, distance, m=m, ef_construction=ef_construction,
                                      ef_search=ef_search, seed=seed, sparse=sparse, dtype=dtype,
                                      quantization=quantization, text_field=text_field, text_options=text_options,
                                      exist_ok=True, **W.without_exist_ok(unknown))

    def create_collection_with_config(self, name: str, config: CollectionConfig) -> "RemoteCollection":
        """Create a collection from a :class:`~needle_mm.CollectionConfig`."""
        return self._collection_of(name, W.create_collection_with_config(name, config))

    def _collection_of(self, name: str, call: W.Call) -> "RemoteCollection":
        call.parse = lambda info: RemoteCollection(self, name, info)
        call.pending = RemoteCollection(self, name, None)
        return self._run(call)

    def collection(self, name: str) -> "RemoteCollection":
        """The collection called ``name``; :class:`~needle_mm.errors.CollectionNotFoundError` if there is none."""
        return RemoteCollection(self, name, self._run(W.describe(name)))

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        return self._run(W.list_collections())

    def drop_collection(self, name: str) -> None:
        """Delete a collection and all its records (committed when the call returns)."""
        self._run(W.drop_collection(name))

    def save(self, progress: Any = None) -> None:
        """Nothing to flush (each write was committed by its request); kept for API parity
        (``progress`` is accepted and unused).

        Raises :class:`~needle_mm.errors.TransactionError` inside a transaction block, as the embedded one does."""
        if self._tx.get() is not None:
            raise W.save_in_transaction()
        self._run(W.save(progress))

    @property
    def generation(self) -> int:
        """The committed generation the server reads (grows with every commit)."""
        return self._run(W.generation())

    @contextlib.contextmanager
    def transaction(self, exclusive: bool = False) -> Iterator[W.Transaction]:
        """Group writes into one commit on the server: all of them, or none.

        ::

            with client.transaction() as tx:
                client.collection("orders").upsert("o1", v, {"state": "paid"})
                client.collection("ledger").insert("l9", w, {"order": "o1"})
                client.collection("ledger").delete(["l1", "l2"])
            tx.results   # [None, None, 2]: what each write returned

        The block's writes (``insert``, ``upsert``, ``delete``,
        ``update_metadata``, ``create_collection``, ``drop_collection``, ...)
        are checked and buffered here, in the client, and sent when the block
        ends, as one request that the server runs as one transaction: if any
        write fails there (a duplicate id, a wrong dimension), none is applied
        and the error is raised from the ``with`` statement. If the block
        raises, nothing is sent.

        Unlike the embedded :meth:`needle_mm.Database.transaction`:

        - reads inside the block (``get``, ``search``, ``count``, ``collection``,
          ...) go to the server at once and do not see the block's own buffered
          writes;
        - a write returns before it is applied: ``delete`` returns ``None``
          (its count is in ``tx.results`` after the block), and the collection
          ``create_collection`` returns exists only after the block;
        - errors only the server can find (a duplicate id, a wrong dimension)
          come at the end of the block;
        - writes of other threads are not held back: the transaction is this
          thread's; ``exclusive=True`` makes the server hold the file's writer
          lock while it applies the block, from its first write to the commit;
        - the block's writes travel in one request, limited by the server's
          ``--max-body-mb``.

        Transactions do not nest, and ``save()`` inside one raises
        :class:`~needle_mm.errors.TransactionError`.
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
            self._run(tx.commit_call())
        else:
            tx.results = []


class RemoteCollection:
    """A collection behind a server, with the methods of :class:`~needle_mm.Collection`.

    Obtain one with ``client.collection(name)`` or ``client.create_collection(...)``.
    """

    def __init__(self, client: Client, name: str, info: dict | None = None):
        self._client = client
        self.name = name
        self._info = info

    def __repr__(self) -> str:
        return f"RemoteCollection({self.name!r})"

    def _describe(self) -> dict:
        if self._info is None:
            self._info = self._client._run(W.describe(self.name))
        return self._info

    @property
    def config(self) -> CollectionConfig:
        """The collection's :class:`~needle_mm.CollectionConfig`."""
        return W.config_of(self._describe())

    @property
    def dimension(self) -> int:
        """Length of every vector."""
        return self._describe()["dimension"]

    @property
    def distance(self) -> DistanceFunction:
        """The :class:`~needle_mm.DistanceFunction`."""
        return DistanceFunction(self._describe()["distance"])

    @property
    def sparse(self) -> bool:
        """True for a collection of sparse vectors."""
        return self._describe()["sparse"]

    # ------------------------------------------------------------ writes

    def insert(self, id: str, vector, metadata: dict | None = None) -> None:
        """Add one record; :class:`~needle_mm.errors.DuplicateIdError` if ``id`` is live (use :meth:`upsert`)."""
        self._client._run(W.records(self.name, "insert", id, vector, metadata, one=True, info=self._info))

    def insert_many(self, ids: Sequence[str], vectors, metadatas: Iterable[dict | None] | None = None) -> None:
        """Add many records at once (``vectors`` a 2-D array ``[n, dim]``); all or nothing,
        as :meth:`needle_mm.Collection.insert_many`."""
        self._client._run(W.records(self.name, "insert", ids, vectors, metadatas, info=self._info))

    def upsert(self, id: str, vector, metadata: dict | None = None) -> None:
        """Insert a record, or replace the one with the same id (vector and metadata)."""
        self._client._run(W.records(self.name, "upsert", id, vector, metadata, one=True, info=self._info))

    def upsert_many(self, ids: Sequence[str], vectors, metadatas: Iterable[dict | None] | None = None) -> None:
        """Insert or replace many records; a repeated id in the batch keeps its last record."""
        self._client._run(W.records(self.name, "upsert", ids, vectors, metadatas, info=self._info))

    def delete(self, ids: str | Sequence[str] | None = None, *, filter: dict | None = None) -> int | None:
        """Delete one id, a list of ids, or every record matching ``filter``; returns how
        many live records were deleted (``None`` inside a transaction block); see
        :meth:`needle_mm.Collection.delete`."""
        return self._client._run(W.delete(self.name, ids, filter))

    def update_metadata(self, id: str, metadata: dict | None) -> None:
        """Replace the metadata of a live record, keeping its vector."""
        self._client._run(W.update_metadata(self.name, id, metadata))

    # ------------------------------------------------------------ reads

    def get(self, id: str, default: Any = W.MISSING) -> Entry:
        """The live record with this id; :class:`~needle_mm.errors.RecordNotFoundError` (or ``default``) if none."""
        return self._client._run(W.get(self.name, id, default))

    def get_many(self, ids: Sequence[str]) -> list[Entry | None]:
        """The live records with these ids, in the order given; ``None`` where there is none
        (one request: all read from one generation)."""
        return self._client._run(W.get_many(self.name, ids))

    def __contains__(self, id: object) -> bool:
        """``id in collection``: True if a live record has this id."""
        call = W.contains(self.name, id)
        return call if isinstance(call, bool) else self._client._run(call)

    def __len__(self) -> int:
        """The number of live records (:meth:`count`)."""
        return self.count()

    def count(self, filter: dict | None = None) -> int:
        """Number of live records (matching ``filter`` if given)."""
        return self._client._run(W.count(self.name, filter))

    def find(self, filter: dict | None = None, limit: int | None = None, offset: int = 0) -> list[tuple[str, dict]]:
        """``(id, metadata)`` of live records matching ``filter``, in storage order, skipping
        the first ``offset`` and returning at most ``limit``; see :meth:`needle_mm.Collection.find`.

        Each call is one request: pages fetched with ``offset`` may see writes
        committed between them; :meth:`ids` and iteration walk one generation."""
        return self._client._run(W.find(self.name, filter, limit, offset))

    def ids(self, filter: dict | None = None) -> Iterator[str]:
        """An iterator over the ids of live records (matching ``filter`` if given), in storage order.

        One streamed request on a connection of its own, read as the iterator
        advances; the whole walk reads the generation current when it starts
        (as the embedded :meth:`needle_mm.Collection.ids`): writes committed
        meanwhile are not seen. The request is sent at the first ``next()``."""
        return self._client._stream(W.ids(self.name, filter))

    def __iter__(self) -> Iterator[Entry]:
        """Every live record as an :class:`~needle_mm.Entry`, in storage order (one generation, as :meth:`ids`)."""
        return self._client._stream(W.scan(self.name))

    def peek(self, n: int = 10) -> list[Entry]:
        """The first ``n`` records in storage order."""
        return list(self._client._stream(W.scan(self.name, n)))

    def search(self, query=None, k: int = 10, filter: dict | None = None, *, text: str | None = None,
               fusion="rrf", candidates: int = W.DEFAULT_CANDIDATES, ef: int | None = None, exact: bool = False,
               include_vector: bool = False, as_arrays: bool = False, rescore: int | None = None, vector=None):
        """The ``k`` nearest live records to ``query``, closest first; with ``text``, the best
        by BM25, or both rankings fused; see :meth:`needle_mm.Collection.search`.

        Parameters
        ----------
        query : array-like of float, or a sparse vector, optional
            Also accepted as ``vector=``. None with ``text``: text search only.
        k : int
            How many results at most.
        filter : dict, optional
            MongoDB-style filter on metadata.
        text : str, optional
            A full-text query (collections with a text index): BM25 alone
            (``distance`` is minus the score), or with ``query`` hybrid: each
            hit's ``scores`` is ``{"vector": distance, "text": bm25}`` (None
            where the hit was not in that ranking's candidates).
        fusion : str or dict
            Hybrid only: ``"rrf"`` (``{"method": "rrf", "k": 60}``) or
            ``"weighted"`` (``{"method": "weighted", "alpha": 0.5}``).
        candidates : int
            Hybrid only: how many hits each ranking contributes (default 100).
        ef : int, optional
            HNSW search breadth for this query.
        exact : bool
            Brute force instead of the HNSW index.
        include_vector : bool
            Also return each result's vector.
        as_arrays : bool
            Return ``(ids, distances)`` numpy arrays of shape ``(k,)``: ids
            ``object`` (``str``, ``None`` past the last hit), distances float32
            (``inf`` there).
        rescore : int, optional
            Quantized collections only: candidates per result ranked again by
            their exact distances (``0``: the codes' order).

        Returns
        -------
        SearchResults of SearchResult (``FusedResult`` for hybrid hits), or (ids, distances) with ``as_arrays``
        """
        return self._client._run(W.search(self.name, W.query_of(query, vector), False, k, filter, ef, exact,
                                          include_vector, as_arrays, self._info, text, fusion, candidates, rescore))

    def search_batch(self, queries=None, k: int = 10, filter: dict | None = None, *, texts=None, fusion="rrf",
                     candidates: int = W.DEFAULT_CANDIDATES, ef: int | None = None, exact: bool = False,
                     include_vector: bool = False, as_arrays: bool = False,
                     rescore: int | None = None) -> list[SearchResults] | tuple:
        """:meth:`search` for each row of a 2-D array of queries (one request): a list of
        result lists, or with ``as_arrays=True`` ``(ids, distances)`` arrays of shape ``(m, k)``.
        ``texts`` (a list of strings): text queries, alone or one per query row (hybrid)."""
        return self._client._run(W.search(self.name, queries, True, k, filter, ef, exact, include_vector, as_arrays,
                                          self._info, texts, fusion, candidates, rescore))

    def create_text_index(self, field: str, **options) -> None:
        """Index the string values of metadata ``field`` for full-text and hybrid search
        (``options``: ``stemmer``, ``stop_words``, ``fold_accents``, ``k1``, ``b``); see
        :meth:`needle_mm.Collection.create_text_index`. The server commits it (building the
        index of every record) before the call returns, so text search works at once."""
        self._client._run(W.create_text_index(self.name, field, options, self._described_as))

    def _described_as(self, info: dict) -> None:
        self._info = info  # the server's description of the collection after a change to its configuration
