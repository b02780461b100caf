"""What :class:`~needle_mm.Client` and :class:`~needle_mm.AsyncClient` share: the
request each method makes and how its JSON answer becomes the method's result.

Every method of both clients is ``Call`` built here, then sent by the client's
own transport (``http.client`` or ``httpx``) and turned into its result with
``call.parse``; so the two clients cannot drift apart. Inputs are checked here
as the embedded API checks them (ids, metadata, vectors JSON cannot carry,
collection configurations), so a client raises the same error, with the same
message, before anything is sent.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Callable

import numpy as np
import orjson

from .. import _input
from .. import errors as E
from ..config import CollectionConfig, DistanceFunction
from ..database import _check_name
from ..filters import compile_filter
from ..results import Entry, SearchResult
from ..sparse import SparseVector

MISSING = object()
JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
ASYNC_EXTRA = 'pip install "needle_mm[async]"'


# ---------------------------------------------------------------- requests


class Call:
    """One request (``method``, ``path``, JSON ``body``) and ``parse``, which turns
    its decoded answer into the method's result. A write also carries ``tx``,
    its operation in a ``/transaction`` request, and ``pending``, what the
    method returns while a client-side transaction buffers it."""

    __slots__ = ("method", "path", "body", "parse", "tx", "pending")

    def __init__(self, method: str, path: str, body: Any = None, parse: Callable[[Any], Any] = lambda p: p,
                 tx: dict | None = None, pending: Any = None):
        self.method, self.path, self.body, self.parse, self.tx, self.pending = method, path, body, parse, tx, pending

    def data(self) -> bytes | None:
        return None if self.body is None else encode(self.body)


def encode(body: Any) -> bytes:
    return orjson.dumps(body, option=JSON_OPTS)


def quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def collection_path(name: str) -> str:
    return f"/collections/{quote(name)}"


def check_url(url: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise E.InvalidArgumentError(f"server url must be http(s)://host[:port], got {url!r}")
    return parts


def headers(api_key: str | None) -> dict[str, str]:
    out = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        out["Authorization"] = f"Bearer {api_key}"
    return out


# ---------------------------------------------------------------- answers and errors


def error_from(status: int, raw: bytes, url: str) -> E.NeedleError:
    """The NeedleError a server's error answer names (its class, its message)."""
    try:
        payload = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    message = payload.get("message") or raw[:200].decode("utf-8", "replace")
    cls = getattr(E, str(payload.get("error")), None)
    if not (isinstance(cls, type) and issubclass(cls, E.NeedleError)) or cls is E.ServerUnavailableError:
        cls = E.InvalidArgumentError if status < 500 else E.NeedleError
    return cls(f"{message} (HTTP {status} from {url})")


def answer(status: int, raw: bytes, url: str) -> Any:
    """The decoded JSON of a successful answer; the NeedleError of a failed one."""
    if status >= 400:
        raise error_from(status, raw, url)
    try:
        return orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise E.NeedleError(f"the server at {url} answered with something other than JSON: {raw[:200]!r}") from None


def unavailable(url: str, exc: BaseException, sent: bool, timeout: float | None = None) -> E.ServerUnavailableError:
    """The error for a connection that failed: before the request was sent, or after it (no answer)."""
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        what = f"no answer within {timeout:g} s" if sent and timeout is not None else \
            ("timed out waiting for an answer" if sent else "timed out connecting")
    else:
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if sent:
        return E.ServerUnavailableError(f"the Needle server at {url} did not answer ({what}); "
                                        "a write may or may not have been applied")
    return E.ServerUnavailableError(f"cannot reach a Needle server at {url} ({what})")


def stream_batch(line: bytes, url: str) -> list | None:
    """One line of a streamed walk (``/ids``, ``/scan``): its items, or ``None`` at the end."""
    try:
        payload = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise E.ServerUnavailableError(f"the Needle server at {url} sent a broken walk line: {line[:80]!r}") from None
    if not isinstance(payload, dict):
        raise E.ServerUnavailableError(f"the Needle server at {url} sent a broken walk line: {line[:80]!r}")
    if "items" in payload:
        return payload["items"]
    if payload.get("done"):
        return None
    raise error_from(500 if payload.get("error") == "InternalError" else 400, line, url)


def truncated(url: str) -> E.ServerUnavailableError:
    return E.ServerUnavailableError(f"the Needle server at {url} closed the connection in the middle of a walk")


