"""The op-test harness of the engine suite: seeded inputs, our engine vs PyTorch, element-wise comparison.

Modelled on tinygrad's ``helper_test_op``: one call per case builds the op in a fresh context from numpy
inputs, computes it with a chosen thread count, runs the PyTorch reference on the same values, checks the
shapes and then every element with ``np.testing.assert_allclose``, and reports the max abs/rel error.

Two details carry the suite's intent:

* F16 inputs reach PyTorch already rounded to f16 and widened to f32 (or f64): the engine widens F16
  exactly and computes in f32, so the comparison isolates the op from the (intended) f16 rounding.
* ``layout`` makes an engine tensor whose *logical* content equals the numpy array but whose memory is not
  contiguous (a transposed or permuted copy, or rows padded with NaN inside a larger buffer): a kernel that
  ignores strides either reads the wrong elements or, for padding, propagates NaN into the result.

Observed errors are collected per case name; ``RWKV_GGML_REPORT_ERRORS=1`` prints the table at the end of a
run (see ``conftest.py``), which is how the tolerances quoted in the docs were measured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from rwkv_ggml import ggml

THREAD_COUNTS = (1, 2, 4)
LAYOUTS = ("contiguous", "transposed", "permuted", "padded")

# Per-case max errors of every comparison made in this process: name -> (max_abs, max_rel).
OBSERVED: dict[str, tuple[float, float]] = {}


@dataclass(frozen=True)
class Errors:
    """Max absolute and max relative (to |expected|, where nonzero) element error of one comparison."""

    max_abs: float
    max_rel: float


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def rand(
    shape: Sequence[int], seed: int, *, low: float = -2.0, high: float = 2.0, dtype: type = np.float32
) -> np.ndarray:
    """Uniform random values in [low, high), seeded, as float32 or float16 (rounded from f32)."""
    a = rng(seed).uniform(low, high, size=tuple(shape)).astype(np.float32)
    return a.astype(dtype)


def randn(
    shape: Sequence[int], seed: int, *, scale: float = 1.0, offset: float = 0.0, dtype: type = np.float32
) -> np.ndarray:
    a = (rng(seed).standard_normal(size=tuple(shape)) * scale + offset).astype(np.float32)
    return a.astype(dtype)


def as_torch(a: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The reference's view of an engine input: floats widened exactly to ``dtype``, ints as int64."""
    if a.dtype.kind == "i":
        return torch.from_numpy(a.astype(np.int64))
    return torch.from_numpy(
        np.ascontiguousarray(a, dtype=np.float64 if dtype == torch.float64 else np.float32)
    )


def _record(name: str, errs: Errors) -> None:
    old = OBSERVED.get(name)
    if old is None:
        OBSERVED[name] = (errs.max_abs, errs.max_rel)
    else:
        OBSERVED[name] = (max(old[0], errs.max_abs), max(old[1], errs.max_rel))


def error_stats(got: np.ndarray, want: np.ndarray) -> Errors:
    g = np.asarray(got, dtype=np.float64)
    w = np.asarray(want, dtype=np.float64)
    finite = np.isfinite(g) & np.isfinite(w)
    if not finite.any():
        return Errors(0.0, 0.0)
    diff = np.abs(g[finite] - w[finite])
    denom = np.abs(w[finite])
    rel = np.divide(diff, denom, out=np.zeros_like(diff), where=denom > 0)
    return Errors(float(diff.max()), float(rel.max()))


