"""The engine's kernel levels and CPU features: which instruction sets the kernels use, and the switches
that tests and benchmarks use to run as another CPU would (a lower level, or fewer features). Part of the
engine binding: :mod:`rwkv_ggml.ggml` re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._lib import lib
from .ggml_ops import C_INT, as_int

__all__ = ["cpu_features", "cpu_mask", "simd_level", "simd_max_level", "simd_select"]


def simd_level() -> int:
    """Instruction-set level of the kernels in use: 0 scalar, 1 AVX2, 2 AVX-512."""
    return int(lib.rg_simd_level())


def simd_max_level() -> int:
    return int(lib.rg_simd_max_level())


def simd_select(max_level: int) -> int:
    """Caps the kernel level (process-wide; for tests and benchmarks). Returns the level in effect."""
    return int(lib.rg_simd_select(as_int(max_level, "simd_select: max_level", *C_INT)))


def cpu_features() -> dict[str, bool]:
    """Each RG_CPU_* feature of the engine's header, by lower-case name without the prefix: detected or
    not."""
    bits = int(lib.rg_cpu_features())
    named = sorted((int(getattr(lib, n)), n) for n in dir(lib) if n.startswith("RG_CPU_"))
    return {n.removeprefix("RG_CPU_").lower(): bool(bits & bit) for bit, n in named}


def cpu_mask(hidden: Iterable[str] = ()) -> dict[str, bool]:
    """Runs as a CPU without the named features (``cpu_features`` names, e.g. ``["avx_vnni"]`` for an AVX2
    machine without AVX-VNNI); an empty list shows them all again, and each call replaces the last. The
    levels and kernels follow from what remains, capped by the last ``simd_select`` (process-wide; for tests
    and benchmarks; RWKV_GGML_CPU_MASK="avx_vnni,..." does the same at start-up).

    Returns ``cpu_features()``, the features now in effect."""
    if isinstance(hidden, str):
        raise TypeError("cpu_mask: hidden must be a list of feature names, not a str")
    named = {
        n.removeprefix("RG_CPU_").lower(): int(getattr(lib, n)) for n in dir(lib) if n.startswith("RG_CPU_")
    }
    bits = 0
    for name in hidden:
        if name not in named:
            raise ValueError(f"cpu_mask: unknown CPU feature {name!r} (known: {', '.join(sorted(named))})")
        bits |= named[name]
    lib.rg_cpu_mask(bits)
    return cpu_features()