# ---------------------------------------------------------------- vectors


def _dense(value: Any, what: str, ndim: int) -> Any:
    """A dense vector (``ndim`` 1) or matrix (2) as JSON can carry it (float64: exact
    for float32); what JSON cannot carry (NaN, infinity) or the server would read
    as another shape raises here, as the embedded API raises it."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return value if isinstance(value, list) else list(value)  # the server names what is wrong
    if arr.ndim != ndim and not (ndim == 2 and arr.size == 0):
        raise E.InvalidVectorError(f"{what} must be {ndim}-D{' [n, dim]' if ndim == 2 else ''}, got shape {arr.shape}")
    if ndim == 2:
        bad = ~np.isfinite(arr).all(axis=-1) if arr.ndim == 2 else np.zeros(0, bool)
        if bad.any():
            raise E.InvalidVectorError(f"{what} row {int(np.flatnonzero(bad)[0])} contains NaN or infinity")
        return np.ascontiguousarray(arr) if arr.ndim == 2 else []
    if not np.isfinite(arr).all():
        raise E.InvalidVectorError(f"{what} contains NaN or infinity (after conversion to float32)")
    return np.ascontiguousarray(arr)


def vector_json(v: Any, what: str = "vector") -> Any:
    if isinstance(v, SparseVector):
        return v.to_dict()
    if hasattr(v, "tocsr"):  # a scipy.sparse row
        row = v.tocsr()
        return {"indices": row.indices.tolist(), "values": row.data.tolist()}
    if isinstance(v, dict):
        if set(v) == {"indices", "values"}:
            return {"indices": np.asarray(v["indices"]).tolist(), "values": np.asarray(v["values"]).tolist()}
        return {str(k): float(x) for k, x in v.items()}
    return _dense(v, what, 1)


def vectors_json(vs: Any, what: str = "vectors") -> Any:
    if hasattr(vs, "tocsr") and len(vs.shape) == 2:
        csr = vs.tocsr()
        return [vector_json(csr[i]) for i in range(csr.shape[0])]
    if isinstance(vs, np.ndarray):
        return _dense(vs, what, 2)
    vs = list(vs)
    if vs and not any(isinstance(v, (dict, SparseVector)) or hasattr(v, "tocsr") for v in vs):
        return _dense(vs, what, 2)
    return [vector_json(v) for v in vs]


def vector_in(v: Any) -> Any:
    if isinstance(v, dict):
        return SparseVector(np.array(v["indices"], dtype=np.uint32), np.array(v["values"], dtype=np.float32))
    return np.array(v, dtype=np.float32)


def entry_in(record: dict) -> Entry:
    return Entry(record["id"], vector_in(record["vector"]), record["metadata"])


class _Decoded:
    """Stands in for a segment behind a SearchResult whose metadata came decoded over HTTP."""

    __slots__ = ("metadata",)

    def __init__(self, metadata: dict):
        self.metadata = metadata

    def metadata_at(self, slot: int) -> dict:
        return self.metadata


def _result_in(r: dict, include_vector: bool) -> SearchResult:
    distance = float("inf") if r["distance"] is None else r["distance"]
    if include_vector:
        res = SearchResult.with_vector(r["id"], distance, _Decoded(r["metadata"]), 0, vector_in(r["vector"]))
    else:
        res = SearchResult(r["id"], distance, _Decoded(r["metadata"]), 0)
    res._meta = r["metadata"]
    return res


def _arrays_in(payload: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, distances)`` as the embedded ``as_arrays`` returns them: object ids (``None``
    past the last hit) and float32 distances (``inf`` there; JSON carries it as null)."""
    shape = tuple(payload["shape"])
    ids = np.empty(shape, dtype=object)
    distances = np.array(payload["distances"], dtype=np.float64).reshape(shape)
    if ids.size:
        ids[...] = np.array(payload["ids"], dtype=object).reshape(shape)
    distances[np.isnan(distances)] = np.inf
    return ids, distances.astype(np.float32)


# ---------------------------------------------------------------- Database's calls


def create_collection(name: str, dimension: int, distance: Any, options: dict, exist_ok: bool) -> Call:
    """``POST /collections`` with the parameters given; checked here as the embedded
    ``create_collection`` checks them, so the errors are the same."""
    _check_name(name)
    given = {key: value for key, value in options.items() if value is not None}
    config = CollectionConfig(dimension, distance, **given)  # raises what Database.create_collection raises
    body = {"name": name, "dimension": config.dimension, "distance": config.distance.value,
            **{key: getattr(config, key) for key in given}, "exist_ok": bool(exist_ok)}
    return Call("POST", "/collections", body, tx={"op": "create_collection", **body})


