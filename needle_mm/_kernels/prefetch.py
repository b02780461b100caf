"""``prefetch_row(array, i)``: ask the CPU to start loading row ``i`` of an array.

HNSW search jumps between rows at random; starting the load of the next
neighbour's vector while the current distance is computed hides part of the
memory latency (hnswlib does the same with ``_mm_prefetch``). This is LLVM's
``llvm.prefetch`` intrinsic; it never faults, so a stale index only wastes
the hint. Callers still check ``i`` against the array bounds first.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch_row(typingctx, array, index):
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None
    sig = types.void(array, index)

    def codegen(context, builder, signature, args):
        array_type, index_type = signature.args
        ary = context.make_array(array_type)(context, builder, args[0])
        i = context.cast(builder, args[1], index_type, types.intp)
        stride = builder.extract_value(ary.strides, 0)
        address = builder.add(builder.ptrtoint(ary.data, ir.IntType(64)), builder.mul(i, stride))
        pointer = builder.inttoptr(address, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [pointer.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read access, high temporal locality, data cache
        builder.call(fn, [pointer, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen
