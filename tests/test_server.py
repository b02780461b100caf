"""`needle serve` and `needle_mm.Client`, against a real server process on loopback:
the client mirrors the embedded API (same results, same errors), workers share
the file, the safe defaults hold, and fuzzing the OpenAPI document never gets a 5xx."""

from __future__ import annotations

import http.client
import os
import select
import socket
import subprocess
import sys
import threading

import numpy as np
import orjson
import pytest
import schemathesis
from conftest import ROOT
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import needle_mm as needle
from needle_mm.remote.client import RemoteCollection


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``needle serve`` in a child process; started once it printed its one line on stderr."""

    def __init__(self, path: str, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("NEEDLE_API_KEY", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "needle_mm", "serve", path, "--port", str(self.port),
                                      *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # serve() prints its line once /health answers: no polling here
        # (generous: with --workers the parent first loads the engine and its kernels, compiling them if the cache is cold)
        ready, _, _ = select.select([self.proc.stderr], [], [], 600)
        self.banner = self.proc.stderr.readline().strip() if ready else ""
        if not self.banner.startswith("needle: serving "):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {self.banner}{self.proc.communicate()[1]}")

    def raw(self, method: str, path: str, body: bytes | list | None = None, key: str | None = None,
            headers: dict | None = None) -> tuple[int, dict]:
        """One request; a list body is sent chunked (no Content-Length)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = {"Content-Type": "application/json", **(headers or {})}
        if key:
            h["Authorization"] = f"Bearer {key}"
        chunked = isinstance(body, list)
        if chunked:
            h["Transfer-Encoding"] = "chunked"
        conn.request(method, path, body=iter(body) if chunked else body, headers=h, encode_chunked=chunked)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, orjson.loads(data) if data else {}

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


@pytest.fixture
def server(tmp_path):
    srv = Server(str(tmp_path / "served.needle"))
    yield srv
    err = srv.stop()
    assert "Traceback" not in err, err


def same_results(a, b):
    assert [r.id for r in a] == [r.id for r in b]
    assert [r.distance for r in a] == pytest.approx([r.distance for r in b], abs=1e-6)
    assert [r.metadata for r in a] == [r.metadata for r in b]


def test_client_mirrors_the_embedded_api(server, tmp_path, demo_data):
    vectors, queries = demo_data["vectors"][:500], demo_data["queries"][:5]
    metas = [{"source": s, "n": i} for i, s in enumerate(demo_data["sources"][:500])]
    remote = needle.Client(server.url)
    local = needle.Database.open(str(tmp_path / "local.needle"))
    for db in (remote, local):
        c = db.create_collection("docs", 384, m=8, ef_construction=64)
        c.insert_many([f"d{i}" for i in range(500)], vectors, metas)
        c.upsert("d3", vectors[4], {"source": "x"})
        assert c.delete(["d7", "d8", "missing"]) == 2
        c.update_metadata("d9", {"n": -1})
        s = db.create_collection("terms", 1000, "dot", sparse=True)
        s.insert_many(["t1", "t2"], [{1: 1.0, 5: 2.0}, {"indices": [5, 9], "values": [0.5, 1.0]}])
        db.create_collection("half", 3, "euclidean", dtype="f16").insert("h", [0.1, 2.0, -3.3])
        db.save()
    rc, lc = remote.collection("docs"), local.collection("docs")
    assert rc.config == lc.config and rc.dimension == 384 and rc.distance == needle.DistanceFunction.Cosine
    assert remote.list_collections() == local.list_collections() == ["docs", "half", "terms"]
    rh, lh = remote.collection("half"), local.collection("half")
    assert rh.config == lh.config and rh.config.dtype == "f16" and rh.get("h") == lh.get("h")
    assert rh.get("h").vector.tolist() == np.float16([0.1, 2.0, -3.3]).astype(np.float32).tolist()
    same_results(rh.search([0, 2, -3], 1), lh.search([0, 2, -3], 1))
    assert len(rc) == len(lc) == 498 and rc.count({"n": {"$gte": 250}}) == lc.count({"n": {"$gte": 250}})
    assert rc.find({"source": "x"}) == lc.find({"source": "x"}) and rc.find(limit=3) == lc.find(limit=3)
    assert rc.get("d3") == lc.get("d3") and "d7" not in rc and "d9" in rc
    assert rc.get("d7", None) is None
    for q in queries:
        same_results(rc.search(q, 10), lc.search(q, 10))
        same_results(rc.search(q, 5, filter={"n": {"$lt": 100}}, exact=True),
                     lc.search(q, 5, filter={"n": {"$lt": 100}}, exact=True))
    for a, b in zip(rc.search_batch(queries, 3, ef=100), lc.search_batch(queries, 3, ef=100)):
        same_results(a, b)
    hit = rc.search(queries[0], 1, include_vector=True)[0]
    assert np.array_equal(hit.vector, lc.get(hit.id).vector)
    same_results(remote.collection("terms").search({5: 1.0}), local.collection("terms").search({5: 1.0}))
    assert remote.collection("terms").get("t2") == local.collection("terms").get("t2")
    # the same errors, by class
    for db in (remote, local):
        c = db.collection("docs")
        with pytest.raises(needle.DuplicateIdError):
            c.insert("d1", vectors[0])
        with pytest.raises(needle.InvalidVectorError, match="dimension"):
            c.insert("new", vectors[0][:10])
        with pytest.raises(needle.FilterError, match=r"\$bogus"):
            c.search(queries[0], filter={"n": {"$bogus": 1}})
        with pytest.raises(needle.RecordNotFoundError):
            c.get("nope")
        with pytest.raises(needle.CollectionNotFoundError):
            db.collection("nope")
        with pytest.raises(needle.CollectionExistsError):
            db.create_collection("docs", 3)
        assert c.count() == 498  # nothing changed by the failures
    remote.drop_collection("terms")
    assert remote.list_collections() == ["docs", "half"]
    local.close()


def test_the_readme_client_snippet_runs_against_a_server(server):
    import re

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        section = f.read().split("## The optional server", 1)[1]
    code = re.search(r"```py\n(.*?)```", section, re.S).group(1)
    assert "needle.Client(" in code
    client = needle.Client(server.url)
    client.create_collection("docs", 384).insert_many(
        ["a", "b"], np.full((2, 384), 0.1, np.float32), [{"category": "books"}, {"category": "food"}])
    scope: dict = {}
    exec(compile(code.replace("http://127.0.0.1:8000", server.url), "README.md", "exec"), scope)
    assert [h.id for h in scope["hits"]] == ["a"]
    client.close()
    scope["db"].close()


def test_workers_share_the_file_and_every_write_is_committed(tmp_path):
    path = str(tmp_path / "shared.needle")
    srv = Server(path, "--workers", "2")
    try:
        client = needle.Client(srv.url)
        c = client.create_collection("log", 8)
        rng = np.random.default_rng(0)

        def writer(t: int):
            mine = needle.Client(srv.url)  # own connections: requests spread over both workers
            coll = mine.collection("log")
            for i in range(15):
                coll.insert(f"t{t}-{i}", rng.random(8), {"t": t})
                assert f"t{t}-{i}" in coll  # read right after the write, whichever worker answers
            mine.close()

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert c.count() == 60 and c.count({"t": 2}) == 15
        # the file itself holds them, committed: an embedded reader in this process sees all
        with needle.Database.open(path, read_only=True) as db:
            assert db.collection("log").count() == 60
    finally:
        err = srv.stop()
    assert "Traceback" not in err, err
    from needle_mm.ops.verify import verify_file

    assert verify_file(path).ok


