"""Numba kernels as XLA FFI custom calls: no Python, no copies between XLA and the kernel.

`jax.pure_callback` re-enters Python on every call and copies every operand and result (an overhead that
grows with the operands' size and, on a small depthwise layer, rivals the kernel's own time). An
XLA FFI handler is a C function XLA calls with its own buffers. This module builds such handlers from
numba code: a handler is a `numba.cfunc` taking the address of XLA's ``XLA_FFI_CallFrame`` (the typed
FFI C ABI of ``xla/ffi/api/c_api.h``, API 0.x, shipped with jaxlib) and reading the argument and result
buffers' data pointers and dimensions from it; results are written in place.

Only what these kernels need is read: buffers (dtype, data, dims) of arguments and results. Kernel
parameters travel as a small int32 argument, not as attributes. Shapes and dtypes are validated in
Python when the call is traced, so a handler trusts its buffers and always reports success.

A kernel call either has the machine to itself or runs on its share of it (`call_threads`). On one
device, every parallel numba kernel runs under one process-wide mutex (`KERNEL_LOCK`, a pthread mutex
usable from Python and from compiled handlers) and uses every core. When the host platform is split into
several devices, XLA runs one custom call per device concurrently: if numba's threading layer may be
entered by several threads at once (``omp``, ``tbb``), each call then runs without the mutex on
cores / devices threads, so the devices' kernels overlap instead of queueing; with ``workqueue``
(not thread-safe) the calls keep the mutex.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import functools
import os
import queue
import re
import sys
import threading
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_EXECUTE = 3         # XLA_FFI_ExecutionStage_EXECUTE
_METADATA = 1        # XLA_FFI_Extension_Metadata
_API_VERSION = (0, 1)  # the oldest typed FFI API whose structs (as read below) this module relies on
_FRAME_WORDS = 15    # XLA_FFI_CallFrame words read (through rets.rets; the struct is 21-22 words)


@intrinsic
def as_voidptr(typingctx, address):
    """An integer address as a ``void*`` (for `numba.carray`)."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.voidptr))
    return types.voidptr(address), codegen


@njit(inline="always")
def words(address, n):
    """n int64 words at ``address`` (a view of a C struct of pointers and 64-bit ints)."""
    return carray(as_voidptr(address), (n,), dtype=np.int64)


@njit(inline="always")
def is_execution(frame_address):
    """True for a call that should run the kernel. A call carrying the metadata extension (XLA asks the
    handler which FFI API version it speaks) is answered here and returns False; so do stages other than
    execution (handlers are registered for execution only)."""
    frame = words(frame_address, _FRAME_WORDS)
    if frame[1] != 0:  # extension_start: XLA_FFI_Extension_Base {struct_size, type, next}
        extension = words(frame[1], 4)
        if (extension[1] & 0xFFFFFFFF) == _METADATA:  # XLA_FFI_Metadata_Extension {base, metadata*}
            metadata = words(extension[3], 6)  # {struct_size, api_version {size, ext, major|minor}, traits}
            metadata[1] = 24
            metadata[2] = 0
            metadata[3] = _API_VERSION[0] | (_API_VERSION[1] << 32)
            metadata[4] = 0  # no traits (and the padding after them)
            return False
    return (frame[4] & 0xFFFFFFFF) == _EXECUTE


@njit(inline="always")
def buffer(frame_address, index, result):
    """(dtype code, data address, rank, dims address) of argument (or result) ``index``."""
    frame = words(frame_address, _FRAME_WORDS)
    table = words(frame[14] if result else frame[9], index + 1)  # XLA_FFI_Rets / XLA_FFI_Args: void**
    buf = words(table[index], 6)  # XLA_FFI_Buffer {struct_size, ext, dtype, data, rank, dims*}
    return buf[2] & 0xFFFFFFFF, buf[3], buf[4], buf[5]


@njit(inline="always")
def dims4(dims_address):
    d = words(dims_address, 4)
    return d[0], d[1], d[2], d[3]


# ----------------------------------------------------------------------------------------------
# One mutex for every parallel kernel, from Python and from handlers
# ----------------------------------------------------------------------------------------------
# The mutex is 64 zeroed bytes (PTHREAD_MUTEX_INITIALIZER on glibc and musl) published to numba's linker
# under a fixed symbol name: compiled handlers refer to the symbol, not to this process's address, so
# numba can cache them on disk (a ctypes function in the handler would pin it to one process).
_MUTEX_SYMBOL = "jaxdepth_kernel_mutex"


