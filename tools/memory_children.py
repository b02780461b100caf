"""The processes tools/bench_memory.py measures, one per invocation:

    python tools/memory_children.py bare
    python tools/memory_children.py reader KIND PATH DIM
    python tools/memory_children.py first KIND PATH DIM

``bare`` imports numpy and waits (the baseline). ``reader`` imports one
library, opens its index read-only, runs the fixed workload below, prints one
JSON line and waits for a line on stdin (so its memory can be read while it and
its siblings are alive). ``first`` times import, open and the first query from
the top of this script (the interpreter's own start is excluded), wall clock
and CPU time of the process (all its threads), prints them as JSON and exits.

KIND is needle, hnswlib, usearch, faiss or annoy. Workload: 200 single
queries, one batch of 100, and where the library has one an exact scan over
every vector (Needle ``exact=True``, usearch ``exact=True``, FAISS's flat
storage; hnswlib has all of its index in private memory anyway; Annoy has no
exact scan). k=10, ef=64 (Annoy: search_k=-1, its default).
"""

import time

T0, CPU0 = time.perf_counter(), time.process_time()

import json  # noqa: E402
import sys  # noqa: E402

K, EF, SINGLE, BATCH = 10, 64, 200, 100


def _open(kind, path, dim):
    """Import ``kind``'s library and open the index: (search, batch, exact or None)."""
    if kind == "needle":
        import needle_mm as needle

        yield
        c = needle.Database.open(path, read_only=True).collection("c")
        yield (lambda q: c.search(q, K, ef=EF), lambda qs: c.search_batch(qs, K, ef=EF),
               lambda q: c.search(q, K, exact=True))
    elif kind == "hnswlib":
        import hnswlib

        yield
        index = hnswlib.Index("l2", dim)
        index.load_index(path)
        index.set_ef(EF)
        yield (lambda q: index.knn_query(q, K), lambda qs: index.knn_query(qs, K), None)
    elif kind == "usearch":
        from usearch.index import Index

        yield
        index = Index.restore(path, view=True)
        index.expansion_search = EF
        yield (lambda q: index.search(q, K), lambda qs: index.search(qs, K),
               lambda q: index.search(q, K, exact=True))
    elif kind == "faiss":
        import faiss

        yield
        index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC)
        index.hnsw.efSearch = EF
        storage = faiss.downcast_index(index.storage)
        yield (lambda q: index.search(q[None], K), lambda qs: index.search(qs, K),
               lambda q: storage.search(q[None], K))
    elif kind == "annoy":
        from annoy import AnnoyIndex

        yield
        index = AnnoyIndex(dim, "euclidean")
        index.load(path)  # mmap(2)s the file
        one = lambda q: index.get_nns_by_vector(q, K)  # noqa: E731
        yield one, lambda qs: [one(q) for q in qs], None
    else:
        raise SystemExit(f"unknown kind {kind!r}")


def _backend(kind):
    """Which kernels a Needle process ran on, and whether it loaded numba."""
    out = {"numba_loaded": "numba" in sys.modules}
    if kind == "needle":
        try:
            from needle_mm import _kernels

            out["backend"] = _kernels.backend()
        except (ImportError, AttributeError):  # no router: numba loaded means the JIT
            out["backend"] = "jit" if out["numba_loaded"] else "aot"
    return out


def main():
    role = sys.argv[1]
    if role == "bare":
        import numpy  # noqa: F401

        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()
        return
    kind, path, dim = sys.argv[2], sys.argv[3], int(sys.argv[4])
    import numpy as np

    t_numpy = time.perf_counter()
    steps = _open(kind, path, dim)
    next(steps)  # the library imported
    t_import = time.perf_counter()
    search, batch, exact = next(steps)  # the index opened
    t_open = time.perf_counter()
    queries = np.random.default_rng(1).normal(size=(SINGLE + BATCH, dim)).astype(np.float32)
    t_q = time.perf_counter()
    search(queries[0])
    t_first, cpu = time.perf_counter(), time.process_time() - CPU0
    if role == "first":
        print(json.dumps({"numpy_s": t_numpy - T0, "import_s": t_import - T0, "open_s": t_open - t_import,
                          "first_query_s": t_first - t_q, "total_s": t_first - T0 - (t_q - t_open),
                          "beyond_numpy_s": t_first - t_numpy - (t_q - t_open), "cpu_s": cpu,
                          **_backend(kind)}), flush=True)
        return
    for q in queries[1:SINGLE]:
        search(q)
    batch(queries[SINGLE:])
    if exact is not None:
        exact(queries[0])
    print(json.dumps({"ready": True, "seconds": time.perf_counter() - T0, **_backend(kind)}), flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    main()
