"""The README's Python blocks run as written."""

from __future__ import annotations

import os
import re

import pytest

from conftest import ROOT


# The "Shards on Ray" block runs Ray, whose own modules warn about their settings and dependencies.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*", "ignore::FutureWarning:ray.*")
def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert "(384,)" in capsys.readouterr().out
