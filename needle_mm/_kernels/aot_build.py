"""The ahead-of-time kernels: what the optional extension ``_aot`` holds and how
setup.py builds it with ``numba.pycc``.

The extension is an ordinary CPython module, so a process that searches
through it never imports numba or llvmlite (``api`` picks it, or the JIT).
It holds every serial kernel of search and graph construction, each exported
once per signature in :data:`EXPORTS`; the parallel (``prange``) kernels
cannot be compiled ahead of time (their code calls numba's threading layer,
which the extension does not contain), so ``api`` runs serial ones on Python
threads instead (a build's phases are serial kernels on threads everywhere).

Two pycc gaps are closed here (numba 0.68):

* pycc compiles an exported function with fresh compiler flags, dropping the
  kernel's own ``fastmath`` / ``error_model`` / ``inline`` options. So each
  kernel is exported through a thin Python function that *calls* its
  dispatcher: the dispatcher compiles the kernel and everything it calls
  with their own options, and pycc links that code in.
* The generated CPython wrapper holds the GIL unless its flags say
  otherwise: ``numba.pycc.compiler.Flags`` is replaced for the build by
  flags with ``release_gil`` (as ``nogil=True``) and numpy's error model.

The exported functions check nothing (an array of another dtype, rank or
layout is read as if it had the signature's: wrong answers or a segfault),
which is why every call goes through ``api``'s checks, driven by the same
table. Beside the extension, the build writes its record (``_aot.<the
extension's platform tag>.json``, :func:`record_path`; :func:`build_record`:
the hash of the kernel sources it was built from, the CPU it was built for,
a build id), which the extension also holds
(``build_info()``, JSON bytes): ``api`` reads the file before it loads the
extension, and uses the extension only if it was built from these kernel
sources, for a CPU this one can run, and holds the same record.

This module imports numba only inside the build functions: ``api`` reads
:data:`EXPORTS` and calls :func:`source_hash` / :func:`cpu_flags` at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

EXTENSION = "_aot"  # -> needle_mm._kernels._aot
ROUTER = "api.py"  # the one kernel source not hashed: it calls the extension, it is not compiled into it

# An argument is "i64", "f64" or "bool" (a scalar), "patch" (the HNSW graph-patch
# tuple: u8[:], i32[:], i64[:, :], i64[:, :]), or "<dtype>:<ndim>" for a
# C-contiguous aligned array the kernel only reads, "<dtype>:<ndim>w" for one
# it writes. "V:2" is the vectors: float32 or the uint16 bits of float16
# rows, one export per storage dtype (name__f32, name__u16).
# A result is "void", "i64", or arrays as above, comma-separated for a tuple.
# name: (kernel module, kernel, result, arguments)
EXPORTS = {
    "search_knn": ("hnsw", "search_knn", "i64", (
        "V:2", "f32:1", "i64", "i32:2", "u8:1", "u32:1", "i32:2", "patch", "i64", "i64",
        "f32:2", "f32:1", "u8:1", "i64", "i64", "u16:2w", "u16:1w", "f32:2w", "i32:2w", "bool", "f64:2w", "i64:2w")),
    # the lean call (one 1-D query, its norm computed by the kernel): hnsw.search_one
    "search_one": ("hnsw", "search_one", "i64", (
        "V:2", "f32:1", "i64", "i32:2", "u8:1", "u32:1", "i32:2", "patch", "i64", "i64",
        "f32:1", "u8:1", "i64", "i64", "u16:2w", "u16:1w", "f32:2w", "i32:2w", "f64:2w", "i64:2w")),
    "search_one_codes": ("hnsw", "search_one_codes", "i64", (
        "V:2", "f32:1", "i8:2", "f32:2", "i64", "i32:2", "u8:1", "u32:1", "i32:2", "patch", "i64", "i64",
        "f32:1", "u8:1", "i64", "i64", "i64", "u16:2w", "u16:1w", "f32:2w", "i32:2w", "f64:2w", "i64:2w")),
    "search_one_bits": ("hnsw", "search_one_codes", "i64", (
        "V:2", "f32:1", "u64:2", "f32:2", "i64", "i32:2", "u8:1", "u32:1", "i32:2", "patch", "i64", "i64",
        "f32:1", "u8:1", "i64", "i64", "i64", "u16:2w", "u16:1w", "f32:2w", "i32:2w", "f64:2w", "i64:2w")),
    # graph construction: the phases of hnsw.py's batches, shared by Python threads
    "build_candidates": ("hnsw", "build_candidates", "void", (
        "V:2", "f32:1", "V:2", "f32:1", "i64", "i32:2", "u8:1", "u32:1", "i32:2", "patch", "i64", "i64", "i64", "i64",
        "i64", "u16:2w", "i64", "u16:1w", "f32:2w", "i32:2w", "f32:3w", "i32:3w", "i64:2w", "i64", "i64")),
    "build_select": ("hnsw", "build_select", "void", (
        "V:2", "f32:1", "V:2", "f32:1", "i64", "i64", "u8:1", "i64", "i64", "f32:3", "i32:3", "i64:2", "i32:2w",
        "u32:1", "i32:2w", "i64", "i64", "i64")),
    "reverse_edges": ("hnsw", "reverse_edges", "i64:1w,i64:1w,i64:1w,i64:1w,i64", (
        "i64", "i64", "u8:1", "i32:2", "u32:1", "i32:2")),
    "plan_copies": ("hnsw", "plan_copies", "i32:1w,i32:2w,i32:1w,i32:2w,i64:1w", (
        "i64:1", "i64:1", "i64:1", "i64", "i64", "u8:1", "i32:2", "u32:1", "i32:2", "patch")),
    "build_reverse": ("hnsw", "build_reverse", "void", (
        "V:2", "f32:1", "V:2", "f32:1", "i64", "i64", "i64:1", "i64:1", "i64:1", "i64:1", "i64", "i64:1", "i32:2w",
        "i32:2w", "i32:2w", "u32:1", "i32:2w", "i64", "i64", "i64")),
    "search_knn_codes": ("hnsw", "search_knn_codes", "i64", (
        "V:2", "f32:1", "i8:2", "f32:2", "i64", "i32:2", "u8:1", "u32:1", "i32:2", "patch", "i64", "i64",
        "f32:2", "f32:1", "u8:1", "i64", "i64", "i64", "u16:2w", "u16:1w", "f32:2w", "i32:2w", "bool", "f64:2w",
        "i64:2w")),
    "search_knn_bits": ("hnsw", "search_knn_codes", "i64", (
        "V:2", "f32:1", "u64:2", "f32:2", "i64", "i32:2", "u8:1", "u32:1", "i32:2", "patch", "i64", "i64",
        "f32:2", "f32:1", "u8:1", "i64", "i64", "i64", "u16:2w", "u16:1w", "f32:2w", "i32:2w", "bool", "f64:2w",
        "i64:2w")),
    "rescore_knn": ("hnsw", "rescore_knn", "i64", (
        "V:2", "f32:1", "f32:2", "f32:1", "i64", "i64:2", "i64", "f64:2w", "i64:2w")),
    "exact_topk_serial": ("exact", "exact_topk_serial", "f32:2w,i64:2w", (
        "V:2", "f32:1", "f32:2", "f32:1", "i64", "u8:1", "i64", "i64:1")),
    # the pieces of exact_topk_parallel, for Python threads
    "exact_scan": ("exact", "_scan", "void", (
        "V:2", "f32:1", "f32:2", "f32:1", "i64", "u8:1", "i64:1", "i64", "i64", "i64", "i64", "f32:3w", "i64:3w",
        "i64")),
    "exact_merge": ("exact", "_merge", "void", ("f32:3", "i64:3", "i64", "f32:2w", "i64:2w", "i64")),
    "gather_blobs__1d": ("blobs", "gather_blobs", "u8:1w,i64:1w", ("u64:1", "u8:1", "i64:1")),
    "gather_blobs__2d": ("blobs", "gather_blobs", "u8:1w,i64:1w", ("u64:1", "u8:1", "i64:2")),
    "square_norm": ("hnsw", "square_norm", "f64", ("f32:1",)),
    "query_norms": ("hnsw", "query_norms", "i64", ("f32:2", "bool", "f32:1w")),
    "csr_any": ("filters", "csr_any", "b1:1w", ("u64:1", "b1:1")),
    "csr_length_is": ("filters", "csr_length_is", "b1:1w", ("u64:1", "i64")),
    "accumulate_serial": ("sparse", "accumulate_serial", "void", (
        "u32:1", "u64:1", "u32:1", "f32:1", "i64:1", "u32:1", "f32:1", "f32:2w", "u8:2w", "u32:2w", "i64:1w")),
    "rank_serial": ("sparse", "rank_serial", "void", (
        "f32:2w", "u8:2w", "u32:2w", "i64:1", "u8:1", "i64", "f32:2w", "i64:2w")),
    "check_chunk": ("sparse", "check_chunk", "i64", ("u32:1", "u64:1", "u32:1", "i64", "i64", "i64")),
    # BM25 over text chunks: keys, list_offsets, slots, tfs, doc_lengths, params (k1, b, avgdl) or the cached
    # impacts, the queries (q_off, q_keys, q_weights), the scratch (scores, marks, hits, nhits)
    "accumulate_bm25_serial": ("text", "accumulate_bm25_serial", "void", (
        "u64:1", "u64:1", "u32:1", "u32:1", "u32:1", "f64:1", "i64:1", "u64:1", "f64:1", "f64:2w", "u8:2w", "u32:2w",
        "i64:1w")),
    "accumulate_impacts_serial": ("text", "accumulate_impacts_serial", "void", (
        "u64:1", "u64:1", "u32:1", "f64:1", "i64:1", "u64:1", "f64:1", "f64:2w", "u8:2w", "u32:2w", "i64:1w")),
    "bm25_impacts": ("text", "bm25_impacts", "void", ("u32:1", "u32:1", "u32:1", "f64:1", "f64:1w")),
    "rank_bm25_serial": ("text", "rank_bm25_serial", "void", (
        "f64:2w", "u8:2w", "u32:2w", "i64:1", "u8:1", "i64", "f64:2w", "i64:2w")),
    # BM25 a window of slots at a time: the chunk's lists, doc_lengths, its cached impacts (or none), params, its
    # slot range and window, the queries, the exclusion bitmap, the window scratch (scores, hits) and the heaps
    "windows_serial": ("text_windows", "windows_serial", "void", (
        "u64:1", "u64:1", "u32:1", "u32:1", "u32:1", "f64:1", "f64:1", "i64", "i64", "i64", "i64:1", "u64:1", "f64:1",
        "u8:1", "f64:2w", "u32:2w", "f64:2w", "i64:2w")),
    "sort_heaps": ("text_windows", "sort_heaps", "void", ("f64:2w", "i64:2w", "f64:2w", "i64:2w")),
    "count_live_postings": ("text", "count_live_postings", "void", ("u64:1", "u64:1", "u32:1", "u8:1", "u64:1", "i64:1w")),
    "live_length_stats": ("text", "live_length_stats", "void", ("u32:1", "u8:1", "i64:1w")),
    "check_text_chunk": ("text", "check_text_chunk", "i64", ("u64:1", "u64:1", "u32:1", "u32:1", "i64", "i64")),
}
VARIANTS = ("f32", "u16")  # storage dtypes of "V": export name suffixes
DTYPES = {"f32": "float32", "f64": "float64", "i8": "int8", "u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64",
          "i32": "int32", "i64": "int64", "b1": "bool"}
PATCH = ("u8:1", "i32:1", "i64:2", "i64:2")


def record_path(extension_path: str) -> str:
    """Where the build record of the extension file ``extension_path`` is: beside
    it, named like it (one per Python version and platform), ending in .json."""
    base, _ = os.path.splitext(extension_path)
    return base + ".json"


def export_names() -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """Every exported function: {name: (entry of EXPORTS, result, arguments)}, "V" resolved per variant."""
    out = {}
    for name, (_, _, result, args) in EXPORTS.items():
        if any(a.startswith("V:") for a in args):
            for tag in VARIANTS:
                out[f"{name}__{tag}"] = (name, result, tuple(a.replace("V:", f"{tag}:") for a in args))
        else:
            out[name] = (name, result, args)
    return out


def source_files(directory: str | None = None) -> list[str]:
    """The kernel sources an extension is built from: every module of this
    package but the router (the export table above included)."""
    directory = directory or os.path.dirname(os.path.abspath(__file__))
    return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".py") and f != ROUTER)


def source_hash(directory: str | None = None) -> str:
    """sha256 over the kernel sources' names and bytes."""
    h = hashlib.sha256()
    for path in source_files(directory):
        with open(path, "rb") as f:
            data = f.read()
        h.update(os.path.basename(path).encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


# /proc/cpuinfo flags that name instruction sets LLVM may emit (x86; an ARM
# CPU's "Features" line is taken whole): an extension built for the host CPU
# is used only where every one of them is present, never where it would
# stop on an illegal instruction (a wheel or image built on a newer machine).
_ISA_FLAG = re.compile(r"^(sse|ssse|pni|avx|fma|f16c|bmi|abm|lzcnt|popcnt|movbe|adx|aes|pclmul|sha|gfni|vaes|vpclmul|"
                       r"amx|cx16|lahf|3dnow|prefetch)")


def cpu_flags() -> list[str] | None:
    """The instruction-set flags of this machine's first CPU, or None where
    /proc/cpuinfo does not say (then no check is made)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:  # the first CPU's block only: reading every CPU's can be slow
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "flags":
                    return sorted(x for x in value.split() if _ISA_FLAG.match(x))
                if key == "Features":
                    return sorted(value.split())
    except OSError:
        pass
    return None


# ----------------------------------------------------------------- build side (numba)

def _numba_type(spec: str):
    from numba import types as t

    if spec == "void":
        return t.void
    if spec == "i64":
        return t.int64
    if spec == "f64":
        return t.float64
    if spec == "bool":
        return t.boolean
    if spec == "patch":
        return t.Tuple(tuple(_numba_type(p) for p in PATCH))
    if "," in spec:
        return t.Tuple(tuple(_numba_type(p) for p in spec.split(",")))
    dtype, _, rank = spec.partition(":")
    writable = rank.endswith("w")
    return t.Array(getattr(t, DTYPES[dtype]), int(rank.rstrip("w")), "C", readonly=not writable)


def _patch_pycc_flags():
    """Make pycc's CPython wrappers release the GIL and use numpy's error model."""
    import numba.pycc.compiler as pycc_compiler
    from numba.core.compiler import Flags

    if getattr(pycc_compiler.Flags, "_needle_aot", False):
        return

    class AOTFlags(Flags):
        _needle_aot = True

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.release_gil = True
            self.error_model = "numpy"

    pycc_compiler.Flags = AOTFlags


def _thin_wrapper(dispatcher, name: str):
    """A plain function with the kernel's parameters that calls the kernel's dispatcher."""
    import inspect

    params = ", ".join(inspect.signature(dispatcher.py_func).parameters)
    src = f"def {name}({params}):\n    return _kernel({params})\n"
    namespace = {"_kernel": dispatcher}
    exec(compile(src, f"<ahead-of-time export {name}>", "exec"), namespace)
    return namespace[name]


def build_record(cpu: str) -> dict:
    """What a build of the extension for LLVM CPU ``cpu`` records: the kernel
    sources' hash, the CPU (for "host": its name and instruction-set flags,
    which the machine running it must have), the compiler's versions, an id."""
    import uuid

    import numba
    import numpy

    record = {"sources": source_hash(), "cpu": cpu, "numba": numba.__version__, "numpy": numpy.__version__,
              "build": uuid.uuid4().hex}
    if cpu == "host":
        import llvmlite.binding as llvm

        record["cpu_name"] = llvm.get_host_cpu_name()
        record["cpu_flags"] = cpu_flags()
    return record