def test_api_key_is_required_when_set_and_beyond_loopback(tmp_path):
    path = str(tmp_path / "k.needle")
    out = subprocess.run([sys.executable, "-m", "needle_mm", "serve", path, "--host", "0.0.0.0",
                          "--port", str(free_port())], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=ROOT, NEEDLE_API_KEY=""))
    assert out.returncode != 0 and "without an API key" in out.stderr
    srv = Server(path, "--api-key", "s3cret")
    try:
        assert srv.banner == f"needle: serving {path} at {srv.url} (API key required)"
        for path_ in ("/health", "/collections", "/openapi.json"):
            status, body = srv.raw("GET", path_)
            assert status == 401 and body["error"] == "Unauthorized"
        assert srv.raw("GET", "/collections", key="wrong")[0] == 401
        assert srv.raw("GET", "/collections", headers={"X-API-Key": "s3cret"})[0] == 200
        with pytest.raises(needle.NeedleError, match="401"):
            needle.Client(srv.url).list_collections()
        client = needle.Client(srv.url, api_key="s3cret")
        client.create_collection("c", 2).insert("a", [1.0, 0.0])
        assert client.collection("c").search([1.0, 0.0])[0].id == "a"
    finally:
        srv.stop()


def test_bad_requests_get_clear_4xx_errors_never_a_traceback(tmp_path):
    srv = Server(str(tmp_path / "b.needle"), "--max-body-mb", "0.05")
    try:
        assert srv.raw("POST", "/collections", orjson.dumps({"name": "c", "dimension": 3}))[0] == 201
        cases = [
            (b"{not json", 422),
            (orjson.dumps({"ids": ["a"], "vectors": [[1, 2]]}), 400),  # wrong dimension
            (orjson.dumps({"ids": ["a"], "vectors": [[1, 2, float("inf")]]}), 422),  # JSON has no inf -> null
            (orjson.dumps({"ids": ["a", "b"], "vectors": [[1, 2, 3]]}), 400),
            (orjson.dumps({"ids": [""], "vectors": [[1, 2, 3]]}), 400),
            (orjson.dumps({"ids": ["a"], "vectors": [{"indices": [1], "values": [1]}]}), 400),
            (orjson.dumps({"ids": ["a"], "vectors": [[1, 2, 3]], "extra": 1}), 422),
            (orjson.dumps({"ids": ["a"], "vectors": [[0.5] * 3]} | {"metadatas": [{"x": 1}] * 3}), 400),
            (orjson.dumps({"ids": [f"i{i}" for i in range(6000)], "vectors": [[1, 2, 3]] * 6000}), 413),
        ]
        for body, status in cases:
            got, reply = srv.raw("POST", "/collections/c/insert", body)
            assert got == status, (body[:80], reply)
            assert set(reply) == {"error", "message"} and reply["message"] and "Traceback" not in reply["message"]
        assert srv.raw("POST", "/collections/c/search", orjson.dumps({"k": 3}))[0] == 400  # no query
        assert srv.raw("POST", "/collections/c/search", orjson.dumps({"vector": [1, 0, 0], "k": -1}))[0] == 400
        assert srv.raw("POST", "/collections/c/search",
                       orjson.dumps({"vector": [1, 0, 0], "filter": {"$or": 5}}))[1]["error"] == "FilterError"
        assert srv.raw("POST", "/collections/nope/count", b"{}")[0] == 404
        assert srv.raw("POST", "/collections/c/count", b"{}")[1] == {"count": 0}  # nothing was stored
        status, body = srv.raw("POST", "/collections/c/insert", [b"x" * 30_000] * 4)  # chunked: no length
        assert status == 413 and body["error"] == "RequestTooLarge"
    finally:
        err = srv.stop()
    assert "Traceback" not in err, err


