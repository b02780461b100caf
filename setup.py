"""needle_mm's build. pyproject.toml holds the metadata; this adds one optional
extension module, ``needle_mm._kernels._aot``: the read path's kernels compiled
ahead of time with numba.pycc (``needle_mm/_kernels/aot_build.py``), so a
process that only reads and searches never imports numba.

Environment:

- ``NEEDLE_MM_AOT``: unset / ``auto`` builds the extension if it can; a
  failure (no C compiler, a pycc error, ...) is a warning and needle_mm is
  installed without it, running on numba's JIT. ``0`` skips it; ``1``
  requires it (a failure fails the build).
- ``NEEDLE_MM_AOT_CPU``: the LLVM CPU to compile for. Default ``host``: this
  machine's CPU, right for ``pip install .`` from source (the generic CPU
  is several times slower for float16 collections). A wheel meant for other
  machines wants a baseline such as ``x86-64-v3`` or ``generic``; an
  extension built for ``host`` is ignored at run time on a CPU that lacks one
  of the build machine's instruction sets.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import types

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
AOT = "needle_mm._kernels._aot"


def _say(message: str) -> None:
    print(f"needle_mm: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _this_tree():
    """``needle_mm`` importable from this source tree as a stub package: its
    ``__init__`` (and the runtime dependencies it imports) never runs, and a
    needle_mm installed elsewhere is not the one imported."""
    saved = {name: mod for name, mod in sys.modules.items() if name == "needle_mm" or name.startswith("needle_mm.")}
    for name in saved:
        del sys.modules[name]
    stub = types.ModuleType("needle_mm")
    stub.__path__ = [os.path.join(HERE, "needle_mm")]
    sys.modules["needle_mm"] = stub
    try:
        yield
    finally:
        for name in [n for n in sys.modules if n == "needle_mm" or n.startswith("needle_mm.")]:
            del sys.modules[name]
        sys.modules.update(saved)


class BuildExt(build_ext):
    """build_ext that builds the ahead-of-time kernels, or warns and goes on without them."""

    _aot_failed = False
    _aot_record = None  # the build record written beside the extension, once built

    def run(self):
        self._aot_failed, self._aot_record = False, None
        super().run()

    def build_extension(self, ext):
        if ext.name != AOT:
            return super().build_extension(ext)
        mode = os.environ.get("NEEDLE_MM_AOT", "auto").strip().lower()
        cpu = os.environ.get("NEEDLE_MM_AOT_CPU", "host").strip() or "host"
        started = time.perf_counter()
        try:
            self._build_aot(ext, cpu)
        except Exception as exc:  # any failure means "no extension", never a failed install
            self._aot_failed = True
            if mode in ("1", "require", "required"):
                raise
            _say(f"the ahead-of-time kernels were not built ({type(exc).__name__}: {str(exc)[:2000]}); "
                 "needle_mm will run its kernels on numba's JIT")
            return
        _say(f"ahead-of-time kernels built for CPU {cpu!r} in {time.perf_counter() - started:.0f} s")

    def _build_aot(self, ext, cpu: str):
        self._aot_record = os.path.splitext(self.get_ext_fullpath(AOT))[0] + ".json"  # aot_build.record_path
        for old in (self.get_ext_fullpath(AOT), self._aot_record):  # a failed build leaves nothing behind
            if os.path.exists(old):
                os.remove(old)
        # Every kernel is compiled from scratch for the extension: numba's
        # on-disk cache (which would go next to the sources) is kept out of the tree.
        cache = tempfile.mkdtemp(prefix="needle-aot-numba-cache-")
        previous = os.environ.get("NUMBA_CACHE_DIR")
        os.environ["NUMBA_CACHE_DIR"] = cache
        try:
            config = sys.modules.get("numba.core.config")
            if config is not None:  # numba already imported: it read its environment then
                config.CACHE_DIR = cache
            with _this_tree():
                from needle_mm._kernels.aot_build import build_record, make_cc

                record = build_record(cpu)
                cc = make_cc(cpu, record)
                full = cc.distutils_extension()  # the mixin sources, flags and libraries pycc links with
                full._prepare_object_files(self)  # LLVM: the kernels -> one object file (most of the build)
            for attr in ("sources", "depends", "define_macros", "include_dirs", "libraries", "library_dirs",
                         "extra_compile_args", "extra_link_args", "extra_objects"):
                setattr(ext, attr, list(getattr(full, attr) or ()))
            force, self.force = self.force, True  # always relink: "up to date" cannot see an edited kernel
            try:
                super().build_extension(ext)
            finally:
                self.force = force
            with open(self._aot_record, "w", encoding="utf-8") as f:
                json.dump(record, f, sort_keys=True)
        finally:
            if previous is None:
                os.environ.pop("NUMBA_CACHE_DIR", None)
            else:
                os.environ["NUMBA_CACHE_DIR"] = previous
            shutil.rmtree(cache, ignore_errors=True)

    def copy_extensions_to_source(self):
        """Editable installs and --inplace: the extension and its record into the
        source tree (nothing after a failure)."""
        if self._aot_failed:
            self.extensions = [e for e in self.extensions if e.name != AOT]
        super().copy_extensions_to_source()
        if self._aot_record and os.path.exists(self._aot_record):
            build_py = self.get_finalized_command("build_py")
            package_dir = build_py.get_package_dir(AOT.rpartition(".")[0])
            self.copy_file(self._aot_record, os.path.join(package_dir, os.path.basename(self._aot_record)),
                           level=self.verbose)

    def get_outputs(self):
        outputs = [o for o in super().get_outputs() if not self._aot_failed or os.path.exists(o)]
        if self._aot_record and os.path.exists(self._aot_record):
            outputs.append(self._aot_record)
        return outputs


def extensions() -> list[Extension]:
    if os.environ.get("NEEDLE_MM_AOT", "auto").strip().lower() in ("0", "no", "off", "false"):
        return []
    # sources and flags are filled in by BuildExt from numba.pycc, imported only when it builds
    return [Extension(AOT, sources=[])]


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
