"""``needle``: the ``needle_mm`` package under the name the migration guide uses.

``import needle`` gives the very module ``needle_mm`` (not a copy), and
``import needle.ops``, ``from needle.errors import NeedleError`` and the like
give ``needle_mm``'s own submodules, so classes, exceptions and module state
are shared whichever name a program uses.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

import needle_mm


class _SubmoduleAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``needle.X`` to the already-importable ``needle_mm.X``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("needle."):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module("needle_mm" + spec.name[len("needle"):])

    def exec_module(self, module):
        pass  # needle_mm's import already ran it


if not any(isinstance(finder, _SubmoduleAlias) for finder in sys.meta_path):
    sys.meta_path.insert(0, _SubmoduleAlias())
sys.modules[__name__] = needle_mm
