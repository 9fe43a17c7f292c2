"""16-lane table gathers for the numba kernels: one AVX-512 ``vpgatherdd`` where the CPU has it.

LLVM does not vectorise ``dst[q] = row[idx[q]]`` by itself (it cannot prove the gathered row and the
destination are disjoint), so the kernels call these helpers explicitly:

    gather16(dst, doff, src, idx, ioff)       dst[doff:doff+16]  = src[idx[ioff:ioff+16]]
    gather_add16(dst, doff, src, idx, ioff)   dst[doff:doff+16] += src[idx[ioff:ioff+16]]
    table_gather_add16(dst, doff, table, x, xoff, w, woff)
        dst[doff:doff+16] += table[(x[xoff:xoff+16] & 0xFF) + w[woff:woff+16]]   (x, w int32)
    lookup_row(dst, doff, lut, roff, x, xoff, n)
        dst[doff:doff+n] = lut[roff + x[xoff:xoff+n]], written in whole 32-lane blocks (may write and
        read up to 31 elements past n). int32 tables: 16-lane gathers; int16/uint16 tables: the row's
        256 entries sit in 8 registers and 32 lookups are 4 ``vpermi2w`` + 3 blends (no memory gather)
    lookup_add_rows(dst, doff, dstride, lut, roff, x, xoff, xstride, n, nrows)
        for r < nrows: dst[doff + r*dstride : +n] += lut[roff + x[xoff + r*xstride : +n]] (int32 dst; the
        same lookups as lookup_row, widened exactly and added; the row's registers are loaded once for
        all nrows rows; whole 32-lane blocks, so dst and x rows need 31 spare elements)
    rows_add_block(dst, doff, table, offs, ooff, n, shift)   (rows_add16 / rows_add32 / rows_add64)
        dst[doff : doff+L] += sum_{k<n} table[offs[ooff+k] + shift : ... + L] for L = 16, 32 or 64 lanes:
        register-blocked row sums (L/16 16-lane sums held in registers across the k loop, one offset load
        per L lanes; int32 dst, int32 offs; int32 table, or int16 / uint16 rows widened exactly)
    lookup_cols16(dst, doff, dstride, lut_strips, x, xoff, v0)
        dst[doff + j*dstride + i] = lut[v0 + j, x[xoff + i]] for i, j < 16 (16-bit tables): a 16x16 block
        of product rows from 16 table columns, as 16 row loads from the strip layout
        ``lut_strips[v0 // 16, x, 0:16] = lut[v0 : v0 + 16, x]`` and a 16x16 transpose of 16-bit lanes
        (64 unpack / lane shuffles, plain LLVM vector IR: AVX2 or better, no gathers, no AVX-512 needed);
        ``table_strips(lut, strips)`` writes that layout of a flat 16-bit table
    strided_load16(dst, doff, src, soff, stride)
        dst[doff + k] = src[soff + k * stride] for k < 16 (src int32 or uint8, dst int32 or uint8 keeping
        the low byte): one 16-lane gather, used to transpose channels-last blocks (a uint8 src is read as
        dwords: up to 3 bytes past the last element must be readable)

dst, src, table are int32 arrays, idx a uint8 array (table bytes), offsets are element offsets into the
flattened (C-contiguous) arrays. Without AVX-512 the same names are plain scalar loops, so the kernels
compile and stay exact everywhere (``rows_add*`` and ``lookup_cols16`` are plain LLVM vector IR on every
CPU).
"""
from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_FEATURES = llvm.get_host_cpu_features().flatten().split(",")
HAVE_AVX512 = "+avx512f" in _FEATURES
HAVE_AVX512BW = HAVE_AVX512 and "+avx512bw" in _FEATURES  # 16-bit lane permutes (vpermi2w)
HAVE_VNNI = "+avx512vnni" in _FEATURES or "+avxvnni" in _FEATURES  # int8 dot products (XLA's int8 convolutions)


