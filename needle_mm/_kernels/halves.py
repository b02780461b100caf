"""``as_f32(x)``: a stored vector element as float32, whatever the storage dtype.

Collections may store vectors as IEEE half floats (``dtype="f16"``, SPEC §5.8).
numba has no float16 type, so kernels see those regions as ``uint16`` arrays
and every read of a stored element goes through ``as_f32``: the identity for
float32 storage (inlined into the kernel's IR: float32 kernels compile to the
same machine code as without it, checked), and for ``uint16`` LLVM's own
half-to-float extension, which x86-64 CPUs with F16C (every one since 2012)
and ARM64 run as one vector instruction per 8 or 16 elements inside the
vectorised distance loops. Exact for all 65,536 values (tested against numpy).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from . import kernel


@intrinsic
def _half_to_f32(typingctx, bits):
    """The float32 value of a half given as its 16 bits."""
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


def as_f32(x):
    """Pure-Python twin (kernels use the overload below)."""
    if isinstance(x, np.uint16):
        return np.uint16(x).view(np.float16).astype(np.float32)
    return np.float32(x)


@overload(as_f32, inline="always")
def _as_f32_overload(x):
    if x == types.float32:
        return lambda x: x
    if x == types.uint16:
        return lambda x: _half_to_f32(x)
    return None


@kernel()
def widen_all(halves):
    """float32 copy of a uint16 array of halves (for tests and tools)."""
    out = np.empty(halves.shape[0], dtype=np.float32)
    for i in range(halves.shape[0]):
        out[i] = as_f32(halves[i])
    return out
