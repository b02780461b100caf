"""``needle_mm.preload()``: load the engine and its search kernels before forking workers.

A pre-forking server (``needle serve --workers N``, gunicorn ``--preload``,
``multiprocessing`` with fork) that calls this in the parent hands every
worker the imported modules and the loaded kernels as pages shared copy-on-write,
so a worker's first answer needs neither imports nor kernel loading.

Fork safety decides the shape:

- The parent runs only serial kernels (single-query, filtered and exact
  search). Parallel kernels start a thread pool, and a process that forks
  after that gives children a runtime that may not survive the fork (numba's
  OpenMP layer aborts them), so the warm-up file is built and saved in a
  child interpreter, which also leaves every kernel it compiled in the cache.
- The parent holds no database open when it returns (an open file's locks and
  reader-table slot would be shared with every child).
- ``gc.freeze()`` last: the collector then never writes to the objects the
  parent made, which would otherwise copy their pages into every worker.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .._progress import log

_DIM = 16
_RECORDS = 300
_preloaded = False


def _build(path: str) -> None:
    """In a spawned child: a small file holding every kind of collection the workers search."""
    from ..database import Database

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(_RECORDS, _DIM)).astype(np.float32)
    metas = [{"i": i, "tag": ["a", "b", "c"][i % 3]} for i in range(_RECORDS)]
    ids = [f"r{i}" for i in range(_RECORDS)]
    with Database.open(path) as db:
        for distance in ("cosine", "euclidean", "dot"):
            db.create_collection(f"dense-{distance}", _DIM, distance).insert_many(ids, vectors, metas)
        db.create_collection("half", _DIM, dtype="f16").insert_many(ids, vectors, metas)
        db.create_collection("sparse", 1000, "dot", sparse=True).insert_many(
            ids, [{"indices": [i % 500, 500 + (7 * i) % 500], "values": [1.0, 0.5]} for i in range(_RECORDS)], metas)


def _warm(path: str) -> None:
    """Read-side calls on every collection, serial kernels only (see the module docstring)."""
    from ..database import Database

    query = np.random.default_rng(1).normal(size=_DIM).astype(np.float32)
    with Database.open(path, read_only=True) as db:
        for name in db.list_collections():
            coll = db.collection(name)
            q = {"indices": [1, 7], "values": [1.0, 1.0]} if coll.sparse else query
            coll.search(q, k=5)
            coll.search(q, k=5, filter={"tag": "a"})  # the graph walk under a filter
            coll.search(q, k=5, filter={"i": {"$lt": 3}})  # few pass: exact over them
            coll.search(q, k=5, as_arrays=True)
            coll.get("r1")
            coll.find({"tag": {"$in": ["b"]}}, limit=3)
            coll.count({"i": {"$gte": 10}})


def preload() -> float:
    """Import what a worker uses and load the search kernels; returns the seconds it took.

    Call it once in the parent process before workers are forked (for gunicorn
    with ``--preload``, at the top of the module that creates the app). Later
    calls return at once. Leaves no database open and no thread running.
    (Import the server, ``needle_mm.remote.server``, in the parent too if the
    workers serve it: the app module that calls this usually does.)
    """
    global _preloaded
    if _preloaded:
        from .._kernels.api import stop_threads

        stop_threads()
        return 0.0
    started = time.perf_counter()
    from .. import collection, database  # noqa: F401  (the modules every worker imports)
    from .._engine import engine, search  # noqa: F401
    from ..filters import compile_filter  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="needle-preload-") as folder:
        path = os.path.join(folder, "warm.needle")
        # A fresh interpreter, not multiprocessing's spawn: that would import the
        # caller's main module again in the child (a script without a main guard
        # would run twice). It imports needle_mm from where this process did.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        built = subprocess.run([sys.executable, "-c", "import sys; from needle_mm.ops.preload import _build; "
                                "_build(sys.argv[1])", path], env=env, capture_output=True, text=True)
        if built.returncode == 0:
            _warm(path)
        else:
            log.warning("preload could not build its warm-up file (%s); workers will load kernels on first use",
                        built.stderr.strip().splitlines()[-1:] or built.returncode)
    from .._kernels.api import stop_threads

    stop_threads()  # a build before this call left kernel threads waiting: none may cross the fork
    gc.collect()
    gc.freeze()
    _preloaded = True
    return time.perf_counter() - started