def _gather_codegen(accumulate: bool):
    def codegen(context, builder, signature, args):
        dst_v, doff, src_v, idx_v, ioff = args
        dst = context.make_array(signature.args[0])(context, builder, dst_v)
        src = context.make_array(signature.args[2])(context, builder, src_v)
        idx = context.make_array(signature.args[3])(context, builder, idx_v)
        i8, i16, i32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
        v16i8, v16i32 = ir.VectorType(i8, 16), ir.VectorType(i32, 16)
        index = builder.load(builder.bitcast(builder.gep(idx.data, [ioff]), v16i8.as_pointer()), align=1)
        fnty = ir.FunctionType(v16i32, [v16i32, src.data.type, v16i32, i16, i32])
        gather = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx512.gather.dpi.512")
        values = builder.call(gather, [ir.Constant(v16i32, None), src.data, builder.zext(index, v16i32),
                                       ir.Constant(i16, 0xFFFF), ir.Constant(i32, 4)])
        target = builder.bitcast(builder.gep(dst.data, [doff]), v16i32.as_pointer())
        if accumulate:
            values = builder.add(builder.load(target, align=4), values)
        builder.store(values, target, align=4)
        return context.get_dummy_value()

    return codegen


@intrinsic
def _avx512_gather16(typingctx, dst, doff, src, idx, ioff):
    return types.void(dst, doff, src, idx, ioff), _gather_codegen(False)


@intrinsic
def _avx512_gather_add16(typingctx, dst, doff, src, idx, ioff):
    return types.void(dst, doff, src, idx, ioff), _gather_codegen(True)


def _table_gather_codegen(context, builder, signature, args):
    dst_v, doff, table_v, x_v, xoff, w_v, woff = args
    dst = context.make_array(signature.args[0])(context, builder, dst_v)
    table = context.make_array(signature.args[2])(context, builder, table_v)
    xa = context.make_array(signature.args[3])(context, builder, x_v)
    wa = context.make_array(signature.args[5])(context, builder, w_v)
    i16, i32 = ir.IntType(16), ir.IntType(32)
    v16i32 = ir.VectorType(i32, 16)
    xv = builder.load(builder.bitcast(builder.gep(xa.data, [xoff]), v16i32.as_pointer()), align=4)
    wv = builder.load(builder.bitcast(builder.gep(wa.data, [woff]), v16i32.as_pointer()), align=4)
    index = builder.add(builder.and_(xv, ir.Constant(v16i32, [255] * 16)), wv)
    fnty = ir.FunctionType(v16i32, [v16i32, table.data.type, v16i32, i16, i32])
    gather = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx512.gather.dpi.512")
    values = builder.call(gather, [ir.Constant(v16i32, None), table.data, index, ir.Constant(i16, 0xFFFF),
                                   ir.Constant(i32, 4)])
    target = builder.bitcast(builder.gep(dst.data, [doff]), v16i32.as_pointer())
    builder.store(builder.add(builder.load(target, align=4), values), target, align=4)
    return context.get_dummy_value()


@intrinsic
def _avx512_table_gather_add16(typingctx, dst, doff, table, x, xoff, w, woff):
    return types.void(dst, doff, table, x, xoff, w, woff), _table_gather_codegen


@njit(inline="always", boundscheck=False)
def _scalar_table_gather_add16(dst, doff, table, x, xoff, w, woff):  # pragma: no cover - compiled
    for k in range(16):
        dst[doff + k] += table[(x[xoff + k] & 0xFF) + w[woff + k]]


@njit(inline="always", boundscheck=False)
def _scalar_gather16(dst, doff, src, idx, ioff):  # pragma: no cover - compiled
    for k in range(16):
        dst[doff + k] = src[idx[ioff + k]]


@njit(inline="always", boundscheck=False)
def _scalar_gather_add16(dst, doff, src, idx, ioff):  # pragma: no cover - compiled
    for k in range(16):
        dst[doff + k] += src[idx[ioff + k]]