def create_collection_with_config(name: str, config: CollectionConfig) -> Call:
    _check_name(name)
    if not isinstance(config, CollectionConfig):
        raise E.InvalidConfigError(f"config must be a CollectionConfig, got {type(config).__name__}")
    body = {"name": name, "dimension": config.dimension, "distance": config.distance.value, "m": config.m,
            "ef_construction": config.ef_construction, "ef_search": config.ef_search, "seed": config.seed,
            "sparse": config.sparse, "dtype": config.dtype}
    return Call("POST", "/collections", body, tx={"op": "create_collection", **body})


def _named(name: Any) -> str:
    """A name a collection can have; anything else names none (as embedded)."""
    if not (isinstance(name, str) and name):
        raise E.CollectionNotFoundError(f"no collection named {name!r}")
    return name


def describe(name: str) -> Call:
    return Call("GET", collection_path(_named(name)))


def list_collections() -> Call:
    return Call("GET", "/collections", parse=lambda p: sorted(c["name"] for c in p["collections"]))


def drop_collection(name: str) -> Call:
    _named(name)
    return Call("DELETE", collection_path(name), parse=lambda p: None, tx={"op": "drop_collection", "name": name})


def save() -> Call:
    return Call("POST", "/save", parse=lambda p: None)


def generation() -> Call:
    return Call("GET", "/health", parse=lambda p: p["generation"])


def config_of(info: dict) -> CollectionConfig:
    return CollectionConfig(info["dimension"], DistanceFunction(info["distance"]), info["m"], info["ef_construction"],
                            info["ef_search"], info["seed"], sparse=info["sparse"], dtype=info["dtype"])


# ---------------------------------------------------------------- transactions


class Transaction:
    """What ``with client.transaction() as tx`` gives: the block's writes, buffered
    client-side and sent on a clean exit as one ``/transaction`` request.

    Attributes
    ----------
    results : list or None
        After the block committed: what each buffered write returned, in order
        (``delete``: the count; ``create_collection``: the collection; others
        ``None``). ``None`` before then, and if the block raised.
    """

    def __init__(self, exclusive: bool = False):
        self.exclusive = bool(exclusive)
        self.ops: list[bytes] = []
        self.calls: list[Call] = []
        self.results: list | None = None
        self.closed = False

    def __len__(self) -> int:
        """How many writes the block has buffered."""
        return len(self.calls)

    def __repr__(self) -> str:
        state = "committed" if self.results is not None else ("ended" if self.closed else "open")
        return f"<needle remote transaction: {len(self.calls)} write(s), {state}>"

    def add(self, call: Call) -> Any:
        """Buffer the write ``call``; returns what the write's method returns inside the block."""
        # encoded now: later changes to the caller's arrays and dicts are not sent, as embedded writes copy too
        self.ops.append(orjson.Fragment(encode(call.tx)))
        self.calls.append(call)
        return call.pending

    def commit_call(self) -> Call:
        """The one request that commits every buffered write; its answer fills :attr:`results`."""
        calls = self.calls

        def parse(payload):
            self.results = [c.parse(r) for c, r in zip(calls, payload["results"])]
            return self.results

        return Call("POST", "/transaction", {"ops": self.ops, "exclusive": self.exclusive}, parse=parse)


def nested() -> E.TransactionError:
    return E.TransactionError("a transaction is already open on this client (in this thread or task); "
                              "transactions do not nest")


def save_in_transaction() -> E.TransactionError:
    return E.TransactionError("save() inside a transaction block: the block's writes are sent when it ends")


# ---------------------------------------------------------------- Collection's calls


