"""Crash safety: a writer killed at any step leaves the last or the next checkpoint, whole.

Runs the full crash sweep (kill at every named failpoint and every I/O call,
tear every pwrite) and every power-loss image, each in its own process;
writers are killed with SIGKILL, never the pytest process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("crash_sweep", os.path.join(ROOT, "tools", "crash_sweep.py"))
crash_sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(crash_sweep)


def test_oracle_is_a_function_of_the_commit():
    assert len(crash_sweep.oracle(0)) == 0
    a, b = crash_sweep.oracle(4), crash_sweep.oracle(4)
    assert a.keys() == b.keys() and all((a[k][0] == b[k][0]).all() for k in a)


@pytest.mark.crash
def test_crash_sweep_every_failpoint_and_io_call_killed_and_torn():
    """The full sweep (it is fast: children are forked from a warmed parent)."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "crash_sweep.py"), "--tear", "--json"],
                         capture_output=True, text=True, timeout=900, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr[-3000:]
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    print(" ".join(f"{k}={v}" for k, v in counts.items() if k != "failures"))
    assert counts["failures"] == [], counts["failures"][:5]
    assert counts["completed"] >= 1  # the sweep reached past the workload's last I/O call
    assert counts["runs"] >= 100 and counts["signals"] == 0


@pytest.mark.crash
def test_power_loss_images():
    """Every image a power cut could leave (unsynced writes dropped, kept, torn,
    reordered) opens at the last returned commit or the one in flight."""
    from conftest import run_python

    out = run_python(f"""
        import json, sys
        sys.path.insert(0, {os.path.join(ROOT, "tools")!r})
        import power_loss
        print(json.dumps(power_loss.run(subsets=4, seed=0)))
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    print(" ".join(f"{k}={v}" for k, v in counts.items() if k != "failures"))
    assert counts["failures"] == [], counts["failures"][:5]
    assert counts["images"] >= 1000 and counts["distinct"] >= 500