def _row_lookup(builder, row, dtype):
    """(lanes, lookup): ``lookup(index_ptr)`` returns ``row[x[0:lanes]]`` for the bytes at ``index_ptr``.
    int32 rows: 16-lane gathers from the 1 KiB row. 16-bit rows: the row is 8 registers of 32 words
    (loaded here, once); vpermi2w picks by index bits 0-5 from a pair, bits 6 and 7 select the pair."""
    i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
    if dtype.bitwidth == 32:
        v16i8, v16i32 = ir.VectorType(i8, 16), ir.VectorType(i32, 16)
        fnty = ir.FunctionType(v16i32, [v16i32, row.type, v16i32, i16, i32])
        gather = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx512.gather.dpi.512")

        def lookup16(xp):
            index = builder.zext(builder.load(builder.bitcast(xp, v16i8.as_pointer()), align=1), v16i32)
            return builder.call(gather, [ir.Constant(v16i32, None), row, index, ir.Constant(i16, 0xFFFF),
                                         ir.Constant(i32, 4)])
        return 16, lookup16
    v32i8, v32i16 = ir.VectorType(i8, 32), ir.VectorType(i16, 32)
    fnty = ir.FunctionType(v32i16, [v32i16, v32i16, v32i16])
    perm = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx512.vpermi2var.hi.512")
    parts = [builder.load(builder.bitcast(builder.gep(row, [ir.Constant(i64, 32 * m)]), v32i16.as_pointer()),
                          align=2) for m in range(8)]
    zero = ir.Constant(v32i16, None)
    bit6, bit7 = ir.Constant(v32i16, [64] * 32), ir.Constant(v32i16, [128] * 32)

    def lookup32(xp):
        index = builder.zext(builder.load(builder.bitcast(xp, v32i8.as_pointer()), align=1), v32i16)
        r = [builder.call(perm, [parts[2 * p], index, parts[2 * p + 1]]) for p in range(4)]
        hi6 = builder.icmp_unsigned("!=", builder.and_(index, bit6), zero)
        hi7 = builder.icmp_unsigned("!=", builder.and_(index, bit7), zero)
        low, high = builder.select(hi6, r[1], r[0]), builder.select(hi6, r[3], r[2])
        return builder.select(hi7, high, low)
    return 32, lookup32


