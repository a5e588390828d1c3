"""The op builders of :class:`rwkv_ggml.ggml.Context` and the argument checks every engine call shares.

Part of the engine binding (users import :mod:`rwkv_ggml.ggml`). Each builder checks its arguments in
Python before the engine sees them: a tensor operand goes through ``Context._arg`` (a Tensor of this
context, or of a context it reads from), a count or an index through :func:`as_int` / :func:`as_ints`
(an int of the range the engine takes), a factor through :func:`as_float`. What only the engine can
judge (shapes, types) it reports itself, as the typed errors of :mod:`rwkv_ggml.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from ._lib import ffi, lib
from .errors import EngineArgumentError

# Python checks that a number fits the C parameter it is passed as; what it means (a size of 0, a
# stride past the end) the engine judges, with its ShapeError/EngineArgumentError messages.
INT64 = (-(1 << 63), (1 << 63) - 1)
SIZE_T = (0, (1 << 64) - 1)
C_INT = (-(1 << 31), (1 << 31) - 1)
MAX_C_INT = C_INT[1]
N_DIMS = 4


def as_int(value: object, what: str, lo: int, hi: int) -> int:
    """``value`` as an int in lo..hi (bools and floats are refused: a fractional size is a bug)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise EngineArgumentError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    v = int(value)
    if v < lo:
        raise EngineArgumentError(f"{what} must be >= {lo}, got {v}")
    if v > hi:
        raise EngineArgumentError(f"{what} must be <= {hi}, got {v}")
    return v


