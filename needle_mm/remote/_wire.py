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
from .. import _progress
from .. import errors as E
from .. import sparse as _sparse
from .._engine import text_search as _text
from ..config import CollectionConfig, DistanceFunction
from ..database import _CONFIG_KEYWORDS, _check_name
from ..filters import compile_filter
from ..results import Entry, GivenMetadata, SearchResult, SearchResults
from ..sparse import SparseVector

MISSING = object()
JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
# counts (k, limit, offset, n, ef) above this are sent as this: JSON (orjson) carries 64-bit integers only, and
# no collection holds this many records, so the answer is the same (the embedded API clamps k and ef as well)
MAX_COUNT = 2 ** 62
ASYNC_EXTRA = 'pip install "needle_mm[async]"'
DEFAULT_CANDIDATES = _text.DEFAULT_CANDIDATES  # hybrid search's candidates per ranking, as embedded


# ---------------------------------------------------------------- requests


class Call:
    """One request (``method``, ``path``, JSON ``body``) and ``parse``, which turns
    its decoded answer into the method's result. A write also carries ``tx``,
    its operation in a ``/transaction`` request, and ``pending``, what the
    method returns while a client-side transaction buffers it. ``read``: the
    request changes nothing (sending it twice is harmless), so a client may
    send it again on a fresh connection; a write is never sent twice."""

    __slots__ = ("method", "path", "body", "parse", "tx", "pending", "read")

    def __init__(self, method: str, path: str, body: Any = None, parse: Callable[[Any], Any] = lambda p: p,
                 tx: dict | None = None, pending: Any = None, read: bool = False):
        self.method, self.path, self.body, self.parse, self.tx, self.pending = method, path, body, parse, tx, pending
        self.read = read or method == "GET"

    def data(self) -> bytes | None:
        return None if self.body is None else encode(self.body)


def encode(body: Any) -> bytes:
    try:
        return orjson.dumps(body, option=JSON_OPTS)
    except orjson.JSONEncodeError as exc:  # what the checks before did not catch: still a NeedleError
        raise E.InvalidArgumentError(f"this request's arguments cannot be sent as JSON: {exc}") from None


def quote(name: str) -> str:
    """``name`` as one path segment: every byte but letters, digits and ``_-~`` percent-encoded
    (``/`` too, and ``.``, which HTTP libraries would otherwise resolve in ``.`` and ``..``)."""
    return urllib.parse.quote(name, safe="").replace(".", "%2E")


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


def unavailable(url: str, exc: BaseException, sent: bool, timeout: float | None = None,
                write: bool = True) -> E.ServerUnavailableError:
    """The error for a connection that failed: before the request was sent, or after it
    (no answer: a ``write`` may or may not have been applied)."""
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        what = f"no answer within {timeout:g} s" if sent and timeout is not None else \
            ("timed out waiting for an answer" if sent else "timed out connecting")
    else:
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if sent:
        return E.ServerUnavailableError(
            f"the Needle server at {url} did not answer ({what})"
            + ("; the write may or may not have been applied: read back before retrying it" if write else ""))
    return E.ServerUnavailableError(f"cannot reach a Needle server at {url} ({what})")


def closed(what: str, url: str) -> E.DatabaseClosedError:
    return E.DatabaseClosedError(f"this {what} of {url} is closed; make a new one")


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
#
# Vectors are checked here as the embedded API checks them, but for the collection's dimension, which
# the server checks (the collection may have been dropped and created again with another). ``info`` is
# the collection as the client last heard of it (or None): it only chooses which error an input that no
# collection would take raises (a dense collection's or a sparse one's, as the embedded API raises it).

# The index space sparse vectors are checked against here: uint32's. An index beyond it is sent as given,
# for the server to refuse it naming the collection's dimension.
_SPARSE_SPACE = 2 ** 32


def _is_sparse(info: dict | None) -> bool | None:
    return None if info is None else bool(info.get("sparse"))


def _dense(value: Any, what: str, ndim: int, info: dict | None = None) -> np.ndarray:
    """A dense vector (``ndim`` 1) or matrix (2) as float32, checked as the embedded
    API checks it (but for the dimension): what it refuses raises here, the same error."""
    arr = _input._as_float_array(value, what)
    if arr.ndim != ndim:
        if ndim == 1:
            raise E.InvalidVectorError(f"{what} must be 1-D, got shape {arr.shape}")
        dim = info["dimension"] if info is not None else "dim"
        raise E.InvalidVectorError(f"{what} must be 2-D [n, {dim}], got shape {arr.shape}")
    if ndim == 1:
        if not np.isfinite(arr).all():
            raise E.InvalidVectorError(f"{what} contains NaN or infinity (after conversion to float32)")
    else:
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            raise E.InvalidVectorError(f"{what} row {int(np.flatnonzero(bad)[0])} contains NaN or infinity")
    return np.ascontiguousarray(arr)