def _lookup_row_codegen(context, builder, signature, args):
    dst_v, doff, lut_v, roff, x_v, xoff, n = args
    dst = context.make_array(signature.args[0])(context, builder, dst_v)
    lut = context.make_array(signature.args[2])(context, builder, lut_v)
    xa = context.make_array(signature.args[4])(context, builder, x_v)
    i64 = ir.IntType(64)
    dtype = signature.args[2].dtype
    lanes, lookup = _row_lookup(builder, builder.gep(lut.data, [roff]), dtype)
    vec = ir.VectorType(ir.IntType(dtype.bitwidth), lanes)
    blocks = builder.udiv(builder.add(n, ir.Constant(n.type, lanes - 1)), ir.Constant(n.type, lanes))
    with cgutils.for_range(builder, blocks) as loop:
        q = builder.mul(loop.index, ir.Constant(i64, lanes))
        values = lookup(builder.gep(xa.data, [builder.add(xoff, q)]))
        target = builder.gep(dst.data, [builder.add(doff, q)])
        builder.store(values, builder.bitcast(target, vec.as_pointer()), align=dtype.bitwidth // 8)
    return context.get_dummy_value()


@intrinsic
def _avx512_lookup_row(typingctx, dst, doff, lut, roff, x, xoff, n):
    return types.void(dst, doff, lut, roff, x, xoff, n), _lookup_row_codegen


@njit(inline="always", boundscheck=False)
def _scalar_lookup_row(dst, doff, lut, roff, x, xoff, n):  # pragma: no cover - compiled
    for q in range(n):
        dst[doff + q] = lut[roff + x[xoff + q]]


def _lookup_add_rows_codegen(context, builder, signature, args):
    dst_v, doff, dstride, lut_v, roff, x_v, xoff, xstride, n, nrows = args
    dst = context.make_array(signature.args[0])(context, builder, dst_v)
    lut = context.make_array(signature.args[3])(context, builder, lut_v)
    xa = context.make_array(signature.args[5])(context, builder, x_v)
    i32, i64 = ir.IntType(32), ir.IntType(64)
    v16i32 = ir.VectorType(i32, 16)
    dtype = signature.args[3].dtype
    lanes, lookup = _row_lookup(builder, builder.gep(lut.data, [roff]), dtype)  # row registers: once
    halves = [ir.Constant(v16i32, list(range(h, h + 16))) for h in range(0, lanes, 16)]
    widen = builder.sext if dtype.signed else builder.zext
    nrows64 = builder.sext(nrows, i64) if nrows.type.width < 64 else nrows
    blocks = builder.udiv(builder.add(n, ir.Constant(n.type, lanes - 1)), ir.Constant(n.type, lanes))
    with cgutils.for_range(builder, nrows64) as rloop:
        xbase = builder.add(xoff, builder.mul(rloop.index, xstride))
        dbase = builder.add(doff, builder.mul(rloop.index, dstride))
        with cgutils.for_range(builder, blocks) as loop:
            q = builder.mul(loop.index, ir.Constant(i64, lanes))
            values = lookup(builder.gep(xa.data, [builder.add(xbase, q)]))
            for h, half in enumerate(halves):  # 16 int32 lanes at a time, widened exactly
                part = values if lanes == 16 else widen(builder.shuffle_vector(values, values, half), v16i32)
                target = builder.bitcast(builder.gep(dst.data, [builder.add(dbase, builder.add(
                    q, ir.Constant(i64, 16 * h)))]), v16i32.as_pointer())
                builder.store(builder.add(builder.load(target, align=4), part), target, align=4)
    return context.get_dummy_value()


@intrinsic
def _avx512_lookup_add_rows(typingctx, dst, doff, dstride, lut, roff, x, xoff, xstride, n, nrows):
    return types.void(dst, doff, dstride, lut, roff, x, xoff, xstride, n, nrows), _lookup_add_rows_codegen


@njit(inline="always", boundscheck=False)
def _scalar_lookup_add_rows(dst, doff, dstride, lut, roff, x, xoff, xstride, n, nrows):  # pragma: no cover
    for r in range(nrows):
        for q in range(n):
            dst[doff + r * dstride + q] += lut[roff + x[xoff + r * xstride + q]]


def _strided_load_codegen(context, builder, signature, args):
    dst_v, doff, src_v, soff, stride = args
    dst = context.make_array(signature.args[0])(context, builder, dst_v)
    src = context.make_array(signature.args[2])(context, builder, src_v)
    i16, i32 = ir.IntType(16), ir.IntType(32)
    v16i32 = ir.VectorType(i32, 16)
    base = builder.bitcast(builder.gep(src.data, [soff]), ir.IntType(32).as_pointer())  # as the other gathers
    step = builder.trunc(stride, i32) if stride.type.width > 32 else stride
    lanes = ir.Constant(v16i32, list(range(16)))
    index = builder.mul(lanes, builder.shuffle_vector(
        builder.insert_element(ir.Constant(v16i32, None), step, ir.Constant(i32, 0)),
        ir.Constant(v16i32, None), ir.Constant(v16i32, [0] * 16)))
    fnty = ir.FunctionType(v16i32, [v16i32, base.type, v16i32, i16, i32])
    gather = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx512.gather.dpi.512")
    scale = signature.args[2].dtype.bitwidth // 8  # uint8 src: dwords at byte addresses, low byte kept
    values = builder.call(gather, [ir.Constant(v16i32, None), base, index, ir.Constant(i16, 0xFFFF),
                                   ir.Constant(i32, scale)])
    out_t = ir.VectorType(ir.IntType(signature.args[0].dtype.bitwidth), 16)
    if scale == 1 and out_t == v16i32:
        values = builder.and_(values, ir.Constant(v16i32, [0xFF] * 16))
    if out_t != v16i32:
        values = builder.trunc(values, out_t)
    target = builder.bitcast(builder.gep(dst.data, [doff]), out_t.as_pointer())
    builder.store(values, target, align=1)
    return context.get_dummy_value()


@intrinsic
def _avx512_strided_load16(typingctx, dst, doff, src, soff, stride):
    return types.void(dst, doff, src, soff, stride), _strided_load_codegen


@njit(inline="always", boundscheck=False)
def _scalar_strided_load16(dst, doff, src, soff, stride):  # pragma: no cover - compiled
    for k in range(16):
        dst[doff + k] = src[soff + k * stride]


def _operands(context, builder, signature, args):
    """Per intrinsic argument: an array's data pointer, or an integer widened to i64."""
    out = []
    for ty, value in zip(signature.args, args):
        if isinstance(ty, types.Array):
            out.append(context.make_array(ty)(context, builder, value).data)
        else:
            out.append(builder.sext(value, ir.IntType(64)) if value.type.width < 64 else value)
    return out


def _rows_add_codegen(blocks: int):
    def codegen(context, builder, signature, args):
        dst, doff, table, offs, ooff, n, shift = _operands(context, builder, signature, args)
        i64 = ir.IntType(64)
        v16i32 = ir.VectorType(ir.IntType(32), 16)
        dtype = signature.args[2].dtype
        narrow = dtype.bitwidth == 16
        vrow = ir.VectorType(ir.IntType(16), 16) if narrow else v16i32
        targets = [builder.bitcast(builder.gep(dst, [builder.add(doff, ir.Constant(i64, 16 * b))]),
                                   v16i32.as_pointer()) for b in range(blocks)]
        starts = [builder.load(t, align=4) for t in targets]
        entry = builder.block
        header = builder.append_basic_block("rows_add.header")
        body = builder.append_basic_block("rows_add.body")
        done = builder.append_basic_block("rows_add.done")
        builder.branch(header)
        builder.position_at_end(header)
        k = builder.phi(i64)
        totals = [builder.phi(v16i32) for _ in range(blocks)]
        k.add_incoming(ir.Constant(i64, 0), entry)
        for total, start in zip(totals, starts):
            total.add_incoming(start, entry)
        builder.cbranch(builder.icmp_signed("<", k, n), body, done)
        builder.position_at_end(body)
        offset = builder.load(builder.gep(offs, [builder.add(ooff, k)]))
        start = builder.add(builder.sext(offset, i64) if offset.type.width < 64 else offset, shift)
        for b, total in enumerate(totals):
            at = builder.gep(table, [builder.add(start, ir.Constant(i64, 16 * b))])
            row = builder.load(builder.bitcast(at, vrow.as_pointer()), align=dtype.bitwidth // 8)
            if narrow:
                row = builder.sext(row, v16i32) if dtype.signed else builder.zext(row, v16i32)
            total.add_incoming(builder.add(total, row), body)
        k.add_incoming(builder.add(k, ir.Constant(i64, 1)), body)
        builder.branch(header)
        builder.position_at_end(done)
        for target, total in zip(targets, totals):
            builder.store(total, target, align=4)
        return context.get_dummy_value()

    return codegen


@intrinsic
def rows_add16(typingctx, dst, doff, table, offs, ooff, n, shift):
    """dst[doff:doff+16] += sum_{k<n} table[offs[ooff+k] + shift : ... + 16] (sum in registers)."""
    return types.void(dst, doff, table, offs, ooff, n, shift), _rows_add_codegen(1)


@intrinsic
def rows_add32(typingctx, dst, doff, table, offs, ooff, n, shift):
    """As `rows_add16` for 32 lanes (two 16-lane sums in registers, one offset load per 32 lanes)."""
    return types.void(dst, doff, table, offs, ooff, n, shift), _rows_add_codegen(2)


@intrinsic
def rows_add64(typingctx, dst, doff, table, offs, ooff, n, shift):
    """As `rows_add16` for 64 lanes (four 16-lane sums in registers, one offset load per 64 lanes)."""
    return types.void(dst, doff, table, offs, ooff, n, shift), _rows_add_codegen(4)


def _unpack_mask(width: int, high: bool) -> list[int]:
    """shufflevector mask of x86 ``punpck{l,h}{wd,dq,qdq}`` on two 16 x 16-bit vectors (per 128-bit lane)."""
    words = width // 16
    half = 8 // words // 2
    mask = []
    for lane in range(2):
        for i in range(half):
            element = (half if high else 0) + i
            mask += [lane * 8 + element * words + q for q in range(words)]
            mask += [16 + lane * 8 + element * words + q for q in range(words)]
    return mask


def _transpose16x16(builder, rows):
    """16 vectors of 16 x 16-bit -> their transpose: the 4-stage unpack network (words, dwords, qwords,
    128-bit lanes) that x86 backends turn into vpunpck* and vperm2i128 / vinserti128."""
    i32 = ir.IntType(32)

    def shuffle(a, b, mask):
        return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, 16), mask))

    t = []
    for i in range(0, 16, 2):
        t += [shuffle(rows[i], rows[i + 1], _unpack_mask(16, False)),
              shuffle(rows[i], rows[i + 1], _unpack_mask(16, True))]
    u = []
    for g in range(0, 16, 4):
        u += [shuffle(t[g], t[g + 2], _unpack_mask(32, False)), shuffle(t[g], t[g + 2], _unpack_mask(32, True)),
              shuffle(t[g + 1], t[g + 3], _unpack_mask(32, False)), shuffle(t[g + 1], t[g + 3], _unpack_mask(32, True))]
    v = []
    for g in range(0, 16, 8):
        for j in range(4):
            v += [shuffle(u[g + j], u[g + j + 4], _unpack_mask(64, False)),
                  shuffle(u[g + j], u[g + j + 4], _unpack_mask(64, True))]
    low, high = list(range(0, 8)) + list(range(16, 24)), list(range(8, 16)) + list(range(24, 32))
    return [shuffle(v[j], v[j + 8], low) for j in range(8)] + [shuffle(v[j], v[j + 8], high) for j in range(8)]


