"""The optional HTTP server: ``needle serve FILE`` (extra ``server``: FastAPI + uvicorn).

Each worker process opens the file itself and reads it through the shared
memory map; writes go through the file's writer lock like any other writer.
Every write request is one transaction: it is committed (visible to every
worker and process, durable) before the response is sent, or it changes
nothing; ``POST /transaction`` runs a list of writes as one transaction (all
or none), which is what ``Client.transaction()`` sends. A worker answers one
request at a time; the workers give the parallelism (``--workers``, one per
core is a good start).

Safe defaults: loopback unless told otherwise; an API key is required to bind
anywhere else and, once set, for every request (``Authorization: Bearer KEY``
or ``X-API-Key: KEY``); only requests naming a host the server serves are
answered (``Host`` header: loopback names and the bound address by default,
``--allowed-host`` for more), so a web page cannot reach a keyless loopback
server through DNS rebinding; request bodies are limited (``--max-body-mb``)
and so are the results of one request (``--max-results``: k times the number
of queries; the streamed walks ``/ids`` and ``/scan`` are sent in batches and
not limited); bad JSON or bad vectors get a 4xx with ``{"error": <NeedleError
class>, "message": ...}``, never a traceback.

Writes run in a worker thread of their own (they may wait for the writer lock
held by another process, and they fsync), so the event loop keeps answering
reads and ``/health`` meanwhile. Reads go through a second, read-only
Database on the same file: they see committed generations only, never the
pending writes of a request still in flight.
"""

from __future__ import annotations

import hmac
import http.client
from http import HTTPStatus
import ipaddress
import itertools
import os
import sys
import threading
import time
import traceback
from typing import Annotated, Any, Literal, Optional, Union

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import errors as E
from .._engine.text_search import DEFAULT_CANDIDATES, text_index
from ..collection import _CLAMP_ABOVE, _text_config
from ..database import Database

ENV_FILE = "NEEDLE_SERVE_FILE"
ENV_API_KEY = "NEEDLE_API_KEY"
ENV_MAX_BODY = "NEEDLE_SERVE_MAX_BODY"
ENV_READ_ONLY = "NEEDLE_SERVE_READ_ONLY"
ENV_ALLOWED_HOSTS = "NEEDLE_SERVE_ALLOWED_HOSTS"
ENV_MAX_RESULTS = "NEEDLE_SERVE_MAX_RESULTS"
DEFAULT_MAX_BODY = 32 * 1024 * 1024
DEFAULT_MAX_RESULTS = 10_000  # hits per request (k x queries): ~1 MB of JSON without vectors
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
STREAM_IDS, STREAM_RECORDS = 1024, 128  # items per line of a streamed walk

# NeedleError class -> HTTP status; every other NeedleError is the client's bad input (400).
STATUS = {
    E.CollectionNotFoundError: 404, E.RecordNotFoundError: 404, E.DatabaseNotFoundError: 404,
    E.CollectionExistsError: 409, E.DuplicateIdError: 409, E.TransactionError: 409,
    E.ReadOnlyError: 403, E.LockTimeoutError: 503, E.DatabaseClosedError: 503,
    E.CorruptFileError: 500, E.NotANeedleFileError: 500, E.UnsupportedVersionError: 500,
}


def status_of(exc: E.NeedleError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(status: int, body: dict) -> tuple[int, bytes]:
    return status, orjson.dumps(body)


def host_of(header: bytes) -> str:
    """The host name of a ``Host`` header, without its port (``[::1]:8000`` -> ``::1``)."""
    text = header.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def allowed_hosts(bind_host: str, extra: list[str] | tuple[str, ...] = ()) -> tuple[str, ...]:
    """The names a server bound to ``bind_host`` answers to: loopback names, the
    bound address (unless it is a wildcard), and ``extra`` (``"*"``: any)."""
    names = list(LOOPBACK_NAMES)
    if bind_host not in ("0.0.0.0", "::", ""):
        names.append(bind_host.strip("[]").lower())
    names.extend(h.strip().strip("[]").lower() for h in extra if h.strip())
    return tuple(dict.fromkeys(names))


class Guard:
    """ASGI middleware, before any parsing: the Host header, the API key and
    the request body limit."""

    def __init__(self, app, api_key: str | None, max_body: int, hosts: tuple[str, ...] = LOOPBACK_NAMES):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body = max_body
        self.any_host = "*" in hosts
        self.hosts = frozenset(hosts)

    async def _reply(self, send, status: int, error: str, message: str) -> None:
        body = orjson.dumps({"error": error, "message": message})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _authorised(self, headers: dict) -> bool:
        given = headers.get(b"x-api-key")
        auth = headers.get(b"authorization", b"")
        if given is None and auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given, self.api_key)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if not self.any_host and host_of(headers.get(b"host", b"")) not in self.hosts:
            return await self._reply(send, 400, "InvalidHost",
                                     "this server does not serve the host named in the request's Host header; "
                                     "start it with --allowed-host NAME to serve NAME")
        if self.api_key is not None and not self._authorised(headers):
            return await self._reply(send, 401, "Unauthorized",
                                     "this server requires an API key: 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await self._reply(send, 413, "RequestTooLarge",
                                     f"request body is larger than the server's limit of {self.max_body} bytes")
        state = {"seen": 0, "rejected": False}

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.max_body and not state["rejected"]:
                    state["rejected"] = True
                    await self._reply(send, 413, "RequestTooLarge",
                                      f"request body is larger than the server's limit of {self.max_body} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not state["rejected"]:
                await send(message)

        return await self.app(scope, limited_receive, guarded_send)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sparse(Model):
    indices: list[int]
    values: list[float]


Vector = Union[list[float], Sparse, dict[str, float]]


class CreateCollection(Model):
    name: str
    dimension: int
    distance: str = "cosine"
    m: Optional[int] = Field(None, description="omitted: the default (16), or with exist_ok: not compared")
    ef_construction: Optional[int] = None
    ef_search: Optional[int] = None
    seed: Optional[int] = None
    sparse: Optional[bool] = None
    dtype: Optional[str] = None
    quantization: Optional[str] = Field(None, description="'int8' or 'binary' (search on codes, rescored exactly); "
                                                          "'none' with exist_ok: asks for an unquantized collection")
    text_field: Optional[str] = Field(None, description="index this metadata field for full-text (BM25) and hybrid "
                                                        "search")
    text_options: Optional[dict[str, Any]] = Field(None, description="how the text is analysed and ranked: stemmer, "
                                                                     "stop_words, fold_accents, k1, b")
    exist_ok: bool = Field(False, description="return an existing collection that matches instead of a 409")


class Records(Model):
    ids: list[str]
    vectors: list[Vector]
    metadatas: Optional[list[Optional[dict[str, Any]]]] = None
    one: bool = Field(False, description="one record, written as the embedded insert/upsert of one writes it "
                                         "(its errors name the 'vector')")


class Delete(Model):
    ids: Optional[list[str]] = None
    filter: Optional[dict[str, Any]] = None


class Get(Model):
    ids: list[str]
    include_vector: bool = True


class Search(Model):
    vector: Optional[Vector] = Field(None, description="one query vector (with `text`: hybrid)")
    vectors: Optional[list[Vector]] = Field(None, description="a batch of query vectors (with `texts`: hybrid, one "
                                                              "text per vector)")
    text: Any = Field(None, description="one full-text query, a string: ranked by BM25 (distance = -score), or "
                                        "with `vector` fused with the vector ranking (each hit then has `scores`)")
    texts: Any = Field(None, description="a batch of full-text queries, a list of strings (alone, or one per row "
                                         "of `vectors`)")
    k: int = 10
    filter: Optional[dict[str, Any]] = None
    fusion: Any = Field("rrf", description="hybrid only: 'rrf', 'weighted', {\"method\": \"rrf\", \"k\": 60} or "
                                           "{\"method\": \"weighted\", \"alpha\": 0.5}; checked as embedded")
    candidates: Any = Field(DEFAULT_CANDIDATES, description="hybrid only: hits each ranking contributes to the "
                                                            "fusion, an integer from 1 to 65536")
    ef: Any = Field(None, description="a positive integer; checked as the embedded search checks it (a sparse "
                                      "collection ignores it)")
    exact: bool = False
    rescore: Any = Field(None, description="quantized collections: candidates per result ranked again by their "
                                           "exact distances (0: the codes' order); default 2 (int8), 16 (binary)")
    include_vector: bool = False
    as_arrays: bool = Field(False, description="answer {ids, distances, shape}: rows padded with null past the "
                                               "last hit (as the embedded search(as_arrays=True))")


class CreateTextIndex(Model):
    field: str = Field(..., description="the metadata key whose string values are indexed")
    options: Optional[dict[str, Any]] = Field(None, description="stemmer, stop_words, fold_accents, k1, b (as "
                                                                "Collection.create_text_index's keywords)")


class Count(Model):
    filter: Optional[dict[str, Any]] = None


class Find(Model):
    filter: Optional[dict[str, Any]] = None
    limit: Optional[int] = None
    offset: int = 0


class Ids(Model):
    filter: Optional[dict[str, Any]] = None


class Scan(Model):
    limit: Optional[int] = Field(None, description="at most this many records (the first, in storage order)")


class UpdateMetadata(Model):
    id: str
    metadata: Optional[dict[str, Any]] = None


class CreateOp(CreateCollection):
    op: Literal["create_collection"]


class DropOp(Model):
    op: Literal["drop_collection"]
    name: str


class RecordsOp(Records):
    op: Literal["insert", "upsert"]
    collection: str


class DeleteOp(Delete):
    op: Literal["delete"]
    collection: str


class UpdateMetadataOp(UpdateMetadata):
    op: Literal["update_metadata"]
    collection: str


class CreateTextIndexOp(CreateTextIndex):
    op: Literal["create_text_index"]
    collection: str


class Transaction(Model):
    exclusive: bool = Field(False, description="hold the file's writer lock from the first write to the commit")
    ops: list[Annotated[Union[CreateOp, DropOp, RecordsOp, DeleteOp, UpdateMetadataOp, CreateTextIndexOp],
                        Field(discriminator="op")]] = \
        Field(..., description="writes run in order as one transaction: all are committed, or none")


def create_app(path: str, api_key: str | None = None, max_body: int = DEFAULT_MAX_BODY, read_only: bool = False,
               hosts: tuple[str, ...] = LOOPBACK_NAMES, max_results: int = DEFAULT_MAX_RESULTS):
    """The ASGI application serving one Needle file (FastAPI; OpenAPI at ``/openapi.json``)."""
    import anyio.to_thread
    from anyio import CapacityLimiter

    writer = None if read_only else Database.open(path)
    db = Database.open(path, read_only=True)  # reads: committed generations only
    writes_limiter = CapacityLimiter(1)  # one write at a time, off the event loop

    app = FastAPI(title="Needle", version=_version(), description=__doc__.split("\n\n")[1])

    def reply(body: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                        media_type="application/json")

    @app.exception_handler(E.NeedleError)
    async def needle_error(request: Request, exc: E.NeedleError):
        return reply({"error": type(exc).__name__, "message": str(exc)}, status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()[:5]]
        return reply({"error": "InvalidRequest", "message": "; ".join(problems) or "invalid request"}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        name = HTTPStatus(exc.status_code).phrase.replace(" ", "") if exc.status_code in HTTPStatus._value2member_map_ \
            else "HTTPError"
        return reply({"error": name, "message": str(exc.detail)}, exc.status_code)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        traceback.print_exc(file=sys.stderr)
        return reply({"error": "InternalError", "message": f"{type(exc).__name__}; see the server log"}, 500)

    # Reads are coroutines that call the read-only Database directly (measured:
    # hopping to a thread pool per request halved a worker's throughput);
    # workers give parallelism. Writes may block (the writer lock, fsync), so
    # they run in a thread, one at a time.
    def transaction(fn, exclusive: bool = False):
        if writer is None:
            raise E.ReadOnlyError(f"this server serves {path!r} read-only; writes are refused")
        with writer.transaction(exclusive):
            return fn()

    async def write(fn, exclusive: bool = False):
        return await anyio.to_thread.run_sync(transaction, fn, exclusive, limiter=writes_limiter)

    def coll(name: str):
        return (writer or db).collection(name)

    def read_coll(name: str):
        return db.collection(name)

    def describe(name: str, source=None) -> dict:
        c = (source or db).collection(name)
        cfg = c.config
        return {"name": name, "dimension": cfg.dimension, "distance": cfg.distance.value, "sparse": cfg.sparse,
                "dtype": cfg.dtype, "m": cfg.m, "ef_construction": cfg.ef_construction, "ef_search": cfg.ef_search,
                "seed": cfg.seed, "quantization": cfg.quantization, "text_field": cfg.text_field,
                "text_options": cfg.text_options, "count": c.count()}

    def vec_out(v):
        return v.to_dict() if hasattr(v, "to_dict") else v

    def plain(v):
        return v.model_dump() if isinstance(v, BaseModel) else v

    @app.get("/health")
    async def health():
        db.refresh()  # the newest committed generation (one 64-byte read), not the one the last read used
        return reply({"status": "ok", "generation": db.generation})

    @app.get("/collections")
    async def list_collections():
        return reply({"collections": [describe(n) for n in db.list_collections()]})

    # The writes, each a function of its request body: one per endpoint, and
    # the same ones run in order inside one transaction by /transaction.
    def do_create(body: CreateCollection) -> dict:
        writer.create_collection(body.name, body.dimension, body.distance, m=body.m,
                                 ef_construction=body.ef_construction, ef_search=body.ef_search, seed=body.seed,
                                 sparse=body.sparse, dtype=body.dtype, quantization=body.quantization,
                                 text_field=body.text_field, text_options=body.text_options, exist_ok=body.exist_ok)
        return describe(body.name, writer)

    def do_drop(name: str) -> dict:
        writer.drop_collection(name)
        return {"dropped": name}

    def do_records(name: str, body: Records, method: str) -> dict:
        c = coll(name)
        vectors = [plain(v) for v in body.vectors]
        if body.one:
            if len(body.ids) != 1 or len(vectors) != 1 or (body.metadatas is not None and len(body.metadatas) != 1):
                raise E.InvalidArgumentError("'one' is a write of one record: give one id, one vector and at most "
                                             "one metadata")
            getattr(c, method.removesuffix("_many"))(body.ids[0], vectors[0], (body.metadatas or [None])[0])
            return {"written": 1}
        if not vectors and not c.sparse:
            vectors = _empty(c.dimension)
        getattr(c, method)(body.ids, vectors, body.metadatas)  # what is wrong with them: the embedded error
        return {"written": len(body.ids)}

    def do_delete(name: str, body: Delete) -> dict:
        if body.ids is None and body.filter is None:
            raise E.InvalidArgumentError("delete needs ids or a filter")
        return {"deleted": coll(name).delete(body.ids, filter=body.filter)}

    def do_update(name: str, body: UpdateMetadata) -> dict:
        coll(name).update_metadata(body.id, body.metadata)
        return {"updated": body.id}

    def do_text_index(name: str, body: CreateTextIndex) -> dict:
        options = body.options or {}
        index = text_index(body.field, options)  # checked first, as embedded (and an option named "field" with it)
        coll(name).create_text_index(body.field, **options)  # built by this request's commit
        # described as it is once committed (until then the collection's config has no text index)
        return {**describe(name, writer), **_text_config(index)}

    def do_op(op) -> dict:
        if isinstance(op, CreateOp):
            return do_create(op)
        if isinstance(op, DropOp):
            return do_drop(op.name)
        if isinstance(op, RecordsOp):
            return do_records(op.collection, op, "insert_many" if op.op == "insert" else "upsert_many")
        if isinstance(op, DeleteOp):
            return do_delete(op.collection, op)
        if isinstance(op, CreateTextIndexOp):
            return do_text_index(op.collection, op)
        return do_update(op.collection, op)

    @app.post("/collections", status_code=201)
    async def create_collection(body: CreateCollection):
        def op():
            existed = body.exist_ok and isinstance(body.name, str) and body.name in writer.list_collections()
            return do_create(body), 200 if existed else 201
        info, status = await write(op)
        return reply(info, status)

    # A collection's name is one path segment, percent-encoded (the clients encode every "/" and "."); the
    # ASGI server decodes the path, so a name holding "/" spans segments: {name:path} takes it whole, and
    # the action after it is the last segment (a name may end in "/insert": the match is the longest name).
    @app.get("/collections/{name:path}")
    async def get_collection(name: str):
        return reply(describe(name))

    @app.delete("/collections/{name:path}")
    async def drop_collection(name: str):
        return reply(await write(lambda: do_drop(name)))

    @app.post("/collections/{name:path}/insert")
    async def insert(name: str, body: Records):
        return reply(await write(lambda: do_records(name, body, "insert_many")))

    @app.post("/collections/{name:path}/upsert")
    async def upsert(name: str, body: Records):
        return reply(await write(lambda: do_records(name, body, "upsert_many")))

    @app.post("/collections/{name:path}/delete")
    async def delete(name: str, body: Delete):
        return reply(await write(lambda: do_delete(name, body)))

    @app.post("/collections/{name:path}/update_metadata")
    async def update_metadata(name: str, body: UpdateMetadata):
        return reply(await write(lambda: do_update(name, body)))

    @app.post("/collections/{name:path}/create_text_index")
    async def create_text_index(name: str, body: CreateTextIndex):
        """Index the string values of metadata ``field`` for full-text and hybrid search
        (as the embedded ``Collection.create_text_index``); the request's commit builds
        the index of every record, so text search works once it is answered. The
        answer describes the collection."""
        return reply(await write(lambda: do_text_index(name, body)))

    @app.post("/transaction")
    async def transaction_(body: Transaction):
        """Run the writes of ``ops`` in order as one transaction: all are committed
        together, or, if one fails, none (the error names which one failed)."""
        def op():
            results = []
            for n, item in enumerate(body.ops, 1):
                try:
                    results.append(do_op(item))
                except E.NeedleError as exc:
                    target = getattr(item, "collection", None) or getattr(item, "name", "")
                    raise _restated(exc, f"transaction rolled back, nothing was written: write {n} of "
                                         f"{len(body.ops)} ({item.op} {target!r}) failed: ") from exc
            return {"results": results}
        return reply(await write(op, body.exclusive))

    @app.post("/collections/{name:path}/get")
    async def get(name: str, body: Get):
        c = read_coll(name)
        out = []
        for i in body.ids:
            e = c.get(i, None)
            out.append(None if e is None else {"id": e.id, "metadata": e.metadata,
                                               **({"vector": vec_out(e.vector)} if body.include_vector else {})})
        return reply({"records": out})

    @app.post("/collections/{name:path}/search")
    async def search(name: str, body: Search):
        """Search by ``vector`` (one query) or ``vectors`` (a batch), by ``text`` / ``texts``
        (BM25), or both (hybrid: each hit also has ``scores``, ``{"vector": distance,
        "text": bm25}``, null where the hit was not in that ranking's candidates)."""
        single = body.vector is not None or body.text is not None
        batch = body.vectors is not None or body.texts is not None
        if single == batch:
            raise E.InvalidArgumentError("give one query ('vector', 'text' or both) or a batch ('vectors', 'texts' "
                                         "or both)")

        c = read_coll(name)
        if single:
            queries = 1
        else:
            queries = len(body.vectors) if body.vectors is not None else \
                len(body.texts) if isinstance(body.texts, list) else 1
        k = body.k if body.k <= _CLAMP_ABOVE else min(body.k, c.count())  # as the embedded search clamps it
        if k > 0 and queries * k > max_results:
            raise E.InvalidArgumentError(
                f"this request asks for up to {queries * k} results ({queries} queries x k={body.k}); the "
                f"server returns at most {max_results} per request (--max-results): split the batch or lower k")

        args = dict(k=body.k, filter=body.filter, ef=body.ef, exact=body.exact, include_vector=body.include_vector,
                    as_arrays=body.as_arrays, rescore=body.rescore, fusion=body.fusion, candidates=body.candidates)
        if single:
            found = c.search(None if body.vector is None else plain(body.vector), text=body.text, **args)
            rows = None if body.as_arrays else [found]
        else:
            vectors = None
            if body.vectors is not None:
                vectors = [plain(v) for v in body.vectors]
                if not c.sparse and not vectors:
                    vectors = _empty(c.dimension)
            found = rows = c.search_batch(vectors, texts=body.texts, **args)
        if body.as_arrays:
            ids, distances = found
            return reply({"ids": ids.tolist(), "distances": distances, "shape": list(ids.shape)})
        return reply({"results": [[hit_json(r, body.include_vector) for r in row] for row in rows]})

    def hit_json(r, include_vector: bool) -> dict:
        out = {"id": r.id, "distance": r.distance, "metadata": r.metadata}
        if include_vector:
            out["vector"] = vec_out(r.vector)
        scores = getattr(r, "scores", None)  # a hybrid hit's: each ranking's own
        if scores is not None:
            out["scores"] = scores
        return out

    @app.post("/collections/{name:path}/count")
    async def count(name: str, body: Count):
        return reply({"count": read_coll(name).count(body.filter)})

    @app.post("/collections/{name:path}/find")
    async def find(name: str, body: Find):
        return reply({"records": [{"id": i, "metadata": m}
                                  for i, m in read_coll(name).find(body.filter, body.limit, body.offset)]})

    walk_doc = {200: {"description": "one JSON object a line: {\"items\": [...]} batches, then {\"done\": true, "
                                     "\"count\": N}; an error after the first line is a {\"error\", \"message\"} line",
                      "content": {"application/x-ndjson": {}}}}

    @app.post("/collections/{name:path}/ids", responses=walk_doc)
    async def ids(name: str, body: Ids):
        """The ids of live records (matching ``filter``) in storage order, streamed: one
        generation for the whole walk (as the embedded ``Collection.ids``)."""
        return stream(read_coll(name).ids(body.filter), STREAM_IDS, lambda i: i)

    @app.post("/collections/{name:path}/scan", responses=walk_doc)
    async def scan(name: str, body: Scan):
        """Every live record ({id, vector, metadata}) in storage order, streamed (as
        iterating the embedded Collection); ``limit``: only the first ones (``peek``)."""
        if body.limit is not None and body.limit < 0:
            raise E.InvalidArgumentError(f"limit must be a non-negative integer or None, got {body.limit}")
        records = iter(read_coll(name))
        if body.limit is not None:
            records = itertools.islice(records, min(body.limit, sys.maxsize))
        return stream(records, STREAM_RECORDS,
                      lambda e: {"id": e.id, "vector": vec_out(e.vector), "metadata": e.metadata})

    def stream(items, size: int, item_json) -> Response:
        """A walk streamed as NDJSON. Its first batch is read before answering, so an
        unknown collection or a bad filter is an ordinary 4xx."""
        first = [item_json(i) for i in itertools.islice(items, size)]

        def lines():
            batch, sent = first, 0
            try:
                while batch:
                    sent += len(batch)
                    yield orjson.dumps({"items": batch}, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
                    batch = [item_json(i) for i in itertools.islice(items, size)]
                yield orjson.dumps({"done": True, "count": sent}) + b"\n"
            except E.NeedleError as exc:
                yield orjson.dumps({"error": type(exc).__name__, "message": str(exc)}) + b"\n"
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                yield orjson.dumps({"error": "InternalError", "message": f"{type(exc).__name__}; see the server log"}) \
                    + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.post("/save")
    async def save():
        def op():
            if writer is not None:
                writer.save()
                return writer.generation
            return db.generation
        generation = await anyio.to_thread.run_sync(op, limiter=writes_limiter)
        return reply({"generation": generation})

    return Guard(app, api_key, max_body, hosts)


def _restated(exc: E.NeedleError, prefix: str) -> E.NeedleError:
    """``exc`` again, of the same class, its message led by ``prefix``."""
    try:
        return type(exc)(prefix + str(exc))
    except Exception:
        return exc


def _empty(dim: int):
    import numpy as np

    return np.zeros((0, dim), dtype=np.float32)


def _version() -> str:
    from .._version import __version__

    return __version__


class PerWorkerApp:
    """An ASGI application that opens its file in the process that serves it:
    ``create_app(path, **options)`` made on the first event a worker receives.

    For pre-forking servers (gunicorn ``--preload``), where the module holding
    the app is imported in the parent before it forks: a Database opened
    there would be shared, locks and all, by every worker."""

    def __init__(self, path: str, **options):
        self.path, self.options = path, options
        self._app, self._pid = None, None

    async def __call__(self, scope, receive, send):
        if self._app is None or self._pid != os.getpid():
            self._app, self._pid = create_app(self.path, **self.options), os.getpid()
        await self._app(scope, receive, send)


def app_from_env():
    """The app of one uvicorn worker, configured by ``needle serve`` through the environment."""
    hosts = tuple(orjson.loads(os.environ[ENV_ALLOWED_HOSTS])) if ENV_ALLOWED_HOSTS in os.environ else LOOPBACK_NAMES
    return create_app(os.environ[ENV_FILE], os.environ.get(ENV_API_KEY) or None,
                      int(os.environ.get(ENV_MAX_BODY, DEFAULT_MAX_BODY)), os.environ.get(ENV_READ_ONLY) == "1",
                      hosts, int(os.environ.get(ENV_MAX_RESULTS, DEFAULT_MAX_RESULTS)))


def serve(path: str, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, api_key: str | None = None,
          max_body: int = DEFAULT_MAX_BODY, read_only: bool = False, allowed_host: list[str] | None = None,
          max_results: int = DEFAULT_MAX_RESULTS) -> None:
    """Run the server (blocks). Refuses a non-loopback address without an API key.

    Once it answers requests, one line on stderr says what it serves, where, and
    whether it needs an API key: ``needle: serving /data/x.needle at
    http://127.0.0.1:8000 (API key required)``."""
    import uvicorn

    api_key = api_key or os.environ.get(ENV_API_KEY) or None
    if not is_loopback(host) and not api_key:
        raise E.InvalidArgumentError(f"refusing to serve on {host!r} without an API key: pass --api-key or set "
                                     f"{ENV_API_KEY} (or bind 127.0.0.1)")
    if workers < 1:
        raise E.InvalidArgumentError(f"--workers must be at least 1, got {workers}")
    if max_results < 1:
        raise E.InvalidArgumentError(f"--max-results must be at least 1, got {max_results}")
    Database.open(path, read_only=read_only).close()  # create it once, before workers race to
    os.environ[ENV_FILE] = os.path.abspath(path)
    os.environ[ENV_MAX_BODY] = str(max_body)
    os.environ[ENV_READ_ONLY] = "1" if read_only else "0"
    os.environ[ENV_ALLOWED_HOSTS] = orjson.dumps(list(allowed_hosts(host, allowed_host or ()))).decode()
    os.environ[ENV_MAX_RESULTS] = str(max_results)
    if api_key:
        os.environ[ENV_API_KEY] = api_key
    shown = f"[{host}]" if ":" in host else host
    line = (f"needle: serving {os.path.abspath(path)}{' read-only' if read_only else ''} at http://{shown}:{port} "
            f"({'API key required' if api_key else 'no API key required'})")
    config = uvicorn.Config("needle_mm.remote.server:app_from_env", factory=True, host=host, port=port,
                            log_level="warning", access_log=False)
    if workers == 1:
        threading.Thread(target=_announce_when_up, args=(host, port, api_key, line), name="needle-serve-announce",
                         daemon=True).start()
        uvicorn.Server(config).run()
        return
    _prefork(config, workers, lambda: _announce_when_up(host, port, api_key, line))


def _prefork(config, workers: int, announce) -> None:
    """Bind once, load the engine and its kernels once (``needle_mm.preload``), then
    fork the workers, which share those pages copy-on-write and accept on the one
    socket; restart a worker that dies, and stop them all on SIGINT/SIGTERM.

    (uvicorn's own ``workers=`` spawns fresh interpreters, each paying every
    import and kernel load again, in memory of its own.)"""
    import signal

    from ..ops.preload import preload

    sock = config.bind_socket()
    preload()  # this module is the server: imported already
    children: set[int] = set()
    stopping = False

    def start_worker() -> None:
        pid = os.fork()
        if pid == 0:  # the worker: uvicorn on the inherited socket; never returns into the parent's code
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                import uvicorn

                uvicorn.Server(config).run(sockets=[sock])
            except BaseException:  # noqa: BLE001 - reported, then the worker exits
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.add(pid)

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for _ in range(workers):
        start_worker()
    threading.Thread(target=announce, name="needle-serve-announce", daemon=True).start()
    restarts = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        children.discard(pid)
        if not stopping and restarts < 10 * workers:  # a worker that keeps dying is not restarted forever
            restarts += 1
            print(f"needle: worker {pid} exited ({os.waitstatus_to_exitcode(status)}); starting another",
                  file=sys.stderr, flush=True)
            start_worker()
    sock.close()


def _announce_when_up(host: str, port: int, api_key: str | None, line: str, poll: float = 0.05) -> None:
    """Print ``line`` to stderr once the server answers ``/health`` (any worker:
    uvicorn binds the socket, then starts the workers, which then load the app)."""
    probe = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host.strip("[]"))
    headers = {"Host": "127.0.0.1"} | ({"X-API-Key": api_key} if api_key else {})
    while True:
        conn = http.client.HTTPConnection(probe, port, timeout=5)
        try:
            conn.request("GET", "/health", headers=headers)
            if conn.getresponse().status == 200:
                break
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(poll)
    print(line, file=sys.stderr, flush=True)