def _beyond_any_dimension(indices: Any, values: Any) -> dict | None:
    """Integer indices of which one no collection has (negative, or past uint32), with numeric
    values: as JSON carries them, for the server to refuse; else ``None``."""
    try:
        idx, val = np.asarray(indices), np.asarray(values)
    except (TypeError, ValueError):
        return None
    if not (idx.ndim == 1 and idx.size and idx.dtype.kind in "iu" and val.shape == idx.shape
            and val.dtype.kind in "fiu" and (idx.min() < 0 or idx.max() >= _SPARSE_SPACE)):
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        return {"indices": idx.tolist(), "values": np.nan_to_num(val.astype(np.float64)).tolist()}


def _sparse_json(v: Any, what: str) -> dict:
    """A sparse vector (a SparseVector, ``{"indices", "values"}``, ``{index: value}`` or a 1-row
    scipy.sparse matrix) checked as the embedded API checks it (but for the dimension) and
    sent as ``{"indices", "values"}``: what it refuses raises here, the same error."""
    if _sparse._is_scipy_sparse(v):
        if len(v.shape) == 1:
            v = v.reshape(1, v.shape[0])
        if v.shape[0] != 1:
            raise E.InvalidVectorError(f"{what} is a scipy.sparse matrix of shape {v.shape}; expected one row")
        row = v.tocsr(copy=True)
        row.sum_duplicates()  # as the embedded API reads it: repeated entries summed, indices sorted
        v = SparseVector(row.indices, row.data)
    if isinstance(v, SparseVector):
        raw = _beyond_any_dimension(v.indices, v.values)
    elif set(v) == {"indices", "values"}:
        raw = _beyond_any_dimension(v["indices"], v["values"])
    else:
        raw = _beyond_any_dimension(list(v), list(v.values()))
    if raw is not None:
        return raw
    checked = _sparse.vector(v, _SPARSE_SPACE, what)
    return {"indices": checked.indices.tolist(), "values": checked.values.tolist()}


def _sparse_form(v: Any) -> bool:
    return isinstance(v, (SparseVector, dict)) or _sparse._is_scipy_sparse(v)


def vector_json(v: Any, what: str = "vector", info: dict | None = None) -> Any:
    """One vector (a query, or the record of ``insert``) as JSON carries it."""
    sparse = _is_sparse(info)
    if _sparse_form(v):
        try:
            return _sparse_json(v, what)
        except E.InvalidVectorError:
            if sparse is False:
                _dense(v, what, 1, info)  # no collection takes it: the error of the dense one it is for
            raise
    try:
        return _dense(v, what, 1, info)
    except E.InvalidVectorError:
        if sparse:
            _sparse.vector(v, _SPARSE_SPACE, what)  # the error of the sparse collection it is for
        raise


def vectors_json(vs: Any, what: str = "vectors", info: dict | None = None) -> Any:
    """Many vectors (queries, or the records of ``insert_many``) as JSON carries them."""
    sparse = _is_sparse(info)
    if _sparse._is_scipy_sparse(vs) and len(vs.shape) == 2:
        csr = vs.tocsr()
        return [vector_json(csr[i], f"{what} row {i}", info) for i in range(csr.shape[0])]
    items = None
    if not isinstance(vs, (np.ndarray, str, bytes, dict, SparseVector)):
        try:
            items = list(vs)
        except TypeError:
            pass
    if items is None or (items and not any(_sparse_form(v) for v in items)) or (not items and sparse is False):
        try:
            return _dense(vs if items is None else items, what, 2, info)
        except E.InvalidVectorError:
            if sparse:  # the error of the sparse collection they are for
                _sparse.vectors(vs if items is None else items, _SPARSE_SPACE, what)
            raise
    if sparse is False:
        return _dense(items, what, 2, info)  # sparse vectors for a dense collection: its error
    return [vector_json(v, f"{what} row {i}", info) for i, v in enumerate(items)]


def vector_in(v: Any) -> Any:
    if isinstance(v, dict):
        return SparseVector(np.array(v["indices"], dtype=np.uint32), np.array(v["values"], dtype=np.float32))
    return np.array(v, dtype=np.float32)