def _lookup_cols_codegen(context, builder, signature, args):
    dst, doff, dstride, strips, xa, xoff, v0 = _operands(context, builder, signature, args)
    i64 = ir.IntType(64)
    v16i16 = ir.VectorType(ir.IntType(16), 16)
    strip = builder.mul(v0, ir.Constant(i64, 256))  # strip v0 // 16 starts at (v0 // 16) * 4096 = v0 * 256
    rows = []
    for i in range(16):
        xb = builder.zext(builder.load(builder.gep(xa, [builder.add(xoff, ir.Constant(i64, i))])), i64)
        at = builder.add(strip, builder.mul(xb, ir.Constant(i64, 16)))
        rows.append(builder.load(builder.bitcast(builder.gep(strips, [at]), v16i16.as_pointer()), align=2))
    for j, col in enumerate(_transpose16x16(builder, rows)):
        at = builder.add(doff, builder.mul(dstride, ir.Constant(i64, j)))
        builder.store(col, builder.bitcast(builder.gep(dst, [at]), v16i16.as_pointer()), align=2)
    return context.get_dummy_value()


@intrinsic
def lookup_cols16(typingctx, dst, doff, dstride, strips, x, xoff, v0):
    """dst[doff + j*dstride + i] = lut[v0 + j, x[xoff + i]] for i, j < 16, from the 16-bit table's strip
    layout ``strips[v0 // 16, x, 0:16]`` (see `table_strips`); v0 a multiple of 16."""
    return types.void(dst, doff, dstride, strips, x, xoff, v0), _lookup_cols_codegen


