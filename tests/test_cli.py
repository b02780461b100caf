"""The `needle` command, run as a user would: a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT


def needle_cmd(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "needle_mm", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_demo_runs_end_to_end(tmp_path):
    path = tmp_path / "demo.needle"
    out = needle_cmd("demo", "--path", str(path), "--workers", "2")
    assert out.returncode == 0, out.stderr
    assert "3000 records" in out.stdout
    assert '{"source": "pros_cons"}' in out.stdout and "[pros_cons," in out.stdout
    assert out.stdout.count("(sees the new record)") == 2
    assert "every reader saw the writer's checkpoint" in out.stdout
    info = needle_cmd("info", str(path))
    assert info.returncode == 0 and "sentences: 3001 records, dim 384, distance cosine" in info.stdout
    verify = needle_cmd("verify", str(path))
    assert verify.returncode == 0 and "3001 live records: OK" in verify.stdout


def test_errors_are_reported_not_raised(tmp_path):
    bad = tmp_path / "bad.needle"
    bad.write_bytes(b"not a needle file at all")
    out = needle_cmd("info", str(bad))
    assert out.returncode == 2 and "not a Needle file" in out.stderr and "Traceback" not in out.stderr
