"""The bridge between the numba kernels and JAX: one XLA FFI custom call per kernel, the table a runtime
operand, partitioned over the batch when a computation is split over devices.

A kernel module (`direct_kernel`, `wstat_kernel`, `dwrows_kernel`) provides a compiled handler that reads
its buffers from XLA's call frame (`xla_ffi`) and a host function for concrete arrays; `ffi_kernel` turns
them into a jittable kernel function:

* concrete arrays: the host function, directly (no XLA);
* traced (inside `jax.jit`): ``jax.ffi.ffi_call`` on XLA's own buffers, operands ``(x, w, table,
  params)`` where ``x`` holds the codes' bytes and is batch-leading, ``table`` the flattened product
  table: a traced table is passed as it comes (int32: the handler narrows it to 16 bits at run time
  when every entry fits), a concrete one narrowed here (a 128 KiB constant XLA shares between layers
  using the same table). So one compiled executable serves every table passed as a traced array, and
  executables hold no host callback (JAX's persistent compilation cache can store them);
* split over several devices (a batch-sharded `jax.jit`): `custom_partitioning` runs one call per
  device on its own images (the other operands replicated), instead of XLA's default for an opaque
  custom call (gather the whole batch onto every device and compute it there);
* under `jax.vmap`: the mapped axis of ``x`` is merged into the batch (one call); mapped weights or
  tables run one call per element.

On one CPU device every handler holds the process-wide kernel mutex (`xla_ffi.KERNEL_LOCK`) while its
parallel numba region runs on every core; with several devices and a thread-safe threading layer each
call runs on its share of the cores without it (`xla_ffi.call_threads`, decided at trace time and passed
in the params operand). A handler never waits for anything else while holding the mutex, so devices
running concurrently cannot deadlock.
Hosts without the FFI bridge (`xla_ffi.AVAILABLE` false: non-POSIX, other FFI API major version) fall
back to `jax.pure_callback`, single-device only.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec
from numba import carray, njit

from . import xla_ffi
from .spec import is_traced

# XLA_FFI_DataType codes of the table operand (xla/ffi/api/c_api.h)
DTYPE_S16, DTYPE_S32, DTYPE_U16 = 3, 4, 7


def narrow_table(lut: np.ndarray) -> np.ndarray:
    """The table as uint16 or int16 when every entry fits (exactly the same values, half the bytes: half
    the cache and memory traffic of every kernel's product rows and columns, and lookups by register
    permutes on AVX-512BW), else int32."""
    lut = np.asarray(lut)
    lo, hi = int(lut.min()), int(lut.max())
    if 0 <= lo and hi <= 0xFFFF:
        return np.ascontiguousarray(lut, dtype=np.uint16)
    if -0x8000 <= lo and hi <= 0x7FFF:
        return np.ascontiguousarray(lut, dtype=np.int16)
    return np.ascontiguousarray(lut, dtype=np.int32)


@njit(cache=True, boundscheck=False)
def table_kind(lut):  # pragma: no cover - compiled
    """0: every entry fits uint16, 1: int16, 2: only int32."""
    lo = lut.min()
    hi = lut.max()
    if lo >= 0 and hi <= 0xFFFF:
        return 0
    if lo >= -0x8000 and hi <= 0x7FFF:
        return 1
    return 2


@njit(inline="always")
def table_operand(frame, index):  # pragma: no cover - compiled into handlers
    """(dtype code, address) of the flattened 256 x 256 table operand ``index`` of a call frame (handlers
    use `run_fixed` / `run_any`)."""
    code, address, _, _ = xla_ffi.buffer(frame, index, False)
    return code, address


# ----------------------------------------------------------------------------------------------
# One FFI target per table operand dtype, compiled when first used
# ----------------------------------------------------------------------------------------------
#: Table operand kinds: a concrete table by its narrowed dtype (`narrow_table`), or "any" (a traced int32
#: table, narrowed at run time when ``narrow``). A handler for one dtype compiles a third of the code of
#: the "any" handler, so a first run with an EvoApprox table compiles only the 16-bit path it uses.
TABLE_KINDS = {np.dtype(np.uint16): "u16", np.dtype(np.int16): "s16", np.dtype(np.int32): "s32"}


@njit(inline="always")
def _table(address, dtype):  # pragma: no cover - compiled into handlers
    """The flat 65,536-entry table at ``address`` as ``dtype``."""
    return carray(xla_ffi.as_voidptr(address), (65536,), dtype=dtype)


@njit(inline="always")
def run_fixed(frame, execute, dtype):  # pragma: no cover - compiled into handlers
    """A handler body for tables of one dtype: ``execute(frame, lut)`` with table operand 2 viewed as
    ``dtype`` (np.uint16, np.int16 or np.int32, a compile-time constant of the handler)."""
    if xla_ffi.is_execution(frame):
        execute(frame, _table(table_operand(frame, 2)[1], dtype))
    return 0


@njit(inline="always")
def run_any(frame, execute, narrow):  # pragma: no cover - compiled into handlers
    """A handler body for tables of any dtype: ``execute(frame, lut)`` with table operand 2 as a flat
    array of its own dtype (uint16, int16 or int32). ``narrow``: an int32 operand (a traced table) is
    first narrowed to 16 bits when every entry fits (`table_kind`), for kernels whose 16-bit path is
    faster (register permutes)."""
    if xla_ffi.is_execution(frame):
        code, at = table_operand(frame, 2)
        if code == DTYPE_U16:
            execute(frame, _table(at, np.uint16))
        elif code == DTYPE_S16:
            execute(frame, _table(at, np.int16))
        else:
            lut = _table(at, np.int32)
            kind = table_kind(lut) if narrow else 2
            if kind == 0:
                execute(frame, lut.astype(np.uint16))
            elif kind == 1:
                execute(frame, lut.astype(np.int16))
            else:
                execute(frame, lut)
    return 0


class FfiKernel:
    """A numba kernel's XLA FFI targets: ``name`` for a traced table (kind "any": every dtype compiled in),
    ``name_u16`` / ``name_s16`` / ``name_s32`` for a concrete one. ``handlers`` maps each kind to a
    module-level handler ``handler(frame) -> 0`` (`run_fixed` / `run_any` around the kernel's compiled entry: a
    module-level function, not a closure, so numba's disk cache finds it again in the next process)."""

    def __init__(self, name: str, handlers: dict[str, Callable]):
        missing = {"any", *TABLE_KINDS.values()} - set(handlers)
        if missing:
            raise ValueError(f"{name}: no handler for table kinds {sorted(missing)}")
        self.name, self.handlers = name, dict(handlers)
        _KERNELS[name] = self

    def target_name(self, kind: str) -> str:
        return self.name if kind == "any" else f"{self.name}_{kind}"

    def kinds(self) -> dict[str, str]:
        """{target name: table kind} of every target this kernel can register."""
        return {self.target_name(k): k for k in self.handlers}

    def register(self, kind: str) -> Optional[str]:
        """Register (compiling or loading from numba's cache) the handler for tables of ``kind``; its target
        name, or None without the FFI bridge."""
        if not xla_ffi.AVAILABLE:
            return None
        return xla_ffi.register(self.target_name(kind), self.handlers[kind])

    def target(self, lut: Any) -> Optional[str]:
        """The registered target for table operand ``lut`` (as `table_for_call` passes it)."""
        return self.register("any" if is_traced(lut) else _kind(lut))


_KERNELS: dict[str, FfiKernel] = {}


def _kind(lut: Any) -> str:
    """The table kind of a concrete table: its dtype once narrowed (`narrow_table`)."""
    return TABLE_KINDS[_narrowed(np.asarray(lut)).dtype]


def register_targets(names) -> None:
    """Register the FFI targets ``names`` (other names are ignored): needed before XLA compiles or loads
    a program that calls them but was not traced in this process (`jaxdepth.exec_cache`)."""
    for name in names:
        for kernel in _KERNELS.values():
            kind = kernel.kinds().get(name)
            if kind is not None:
                kernel.register(kind)


def compile_ahead(tables, kernels) -> None:
    """Register now the handlers that ``kernels`` (registry names, e.g. "wstat") would use for ``tables``
    (concrete (256, 256) tables): a handler missing from numba's disk cache then starts compiling on the
    background thread (`xla_ffi.register`) instead of when tracing first reaches a layer that needs it."""
    kinds = list(dict.fromkeys(_kind(t) for t in tables))
    for name in kernels:
        kernel = _KERNELS.get(f"jaxdepth_{name}")
        for kind in kinds if kernel is not None else ():
            kernel.register(kind)


def code_bytes(x: jax.Array) -> jax.Array:
    """The low byte of every code as uint8 (int8 codes: the same bytes, reinterpreted)."""
    if x.dtype == jnp.uint8:
        return x
    if x.dtype == jnp.int8:
        return jax.lax.bitcast_convert_type(x, jnp.uint8)
    return (jnp.asarray(x, jnp.int32) & 0xFF).astype(jnp.uint8)


def table_for_call(lut: Any) -> Any:
    """The table operand: a traced table flattened as int32, a concrete one narrowed (numpy constant)."""
    if is_traced(lut):
        return jnp.asarray(lut, jnp.int32).reshape(-1)
    return _narrowed(np.asarray(lut))


_NARROWED: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _narrowed(lut: np.ndarray) -> np.ndarray:
    """`narrow_table` memoised per table object: the same numpy constant for every layer using a table,
    which XLA keeps once."""
    hit = _NARROWED.get(id(lut))
    if hit is not None and hit[0] is lut:
        return hit[1]
    flat = narrow_table(lut).reshape(-1)
    if len(_NARROWED) > 256:
        _NARROWED.clear()
    _NARROWED[id(lut)] = (lut, flat)
    return flat


# ----------------------------------------------------------------------------------------------
# The custom call: batch-partitioned, vmappable
# ----------------------------------------------------------------------------------------------
def _ffi(target: str, tail: tuple[int, ...], x, *rest):
    result = jax.ShapeDtypeStruct((x.shape[0],) + tail, jnp.int32)
    return jax.ffi.ffi_call(target, result)(x, *rest)


def _batch_axes(sharding) -> Any:
    """The mesh axes the leading dimension of an operand is split over (None: not split)."""
    spec = getattr(sharding, "spec", None)
    return spec[0] if spec is not None and len(spec) else None


@functools.lru_cache(maxsize=None)
def _batch_partitioned(target: str, tail: tuple[int, ...], ranks: tuple[int, ...]) -> Callable:
    """``fn(x, *rest)`` = the FFI call, split over devices along x's batch axis only."""

    @custom_partitioning
    def call(x, *rest):
        return _ffi(target, tail, x, *rest)

    def shardings(mesh, arg_shapes):
        axes = _batch_axes(arg_shapes[0].sharding)
        batched = NamedSharding(mesh, PartitionSpec(axes))
        return batched, (batched,) + (NamedSharding(mesh, PartitionSpec()),) * (len(ranks) - 1)

    def infer(mesh, arg_shapes, result_shape):
        return shardings(mesh, arg_shapes)[0]

    def partition(mesh, arg_shapes, result_shape):
        out_sharding, arg_shardings = shardings(mesh, arg_shapes)
        return mesh, functools.partial(_ffi, target, tail), out_sharding, arg_shardings

    letters = iter("abcdefghijklmopqrstuvwxyz")
    operands = [" ".join((["n"] if k == 0 else []) + [next(letters) for _ in range(r - (k == 0))])
                for k, r in enumerate(ranks)]
    result = " ".join(["n"] + [next(letters) for _ in tail])
    others = tuple(f for f in " ".join(operands + [result]).split() if f != "n")
    call.def_partition(partition, infer_sharding_from_operands=infer,
                       sharding_rule=", ".join(operands) + " -> " + result,
                       need_replication_factors=others)
    return call


@functools.lru_cache(maxsize=None)
def _vmappable(target: str, tail: tuple[int, ...], ranks: tuple[int, ...]) -> Callable:
    """The partitioned call with a batching rule: a mapped x joins the batch (one call)."""
    partitioned = _batch_partitioned(target, tail, ranks)

    @custom_vmap
    def call(x, *rest):
        return partitioned(x, *rest)

    @call.def_vmap
    def rule(axis_size, in_batched, x, *rest):
        if not any(in_batched[1:]):
            if not in_batched[0]:
                x = jnp.broadcast_to(x, (axis_size,) + x.shape)
            out = call(x.reshape((-1,) + x.shape[2:]), *rest)
            return out.reshape((axis_size, x.shape[1]) + out.shape[1:]), True
        operands = [a if b else jnp.broadcast_to(a, (axis_size,) + a.shape)
                    for a, b in zip((x,) + rest, in_batched)]
        return jax.lax.map(lambda args: call(*args), tuple(operands)), True

    return call


def ffi_call(target: str, result_tail: tuple[int, ...], x: jax.Array, *rest: Any) -> jax.Array:
    """int32 result ``(x.shape[0],) + result_tail`` of FFI target ``target`` on operands ``(x, *rest)``:
    ``x`` batch-leading, the other operands the same on every device."""
    ranks = tuple(len(np.shape(a)) for a in (x,) + rest)
    return _vmappable(target, tuple(int(d) for d in result_tail), ranks)(x, *rest)


def callback_call(host: Callable, result_shape: tuple[int, ...], x, w, lut, *args) -> jax.Array:
    """Fallback without the FFI bridge: ``host(x, w, lut, *args)`` through `jax.pure_callback`, its
    operands copied (single device only: XLA runs a callback on one device and the other devices wait
    for it in a collective, and the callback's own transfers need XLA threads those devices hold)."""
    result = jax.ShapeDtypeStruct(result_shape, jnp.int32)

    def run(x, w, lut):
        return host(np.asarray(x), np.asarray(w), np.asarray(lut), *args)

    return jax.pure_callback(run, result, x, w, jnp.asarray(lut, jnp.int32), vmap_method="sequential")


