"""int8 codes with per-dimension parameters (what Needle stores, SPEC §5.10) against per-vector scales.

Issue 20 asked to measure both. This ranks every query's neighbours by the
code distance alone, exhaustively (no graph: the codes' own quality), and
after exact rescoring of the best k x R, for:

* per-dimension: offset and scale per dimension, trained on all rows
  (``needle_mm._index.quantize``, the stored codes);
* per-vector: each row scaled by its own max |x| to [-127, 127], no offset
  (one float per row; a query's dot product is ``scale_x * (q . code)``).

    python tools/bench_int8_scales.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from needle_mm._index.quantize import encode_int8, train_int8  # noqa: E402

K = 10


def load(base: Path):
    meta = json.loads((base / "meta.json").read_text())
    if (base / "train.npy").exists():
        x, q = np.load(base / "train.npy"), np.load(base / "test.npy")
    else:
        x, q = np.load(base / "train.f16.npy"), np.load(base / "test.f16.npy")
    x, q = x.astype(np.float32), q.astype(np.float32)
    if meta["metric"] == "cosine":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q, np.load(base / "gt.npy")[:, :K], meta["metric"]


def distances(dots: np.ndarray, qn: np.ndarray, xn: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        return 1 - dots / (qn[:, None] * xn[None, :])
    return qn[:, None] ** 2 + xn[None, :] ** 2 - 2 * dots


def recall(found: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(g)) / K for f, g in zip(found.tolist(), gt.tolist())]))


def evaluate(name: str, x, q, gt, metric, approx_dots) -> dict:
    xn, qn = np.linalg.norm(x, axis=1), np.linalg.norm(q, axis=1)
    d = distances(approx_dots, qn, xn, metric)
    order = np.argsort(d, axis=1)
    out = {"scheme": name, "codes_only": recall(order[:, :K], gt)}
    exact = distances(q.astype(np.float64) @ x.T.astype(np.float64), qn, xn, metric)
    for r in (1, 2, 4):
        cand = order[:, :K * r]
        picked = np.take_along_axis(cand, np.argsort(np.take_along_axis(exact, cand, axis=1), axis=1)[:, :K], axis=1)
        out[f"rescore_{r}"] = recall(picked, gt)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--queries", type=int, default=200)
    a = ap.parse_args()
    results = []
    for name in ("minilm-384-cosine-10k", "siftsmall-128-euclidean", "minilm-384-cosine"):
        base = Path(a.shared) / "data" / name
        if not base.is_dir():
            continue
        x, q, gt, metric = load(base)
        q, gt = q[:a.queries], gt[:a.queries]
        params = train_int8(x)
        codes = encode_int8(x, params).astype(np.float32)
        per_dim = (q * params[1]) @ codes.T + (q @ params[0])[:, None]
        scale = np.abs(x).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        vcodes = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.float32)
        per_vec = (q @ vcodes.T) * scale[None, :]
        for scheme, dots in (("per-dimension (stored)", per_dim), ("per-vector", per_vec)):
            r = evaluate(scheme, x, q, gt, metric, dots.astype(np.float64))
            r["dataset"] = f"{name} ({len(x):,} x {x.shape[1]})"
            results.append(r)
            print(json.dumps(r), flush=True)
    print("\n| dataset | scheme | recall@10, codes only | rescore 1 | rescore 2 | rescore 4 |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['dataset']} | {r['scheme']} | {r['codes_only']:.3f} | {r['rescore_1']:.3f} | "
              f"{r['rescore_2']:.3f} | {r['rescore_4']:.3f} |")


if __name__ == "__main__":
    main()