def _count_arg(name: str, value: Any, allow_none: bool = False) -> int | None:
    """A count argument (``k``, ``limit``, ``offset``, ``n``) checked as the embedded API checks it."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise E.InvalidArgumentError(f"{name} must be a non-negative integer{' or None' if allow_none else ''}, "
                                     f"got {value!r}")
    return int(value)


def _filter(filter: Any) -> Any:
    compile_filter(filter)  # a malformed filter raises the embedded FilterError before anything is sent
    return filter


def _metadatas(metadatas: Any) -> list | None:
    if metadatas is None:
        return None
    return [orjson.Fragment(_input.metadata(m)) for m in metadatas]


def records(name: str, action: str, ids: Any, vectors: Any, metadatas: Any, one: bool = False) -> Call:
    ids = [ids] if one else list(ids)
    for i in ids:
        _input.id_bytes(i)
    body = {"ids": ids, "vectors": [vector_json(vectors)] if one else vectors_json(vectors)}
    if metadatas is not None:
        body["metadatas"] = _metadatas([metadatas] if one else metadatas)
    return Call("POST", f"{collection_path(name)}/{action}", body, parse=lambda p: None,
                tx={"op": action, "collection": name, **body})


def delete(name: str, ids: Any, filter: dict | None) -> Call:
    if isinstance(ids, str):
        ids = [ids]
    body = {"ids": None if ids is None else list(ids), "filter": _filter(filter)}
    return Call("POST", f"{collection_path(name)}/delete", body, parse=lambda p: p["deleted"],
                tx={"op": "delete", "collection": name, **body})


def update_metadata(name: str, id: str, metadata: dict | None) -> Call:
    _input.id_bytes(id)
    body = {"id": id, "metadata": orjson.Fragment(_input.metadata(metadata)) if metadata is not None else None}
    return Call("POST", f"{collection_path(name)}/update_metadata", body, parse=lambda p: None,
                tx={"op": "update_metadata", "collection": name, **body})


def get(name: str, id: str, default: Any) -> Call:
    _input.id_bytes(id)

    def parse(payload):
        record = payload["records"][0]
        if record is not None:
            return entry_in(record)
        if default is not MISSING:
            return default
        raise E.RecordNotFoundError(f"no record with id {id!r} in collection {name!r}")

    return Call("POST", f"{collection_path(name)}/get", {"ids": [id]}, parse=parse)


def get_many(name: str, ids: Any) -> Call:
    if isinstance(ids, str):
        raise E.InvalidArgumentError("get_many takes a list of ids; use get() for one")
    ids = list(ids)
    for i in ids:
        _input.id_bytes(i)
    return Call("POST", f"{collection_path(name)}/get", {"ids": ids},
                parse=lambda p: [None if r is None else entry_in(r) for r in p["records"]])


def contains(name: str, id: object) -> Call | bool:
    """The request behind ``id in collection``, or its answer when no request is needed."""
    if not (isinstance(id, str) and id):
        return False
    _input.id_bytes(id)
    return Call("POST", f"{collection_path(name)}/get", {"ids": [id], "include_vector": False},
                parse=lambda p: p["records"][0] is not None)


def count(name: str, filter: dict | None) -> Call:
    return Call("POST", f"{collection_path(name)}/count", {"filter": _filter(filter)}, parse=lambda p: p["count"])


def find(name: str, filter: dict | None, limit: int | None, offset: int) -> Call:
    body = {"filter": _filter(filter), "limit": _count_arg("limit", limit, True), "offset": _count_arg("offset", offset)}
    return Call("POST", f"{collection_path(name)}/find", body,
                parse=lambda p: [(r["id"], r["metadata"]) for r in p["records"]])


def ids(name: str, filter: dict | None) -> Call:
    """A streamed walk: each item an id."""
    return Call("POST", f"{collection_path(name)}/ids", {"filter": _filter(filter)}, parse=lambda item: item)


def scan(name: str, limit: int | None = None) -> Call:
    """A streamed walk: each item a record (``peek``: the first ``limit``)."""
    limit = None if limit is None else _count_arg("n", limit)
    return Call("POST", f"{collection_path(name)}/scan", {"limit": limit},
                parse=entry_in)


def search(name: str, query: Any, batch: bool, k: Any, filter: dict | None, ef: Any, exact: bool,
           include_vector: bool, as_arrays: bool) -> Call:
    body = {"vectors" if batch else "vector": vectors_json(query, "queries") if batch else vector_json(query, "query"),
            "k": _count_arg("k", k), "filter": _filter(filter), "ef": ef, "exact": exact, "include_vector": include_vector}
    if as_arrays:
        body["as_arrays"] = True

    def parse(payload):
        if as_arrays:
            return _arrays_in(payload)
        rows = [[_result_in(r, include_vector) for r in row] for row in payload["results"]]
        return rows if batch else rows[0]

    return Call("POST", f"{collection_path(name)}/search", body, parse=parse)