def entry_in(record: dict) -> Entry:
    return Entry(record["id"], vector_in(record["vector"]), record["metadata"])


def _result_in(r: dict, include_vector: bool) -> SearchResult:
    """One hit: a SearchResult, or for a hybrid hit (the answer carries its ``scores``) a
    ``FusedResult``, as the embedded hybrid search returns it."""
    distance = float("inf") if r["distance"] is None else r["distance"]
    scores = r.get("scores")
    if scores is not None:
        res = _text.FusedResult(r["id"], distance, GivenMetadata(r["metadata"]), 0,
                                vector_in(r["vector"]) if include_vector else None,
                                {"vector": scores.get("vector"), "text": scores.get("text")})
    elif include_vector:
        res = SearchResult.with_vector(r["id"], distance, GivenMetadata(r["metadata"]), 0, vector_in(r["vector"]))
    else:
        res = SearchResult(r["id"], distance, GivenMetadata(r["metadata"]), 0)
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


def create_collection(name: str, dimension: int, distance: Any, options: dict, exist_ok: bool,
                      unknown: dict | None = None) -> Call:
    """``POST /collections`` with the parameters given; checked here as the embedded
    ``create_collection`` checks them, so the errors are the same."""
    if unknown:
        raise E.InvalidConfigError(f"create_collection got unknown parameter(s) {', '.join(map(repr, sorted(unknown)))}; "
                                   f"known: {', '.join(_CONFIG_KEYWORDS)}")
    given = {key: value for key, value in options.items() if value is not None}
    # raises what Database.create_collection raises ("none": no quantization, compared as given with exist_ok)
    config = CollectionConfig(dimension, distance, **{**given, **({"quantization": None}
                                                                  if given.get("quantization") == "none" else {})})
    _check_name(name)
    body = {"name": name, "dimension": config.dimension, "distance": config.distance.value,
            **{key: "none" if key == "quantization" and config.quantization is None else getattr(config, key)
               for key in given}, "exist_ok": bool(exist_ok)}
    return Call("POST", "/collections", body, tx={"op": "create_collection", **body})


def without_exist_ok(unknown: dict) -> dict:
    """``get_or_create_collection``'s unknown keywords: ``exist_ok`` is what it means (as embedded)."""
    unknown.pop("exist_ok", None)
    return unknown


def create_collection_with_config(name: str, config: CollectionConfig) -> Call:
    _check_name(name)
    if not isinstance(config, CollectionConfig):
        raise E.InvalidConfigError(f"config must be a CollectionConfig, got {type(config).__name__}")
    body = {"name": name, "dimension": config.dimension, "distance": config.distance.value, "m": config.m,
            "ef_construction": config.ef_construction, "ef_search": config.ef_search, "seed": config.seed,
            "sparse": config.sparse, "dtype": config.dtype, "quantization": config.quantization,
            "text_field": config.text_field, "text_options": config.text_options}
    return Call("POST", "/collections", body, tx={"op": "create_collection", **body})


def _named(name: Any) -> str:
    """A name a collection can have; anything else names none (as embedded)."""
    if not (isinstance(name, str) and name) or not _encodable(name):
        raise E.CollectionNotFoundError(f"no collection named {name!r}")
    return name


def _encodable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no collection has it (names are UTF-8)
        return False
    return True


def describe(name: str) -> Call:
    return Call("GET", collection_path(_named(name)))


def list_collections() -> Call:
    return Call("GET", "/collections", parse=lambda p: sorted(c["name"] for c in p["collections"]))


def drop_collection(name: str) -> Call:
    _named(name)
    return Call("DELETE", collection_path(name), parse=lambda p: None, tx={"op": "drop_collection", "name": name})


def save(progress: Any = None) -> Call:
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        _progress.make(progress, "save")  # raises what the embedded save raises
    return Call("POST", "/save", parse=lambda p: None, read=True)  # nothing to flush: sending it twice is harmless


def generation() -> Call:
    return Call("GET", "/health", parse=lambda p: p["generation"])


def config_of(info: dict) -> CollectionConfig:
    return CollectionConfig(info["dimension"], DistanceFunction(info["distance"]), info["m"], info["ef_construction"],
                            info["ef_search"], info["seed"], sparse=info["sparse"], dtype=info["dtype"],
                            quantization=info.get("quantization"), text_field=info.get("text_field"),
                            text_options=info.get("text_options"))


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
    return min(int(value), MAX_COUNT)