def test_fuzzing_the_openapi_document_never_gets_a_server_error(tmp_path):
    """schemathesis generates requests for every operation of the served OpenAPI
    document (hypothesis drives it directly, so no pytest plugin is involved)."""
    from hypothesis import given

    srv = Server(str(tmp_path / "fuzz.needle"))
    try:
        client = needle.Client(srv.url)
        client.create_collection("docs", 3, text_field="document").insert_many(
            ["a", "b", "c"], [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
            [{"x": 1, "document": "The cat sat on the mat"}, {"x": "y", "document": "Dogs chase cats"}, {"x": 2}])
        client.create_collection("terms", 50, "dot", sparse=True).insert("t", {1: 1.0})
        client.close()
        schema = schemathesis.openapi.from_url(srv.url + "/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 18
        for op in operations:
            @given(case=op.as_strategy(), aim=st.booleans())
            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def no_server_error(case, aim):
                if aim and case.path_parameters and "name" in case.path_parameters:
                    case.path_parameters["name"] = "docs"  # reach a real collection half the time
                response = case.call()
                assert response.status_code < 500, (case.method, case.path, case.body, response.text)
                if response.status_code >= 400:
                    assert set(response.json()) == {"error", "message"}, response.text

            no_server_error()
    finally:
        err = srv.stop()
    assert "Traceback" not in err, err


def test_requests_naming_a_foreign_host_are_refused(tmp_path):
    """DNS rebinding: a web page whose name resolves to 127.0.0.1 sends its own
    name as Host; a keyless loopback server must not act on it."""
    path = str(tmp_path / "served.needle")
    with needle.Database.open(path) as db:
        db.create_collection("c", 3).insert("a", [1, 0, 0])
    srv = Server(path)
    try:
        status, body = srv.raw("DELETE", "/collections/c", headers={"Host": "evil.example.com"})
        assert (status, body["error"]) == (400, "InvalidHost")
        assert srv.raw("POST", "/collections/c/count", b"{}", headers={"Host": "evil.example.com:8000"})[0] == 400
        for host in (f"127.0.0.1:{srv.port}", f"localhost:{srv.port}", "localhost"):
            assert srv.raw("POST", "/collections/c/count", b"{}", headers={"Host": host}) == (200, {"count": 1})
    finally:
        assert "Traceback" not in srv.stop()
    with needle.Database.open(path, read_only=True) as db:
        assert db.list_collections() == ["c"]  # the DELETE was not performed
    srv = Server(path, "--allowed-host", "vectors.internal")
    try:
        assert srv.raw("POST", "/collections/c/count", b"{}", headers={"Host": "vectors.internal:80"})[0] == 200
        assert srv.raw("POST", "/collections/c/count", b"{}", headers={"Host": "evil.example.com"})[0] == 400
    finally:
        assert "Traceback" not in srv.stop()


def test_health_and_reads_answer_while_a_write_waits_for_the_lock(tmp_path):
    """Writes run off the event loop: one waiting for another process's writer
    lock does not stop the worker from answering."""
    path = str(tmp_path / "served.needle")
    with needle.Database.open(path) as db:
        db.create_collection("c", 3).insert("a", [1, 0, 0])
    srv = Server(path)
    env = dict(os.environ, PYTHONPATH=ROOT)
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, needle_mm as needle\n"
                               "db = needle.Database.open(sys.argv[1])\n"
                               "with db.transaction(exclusive=True):\n"
                               "    print('locked', flush=True)\n"
                               "    sys.stdin.readline()\n", path],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    result = {}
    try:
        assert holder.stdout.readline().strip() == "locked"
        writing = threading.Thread(target=lambda: result.update(
            write=srv.raw("POST", "/collections/c/insert", orjson.dumps({"ids": ["b"], "vectors": [[0, 1, 0]]}))))
        writing.start()
        # The insert cannot finish while the lock is held, so these answers
        # prove the loop was free while the write waited.
        assert srv.raw("GET", "/health")[0] == 200
        assert srv.raw("POST", "/collections/c/count", b"{}") == (200, {"count": 1})
        assert writing.is_alive()
        holder.stdin.write("\n")
        holder.stdin.flush()
        writing.join(timeout=120)
        assert result["write"] == (200, {"written": 1})
        assert srv.raw("POST", "/collections/c/count", b"{}") == (200, {"count": 2})
    finally:
        holder.kill()
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()
        assert "Traceback" not in srv.stop()


def test_one_request_cannot_ask_for_unbounded_results(server):
    c = needle.Client(server.url).create_collection("c", 3)
    c.insert_many(["a", "b"], [[1, 0, 0], [0, 1, 0]])
    status, body = server.raw("POST", "/collections/c/search",
                              orjson.dumps({"vectors": [[1, 0, 0]] * 3, "k": 4096}))
    assert status == 400 and body["error"] == "InvalidArgumentError" and "--max-results" in body["message"]
    status, body = server.raw("POST", "/collections/c/search", orjson.dumps({"vectors": [[1, 0, 0]] * 2, "k": 4096}))
    assert status == 200 and [len(r) for r in body["results"]] == [2, 2]


# ---------------------------------------------------------------- the embedded API's newer verbs, over HTTP


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One server for the tests below (each uses collections of its own), on a file an
    embedded read-only Database in this process reads too."""
    path = str(tmp_path_factory.mktemp("shared") / "shared.needle")
    srv = Server(path)
    assert srv.banner == f"needle: serving {path} at {srv.url} (no API key required)"
    client = needle.Client(srv.url)
    local = needle.Database.open(path, read_only=True)
    yield srv, client, local
    client.close()
    local.close()
    err = srv.stop()
    assert "Traceback" not in err, err


def test_new_verbs_give_what_the_embedded_api_gives_on_the_same_file(shared, demo_data, tmp_path):
    srv, client, local = shared
    vectors = demo_data["vectors"][:300]
    rc = client.create_collection("verbs", 384, m=8, ef_construction=40, seed=3)
    rc.insert_many([f"v{i}" for i in range(300)], vectors, [{"n": i, "odd": i % 2} for i in range(300)])
    rc.delete(["v5", "v6"])
    rc.upsert("v7", vectors[8], {"n": -7})
    sparse = client.create_collection("verbs-sparse", 100, "dot", sparse=True)
    sparse.insert_many(["s1", "s2"], [{3: 1.0, 9: 0.5}, {9: 2.0}])
    lc = local.collection("verbs")  # the embedded reader follows the server's commits (auto_refresh)
    # get_or_create_collection / exist_ok: a match returns the collection, a mismatch names each difference
    assert client.get_or_create_collection("verbs", 384, m=8).config == lc.config
    assert client.create_collection("verbs", 384, "cosine", seed=3, exist_ok=True).name == "verbs"
    with pytest.raises(needle.CollectionExistsError) as remote_err:
        client.get_or_create_collection("verbs", 128, "dot", m=16, dtype="f16")
    scratch = needle.Database.open(str(tmp_path / "embedded.needle"))
    scratch.create_collection("verbs", 384, m=8, ef_construction=40, seed=3)
    with pytest.raises(needle.CollectionExistsError) as local_err:
        scratch.get_or_create_collection("verbs", 128, "dot", m=16, dtype="f16")
    scratch.close()
    assert str(remote_err.value).startswith(str(local_err.value) + " (HTTP 409")
    assert "dimension is 384, not 128" in str(remote_err.value) and "m is 8, not 16" in str(remote_err.value)
    created = client.get_or_create_collection("verbs-new", 4, "l2", ef_search=20)
    assert created.config == local.collection("verbs-new").config and created.config.ef_search == 20
    # reads
    wanted = ["v3", "missing", "v7", "v5", "v3"]
    assert rc.get_many(wanted) == lc.get_many(wanted) and rc.get_many(wanted)[1] is None
    assert rc.get_many([]) == []
    for args in [((), {}), (({"odd": 1},), {"limit": 7, "offset": 5}), ((None, 3), {"offset": 290}),
                 (({"n": {"$gte": 100}},), {"offset": 1000})]:
        assert rc.find(*args[0], **args[1]) == lc.find(*args[0], **args[1])
    assert list(rc.ids()) == list(lc.ids()) and len(list(rc.ids())) == 298
    assert list(rc.ids({"odd": 0})) == list(lc.ids({"odd": 0}))
    assert list(rc) == list(lc)
    assert rc.peek() == lc.peek() and rc.peek(3) == lc.peek(3) and rc.peek(0) == [] and len(rc.peek(1000)) == 298
    assert list(sparse) == list(local.collection("verbs-sparse"))
    # as_arrays: the same arrays, the same dtypes and shapes, None and inf past the last hit
    queries = demo_data["queries"][:4]
    for k, flt in [(5, None), (10, {"n": {"$lt": 3}}), (0, None), (5000, None)]:
        got, want = rc.search(queries[0], k, flt, as_arrays=True), lc.search(queries[0], k, flt, as_arrays=True)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape and np.array_equal(g, w), (k, flt)
        got = rc.search_batch(queries, k, flt, ef=80, as_arrays=True)
        want = lc.search_batch(queries, k, flt, ef=80, as_arrays=True)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape and np.array_equal(g, w), (k, flt)
    ids, distances = rc.search(queries[0], 10, {"n": {"$lt": 3, "$gte": 0}}, as_arrays=True)
    assert list(ids[3:]) == [None] * 7 and np.isinf(distances[3:]).all() and distances.dtype == np.float32
    ids, _ = rc.search_batch(queries[:0], 3, as_arrays=True)
    assert ids.shape == lc.search_batch(queries[:0], 3, as_arrays=True)[0].shape == (0, 3)
    for got, want in zip(sparse.search({9: 1.0}, 4, as_arrays=True),
                         local.collection("verbs-sparse").search({9: 1.0}, 4, as_arrays=True)):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    # the same errors, raised by both
    for c in (rc, lc):
        with pytest.raises(needle.InvalidArgumentError, match="include_vector"):
            c.search(queries[0], as_arrays=True, include_vector=True)
        with pytest.raises(needle.InvalidArgumentError, match="get_many takes a list"):
            c.get_many("v1")
        with pytest.raises(needle.InvalidIdError):
            c.get_many(["v1", 7])
        with pytest.raises(needle.InvalidArgumentError, match="offset must be"):
            c.find(offset=-1)
        with pytest.raises(needle.InvalidArgumentError, match="n must be"):
            c.peek(-1)
        with pytest.raises(needle.FilterError):
            list(c.ids({"n": {"$bogus": 1}}))
        with pytest.raises(needle.InvalidVectorError, match="NaN"):
            c.search([float("nan")] * 384)
    status, body = srv.raw("POST", "/collections/verbs/ids", orjson.dumps({"filter": {"n": {"$bogus": 1}}}))
    assert (status, body["error"]) == (400, "FilterError")  # the server refuses it too, before streaming
    with pytest.raises(needle.CollectionNotFoundError):
        list(RemoteCollection(client, "nope").ids())


def test_a_remote_walk_reads_one_generation(shared):
    """ids() and iteration are one streamed request: records committed after the walk
    started are not seen, records deleted after it started still are."""
    _, client, local = shared
    c = client.create_collection("walk", 2, "l2")
    c.insert_many([f"w{i}" for i in range(3000)], np.random.default_rng(1).random((3000, 2)))
    walk, records = c.ids(), iter(c)
    first, first_record = next(walk), next(records)
    c.insert("late", [0.5, 0.5])
    c.delete(["w2999"])
    rest = list(walk)
    assert [first, *rest] == [f"w{i}" for i in range(3000)]
    assert [first_record.id, *(e.id for e in records)] == [f"w{i}" for i in range(3000)]
    assert "late" in list(c.ids()) and "w2999" not in list(c.ids())
    assert list(c.ids()) == list(local.collection("walk").ids())
    unfinished = c.ids()
    next(unfinished)
    unfinished.close()  # a walk left early frees its connection; the client goes on
    assert c.count() == 3000


def test_client_transaction_commits_all_at_the_end(shared):
    _, client, local = shared
    with client.transaction() as tx:
        orders = client.create_collection("orders", 2)
        orders.insert("o1", [1, 0], {"state": "new"})
        orders.insert_many(["o2", "o3"], [[0, 1], [1, 1]])
        orders.update_metadata("o1", {"state": "paid"})
        assert orders.delete(["o3"]) is None  # buffered: the count comes with the commit
        assert len(tx) == 5 and tx.results is None
        assert "orders" not in client.list_collections()  # reads do not see the block's writes
    assert tx.results[0].name == "orders" and tx.results[1:] == [None, None, None, 1]
    assert sorted(orders.ids()) == ["o1", "o2"] and orders.get("o1").metadata == {"state": "paid"}
    assert local.collection("orders").count() == 2  # committed: in the file
    with client.transaction() as tx:
        pass
    assert tx.results == []
    vector = np.array([1.0, 1.0])
    with client.transaction(exclusive=True):
        orders.upsert("o2", vector, {"state": "moved"})
        vector[:] = 9  # the write was taken when it was made, as an embedded write is
    assert orders.get("o2").vector.tolist() == [1.0, 1.0]
    with client.transaction():
        with pytest.raises(needle.TransactionError, match="do not nest"):
            with client.transaction():
                pass
        with pytest.raises(needle.TransactionError):
            client.save()


def test_client_transaction_sends_nothing_if_the_block_raises(shared):
    _, client, local = shared
    c = client.create_collection("rollback", 2)
    generation = client.generation
    with pytest.raises(RuntimeError, match="changed my mind"):
        with client.transaction():
            c.insert("a", [1, 0])
            client.drop_collection("rollback")
            raise RuntimeError("changed my mind")
    assert client.generation == generation and client.list_collections().count("rollback") == 1
    assert c.count() == 0
    c.insert("a", [1, 0])  # after the block, writes are sent at once again
    assert "a" in c


def test_client_transaction_is_all_or_nothing_on_the_server(shared):
    _, client, local = shared
    c = client.create_collection("atomic", 2)
    c.insert("taken", [1, 0])
    generation = client.generation
    with pytest.raises(needle.DuplicateIdError, match=r"write 2 of 3 \(insert 'atomic'\).*'taken' already exists"):
        with client.transaction() as tx:
            c.insert("first", [0, 1])
            c.insert("taken", [1, 1])
            client.create_collection("atomic-side", 3)
    assert tx.results is None
    assert "first" not in c and "atomic-side" not in client.list_collections()
    assert client.generation == generation
    with pytest.raises(needle.InvalidVectorError, match="dimension"):  # found by the server, at the end
        with client.transaction():
            c.upsert("fine", [0.5, 0.5])
            c.upsert("bad", [1, 2, 3])
    assert "fine" not in c and local.collection("atomic").count() == 1


class _Hangup:
    """A loopback listener that accepts each connection and closes it without answering."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                conn.recv(65536)

    def close(self):
        self.stopping.set()
        self.thread.join(timeout=5)
        self.sock.close()


def test_connection_failures_raise_server_unavailable_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = needle.Client(url, timeout=5)
    with pytest.raises(needle.ServerUnavailableError, match=f"cannot reach a Needle server at {url}") as err:
        client.list_collections()
    assert isinstance(err.value, ConnectionError) and isinstance(err.value, needle.NeedleError)
    with pytest.raises(needle.ServerUnavailableError, match=url):
        list(RemoteCollection(client, "x").ids())
    hangup = _Hangup()
    try:
        with pytest.raises(needle.ServerUnavailableError, match=f"{hangup.url} did not answer"):
            needle.Client(hangup.url, timeout=5).collection("x")
    finally:
        hangup.close()
    client.close()


# ---------------------------------------------------------------- a write is sent once; reads may be resent


class _Scripted:
    """A loopback HTTP/1.1 server answering from a script: one list of steps per connection
    accepted, each step for one request: ``(status, body)`` answers it (keep-alive),
    ``"drop"`` reads it and closes the connection without answering (a server dying
    mid-request), ``("close", status, body)`` answers it and then closes the connection
    (a keep-alive the server ends while the client holds it idle). Every request line is
    recorded in ``requests``, with the number of the connection it came on."""

    def __init__(self, *connections):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[tuple[int, str]] = []
        self.thread = threading.Thread(target=self._serve, args=(connections,), daemon=True)
        self.thread.start()

    @staticmethod
    def _read(conn) -> str | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        length = next((int(h.split(":", 1)[1]) for h in lines[1:] if h.lower().startswith("content-length:")), 0)
        while len(body) < length:
            body += conn.recv(65536)
        return lines[0]

    def _serve(self, connections):
        self.sock.settimeout(3)
        for n, steps in enumerate(connections):
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:  # the client did not come back for this one
                return
            with conn:
                conn.settimeout(10)
                for step in steps:
                    line = self._read(conn)
                    if line is None:
                        break
                    self.requests.append((n, line))
                    if step == "drop":
                        break
                    *close, status, body = step
                    raw = orjson.dumps(body)
                    conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                                 % (status, len(raw)) + raw)
                    if close:
                        break

    def close(self):
        self.thread.join(timeout=10)
        self.sock.close()


