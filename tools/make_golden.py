"""Write format/golden/*.needle, their JSON dumps, and format/layout.json.

The golden files are small files in format version 1 that the test suite must
keep reading exactly as their dumps say, whatever the code becomes. Re-run this
only when the format version changes, and keep the old files as well;
``--add NAME`` writes one new golden file and leaves the others alone.

    python tools/make_golden.py [--add columns|sparse|half|patched|quantized|binary|text] [--layout-only]

``columns.needle`` (added with metadata columns, SPEC §5.6) also records what
a fixed set of filters returns in each collection.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import needle_mm as needle  # noqa: E402
from needle_mm._format import catalog, header  # noqa: E402

OUT = ROOT / "format" / "golden"


FILTERS = [
    {"category": "books"},
    {"price": {"$gte": 10}},
    {"tags": "x"},
    {"tags": {"$size": 2}},
    {"meta.level": {"$in": [1, 2]}},
    {"title": {"$contains": "ab"}},
    {"$or": [{"flag": True}, {"price": {"$lt": 5}}]},
    {"category": {"$ne": "books"}, "meta": {"$exists": True}},
]


TEXT_QUERIES = ["cat on the mat", "cafe", "naive uber", "日本", "running runners", "replaced", "nothing matches"]


def dump(path: Path, with_filters: bool = False) -> dict:
    """Everything a reader must see in a golden file."""
    with needle.Database.open(path, read_only=True) as db:
        snap = db.engine.snapshot
        out = {"generation": snap.generation, "collections": {}}
        for name in db.list_collections():
            c = db.collection(name)
            meta = snap.collection(name)
            records = {}
            for id, m in c.find():
                v = c.get(id).vector
                records[id] = {"vector": v.to_dict() if c.sparse else v.tolist(), "metadata": m}
            out["collections"][name] = {
                "dim": meta.dim, "distance": meta.distance, "count": c.count(),
                **({"dtype": meta.dtype} if meta.dtype != "f32" else {}),
                **({"quantization": meta.quantization} if meta.quantization else {}),
                "segments": [{"n": s.n, "n_deleted": s.n_deleted, "capacity": s.capacity,
                              "hnsw": s.hnsw.to_json() if s.hnsw else None} for s in meta.segments],
                "records": records,
            }
            if with_filters:
                out["collections"][name]["filters"] = [[f, sorted(i for i, _ in c.find(f))] for f in FILTERS]
            if meta.text is not None:  # SPEC §5.11: the index, and what it answers
                out["collections"][name]["text"] = meta.text.to_json()
                out["collections"][name]["text_search"] = [
                    [q, [[h.id, round(-h.distance, 9)] for h in c.search(text=q, k=5)]] for q in TEXT_QUERIES]
    return out


def add_columns() -> None:
    """A file whose segments carry metadata columns: several commits (so several
    chunks), an upsert, a metadata update and a delete."""
    path = OUT / "columns.needle"
    for p in (path, Path(str(path) + ".lock")):
        if p.exists():
            p.unlink()
    rng = np.random.default_rng(5)
    titles = ["abc", "xaby", "zzz", "b", ""]
    with needle.Database.open(path) as db:
        c = db.create_collection("items", 3)
        c.insert_many([f"i{k}" for k in range(12)], rng.normal(size=(12, 3)).round(3),
                      [{"category": ["books", "music", "toys"][k % 3], "price": k * 1.5,
                        "tags": ["x", "y"][: k % 3], "title": titles[k % 5],
                        "meta": {"level": k % 4}, "flag": k % 2 == 0} for k in range(12)])
    with needle.Database.open(path) as db:
        c = db.collection("items")
        c.insert_many(["j0", "j1"], rng.normal(size=(2, 3)).round(3),
                      [{"category": "books", "price": 99, "tags": "x"}, {"weird.key": 1, "price": [1, 2]}])
        c.upsert("i1", [1, 2, 3], {"category": "books", "price": 3})
        c.update_metadata("i2", {"title": "cab", "meta": {"level": 2}})
        c.delete("i3")
    Path(str(path) + ".lock").unlink()
    with open(path.with_suffix(".json"), "w", encoding="utf-8") as f:
        json.dump(dump(path, with_filters=True), f, indent=1, ensure_ascii=False, sort_keys=True)
        f.write("\n")
    print(f"wrote {path.relative_to(ROOT)} ({os.path.getsize(path)} bytes)")


def add_sparse() -> None:
    """A sparse collection (SPEC §5.7, catalog format 2) beside a dense one:
    three commits (so several posting chunks), an upsert and a delete."""
    path = OUT / "sparse.needle"
    for p in (path, Path(str(path) + ".lock")):
        if p.exists():
            p.unlink()
    with needle.Database.open(path) as db:
        db.create_collection("dense", 2).insert("x", [1, 2])
        s = db.create_collection("terms", 1000, "dot", sparse=True)
        s.insert_many([f"t{k}" for k in range(6)],
                      [{"indices": [k, 10 + k, 999], "values": [1.0, 0.5 * k, -0.25]} for k in range(6)],
                      [{"k": k} for k in range(6)])
    with needle.Database.open(path) as db:
        s = db.collection("terms")
        s.insert_many(["u0", "u1"], [{3: 2.0}, {10: 1.0, 500: 4.5}], [{"k": 10}, None])
    with needle.Database.open(path) as db:
        s = db.collection("terms")
        s.upsert("t1", {1: 3.0, 2: 1.0}, {"k": 1, "replaced": True})
        s.delete("t4")
        s.insert("v", {999: 1.0})
    Path(str(path) + ".lock").unlink()
    with open(path.with_suffix(".json"), "w", encoding="utf-8") as f:
        json.dump(dump(path), f, indent=1, ensure_ascii=False, sort_keys=True)
        f.write("\n")
    print(f"wrote {path.relative_to(ROOT)} ({os.path.getsize(path)} bytes)")


def add_half() -> None:
    """Collections storing f16 vectors (SPEC §5.8, catalog format 3): two
    commits into one segment, an upsert and a delete, values a half float
    rounds (and one it holds exactly), beside an f32 collection."""
    path = OUT / "half.needle"
    for p in (path, Path(str(path) + ".lock")):
        if p.exists():
            p.unlink()
    rng = np.random.default_rng(16)
    with needle.Database.open(path) as db:
        db.create_collection("full", 3).insert("x", [0.1, 0.2, 0.3])
        h = db.create_collection("half", 4, "euclidean", dtype="f16")
        h.insert_many([f"h{k}" for k in range(20)], rng.standard_normal((20, 4)) * 100, [{"k": k} for k in range(20)])
    with needle.Database.open(path) as db:
        h = db.collection("half")
        h.insert_many(["exact", "tiny"], [[1.5, -2.0, 65504.0, 0.0], [1e-7, -3e-5, 6e-8, 1.0]])
        h.upsert("h3", [0.1, 0.2, 0.3, 0.4], {"k": 3, "replaced": True})
        h.delete("h7")
    Path(str(path) + ".lock").unlink()
    with open(path.with_suffix(".json"), "w", encoding="utf-8") as f:
        json.dump(dump(path), f, indent=1, ensure_ascii=False, sort_keys=True)
        f.write("\n")
    print(f"wrote {path.relative_to(ROOT)} ({os.path.getsize(path)} bytes)")


def _fresh(path: Path) -> None:
    """No golden file (nor its lock) at ``path`` yet."""
    for p in (path, Path(str(path) + ".lock")):
        if p.exists():
            p.unlink()


def _finish(path: Path) -> None:
    """Drop the writer's sidecars, write the dump beside the file."""
    Path(str(path) + ".lock").unlink()
    Path(str(path) + ".readers").unlink()
    with open(path.with_suffix(".json"), "w", encoding="utf-8") as f:
        json.dump(dump(path), f, indent=1, ensure_ascii=False, sort_keys=True)
        f.write("\n")
    print(f"wrote {path.relative_to(ROOT)} ({os.path.getsize(path)} bytes)")