def make_cc(cpu: str, record: dict):
    """The ``numba.pycc.CC`` of ``needle_mm._kernels._aot`` with every export of
    :data:`EXPORTS` and ``build_info`` (``record`` as JSON), for LLVM CPU ``cpu``
    ("host": this machine; "generic" or a name such as "x86-64-v3" for others)."""
    import importlib
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycc's NumbaPendingDeprecationWarning
        from numba.pycc import CC

    _patch_pycc_flags()
    cc = CC(EXTENSION, source_module=__name__)
    cc.target_cpu = "" if cpu == "generic" else cpu
    for name, (entry, result, args) in export_names().items():
        module, kernel_name, _, _ = EXPORTS[entry]
        dispatcher = getattr(importlib.import_module(f"{__package__}.{module}"), kernel_name)
        sig = _numba_type(result)(*(_numba_type(a) for a in args))
        cc.export(name, sig)(_thin_wrapper(dispatcher, name))

    # build_info() -> u8[:]: the JSON of the build record, a constant of the extension
    namespace = {"_INFO": np.frombuffer(json.dumps(record, sort_keys=True).encode(), dtype=np.uint8).copy()}
    exec(compile("def build_info():\n    return _INFO.copy()\n", "<ahead-of-time export build_info>", "exec"), namespace)
    cc.export("build_info", _numba_type("u8:1w")())(namespace["build_info"])
    return cc
