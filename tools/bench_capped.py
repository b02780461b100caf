"""Search with less memory than the index: a reader capped by a cgroup below the file's size.

    pip install -e ".[bench]"
    python tools/bench_capped.py [--dataset minilm] [--fraction 0.4] [--write]

The index (M=16, ef_construction=200) is built once per engine and kept in
bench-out/: Needle with f32 vectors, Needle with int8 codes beside them
(``quantization="int8"``, SPEC §5.10), hnswlib, FAISS IndexHNSWFlat. Then
each engine's reader runs in a fresh process, first with no cap and then in
a memory cgroup whose limit is ``--fraction`` of the Needle f32 file's size
(cgroup v2 ``memory.max``, or v1 ``memory.limit_in_bytes``, made under
this process's own cgroup; the run is skipped, saying why, where neither can
be made). The kernel charges the page cache a process faults in to its
cgroup and reclaims it there when the limit is reached, so a capped reader
keeps at most that much of the file cached. Before each capped run the
engine's files are dropped from the page cache (``posix_fadvise(DONTNEED)``:
clean pages nobody maps), so it starts cold and faults in what it reads; an
uncapped run starts with the files read once (warm).

A run: import, open, 200 warm-up queries, then the timed queries one per
call at the engine's ef for recall@10 >= 0.95 (found uncapped from a sweep);
q/s, recall, and what the cgroup saw (peak usage, times it hit the limit).
A process the kernel kills for memory is reported as such. hnswlib and
FAISS's default ``read_index`` load the whole index into process memory;
FAISS's ``IO_FLAG_MMAP_IFC`` maps it instead, which is shown too.

Writes bench-out/capped.json and, with --write, the "Larger than memory"
section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from benchmarks_md import command_line, write_section  # noqa: E402

M, EFC, K = 16, 200, 10
DATASETS = {"minilm": "minilm-384-cosine", "sift": "siftsmall-128-euclidean"}
EFS = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def load(shared: Path, name: str):
    base = shared / "data" / name
    meta = json.loads((base / "meta.json").read_text())
    suffix = "" if (base / "train.npy").exists() else ".f16"
    x = np.load(base / f"train{suffix}.npy").astype(np.float32)
    q = np.load(base / f"test{suffix}.npy").astype(np.float32)
    if meta["metric"] == "cosine":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q, np.load(base / "gt.npy")[:, :K], meta["metric"]


# ----------------------------------------------------------------- builds (kept in bench-out/)

def build_all(out: Path, tag: str, x, metric: str) -> dict[str, list[Path]]:
    """Every engine's index files for this data, built when missing."""
    import needle_mm as needle

    files = {}
    for label, quant in (("needle_f32", None), ("needle_int8", "int8"), ("needle_binary", "binary")):
        path = out / f"capped-{tag}-{label}.needle"
        if not path.exists():
            print(f"building {path.name} ...", flush=True)
            with needle.Database.open(str(path)) as db:
                c = db.create_collection("c", x.shape[1], metric, m=M, ef_construction=EFC, quantization=quant)
                c.insert_many([str(i) for i in range(len(x))], x)
        files[label] = [path]
    path = out / f"capped-{tag}.hnswlib"
    if not path.exists():
        import hnswlib

        print(f"building {path.name} ...", flush=True)
        idx = hnswlib.Index(space={"cosine": "cosine", "euclidean": "l2"}[metric], dim=x.shape[1])
        idx.init_index(max_elements=len(x), M=M, ef_construction=EFC, random_seed=0)
        idx.add_items(x, np.arange(len(x)), num_threads=2)
        idx.save_index(str(path))
    files["hnswlib"] = [path]
    path = out / f"capped-{tag}.faiss"
    if not path.exists():
        import faiss

        print(f"building {path.name} ...", flush=True)
        idx = faiss.IndexHNSWFlat(x.shape[1], M, faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2)
        idx.hnsw.efConstruction = EFC
        idx.add(x)
        faiss.write_index(idx, str(path))
    files["faiss"] = files["faiss_mmap"] = [path]
    return files


# ----------------------------------------------------------------- the reader (a child process)

CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    engine, path, dim, metric, ef, warm, qfile, gtfile, rescore = sys.argv[1:10]
    dim, ef, warm = int(dim), int(ef), int(warm)
    options = {} if rescore == "default" else {"rescore": int(rescore)}
    q, gt = np.load(qfile), np.load(gtfile)
    t0 = time.perf_counter()
    if engine.startswith("needle"):
        import needle_mm as needle
        db = needle.Database.open(path, read_only=True)
        c = db.collection("c")
        search = lambda v: [int(h.id) for h in c.search(v, 10, ef=ef, **options)]
    elif engine == "hnswlib":
        import hnswlib
        idx = hnswlib.Index(space={"cosine": "cosine", "euclidean": "l2"}[metric], dim=dim)
        idx.load_index(path)
        idx.set_ef(ef)
        idx.set_num_threads(1)
        search = lambda v: idx.knn_query(v, 10)[0][0].tolist()
    else:
        import faiss
        faiss.omp_set_num_threads(1)
        idx = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC if engine == "faiss_mmap" else 0)
        idx.hnsw.efSearch = ef
        search = lambda v: idx.search(v[None, :], 10)[1][0].tolist()
    opened = time.perf_counter() - t0
    for v in q[:warm]:
        search(v)
    timed = q[warm:]
    t = time.perf_counter()
    found = [search(v) for v in timed]
    took = time.perf_counter() - t
    rec = float(np.mean([len(set(f) & set(g)) / 10 for f, g in zip(found, gt[warm:].tolist())]))
    print(json.dumps({"open_s": opened, "qps": len(timed) / took, "recall": rec, "queries": len(timed)}))
""")


def drop_cache(paths: list[Path]) -> None:
    """Drop the files' clean pages from the page cache (pages no process maps)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class Cgroup:
    """A memory cgroup under this process's own (v2 ``memory.max`` or v1
    ``memory.limit_in_bytes``); ``Cgroup.make`` returns None and a reason where
    neither can be made."""

    def __init__(self, path: Path, v2: bool):
        self.path, self.v2 = path, v2

    @staticmethod
    def make(name: str) -> tuple["Cgroup | None", str]:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        reasons = []
        for line in lines:  # v2: "0::/path"
            hid, controllers, rel = line.split(":", 2)
            if hid == "0" and controllers == "":
                base = Path("/sys/fs/cgroup") / rel.lstrip("/")
                if (base / "cgroup.controllers").exists():
                    try:
                        if "memory" not in (base / "cgroup.subtree_control").read_text().split():
                            (base / "cgroup.subtree_control").write_text("+memory")
                        path = base / name
                        path.mkdir(exist_ok=True)
                        return Cgroup(path, True), ""
                    except OSError as exc:
                        reasons.append(f"cgroup v2 at {base}: {exc}")
        for line in lines:  # v1: "N:memory:/path"
            hid, controllers, rel = line.split(":", 2)
            if "memory" in controllers.split(","):
                base = Path("/sys/fs/cgroup/memory") / rel.lstrip("/")
                try:
                    path = base / name
                    path.mkdir(exist_ok=True)
                    return Cgroup(path, False), ""
                except OSError as exc:
                    reasons.append(f"cgroup v1 at {base}: {exc}")
        return None, "; ".join(reasons) or "no cgroup memory controller is mounted"

    def limit(self, nbytes: int) -> None:
        if self.v2:
            (self.path / "memory.max").write_text(str(nbytes))
            (self.path / "memory.swap.max").write_text("0") if (self.path / "memory.swap.max").exists() else None
        else:
            (self.path / "memory.limit_in_bytes").write_text(str(nbytes))
            if (self.path / "memory.max_usage_in_bytes").exists():
                (self.path / "memory.max_usage_in_bytes").write_text("0")
            if (self.path / "memory.failcnt").exists():
                (self.path / "memory.failcnt").write_text("0")

    def enter(self) -> None:  # in the child, before exec
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def stats(self) -> dict:
        if self.v2:
            peak = self.path / "memory.peak"
            events = dict(line.split() for line in (self.path / "memory.events").read_text().splitlines())
            return {"peak_bytes": int(peak.read_text()) if peak.exists() else None,
                    "limit_hits": int(events.get("max", 0)), "oom_kills": int(events.get("oom_kill", 0))}
        return {"peak_bytes": int((self.path / "memory.max_usage_in_bytes").read_text()),
                "limit_hits": int((self.path / "memory.failcnt").read_text()), "oom_kills": None}

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass


def warm_cache(paths: list[Path]) -> None:
    """Read the files once, so an uncapped run finds them in the page cache."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass


def run_reader(engine: str, files: list[Path], dim: int, metric: str, ef: int, warm: int, qfile: str, gtfile: str,
               group: Cgroup | None, rescore: str = "default") -> dict:
    """One reader process: capped (``group``) from a cold page cache, or uncapped from a warm one."""
    if group is None:
        warm_cache(files)
    else:
        drop_cache(files)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD, engine, str(files[0]), str(dim), metric, str(ef), str(warm),
                          qfile, gtfile, rescore], capture_output=True, text=True, env=env, timeout=3600,
                         preexec_fn=group.enter if group else None)
    result = {"exit": out.returncode}
    if out.returncode == 0:
        result.update(json.loads(out.stdout.strip().splitlines()[-1]))
    else:
        result["error"] = ("killed by the kernel (out of memory)" if out.returncode == -9
                           else (out.stderr.strip().splitlines() or ["?"])[-1][:200])
    if group:
        result.update(group.stats())
    return result


# ----------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--dataset", default="minilm", choices=sorted(DATASETS))
    ap.add_argument("--fraction", type=float, default=0.4, help="the cap, as a fraction of --of's file")
    ap.add_argument("--of", default="needle_f32", choices=("needle_f32", "needle_int8", "needle_binary"),
                    help="whose file the cap is a fraction of: the f32-only file, or a quantized file (f32 vectors "
                         "and codes)")
    ap.add_argument("--warm", type=int, default=200, help="untimed queries first")
    ap.add_argument("--queries", type=int, default=1000, help="queries in all (warm-up included)")
    ap.add_argument("--engines", default="needle_int8,needle_f32,hnswlib,faiss,faiss_mmap")
    ap.add_argument("--rescore", default="default",
                    help="Needle's rescore= for quantized engines (k x this many full rows read; 0: codes only)")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    out = ROOT / "bench-out"
    out.mkdir(exist_ok=True)
    x, q, gt, metric = load(Path(a.shared), DATASETS[a.dataset])
    files = build_all(out, f"{a.dataset}-{len(x)}", x, metric)
    qfile, gtfile = str(out / "capped-q.npy"), str(out / "capped-gt.npy")
    np.save(qfile, q[:a.queries])
    np.save(gtfile, gt[:a.queries])
    engines = a.engines.split(",")
    cap = int(a.fraction * files[a.of][0].stat().st_size)
    sizes = {e: sum(p.stat().st_size for p in files[e]) for e in engines}

    # each engine's ef for recall >= 0.95 on the timed queries, uncapped, warm
    efs = {}
    for e in engines:
        for ef in EFS:
            r = run_reader(e, files[e], x.shape[1], metric, ef, a.warm, qfile, gtfile, None, a.rescore)
            if r.get("recall", 0) >= 0.95 or ef == EFS[-1]:
                efs[e] = ef
                break
    group, why = Cgroup.make(f"needle-bench-capped-{os.getpid()}")
    results = {"rescore": a.rescore, "dataset": DATASETS[a.dataset], "n": len(x), "dim": x.shape[1], "cap_bytes": cap,
               "fraction": a.fraction, "of": a.of, "sizes": sizes, "efs": efs, "cgroup": None if group is None else
               f"{'v2' if group.v2 else 'v1'} {group.path}", "skipped": why or None, "runs": {}}
    try:
        for e in engines:
            results["runs"][e] = {"uncapped": run_reader(e, files[e], x.shape[1], metric, efs[e], a.warm, qfile,
                                                         gtfile, None, a.rescore)}
            if group is not None:
                group.limit(cap)
                results["runs"][e]["capped"] = run_reader(e, files[e], x.shape[1], metric, efs[e], a.warm, qfile,
                                                          gtfile, group, a.rescore)
            print(e, json.dumps(results["runs"][e]), flush=True)
    finally:
        if group is not None:
            group.remove()
    graph = ("norms", "hnsw_levels", "hnsw_links0", "hnsw_upper_offsets", "hnsw_upper_links")
    with needle_db(files["needle_int8"][0]) as seg:
        results["int8_hot_bytes"] = sum(seg.regions[r].length for r in ("quant_codes", *graph))
    with needle_db(files["needle_binary"][0]) as seg:
        results["binary_hot_bytes"] = sum(seg.regions[r].length for r in ("quant_bits", *graph))
    results["command"] = command_line("bench_capped.py", ap, a)
    store = out / "capped.json"
    kept = json.loads(store.read_text()) if store.exists() else {}
    kept = kept if isinstance(kept, dict) and "runs" not in kept else {}
    kept[f"{a.fraction} of {a.of}: {a.engines}, rescore {a.rescore}"] = results  # one entry per cap and engines: the section shows all
    store.write_text(json.dumps(kept, indent=1))
    section = "\n".join(["## Larger than memory (issue 20): a reader capped below the file", "",
                         "Each table: one `tools/bench_capped.py` run (command above it).", ""]
                        + [report(r, r["command"]) for r in kept.values()])
    print(section)
    if a.write:
        write_section("## Larger than memory", section)


class needle_db:
    def __init__(self, path):
        import needle_mm as needle

        self.db = needle.Database.open(str(path), read_only=True)

    def __enter__(self):
        return self.db.engine.snapshot.collection("c").segments[0]

    def __exit__(self, *exc):
        self.db.close()


def report(r: dict, command: str) -> str:
    mb = 1e6
    f32 = r["sizes"].get("needle_f32")
    lines = [f"### Capped at {r['fraction']:.0%} of the {r['of']} file", "",
             f"`{command}` — {r['dataset']} ({r['n']:,} × {r['dim']}), M={M}, ef_construction={EFC}; each engine "
             f"at the smallest ef giving recall@10 ≥ 0.95 uncapped; {r['fraction']:.0%} of the "
             f"{'Needle f32' if r['of'] == 'needle_f32' else r['of'].replace('needle_', 'Needle ') + ' (f32 vectors and codes)'} file = "
             f"**{r['cap_bytes'] / mb:.0f} MB** as the cgroup's memory limit (process memory and the page cache "
             f"it faults in, together); a capped run starts with the engine's files dropped from the page cache, an uncapped one "
             f"with them read once (cached); each opens, runs 200 untimed queries and times the rest, one per "
             f"call, one thread.", ""]
    if r["skipped"] and not r["cgroup"]:
        lines += [f"**Capped runs skipped**: {r['skipped']}.", ""]
    else:
        lines += [f"cgroup: {r['cgroup']}.", ""]
    if f32 and "int8_hot_bytes" in r:
        lines += [f"Needle int8: what a walk reads (codes, norms, graph) is {r['int8_hot_bytes'] / mb:.1f} MB = "
                  f"**{r['int8_hot_bytes'] / f32:.2f}×** the f32 file ({f32 / mb:.0f} MB)."
                  + (f" Needle binary: {r['binary_hot_bytes'] / mb:.1f} MB = **{r['binary_hot_bytes'] / f32:.2f}×**."
                     if "binary_hot_bytes" in r else ""), ""]
    lines += ["| engine | index files (MB) | ef | uncapped q/s | recall | capped q/s | capped / uncapped | capped recall "
              "| cgroup peak (MB) | times at the limit |", "|---|---|---|---|---|---|---|---|---|---|"]
    for e, runs in r["runs"].items():
        u, c = runs["uncapped"], runs.get("capped")
        quantized = e in ("needle_int8", "needle_binary")
        named = f"{e} (rescore {r['rescore']})" if quantized and r.get("rescore", "default") != "default" else e
        cells = [named, f"{r['sizes'][e] / mb:.0f}", str(r["efs"][e]),
                 f"{u['qps']:,.0f}" if "qps" in u else u.get("error", "?"), f"{u.get('recall', 0):.3f}"]
        if c is None:
            cells += ["—"] * 5
        elif "qps" in c:
            cells += [f"{c['qps']:,.0f}" if c["qps"] >= 10 else f"{c['qps']:.2f}",
                      f"**{c['qps'] / u['qps']:.2g}×**" if "qps" in u else "—",
                      f"{c['recall']:.3f}", f"{(c.get('peak_bytes') or 0) / mb:.0f}", str(c.get("limit_hits"))]
        else:
            cells += [c.get("error", "?"), "—", "—", f"{(c.get('peak_bytes') or 0) / mb:.0f}", str(c.get("limit_hits"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