def _pthread() -> tuple[Callable, Callable, int, ctypes.Array] | None:
    try:
        libc = ctypes.CDLL(None)
        lock, unlock = libc.pthread_mutex_lock, libc.pthread_mutex_unlock
    except (OSError, AttributeError):
        return None
    for fn in (lock, unlock):
        fn.argtypes, fn.restype = [ctypes.c_void_p], ctypes.c_int
    storage = ctypes.create_string_buffer(64)
    llvm.add_symbol(_MUTEX_SYMBOL, ctypes.addressof(storage))
    return lock, unlock, ctypes.addressof(storage), storage


def _ffi_api_major() -> int | None:
    """The XLA FFI API major version of the installed jaxlib (from the C header it ships), or None."""
    try:
        import jax.ffi

        header = Path(jax.ffi.include_dir()) / "xla" / "ffi" / "api" / "c_api.h"
        found = re.search(r"#define\s+XLA_FFI_API_MAJOR\s+(\d+)", header.read_text())
    except (AttributeError, OSError):
        return None
    return int(found.group(1)) if found else None


_PTHREAD = _pthread()
# the struct offsets read above are those of API major version 0 (later 0.x versions only append fields);
# another major version, or no header to tell, leaves the kernels on jax.pure_callback
AVAILABLE = _PTHREAD is not None and ctypes.sizeof(ctypes.c_void_p) == 8 and _ffi_api_major() == 0


class _KernelLock:
    """Context manager around the shared pthread mutex (the GIL is released while waiting)."""

    def __enter__(self):
        _PTHREAD[0](_PTHREAD[2])

    def __exit__(self, *exc):
        _PTHREAD[1](_PTHREAD[2])


def _mutex_call(function: str):
    def typer(typingctx):
        def codegen(context, builder, signature, args):
            module = builder.module
            byte_ptr = ir.IntType(8).as_pointer()
            fn = cgutils.get_or_insert_function(module, ir.FunctionType(ir.IntType(32), [byte_ptr]), function)
            mutex = module.globals.get(_MUTEX_SYMBOL)
            if mutex is None:  # a declaration: the address comes from llvm.add_symbol at load time
                mutex = ir.GlobalVariable(module, ir.IntType(8), _MUTEX_SYMBOL)
            builder.call(fn, [builder.bitcast(mutex, byte_ptr)])
            return context.get_dummy_value()
        return types.void(), codegen
    return intrinsic(typer)


lock = _mutex_call("pthread_mutex_lock")
unlock = _mutex_call("pthread_mutex_unlock")


@intrinsic
def set_threads(typingctx, n):
    """numba's thread-local thread count of the calling thread, through the threading layer's
    ``set_num_threads`` symbol (numba publishes it to its linker), so handlers stay cacheable on disk
    (``numba.set_num_threads`` in compiled code embeds this process's function address)."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(32)]),
                                            "set_num_threads")
        builder.call(fn, [builder.trunc(args[0], ir.IntType(32))])
        return context.get_dummy_value()
    return types.void(n), codegen


@njit(inline="always")
def begin(threads, exclusive):  # pragma: no cover - compiled into handlers
    """Start a kernel call as `call_threads` decided: take the mutex (all threads), or run on ``threads``
    of numba's threads (a thread-local setting of the calling XLA thread) alongside other calls."""
    if exclusive:
        lock()
    else:
        set_threads(threads)


@njit(inline="always")
def end(exclusive):  # pragma: no cover - compiled into handlers
    if exclusive:
        unlock()


class CallThreads(NamedTuple):
    """How a kernel call shares the CPU: ``threads`` numba threads, ``exclusive`` under `KERNEL_LOCK`."""
    threads: int
    exclusive: bool


@functools.lru_cache(maxsize=None)
def threadsafe_layer() -> bool:
    """True when numba's threading layer may be entered by several threads at once (omp, tbb); fixed for
    the process once numba's threads are launched (asked at every traced kernel call: answered once)."""
    from numba.np.ufunc.parallel import _launch_threads

    _launch_threads()
    return numba.threading_layer() in ("omp", "tbb")