DESCRIBED = {"name": "c", "dimension": 3, "distance": "cosine", "sparse": False, "dtype": "f32", "m": 16,
             "ef_construction": 200, "ef_search": 64, "seed": 0, "count": 0}


def test_a_write_whose_answer_did_not_arrive_is_not_sent_again():
    """The server took the insert on a kept-alive connection and died before answering:
    the client must not send it again (the retry would apply it twice, or report a
    DuplicateIdError for a write that was applied), and says it may have been applied."""
    duplicate = (409, {"error": "DuplicateIdError", "message": "id 'x' already exists"})
    fake = _Scripted([(200, DESCRIBED), "drop"], [(200, {"count": 0}), "drop"], [duplicate, duplicate])
    client = needle.Client(fake.url, timeout=10)
    c = client.collection("c")
    with pytest.raises(needle.ServerUnavailableError, match="did not answer.*may or may not have been applied"):
        c.insert("x", [1, 2, 3])
    assert c.count() == 0
    with pytest.raises(needle.ServerUnavailableError, match="may or may not have been applied"):
        with client.transaction():
            c.insert("y", [1, 2, 3])
    client.close()
    fake.close()
    assert fake.requests == [(0, "GET /collections/c HTTP/1.1"), (0, "POST /collections/c/insert HTTP/1.1"),
                             (1, "POST /collections/c/count HTTP/1.1"), (1, "POST /transaction HTTP/1.1")]


def test_a_read_whose_connection_dropped_is_sent_again_once():
    fake = _Scripted([(200, DESCRIBED), "drop"], [(200, {"count": 7})])
    client = needle.Client(fake.url, timeout=10)
    assert client.collection("c").count() == 7
    client.close()
    fake.close()
    assert fake.requests == [(0, "GET /collections/c HTTP/1.1"), (0, "POST /collections/c/count HTTP/1.1"),
                             (1, "POST /collections/c/count HTTP/1.1")]


