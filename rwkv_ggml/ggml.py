"""A thin Python layer over the C engine: contexts, tensors from numpy, ops, graphs, threads.

Dimensions follow the engine (ggml order, fastest first): ``tensor.ne`` lists them, ``tensor.shape``
is the numpy shape (``ne`` reversed). An array of numpy shape ``(M, K)`` becomes a tensor with
``ne == (K, M)``; ``mul_mat(a, b)`` then computes ``b @ a.T`` in numpy terms.

Example::

    from rwkv_ggml import ggml
    with ggml.Context(threads=2) as ctx:
        w = ctx.tensor(np.random.rand(64, 32).astype(np.float32))   # ne = (32, 64)
        x = ctx.tensor(np.random.rand(32).astype(np.float32))       # ne = (32,)
        y = ctx.sigmoid(ctx.mul_mat(w, x))                            # ne = (64, 1)
        g = ctx.graph([y])
        g.compute()
        print(y.numpy())

Errors from the engine become the exceptions of :mod:`rwkv_ggml.errors` with the engine's message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._lib import c_string, check, ffi, lib, raise_status
from .errors import ClosedError, EngineArgumentError, ShapeError

F32 = 0
F16 = 1
Q4_0 = 2
Q4_1 = 3
Q5_0 = 7
Q5_1 = 8
Q8_0 = 9
I32 = 20

_NUMPY_TYPES = {np.dtype(np.float32): F32, np.dtype(np.float16): F16, np.dtype(np.int32): I32}
_TYPE_NUMPY = {F32: np.float32, F16: np.float16, I32: np.int32}

DEFAULT_MEM_SIZE = 64 << 20


def type_name(t: int) -> str:
    return c_string(lib.rg_type_name(t))


def simd_level() -> int:
    """Instruction-set level of the kernels in use: 0 scalar, 1 AVX2, 2 AVX-512."""
    return int(lib.rg_simd_level())


def simd_max_level() -> int:
    return int(lib.rg_simd_max_level())


def simd_select(max_level: int) -> int:
    """Caps the kernel level (process-wide; for tests and benchmarks). Returns the level in effect."""
    return int(lib.rg_simd_select(max_level))


def cpu_features() -> dict[str, bool]:
    """Each RG_CPU_* feature of the engine's header, by lower-case name without the prefix: detected or not."""
    bits = int(lib.rg_cpu_features())
    named = sorted((int(getattr(lib, n)), n) for n in dir(lib) if n.startswith("RG_CPU_"))
    return {n.removeprefix("RG_CPU_").lower(): bool(bits & bit) for bit, n in named}


def default_threads() -> int:
    """The number of physical cores (hyper-threads share the memory bandwidth that per-token inference
    is bound by, so they rarely help)."""
    try:
        cores = set()
        with open("/proc/cpuinfo") as f:
            phys = core = None
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                elif not line.strip():
                    if core is not None:
                        cores.add((phys, core))
                    phys = core = None
            if core is not None:
                cores.add((phys, core))
        n = len(cores)
    except OSError:
        n = 0
    avail = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n, avail) if n else avail)


class Pool:
    """A persistent thread pool (threads - 1 workers plus the calling thread)."""

    def __init__(self, threads: int) -> None:
        self._ptr: Any = None  # set first: __del__ runs even when __init__ raises
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise EngineArgumentError(f"threads must be a positive int, got {threads!r}")
        err = ffi.new("rg_err *")
        p = lib.rg_pool_new(threads, err)
        if p == ffi.NULL:
            raise_status(err.status, c_string(err.msg))
        self._ptr = p
        self.threads = threads

    @property
    def ptr(self) -> Any:
        if self._ptr is None:
            raise ClosedError("the thread pool was closed")
        return self._ptr

    def close(self) -> None:
        if self._ptr is not None:
            lib.rg_pool_free(self._ptr)
            self._ptr = None

    def __del__(self) -> None:
        self.close()


