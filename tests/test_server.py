"""`needle serve` and `needle_mm.Client`, against a real server process on loopback:
the client mirrors the embedded API (same results, same errors), workers share
the file, the safe defaults hold, and fuzzing the OpenAPI document never gets a 5xx."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import orjson
import pytest
import schemathesis
from conftest import ROOT
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import needle_mm as needle


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, path: str, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("NEEDLE_API_KEY", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "needle_mm", "serve", path, "--port", str(self.port),
                                      *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    if self.raw("GET", "/health", key=args[args.index("--api-key") + 1]
                                if "--api-key" in args else None)[0] == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

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
        client.create_collection("docs", 3).insert_many(["a", "b"], [[1, 0, 0], [0, 1, 0]],
                                                       [{"x": 1}, {"x": "y"}])
        client.create_collection("terms", 50, "dot", sparse=True).insert("t", {1: 1.0})
        client.close()
        schema = schemathesis.openapi.from_url(srv.url + "/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 14
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
