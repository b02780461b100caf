"""``popcount(x)``: the number of set bits of a uint64, in one instruction.

Binary codes (SPEC §5.10) are compared by the Hamming distance of their
64-bit words; this is LLVM's ``llvm.ctpop`` intrinsic, which x86-64 CPUs
with POPCNT (every one since 2008) and ARM64 run as one instruction. numba
has no popcount of its own, and a shift-and-mask loop was several times slower.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def popcount(typingctx, x):
    if x != types.uint64:
        return None
    sig = types.uint64(x)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64]), "llvm.ctpop.i64")
        return builder.call(fn, [args[0]])

    return sig, codegen
