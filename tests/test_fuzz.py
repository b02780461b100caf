"""Hostile files: the kept corpus (format/fuzz/) and a seeded fuzz slice.

Everything runs in child processes: a crash must fail the test, not kill
pytest. `python tools/fuzz_files.py --cases 10000` runs the full fuzz.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from conftest import ROOT, run_python

FUZZ_CASES = 1500

spec = importlib.util.spec_from_file_location("fuzz_files", os.path.join(ROOT, "tools", "fuzz_files.py"))
fuzz_files = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fuzz_files)

HAND_MADE = ["dim-zero", "entry-point-n", "length-2-63", "n-2-63", "neighbour-id-n", "offset-past-eof",
             *fuzz_files.HOSTILE]


def test_corpus_replays_to_errors_never_crashes():
    out = run_python(f"""
        import json, sys
        sys.path.insert(0, {os.path.join(ROOT, "tools")!r})
        import fuzz_files
        print(json.dumps(fuzz_files.replay()))
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    outcomes = json.loads(out.stdout.strip().splitlines()[-1])
    assert {f"{name}.needle" for name in HAND_MADE} <= outcomes.keys()
    for name in HAND_MADE:  # each names a structural lie that must be refused
        assert outcomes[f"{name}.needle"] == "error: CorruptFileError", (name, outcomes[f"{name}.needle"])
    bad = {k: v for k, v in outcomes.items() if not (v == "ok" or v.startswith("error"))}
    assert bad == {}


def test_corpus_is_refused_by_writers_too():
    """A writer (insert, upsert, update, delete, save, compact on a copy) raises
    the same CorruptFileError a reader does: never a crash, a foreign exception,
    or a save that carries the damage into a new generation."""
    out = run_python(f"""
        import json, sys
        sys.path.insert(0, {os.path.join(ROOT, "tools")!r})
        import fuzz_files
        print(json.dumps(fuzz_files.replay_writes()))
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    outcomes = json.loads(out.stdout.strip().splitlines()[-1])
    for name in HAND_MADE:
        assert outcomes[f"{name}.needle"] == "error: CorruptFileError", (name, outcomes[f"{name}.needle"])


def test_mutations_are_a_function_of_seed_and_case():
    import numpy as np

    base = (fuzz_files.GOLDEN / "deletes.needle").read_bytes()
    a = fuzz_files.mutate(base, np.random.default_rng([3, 17]))
    b = fuzz_files.mutate(base, np.random.default_rng([3, 17]))
    assert a == b and a[1] != base


@pytest.mark.fuzz
def test_fuzz_slice_finds_nothing():
    """Seeded and bounded; every case is also written to (the write path)."""
    counts = fuzz_files.run(cases=FUZZ_CASES, seed=2026)
    print(" ".join(f"{k}={v}" for k, v in counts.items() if k != "findings"))
    assert counts["findings"] == [] and counts["signals"] == 0 and counts["hangs"] == 0
    assert counts["cases"] == FUZZ_CASES and counts["errors"] > 0 and counts["ok"] > 0
