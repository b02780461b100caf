"""needle_mm.preload(): load the engine before forking workers, leaving nothing open or running."""

import os
import subprocess
import sys
import textwrap

from conftest import ROOT

_SCRIPT = textwrap.dedent("""
    import os, sys, threading
    import numpy as np
    import needle_mm as needle

    path = sys.argv[1]
    with needle.Database.open(path) as db:
        coll = db.create_collection("docs", 8)
        coll.insert_many([f"r{i}" for i in range(500)], np.random.default_rng(0).random((500, 8)) + 0.01,
                         [{"i": i} for i in range(500)])
    needle.preload()
    needle.preload()  # a second call does nothing more
    assert threading.active_count() == 1, threading.enumerate()  # nothing running to be cut by fork
    own = [f for f in os.listdir(f"/proc/{os.getpid()}/fd")
           if os.path.realpath(f"/proc/{os.getpid()}/fd/{f}").endswith((".needle", ".lock"))]
    assert own == [], own  # no database file held open across the fork (reader tables reset at fork)
    want = None
    pids = []
    for worker in range(2):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                with needle.Database.open(path, read_only=True) as db:
                    hits = db.collection("docs").search(np.full(8, 0.5), k=3, filter={"i": {"$lt": 100}})
                    exact = db.collection("docs").search(np.full(8, 0.5), k=3, filter={"i": {"$lt": 100}}, exact=True)
                    code = 0 if [h.id for h in hits] == [h.id for h in exact] and len(hits) == 3 else 2
            finally:
                os._exit(code)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    print("children", codes)
    assert codes == [0, 0]
""")


def test_preload_then_fork_workers_that_search(tmp_path):
    script = tmp_path / "prefork.py"
    script.write_text(_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "x.needle")], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT), timeout=900)
    assert out.returncode == 0, out.stderr
    assert "children [0, 0]" in out.stdout


def test_gunicorn_preload_with_per_worker_apps(tmp_path):
    """The README's gunicorn recipe: preload in the parent, each worker opens the file itself."""
    import socket
    import time

    import pytest

    pytest.importorskip("gunicorn")
    pytest.importorskip("uvicorn_worker")
    import needle_mm as needle

    path = str(tmp_path / "g.needle")
    (tmp_path / "app.py").write_text(textwrap.dedent(f"""
        import needle_mm
        from needle_mm.remote.server import PerWorkerApp
        needle_mm.preload()
        app = PerWorkerApp({path!r})
    """))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "app:app", "--preload", "-w", "2", "-k",
                             "uvicorn_worker.UvicornWorker", "-b", f"127.0.0.1:{port}"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        client = needle.Client(f"http://127.0.0.1:{port}")
        for _ in range(1200):  # bounded by count: until the workers answer
            try:
                client.list_collections()
                break
            except needle.ServerUnavailableError:
                time.sleep(0.5)
        coll = client.get_or_create_collection("d", 4)
        coll.upsert_many([f"r{i}" for i in range(50)], [[1.0, i, 2.0, 3.0] for i in range(50)])
        for _ in range(20):  # requests spread over both workers; each sees every committed write
            assert coll.count() == 50 and coll.search([1.0, 7.0, 2.0, 3.0], k=1)[0].id == "r7"
        client.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=120)
