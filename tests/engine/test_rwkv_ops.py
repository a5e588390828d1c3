"""The RWKV v5/v6/v7 engine ops (csrc/rwkv_wkv5_wkv7.c) and l2_norm (csrc/ggml/ops_norm.c) against
float64 PyTorch recurrences written from architecture.md (V5.4-V5.5, V7.10-V7.11, V7.7).

Each op scans T tokens inside one node; the checks are:

* against the float64 recurrence, token by token, for T in {1, 2, 7, 33}, odd head counts and head sizes
  that are not a multiple of the 8-lane sums (tolerance below);
* bit-identical results for 1, 2 and 4 threads (threads split independent state lanes);
* one T-token call bit-identical to T one-token calls chained through the state (the model's sequence
  mode relies on it);
* the decay/bonus broadcasting modes of wkv5 (per head, per channel, per channel and token) and the
  shape/type errors of the builders.

Tolerance: the outputs are sums of N products of O(1) values with a state that accumulates up to T
tokens (bounded by the decays); f32 arithmetic keeps the relative error near N * 2^-24. We allow
2e-6 * (1 + |expected|_max) per element; observed <= 3.2e-7 (H=2, N=64, T=33).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rwkv_ggml import ggml
from rwkv_ggml.errors import DTypeError, ShapeError

from .helpers import THREAD_COUNTS

T_VALUES = (1, 2, 7, 33)
HEADS = [(1, 8), (3, 4), (5, 16), (3, 13), (2, 64)]  # (H, N): odd counts, N not a multiple of 8
TOL = 2e-6


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _compute(build, arrays: list[np.ndarray], threads: int) -> np.ndarray:
    """Builds build(ctx, *tensors) in a fresh context and returns the result computed with ``threads``."""
    with ggml.Context(16 << 20, threads=threads) as ctx:
        tensors = [ctx.tensor(a) for a in arrays]
        out = build(ctx, *tensors)
        ctx.graph([out]).compute(threads)
        return out.numpy()


def _check_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    bound = TOL * (1.0 + np.abs(want).max())
    err = np.abs(got.astype(np.float64) - want).max()
    assert err <= bound, f"{what}: max abs error {err:.3g} > {bound:.3g}"


# ---- wkv5 (v5 / v6) ----


def wkv5_reference(
    r: np.ndarray, k: np.ndarray, v: np.ndarray, w: np.ndarray, u: np.ndarray, state: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(V5.4)-(V5.5) in float64 PyTorch. r, k, v (T, H, N); w (T, H, N) per-token decays; u (H, N);
    state S (H, N, N) with S[h, i=key, j=value]. Returns y (T, H, N) and the final state."""
    S = torch.tensor(state, dtype=torch.float64)
    rt, kt, vt, wt, ut = (torch.tensor(x, dtype=torch.float64) for x in (r, k, v, w, u))
    ys = []
    for t in range(rt.shape[0]):
        kv = kt[t][:, :, None] * vt[t][:, None, :]  # k[h,i] v[h,j]
        ys.append(torch.einsum("hi,hij->hj", rt[t], ut[:, :, None] * kv + S))  # old state
        S = wt[t][:, :, None] * S + kv
    return torch.stack(ys).numpy(), S.numpy()


def _wkv5_inputs(H: int, N: int, T: int, w_mode: str, u_mode: str, seed: int) -> dict[str, np.ndarray]:
    g = _rng(seed)
    C = H * N
    f32 = np.float32
    shapes = {"head": (H,), "channel": (C,), "token": (T, C)}
    return {
        "r": g.uniform(-1, 1, (T, C)).astype(f32),
        "k": g.uniform(-1, 1, (T, C)).astype(f32),
        "v": g.uniform(-1, 1, (T, C)).astype(f32),
        "w": g.uniform(0.3, 0.999, shapes[w_mode]).astype(f32),
        "u": g.uniform(-1, 1.5, shapes[u_mode]).astype(f32),
        "state": g.uniform(-1, 1, (H, N, N)).astype(f32),
    }


