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

Errors from the engine become the exceptions of :mod:`rwkv_ggml.errors` with the engine's message; bad
arguments (a wrong type, a value out of range, a tensor of another context) are refused in Python with
:class:`~rwkv_ggml.errors.EngineArgumentError` naming the argument, before the engine sees them.

Ownership: a tensor or graph belongs to the context that built it and is usable while that context is open
(afterwards every use raises :class:`~rwkv_ggml.errors.ClosedError`). Ops take tensors of their own context,
or of the contexts it was told it reads from (``Context(reads=[weights_ctx])``): closing one of those makes
the reading context unusable as well. Memory: an array whose numpy ``writeable`` flag is off (a read-only
``mmap``, ``bytes``) may back a tensor the engine only reads (an input, a weight); making it the destination
of a write (``cpy``) is refused, and so is pointing a written tensor at it with ``set_data``. The op builders
live in :mod:`rwkv_ggml.ggml_ops`, the type table in :mod:`rwkv_ggml.ggml_types`; both are re-exported here,
so ``rwkv_ggml.ggml`` is the one module users import.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._lib import c_string, check, ffi, lib, raise_status
from .errors import ClosedError, EngineArgumentError, ShapeError
from .ggml_cpu import cpu_features, cpu_mask, simd_level, simd_max_level, simd_select
from .ggml_ops import C_INT, INT64, MAX_C_INT, SIZE_T, OpBuilders, as_int, as_ints
from .ggml_types import (
    F16,
    F32,
    I32,
    NUMPY_TYPES,
    Q4_0,
    Q4_1,
    Q4_K,
    Q5_0,
    Q5_1,
    Q5_K,
    Q6_K,
    Q8_0,
    TENSOR_TYPES,
    TYPE_NUMPY,
    block_bytes,
    block_size,
    is_quantized,
    is_valid_type,
    type_name,
)

__all__ = [
    "DEFAULT_MEM_SIZE",
    "F16",
    "F32",
    "I32",
    "Q4_0",
    "Q4_1",
    "Q4_K",
    "Q5_0",
    "Q5_1",
    "Q5_K",
    "Q6_K",
    "Q8_0",
    "TENSOR_TYPES",
    "Context",
    "Graph",
    "Pool",
    "Tensor",
    "block_bytes",
    "block_size",
    "cpu_features",
    "cpu_mask",
    "default_threads",
    "is_quantized",
    "is_valid_type",
    "simd_level",
    "simd_max_level",
    "simd_select",
    "type_name",
]

