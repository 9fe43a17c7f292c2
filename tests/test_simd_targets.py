"""The numba kernels' AVX-512 paths (16-lane gathers, `vpermi2w` row lookups) compile on a host without
AVX-512. The bit-exact tests in test_lutconv.py run them only where the CPU has AVX-512; elsewhere this
compiles (never runs) every kernel's handlers for an AVX-512 target, so a change made on an AVX2 host
cannot leave those paths broken unnoticed."""
import os
import subprocess
import sys

import pytest

from jaxdepth.lutconv import simd

COMPILE_FOR_AVX512 = r"""
import llvmlite.binding as llvm

host_features = llvm.get_host_cpu_features


def with_avx512():
    features = host_features()
    for name in ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx512vnni"):
        features[name] = True
    return features


llvm.get_host_cpu_features = with_avx512   # what jaxdepth.lutconv.simd reads to pick its paths
from jaxdepth.lutconv import dwrows_kernel, direct_kernel, ffi_bridge, simd, wstat_kernel, xla_ffi  # noqa

assert simd.HAVE_AVX512 and simd.HAVE_AVX512BW
for name, kernel in sorted(ffi_bridge._KERNELS.items()):
    for kind in ("u16", "s32"):            # 16-bit tables: register permutes; 32-bit: gathers
        asm = xla_ffi._compile(kernel.handlers[kind])._library.get_asm_str()
        print(name, kind, "zmm" in asm, "vpermi2w" in asm or "vpermt2w" in asm, "vpgatherdd" in asm)
"""


@pytest.mark.slow
@pytest.mark.skipif(simd.HAVE_AVX512BW, reason="this host runs the AVX-512 paths in the bit-exact tests")
def test_avx512_paths_compile_on_a_host_without_avx512(tmp_path):
    env = dict(os.environ, NUMBA_CPU_NAME="skylake-avx512", NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", COMPILE_FOR_AVX512], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {tuple(line.split()[:2]): line.split()[2:] for line in done.stdout.splitlines()}
    assert set(lines) == {(k, kind) for k in ("jaxdepth_direct", "jaxdepth_dwrows", "jaxdepth_wstat")
                          for kind in ("u16", "s32")}
    for (name, kind), (zmm, permute, gather) in lines.items():
        assert zmm == "True", (name, kind)                          # compiled for 512-bit registers
        assert gather == "True", (name, kind)                       # every kernel has a 16-lane gather
        assert permute == ("True" if kind == "u16" else "False"), (name, kind)   # vpermi2w row lookups