def add_patched() -> None:
    """A graph grown in place (SPEC §5.9, catalog format 4): a segment of 400
    records, then three small commits whose new nodes are appended and whose
    changed committed rows are graph patch chunks, with id index chunks
    (§5.2); an upsert and a delete in the last commit."""
    path = OUT / "patched.needle"
    _fresh(path)
    rng = np.random.default_rng(17)
    with needle.Database.open(path) as db:
        c = db.create_collection("grown", 4, "cosine", m=4)
        c.insert_many([f"g{k}" for k in range(400)], rng.standard_normal((400, 4)), [{"k": k} for k in range(400)])
        db.save()
        for step in range(3):
            c.insert_many([f"s{step}-{k}" for k in range(2)], rng.standard_normal((2, 4)),
                          [{"step": step} for _ in range(2)])
            if step == 2:
                c.upsert("g3", [0.1, 0.2, 0.3, 0.4], {"k": 3, "replaced": True})
                c.delete("g7")
            db.save()
    _finish(path)


def add_quantized() -> None:
    """int8 codes beside the vectors (SPEC §5.10, catalog format 5): a segment
    of 300 records (codes trained on them), then a small commit whose codes
    are appended with the same parameters, an upsert and a delete; and an f16
    collection with codes."""
    path = OUT / "quantized.needle"
    _fresh(path)
    rng = np.random.default_rng(23)
    with needle.Database.open(path) as db:
        c = db.create_collection("codes", 6, "euclidean", m=4, quantization="int8")
        c.insert_many([f"q{k}" for k in range(300)], rng.standard_normal((300, 6)), [{"k": k} for k in range(300)])
        h = db.create_collection("half-codes", 5, "cosine", m=4, dtype="f16", quantization="int8")
        h.insert_many([f"h{k}" for k in range(200)], rng.standard_normal((200, 5)))
        db.save()
        c.insert_many([f"n{k}" for k in range(3)], rng.standard_normal((3, 6)) * 4)  # beyond the trained range
        c.upsert("q5", [0.5, -0.5, 0.25, 0.0, 1.0, 2.0], {"k": 5, "replaced": True})
        c.delete("q9")
        db.save()
    _finish(path)


