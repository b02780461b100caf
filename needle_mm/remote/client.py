"""``needle_mm.Client``: the server's API with the embedded API's shape.

``Client(url)`` mirrors :class:`~needle_mm.Database` and ``client.collection(name)``
mirrors :class:`~needle_mm.Collection` (same methods, same results, same
``NeedleError`` subclasses raised), so switching between an embedded file and
a server is one line::

    db = needle.Database.open("vectors.needle")     # embedded
    db = needle.Client("http://127.0.0.1:8000")     # the same file behind `needle serve`

Differences that cannot be hidden: every write is committed when the call
returns (the server runs each request as a transaction), so ``save()`` has
nothing to flush; ``transaction()`` is not offered. Only the standard library
is used (one keep-alive HTTP connection per thread).
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from typing import Any, Iterable, Sequence

import numpy as np
import orjson

from .. import errors as E
from ..config import CollectionConfig, DistanceFunction
from ..results import Entry, SearchResult
from .._format.csr import SparseVector

__all__ = ["Client", "RemoteCollection"]

_MISSING = object()


class _Decoded:
    """Stands in for a segment behind a SearchResult whose metadata came decoded over HTTP."""

    __slots__ = ("metadata",)

    def __init__(self, metadata: dict):
        self.metadata = metadata

    def meta_bytes_at(self, slot: int) -> bytes:
        return orjson.dumps(self.metadata)


def _vector_json(v: Any) -> Any:
    if isinstance(v, SparseVector):
        return v.to_dict()
    if hasattr(v, "tocsr"):  # a scipy.sparse row
        row = v.tocsr()
        return {"indices": row.indices.tolist(), "values": row.data.tolist()}
    if isinstance(v, dict):
        if set(v) == {"indices", "values"}:
            return {"indices": np.asarray(v["indices"]).tolist(), "values": np.asarray(v["values"]).tolist()}
        return {str(k): float(x) for k, x in v.items()}
    return np.asarray(v, dtype=np.float64).tolist() if not isinstance(v, list) else v


def _vectors_json(vs: Any) -> list:
    if hasattr(vs, "tocsr") and len(vs.shape) == 2:
        csr = vs.tocsr()
        return [_vector_json(csr[i]) for i in range(csr.shape[0])]
    if isinstance(vs, np.ndarray):
        return vs.astype(np.float64).tolist()
    return [_vector_json(v) for v in vs]


def _vector_in(v: Any) -> Any:
    if isinstance(v, dict):
        return SparseVector(np.array(v["indices"], dtype=np.uint32), np.array(v["values"], dtype=np.float32))
    return np.array(v, dtype=np.float32)


class Client:
    """A Needle server, with the methods of :class:`~needle_mm.Database`.

    Parameters
    ----------
    url : str
        e.g. ``"http://127.0.0.1:8000"``.
    api_key : str, optional
        Sent as ``Authorization: Bearer ...`` (required by servers bound beyond loopback).
    timeout : float
        Seconds per request.
    """

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise E.InvalidArgumentError(f"server url must be http(s)://host[:port], got {url!r}")
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = timeout
        self._local = threading.local()
        self._open: list[http.client.HTTPConnection] = []  # every thread's connection, closed by close()
        self._open_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections of every thread (a later call opens new ones)."""
        with self._open_lock:
            conns, self._open = self._open, []
        for conn in conns:
            conn.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn not in self._open:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self._timeout)
            self._local.conn = conn
            with self._open_lock:
                self._open.append(conn)
        return conn

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        for attempt in (0, 1):  # a keep-alive connection the server closed is retried once, fresh
            conn = self._conn()
            try:
                conn.request(method, self._prefix + path, body=data, headers=self._headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        try:
            payload = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            payload = {"error": "InternalError", "message": raw[:200].decode("utf-8", "replace")}
        if response.status >= 400:
            cls = getattr(E, str(payload.get("error")), None)
            if not (isinstance(cls, type) and issubclass(cls, E.NeedleError)):
                cls = E.InvalidArgumentError if response.status < 500 else E.NeedleError
            raise cls(f"{payload.get('message', raw[:200])} (HTTP {response.status} from {self.url})")
        return payload

    # ------------------------------------------------------------ Database's methods

    def create_collection(self, name: str, dimension: int, distance: DistanceFunction | str = DistanceFunction.Cosine,
                          **options) -> "RemoteCollection":
        return self.create_collection_with_config(name, CollectionConfig(dimension, distance, **options))

    def create_collection_with_config(self, name: str, config: CollectionConfig) -> "RemoteCollection":
        if not isinstance(config, CollectionConfig):
            raise E.InvalidConfigError(f"config must be a CollectionConfig, got {type(config).__name__}")
        self._call("POST", "/collections", {
            "name": name, "dimension": config.dimension, "distance": config.distance.value, "m": config.m,
            "ef_construction": config.ef_construction, "ef_search": config.ef_search, "seed": config.seed,
            "sparse": config.sparse, "dtype": config.dtype})
        return RemoteCollection(self, name)

    def collection(self, name: str) -> "RemoteCollection":
        self._call("GET", f"/collections/{_quote(name)}")
        return RemoteCollection(self, name)

    def list_collections(self) -> list[str]:
        return sorted(c["name"] for c in self._call("GET", "/collections")["collections"])

    def drop_collection(self, name: str) -> None:
        self._call("DELETE", f"/collections/{_quote(name)}")

    def save(self) -> None:
        """Nothing to flush (each write was committed by its request); kept for API parity."""
        self._call("POST", "/save")

    @property
    def generation(self) -> int:
        return self._call("GET", "/health")["generation"]


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


class RemoteCollection:
    """A collection behind a server, with the methods of :class:`~needle_mm.Collection`."""

    def __init__(self, client: Client, name: str):
        self._client = client
        self.name = name
        self._path = f"/collections/{_quote(name)}"
        self._info = None

    def __repr__(self) -> str:
        return f"RemoteCollection({self.name!r})"

    def _post(self, action: str, body: dict) -> Any:
        return self._client._call("POST", f"{self._path}/{action}", body)

    def _describe(self) -> dict:
        if self._info is None:
            self._info = self._client._call("GET", self._path)
        return self._info

    @property
    def config(self) -> CollectionConfig:
        i = self._describe()
        return CollectionConfig(i["dimension"], DistanceFunction(i["distance"]), i["m"], i["ef_construction"],
                                i["ef_search"], i["seed"], sparse=i["sparse"], dtype=i["dtype"])

    @property
    def dimension(self) -> int:
        return self._describe()["dimension"]

    @property
    def distance(self) -> DistanceFunction:
        return DistanceFunction(self._describe()["distance"])

    @property
    def sparse(self) -> bool:
        return self._describe()["sparse"]

    # ------------------------------------------------------------ writes

    def _records(self, action: str, ids, vectors, metadatas) -> None:
        ids = list(ids)
        body = {"ids": ids, "vectors": _vectors_json(vectors)}
        if metadatas is not None:
            body["metadatas"] = list(metadatas)
        self._post(action, body)

    def insert(self, id: str, vector, metadata: dict | None = None) -> None:
        self._records("insert", [id], [_vector_json(vector)], None if metadata is None else [metadata])

    def insert_many(self, ids: Sequence[str], vectors, metadatas: Iterable[dict | None] | None = None) -> None:
        self._records("insert", ids, vectors, metadatas)

    def upsert(self, id: str, vector, metadata: dict | None = None) -> None:
        self._records("upsert", [id], [_vector_json(vector)], None if metadata is None else [metadata])

    def upsert_many(self, ids: Sequence[str], vectors, metadatas: Iterable[dict | None] | None = None) -> None:
        self._records("upsert", ids, vectors, metadatas)

    def delete(self, ids: str | Sequence[str] | None = None, *, filter: dict | None = None) -> int:
        if isinstance(ids, str):
            ids = [ids]
        return self._post("delete", {"ids": None if ids is None else list(ids), "filter": filter})["deleted"]

    def update_metadata(self, id: str, metadata: dict | None) -> None:
        self._post("update_metadata", {"id": id, "metadata": metadata})

    # ------------------------------------------------------------ reads

    def get(self, id: str, default: Any = _MISSING) -> Entry:
        if not isinstance(id, str):
            raise E.InvalidIdError(f"record ids must be str, got {type(id).__name__} {id!r}")
        record = self._post("get", {"ids": [id]})["records"][0]
        if record is None:
            if default is not _MISSING:
                return default
            raise E.RecordNotFoundError(f"no record with id {id!r} in collection {self.name!r}")
        return Entry(record["id"], _vector_in(record["vector"]), record["metadata"])

    def __contains__(self, id: object) -> bool:
        return isinstance(id, str) and bool(id) and \
            self._post("get", {"ids": [id], "include_vector": False})["records"][0] is not None

    def __len__(self) -> int:
        return self.count()

    def count(self, filter: dict | None = None) -> int:
        return self._post("count", {"filter": filter})["count"]

    def find(self, filter: dict | None = None, limit: int | None = None) -> list[tuple[str, dict]]:
        return [(r["id"], r["metadata"]) for r in self._post("find", {"filter": filter, "limit": limit})["records"]]

    def _search(self, key: str, queries, k, filter, ef, exact, include_vector) -> list[list[SearchResult]]:
        body = {key: queries, "k": k, "filter": filter, "ef": ef, "exact": exact, "include_vector": include_vector}
        rows = self._post("search", body)["results"]
        out = []
        for row in rows:
            results = []
            for r in row:
                if include_vector:
                    res = SearchResult.with_vector(r["id"], r["distance"], _Decoded(r["metadata"]), 0,
                                                   _vector_in(r["vector"]))
                else:
                    res = SearchResult(r["id"], r["distance"], _Decoded(r["metadata"]), 0)
                res._meta = r["metadata"]
                results.append(res)
            out.append(results)
        return out

    def search(self, query, k: int = 10, filter: dict | None = None, *, ef: int | None = None,
               exact: bool = False, include_vector: bool = False) -> list[SearchResult]:
        return self._search("vector", _vector_json(query), k, filter, ef, exact, include_vector)[0]

    def search_batch(self, queries, k: int = 10, filter: dict | None = None, *, ef: int | None = None,
                     exact: bool = False, include_vector: bool = False) -> list[list[SearchResult]]:
        return self._search("vectors", _vectors_json(queries), k, filter, ef, exact, include_vector)
