"""A real full disk: a 4 MiB tmpfs mounted in a private mount namespace.

Needs root (``unshare --mount``); skipped cleanly where that is not
permitted. The save that does not fit raises OSError(ENOSPC), the previous
checkpoint stays intact and readable, the writes stay pending, a reader that
has the file mapped keeps working (no SIGBUS), and once space is freed the
same writes save.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

CHILD = textwrap.dedent("""
    import errno, os, sys
    import numpy as np, needle_mm as needle
    from needle_mm.ops.verify import verify_file
    d = sys.argv[1]
    path = os.path.join(d, "full.needle")
    rng = np.random.default_rng(0)
    with needle.Database.open(path) as db:
        db.create_collection("c", 64, "euclidean").insert_many(
            [f"a{i}" for i in range(500)], rng.normal(size=(500, 64)), [{"i": i} for i in range(500)])
    reader = needle.Database.open(path, read_only=True, auto_refresh=False)
    q = rng.normal(size=64)
    before = [r.id for r in reader.collection("c").search(q, 5)]
    # fill the disk with a file of our own until a little is left
    with open(os.path.join(d, "ballast"), "wb") as f:
        st = os.statvfs(d)
        f.write(b"\\1" * (st.f_bavail * st.f_frsize - 64 * 1024))
    db = needle.Database.open(path)
    db.collection("c").insert_many([f"b{i}" for i in range(2000)], rng.normal(size=(2000, 64)))
    try:
        db.save()
        print("SAVED-UNEXPECTEDLY")
    except OSError as exc:
        print("ENOSPC" if exc.errno == errno.ENOSPC else f"OTHER {exc}")
    assert db.dirty and "b1999" in db.collection("c")
    assert [r.id for r in reader.collection("c").search(q, 5)] == before  # the mapped reader still works
    with needle.Database.open(path, read_only=True) as fresh:
        assert fresh.collection("c").count() == 500 and "b0" not in fresh.collection("c")
    report = verify_file(path)
    assert report.ok, report.problems
    os.remove(os.path.join(d, "ballast"))
    db.save()
    with needle.Database.open(path, read_only=True) as fresh:
        print("AFTER", fresh.collection("c").count())
    print("VERIFY", verify_file(path).ok)
""")


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.needs_root
@pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare --mount (a private tmpfs)")
def test_disk_full_save_raises_and_keeps_the_checkpoint(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=ROOT)
    shell = f"mount -t tmpfs -o size=4m tmpfs {mnt} && exec {sys.executable} {script} {mnt}"
    out = subprocess.run(["unshare", "--mount", "sh", "-c", shell], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    lines = out.stdout.split("\n")
    assert "ENOSPC" in lines and "AFTER 2500" in lines and "VERIFY True" in lines, out.stdout