def add_binary() -> None:
    """Binary codes beside the vectors (SPEC §5.10, catalog format 5): 70
    dimensions (two words per row, padding bits 0), a segment of 300 records
    (centre trained on them), then a small commit whose bits are appended
    with the same centre and a delete; and an f16 collection with bits."""
    path = OUT / "binary.needle"
    _fresh(path)
    rng = np.random.default_rng(29)
    with needle.Database.open(path) as db:
        c = db.create_collection("bits", 70, "cosine", m=4, quantization="binary")
        c.insert_many([f"b{k}" for k in range(300)], rng.standard_normal((300, 70)) + 0.5, [{"k": k} for k in range(300)])
        h = db.create_collection("half-bits", 9, "euclidean", m=4, dtype="f16", quantization="binary")
        h.insert_many([f"h{k}" for k in range(200)], rng.standard_normal((200, 9)))
        db.save()
        c.insert_many([f"n{k}" for k in range(3)], rng.standard_normal((3, 70)))
        c.delete("b9")
        db.save()
    _finish(path)


def add_text() -> None:
    """A full-text index (SPEC §5.11, catalog format 6): a segment of 200
    records whose "document" is a text (some with accents, one Chinese, a few
    with no text or a number there), then a small commit (a second chunk), an
    upsert and a delete; and a collection with stemming and stop words that
    is given its index after its records (create_text_index)."""
    path = OUT / "text.needle"
    _fresh(path)
    rng = np.random.default_rng(31)
    words = ["cat", "mat", "sat", "dog", "Café", "naïve", "über", "日本語", "run", "running", "the", "a", "on"]

    def text(k: int):
        if k % 17 == 0:
            return None
        if k % 23 == 0:
            return 7
        return " ".join(words[j] for j in rng.integers(0, len(words), 2 + k % 9))

    with needle.Database.open(path) as db:
        c = db.create_collection("docs", 4, "cosine", m=4, text_field="document")
        c.insert_many([f"t{k}" for k in range(200)], rng.standard_normal((200, 4)),
                      [{"k": k} if text(k) is None else {"document": text(k), "k": k} for k in range(200)])
        s = db.create_collection("stemmed", 3, "euclidean", m=4)
        s.insert_many([f"s{k}" for k in range(50)], rng.standard_normal((50, 3)),
                      [{"body": "the runners were running and ran " * (1 + k % 3)} for k in range(50)])
        db.save()
        s.create_text_index("body", stemmer="english", stop_words="english")
        c.insert_many([f"n{k}" for k in range(5)], rng.standard_normal((5, 4)),
                      [{"document": "a new cat on the mat"} for _ in range(5)])
        c.upsert("t5", [0.5, -0.5, 0.25, 1.0], {"document": "replaced text"})
        c.delete("t9")
        db.save()
    _finish(path)


ADD = {"columns": add_columns, "sparse": add_sparse, "half": add_half, "patched": add_patched,
       "quantized": add_quantized, "binary": add_binary, "text": add_text}


def build() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for p in OUT.glob("*.needle*"):
        p.unlink()

    with needle.Database.open(OUT / "empty.needle"):
        pass

    with needle.Database.open(OUT / "basic.needle") as db:
        c = db.create_collection("docs", 4)
        c.insert("a", [1, 0, 0, 0], {"category": "books", "price": 12.5})
        c.insert("b", [0, 1, 0, 0], {"category": "music", "tags": ["x", "y"]})
        c.insert("ünï", [0.5, 0.25, -1, 2], None)
        e = db.create_collection("points", 2, "euclidean", m=8)
        e.insert_many(["p0", "p1", "p2"], np.array([[0, 0], [1, 1], [-2, 3.5]]), [{"i": i} for i in range(3)])

    with needle.Database.open(OUT / "deletes.needle") as db:
        c = db.create_collection("d", 3, "dot")
        c.insert_many([f"r{i}" for i in range(20)], np.arange(60, dtype=np.float32).reshape(20, 3) / 10,
                      [{"i": i} for i in range(20)])
        db.save()
        c.delete(["r3", "r7"])
        c.upsert("r5", [9, 9, 9], {"replaced": True})
        db.save()
        c.insert("late", [1, 2, 3], {"late": 1})

    for path in sorted(OUT.glob("*.needle")):
        lock = Path(str(path) + ".lock")
        if lock.exists():
            lock.unlink()
        with open(path.with_suffix(".json"), "w", encoding="utf-8") as f:
            json.dump(dump(path), f, indent=1, ensure_ascii=False, sort_keys=True)
            f.write("\n")
        print(f"wrote {path.relative_to(ROOT)} ({os.path.getsize(path)} bytes)")


def layout() -> dict:
    def fields(dtype):
        return [{"field": name, "offset": dtype.fields[name][1], "size": dtype.fields[name][0].itemsize}
                for name in dtype.names]

    return {
        "format_version": {"read": header.READ_VERSION, "write": header.WRITE_VERSION},
        "magic": header.MAGIC.decode(), "superblock_magic": header.SUPERBLOCK_MAGIC.decode(),
        "page_size": header.PAGE_SIZE, "superblock_offsets": list(header.SUPERBLOCK_OFFSETS),
        "data_start": header.DATA_START, "region_align": header.REGION_ALIGN,
        "header": fields(header.HEADER_DTYPE), "superblock": fields(header.SUPERBLOCK_DTYPE),
        "segment_regions": {k: {"dtype": d, "length": r, "reserve": v}
                            for k, (d, r, v) in catalog.SEGMENT_REGIONS.items()},
        "optional_segment_regions": {k: {"dtype": d, "length": r, "reserve": v}
                                     for k, (d, r, v) in catalog.OPTIONAL_SEGMENT_REGIONS.items()},
        "hnsw_regions": {k: {"dtype": d, "length": r, "reserve": v}
                         for k, (d, r, v) in catalog.HNSW_REGIONS.items()},
        "sparse_regions": {k: {"dtype": d, "length": r, "reserve": v}
                           for k, (d, r, v) in catalog.SPARSE_REGIONS.items()},
        "quant_regions": {q: {k: {"dtype": d, "length": r, "reserve": v} for k, (d, r, v) in regions.items()}
                          for q, regions in catalog.QUANT_REGIONS_OF.items()},
        "kinds": list(catalog.KINDS),
        "catalog_formats": [catalog.CATALOG_FORMAT, catalog.SPARSE_CATALOG_FORMAT, catalog.HALF_CATALOG_FORMAT,
                            catalog.PATCHED_GRAPH_CATALOG_FORMAT, catalog.QUANTIZED_CATALOG_FORMAT],
        "vector_dtypes": dict(catalog.VECTOR_DTYPES),
        "max_level": catalog.MAX_LEVEL,
        "distances": list(catalog.DISTANCES),
        "commit_failpoints": ["commit.after_data_write", "commit.after_data_sync",
                              "commit.after_superblock_write", "commit.after_superblock_sync",
                              "create.before_rename"],
    }


if __name__ == "__main__":
    if "--add" in sys.argv:
        ADD[sys.argv[sys.argv.index("--add") + 1]]()
    elif "--layout-only" not in sys.argv:
        build()
    with open(ROOT / "format" / "layout.json", "w", encoding="utf-8") as f:
        json.dump(layout(), f, indent=1)
        f.write("\n")
    print("wrote format/layout.json")