def as_ints(values: object, what: str, lo: int, hi: int, max_len: int | None = None) -> list[int]:
    """A sequence of ints, each in lo..hi (see :func:`as_int`), at most ``max_len`` of them when given (the
    engine checks the number of dimensions itself)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise EngineArgumentError(f"{what} must be a sequence of ints, got {type(values).__name__}")
    items = list(values)
    if max_len is not None and len(items) > max_len:
        raise EngineArgumentError(f"{what} has {len(items)} entries; at most {max_len}")
    return [as_int(v, f"{what}[{i}]", lo, hi) for i, v in enumerate(items)]


def as_float(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise EngineArgumentError(f"{what} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


T = TypeVar("T")


class OpBuilders(Generic[T]):
    """Graph-node builders; ``T`` is the tensor class of the context that inherits them."""

    bf16_matmul: bool
    _callback_errors: list[BaseException]

    # Provided by the context.
    @property
    def ptr(self) -> Any:
        raise NotImplementedError

    def _arg(self, t: object, what: str) -> Any:
        raise NotImplementedError

    def _wrap(self, ptr: Any) -> T:
        raise NotImplementedError

    def _keep(self, obj: Any) -> None:
        raise NotImplementedError

    def _opt(self, t: object, what: str) -> Any:
        return ffi.NULL if t is None else self._arg(t, what)

    # ---- layout ----
    def view(self, src: T, ne: Sequence[int], nb: Sequence[int] | None = None, offset: int = 0) -> T:
        """A strided view: ``ne`` sizes (ggml order), ``nb`` byte strides (nb[0] ignored), byte ``offset``."""
        s = self._arg(src, "view: src")
        nel = as_ints(ne, "view: ne", *INT64)
        nbl = [0] * len(nel) if nb is None else as_ints(nb, "view: nb", *SIZE_T)
        if len(nbl) < len(nel):
            raise EngineArgumentError(f"view: need one stride per dimension ({len(nel)}), got {len(nbl)}")
        off = as_int(offset, "view: offset", *SIZE_T)
        return self._wrap(
            lib.rg_view(self.ptr, s, len(nel), ffi.new("int64_t[]", nel), ffi.new("size_t[]", nbl), off)
        )

    def reshape(self, src: T, ne: Sequence[int]) -> T:
        s = self._arg(src, "reshape: src")
        nel = as_ints(ne, "reshape: ne", *INT64)
        return self._wrap(lib.rg_reshape(self.ptr, s, len(nel), ffi.new("int64_t[]", nel)))

    def permute(self, src: T, axes: Sequence[int]) -> T:
        """Axis i of src becomes axis axes[i] of the result (ggml order)."""
        s = self._arg(src, "permute: src")
        ax = as_ints(axes, "permute: axes", *C_INT, max_len=N_DIMS)
        return self._wrap(lib.rg_permute(self.ptr, s, *(ax + list(range(len(ax), N_DIMS)))))

    def transpose(self, src: T) -> T:
        return self._wrap(lib.rg_transpose(self.ptr, self._arg(src, "transpose: src")))

    def cont(self, src: T) -> T:
        return self._wrap(lib.rg_cont(self.ptr, self._arg(src, "cont: src")))

    def cpy(self, src: T, dst: T) -> T:
        """Writes src into dst (whose memory must be writable: not a read-only or constant external)."""
        return self._wrap(lib.rg_cpy(self.ptr, self._arg(src, "cpy: src"), self._arg(dst, "cpy: dst")))

    # ---- element-wise ----
    def _binary(self, fn: Any, name: str, a: T, b: T) -> T:
        return self._wrap(fn(self.ptr, self._arg(a, f"{name}: a"), self._arg(b, f"{name}: b")))

    def add(self, a: T, b: T) -> T:
        return self._binary(lib.rg_add, "add", a, b)

    def sub(self, a: T, b: T) -> T:
        return self._binary(lib.rg_sub, "sub", a, b)

    def mul(self, a: T, b: T) -> T:
        return self._binary(lib.rg_mul, "mul", a, b)

    def div(self, a: T, b: T) -> T:
        return self._binary(lib.rg_div, "div", a, b)

    def max(self, a: T, b: T) -> T:
        return self._binary(lib.rg_max, "max", a, b)

    def scale(self, a: T, s: float) -> T:
        return self._wrap(lib.rg_scale(self.ptr, self._arg(a, "scale: a"), as_float(s, "scale: s")))

    def _unary(self, fn: Any, name: str, a: T) -> T:
        return self._wrap(fn(self.ptr, self._arg(a, f"{name}: a")))

    def neg(self, a: T) -> T:
        return self._unary(lib.rg_neg, "neg", a)

    def exp(self, a: T) -> T:
        return self._unary(lib.rg_exp, "exp", a)

    def one_minus_x(self, a: T) -> T:
        return self._unary(lib.rg_one_minus_x, "one_minus_x", a)

    def sigmoid(self, a: T) -> T:
        return self._unary(lib.rg_sigmoid, "sigmoid", a)

    def silu(self, a: T) -> T:
        return self._unary(lib.rg_silu, "silu", a)

    def relu(self, a: T) -> T:
        return self._unary(lib.rg_relu, "relu", a)

    def sqr(self, a: T) -> T:
        return self._unary(lib.rg_sqr, "sqr", a)

    def sqrt(self, a: T) -> T:
        return self._unary(lib.rg_sqrt, "sqrt", a)

    def tanh(self, a: T) -> T:
        return self._unary(lib.rg_tanh, "tanh", a)

    # ---- norms, reductions, products ----
    def layer_norm(self, x: T, w: T | None = None, b: T | None = None, eps: float = 1e-5) -> T:
        return self._wrap(
            lib.rg_layer_norm(
                self.ptr,
                self._arg(x, "layer_norm: x"),
                self._opt(w, "layer_norm: w"),
                self._opt(b, "layer_norm: b"),
                as_float(eps, "layer_norm: eps"),
            )
        )

    def group_norm(self, x: T, n_groups: int, w: T | None = None, b: T | None = None, eps: float = 1e-5) -> T:
        return self._wrap(
            lib.rg_group_norm(
                self.ptr,
                self._arg(x, "group_norm: x"),
                as_int(n_groups, "group_norm: n_groups", *INT64),
                self._opt(w, "group_norm: w"),
                self._opt(b, "group_norm: b"),
                as_float(eps, "group_norm: eps"),
            )
        )

    def sum_rows(self, x: T) -> T:
        return self._wrap(lib.rg_sum_rows(self.ptr, self._arg(x, "sum_rows: x")))

    def mul_mat(self, a: T, b: T, *, bf16: bool | None = None) -> T:
        """``b @ a.T`` in numpy terms. ``bf16=True`` (default: the context's ``bf16_matmul``) lets
        matrix-matrix products with F32/F16 weights use bf16 operands where the CPU has AVX512_BF16 (about
        twice as fast, ~1e-2 relative error per product; see rg_mul_mat_bf16)."""
        use_bf16 = self.bf16_matmul if bf16 is None else bf16
        return self._binary(lib.rg_mul_mat_bf16 if use_bf16 else lib.rg_mul_mat, "mul_mat", a, b)

    def get_rows(self, table: T, ids: T) -> T:
        return self._wrap(
            lib.rg_get_rows(self.ptr, self._arg(table, "get_rows: table"), self._arg(ids, "get_rows: ids"))
        )

    def set_rows(self, dst: T, src: T, ids: T) -> T:
        """Scatter: row ids[b] of dst (F32 (n, rows), rows contiguous at any stride) <- column b of src
        (contiguous F32 (n, B)). The result stands for dst after the write (as ``cpy``'s)."""
        return self._wrap(
            lib.rg_set_rows(
                self.ptr,
                self._arg(dst, "set_rows: dst"),
                self._arg(src, "set_rows: src"),
                self._arg(ids, "set_rows: ids"),
            )
        )

    def concat(self, a: T, b: T, dim: int) -> T:
        return self._wrap(
            lib.rg_concat(
                self.ptr,
                self._arg(a, "concat: a"),
                self._arg(b, "concat: b"),
                as_int(dim, "concat: dim", *C_INT),
            )
        )

    # ---- callbacks ----
    def map_unary(self, a: T, fn: Any, userdata: Any = None) -> T:
        """Applies ``fn`` to each row. ``fn`` is a C function pointer (cffi cdata of type
        ``rg_map_unary_fn``, e.g. ``lib.rg_test_map_affine``; then ``userdata`` is a cdata pointer or
        None) or a Python callable ``fn(dst_row: np.ndarray, src_row: np.ndarray)`` that writes dst_row
        (slow: it holds the GIL; meant for experiments and tests)."""
        pa = self._arg(a, "map_unary: a")
        cfn, ud = self._callback(fn, userdata, "rg_map_unary_fn", 1)
        return self._wrap(lib.rg_map_unary(self.ptr, pa, cfn, ud))

    def map_binary(self, a: T, b: T, fn: Any, userdata: Any = None) -> T:
        """Like :meth:`map_unary` with two same-shaped inputs: ``fn(dst_row, a_row, b_row)``."""
        pa, pb = self._arg(a, "map_binary: a"), self._arg(b, "map_binary: b")
        cfn, ud = self._callback(fn, userdata, "rg_map_binary_fn", 2)
        return self._wrap(lib.rg_map_binary(self.ptr, pa, pb, cfn, ud))

    def _callback(self, fn: Any, userdata: Any, ctype: str, n_inputs: int) -> tuple[Any, Any]:
        name = getattr(fn, "__name__", None)
        if not isinstance(fn, ffi.CData) and isinstance(name, str) and getattr(lib, name, None) is fn:
            fn = ffi.addressof(lib, name)  # a function of the compiled core, e.g. lib.rg_test_map_affine
        if isinstance(fn, ffi.CData):
            if userdata is not None and not isinstance(userdata, ffi.CData):
                raise EngineArgumentError("map op: userdata of a C callback must be a cffi pointer or None")
            ud = ffi.NULL if userdata is None else userdata
            self._keep(ud)
            return ffi.cast(ctype, fn), ud
        if not callable(fn):
            raise EngineArgumentError("map op: fn must be a C function pointer or a Python callable")
        py_fn: Callable[..., None] = fn

        def as_array(p: Any, n: int) -> np.ndarray:
            return np.frombuffer(ffi.buffer(p, n * 4), dtype=np.float32)

        errors = self._callback_errors

        # An exception cannot cross the C frames: it is kept and raised by Graph.compute afterwards.
        if n_inputs == 1:

            def trampoline(n: int, dst: Any, src: Any, _ud: Any) -> None:
                try:
                    py_fn(as_array(dst, n), as_array(src, n))
                except BaseException as exc:
                    errors.append(exc)
        else:

            def trampoline(n: int, dst: Any, a: Any, b: Any, _ud: Any) -> None:  # type: ignore[misc]
                try:
                    py_fn(as_array(dst, n), as_array(a, n), as_array(b, n))
                except BaseException as exc:
                    errors.append(exc)

        cb = ffi.callback(ctype, trampoline)
        self._keep(cb)
        return cb, ffi.NULL

    # ---- RWKV fused ops ----
    # The single-sequence WKV ops: with ``state_out`` (the state itself, or memory apart from it, as many
    # F32 elements) the new state is written there and the result is the (C, T) output; without it the
    # result is the output columns followed by the new state.

    def rwkv_wkv4(self, k: T, v: T, time_first: T, time_decay: T, state: T, state_out: T | None = None) -> T:
        """RWKV v4 WKV over T tokens: k, v (C, T); time_first, time_decay C floats; state (C, 3) rows aa,
        bb, pp. Result (C, T + 3) (T output columns, then the new state), or (C, T) with state_out."""
        args = [
            self._arg(t, f"rwkv_wkv4: {n}")
            for t, n in (
                (k, "k"),
                (v, "v"),
                (time_first, "time_first"),
                (time_decay, "time_decay"),
                (state, "state"),
            )
        ]
        return self._wrap(lib.rg_rwkv_wkv4(self.ptr, *args, self._opt(state_out, "rwkv_wkv4: state_out")))

    def rwkv_wkv5(self, r: T, k: T, v: T, w: T, u: T, state: T, state_out: T | None = None) -> T:
        """RWKV v5/v6 WKV over T tokens: r, k, v (C, T); decay w of H, C or C*T floats; bonus u of H or C
        floats; state C*N floats. Result ne (C, T + N): T output columns, then the new state; or (C, T)
        with state_out."""
        args = [
            self._arg(t, f"rwkv_wkv5: {n}")
            for t, n in ((r, "r"), (k, "k"), (v, "v"), (w, "w"), (u, "u"), (state, "state"))
        ]
        return self._wrap(lib.rg_rwkv_wkv5(self.ptr, *args, self._opt(state_out, "rwkv_wkv5: state_out")))

    def rwkv_wkv7(self, r: T, w: T, k: T, v: T, a: T, b: T, state: T, state_out: T | None = None) -> T:
        """RWKV v7 WKV over T tokens: r, decay w, k, v, a, b (C, T); state C*N floats.
        Result ne (C, T + N): T output columns, then the new state; or (C, T) with state_out."""
        args = [
            self._arg(t, f"rwkv_wkv7: {n}")
            for t, n in ((r, "r"), (w, "w"), (k, "k"), (v, "v"), (a, "a"), (b, "b"), (state, "state"))
        ]
        return self._wrap(lib.rg_rwkv_wkv7(self.ptr, *args, self._opt(state_out, "rwkv_wkv7: state_out")))

    # B sequences of one token each: operands (C, B); sequence b's state is row slots[b] of ``states`` (F32
    # (S, capacity), rows contiguous at any stride), updated in place; the result is y (C, B).
    def rwkv_wkv4_batch(self, k: T, v: T, time_first: T, time_decay: T, states: T, slots: T) -> T:
        """Batched :meth:`rwkv_wkv4`: states rows of 3*C floats (aa, bb, pp)."""
        args = [
            self._arg(t, f"rwkv_wkv4_batch: {n}")
            for t, n in (
                (k, "k"),
                (v, "v"),
                (time_first, "time_first"),
                (time_decay, "time_decay"),
                (states, "states"),
                (slots, "slots"),
            )
        ]
        return self._wrap(lib.rg_rwkv_wkv4_batch(self.ptr, *args))

    def rwkv_wkv5_batch(self, r: T, k: T, v: T, w: T, u: T, states: T, slots: T) -> T:
        """Batched :meth:`rwkv_wkv5`: decay w of H, C or C*B floats; states rows of C*N floats."""
        args = [
            self._arg(t, f"rwkv_wkv5_batch: {n}")
            for t, n in (
                (r, "r"),
                (k, "k"),
                (v, "v"),
                (w, "w"),
                (u, "u"),
                (states, "states"),
                (slots, "slots"),
            )
        ]
        return self._wrap(lib.rg_rwkv_wkv5_batch(self.ptr, *args))

    def rwkv_wkv7_batch(self, r: T, w: T, k: T, v: T, a: T, b: T, states: T, slots: T) -> T:
        """Batched :meth:`rwkv_wkv7`: states rows of C*N floats."""
        args = [
            self._arg(t, f"rwkv_wkv7_batch: {n}")
            for t, n in (
                (r, "r"),
                (w, "w"),
                (k, "k"),
                (v, "v"),
                (a, "a"),
                (b, "b"),
                (states, "states"),
                (slots, "slots"),
            )
        ]
        return self._wrap(lib.rg_rwkv_wkv7_batch(self.ptr, *args))

    def l2_norm(self, x: T, n_groups: int, eps: float = 1e-12) -> T:
        """Each row in n_groups groups, each divided by max(its L2 norm, eps)."""
        return self._wrap(
            lib.rg_l2_norm(
                self.ptr,
                self._arg(x, "l2_norm: x"),
                as_int(n_groups, "l2_norm: n_groups", *INT64),
                as_float(eps, "l2_norm: eps"),
            )
        )
