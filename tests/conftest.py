"""Shared fixtures: temporary database paths, real data, child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "vectors.needle")


@pytest.fixture(scope="session")
def demo_data():
    """The real sentence embeddings shipped for `needle demo` (3,000 x 384, unit rows)."""
    from needle_mm.ops.demo import load_demo_data

    data = load_demo_data()
    vectors = data["vectors"].astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = data["query_vectors"].astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return {"vectors": vectors, "queries": queries, "texts": [str(t) for t in data["texts"]],
            "sources": [str(s) for s in data["sources"]], "query_texts": [str(t) for t in data["query_texts"]]}


def run_python(code: str, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (never in the pytest process)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout)


def brute_force(vectors: np.ndarray, query: np.ndarray, k: int, distance: str) -> tuple[np.ndarray, np.ndarray]:
    """Reference distances in float64: (indices, distances) of the k nearest."""
    v = vectors.astype(np.float64)
    q = query.astype(np.float64)
    if distance == "cosine":
        d = 1.0 - (v @ q) / (np.linalg.norm(v, axis=1) * np.linalg.norm(q))
    elif distance == "euclidean":
        d = np.sqrt(((v - q) ** 2).sum(axis=1))
    else:
        d = 1.0 - v @ q
    order = np.argsort(d, kind="stable")[:k]
    return order, d[order]


def tool_module(name: str):
    """A script of tools/ imported as a module (e.g. the fuzzer's file surgery)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
