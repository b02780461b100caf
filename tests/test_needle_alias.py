"""``import needle`` is ``needle_mm`` under the guide's name: the same objects, never copies."""

from __future__ import annotations

from conftest import run_python


def test_needle_is_needle_mm_and_its_submodules_are_needle_mms():
    out = run_python("""
        import needle.ops                      # a submodule first, in a fresh interpreter
        from needle.errors import NeedleError
        from needle import Database
        import needle, needle_mm, needle_mm.errors, needle_mm.ops
        checks = [needle is needle_mm, needle.ops is needle_mm.ops, NeedleError is needle_mm.errors.NeedleError,
                  Database is needle_mm.Database, needle.ops.compact is needle_mm.ops.compact]
        print(checks)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[True, True, True, True, True]"


def test_an_error_raised_by_needle_mm_is_caught_as_needle(tmp_path):
    out = run_python("""
        import sys, needle
        try:
            needle.Database.open(sys.argv[1], read_only=True)
        except needle.DatabaseNotFoundError as exc:
            print("caught", type(exc).__module__)
    """, str(tmp_path / "missing.needle"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["caught", "needle_mm.errors"]