DEFAULT_MEM_SIZE = 64 << 20


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
        if threads > MAX_C_INT:
            raise EngineArgumentError(f"threads = {threads} is not plausible")
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
        """Sets the name shown in engine messages (kept to its first 47 bytes in UTF-8)."""
        if not isinstance(value, str):
            raise EngineArgumentError(f"a tensor name must be a str, got {type(value).__name__}")
        if "\0" in value:
            raise EngineArgumentError("a tensor name cannot contain a NUL character")
        lib.rg_tensor_set_name(self.ptr, value.encode())

    @property
    def op(self) -> str:
        return c_string(lib.rg_tensor_op_name(self.ptr))

    @property
    def nbytes(self) -> int:
        return int(lib.rg_tensor_nbytes(self.ptr))

    def is_contiguous(self) -> bool:
        return bool(lib.rg_tensor_is_contiguous(self.ptr))

    def is_readonly(self) -> bool:
        """Whether the tensor's memory (or that of the tensor it views) is a read-only buffer."""
        return bool(lib.rg_tensor_is_readonly(self.ptr))

    def numpy(self) -> np.ndarray:
        """A copy of the tensor's elements as a numpy array of shape ``self.shape``."""
        p = self.ptr
        t = self.type
        if t not in TYPE_NUMPY:
            raise EngineArgumentError(f"numpy(): {type_name(t)} tensors have no numpy dtype")
        data = lib.rg_tensor_data(p)
        if data == ffi.NULL:
            raise EngineArgumentError("numpy(): the tensor has no data (built in a no_alloc context?)")
        nbytes = self.nbytes
        npt = TYPE_NUMPY[t]
        flat = np.frombuffer(ffi.buffer(data, nbytes), dtype=npt, count=nbytes // npt.itemsize)
        strides = tuple(reversed([int(lib.rg_tensor_nb(p, i)) for i in range(self.n_dims)]))
        view = np.lib.stride_tricks.as_strided(flat, shape=self.shape, strides=strides, writeable=False)
        return np.array(view, copy=True)

    def data_view(self) -> np.ndarray:
        """A numpy view of a contiguous tensor's memory (no copy): for writing inputs in place. Read-only
        when the tensor's memory is (:meth:`is_readonly`). Valid only while the context is open."""
        p = self.ptr
        if self.type not in TYPE_NUMPY or not self.is_contiguous():
            raise EngineArgumentError("data_view(): only contiguous F32/F16/I32 tensors")
        data = lib.rg_tensor_data(p)
        if data == ffi.NULL:
            raise EngineArgumentError("data_view(): the tensor has no data")
        view = np.frombuffer(ffi.buffer(data, self.nbytes), dtype=TYPE_NUMPY[self.type]).reshape(self.shape)
        if self.is_readonly():
            view.flags.writeable = False
        return view

    def set_data(self, array: np.ndarray) -> None:
        """Repoints an external tensor (made by ``Context.external``) at another array of the same size.
        A read-only array is refused for a tensor a graph writes (a ``cpy`` destination)."""
        arr = _require_array(array, self.type)
        ctx = self._ctx
        fn = lib.rg_tensor_set_data if arr.flags.writeable else lib.rg_tensor_set_data_readonly
        status = fn(ctx.ptr, self.ptr, ffi.from_buffer(arr, require_writable=False), arr.nbytes)
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
    if array.dtype not in NUMPY_TYPES:
        raise EngineArgumentError(f"unsupported dtype {array.dtype}; use float32, float16 or int32")
    if engine_type is not None and NUMPY_TYPES[array.dtype] != engine_type:
        raise EngineArgumentError(
            f"array dtype {array.dtype} does not match the tensor type {type_name(engine_type)}"
        )
    if not array.flags.c_contiguous:
        raise EngineArgumentError("the array must be C-contiguous (use np.ascontiguousarray)")
    if array.ndim > 4:
        raise ShapeError(f"tensors have at most 4 dimensions, the array has {array.ndim}")
    return array


def _ne_of_shape(shape: Sequence[int], what: str) -> list[int]:
    ne = as_ints(shape, what, *INT64)[::-1]
    return ne if ne else [1]


class Graph:
    """A computation graph: built once, computed many times without allocation. It belongs to the context
    that built it: once that context (or one it reads from) is closed, every use raises ClosedError."""

    def __init__(self, ctx: Context, ptr: Any, outputs: Sequence[Tensor]) -> None:
        self._ctx = ctx
        self._ptr = ptr
        self.outputs = list(outputs)

    @property
    def ptr(self) -> Any:
        self._ctx._check_open()
        return self._ptr

    @property
    def n_nodes(self) -> int:
        return int(lib.rg_graph_n_nodes(self.ptr))

    @property
    def n_barriers(self) -> int:
        """How many times the threads meet during one compute (only where a node depends on another's
        memory; see csrc/ggml/graph_sync.c)."""
        return int(lib.rg_graph_n_barriers(self.ptr))

    def node_ops(self) -> list[str]:
        p = self.ptr
        return [c_string(lib.rg_tensor_op_name(lib.rg_graph_node(p, i))) for i in range(self.n_nodes)]

    def node_indices(self, tensors: Sequence[Tensor]) -> list[int]:
        """Positions of computed tensors in the graph's dependency order (ValueError if one is absent)."""
        p = self.ptr
        where = {int(ffi.cast("uintptr_t", lib.rg_graph_node(p, i))): i for i in range(self.n_nodes)}
        out = []
        for i, t in enumerate(_tensor_list(tensors, "node_indices: tensors")):
            node = where.get(int(ffi.cast("uintptr_t", self._ctx._arg(t, f"node_indices: tensors[{i}]"))))
            if node is None:
                raise EngineArgumentError(f"{t!r} is not a computed node of this graph")
            out.append(node)
        return out

    def compute(self, threads: int | None = None, n_nodes: int | None = None) -> None:
        """Computes the graph (or only its first ``n_nodes`` nodes) on the context's thread pool, with
        the GIL released while it runs."""
        ctx = self._ctx
        g = self.ptr
        pool = ctx.pool
        n = pool.threads if threads is None else as_int(threads, "compute: threads", *C_INT)
        ctx._callback_errors.clear()
        if n_nodes is None:
            status = lib.rg_graph_compute(g, pool.ptr, n)
        else:
            status = lib.rg_graph_compute_partial(g, pool.ptr, n, as_int(n_nodes, "compute: n_nodes", *C_INT))
        check(status, lambda: c_string(lib.rg_graph_error(g)))
        if ctx._callback_errors:
            first = ctx._callback_errors[0]
            ctx._callback_errors.clear()
            raise EngineArgumentError(f"a map-op callback raised {type(first).__name__}: {first}") from first


def _tensor_list(tensors: object, what: str) -> list[Any]:
    if isinstance(tensors, (str, bytes, Tensor)) or not isinstance(tensors, Sequence):
        raise EngineArgumentError(f"{what} must be a sequence of Tensors, got {type(tensors).__name__}")
    return list(tensors)


class Context(OpBuilders[Tensor]):
    """An arena of ``mem_size`` bytes holding tensors and graphs, and a pool of ``threads`` threads
    (or a borrowed ``pool`` shared with other contexts).

    ``no_alloc=True``: tensors get no memory when created. Either use it to measure (:attr:`required`
    tells how big a normal context must be for what was built), or build a graph in it: the graph then
    places every tensor lacking memory in one buffer, reusing an intermediate's memory once its last
    reader has run (what sequence-mode graphs need to stay small). The arena then only holds metadata.

    ``reads``: other contexts whose tensors this context's ops may take (a model's weights context, read by
    each graph's context). This context is usable only while all of them are open.
    """

    def __init__(
        self,
        mem_size: int = DEFAULT_MEM_SIZE,
        *,
        threads: int = 1,
        no_alloc: bool = False,
        pool: Pool | None = None,
        bf16_matmul: bool = False,
        reads: Sequence[Context] = (),
    ) -> None:
        self._ptr: Any = None  # set first: __del__ runs even when __init__ raises
        self._owns_pool = False
        if isinstance(mem_size, bool) or not isinstance(mem_size, int) or mem_size <= 0:
            raise EngineArgumentError(f"mem_size must be a positive int, got {mem_size!r}")
        if mem_size > SIZE_T[1]:
            raise EngineArgumentError(f"context size {mem_size} bytes is not plausible")
        if pool is not None and not isinstance(pool, Pool):
            raise EngineArgumentError(f"pool must be a Pool or None, got {type(pool).__name__}")
        if (
            isinstance(reads, Context)
            or not isinstance(reads, Sequence)
            or not all(isinstance(c, Context) for c in reads)
        ):
            raise EngineArgumentError("reads must be a sequence of Contexts")
        for other in reads:
            other._check_open()
        self._reads: tuple[Context, ...] = tuple(reads)
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
        for other in self._reads:  # a plain loop: this runs several times per eval
            if not other._is_open():
                raise ClosedError("a context this one reads tensors from (reads=) was closed")

    def _is_open(self) -> bool:
        # transitive: a tensor of a context read from may itself view a tensor of a context it reads
        if self._ptr is None:
            return False
        for other in self._reads:  # noqa: SIM110 (all() with a generator costs more per eval)
            if not other._is_open():
                return False
        return True

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

    def _raise_ctx_error(self, what: str) -> None:
        status = lib.rg_ctx_status(self._ptr)
        msg = self._error()
        lib.rg_ctx_clear_error(self._ptr)  # a refused call leaves the context usable
        if status == lib.RG_OK:
            raise_status(lib.RG_E_INTERNAL, f"{what}: the engine failed without reporting why (a bug)")
        raise_status(status, msg)

    def _wrap(self, ptr: Any) -> Tensor:
        if ptr == ffi.NULL:
            self._raise_ctx_error("building a tensor")
        return Tensor(self, ptr)

    def _arg(self, t: object, what: str) -> Any:
        """The engine pointer of an operand: a Tensor of this context or of one it reads from (an op
        must not hold a tensor whose memory another context frees)."""
        if not isinstance(t, Tensor):
            raise EngineArgumentError(f"{what} must be a Tensor, got {type(t).__name__}")
        owner = t._ctx
        if owner is not self and owner not in self._reads:
            raise EngineArgumentError(
                f"{what} belongs to another context; ops take tensors of their own "
                "context (or of a context given in reads=)"
            )
        return t.ptr

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
        etype = as_int(engine_type, "new_tensor: engine_type", *C_INT)
        ne = _ne_of_shape(shape, "new_tensor: shape")
        return self._wrap(lib.rg_new_tensor(self.ptr, etype, len(ne), ffi.new("int64_t[]", ne)))

    def tensor(self, array: np.ndarray, *, copy: bool = True) -> Tensor:
        """A tensor holding ``array`` (float32, float16 or int32). ``copy=False`` shares the array's
        memory (zero-copy; the context keeps the array alive)."""
        if not isinstance(array, np.ndarray):
            raise EngineArgumentError(f"tensor: expected a numpy array, got {type(array).__name__}")
        if not copy:
            return self.external(array)
        arr = _require_array(np.ascontiguousarray(array))
        if self.no_alloc:
            # tensors of a no_alloc context get no memory: keep a private copy and point at it (not
            # constant: like an arena tensor, it may be written, e.g. as a cpy destination)
            return self.external(np.array(arr, copy=True))
        ne = _ne_of_shape(arr.shape, "tensor: shape")
        t = self._wrap(lib.rg_new_tensor(self.ptr, NUMPY_TYPES[arr.dtype], len(ne), ffi.new("int64_t[]", ne)))
        data = lib.rg_tensor_data(t.ptr)
        if data != ffi.NULL:
            ffi.memmove(data, ffi.from_buffer(arr, require_writable=False), arr.nbytes)
        return t

    def external(
        self,
        array: np.ndarray,
        *,
        engine_type: int | None = None,
        ne: Sequence[int] | None = None,
        constant: bool = False,
    ) -> Tensor:
        """A tensor whose data is ``array``'s memory. With ``engine_type`` and ``ne`` the bytes of a uint8
        array are interpreted as that type (e.g. quantized weight blocks). ``constant=True`` promises that
        no graph writes this memory (weights): graphs then need fewer barriers between the nodes reading it.
        Without it, every external buffer is taken to possibly alias every other one. A read-only array
        (numpy ``writeable`` off) makes a read-only tensor: no op may write into it."""
        if engine_type is None:
            arr = _require_array(array)
            etype = NUMPY_TYPES[arr.dtype]
            ne_list = _ne_of_shape(arr.shape, "external: array shape")
        else:
            if not isinstance(array, np.ndarray):
                raise EngineArgumentError(f"external: expected a numpy array, got {type(array).__name__}")
            if not array.flags.c_contiguous:
                raise EngineArgumentError("external: the array must be C-contiguous")
            if ne is None:
                raise EngineArgumentError("external: engine_type needs ne (the sizes, ggml order)")
            arr = array
            etype = as_int(engine_type, "external: engine_type", *C_INT)
            ne_list = as_ints(ne, "external: ne", *INT64)
        buf = ffi.from_buffer(arr, require_writable=False)
        ne_c = ffi.new("int64_t[]", ne_list)
        if arr.flags.writeable:
            t = self._wrap(lib.rg_new_tensor_ext(self.ptr, etype, len(ne_list), ne_c, buf, arr.nbytes))
        else:
            t = self._wrap(
                lib.rg_new_tensor_ext_readonly(self.ptr, etype, len(ne_list), ne_c, buf, arr.nbytes)
            )
        self._keep(arr)
        if (
            constant and lib.rg_tensor_set_constant(self.ptr, t.ptr) != lib.RG_OK
        ):  # cannot fail for a new external
            self._raise_ctx_error("external")
        return t

    # ---- graphs ----
    def graph(self, outputs: Sequence[Tensor], max_threads: int | None = None) -> Graph:
        outs = _tensor_list(outputs, "graph: outputs")
        if not outs:
            raise EngineArgumentError("graph: no outputs")
        ptrs = [self._arg(t, f"graph: outputs[{i}]") for i, t in enumerate(outs)]
        mt = self.threads if max_threads is None else as_int(max_threads, "graph: max_threads", *C_INT)
        p = lib.rg_graph_build(self.ptr, ffi.new("rg_tensor *[]", ptrs), len(outs), mt)
        if p == ffi.NULL:
            self._raise_ctx_error("graph")
        return Graph(self, p, outs)