@njit(cache=True, boundscheck=False)
def table_strips(lut, strips):  # pragma: no cover - compiled
    """Writes the strip layout `lookup_cols16` reads, ``strips[s, x, j] = lut[16 * s + j, x]`` (flat,
    65,536 entries), of a flat 16-bit table ``lut[256 * w_byte + x_byte]``."""
    for s in range(16):
        for x in range(256):
            for j in range(16):
                strips[(s * 256 + x) * 16 + j] = lut[(16 * s + j) * 256 + x]


gather16 = _avx512_gather16 if HAVE_AVX512 else _scalar_gather16
gather_add16 = _avx512_gather_add16 if HAVE_AVX512 else _scalar_gather_add16
table_gather_add16 = _avx512_table_gather_add16 if HAVE_AVX512 else _scalar_table_gather_add16
# 16-bit tables need AVX-512BW (vpermi2w); int32 tables need AVX-512F (gathers)
lookup_row = _avx512_lookup_row if HAVE_AVX512BW else _scalar_lookup_row
lookup_add_rows = _avx512_lookup_add_rows if HAVE_AVX512BW else _scalar_lookup_add_rows
strided_load16 = _avx512_strided_load16 if HAVE_AVX512 else _scalar_strided_load16

__all__ = ["HAVE_AVX512", "gather16", "lookup_add_rows", "lookup_cols16", "lookup_row", "gather_add16", "rows_add16",
           "rows_add32", "rows_add64", "strided_load16", "table_gather_add16", "table_strips"]
