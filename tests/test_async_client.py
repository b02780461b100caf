"""``needle_mm.AsyncClient`` against a real ``needle serve`` on loopback: the same
methods, results and errors as the synchronous Client (as coroutines, walks as
async iterators), transactions, connection failures, and a lazy import."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from conftest import run_python
from test_server import DESCRIBED, NAMES, Server, _Hangup, _outcome, _Scripted, free_port, sentences  # noqa: F401
from test_server import same_hits as same_scored_hits

import needle_mm as needle


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    srv = Server(str(tmp_path_factory.mktemp("async") / "served.needle"))
    yield srv
    err = srv.stop()
    assert "Traceback" not in err, err


def same_hits(a, b):
    assert [(r.id, r.metadata) for r in a] == [(r.id, r.metadata) for r in b]
    assert [r.distance for r in a] == [r.distance for r in b]


@pytest.mark.asyncio
async def test_async_client_gives_what_the_sync_client_gives(served, demo_data):
    vectors, queries = demo_data["vectors"][:200], demo_data["queries"][:3]
    sync = needle.Client(served.url)
    async with needle.AsyncClient(served.url) as client:
        assert repr(client) == f"AsyncClient({served.url!r})"
        c = await client.create_collection("docs", 384, m=8, ef_construction=40)
        assert c.dimension == 384 and c.distance == needle.DistanceFunction.Cosine and c.config.m == 8
        await c.insert_many([f"d{i}" for i in range(200)], vectors, [{"n": i} for i in range(200)])
        await c.insert("extra", vectors[0] * 0.5, {"n": -1})
        await c.upsert("d1", vectors[2], {"n": 1, "moved": True})
        assert await c.delete(["d3", "missing"]) == 1
        await c.update_metadata("d4", {"n": 4, "tag": "x"})
        sc = sync.collection("docs")  # the same collection through the synchronous Client
        assert (await client.get_or_create_collection("docs", 384, m=8)).config == sc.config
        assert await client.list_collections() == sync.list_collections() == ["docs"]
        assert await c.count() == len(sc) == 200 and await c.count({"n": {"$lt": 50}}) == sc.count({"n": {"$lt": 50}})
        assert await c.contains("d1") and not await c.contains("d3") and not await c.contains(5)
        assert await c.get("d1") == sc.get("d1") and await c.get("nope", None) is None
        assert await c.get_many(["d4", "nope", "d1"]) == sc.get_many(["d4", "nope", "d1"])
        assert await c.find({"n": {"$gte": 10}}, 5, 3) == sc.find({"n": {"$gte": 10}}, 5, 3)
        assert [i async for i in c.ids({"n": {"$lt": 20}})] == list(sc.ids({"n": {"$lt": 20}}))
        assert [e async for e in c] == list(sc)
        assert await c.peek(4) == sc.peek(4)
        async with contextlib.aclosing(c.ids()) as walk:  # left early, closed at once
            async for first in walk:
                break
        assert first == next(iter(sc.ids()))
        for q in queries:
            same_hits(await c.search(q, 7), sc.search(q, 7))
        for a, b in zip(await c.search_batch(queries, 4, {"n": {"$lt": 100}}, ef=60),
                        sc.search_batch(queries, 4, {"n": {"$lt": 100}}, ef=60)):
            same_hits(a, b)
        hit = (await c.search(queries[0], 1, include_vector=True))[0]
        assert np.array_equal(hit.vector, sc.get(hit.id).vector)
        for got, want in [(await c.search(queries[0], 300, as_arrays=True), sc.search(queries[0], 300, as_arrays=True)),
                          (await c.search_batch(queries, 3, as_arrays=True), sc.search_batch(queries, 3, as_arrays=True))]:
            for g, w in zip(got, want):
                assert g.dtype == w.dtype and g.shape == w.shape and np.array_equal(g, w)
        # the same errors
        with pytest.raises(needle.DuplicateIdError):
            await c.insert("d1", vectors[0])
        with pytest.raises(needle.InvalidVectorError, match="dimension"):
            await c.insert("new", vectors[0][:10])
        with pytest.raises(needle.FilterError):
            await c.search(queries[0], filter={"n": {"$bogus": 1}})
        with pytest.raises(needle.FilterError):
            [i async for i in c.ids({"$or": 5})]
        with pytest.raises(needle.RecordNotFoundError):
            await c.get("nope")
        with pytest.raises(needle.CollectionNotFoundError):
            await client.collection("nope")
        with pytest.raises(needle.CollectionNotFoundError):
            [e async for e in needle.remote.async_client.AsyncRemoteCollection(client, "nope")]
        with pytest.raises(needle.CollectionExistsError, match="dimension is 384, not 3"):
            await client.get_or_create_collection("docs", 3)
        with pytest.raises(needle.InvalidConfigError):
            await client.create_collection("bad", 0)
        assert await c.count() == 200  # nothing changed by the failures
        generation = await client.generation()
        assert generation == sync.generation
        await client.save()
        await client.drop_collection("docs")
        assert await client.list_collections() == []
    sync.close()


@pytest.mark.asyncio
async def test_async_transactions_commit_all_or_nothing(served):
    async with needle.AsyncClient(served.url) as client:
        async with client.transaction() as tx:
            c = await client.create_collection("tx", 2)
            await c.insert_many(["a", "b"], [[1, 0], [0, 1]])
            assert await c.delete("b") is None
            assert "tx" not in await client.list_collections()  # reads do not see the block's writes
            with pytest.raises(needle.TransactionError):
                c.config  # created when the block ends
        assert tx.results[1:] == [None, 1] and tx.results[0].config.dimension == 2
        c = await client.collection("tx")
        assert [i async for i in c.ids()] == ["a"]
        with pytest.raises(KeyError):
            async with client.transaction():
                await c.insert("c", [1, 1])
                raise KeyError("nothing is sent")
        with pytest.raises(needle.DuplicateIdError, match="write 2 of 2"):
            async with client.transaction():
                await c.insert("d", [1, 1])
                await c.insert("a", [1, 1])
        assert await c.get_many(["c", "d"]) == [None, None] and await c.count() == 1
        async with client.transaction():
            with pytest.raises(needle.TransactionError, match="do not nest"):
                async with client.transaction():
                    pass
            with pytest.raises(needle.TransactionError):
                await client.save()


@pytest.mark.asyncio
async def test_async_connection_failures_raise_server_unavailable():
    url = f"http://127.0.0.1:{free_port()}"
    async with needle.AsyncClient(url, timeout=5) as client:
        with pytest.raises(needle.ServerUnavailableError, match=f"cannot reach a Needle server at {url}"):
            await client.list_collections()
        with pytest.raises(needle.ServerUnavailableError, match=url):
            [i async for i in needle.remote.async_client.AsyncRemoteCollection(client, "x").ids()]
    hangup = _Hangup()  # accepts, then closes without answering
    try:
        async with needle.AsyncClient(hangup.url, timeout=5) as client:
            with pytest.raises(needle.ServerUnavailableError, match=f"{hangup.url} did not answer"):
                await client.collection("x")
    finally:
        hangup.close()
    with pytest.raises(needle.InvalidArgumentError, match="http"):
        needle.AsyncClient("ftp://example")


def test_clients_are_imported_lazily_and_a_missing_httpx_says_what_to_install():
    out = run_python("""
        import sys
        import needle, needle_mm
        loaded = [m for m in sys.modules if m == "httpx" or m.startswith(("httpx.", "needle_mm.remote"))]
        print("loaded:", loaded)
        print("exported:", {"Client", "AsyncClient"} <= set(needle_mm.__all__) <= set(dir(needle_mm)))
        print("client:", needle.Client.__module__, "httpx" in sys.modules)
        sys.modules["httpx"] = None  # as if the extra were not installed
        try:
            needle.AsyncClient("http://127.0.0.1:1")
        except ImportError as exc:
            print("error:", exc)
    """)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:3] == ["loaded: []", "exported: True", "client: needle_mm.remote.client False"]
    assert lines[3].startswith("error: ") and 'pip install "needle_mm[async]"' in lines[3]


@pytest.mark.asyncio
async def test_async_writes_are_sent_once_and_reads_resent_once():
    """A connection that drops before the answer: a write is not sent again (it may have
    been applied: the error says so), a read is sent once more on a fresh connection."""
    fake = _Scripted([(200, DESCRIBED), "drop"], [(200, {"count": 0}), "drop"], [(200, {"count": 7})],
                     [(409, {"error": "DuplicateIdError", "message": "id 'x' already exists"})])
    async with needle.AsyncClient(fake.url, timeout=10) as client:
        c = await client.collection("c")
        with pytest.raises(needle.ServerUnavailableError, match="did not answer.*may or may not have been applied"):
            await c.insert("x", [1, 2, 3])
        assert await c.count() == 0
        assert await c.count() == 7  # its connection dropped: sent again, on the next one
    fake.close()
    assert fake.requests == [(0, "GET /collections/c HTTP/1.1"), (0, "POST /collections/c/insert HTTP/1.1"),
                             (1, "POST /collections/c/count HTTP/1.1"), (1, "POST /collections/c/count HTTP/1.1"),
                             (2, "POST /collections/c/count HTTP/1.1")]


@pytest.mark.asyncio
async def test_a_closed_async_client_says_so(served):
    client = needle.AsyncClient(served.url)
    c = await client.create_collection("closing", 2)
    await client.aclose()
    for coro in (lambda: client.list_collections(), lambda: client.collection("closing"), lambda: c.count(),
                 lambda: c.insert("a", [1, 0]), lambda: c.peek(1), lambda: client.generation()):
        with pytest.raises(needle.DatabaseClosedError, match=f"this AsyncClient of {served.url} is closed"):
            await coro()
    with pytest.raises(needle.DatabaseClosedError):
        [i async for i in c.ids()]
    sync = needle.Client(served.url)
    sync.drop_collection("closing")
    sync.close()


@pytest.mark.asyncio
async def test_async_names_numbers_and_sparse_vectors_as_embedded(served, tmp_path):
    async with needle.AsyncClient(served.url) as client:
        for i, name in enumerate(NAMES):  # httpx resolves '.' and '..' segments: the client encodes them
            c = await client.create_collection(name, 3)
            await c.insert("r", [1, 0, i])
            assert name in await client.list_collections()
            assert (await (await client.collection(name)).get("r")).vector.tolist() == [1, 0, i]
            assert [i async for i in c.ids()] == ["r"] and await c.count() == 1
            await client.drop_collection(name)
            assert name not in await client.list_collections()
        c = await client.create_collection("async-odd", 3)
        await c.insert_many(["a", "b"], [[1, 0, 0], [0, 1, 0]])
        s = await client.create_collection("async-odd-sparse", 10, "dot", sparse=True)
        await s.insert("x", needle.SparseVector([1, 4], [1.0, 2.0]))
        assert [r.id for r in await s.search(needle.SparseVector([4], [1.0]), k=10**20)] == ["x"]
        assert [r.id for r in await c.search([1, 0, 0], k=10**20, ef=2**64)] == ["a", "b"]
        assert len(await c.find(limit=10**20)) == 2 and await c.find(offset=10**20) == [] and len(await c.peek(10**20)) == 2
        embedded = needle.Database.open(str(tmp_path / "embedded.needle"), autocommit=True)
        e = embedded.create_collection("async-odd", 3)
        e.insert_many(["a", "b"], [[1, 0, 0], [0, 1, 0]])
        cases = {"delete([1])": lambda c: c.delete([1]),
                 "exact=None": lambda c: c.search([1, 0, 0], k=1, exact=None),
                 "ef=inf": lambda c: c.search([1, 0, 0], ef=float("inf")),
                 "query 'abc'": lambda c: c.search("abc"),
                 "peek(None)": lambda c: c.peek(None),
                 "insert wrong dimension": lambda c: c.insert("x", [1, 2]),
                 "insert_many vectors None": lambda c: c.insert_many(["x"], None)}
        for label, fn in cases.items():
            want = _outcome(lambda: fn(e))
            try:
                got = "ok", await fn(c)
            except needle.NeedleError as exc:
                got = type(exc).__name__, str(exc).split(" (HTTP ")[0]
            assert repr(got) == repr(want), label
        with pytest.raises(needle.InvalidConfigError) as err:
            await client.create_collection("z", 3, foo=1)
        assert _outcome(lambda: embedded.create_collection("z", 3, foo=1)) == ("InvalidConfigError", str(err.value))
        embedded.close()
        await client.drop_collection("async-odd")
        await client.drop_collection("async-odd-sparse")



@pytest.mark.asyncio
async def test_async_text_hybrid_and_rescore_give_what_the_sync_client_gives(served, sentences):
    """search(text=...), hybrid search with scores, batches of texts, fusion options,
    create_text_index, a collection created with text_field and one with quantization
    searched with rescore: the AsyncClient answers what the Client answers."""
    texts, vectors, query_texts, query_vectors = sentences
    sync = needle.Client(served.url)
    async with needle.AsyncClient(served.url) as client:
        c = await client.create_collection("async-text", 384, text_field="document", quantization="int8")
        assert c.config.text_field == "document" and c.config.quantization == "int8"
        await c.insert_many([f"a{i}" for i in range(600)], vectors[:600],
                            [{"document": t, "odd": i % 2} for i, t in enumerate(texts[:600])])
        sc = sync.collection("async-text")
        assert c.config == sc.config
        for q in ["the movie was funny", "great battery life", *query_texts[:2]]:
            same_scored_hits(await c.search(text=q, k=8), sc.search(text=q, k=8))
            same_scored_hits(await c.search(text=q, k=4, filter={"odd": 1}), sc.search(text=q, k=4, filter={"odd": 1}))
        for fusion in ("rrf", {"method": "weighted", "alpha": 0.3}):
            got = await c.search(query_vectors[0], text=query_texts[0], k=6, fusion=fusion, candidates=25, exact=True)
            same_scored_hits(got, sc.search(query_vectors[0], text=query_texts[0], k=6, fusion=fusion, candidates=25,
                                     exact=True))
            assert got and all(set(h.scores) == {"vector", "text"} for h in got)
        same_scored_hits(await c.search_batch(texts=query_texts[:3], k=5), sc.search_batch(texts=query_texts[:3], k=5))
        same_scored_hits(await c.search_batch(query_vectors[:3], texts=query_texts[:3], k=5, rescore=0),
                  sc.search_batch(query_vectors[:3], texts=query_texts[:3], k=5, rescore=0))
        ids, distances = await c.search_batch(texts=query_texts[:3], k=5, as_arrays=True)
        want = sc.search_batch(texts=query_texts[:3], k=5, as_arrays=True)
        assert ids.tolist() == want[0].tolist() and np.array_equal(distances, want[1])
        for rescore in (0, 3):
            same_scored_hits(await c.search(query_vectors[1], 10, rescore=rescore), sc.search(query_vectors[1], 10,
                                                                                       rescore=rescore))
        late = await client.create_collection("async-late", 384)
        await late.insert_many(["x", "y"], vectors[:2], [{"body": texts[0]}, {"body": texts[1]}])
        await late.create_text_index("body", stop_words="english")
        assert late.config.text_field == "body" and late.config == sync.collection("async-late").config
        assert [h.id for h in await late.search(text=texts[1], k=1)] == ["y"]
        # the same errors as the sync client (which gives the embedded ones: test_server)
        cases = {"fusion max": lambda c: c.search(query_vectors[0], text="x", fusion="max"),
                 "candidates 0": lambda c: c.search(query_vectors[0], text="x", candidates=0),
                 "text 3": lambda c: c.search(text=3),
                 "texts str": lambda c: c.search_batch(texts="x"),
                 "texts per query": lambda c: c.search_batch(query_vectors[:2], texts=["x"]),
                 "rescore -1": lambda c: c.search(query_vectors[0], rescore=-1),
                 "no query": lambda c: c.search(),
                 "create_text_index other": lambda c: c.create_text_index("other"),
                 "create_text_index colour": lambda c: c.create_text_index("document", colour=1)}
        for label, fn in cases.items():
            want = _outcome(lambda: fn(sc))
            try:
                got = "ok", await fn(c)
            except needle.NeedleError as exc:
                got = type(exc).__name__, str(exc).split(" (HTTP ")[0]
            assert got == want and got[0] == "InvalidArgumentError", label
        await client.drop_collection("async-text")
        await client.drop_collection("async-late")
    sync.close()
