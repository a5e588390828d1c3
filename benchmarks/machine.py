"""Reference measurements of the machine, taken in the same run as the benchmark they normalise:
memory read bandwidth (from 2 MiB huge pages and from 4 KiB pages) and the FMA peak, both measured
with the engine's own thread pool (rwkv_ggml_bench.h)."""

from __future__ import annotations

import mmap
import time

import numpy as np

from rwkv_ggml import ggml
from rwkv_ggml._lib import ffi, lib


def anonymous_buffer(nbytes: int, huge: bool) -> mmap.mmap:
    """An anonymous mapping of nbytes, advised to use (or not use) transparent huge pages, pre-faulted."""
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    advice = getattr(mmap, "MADV_HUGEPAGE" if huge else "MADV_NOHUGEPAGE", None)
    if advice is not None:
        try:
            buf.madvise(advice)
        except OSError:
            pass
    np.frombuffer(buf, dtype=np.uint8)[:] = 1  # fault every page in before timing
    return buf


def read_bandwidth(
    pool: ggml.Pool, threads: int, *, huge: bool = True, nbytes: int = 1 << 30, repeats: int = 7
) -> float:
    """Best-of-``repeats`` read bandwidth in GB/s over a fresh buffer far larger than the caches."""
    buf = anonymous_buffer(nbytes, huge)
    try:
        return read_bandwidth_of(pool, threads, buf, repeats)
    finally:
        buf.close()


def read_bandwidth_of(pool: ggml.Pool, threads: int, buffer, repeats: int = 2) -> float:
    """Best-of-``repeats`` read bandwidth in GB/s over an existing buffer (e.g. a model's own weight
    pages: on a virtual machine a fresh buffer can land in faster or slower host memory than the
    weights did, so only the weights' own pages give their true floor)."""
    arr = np.frombuffer(buffer, dtype=np.uint8)
    ptr = ffi.from_buffer(arr, require_writable=False)
    nbytes = arr.nbytes
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        lib.rg_bench_read(ptr, nbytes, pool.ptr, threads)
        best = min(best, time.perf_counter() - t0)
    del ptr, arr
    return nbytes / best / 1e9


PEAK_KINDS = {"f32": 0, "bf16": 1, "int8": 2}


def fma_peak(
    pool: ggml.Pool, threads: int, iters: int = 20_000_000, repeats: int = 5, kind: str = "f32"
) -> float:
    """Best-of-``repeats`` G-ops/s of independent multiply-add chains in registers (the compute ceiling):
    f32 FMA, bf16 pair dot products or int8 quad dot products (2 ops per multiply-add); 0.0 where the CPU
    lacks the instruction."""
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        flops = lib.rg_bench_peak(PEAK_KINDS[kind], iters, pool.ptr, threads)
        best = max(best, flops / (time.perf_counter() - t0) / 1e9)
    return best


def cpu_name() -> str:
    """The CPU's model name as the kernel reports it (``/proc/cpuinfo``), for benchmark reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def select_level(level: int | None) -> None:
    """Caps the engine's kernel level (0 scalar, 1 AVX2, 2 AVX-512) for the whole run, so that either ISA
    level can be measured on an AVX-512 machine; and asks torch (if the benchmark imports it later) for
    the same ISA: ATen's kernels (ATEN_CPU_CAPABILITY), MKL's sgemm and oneDNN. None: the CPU's best."""
    import os

    if level is None:
        return
    got = ggml.simd_select(level)
    if got != level:
        raise SystemExit(f"SIMD level {level} is not available on this CPU (best: {got})")
    if level == 1:
        os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
        os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX2")
        os.environ.setdefault("DNNL_MAX_CPU_ISA", "AVX2")