def _wkv5_expected(x: dict[str, np.ndarray], H: int, N: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    def per_channel(a: np.ndarray) -> np.ndarray:  # (H,) -> (H, N), (C,) -> (H, N)
        return np.repeat(a, N).reshape(H, N) if a.size == H else a.reshape(H, N)

    w = x["w"].reshape(T, H, N) if x["w"].ndim == 2 else np.broadcast_to(per_channel(x["w"]), (T, H, N))
    return wkv5_reference(
        x["r"].reshape(T, H, N),
        x["k"].reshape(T, H, N),
        x["v"].reshape(T, H, N),
        w,
        per_channel(x["u"]),
        x["state"],
    )


def _run_wkv5(x: dict[str, np.ndarray], threads: int) -> np.ndarray:
    def build(c: ggml.Context, r, k, v, w, u, s):
        return c.rwkv_wkv5(r, k, v, w, u, s)

    return _compute(build, [x[n] for n in ("r", "k", "v", "w", "u", "state")], threads)


@pytest.mark.parametrize("T", T_VALUES)
@pytest.mark.parametrize("H, N", HEADS)
@pytest.mark.parametrize(
    "modes", [("head", "head"), ("channel", "channel"), ("token", "channel")], ids=["v5.1", "v5.2", "v6"]
)
def test_wkv5_matches_reference_and_is_thread_invariant(
    T: int, H: int, N: int, modes: tuple[str, str], simd_level: int
) -> None:
    if modes[0] == "token" and T == 1:
        modes = ("channel", "channel")  # one token: per-token decay is the per-channel case
    x = _wkv5_inputs(H, N, T, *modes, seed=T * 100 + H * 10 + N)
    outs = [_run_wkv5(x, n) for n in THREAD_COUNTS]
    C = H * N
    assert outs[0].shape == (T + N, C)  # numpy order of ne (C, T + N)
    for other in outs[1:]:
        np.testing.assert_array_equal(other, outs[0])
    y_want, s_want = _wkv5_expected(x, H, N, T)
    _check_close(outs[0][:T].reshape(T, H, N), y_want, "y")
    _check_close(outs[0][T:].reshape(H, N, N), s_want, "state")


@pytest.mark.parametrize("H, N", [(3, 4), (2, 64)])
@pytest.mark.parametrize("modes", [("head", "head"), ("token", "channel")], ids=["v5.1", "v6"])
def test_wkv5_scan_equals_chained_single_tokens(
    H: int, N: int, modes: tuple[str, str], simd_level: int
) -> None:
    T = 7
    x = _wkv5_inputs(H, N, T, *modes, seed=5)
    whole = _run_wkv5(x, 2)
    state = x["state"]
    for t in range(T):
        step = dict(x, r=x["r"][t : t + 1], k=x["k"][t : t + 1], v=x["v"][t : t + 1], state=state)
        if modes[0] == "token":
            step["w"] = np.ascontiguousarray(x["w"][t])
        out = _run_wkv5(step, 2)
        np.testing.assert_array_equal(out[0], whole[t])
        state = np.ascontiguousarray(out[1:].reshape(H, N, N))
    np.testing.assert_array_equal(state.reshape(-1), whole[T:].reshape(-1))


@pytest.mark.parametrize("modes", [("head", "head"), ("token", "channel")], ids=["v5.1", "v6"])
def test_wkv5_levels_agree_bit_for_bit(modes: tuple[str, str]) -> None:
    """The v5/v6 kernel is one C body per level with no fused multiply-add: wider vectors change no bit."""
    H, N, T = 3, 64, 5
    x = _wkv5_inputs(H, N, T, *modes, seed=11)
    previous = ggml.simd_level()
    try:
        outs = []
        for level in range(ggml.simd_max_level() + 1):
            assert ggml.simd_select(level) == level
            outs.append(_run_wkv5(x, 2))
    finally:
        ggml.simd_select(previous)
    for level, out in enumerate(outs[1:], 1):
        np.testing.assert_array_equal(out, outs[0], err_msg=f"level {level} against the scalar level")


def test_wkv5_zero_state_single_token_closed_form() -> None:
    """From a zero state one token gives y[h,j] = (sum_i r u k)[h] v[h,j] and S = k v^T: exact small cases."""
    H, N = 2, 3
    x = {
        "r": np.ones((1, 6), np.float32),
        "k": np.full((1, 6), 2.0, np.float32),
        "v": np.arange(6, dtype=np.float32).reshape(1, 6),
        "w": np.full(2, 0.5, np.float32),
        "u": np.array([1.0, 0.5], np.float32),
        "state": np.zeros((H, N, N), np.float32),
    }
    out = _run_wkv5(x, 1)
    np.testing.assert_array_equal(out[0], [0, 6, 12, 9, 12, 15])  # head 0: 3*1*2 = 6; head 1: 3*0.5*2 = 3
    np.testing.assert_array_equal(out[1:].reshape(H, N, N)[1], 2.0 * np.tile([3.0, 4.0, 5.0], (3, 1)))


def test_wkv5_builder_errors() -> None:
    with ggml.Context(1 << 20) as c:
        r = c.tensor(np.zeros((2, 12), np.float32))
        s = c.tensor(np.zeros(12 * 4, np.float32))
        w = c.tensor(np.zeros(12, np.float32))
        with pytest.raises(ShapeError, match="state"):
            c.rwkv_wkv5(r, r, r, w, w, c.tensor(np.zeros(12 * 5, np.float32)))  # N = 5 does not divide 12
        with pytest.raises(ShapeError, match="decay"):
            c.rwkv_wkv5(r, r, r, c.tensor(np.zeros(5, np.float32)), w, s)
        with pytest.raises(ShapeError, match="bonus"):
            c.rwkv_wkv5(r, r, r, w, c.tensor(np.zeros(24, np.float32)), s)
        with pytest.raises(ShapeError, match="r, k, v"):
            c.rwkv_wkv5(r, c.tensor(np.zeros((3, 12), np.float32)), r, w, w, s)
        with pytest.raises(DTypeError, match="contiguous F32"):
            c.rwkv_wkv5(r, r, c.tensor(np.zeros((2, 12), np.float16)), w, w, s)
        with pytest.raises(DTypeError, match="contiguous F32"):
            c.rwkv_wkv5(c.transpose(c.tensor(np.zeros((12, 2), np.float32))), r, r, w, w, s)


# ---- wkv7 ----


def wkv7_reference(
    r: np.ndarray,
    w: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    state: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(V7.10)-(V7.11) in float64 PyTorch; all vectors (T, H, N), S (H, N, N) with S[h, i=value, j=key]:
    S <- S diag(w) + (S a) b^T + v k^T, then y = S r with the updated state."""
    S = torch.tensor(state, dtype=torch.float64)
    rt, wt, kt, vt, at, bt = (torch.tensor(x, dtype=torch.float64) for x in (r, w, k, v, a, b))
    ys = []
    for t in range(rt.shape[0]):
        sa = torch.einsum("hij,hj->hi", S, at[t])
        S = S * wt[t][:, None, :] + sa[:, :, None] * bt[t][:, None, :] + vt[t][:, :, None] * kt[t][:, None, :]
        ys.append(torch.einsum("hij,hj->hi", S, rt[t]))
    return torch.stack(ys).numpy(), S.numpy()


def _wkv7_inputs(H: int, N: int, T: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs shaped like a real v7 layer: a = -kappa_hat with unit-norm heads, b = kappa_hat * alpha, decay
    in (0.545, 1) (V7.4), so the state stays bounded over the scan."""
    g = _rng(seed)
    C = H * N
    f32 = np.float32
    kappa = g.standard_normal((T, H, N))
    kappa_hat = kappa / np.linalg.norm(kappa, axis=2, keepdims=True)
    alpha = g.uniform(0, 1, (T, H, N))
    return {
        "r": g.uniform(-1, 1, (T, C)).astype(f32),
        "w": g.uniform(0.545, 1.0, (T, C)).astype(f32),
        "k": g.uniform(-1, 1, (T, C)).astype(f32),
        "v": g.uniform(-1, 1, (T, C)).astype(f32),
        "a": (-kappa_hat).reshape(T, C).astype(f32),
        "b": (kappa_hat * alpha).reshape(T, C).astype(f32),
        "state": g.uniform(-1, 1, (H, N, N)).astype(f32),
    }


WKV7_NAMES = ("r", "w", "k", "v", "a", "b", "state")


def _run_wkv7(x: dict[str, np.ndarray], threads: int) -> np.ndarray:
    def build(c: ggml.Context, *t):
        return c.rwkv_wkv7(*t)

    return _compute(build, [x[n] for n in WKV7_NAMES], threads)


# v7 head sizes: the SIMD rows kernels take N = 16, 32, 64 and 128, other sizes the scalar loop
WKV7_HEADS = [*HEADS, (2, 32), (1, 128)]


@pytest.mark.parametrize("T", T_VALUES)
@pytest.mark.parametrize("H, N", WKV7_HEADS)
def test_wkv7_matches_reference_and_is_thread_invariant(T: int, H: int, N: int, simd_level: int) -> None:
    x = _wkv7_inputs(H, N, T, seed=T * 100 + H * 10 + N)
    outs = [_run_wkv7(x, n) for n in THREAD_COUNTS]
    assert outs[0].shape == (T + N, H * N)
    for other in outs[1:]:
        np.testing.assert_array_equal(other, outs[0])
    args = [x[n].reshape(T, H, N) for n in WKV7_NAMES[:-1]]
    y_want, s_want = wkv7_reference(*args, x["state"])
    _check_close(outs[0][:T].reshape(T, H, N), y_want, "y")
    _check_close(outs[0][T:].reshape(H, N, N), s_want, "state")


@pytest.mark.parametrize("H, N", [(3, 13), (1, 64), (2, 32)])
def test_wkv7_scan_equals_chained_single_tokens(H: int, N: int, simd_level: int) -> None:
    T = 7
    x = _wkv7_inputs(H, N, T, seed=9)
    whole = _run_wkv7(x, 2)
    state = x["state"]
    for t in range(T):
        step = {n: np.ascontiguousarray(x[n][t : t + 1]) for n in WKV7_NAMES[:-1]}
        out = _run_wkv7(dict(step, state=state), 2)
        np.testing.assert_array_equal(out[0], whole[t])
        state = np.ascontiguousarray(out[1:].reshape(H, N, N))
    np.testing.assert_array_equal(state.reshape(-1), whole[T:].reshape(-1))


def test_wkv7_builder_errors() -> None:
    with ggml.Context(1 << 20) as c:
        x = c.tensor(np.zeros((2, 8), np.float32))
        s = c.tensor(np.zeros(8 * 4, np.float32))
        with pytest.raises(ShapeError, match="'b'"):
            c.rwkv_wkv7(x, x, x, x, x, c.tensor(np.zeros((3, 8), np.float32)), s)
        with pytest.raises(ShapeError, match="state"):
            c.rwkv_wkv7(x, x, x, x, x, x, c.tensor(np.zeros(8 * 3, np.float32)))
        with pytest.raises(DTypeError, match="'state'"):
            c.rwkv_wkv7(x, x, x, x, x, x, c.tensor(np.zeros(8 * 4, np.float16)))


# ---- l2_norm ----


@pytest.mark.parametrize("rows, groups, size", [(1, 1, 64), (3, 4, 8), (5, 3, 13), (2, 16, 1)])
def test_l2_norm_matches_torch_normalize(rows: int, groups: int, size: int) -> None:
    x = _rng(rows * groups + size).standard_normal((rows, groups * size)).astype(np.float32)
    x[0, :size] = 0.0  # a zero group stays zero thanks to eps
    want = (
        F.normalize(
            torch.tensor(x, dtype=torch.float64).reshape(rows, groups, size), p=2.0, dim=-1, eps=1e-12
        )
        .reshape(rows, -1)
        .numpy()
    )
    outs = [_compute(lambda c, t: c.l2_norm(t, groups, 1e-12), [x], n) for n in THREAD_COUNTS]
    for other in outs[1:]:
        np.testing.assert_array_equal(other, outs[0])
    np.testing.assert_allclose(outs[0], want, rtol=2e-7, atol=1e-7)


def test_l2_norm_f16_input_and_errors() -> None:
    x = _rng(3).standard_normal((2, 12)).astype(np.float16)
    got = _compute(lambda c, t: c.l2_norm(t, 3), [x], 1)
    xf = x.astype(np.float64).reshape(2, 3, 4)
    want = (xf / np.linalg.norm(xf, axis=2, keepdims=True)).reshape(2, 12)
    np.testing.assert_allclose(got, want, rtol=2e-7)
    with ggml.Context(1 << 20) as c:
        t = c.tensor(np.zeros((2, 12), np.float32))
        with pytest.raises(ShapeError):
            c.l2_norm(t, 5)
        with pytest.raises(ValueError):
            c.l2_norm(t, 3, -1.0)