def call_threads() -> CallThreads:
    """The CPU share of one kernel call in this process: every thread under the mutex on one CPU device;
    with several CPU devices and a thread-safe threading layer, threads / devices each, no mutex."""
    import jax

    total = numba.get_num_threads()
    try:
        devices = jax.local_device_count("cpu")
    except RuntimeError:  # no CPU backend in this process (JAX_PLATFORMS without cpu): nothing to share
        devices = 1
    if devices <= 1 or not threadsafe_layer():
        return CallThreads(total, True)
    return CallThreads(max(1, total // devices), False)
if AVAILABLE:
    KERNEL_LOCK = _KernelLock()
else:  # pragma: no cover - non-POSIX hosts: kernels run through jax.pure_callback under a Python lock
    KERNEL_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------------
HANDLER_SIGNATURE = types.int64(types.int64)  # XLA_FFI_Error* (XLA_FFI_CallFrame*); 0 == success
_HANDLER_CTYPE = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)
_registered: dict[str, object] = {}
#: compile handlers missing from numba's disk cache on a background thread (see `register`)
BACKGROUND_COMPILE = True
_compile_queue: Optional[queue.SimpleQueue] = None


def _compile_later(handler_body: Callable) -> concurrent.futures.Future:
    """``_compile(handler_body)`` on the one background compiler thread (numba compiles one function at a
    time anyway). A daemon thread: a process that ends early (a user error, Ctrl-C, a handler started ahead
    but never needed) does not wait for it; numba writes its cache files whole or not at all."""
    global _compile_queue
    if _compile_queue is None:
        _compile_queue = queue.SimpleQueue()

        def work(jobs: queue.SimpleQueue) -> None:
            while True:
                future, body = jobs.get()
                try:
                    future.set_result(_compile(body))
                except BaseException as error:  # noqa: BLE001 - reported by the future
                    future.set_exception(error)

        threading.Thread(target=work, args=(_compile_queue,), name="jaxdepth-numba", daemon=True).start()
    future: concurrent.futures.Future = concurrent.futures.Future()
    _compile_queue.put((future, handler_body))
    return future


def _in_disk_cache(handler_body: Callable) -> bool:
    """True when numba's disk cache index lists the compiled handler (loading it then takes milliseconds).
    Reads the index only: `FunctionCache.load_overload` would wait for numba's compiler lock, held for
    the whole of a background compilation."""
    from numba.core import registry, sigutils
    from numba.core.caching import FunctionCache
    from numba.core.typing.templates import signature

    try:
        args, ret = sigutils.normalize_signature(HANDLER_SIGNATURE)
        cache = FunctionCache(handler_body)
        key = cache._index_key(signature(ret, *args), registry.cpu_target.target_context.codegen())
        return cache._cache_file._load_index().get(key) is not None
    except Exception:  # noqa: BLE001 - numba internals moved: compile in the foreground, as before
        return True


def _compile(handler_body: Callable):
    with kernel_opt_level():
        return cfunc(HANDLER_SIGNATURE, cache=True)(handler_body)


#: LLVM optimisation level for compiling the kernels. Their hot loops are explicit vector IR (`simd`), so
#: -O1 runs them as fast as numba's default -O3 and compiles faster (figures: bench/results/startup.md).
#: An explicit ``NUMBA_OPT`` in the environment wins.
KERNEL_OPT_LEVEL = 1
_opt_lock = threading.Lock()
_opt_users = 0
_opt_saved = None


@contextlib.contextmanager
def kernel_opt_level():
    """Compile at `KERNEL_OPT_LEVEL` inside the block. numba reads ``config.OPT`` when it builds each
    compilation's LLVM pass pipeline, so this is process-wide while any block is open (a thread compiling
    other numba code meanwhile gets the same level: slower code at worst, never different results)."""
    global _opt_users, _opt_saved
    if "NUMBA_OPT" in os.environ:
        yield
        return
    with _opt_lock:
        if _opt_users == 0:
            _opt_saved = numba.config.OPT
            numba.config.OPT = numba.core.config._OptLevel(KERNEL_OPT_LEVEL)
        _opt_users += 1
    try:
        yield
    finally:
        with _opt_lock:
            _opt_users -= 1
            if _opt_users == 0:
                numba.config.OPT = _opt_saved


def _answer_non_execution(frame: int) -> bool:
    """`is_execution` for the deferred handler (plain Python, nothing to compile): answers XLA's metadata
    query in place; True when the call should run the kernel."""
    words_at = (ctypes.c_int64 * _FRAME_WORDS).from_address(frame)
    if words_at[1]:
        extension = (ctypes.c_int64 * 4).from_address(words_at[1])
        if (extension[1] & 0xFFFFFFFF) == _METADATA:
            metadata = (ctypes.c_int64 * 6).from_address(extension[3])
            metadata[1], metadata[2] = 24, 0
            metadata[3] = _API_VERSION[0] | (_API_VERSION[1] << 32)
            metadata[4] = 0
            return False
    return (words_at[4] & 0xFFFFFFFF) == _EXECUTE


class _Deferred:
    """A handler still compiling on the background thread: XLA gets the address of a ctypes trampoline at
    once, so tracing and XLA's own compilation go on meanwhile (XLA compiles with the GIL released, numba
    spends most of its time in LLVM, also without it). A kernel call waits for the compiled handler and
    calls it (the GIL is held only around the call). A failed compilation cannot be reported to XLA as an
    error here, so it stops the process with the message rather than return an unwritten result."""

    def __init__(self, name: str, future: concurrent.futures.Future):
        self.name, self.future = name, future
        self.trampoline = _HANDLER_CTYPE(self._call)
        self._handler: Optional[Callable] = None

    @property
    def address(self) -> int:
        return ctypes.cast(self.trampoline, ctypes.c_void_p).value

    def _call(self, frame: int) -> int:
        try:
            if not _answer_non_execution(frame):
                return 0
            if self._handler is None:
                self._handler = _HANDLER_CTYPE(self.future.result().address)
            return self._handler(frame)
        except BaseException as error:  # noqa: BLE001 - XLA cannot take a Python exception
            sys.stderr.write(f"jaxdepth: the XLA FFI kernel {self.name} could not be compiled: {error!r}\n")
            sys.stderr.flush()
            os._exit(70)


def wait_compiled() -> None:
    """Wait for every handler compiling in the background; raises the first compilation error (call before
    running a program that uses them to get a Python exception instead of a stopped process)."""
    for entry in list(_registered.values()):
        if isinstance(entry, _Deferred):
            entry.future.result()


def _finish_running_calls() -> None:
    """At interpreter exit, wait for every array still being computed. A script that ends right after an
    asynchronous jitted call of a kernel (``acc = f(x, w, table)`` as its last line) otherwise never
    exits: Python's final garbage collection destroys XLA's CPU client while the call is in flight, and
    the client's thread-pool teardown waits forever. (Registered with the first handler, so it runs
    before JAX's own exit handlers.)"""
    import jax
    for array in jax.live_arrays():
        with contextlib.suppress(Exception):
            array.block_until_ready()


def register(name: str, handler_body: Callable) -> str:
    """Compile ``handler_body(frame_address) -> 0`` as a C function and register it with XLA's CPU
    backend as FFI target ``name`` (once per process). Returns the target name for `jax.ffi.ffi_call`.

    A handler in numba's disk cache is loaded at once. Otherwise (a first run: tens of seconds of numba
    compiling) it compiles on one background thread while the caller goes on, with `BACKGROUND_COMPILE`;
    XLA is given a trampoline that waits for it (`_Deferred`)."""
    if name not in _registered:
        import jax.ffi
        from numba.np.ufunc.parallel import _launch_threads

        if not _registered:
            atexit.register(_finish_running_calls)

        # numba starts its thread pool when a parallel function is first called from Python; a handler
        # loaded from numba's disk cache and first run by XLA would enter a pool that does not exist yet
        _launch_threads()
        if BACKGROUND_COMPILE and not _in_disk_cache(handler_body):
            entry = _Deferred(name, _compile_later(handler_body))
        else:
            entry = _compile(handler_body)
        new_capsule = ctypes.pythonapi.PyCapsule_New
        new_capsule.restype = ctypes.py_object
        new_capsule.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
        jax.ffi.register_ffi_target(name, new_capsule(entry.address, b"xla._CUSTOM_CALL_TARGET", None),
                                    platform="cpu")
        _registered[name] = entry  # keeps the compiled code (or the trampoline) alive
    return name
