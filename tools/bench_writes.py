"""What a commit costs: save() time and file growth for small and large commits.

    pip install ".[bench]"
    python tools/bench_writes.py [--dataset minilm-384-cosine] [--n 100000] [--small-commits 50] [--write]

On a real dataset (../shared/data), this 2-core machine:

1. the guide's loop: insert + ``save()`` every 10,000 records up to ``--n``:
   end-to-end records/s and the file's size over the raw data (float32
   vectors + ids + metadata bytes);
2. on that file, commits of 1, 10, 100 and 1,000 records, one metadata update
   and one delete: ``save()`` p50 / p99 (fsyncs included) and bytes the file
   grows per commit;
3. ``--small-commits`` commits of 10 records, with pinned readers
   (``auto_refresh=False``) taking turns (each opened at some commit, checked
   every 10 commits against its first answers, let go 100 commits later): the
   mismatches they saw, the file's size over what ``needle compact`` makes of
   it, and q/s at recall@10 >= 0.95 over a one-shot build of the same records
   (the compacted file);
4. anchors in the same run: LanceDB (a table of 50,000 with an IVF_HNSW_SQ
   index, append 10 rows) and Chroma (a collection of 50,000, ``add`` 10
   records): p50 time and bytes per commit.

File sizes are disk usage (allocated blocks, as ``du`` counts them): the
reserves growable regions keep for later appends are holes until used. The
apparent size (``ls -l``) is given beside it.

Writes the "Writes" section of BENCHMARKS.md with ``--write``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import needle_mm as needle  # noqa: E402
from bench_hnsw import load  # noqa: E402
from benchmarks_md import command_line, publish  # noqa: E402
from needle_mm.ops import compact  # noqa: E402

ANCHOR_N = 50_000


def metadata(i: int) -> dict:
    return {"i": i, "lang": ["en", "de", "fr"][i % 3]}


def disk(path: str) -> int:
    """Bytes the file occupies on disk (reserve holes excluded)."""
    return os.stat(path).st_blocks * 512


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def ef_at_recall(coll, test: np.ndarray, truth: list[set], target: float = 0.95) -> tuple[int, float]:
    """(ef, recall) at the smallest ef of a sweep reaching ``target``."""
    for ef in (16, 24, 32, 48, 64, 96, 128, 192, 256):
        hits = [coll.search(q, 10, ef=ef) for q in test]
        recall = float(np.mean([len({h.id for h in row} & t) / 10 for row, t in zip(hits, truth)]))
        if recall >= target:
            return ef, recall
    return -1, recall


def qps_interleaved(colls: list, efs: list[int], test: np.ndarray, rounds: int = 5) -> list[float]:
    """Single-query q/s of each collection at its ef, timed A B A B ... and the
    best round of each kept (this machine is shared: load comes and goes)."""
    best = [float("inf")] * len(colls)
    for _ in range(rounds):
        for i, (coll, ef) in enumerate(zip(colls, efs)):
            t0 = time.perf_counter()
            for q in test:
                coll.search(q, 10, ef=ef)
            best[i] = min(best[i], time.perf_counter() - t0)
    return [len(test) / t for t in best]


def needle_runs(train, test, metric, path: str, small_commits: int) -> dict:
    n = train.shape[0]
    out = {}
    # 1. the guide's loop
    t0 = time.perf_counter()
    with needle.Database.open(path) as db:
        coll = db.create_collection("docs", train.shape[1], metric)
        for start in range(0, n, 10_000):
            stop = min(n, start + 10_000)
            coll.insert_many([str(i) for i in range(start, stop)], train[start:stop],
                             [metadata(i) for i in range(start, stop)])
            db.save()
    out["guide_rate"] = n / (time.perf_counter() - t0)
    raw = n * train.shape[1] * 4 + sum(len(str(i)) for i in range(n)) + sum(len(json.dumps(metadata(i))) for i in range(n))
    out["guide_file_over_raw"] = disk(path) / raw
    out["guide_apparent_over_raw"] = os.path.getsize(path) / raw

    # 2. commits of each size, a metadata update, a delete
    rng = np.random.default_rng(0)
    db = needle.Database.open(path)
    coll = db.collection("docs")
    next_id = [n]

    def timed_commit(write) -> tuple[float, int]:
        write()
        before = disk(path)
        t = time.perf_counter()
        db.save()
        return time.perf_counter() - t, disk(path) - before

    def insert(r: int):
        rows = rng.integers(0, n, r)
        ids = [f"new{next_id[0] + j}" for j in range(r)]
        next_id[0] += r
        return lambda: coll.insert_many(ids, train[rows] + 0.001, [metadata(j) for j in range(r)])

    runs = {"1 record": (insert, 1, 20), "10 records": (insert, 10, 20), "100 records": (insert, 100, 10),
            "1,000 records": (insert, 1000, 5)}
    out["commits"] = {}
    for label, (make, r, count) in runs.items():
        samples = [timed_commit(make(r)) for _ in range(count)]
        out["commits"][label] = ([s[0] for s in samples], [s[1] for s in samples])
    ids = rng.integers(0, n, 40)
    samples = [timed_commit(lambda i=i: coll.update_metadata(str(i), {"updated": True})) for i in ids[:20]]
    out["commits"]["1 metadata update"] = ([s[0] for s in samples], [s[1] for s in samples])
    samples = [timed_commit(lambda i=i: coll.delete(str(i))) for i in ids[20:]]
    out["commits"]["1 delete"] = ([s[0] for s in samples], [s[1] for s in samples])
    db.close()

    # 3. many small commits with pinned readers taking turns: size over compact, q/s over a one-shot build
    db = needle.Database.open(path)
    coll = db.collection("docs")
    probe_q, probe_ids = test[:5], [str(i) for i in range(0, n, max(1, n // 50))]
    pins, mismatches, checks = [], 0, 0

    def answers(c):
        return ([[(h.id, h.distance) for h in c.search(q, 10)] for q in probe_q],
                [(e.vector.tobytes(), e.metadata) for e in (c.get(i) for i in probe_ids)])

    growth = []
    for k in range(small_commits):
        if k % 50 == 0:
            reader = needle.Database.open(path, read_only=True, auto_refresh=False)
            pins.append((k, reader, answers(reader.collection("docs"))))
        insert(10)()
        before = disk(path)
        db.save()
        growth.append(disk(path) - before)
        if k % 10 == 9:
            for _, reader, first in pins:
                checks += 1
                mismatches += answers(reader.collection("docs")) != first
        while pins and pins[0][0] <= k - 100:
            pins.pop(0)[1].close()
    for _, reader, _ in pins:
        reader.close()
    live = {i: None for i, _ in coll.find()}
    db.close()
    out["pinned"] = (checks, mismatches)
    out["small_growth"] = growth
    before = disk(path)
    out["small_apparent"] = os.path.getsize(path)
    one_shot = path + ".compact.needle"
    shutil.copyfile(path, one_shot)
    compact(one_shot)
    out["small_commits"] = small_commits
    out["size_over_compact"] = before / disk(one_shot)
    out["apparent_over_compact"] = out["small_apparent"] / os.path.getsize(one_shot)
    # ground truth over the live records (the originals and the added copies): exact search
    with needle.Database.open(one_shot, read_only=True) as r:
        truth = [{h.id for h in r.collection("docs").search(q, 10, exact=True)} for q in test]
    readers_ = [needle.Database.open(p, read_only=True) for p in (path, one_shot)]
    colls = [r.collection("docs") for r in readers_]
    found = [ef_at_recall(c, test, truth) for c in colls]
    qps = qps_interleaved(colls, [f[0] for f in found], test)
    for label, (ef, recall), q in zip(("after", "one-shot"), found, qps):
        out[f"qps_{label}"] = (ef, recall, q)
    for r in readers_:
        r.close()
    out["live"] = len(live)
    return out


def lancedb_run(train, metric: str, work: str) -> tuple[list[float], list[int]] | str:
    try:
        import lancedb
        import pyarrow as pa
    except ImportError as exc:
        return f"not run ({exc})"
    n = min(ANCHOR_N, train.shape[0])
    db = lancedb.connect(os.path.join(work, "lance"))
    schema = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32(), train.shape[1]))])
    table = db.create_table("t", schema=schema)
    table.add(pa.table({"id": [str(i) for i in range(n)], "vector": list(train[:n])}, schema=schema))
    with warnings.catch_warnings():  # the documented form of PEERS.md; lancedb calls it deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        table.create_index(metric=metric if metric != "euclidean" else "l2", index_type="IVF_HNSW_SQ",
                           num_partitions=1, m=16, ef_construction=200)
    times, growth = [], []
    folder = os.path.join(work, "lance")
    for c in range(20):
        rows = train[np.arange(c * 10, c * 10 + 10)]
        before = _tree_bytes(folder)
        t = time.perf_counter()
        table.add(pa.table({"id": [f"new{c}-{j}" for j in range(10)], "vector": list(rows + 0.001)}, schema=schema))
        times.append(time.perf_counter() - t)
        growth.append(_tree_bytes(folder) - before)
    return times, growth


def chroma_run(train, metric: str, work: str) -> tuple[list[float], list[int]] | str:
    try:
        import chromadb
    except ImportError as exc:
        return f"not run ({exc})"
    n = min(ANCHOR_N, train.shape[0])
    folder = os.path.join(work, "chroma")
    client = chromadb.PersistentClient(path=folder)
    space = {"cosine": "cosine", "euclidean": "l2", "dot": "ip"}[metric]
    coll = client.create_collection("bench", metadata={"hnsw:space": space, "hnsw:M": 16, "hnsw:construction_ef": 200})
    for start in range(0, n, 5000):
        stop = min(n, start + 5000)
        coll.add(ids=[str(i) for i in range(start, stop)], embeddings=train[start:stop])
    times, growth = [], []
    for c in range(20):
        before = _tree_bytes(folder)
        t = time.perf_counter()
        coll.add(ids=[f"new{c}-{j}" for j in range(10)], embeddings=train[c * 10:c * 10 + 10] + 0.001)
        times.append(time.perf_counter() - t)
        growth.append(_tree_bytes(folder) - before)
    return times, growth


def _tree_bytes(folder: str) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="minilm-384-cosine")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--small-commits", type=int, default=1000)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    train, test, _, metric = load(ROOT.parent / "shared", args.dataset)
    train = train[:args.n]
    work = tempfile.mkdtemp(prefix="needle-writes-")
    res = needle_runs(train, test, metric, os.path.join(work, "w.needle"), args.small_commits)
    lance = lancedb_run(train, metric, work)
    chroma = chroma_run(train, metric, work)
    shutil.rmtree(work, ignore_errors=True)

    n, dim = train.shape
    lines = [
        "## Writes: what a commit costs",
        "",
        f"`{command_line('bench_writes.py', ap, args)}` — {args.dataset}, {n:,} x {dim} ({metric}), "
        "this 2-core machine, fsyncs included.",
        "",
        f"The guide's loop (insert + `save()` every 10,000): {res['guide_rate']:,.0f} records/s end to end; "
        f"the file is {res['guide_file_over_raw']:.2f}x the raw float32 vectors + ids + metadata on disk "
        f"({res['guide_apparent_over_raw']:.2f}x apparent size, reserve holes included).",
        "",
        f"Commits on that file of {n:,} records:",
        "",
        "| commit | save() p50 (ms) | p99 (ms) | disk growth per commit (median) |",
        "|---|---:|---:|---:|",
    ]
    for label, (times, growth) in res["commits"].items():
        lines.append(f"| {label} | {pct(times, 50) * 1e3:,.1f} | {pct(times, 99) * 1e3:,.1f} | "
                     f"{statistics.median(growth) / 1e3:,.1f} KB (mean {np.mean(growth) / 1e3:,.1f} KB) |")
    ef_a, rec_a, qps_a = res["qps_after"]
    ef_b, rec_b, qps_b = res["qps_one-shot"]
    checks, mismatches = res["pinned"]
    small = res["small_growth"]
    lines += [
        "",
        f"After {res['small_commits']:,} more commits of 10 records (pinned readers taking turns, each held for "
        f"100 commits: {mismatches} mismatches in {checks:,} checks): the file is {res['size_over_compact']:.2f}x "
        f"what `needle compact` makes of it on disk ({res['apparent_over_compact']:.2f}x apparent); it grew "
        f"{statistics.median(small) / 1e3:,.1f} KB per commit at the median, {np.mean(small) / 1e3:,.1f} KB on "
        f"average (the records' own vectors, ids and metadata: ~{10 * (train.shape[1] * 4 + 40) / 1e3:,.1f} KB); "
        f"single-query q/s at recall@10 >= 0.95 (timed alternately, best of 5): {qps_a:,.0f} (ef {ef_a}, recall "
        f"{rec_a:.3f}) against {qps_b:,.0f} for the compacted one-shot build (ef {ef_b}, recall {rec_b:.3f}): "
        f"{qps_a / qps_b if qps_b else float('nan'):.2f}x.",
        "",
        f"Anchors, same run (a collection of {min(ANCHOR_N, n):,} of the same vectors, 20 commits of 10 records):",
        "",
        "| engine | commit p50 (ms) | growth per commit |",
        "|---|---:|---:|",
    ]
    needle_10 = res["commits"]["10 records"]
    lines.append(f"| Needle `save()` ({n:,} records) | {pct(needle_10[0], 50) * 1e3:,.1f} | "
                 f"{statistics.median(needle_10[1]) / 1e3:,.1f} KB |")
    for name, r in (("LanceDB `add` (IVF_HNSW_SQ index; new rows unindexed until `optimize()`)", lance),
                    ("Chroma `add`", chroma)):
        if isinstance(r, str):
            lines.append(f"| {name} | {r} | |")
        else:
            lines.append(f"| {name} | {pct(r[0], 50) * 1e3:,.1f} | {statistics.median(r[1]) / 1e3:,.1f} KB |")
    lines += [
        "",
        "A commit of up to 1,024 records into a segment at least 8 times larger inserts them into the "
        "committed graph in place (SPEC §5.9): their rows are appended, the rows they change go to a patch "
        "chunk, the id index gets a chunk (§5.2), and new regions go into space earlier commits released "
        "once no reader holds it (§6.1). Larger commits build over a copy of the vectors, as before.",
        "",
    ]
    publish("## Writes: what a commit costs", "\n".join(lines), args.write)


if __name__ == "__main__":
    main()