def test_a_keep_alive_the_server_closed_is_not_used_for_a_write():
    """The server ended the kept-alive connection while it was idle: the write goes, once,
    on a new connection, and succeeds."""
    import time

    fake = _Scripted([("close", 200, DESCRIBED)], [(200, {"written": 1})])
    client = needle.Client(fake.url, timeout=10)
    c = client.collection("c")
    time.sleep(0.2)  # the server's close has arrived
    assert c.insert("x", [1, 2, 3]) is None
    client.close()
    fake.close()
    assert fake.requests == [(0, "GET /collections/c HTTP/1.1"), (1, "POST /collections/c/insert HTTP/1.1")]


def test_a_closed_client_says_so():
    fake = _Scripted([(200, DESCRIBED)])
    with needle.Client(fake.url, timeout=10) as client:
        c = client.collection("c")
    for fn in (client.list_collections, lambda: client.collection("c"), c.count, lambda: c.insert("x", [1, 2, 3]),
               lambda: list(c.ids()), lambda: c.peek(2)):
        with pytest.raises(needle.DatabaseClosedError, match=f"this Client of {fake.url} is closed"):
            fn()
    fake.close()
    assert fake.requests == [(0, "GET /collections/c HTTP/1.1")]


# ---------------------------------------------------------------- what the embedded API takes, the server takes