def assert_close(got: np.ndarray, want: np.ndarray, *, rtol: float, atol: float, name: str = "") -> Errors:
    """Shapes first, then every element: ``|got - want| <= atol + rtol * |want|`` (NaN must match NaN)."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{name}: engine shape {got.shape} != reference shape {want.shape}"
    errs = error_stats(got, want)
    np.testing.assert_allclose(
        got.astype(np.float64),
        want.astype(np.float64),
        rtol=rtol,
        atol=atol,
        equal_nan=True,
        err_msg=f"{name}: max abs err {errs.max_abs:.3g}, max rel err {errs.max_rel:.3g} "
        f"(rtol {rtol}, atol {atol})",
    )
    if name:
        _record(name, errs)
    return errs


def assert_norm_close(
    got: np.ndarray, want: np.ndarray, bound: np.ndarray, *, tol: float, name: str = ""
) -> Errors:
    """Element-wise ``|got - want| <= tol * bound`` for reductions, where the natural scale of an element's
    error is a norm (e.g. ``||a_row|| * ||b_col||`` for a dot product), not the element's own value."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{name}: engine shape {got.shape} != reference shape {want.shape}"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    scale = np.broadcast_to(np.asarray(bound, dtype=np.float64), err.shape)
    ratio = np.divide(err, scale, out=np.where(err > 0, np.inf, 0.0), where=scale > 0)
    worst = float(ratio.max()) if ratio.size else 0.0
    errs = Errors(float(err.max()) if err.size else 0.0, worst)
    if name:
        _record(name, errs)
    bad = int(np.count_nonzero(~(ratio <= tol)))
    assert bad == 0, (
        f"{name}: {bad} of {err.size} elements exceed {tol} * norm bound; "
        f"worst err/bound {worst:.3g}, max abs err {errs.max_abs:.3g}"
    )
    return errs


# ---- engine inputs with a chosen memory layout ----


def _ggml_perm(ndim: int) -> tuple[int, int, int, int]:
    """A permutation of the ggml axes that moves every used axis (axis 3 stays put for 3-D arrays)."""
    return (1, 2, 0, 3) if ndim == 3 else (2, 3, 1, 0)


def engine_input(ctx: ggml.Context, arr: np.ndarray, layout: str = "contiguous") -> ggml.Tensor:
    """An engine tensor with the values and numpy shape of ``arr``, stored in ``layout``:

    - ``contiguous``: a plain copy;
    - ``transposed``: a contiguous copy of ``arr`` with its last two axes swapped, transposed back by the
      engine (element stride != type size);
    - ``permuted``: (3-D/4-D) a copy with all axes permuted, undone by ``ctx.permute``;
    - ``padded``: a strided view with rows of ``ne0 + 3`` elements, at an offset of 5 elements into a larger
      buffer, whose padding holds NaN (or -1 for int32).
    """
    if layout == "contiguous":
        t = ctx.tensor(np.ascontiguousarray(arr))
    elif layout == "transposed":
        if arr.ndim < 2:
            raise ValueError("transposed layout needs at least 2 dimensions")
        t = ctx.transpose(ctx.tensor(np.ascontiguousarray(np.swapaxes(arr, -1, -2))))
    elif layout == "permuted":
        if arr.ndim not in (3, 4):
            raise ValueError("permuted layout needs 3 or 4 dimensions")
        p = _ggml_perm(arr.ndim)
        r4 = arr.reshape((1,) * (4 - arr.ndim) + arr.shape)
        axes = [3 - p[3 - a] for a in range(4)]
        src = np.ascontiguousarray(r4.transpose(axes))
        src = src.reshape(src.shape[4 - arr.ndim :])
        t = ctx.permute(ctx.tensor(src), p)
    elif layout == "padded":
        pad, lead = 3, 5
        fill = -1 if arr.dtype.kind == "i" else np.nan
        big = np.full((*arr.shape[:-1], arr.shape[-1] + pad), fill, dtype=arr.dtype)
        big[..., : arr.shape[-1]] = arr
        flat = np.concatenate([np.full(lead, fill, arr.dtype), big.ravel(), np.full(2, fill, arr.dtype)])
        base = ctx.tensor(flat)
        es = arr.dtype.itemsize
        ne = list(reversed(arr.shape))
        nb = [es, (ne[0] + pad) * es]
        for i in range(2, len(ne)):
            nb.append(nb[-1] * ne[i - 1])
        t = ctx.view(base, ne, nb[: len(ne)], offset=lead * es)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    assert t.shape == arr.shape, f"layout {layout}: engine shape {t.shape} != {arr.shape}"
    if layout != "contiguous" and arr.ndim >= 2 and min(arr.shape) > 1:
        # (with a size-1 axis a "transposed" tensor can legitimately be contiguous)
        assert not t.is_contiguous(), f"layout {layout} produced a contiguous tensor"
    return t