def _ef(ef: Any, sparse: bool | None = None) -> Any:
    """``ef`` as JSON carries it: a positive integer (clamped, as the embedded search clamps it)
    or, for the server to refuse as the embedded search does (a sparse collection ignores it),
    a value JSON carries exactly; anything else is refused here, as embedded (or, for a
    collection last heard to be sparse, dropped: it ignores ``ef``)."""
    if ef is None or (isinstance(ef, (str, bool)) or (isinstance(ef, float) and np.isfinite(ef))):
        return ef
    if isinstance(ef, (int, np.integer)) and -MAX_COUNT <= ef:
        return min(int(ef), MAX_COUNT)
    if sparse:
        return None
    raise E.InvalidArgumentError(f"ef must be a positive integer, got {ef!r}")


def _filter(filter: Any) -> Any:
    compile_filter(filter)  # a malformed filter raises the embedded FilterError before anything is sent
    if filter is None:
        return None
    try:
        return orjson.Fragment(orjson.dumps(filter, option=JSON_OPTS))
    except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits: fine embedded, not in JSON
        raise E.FilterError(f"filter cannot be sent to the server as JSON ({exc}): {filter!r}") from None


def _metadatas(metadatas: Any) -> list | None:
    if metadatas is None:
        return None
    return [orjson.Fragment(_input.metadata(m)) for m in metadatas]


def records(name: str, action: str, ids: Any, vectors: Any, metadatas: Any, one: bool = False,
            info: dict | None = None) -> Call:
    """``insert``/``upsert`` (``one``: of one record, whose errors name a "vector") and their ``_many``."""
    ids = [ids] if one else list(ids)
    for i in ids:
        _input.id_bytes(i)
    body = {"ids": ids, "vectors": [vector_json(vectors, "vector", info)] if one else vectors_json(vectors, "vectors", info)}
    if metadatas is not None:
        body["metadatas"] = _metadatas([metadatas] if one else metadatas)
    if one:
        body["one"] = True
    return Call("POST", f"{collection_path(name)}/{action}", body, parse=lambda p: None,
                tx={"op": action, "collection": name, **body})


def delete(name: str, ids: Any, filter: dict | None) -> Call:
    if isinstance(ids, str):
        ids = [ids]
    if ids is not None:
        ids = list(ids)
        if filter is None:
            for i in ids:
                _input.id_bytes(i)
        else:  # only listed ids the filter matches are deleted: one no record can have matches none
            ids = [i for i in ids if _valid_id(i)]
    body = {"ids": ids, "filter": _filter(filter)}
    return Call("POST", f"{collection_path(name)}/delete", body, parse=lambda p: p["deleted"],
                tx={"op": "delete", "collection": name, **body})


def _valid_id(id: Any) -> bool:
    try:
        _input.id_bytes(id)
    except E.InvalidIdError:
        return False
    return True


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

    return Call("POST", f"{collection_path(name)}/get", {"ids": [id]}, parse=parse, read=True)


def get_many(name: str, ids: Any) -> Call:
    if isinstance(ids, (str, bytes)):
        raise E.InvalidArgumentError("get_many takes a list of ids; use get() for one")
    try:
        ids = list(ids)
    except TypeError:
        raise E.InvalidArgumentError(f"get_many takes a list of ids, got {type(ids).__name__}") from None
    for i in ids:
        _input.id_bytes(i)
    return Call("POST", f"{collection_path(name)}/get", {"ids": ids},
                parse=lambda p: [None if r is None else entry_in(r) for r in p["records"]], read=True)


def contains(name: str, id: object) -> Call | bool:
    """The request behind ``id in collection``, or its answer when no request is needed."""
    if not (isinstance(id, str) and id):
        return False
    _input.id_bytes(id)
    return Call("POST", f"{collection_path(name)}/get", {"ids": [id], "include_vector": False},
                parse=lambda p: p["records"][0] is not None, read=True)


def count(name: str, filter: dict | None) -> Call:
    return Call("POST", f"{collection_path(name)}/count", {"filter": _filter(filter)}, parse=lambda p: p["count"],
                read=True)


def find(name: str, filter: dict | None, limit: int | None, offset: int) -> Call:
    body = {"filter": _filter(filter), "limit": _count_arg("limit", limit, True), "offset": _count_arg("offset", offset)}
    return Call("POST", f"{collection_path(name)}/find", body,
                parse=lambda p: [(r["id"], r["metadata"]) for r in p["records"]], read=True)


def ids(name: str, filter: dict | None) -> Call:
    """A streamed walk: each item an id."""
    return Call("POST", f"{collection_path(name)}/ids", {"filter": _filter(filter)}, parse=lambda item: item,
                read=True)