def test_counts_beyond_64_bits_and_hand_built_sparse_vectors_work_as_embedded(shared):
    _, client, local = shared
    rc = client.create_collection("huge", 3)
    rc.insert_many(["a", "b", "c"], [[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    lc = local.collection("huge")
    for big in (2**63, 2**64, 10**20):
        assert [r.id for r in rc.search([1, 0, 0], k=big)] == [r.id for r in lc.search([1, 0, 0], k=big)] == ["a", "c", "b"]
        assert [r.id for r in rc.search([1, 0, 0], k=2, ef=big)] == [r.id for r in lc.search([1, 0, 0], k=2, ef=big)]
        got, want = rc.search([1, 0, 0], k=big, as_arrays=True), lc.search([1, 0, 0], k=big, as_arrays=True)
        assert got[0].tolist() == want[0].tolist() and got[1].shape == want[1].shape == (3,)
        assert rc.find(limit=big) == lc.find(limit=big) and len(rc.find(limit=big)) == 3
        assert rc.find(offset=big) == lc.find(offset=big) == []
        assert rc.peek(big) == lc.peek(big) and len(rc.peek(big)) == 3
    s = client.create_collection("huge-sparse", 10, "dot", sparse=True)
    s.insert("x", needle.SparseVector([1, 4], [1.0, 2.0]))
    s.upsert_many(["y", "z"], [needle.SparseVector(np.array([4]), [0.5]), needle.SparseVector((2, 3), (1, 1))])
    ls = local.collection("huge-sparse")
    assert s.get("x") == ls.get("x") and s.get("x").vector.to_dict() == {"indices": [1, 4], "values": [1.0, 2.0]}
    query = needle.SparseVector([4], [1.0])
    assert [(r.id, r.distance) for r in s.search(query, k=5)] == [(r.id, r.distance) for r in ls.search(query, k=5)]
    assert [r.id for r in s.search(query, k=5)] == ["x", "y"]
    with pytest.raises(needle.InvalidVectorError, match="index 10, outside"):
        s.insert("w", needle.SparseVector([10], [1.0]))
    assert repr(needle.SparseVector([1, 4], [1.0, 2.0])) == "SparseVector({1: 1, 4: 2})"


NAMES = ["team/docs", "a%2Fb", "%", "sp ace", "q?x#y", "..", ".", "../up", "a/../b", "/", "a//b/", "x/insert",
         "x/search", "ü/日本語", "a\\b", "+;=&"]


def test_any_valid_name_can_be_reached(shared):
    """A name is one path segment (percent-encoded, '/' and '.' too): names holding '/', '%',
    '..', spaces or any Unicode reach their collection, as embedded."""
    _, client, local = shared
    for i, name in enumerate(NAMES):
        c = client.create_collection(name, 3)
        c.insert("r", [1, 0, i])
        assert name in client.list_collections() and client.collection(name).count() == 1
        assert client.collection(name).get("r").vector.tolist() == [1, 0, i]
        assert [r.id for r in client.collection(name).search([1, 0, i])] == ["r"] and list(c.ids()) == ["r"]
        assert local.collection(name).get("r") == c.get("r")  # the collection of that name, in the file
    for name in NAMES:
        client.drop_collection(name)
        assert name not in client.list_collections()
        with pytest.raises(needle.CollectionNotFoundError):
            client.collection(name)


def _assert_same_outcomes(cases: dict, client, embedded) -> None:
    """Each case gives the same outcome (answer, or error type and message) over HTTP as embedded."""
    differ = {}
    for label, fn in cases.items():
        remote, local = _outcome(lambda: fn(client)), _outcome(lambda: fn(embedded))
        if remote != local:
            differ[label] = (remote, local)
    embedded.close()
    assert not differ, differ


def _outcome(fn):
    """``("ok", result)``, or the error's class and message (without what names the file or the server)."""
    try:
        return "ok", fn()
    except needle.NeedleError as exc:
        return type(exc).__name__, str(exc).split(" (HTTP ")[0].split(" in '/")[0]


def test_odd_arguments_give_what_the_embedded_api_gives(shared, tmp_path):
    """The same inputs through the Client and through an embedded Database: the same
    result, or the same error class with the same message."""
    _, client, _ = shared
    embedded = needle.Database.open(str(tmp_path / "embedded.needle"), autocommit=True)
    for db in (client, embedded):
        db.create_collection("odd", 3).insert_many(["a", "b"], [[1, 0, 0], [0, 1, 0]], [{"n": 1}, {"n": 2}])
        db.create_collection("odd-sparse", 10, "dot", sparse=True).insert("s", {1: 1.0})
    cases = {
        "delete([1])": lambda db: db.collection("odd").delete([1]),
        "delete([1], filter)": lambda db: db.collection("odd").delete([1, "\ud800"], filter={"n": 5}),
        "exact=None": lambda db: [r.id for r in db.collection("odd").search([1, 0, 0], k=2, exact=None)],
        "exact='yes'": lambda db: [r.id for r in db.collection("odd").search([1, 0, 0], k=2, exact="yes")],
        "include_vector=[]": lambda db: [r.id for r in db.collection("odd").search([1, 0, 0], include_vector=[])],
        "ef='x'": lambda db: db.collection("odd").search([1, 0, 0], ef="x"),
        "ef=2.5": lambda db: db.collection("odd").search([1, 0, 0], ef=2.5),
        "ef=inf": lambda db: db.collection("odd").search([1, 0, 0], ef=float("inf")),
        "ef=-10**20": lambda db: db.collection("odd").search([1, 0, 0], ef=-10**20),
        "ef=True": lambda db: db.collection("odd").search([1, 0, 0], ef=True),
        "sparse ef='x'": lambda db: [r.id for r in db.collection("odd-sparse").search({1: 1.0}, ef="x")],
        "sparse ef=inf": lambda db: [r.id for r in db.collection("odd-sparse").search({1: 1.0}, ef=float("inf"))],
        "k=2.5": lambda db: db.collection("odd").search([1, 0, 0], k=2.5),
        "k=True": lambda db: db.collection("odd").search([1, 0, 0], k=True),
        "limit=-1": lambda db: db.collection("odd").find(limit=-1),
        "peek(None)": lambda db: db.collection("odd").peek(None),
        "query 'abc'": lambda db: db.collection("odd").search("abc"),
        "query ragged": lambda db: db.collection("odd").search([[1, 2], [3]]),
        "query nan": lambda db: db.collection("odd").search([float("nan"), 0, 0]),
        "query 1e39": lambda db: db.collection("odd").search([1e39, 0, 0]),
        "query dict, dense": lambda db: db.collection("odd").search({1: 1.0}),
        "query None, sparse": lambda db: db.collection("odd-sparse").search(None),
        "query list, sparse": lambda db: db.collection("odd-sparse").search([1.0, 2.0]),
        "insert wrong dimension": lambda db: db.collection("odd").insert("x", [1, 2]),
        "insert_many wrong dimension": lambda db: db.collection("odd").insert_many(["x"], [[1, 2]]),
        "insert_many vectors None": lambda db: db.collection("odd").insert_many(["x"], None),
        "insert_many vectors []": lambda db: db.collection("odd").insert_many(["x"], []),
        "insert_many 1-D": lambda db: db.collection("odd").insert_many(["x"], [1, 2, 3]),
        "insert_many sparse, dense": lambda db: db.collection("odd").insert_many(["x"], [{1: 1.0}]),
        "insert vector str": lambda db: db.collection("odd").insert("x", "abc"),
        "sparse insert index": lambda db: db.collection("odd-sparse").insert("x", {10: 1.0}),
        "sparse insert negative": lambda db: db.collection("odd-sparse").insert("x", {"indices": [-1], "values": [1]}),
        "sparse insert 2**40": lambda db: db.collection("odd-sparse").upsert("x", {2**40: 1.0}),
        "sparse insert nan": lambda db: db.collection("odd-sparse").insert("x", needle.SparseVector([1], [np.nan])),
        "sparse insert unsorted": lambda db: db.collection("odd-sparse").insert("x", {"indices": [3, 1], "values": [1, 1]}),
        "sparse insert values str": lambda db: db.collection("odd-sparse").insert("x", {1: "a"}),
        "sparse insert ragged": lambda db: db.collection("odd-sparse").insert("x", needle.SparseVector([[1], [1, 2]], [1])),
        "sparse insert_many row": lambda db: db.collection("odd-sparse").insert_many(["x", "y"], [{1: 1.0}, [1.0]]),
        "get_many(None)": lambda db: db.collection("odd").get_many(None),
        "collection lone surrogate": lambda db: db.collection("\ud800"),
        "create unknown keyword": lambda db: db.create_collection("z", 3, foo=1),
        "get_or_create unknown keyword": lambda db: db.get_or_create_collection("z", 3, bar=1, exist_ok=True),
        "create bad name and dimension": lambda db: db.create_collection("", 0),
        "create m beyond 64 bits": lambda db: db.create_collection("z", 3, m=2**70),
        "save(progress=5)": lambda db: db.save(progress=5),
        "save(progress=print)": lambda db: db.save(progress=print),
    }
    _assert_same_outcomes(cases, client, embedded)


# ---------------------------------------------------------------- full-text and hybrid search, over HTTP


@pytest.fixture(scope="module")
def sentences(demo_data):
    """The shipped real sentences with their embeddings, and the demo's query sentences with theirs."""
    d = demo_data
    return d["texts"], d["vectors"], d["query_texts"], d["queries"]


def _hits(rows):
    """A result list (or a batch of them) as comparable values: id, distance, metadata, scores."""
    if rows and isinstance(rows[0], needle.SearchResults):
        return [_hits(r) for r in rows]
    return [(h.id, h.distance, h.metadata, getattr(h, "scores", None)) for h in rows]


def same_hits(got, want):
    """The same hits in the same order, metadata and each ranking's scores included (a float32
    vector distance crosses JSON as its shortest float32 text: equal to 1e-6)."""
    got, want = _hits(got), _hits(want)
    if got and isinstance(got[0], list):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            same_hits_flat(g, w)
    else:
        same_hits_flat(got, want)


def same_hits_flat(got, want):
    assert [(g[0], g[2]) for g in got] == [(w[0], w[2]) for w in want]
    assert [g[1] for g in got] == pytest.approx([w[1] for w in want], rel=1e-6, abs=1e-6)
    for g, w in zip(got, want):
        assert (g[3] is None) == (w[3] is None)
        if w[3] is not None:
            assert set(g[3]) == {"vector", "text"}
            for key in ("vector", "text"):
                assert (g[3][key] is None) == (w[3][key] is None), (g, w)
                if w[3][key] is not None:
                    assert g[3][key] == pytest.approx(float(w[3][key]), rel=1e-6, abs=1e-6)


def test_text_and_hybrid_search_over_http_give_what_the_embedded_api_gives(shared, sentences):
    """search(text=...), hybrid search with each hit's scores, batches of texts, the fusion
    options, filters and as_arrays: through the Client, exactly what the embedded API
    answers on the same file."""
    srv, client, local = shared
    texts, vectors, query_texts, query_vectors = sentences
    rc = client.create_collection("hybrid", 384, text_field="document", text_options={"stop_words": "english"})
    n = 1200
    rc.insert_many([f"s{i}" for i in range(n)], vectors[:n],
                   [{"document": t, "half": i % 2} for i, t in enumerate(texts[:n])])
    rc.delete(["s3", "s4"])
    rc.upsert("s5", vectors[5], {"document": "a very funny movie about a battery", "half": 1})
    lc = local.collection("hybrid")
    assert rc.config == lc.config and rc.config.text_field == "document"
    assert rc.config.text_options["stop_words"] == "english"
    words = ["the movie was funny", "great battery life", "a very bad film", "ZZZ unknown qqq", ""]
    for q in words + query_texts[:3]:
        got, want = rc.search(text=q, k=10), lc.search(text=q, k=10)
        same_hits(got, want)
        assert all(getattr(h, "scores", None) is None for h in got)  # BM25 alone: plain results
        same_hits(rc.search(text=q, k=5, filter={"half": 1}), lc.search(text=q, k=5, filter={"half": 1}))
    assert [h.id for h in rc.search(text="ZZZ unknown qqq")] == []
    assert rc.search(text="the movie was funny", k=3)[0].distance < 0  # minus the BM25 score
    fusions = ["rrf", "weighted", {"method": "rrf", "k": 10}, {"method": "weighted", "alpha": 0.8},
               {"method": "weighted", "alpha": 0}]
    for j, (qt, qv) in enumerate(zip(query_texts[:4], query_vectors[:4])):
        fusion = fusions[j % len(fusions)]
        got = rc.search(qv, text=qt, k=8, exact=True, fusion=fusion, candidates=30)
        want = lc.search(qv, text=qt, k=8, exact=True, fusion=fusion, candidates=30)
        same_hits(got, want)
        assert got and all(set(h.scores) == {"vector", "text"} for h in got)
        assert type(got[0]).__name__ == "FusedResult" == type(want[0]).__name__
        same_hits(rc.search(vector=qv, text=qt, k=5, filter={"half": 0}, ef=80),
                  lc.search(vector=qv, text=qt, k=5, filter={"half": 0}, ef=80))
        hit = rc.search(qv, text=qt, k=1, include_vector=True)[0]
        assert np.array_equal(hit.vector, lc.get(hit.id).vector) and hit.scores is not None
    # the fused score is the documented formula over the two rankings, computed here from them
    qt, qv = query_texts[3], query_vectors[3]
    dense, textual = rc.search(qv, k=20, exact=True), rc.search(text=qt, k=20)
    fused = {}
    for ranked in (dense, textual):
        for r, h in enumerate(ranked, 1):
            fused[h.id] = fused.get(h.id, 0.0) + 1 / (60 + r)
    want_ids = sorted(fused, key=lambda i: (-fused[i], i))[:10]
    got = rc.search(qv, text=qt, k=10, exact=True, candidates=20)
    assert [h.id for h in got] == want_ids
    assert [-h.distance for h in got] == pytest.approx([fused[i] for i in want_ids], rel=1e-12)
    by_id = {h.id: h.distance for h in dense}
    for h in got:  # each ranking's own value, None where the hit was not among its candidates
        want_vector = by_id.get(h.id)
        assert (h.scores["vector"] is None) == (want_vector is None), h.id
        if want_vector is not None:
            assert h.scores["vector"] == pytest.approx(want_vector, rel=1e-6)
    # batches of texts, alone and one per query vector
    qs = words[:3] + query_texts[:2]
    same_hits(rc.search_batch(texts=qs, k=6), lc.search_batch(texts=qs, k=6))
    assert _hits(rc.search_batch(texts=qs, k=6)) == [_hits(rc.search(text=q, k=6)) for q in qs]
    same_hits(rc.search_batch(query_vectors[:5], texts=qs, k=6, exact=True, fusion={"method": "rrf", "k": 5}),
              lc.search_batch(query_vectors[:5], texts=qs, k=6, exact=True, fusion={"method": "rrf", "k": 5}))
    assert rc.search_batch(texts=[], k=3) == lc.search_batch(texts=[], k=3) == []
    for got, want in [(rc.search(text=qs[0], k=20, as_arrays=True), lc.search(text=qs[0], k=20, as_arrays=True)),
                      (rc.search_batch(texts=qs, k=4, as_arrays=True), lc.search_batch(texts=qs, k=4, as_arrays=True)),
                      (rc.search(query_vectors[0], text=qs[0], k=7, exact=True, as_arrays=True),
                       lc.search(query_vectors[0], text=qs[0], k=7, exact=True, as_arrays=True)),
                      (rc.search_batch(query_vectors[:5], texts=qs, k=3, exact=True, as_arrays=True),
                       lc.search_batch(query_vectors[:5], texts=qs, k=3, exact=True, as_arrays=True))]:
        assert got[0].dtype == want[0].dtype and got[0].tolist() == want[0].tolist()
        assert got[1].dtype == want[1].dtype == np.float32 and np.array_equal(got[1], want[1])
    # the wire: a hybrid hit carries its scores, a plain one does not
    status, body = srv.raw("POST", "/collections/hybrid/search", orjson.dumps(
        {"vector": query_vectors[0].tolist(), "text": query_texts[0], "k": 2, "exact": True,
         "fusion": {"method": "weighted", "alpha": 0.5}, "candidates": 10}))
    assert status == 200 and set(body["results"][0][0]) == {"id", "distance", "metadata", "scores"}
    status, body = srv.raw("POST", "/collections/hybrid/search", orjson.dumps({"texts": ["funny movie"], "k": 2}))
    assert status == 200 and set(body["results"][0][0]) == {"id", "distance", "metadata"}
    status, body = srv.raw("POST", "/collections/hybrid/search", orjson.dumps({"text": "funny", "texts": ["x"]}))
    assert status == 400 and body["error"] == "InvalidArgumentError"


def test_create_text_index_and_rescore_over_http(shared, sentences):
    """An existing collection gets its text index through the Client (committed, so text search
    answers at once); a quantized collection is created over HTTP and searched with rescore."""
    srv, client, local = shared
    texts, vectors, query_texts, query_vectors = sentences
    rc = client.create_collection("late-text", 384)
    rc.insert_many([f"l{i}" for i in range(400)], vectors[:400], [{"body": t} for t in texts[:400]])
    with pytest.raises(needle.InvalidArgumentError, match="no text index"):
        rc.search(text="funny")
    rc.create_text_index("body", k1=1.5, b=0.5)
    rc.create_text_index("body", k1=1.5, b=0.5)  # the same again: nothing to do, as embedded
    assert rc.config.text_field == "body" and rc.config.text_options["k1"] == 1.5
    assert client.collection("late-text").config == local.collection("late-text").config == rc.config
    same_hits(rc.search(text="a funny movie", k=10), local.collection("late-text").search(text="a funny movie", k=10))
    assert rc.search(text="a funny movie", k=10)
    with pytest.raises(needle.InvalidArgumentError, match="already has a text index"):
        rc.create_text_index("other")
    for body in ({"field": "body", "options": {"field": "x"}}, {"field": "", "options": None}):
        status, answer = srv.raw("POST", "/collections/late-text/create_text_index", orjson.dumps(body))
        assert (status, answer["error"]) == (400, "InvalidArgumentError"), answer
    with client.transaction() as tx:  # buffered like every write, committed with the block
        t = client.create_collection("late-text-tx", 384)
        t.insert_many(["a", "b"], vectors[:2], [{"body": texts[0]}, {"body": texts[1]}])
        t.create_text_index("body")
    assert tx.results[2] is None and [h.id for h in t.search(text=texts[1], k=1)] == ["b"]
    assert t.config.text_field == "body"
    # quantization: created over HTTP, searched with rescore as embedded
    q8 = client.create_collection("int8", 384, quantization="int8", text_field="document")
    assert q8.config.quantization == "int8" and q8.config == local.collection("int8").config
    assert client.get_or_create_collection("int8", 384, quantization="int8").name == "int8"
    with pytest.raises(needle.CollectionExistsError, match="quantization is 'int8', not None"):
        client.get_or_create_collection("int8", 384, quantization="none")
    q8.insert_many([f"q{i}" for i in range(800)], vectors[:800], [{"document": t} for t in texts[:800]])
    lq = local.collection("int8")
    for rescore in (None, 0, 1, 4):
        for q in query_vectors[:3]:
            same_hits(q8.search(q, 10, rescore=rescore), lq.search(q, 10, rescore=rescore))
        same_hits(q8.search_batch(query_vectors[:3], 5, rescore=rescore),
                  lq.search_batch(query_vectors[:3], 5, rescore=rescore))
        same_hits(q8.search(query_vectors[0], text=query_texts[0], k=5, rescore=rescore),
                  lq.search(query_vectors[0], text=query_texts[0], k=5, rescore=rescore))
    exact = {f"q{i}": 1.0 - float(vectors[i] @ query_vectors[0]) for i in range(800)}
    rescored, codes = q8.search(query_vectors[0], 10, rescore=4), q8.search(query_vectors[0], 10, rescore=0)
    assert [h.distance for h in rescored] == pytest.approx([exact[h.id] for h in rescored], abs=1e-5)
    assert [h.distance for h in codes] != pytest.approx([exact[h.id] for h in codes], abs=1e-5)  # the codes' own


def test_text_search_arguments_give_the_embedded_errors(shared, sentences, tmp_path):
    """Bad text-search arguments through the Client and through an embedded Database: the
    same result, or the same error class with the same message."""
    _, client, _ = shared
    texts, vectors, _, _ = sentences
    embedded = needle.Database.open(str(tmp_path / "embedded.needle"), autocommit=True)
    for db in (client, embedded):
        db.create_collection("txt", 384, text_field="document").insert_many(
            ["a", "b", "c"], vectors[:3], [{"document": texts[0]}, {"document": texts[1]}, {"n": 1}])
        db.create_collection("txt-none", 384).insert("a", vectors[0], {"document": texts[0]})
        db.create_collection("txt-q", 384, quantization="binary").insert_many(["a", "b"], vectors[:2])
        db.create_collection("txt-sparse", 10, "dot", sparse=True).insert("s", {1: 1.0})
    v = vectors[5]
    cases = {
        "text only": lambda db: [h.id for h in db.collection("txt").search(text=texts[0], k=2)],
        "text only, fusion ignored": lambda db: [h.id for h in db.collection("txt").search(text="x", fusion="max")],
        "text only, candidates ignored": lambda db: db.collection("txt").search(text="x", candidates=0),
        "text only, rescore ignored": lambda db: db.collection("txt").search(text="x", rescore=-1),
        "text only, ef ignored": lambda db: db.collection("txt").search(text="x", ef="bad"),
        "text 3": lambda db: db.collection("txt").search(v, text=3),
        "text None in batch": lambda db: db.collection("txt").search_batch(texts=["a", None]),
        "texts a string": lambda db: db.collection("txt").search_batch(texts="one string"),
        "texts a dict": lambda db: db.collection("txt").search_batch(texts={"a": 1}),
        "fusion max": lambda db: db.collection("txt").search(v, text="x", fusion="max"),
        "fusion None": lambda db: db.collection("txt").search(v, text="x", fusion=None),
        "fusion 5": lambda db: db.collection("txt").search(v, text="x", fusion=5),
        "fusion alpha 2": lambda db: db.collection("txt").search(v, text="x", fusion={"method": "weighted", "alpha": 2}),
        "fusion alpha True": lambda db: db.collection("txt").search(v, text="x", fusion={"method": "weighted",
                                                                                          "alpha": True}),
        "fusion extra key": lambda db: db.collection("txt").search(v, text="x", fusion={"method": "rrf", "alpha": 1}),
        "fusion no method": lambda db: db.collection("txt").search(v, text="x", fusion={"k": 1}),
        "fusion rrf k": lambda db: [h.id for h in db.collection("txt").search(v, text=texts[1],
                                                                              fusion={"method": "rrf", "k": 1})],
        "candidates 0": lambda db: db.collection("txt").search(v, text="x", candidates=0),
        "candidates 2.5": lambda db: db.collection("txt").search(v, text="x", candidates=2.5),
        "candidates 10**6": lambda db: db.collection("txt").search(v, text="x", candidates=10**6),
        "candidates '5'": lambda db: db.collection("txt").search(v, text="x", candidates="5"),
        "hybrid k -1": lambda db: db.collection("txt").search(v, text="x", k=-1),
        "hybrid bad vector": lambda db: db.collection("txt").search([1.0, 2.0], text="x"),
        "hybrid nan vector": lambda db: db.collection("txt").search([float("nan")] * 384, text="x"),
        "hybrid bad filter": lambda db: db.collection("txt").search(v, text="x", filter={"n": {"$bogus": 1}}),
        "text bad filter": lambda db: db.collection("txt").search(text="x", filter={"$or": 5}),
        "hybrid as_arrays and vectors": lambda db: db.collection("txt").search(v, text="x", as_arrays=True,
                                                                               include_vector=True),
        "texts per query": lambda db: db.collection("txt").search_batch(vectors[:3], texts=["x"]),
        "no query": lambda db: db.collection("txt").search(),
        "no batch": lambda db: db.collection("txt").search_batch(),
        "vector twice": lambda db: db.collection("txt").search(v, vector=v),
        "vector=": lambda db: [h.id for h in db.collection("txt").search(vector=v, k=2)],
        "no text index": lambda db: db.collection("txt-none").search(text="x"),
        "no text index, hybrid": lambda db: db.collection("txt-none").search(v, text="x"),
        "sparse text": lambda db: db.collection("txt-sparse").search({1: 1.0}, text="x"),
        "rescore -1": lambda db: db.collection("txt-q").search(v, rescore=-1),
        "rescore 'x'": lambda db: db.collection("txt-q").search(v, rescore="x"),
        "rescore 2.5": lambda db: db.collection("txt-q").search(v, rescore=2.5),
        "rescore 2**70": lambda db: db.collection("txt-q").search(v, rescore=2**70),
        "rescore 2**21": lambda db: db.collection("txt-q").search(v, rescore=2**21),
        "rescore nan": lambda db: db.collection("txt-q").search(v, rescore=float("nan")),
        "rescore 3": lambda db: [h.id for h in db.collection("txt-q").search(v, k=2, rescore=3)],
        "rescore, hybrid": lambda db: db.collection("txt").search(v, text="x", rescore=-1),
        "rescore sparse ignored": lambda db: [h.id for h in db.collection("txt-sparse").search({1: 1.0}, rescore="x")],
        "create_text_index again": lambda db: db.collection("txt").create_text_index("document"),
        "create_text_index other": lambda db: db.collection("txt").create_text_index("other"),
        "create_text_index ''": lambda db: db.collection("txt-none").create_text_index(""),
        "create_text_index 3": lambda db: db.collection("txt-none").create_text_index(3),
        "create_text_index colour": lambda db: db.collection("txt-none").create_text_index("document", colour=1),
        "create_text_index k1": lambda db: db.collection("txt-none").create_text_index("document", k1=-1),
        "create_text_index klingon": lambda db: db.collection("txt-none").create_text_index("d", stemmer="klingon"),
        "create_text_index sparse": lambda db: db.collection("txt-sparse").create_text_index("document"),
        "create text_options only": lambda db: db.create_collection("z", 3, text_options={"k1": 1.0}),
        "create text_field ''": lambda db: db.create_collection("z", 3, text_field=""),
        "create text_field sparse": lambda db: db.create_collection("z", 3, "dot", sparse=True, text_field="d"),
        "create text_options b": lambda db: db.create_collection("z", 3, text_field="d", text_options={"b": 2}),
        "create quantization bogus": lambda db: db.create_collection("z", 3, quantization="int4"),
        "create quantization sparse": lambda db: db.create_collection("z", 3, "dot", sparse=True,
                                                                      quantization="int8"),
        "get_or_create other text field": lambda db: db.get_or_create_collection("txt", 384, text_field="body"),
        "get_or_create other text options": lambda db: db.get_or_create_collection(
            "txt", 384, text_field="document", text_options={"k1": 2.0}),
        "get_or_create same text": lambda db: db.get_or_create_collection("txt", 384, text_field="document").name,
        "get_or_create quantization": lambda db: db.get_or_create_collection("txt-q", 384, quantization="int8"),
    }
    _assert_same_outcomes(cases, client, embedded)


def test_workers_are_forked_from_one_preloaded_parent_and_stop_together(tmp_path):
    """--workers N: one parent loads the engine, then forks the workers (sharing its pages); SIGINT stops all."""
    import signal

    srv = Server(str(tmp_path / "w.needle"), "--workers", "2")
    try:
        with open(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children") as f:
            children = [int(p) for p in f.read().split()]
        assert len(children) == 2
        for pid in children:
            with open(f"/proc/{pid}/stat") as f:
                assert int(f.read().rsplit(")", 1)[1].split()[1]) == srv.proc.pid  # forked by the serve process
        client = needle.Client(srv.url)
        client.get_or_create_collection("d", 4).upsert("a", [1.0, 2.0, 3.0, 4.0])
        assert client.collection("d").search([1.0, 2.0, 3.0, 4.0], k=1)[0].id == "a"
        client.close()
        srv.proc.send_signal(signal.SIGINT)
        srv.proc.communicate(timeout=120)
        assert srv.proc.returncode == 0
        assert not any(os.path.exists(f"/proc/{pid}") for pid in children)  # reaped by the parent
    finally:
        if srv.proc.poll() is None:
            srv.stop()