def run_engine(
    build: Callable[..., ggml.Tensor],
    inputs: Sequence[np.ndarray],
    *,
    threads: int = 1,
    layouts: Sequence[str] | None = None,
    mem_size: int = 16 << 20,
) -> np.ndarray:
    """Builds ``build(ctx, *tensors)`` in a fresh context, computes it with ``threads`` and returns the
    output."""
    lays = list(layouts) if layouts is not None else ["contiguous"] * len(inputs)
    with ggml.Context(mem_size, threads=threads) as ctx:
        tensors = [engine_input(ctx, a, lay) for a, lay in zip(inputs, lays, strict=True)]
        out = build(ctx, *tensors)
        ctx.graph([out]).compute(threads=threads)
        return out.numpy()


def run_torch(
    reference: Callable[..., torch.Tensor], inputs: Sequence[np.ndarray], dtype: torch.dtype = torch.float32
) -> np.ndarray:
    """The reference result, computed in ``dtype`` and rounded to f32 (the engine's output type): an f64
    reference rounded once is the ideal f32 answer, overflow to inf included."""
    with torch.no_grad():
        out = reference(*[as_torch(a, dtype) for a in inputs])
    if out.is_floating_point():
        out = out.to(torch.float32)
    return out.detach().numpy()


def check_op(
    name: str,
    build: Callable[..., ggml.Tensor],
    reference: Callable[..., torch.Tensor],
    inputs: Sequence[np.ndarray],
    *,
    rtol: float,
    atol: float,
    threads: int = 1,
    layouts: Sequence[str] | None = None,
    ref_dtype: torch.dtype = torch.float32,
    reference_shape: Sequence[int] | None = None,
) -> Errors:
    """Runs ``build`` on our engine and ``reference`` in PyTorch on the same inputs and compares them.

    ``reference_shape`` reshapes the reference output (for ops whose engine shape keeps a trailing 1 that
    the torch expression drops, or vice versa); the engine's own shape is always what is checked.
    """
    got = run_engine(build, inputs, threads=threads, layouts=layouts)
    want = run_torch(reference, inputs, ref_dtype)
    if reference_shape is not None:
        want = want.reshape(tuple(reference_shape))
    return assert_close(got, want, rtol=rtol, atol=atol, name=name)


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-for-bit equality of two float arrays (NaN payloads and signed zeros included)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def report_lines() -> list[str]:
    return [f"{name:60s} max_abs {e[0]:.3g}  max_rel {e[1]:.3g}" for name, e in sorted(OBSERVED.items())]


def quant_panel_kernels(engine_type: int | None = None) -> bool:
    """Whether the kernel level in effect has the block types' column-panel kernels (mat-mat from 10
    columns) for a type (None: for some): AVX512_VNNI at the AVX-512 level; at the AVX2 level vpdpbusd
    with AVX-VNNI, else vpmaddubsw + vpmaddwd for Q4_0 and Q5_0."""
    level, features = ggml.simd_level(), ggml.cpu_features()
    if level == 2:
        return features["avx512_vnni"]
    return level == 1 and (features["avx_vnni"] or engine_type in (None, ggml.Q4_0, ggml.Q5_0))


@contextmanager
def cpu_without(*features: str) -> Iterator[None]:
    """Runs the block as a CPU without the named features (ggml.cpu_mask), then shows them again."""
    ggml.cpu_mask(features)
    try:
        yield
    finally:
        ggml.cpu_mask([])
