"""``prefetch_row(array, i)``: ask the CPU to start loading row ``i`` of an
array; ``prefetch_whole_row(array, i)``: every cache line of it.

HNSW search jumps between rows at random; starting the load of the next
neighbour's vector while the current distance is computed hides part of the
memory latency (hnswlib does the same with ``_mm_prefetch``). This is LLVM's
``llvm.prefetch`` intrinsic; it never faults, so a stale index only wastes
the hint. Callers still check ``i`` against the array bounds first.

A walk measures every unvisited neighbour of a node in turn. Asking for the
whole rows of all of them before the first distance lets their misses
overlap: hardware prefetchers follow a row only after its first lines
missed, and a short row (384 int8 codes: six lines) is over by then. On
minilm-384 (100k) this made the int8 walk at ef 64 about 1.5x faster and the
float32 one 1.15-1.45x (measured against one-line prefetching of the next
neighbour, hnswlib's way).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import kernel


def _prefetch(context, builder, array_type, array, index, offset):
    """Emit ``llvm.prefetch`` of the byte ``offset`` of row ``index`` (both intp)."""
    ary = context.make_array(array_type)(context, builder, array)
    stride = builder.extract_value(ary.strides, 0)
    row = builder.add(builder.ptrtoint(ary.data, ir.IntType(64)), builder.mul(index, stride))
    pointer = builder.inttoptr(builder.add(row, offset), ir.IntType(8).as_pointer())
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [pointer.type, i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
    # read access, high temporal locality, data cache
    builder.call(fn, [pointer, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])


@intrinsic
def prefetch_row(typingctx, array, index):
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        _prefetch(context, builder, signature.args[0], args[0], i, ir.Constant(ir.IntType(64), 0))
        return context.get_dummy_value()

    return types.void(array, index), codegen


@intrinsic
def prefetch_at(typingctx, array, index, offset):
    """Like :func:`prefetch_row`, for the byte ``offset`` into row ``index``."""
    if not all((isinstance(array, types.Array), isinstance(index, types.Integer), isinstance(offset, types.Integer))):
        return None

    def codegen(context, builder, signature, args):
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        o = context.cast(builder, args[2], signature.args[2], types.intp)
        _prefetch(context, builder, signature.args[0], args[0], i, o)
        return context.get_dummy_value()

    return types.void(array, index, offset), codegen


@kernel(inline="always")
def prefetch_whole_row(array, i):
    """Every 64-byte line of row ``i`` of a C-contiguous 2-d ``array``."""
    row_bytes = array.strides[0]
    for offset in range(0, row_bytes, 64):
        prefetch_at(array, i, offset)
    prefetch_at(array, i, row_bytes - 1)  # the row's last line, where rows are not line-aligned
