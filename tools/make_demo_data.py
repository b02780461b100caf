"""Build needle_mm/ops/data/demo.npz: the small real dataset `needle demo` ships.

Real English sentences with their all-MiniLM-L6-v2 embeddings (384-d), taken
from ../shared/data/minilm-384-cosine, keeping only rows whose source corpus
may be redistributed: brown, and the CC BY 4.0 corpora pros_cons, subjectivity
and sentence_polarity (see README "Data credits").

    python tools/make_demo_data.py [--shared ../shared] [--per-source 750]
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

SOURCES = ("brown", "pros_cons", "subjectivity", "sentence_polarity")


def pick(texts_path: Path, per_source: int) -> tuple[list[int], list[dict]]:
    taken = {s: 0 for s in SOURCES}
    rows, records = [], []
    with gzip.open(texts_path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            rec = json.loads(line)
            if rec["src"] in taken and taken[rec["src"]] < per_source:
                taken[rec["src"]] += 1
                rows.append(i)
                records.append({"text": rec["text"], "source": rec["src"]})
            if all(v >= per_source for v in taken.values()):
                break
    return rows, records


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--per-source", type=int, default=750)
    ap.add_argument("--queries-per-source", type=int, default=3)
    args = ap.parse_args()
    base = Path(args.shared) / "data" / "minilm-384-cosine"
    rows, records = pick(base / "train.texts.jsonl.gz", args.per_source)
    qrows, qrecords = pick(base / "test.texts.jsonl.gz", args.queries_per_source)
    train = np.load(base / "train.f16.npy", mmap_mode="r")
    test = np.load(base / "test.f16.npy", mmap_mode="r")
    out = Path(__file__).resolve().parents[1] / "needle_mm" / "ops" / "data" / "demo.npz"
    np.savez_compressed(
        out,
        vectors=np.asarray(train[rows], dtype=np.float16),
        texts=np.array([r["text"] for r in records]),
        sources=np.array([r["source"] for r in records]),
        query_vectors=np.asarray(test[qrows], dtype=np.float16),
        query_texts=np.array([r["text"] for r in qrecords]),
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {len(rows)} sentences, {len(qrows)} queries")


if __name__ == "__main__":
    main()