class Tensor:
    """A handle to an engine tensor; valid while its context is open."""

    __slots__ = ("_ctx", "_ptr")

    def __init__(self, ctx: Context, ptr: Any) -> None:
        self._ctx = ctx
        self._ptr = ptr

    @property
    def ptr(self) -> Any:
        self._ctx._check_open()
        return self._ptr

    @property
    def type(self) -> int:
        return int(lib.rg_tensor_type(self.ptr))

    @property
    def n_dims(self) -> int:
        return int(lib.rg_tensor_n_dims(self.ptr))

    @property
    def ne(self) -> tuple[int, ...]:
        p = self.ptr
        return tuple(int(lib.rg_tensor_ne(p, i)) for i in range(lib.rg_tensor_n_dims(p)))

    @property
    def nb(self) -> tuple[int, ...]:
        p = self.ptr
        return tuple(int(lib.rg_tensor_nb(p, i)) for i in range(4))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.ne))

    @property
    def name(self) -> str:
        return c_string(lib.rg_tensor_name(self.ptr))

    @name.setter
    def name(self, value: str) -> None:
        lib.rg_tensor_set_name(self.ptr, value.encode())

    @property
    def op(self) -> str:
        return c_string(lib.rg_tensor_op_name(self.ptr))

    @property
    def nbytes(self) -> int:
        return int(lib.rg_tensor_nbytes(self.ptr))

    def is_contiguous(self) -> bool:
        return bool(lib.rg_tensor_is_contiguous(self.ptr))

    def numpy(self) -> np.ndarray:
        """A copy of the tensor's elements as a numpy array of shape ``self.shape``."""
        p = self.ptr
        t = self.type
        if t not in _TYPE_NUMPY:
            raise EngineArgumentError(f"numpy(): {type_name(t)} tensors have no numpy dtype")
        data = lib.rg_tensor_data(p)
        if data == ffi.NULL:
            raise EngineArgumentError("numpy(): the tensor has no data (built in a no_alloc context?)")
        nbytes = self.nbytes
        npt = np.dtype(_TYPE_NUMPY[t])
        flat = np.frombuffer(ffi.buffer(data, nbytes), dtype=npt, count=nbytes // npt.itemsize)
        strides = tuple(reversed([int(lib.rg_tensor_nb(p, i)) for i in range(self.n_dims)]))
        view = np.lib.stride_tricks.as_strided(flat, shape=self.shape, strides=strides, writeable=False)
        return np.array(view, copy=True)

    def data_view(self) -> np.ndarray:
        """A writable numpy view of a contiguous tensor's memory (no copy): for writing inputs in place.
        Valid only while the context is open."""
        p = self.ptr
        if self.type not in _TYPE_NUMPY or not self.is_contiguous():
            raise EngineArgumentError("data_view(): only contiguous F32/F16/I32 tensors")
        data = lib.rg_tensor_data(p)
        if data == ffi.NULL:
            raise EngineArgumentError("data_view(): the tensor has no data")
        npt = np.dtype(_TYPE_NUMPY[self.type])
        return np.frombuffer(ffi.buffer(data, self.nbytes), dtype=npt).reshape(self.shape)

    def set_data(self, array: np.ndarray) -> None:
        """Repoints an external tensor (made by ``Context.external``) at another array of the same size."""
        arr = _require_array(array, self.type)
        ctx = self._ctx
        status = lib.rg_tensor_set_data(ctx.ptr, self.ptr, ffi.from_buffer(arr, require_writable=False), arr.nbytes)
        if status != lib.RG_OK:
            msg = ctx._error()
            lib.rg_ctx_clear_error(ctx.ptr)  # a refused repoint leaves the context usable
            raise_status(status, msg)
        # One reference per tensor: the engine reads this array until the next set_data (a list would grow
        # by one array per eval).
        ctx._data_refs[int(ffi.cast("uintptr_t", self.ptr))] = arr

    def __repr__(self) -> str:
        try:
            return f"Tensor(name={self.name!r}, op={self.op}, type={type_name(self.type)}, ne={self.ne})"
        except ClosedError:
            return "Tensor(<closed context>)"


def _require_array(array: np.ndarray, engine_type: int | None = None) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise EngineArgumentError(f"expected a numpy array, got {type(array).__name__}")
    if array.dtype not in _NUMPY_TYPES:
        raise EngineArgumentError(f"unsupported dtype {array.dtype}; use float32, float16 or int32")
    if engine_type is not None and _NUMPY_TYPES[array.dtype] != engine_type:
        raise EngineArgumentError(f"array dtype {array.dtype} does not match the tensor type {type_name(engine_type)}")
    if not array.flags.c_contiguous:
        raise EngineArgumentError("the array must be C-contiguous (use np.ascontiguousarray)")
    if array.ndim > 4:
        raise ShapeError(f"tensors have at most 4 dimensions, the array has {array.ndim}")
    return array


def _ne_of_shape(shape: Sequence[int]) -> list[int]:
    ne = [int(s) for s in reversed(tuple(shape))]
    return ne if ne else [1]


class Graph:
    """A computation graph: built once, computed many times without allocation."""

    def __init__(self, ctx: Context, ptr: Any, outputs: Sequence[Tensor]) -> None:
        self._ctx = ctx
        self._ptr = ptr
        self.outputs = list(outputs)

    @property
    def n_nodes(self) -> int:
        self._ctx._check_open()
        return int(lib.rg_graph_n_nodes(self._ptr))

    @property
    def n_barriers(self) -> int:
        """How many times the threads meet during one compute (only where a node depends on another's
        memory; see csrc/ggml/graph_sync.c)."""
        self._ctx._check_open()
        return int(lib.rg_graph_n_barriers(self._ptr))

    def node_ops(self) -> list[str]:
        self._ctx._check_open()
        return [c_string(lib.rg_tensor_op_name(lib.rg_graph_node(self._ptr, i))) for i in range(self.n_nodes)]

    def node_indices(self, tensors: Sequence[Tensor]) -> list[int]:
        """Positions of computed tensors in the graph's dependency order (ValueError if one is absent)."""
        self._ctx._check_open()
        where = {int(ffi.cast("uintptr_t", lib.rg_graph_node(self._ptr, i))): i for i in range(self.n_nodes)}
        out = []
        for t in tensors:
            i = where.get(int(ffi.cast("uintptr_t", t.ptr)))
            if i is None:
                raise EngineArgumentError(f"{t!r} is not a computed node of this graph")
            out.append(i)
        return out

    def compute(self, threads: int | None = None, n_nodes: int | None = None) -> None:
        """Computes the graph (or only its first ``n_nodes`` nodes) on the context's thread pool, with
        the GIL released while it runs."""
        ctx = self._ctx
        pool = ctx.pool
        n = pool.threads if threads is None else threads
        ctx._callback_errors.clear()
        if n_nodes is None:
            status = lib.rg_graph_compute(self._ptr, pool.ptr, n)
        else:
            status = lib.rg_graph_compute_partial(self._ptr, pool.ptr, n, n_nodes)
        check(status, lambda: c_string(lib.rg_graph_error(self._ptr)))
        if ctx._callback_errors:
            first = ctx._callback_errors[0]
            ctx._callback_errors.clear()
            raise EngineArgumentError(f"a map-op callback raised {type(first).__name__}: {first}") from first


class Context:
    """An arena of ``mem_size`` bytes holding tensors and graphs, and a pool of ``threads`` threads
    (or a borrowed ``pool`` shared with other contexts).

    ``no_alloc=True``: tensors get no memory when created. Either use it to measure (:attr:`required`
    tells how big a normal context must be for what was built), or build a graph in it: the graph then
    places every tensor lacking memory in one buffer, reusing an intermediate's memory once its last
    reader has run (what sequence-mode graphs need to stay small). The arena then only holds metadata.
    """

    def __init__(self, mem_size: int = DEFAULT_MEM_SIZE, *, threads: int = 1, no_alloc: bool = False,
                 pool: Pool | None = None, bf16_matmul: bool = False) -> None:
        self._ptr: Any = None  # set first: __del__ runs even when __init__ raises
        self._owns_pool = False
        if isinstance(mem_size, bool) or not isinstance(mem_size, int) or mem_size <= 0:
            raise EngineArgumentError(f"mem_size must be a positive int, got {mem_size!r}")
        err = ffi.new("rg_err *")
        p = lib.rg_ctx_new(mem_size, 1 if no_alloc else 0, err)
        if p == ffi.NULL:
            raise_status(err.status, c_string(err.msg))
        self._keepalive: list[Any] = []
        self._data_refs: dict[int, np.ndarray] = {}
        self._callback_errors: list[BaseException] = []
        self.no_alloc = no_alloc
        self.bf16_matmul = bf16_matmul
        # A shared pool (several contexts of one model) is borrowed, not owned.
        try:
            self.pool = Pool(threads) if pool is None else pool
        except BaseException:
            lib.rg_ctx_free(p)
            raise
        self._ptr = p
        self._owns_pool = pool is None
        self.threads = self.pool.threads

    # ---- lifetime ----
    @property
    def ptr(self) -> Any:
        self._check_open()
        return self._ptr

    def _check_open(self) -> None:
        if self._ptr is None:
            raise ClosedError("the context was closed")

    def close(self) -> None:
        if self._ptr is not None:
            if self._owns_pool:
                self.pool.close()
            lib.rg_ctx_free(self._ptr)
            self._ptr = None
            self._keepalive.clear()
            self._data_refs.clear()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def _keep(self, obj: Any) -> None:
        self._keepalive.append(obj)

    def _error(self) -> str:
        return c_string(lib.rg_ctx_error(self._ptr))

    def _wrap(self, ptr: Any) -> Tensor:
        if ptr == ffi.NULL:
            status = lib.rg_ctx_status(self._ptr)
            msg = self._error()
            lib.rg_ctx_clear_error(self._ptr)
            raise_status(status if status != lib.RG_OK else lib.RG_E_INTERNAL, msg)
        return Tensor(self, ptr)

    @property
    def used(self) -> int:
        return int(lib.rg_ctx_used(self.ptr))

    @property
    def size(self) -> int:
        return int(lib.rg_ctx_size(self.ptr))

    @property
    def required(self) -> int:
        return int(lib.rg_ctx_required(self.ptr))

    # ---- tensors ----
    def new_tensor(self, engine_type: int, shape: Sequence[int]) -> Tensor:
        """A zero-filled tensor of the given numpy-order shape, in the arena."""
        ne = _ne_of_shape(shape)
        return self._wrap(lib.rg_new_tensor(self.ptr, engine_type, len(ne), ffi.new("int64_t[]", ne)))

    def tensor(self, array: np.ndarray, *, copy: bool = True) -> Tensor:
        """A tensor holding ``array`` (float32, float16 or int32). ``copy=False`` shares the array's
        memory (zero-copy; the context keeps the array alive)."""
        arr = _require_array(np.ascontiguousarray(array) if copy else array)
        ne = _ne_of_shape(arr.shape)
        etype = _NUMPY_TYPES[arr.dtype]
        if not copy:
            return self.external(arr)
        if self.no_alloc:
            # tensors of a no_alloc context get no memory: keep a private copy and point at it
            return self.external(np.array(arr, copy=True), constant=True)
        t = self._wrap(lib.rg_new_tensor(self.ptr, etype, len(ne), ffi.new("int64_t[]", ne)))
        data = lib.rg_tensor_data(t.ptr)
        if data != ffi.NULL:
            ffi.memmove(data, ffi.from_buffer(arr, require_writable=False), arr.nbytes)
        return t

    def external(self, array: np.ndarray, *, engine_type: int | None = None, ne: Sequence[int] | None = None,
                 constant: bool = False) -> Tensor:
        """A tensor whose data is ``array``'s memory. With ``engine_type`` and ``ne`` the bytes of a uint8
        array are interpreted as that type (e.g. quantized weight blocks). ``constant=True`` promises that
        no graph writes this memory (weights): graphs then need fewer barriers between the nodes reading it.
        Without it, every external buffer is taken to possibly alias every other one."""
        if engine_type is None:
            arr = _require_array(array)
            etype = _NUMPY_TYPES[arr.dtype]
            ne_list = _ne_of_shape(arr.shape)
        else:
            arr = array
            if not arr.flags.c_contiguous:
                raise EngineArgumentError("the array must be C-contiguous")
            etype = engine_type
            ne_list = [int(x) for x in (ne or ())]
        self._keep(arr)
        buf = ffi.from_buffer(arr, require_writable=False)
        t = self._wrap(lib.rg_new_tensor_ext(self.ptr, etype, len(ne_list), ffi.new("int64_t[]", ne_list), buf,
                                             arr.nbytes))
        if constant and lib.rg_tensor_set_constant(self.ptr, t.ptr) != lib.RG_OK:  # cannot fail for an external
            raise_status(lib.RG_E_INTERNAL, self._error())
        return t

    # ---- layout ----
    def view(self, src: Tensor, ne: Sequence[int], nb: Sequence[int] | None = None, offset: int = 0) -> Tensor:
        """A strided view: ``ne`` sizes (ggml order), ``nb`` byte strides (nb[0] ignored), byte ``offset``."""
        nel = [int(x) for x in ne]
        nbl = [int(x) for x in (nb if nb is not None else [0] * len(nel))]
        if len(nbl) < len(nel):
            raise EngineArgumentError("view: need one stride per dimension")
        return self._wrap(lib.rg_view(self.ptr, src.ptr, len(nel), ffi.new("int64_t[]", nel), ffi.new("size_t[]", nbl),
                                      offset))

    def reshape(self, src: Tensor, ne: Sequence[int]) -> Tensor:
        nel = [int(x) for x in ne]
        return self._wrap(lib.rg_reshape(self.ptr, src.ptr, len(nel), ffi.new("int64_t[]", nel)))

    def permute(self, src: Tensor, axes: Sequence[int]) -> Tensor:
        """Axis i of src becomes axis axes[i] of the result (ggml order)."""
        ax = list(axes) + list(range(len(axes), 4))
        return self._wrap(lib.rg_permute(self.ptr, src.ptr, *ax))

    def transpose(self, src: Tensor) -> Tensor:
        return self._wrap(lib.rg_transpose(self.ptr, src.ptr))

    def cont(self, src: Tensor) -> Tensor:
        return self._wrap(lib.rg_cont(self.ptr, src.ptr))

    def cpy(self, src: Tensor, dst: Tensor) -> Tensor:
        return self._wrap(lib.rg_cpy(self.ptr, src.ptr, dst.ptr))

    # ---- element-wise ----
    def add(self, a: Tensor, b: Tensor) -> Tensor:
        return self._wrap(lib.rg_add(self.ptr, a.ptr, b.ptr))

    def sub(self, a: Tensor, b: Tensor) -> Tensor:
        return self._wrap(lib.rg_sub(self.ptr, a.ptr, b.ptr))

    def mul(self, a: Tensor, b: Tensor) -> Tensor:
        return self._wrap(lib.rg_mul(self.ptr, a.ptr, b.ptr))

    def div(self, a: Tensor, b: Tensor) -> Tensor:
        return self._wrap(lib.rg_div(self.ptr, a.ptr, b.ptr))

    def max(self, a: Tensor, b: Tensor) -> Tensor:
        return self._wrap(lib.rg_max(self.ptr, a.ptr, b.ptr))

    def scale(self, a: Tensor, s: float) -> Tensor:
        return self._wrap(lib.rg_scale(self.ptr, a.ptr, float(s)))

    def neg(self, a: Tensor) -> Tensor:
        return self._wrap(lib.rg_neg(self.ptr, a.ptr))

    def exp(self, a: Tensor) -> Tensor:
        return self._wrap(lib.rg_exp(self.ptr, a.ptr))

    def one_minus_x(self, a: Tensor) -> Tensor:
        return self._wrap(lib.rg_one_minus_x(self.ptr, a.ptr))

    def sigmoid(self, a: Tensor) -> Tensor:
        return self._wrap(lib.rg_sigmoid(self.ptr, a.ptr))

    def silu(self, a: Tensor) -> Tensor:
        return self._wrap(lib.rg_silu(self.ptr, a.ptr))

    def relu(self, a: Tensor) -> Tensor:
        return self._wrap(lib.rg_relu(self.ptr, a.ptr))

    def sqr(self, a: Tensor) -> Tensor:
        return self._wrap(lib.rg_sqr(self.ptr, a.ptr))

    def sqrt(self, a: Tensor) -> Tensor:
        return self._wrap(lib.rg_sqrt(self.ptr, a.ptr))

    def tanh(self, a: Tensor) -> Tensor:
        return self._wrap(lib.rg_tanh(self.ptr, a.ptr))

    # ---- norms, reductions, products ----
    def layer_norm(self, x: Tensor, w: Tensor | None = None, b: Tensor | None = None, eps: float = 1e-5) -> Tensor:
        return self._wrap(lib.rg_layer_norm(self.ptr, x.ptr, _ptr_or_null(w), _ptr_or_null(b), float(eps)))

    def group_norm(self, x: Tensor, n_groups: int, w: Tensor | None = None, b: Tensor | None = None,
                   eps: float = 1e-5) -> Tensor:
        return self._wrap(lib.rg_group_norm(self.ptr, x.ptr, int(n_groups), _ptr_or_null(w), _ptr_or_null(b),
                                            float(eps)))

    def sum_rows(self, x: Tensor) -> Tensor:
        return self._wrap(lib.rg_sum_rows(self.ptr, x.ptr))

    def mul_mat(self, a: Tensor, b: Tensor, *, bf16: bool | None = None) -> Tensor:
        """``b @ a.T`` in numpy terms. ``bf16=True`` (default: the context's ``bf16_matmul``) lets
        matrix-matrix products with F32/F16 weights use bf16 operands where the CPU has AVX512_BF16 (about
        twice as fast, ~1e-2 relative error per product; see rg_mul_mat_bf16)."""
        use_bf16 = self.bf16_matmul if bf16 is None else bf16
        fn = lib.rg_mul_mat_bf16 if use_bf16 else lib.rg_mul_mat
        return self._wrap(fn(self.ptr, a.ptr, b.ptr))

    def get_rows(self, table: Tensor, ids: Tensor) -> Tensor:
        return self._wrap(lib.rg_get_rows(self.ptr, table.ptr, ids.ptr))

    def concat(self, a: Tensor, b: Tensor, dim: int) -> Tensor:
        return self._wrap(lib.rg_concat(self.ptr, a.ptr, b.ptr, int(dim)))

    # ---- callbacks ----
    def map_unary(self, a: Tensor, fn: Any, userdata: Any = None) -> Tensor:
        """Applies ``fn`` to each row. ``fn`` is a C function pointer (cffi cdata of type
        ``rg_map_unary_fn``, e.g. ``lib.rg_test_map_affine``; then ``userdata`` is a cdata pointer or
        None) or a Python callable ``fn(dst_row: np.ndarray, src_row: np.ndarray)`` that writes dst_row
        (slow: it holds the GIL; meant for experiments and tests)."""
        cfn, ud = self._callback(fn, userdata, "rg_map_unary_fn", 1)
        return self._wrap(lib.rg_map_unary(self.ptr, a.ptr, cfn, ud))

    def map_binary(self, a: Tensor, b: Tensor, fn: Any, userdata: Any = None) -> Tensor:
        """Like :meth:`map_unary` with two same-shaped inputs: ``fn(dst_row, a_row, b_row)``."""
        cfn, ud = self._callback(fn, userdata, "rg_map_binary_fn", 2)
        return self._wrap(lib.rg_map_binary(self.ptr, a.ptr, b.ptr, cfn, ud))

    def _callback(self, fn: Any, userdata: Any, ctype: str, n_inputs: int) -> tuple[Any, Any]:
        name = getattr(fn, "__name__", None)
        if not isinstance(fn, ffi.CData) and isinstance(name, str) and getattr(lib, name, None) is fn:
            fn = ffi.addressof(lib, name)  # a function of the compiled core, e.g. lib.rg_test_map_affine
        if isinstance(fn, ffi.CData):
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
    def rwkv_wkv4(self, k: Tensor, v: Tensor, time_first: Tensor, time_decay: Tensor, state: Tensor) -> Tensor:
        return self._wrap(lib.rg_rwkv_wkv4(self.ptr, k.ptr, v.ptr, time_first.ptr, time_decay.ptr, state.ptr))

    def rwkv_wkv5(self, r: Tensor, k: Tensor, v: Tensor, w: Tensor, u: Tensor, state: Tensor) -> Tensor:
        """RWKV v5/v6 WKV over T tokens: r, k, v (C, T); decay w of H, C or C*T floats; bonus u of H or C
        floats; state C*N floats. Result ne (C, T + N): T output columns, then the new state."""
        return self._wrap(lib.rg_rwkv_wkv5(self.ptr, r.ptr, k.ptr, v.ptr, w.ptr, u.ptr, state.ptr))

    def rwkv_wkv7(self, r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor) -> Tensor:
        """RWKV v7 WKV over T tokens: r, decay w, k, v, a, b (C, T); state C*N floats.
        Result ne (C, T + N): T output columns, then the new state."""
        return self._wrap(lib.rg_rwkv_wkv7(self.ptr, r.ptr, w.ptr, k.ptr, v.ptr, a.ptr, b.ptr, state.ptr))

    def l2_norm(self, x: Tensor, n_groups: int, eps: float = 1e-12) -> Tensor:
        """Each row in n_groups groups, each divided by max(its L2 norm, eps)."""
        return self._wrap(lib.rg_l2_norm(self.ptr, x.ptr, int(n_groups), float(eps)))

    # ---- graphs ----
    def graph(self, outputs: Sequence[Tensor], max_threads: int | None = None) -> Graph:
        outs = list(outputs)
        if not outs:
            raise EngineArgumentError("graph: no outputs")
        arr = ffi.new("rg_tensor *[]", [t.ptr for t in outs])
        mt = self.threads if max_threads is None else max_threads
        p = lib.rg_graph_build(self.ptr, arr, len(outs), mt)
        if p == ffi.NULL:
            status = lib.rg_ctx_status(self._ptr)
            msg = self._error()
            lib.rg_ctx_clear_error(self._ptr)
            raise_status(status, msg)
        return Graph(self, p, outs)


def _ptr_or_null(t: Tensor | None) -> Any:
    return ffi.NULL if t is None else t.ptr
