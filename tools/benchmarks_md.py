"""Replacing one section of BENCHMARKS.md, for every benchmark in tools/."""

from __future__ import annotations

from pathlib import Path

PATH = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def write_section(heading: str, section: str) -> None:
    """Replace the ``## ...`` section whose heading starts with ``heading``
    (up to the next ``## ``) by ``section``, or append it."""
    text = PATH.read_text(encoding="utf-8") if PATH.exists() else "# Benchmarks\n"
    if heading in text:
        start = text.index(heading)
        nxt = text.find("\n## ", start + 1)
        end = len(text) if nxt < 0 else nxt + 1
        text = text[:start] + section.rstrip("\n") + "\n" + ("\n" + text[end:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    PATH.write_text(text, encoding="utf-8")


def command_line(script: str, parser, args) -> str:
    """The command that reproduces a run: options that differ from their defaults, then ``--write``."""
    options = [f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
               for k, v in vars(args).items() if k != "write" and v != parser.get_default(k)]
    return " ".join([f"python tools/{script}", *options, "--write"])


def publish(heading: str, section: str, write: bool) -> None:
    """Print a benchmark's section, and with ``write`` put it into BENCHMARKS.md."""
    print(section)
    if write:
        write_section(heading, section)