def scan(name: str, limit: Any = MISSING) -> Call:
    """A streamed walk: each item a record (``peek``: the first ``limit``)."""
    limit = None if limit is MISSING else _count_arg("n", limit)
    return Call("POST", f"{collection_path(name)}/scan", {"limit": limit}, parse=entry_in, read=True)


def _rescore(rescore: Any, sparse: bool | None = None) -> Any:
    """``rescore`` as JSON carries it: an integer the embedded search takes, or, for the server to
    refuse as the embedded search does (a sparse collection ignores it), a value JSON carries
    exactly; anything else is refused here, as embedded (or, for a collection last heard to be
    sparse, dropped: it ignores ``rescore``)."""
    if rescore is None or isinstance(rescore, (str, bool)) or (isinstance(rescore, float) and np.isfinite(rescore)):
        return rescore
    if isinstance(rescore, (int, np.integer)) and 0 <= rescore <= 1 << 20:
        return int(rescore)
    if sparse:
        return None
    raise E.InvalidArgumentError(f"rescore must be a non-negative integer, got {rescore!r}")


def _fusion(fusion: Any) -> Any:
    """``fusion`` checked as the embedded hybrid search checks it, as JSON carries it."""
    method, value = _text.fusion_of(fusion)
    if isinstance(fusion, str):
        return fusion
    return {"method": method, "k" if method == "rrf" else "alpha": float(value)}


def query_of(query: Any, vector: Any) -> Any:
    """``search``'s query vector, given as ``query`` or as ``vector=`` (once, as embedded)."""
    if vector is not None:
        if query is not None:
            raise E.InvalidArgumentError("give the query vector once: as query or as vector=")
        return vector
    return query


def search(name: str, query: Any, batch: bool, k: Any, filter: dict | None, ef: Any, exact: bool,
           include_vector: bool, as_arrays: bool, info: dict | None = None, text: Any = None,
           fusion: Any = "rrf", candidates: Any = _text.DEFAULT_CANDIDATES, rescore: Any = None) -> Call:
    """``search`` (one query) or ``search_batch``: by vector, by ``text`` (BM25; ``texts`` for a
    batch), or both (hybrid), checked in the embedded search's order."""
    sparse = _is_sparse(info)
    if text is None:
        if query is None:
            raise E.InvalidArgumentError("search_batch needs queries, texts, or both" if batch else
                                         "search needs a query vector, a text, or both")
        k, filter = _count_arg("k", k), _filter(filter)
        queries = vectors_json(query, "queries", info) if batch else vector_json(query, "query", info)
        body = {"vectors" if batch else "vector": queries, "k": k, "filter": filter, "ef": _ef(ef, sparse),
                "exact": bool(exact), "include_vector": bool(include_vector)}
        if rescore is not None:
            body["rescore"] = _rescore(rescore, sparse)
    else:
        k = _count_arg("k", k)
        texts = _text.query_texts(text, batch)
        body = {"texts" if batch else "text": texts if batch else texts[0], "k": k}
        if query is not None:  # hybrid: the fusion's arguments, then the dense side's (a text-only search has none)
            body["fusion"] = _fusion(fusion)
            body["candidates"] = _text.check_candidates(candidates)
            body["filter"] = _filter(filter)
            body["vectors" if batch else "vector"] = \
                vectors_json(query, "queries", info) if batch else vector_json(query, "query", info)
            body.update(ef=_ef(ef, sparse), exact=bool(exact))
            if rescore is not None:
                body["rescore"] = _rescore(rescore, sparse)
        else:
            body["filter"] = _filter(filter)
        body["include_vector"] = bool(include_vector)
    if as_arrays:
        body["as_arrays"] = True

    def parse(payload):
        if as_arrays:
            return _arrays_in(payload)
        rows = [SearchResults.of([_result_in(r, include_vector) for r in row]) for row in payload["results"]]
        return rows if batch else rows[0]

    return Call("POST", f"{collection_path(name)}/search", body, parse=parse, read=True)


def create_text_index(name: str, field: Any, options: dict, described: Callable[[dict], None]) -> Call:
    """``POST /collections/{name}/create_text_index``; ``field`` and ``options`` checked
    here as the embedded ``create_text_index`` checks them. The answer describes the
    collection (with its text index): ``described`` is given it."""
    _text.text_index(field, options)  # raises what the embedded create_text_index raises
    body = {"field": field, "options": dict(options)}
    return Call("POST", f"{collection_path(name)}/create_text_index", body, parse=lambda p: described(p),
                tx={"op": "create_text_index", "collection": name, **body})
