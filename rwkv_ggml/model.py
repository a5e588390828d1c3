"""The core Model: load an RWKV model file and evaluate it token by token with an explicit state.

This is the model layer (load, graphs, evals, hidden vectors, perplexity); text in and text out
(generation, completion, embeddings of text, chat) build on it in :mod:`rwkv_ggml.api`, whose Model
subclass is the package's ``rwkv_ggml.Model``.

The recurrent state is a plain float32 numpy array in rwkv.cpp's layout (architecture.md §7), so it
can be saved, restored, copied and branched like any array, and exchanged with rwkv.cpp.

Threading rule: a Model may be shared by several Python threads, each with its own state; evals of
one Model are serialised by a lock (the engine already uses ``threads`` cores per eval). The GIL is
released while the engine computes, so other Python threads keep running meanwhile.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import _checks, arch, batch, ggml
from ._threads import default_threads_for_model
from .checkpoint import initial_state_from_checkpoint
from .errors import ClosedError, EngineArgumentError, ModelFormatError
from .fileformat import DType
from .gguf_model import open_model_file
from .model_graphs import ModelGraph, Resources, new_graph
from .state import State
from .weights import DEFAULT_PLACEMENT, WeightStore

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11; only read by type checkers here

FloatArray = npt.NDArray[np.float32]

# Tokens per sequence-mode graph: each chunk reads every weight from memory once, so long chunks
# amortise that (on a 1.5B model 256 ingests ~10-30% faster than 64) at the price of activation memory
# (about 40 MB more for 1.5B RWKV-4, 10 MB for 169M).
DEFAULT_CHUNK_SIZE = 256
# Remainders of a sequence up to this many tokens run as one graph of their exact length (_chunk_lengths).
EXACT_CHUNK_MAX = 16


class Model:
    """An RWKV model loaded from an rwkv.cpp ``.bin`` file.

    ``threads``: compute threads (default: 1 for model files under 64 MiB, where a second thread costs
    more than it saves, else the physical core count; see rwkv_ggml._threads). ``placement``: ``"hugepage"``
    (load the weights into 2 MiB pages: fastest) or ``"mmap"`` (map the file: lazy, shared).
    ``gn_eps``: the GroupNorm epsilon of v5+ (``att.ln_x``); default 64e-5 for every v5+ model, the value
    the official models were trained with (architecture.md §9.2). rwkv.cpp uses 1e-5 for v5: pass
    ``gn_eps=1e-5`` to reproduce its results (its tiny v5 test models need it). Ignored for v4, which has no
    GroupNorm.
    ``bf16``: opt-in faster prompts. Sequence mode's matrix products with F32/F16 weights use bf16
    operands (f32 accumulation) on CPUs with AVX512_BF16, about twice the arithmetic rate; logits then
    differ from the exact f32 result by up to ~1e-2 relative (tests/model/test_bf16.py states the
    bound). Per-token evals and quantized weights are unaffected; without AVX512_BF16 it does nothing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        *,
        placement: str = DEFAULT_PLACEMENT,
        gn_eps: float | None = None,
        bf16: bool = False,
    ) -> None:
        self.bf16 = _checks.check_bool(bf16, "bf16")
        self.threads = _checks.check_threads(default_threads_for_model(path) if threads is None else threads)
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._closed = True
        self._initial_state: FloatArray | None = None  # load_initial_state
        self._fingerprint: str | None = None  # computed on first use
        self._resources = Resources()
        self._release = weakref.finalize(self, self._resources.release)
        self._graphs = self._resources.graphs
        mf = open_model_file(path)  # rwkv.cpp .bin or GGUF
        # A GGUF file carries its vocabulary; Tokenizer.for_model prefers it (None: chosen by n_vocab).
        self.vocab_table: list[bytes] | None = getattr(mf, "vocab_table", None)
        try:
            self.hparams = arch.validate(mf)
            if gn_eps is not None:
                self.hparams = dataclasses.replace(self.hparams, gn_eps=_checks.check_gn_eps(gn_eps))
            self._store = WeightStore(mf, placement)
        except BaseException:
            mf.close()
            raise
        try:
            self._resources.own(self._store.close)
            self._pool = ggml.Pool(self.threads)
            self._resources.own(self._pool.close)
            derived = arch.derived_weights(self.hparams, self._store.raw)
            self._weights_ctx = ggml.Context(
                (1 << 16) + 512 * (len(mf.tensors) + len(derived)), pool=self._pool
            )
            self._resources.own(self._weights_ctx.close)
            self._closed = False
            self._weights = self._place_weights(list(mf.tensors))
            # What the graphs read: the stored tensors and the constants derived from them at load time.
            self._graph_weights = dict(self._weights)
            for name, arr in derived.items():
                self._graph_weights[name] = self._weights_ctx.external(arr, constant=True)
            self._dtype = DType(mf.data_type) if mf.data_type in DType._value2member_map_ else DType.F32
            # Output buffers for when the caller's output aliases the input (evals hold the lock).
            self._scratch_states = (
                np.empty(self.state_size, dtype=np.float32),
                np.empty(self.state_size, dtype=np.float32),
            )
            self._graph_for(1)
        except BaseException:
            self.close()
            raise

    def _place_weights(self, names: list[str]) -> dict[str, ggml.Tensor]:
        """The stored tensors as constant engine tensors pointing into the weight store's memory."""
        weights = {}
        for name in names:
            rec = self._store.record(name)
            t = self._weights_ctx.external(
                self._store.raw(name), engine_type=int(rec.dtype), ne=list(rec.ne), constant=True
            )
            t.name = name
            weights[name] = t
        return weights

    # ---- properties ----
    @property
    def version(self) -> str:
        return self.hparams.version

    @property
    def n_vocab(self) -> int:
        return self.hparams.n_vocab

    @property
    def n_embed(self) -> int:
        return self.hparams.n_embed

    @property
    def n_layer(self) -> int:
        return self.hparams.n_layer

    @property
    def state_size(self) -> int:
        return self.hparams.state_size

    @property
    def gn_eps(self) -> float:
        """The GroupNorm epsilon in use (v5+; 0.0 for v4)."""
        return self.hparams.gn_eps

    @property
    def dtype(self) -> str:
        """The file's main data type ("F32", "F16", "Q5_1", ...)."""
        return self._dtype.name

    @property
    def placement(self) -> str:
        return self._store.placement

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- graphs ----
    def _graph_for(
        self, T: int, all_logits: bool = False, batch_shape: tuple[int, int] | None = None
    ) -> ModelGraph:
        """The cached graph of T tokens of one sequence, or with batch_shape = (B, capacity) of one token for
        each of B sequences in a bank of capacity states (the last MAX_BATCH_GRAPHS of those are kept)."""
        key: tuple[Any, ...] = (T, all_logits and T > 1) if batch_shape is None else ("batch", *batch_shape)
        g = self._graphs.get(key)
        if g is not None:
            if batch_shape is not None:  # most recently used last
                self._graphs[key] = self._graphs.pop(key)
            return g
        if batch_shape is not None:
            batch_keys = [k for k in self._graphs if k[0] == "batch"]
            if len(batch_keys) >= batch.MAX_BATCH_GRAPHS:
                self._graphs.pop(batch_keys[0]).ctx.close()
        g = new_graph(
            self.hparams,
            self._graph_weights,
            self._pool,
            self._weights_ctx,
            T,
            all_logits,
            batch_shape,
            self._scratch_states,
            self.bf16,
        )
        self._graphs[key] = g
        return g

    # ---- state ----
    def init_state(self) -> FloatArray:
        """A fresh state: zeros, except v4's pp = -1e30 (architecture.md §3.4, layout §7); after
        :meth:`load_initial_state`, a copy of the trained initial state instead (until
        :meth:`reset_initial_state`). ``state=None`` in the evals starts from this state."""
        self._check_open()
        if self._initial_state is not None:
            return self._initial_state.copy()
        return self.hparams.layout.fresh()

    def _state_in(self, state: FloatArray | State | None) -> FloatArray:
        """The state an eval starts from: the caller's (checked, never modified) or a fresh one."""
        return self.init_state() if state is None else self._check_state(state, "state")

    def _state_out(self, state_out: FloatArray | State | None) -> FloatArray:
        """Where an eval writes the new state: the caller's buffer (checked) or a new array."""
        if state_out is None:
            return np.empty(self.state_size, dtype=np.float32)
        return self._check_state(state_out, "state_out", writable=True)

    # ---- evaluation ----
    def eval(
        self,
        token: int,
        state: FloatArray | State | None = None,
        *,
        state_out: FloatArray | State | None = None,
        logits_out: FloatArray | None = None,
        compute_logits: bool = True,
    ) -> tuple[FloatArray | None, FloatArray]:
        """Feeds one token. Returns ``(logits, new_state)``.

        ``state=None`` starts from :meth:`init_state`; the caller's ``state`` is never modified.
        ``state_out``/``logits_out`` are written instead of allocating (``state_out`` may be ``state``
        itself). With ``compute_logits=False`` the head is skipped and ``logits`` is None.
        """
        self._check_open()
        tok = _checks.check_token(token, self.n_vocab)
        state_in, out = self._state_in(state), self._state_out(state_out)
        if logits_out is not None:
            _checks.check_logits_out(logits_out, (self.n_vocab,), contiguous=False)
        with self._lock:
            self._check_open()
            g = self._graph_for(1)
            # The graph reads all of the old state before it writes any of the new (_graph_for), so
            # the state can be updated in place; a partial overlap is written to scratch and copied.
            alias = np.shares_memory(state_in, out)
            in_place = alias and state_in.ctypes.data == out.ctypes.data
            target = self._scratch_states[0] if alias and not in_place else out
            g.ids_view[0] = tok
            self._run(g, state_in, target, compute_logits)
            if target is not out:
                np.copyto(out, target)
            logits = None
            if compute_logits:
                logits = logits_out if logits_out is not None else np.empty(self.n_vocab, dtype=np.float32)
                np.copyto(logits, g.logits_view[0])
        return logits, out

    @staticmethod
    def _run(g: ModelGraph, state_in: np.ndarray, state_out: np.ndarray, compute_logits: bool) -> None:
        """One compute of a built graph (ids already written): the engine reads state_in and writes
        state_out (the same buffer, or two that do not overlap); with compute_logits=False the head is
        skipped."""
        g.io.state_in.set_data(state_in)
        g.io.state_out.set_data(state_out)
        g.graph.compute(n_nodes=None if compute_logits else g.n_state_nodes)

    def eval_batch(
        self,
        tokens: Sequence[int] | np.ndarray,
        states: FloatArray | batch.StateBank | None = None,
        *,
        slots: Sequence[int] | np.ndarray | None = None,
        state_out: FloatArray | None = None,
        logits_out: FloatArray | None = None,
        compute_logits: bool = True,
    ) -> tuple[FloatArray | None, FloatArray]:
        """Feeds one token to each of B sequences at once (``tokens[b]`` to sequence b), in one graph: the
        weights are read once for all B. Returns ``(logits, states)``, logits of shape ``(B, n_vocab)``.

        * ``states`` a ``(B, state_size)`` float32 array (or None: B fresh states), no ``slots``: the new
          states go to ``state_out`` (which may be ``states`` itself: updated in place) or a new array,
          returned; ``states`` is otherwise not modified.
        * ``states`` a :class:`~rwkv_ggml.batch.StateBank` (or a writable C-contiguous ``(capacity,
          state_size)`` array) with ``slots`` (B distinct rows): those rows are updated in place and the
          bank's array is returned; the other rows are untouched and no state is copied.

        The result equals B separate :meth:`eval` calls up to the matrix products' rounding (module
        :mod:`rwkv_ggml.batch`). ``logits_out``/``compute_logits`` as in :meth:`eval`.
        """
        self._check_open()
        toks = batch.check_batch_tokens(tokens, self.n_vocab)
        B = len(toks)
        if isinstance(states, batch.StateBank) or slots is not None:
            if state_out is not None:
                raise EngineArgumentError(
                    "state_out is not used with slots: the bank's rows are updated in place"
                )
            if isinstance(states, batch.StateBank):
                if states.model is not self:
                    raise EngineArgumentError("this state bank belongs to another model")
                bank, slot_ids = states.array, states.check_step(slots, B)
            else:
                bank = batch.check_states(states, "states (the bank)", self.state_size, None, writable=True)
                slot_ids = batch.check_slots(slots, B, bank.shape[0])
        else:
            bank = (
                np.empty((B, self.state_size), np.float32)
                if state_out is None
                else batch.check_states(state_out, "state_out", self.state_size, B, writable=True)
            )
            if states is None:
                bank[...] = self.init_state()
            else:
                source = batch.check_states(states, "states", self.state_size, B, writable=False)
                if source.ctypes.data != bank.ctypes.data or source.strides != bank.strides:
                    np.copyto(bank, source.copy() if np.shares_memory(source, bank) else source)
            slot_ids = np.arange(B, dtype=np.int32)
        if logits_out is not None:
            _checks.check_logits_out(logits_out, (B, self.n_vocab), contiguous=False)
        logits = None
        with self._lock:
            self._check_open()
            g = self._graph_for(1, batch_shape=(B, bank.shape[0]))
            assert g.slots_view is not None
            g.ids_view[:] = toks
            g.slots_view[:] = slot_ids
            self._run(g, bank, bank, compute_logits)
            if compute_logits:
                logits = np.empty((B, self.n_vocab), np.float32) if logits_out is None else logits_out
                np.copyto(logits, g.logits_view)
        return logits, bank

    def eval_sequence(
        self,
        tokens: Sequence[int] | np.ndarray,
        state: FloatArray | State | None = None,
        *,
        all_logits: bool = False,
        chunk_size: int | None = None,
        state_out: FloatArray | State | None = None,
        logits_out: FloatArray | None = None,
        compute_logits: bool = True,
    ) -> tuple[FloatArray | None, FloatArray]:
        """Feeds a whole sequence at once ("GPT mode"). Returns ``(logits, new_state)``.

        Equivalent to calling :meth:`eval` for each token (up to float rounding), but the projections of
        all tokens are matrix-matrix products, which is much faster for prompts. ``logits`` are those
        of the last token, shape ``(n_vocab,)``, or with ``all_logits=True`` of every token, shape
        ``(len(tokens), n_vocab)``. Long inputs are processed in chunks of ``chunk_size`` tokens
        (default :data:`DEFAULT_CHUNK_SIZE`), so memory stays bounded; the result does not depend on the
        chunk size beyond float rounding. ``state``, ``state_out``, ``logits_out`` and
        ``compute_logits`` behave as in :meth:`eval`.
        """
        self._check_open()
        toks = _checks.check_tokens(tokens, self.n_vocab)
        chunk = _checks.check_chunk_size(chunk_size, DEFAULT_CHUNK_SIZE)
        state_in, out = self._state_in(state), self._state_out(state_out)
        shape = (len(toks), self.n_vocab) if all_logits else (self.n_vocab,)
        if logits_out is not None:
            _checks.check_logits_out(logits_out, shape, contiguous=True)
        if all_logits and not compute_logits:
            raise EngineArgumentError("all_logits=True needs compute_logits=True")
        result = None
        if compute_logits:
            result = logits_out if logits_out is not None else np.empty(shape, dtype=np.float32)
        with self._lock:
            self._check_open()
            for start, length, logits in self._chunks(toks, state_in, out, chunk, all_logits, compute_logits):
                if logits is None or result is None:
                    continue
                if all_logits:
                    result[start : start + length] = logits
                elif start + length == len(toks):
                    result[...] = logits[-1]
        return result, out

    def _chunks(
        self,
        toks: np.ndarray,
        state_in: np.ndarray,
        out: np.ndarray,
        chunk: int,
        all_logits: bool,
        compute_logits: bool,
    ) -> Iterator[tuple[int, int, np.ndarray | None]]:
        """Runs toks through the graphs chunk by chunk, carrying the state from state_in to out; yields
        (start, length, logits of the chunk's tokens as (length, V) or None). The logits are a view of the
        graph's memory, valid until the generator resumes. Caller holds the lock.

        Lengths: _chunk_lengths."""
        lengths = self._chunk_lengths(len(toks), chunk)
        cur = state_in
        start = 0
        for i, length in enumerate(lengths):
            last = i == len(lengths) - 1
            g = self._graph_for(length, all_logits)
            # write where it may not alias what this chunk reads: out for the last chunk when possible
            target = out if last and not np.shares_memory(cur, out) else self._scratch_states[i % 2]
            g.ids_view[:] = toks[start : start + length]
            need_logits = compute_logits and (all_logits or last)
            self._run(g, cur, target, need_logits)
            yield start, length, g.logits_view if need_logits else None
            cur = target
            start += length
        if cur is not out:
            np.copyto(out, cur)

    def hidden(
        self,
        tokens: Sequence[int] | np.ndarray,
        state: FloatArray | State | None = None,
        *,
        chunk_size: int | None = None,
    ) -> tuple[FloatArray, FloatArray]:
        """The final hidden vector of the last token (after ``ln_out``, before the head), shape
        ``(n_embed,)``, and the state after the tokens. The basis of sentence embeddings."""
        self._check_open()
        toks = _checks.check_tokens(tokens, self.n_vocab)
        chunk = _checks.check_chunk_size(chunk_size, DEFAULT_CHUNK_SIZE)
        state_in, out = self._state_in(state), self._state_out(None)
        with self._lock:
            self._check_open()
            for _ in self._chunks(toks, state_in, out, chunk, False, True):
                pass
            # the last chunk's graph still holds its hidden vector
            g = self._graphs[(self._last_chunk_length(len(toks), chunk), False)]
            hidden = g.hidden.numpy().reshape(-1, self.n_embed)[-1].copy()
        return hidden, out

    @staticmethod
    def _chunk_lengths(n: int, chunk: int) -> list[int]:
        """The graph lengths n tokens run as: full chunks, then the remainder in powers of two while it is
        above EXACT_CHUNK_MAX, then the rest (at most EXACT_CHUNK_MAX) as one graph of its exact length.
        Every graph reads all the weights once, and up to about 16 tokens that read is most of its time,
        so a 7-token chat message run as 4 + 2 + 1 took about three reads where one does (measured 1.8-2.5x
        the time on 169M/0.1B F16). Graphs of at most log2(chunk) + 1 + EXACT_CHUNK_MAX lengths are built
        whatever the lengths the caller uses."""
        lengths = [chunk] * (n // chunk)
        rest = n % chunk
        while rest > EXACT_CHUNK_MAX:
            p = 1 << (rest.bit_length() - 1)
            lengths.append(p)
            rest -= p
        if rest:
            lengths.append(rest)
        return lengths

    @staticmethod
    def _last_chunk_length(n: int, chunk: int) -> int:
        return Model._chunk_lengths(n, chunk)[-1]

    def perplexity(
        self,
        tokens: Sequence[int] | np.ndarray,
        state: FloatArray | State | None = None,
        *,
        chunk_size: int | None = None,
    ) -> tuple[float, float]:
        """Mean negative log-likelihood (nats per token) of tokens[1:] given the tokens before them,
        and the perplexity exp(mean NLL). Runs in sequence mode, one chunk of logits at a time."""
        self._check_open()
        toks = _checks.check_tokens(tokens, self.n_vocab)
        if len(toks) < 2:
            raise EngineArgumentError("perplexity needs at least 2 tokens")
        chunk = _checks.check_chunk_size(chunk_size, DEFAULT_CHUNK_SIZE)
        state_in, out = self._state_in(state), self._state_out(None)
        total = 0.0
        with self._lock:
            self._check_open()
            # the last token predicts nothing, so it is not fed
            for start, length, logits in self._chunks(toks[:-1], state_in, out, chunk, True, True):
                assert logits is not None
                z = logits.astype(np.float64)
                z -= z.max(axis=1, keepdims=True)
                log_norm = np.log(np.exp(z).sum(axis=1))
                targets = toks[start + 1 : start + 1 + length]
                total += float(np.sum(log_norm - z[np.arange(length), targets]))
        nll = total / (len(toks) - 1)
        return nll, float(np.exp(nll))

    # ---- validation ----
    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"model '{self.path}' is closed")

    def _check_state(self, state: Any, what: str, writable: bool = False) -> FloatArray:
        """A state array of this model: a float32 array of state_size floats, or a :class:`State`, which must
        belong to this model (its array is used)."""
        if isinstance(state, State):
            state = state.array_for(self)
        return _checks.check_state_array(state, what, self.state_size, writable)

    # ---- trained initial state, weights fingerprint ----
    def load_initial_state(self, source: str | os.PathLike[str] | Mapping[str, Any]) -> FloatArray:
        """Makes the trained initial state of a state-tuned checkpoint this model's initial state.

        ``source``: a checkpoint (.pth / safetensors path, or a loaded mapping) holding
        ``blocks.N.att.time_state`` (H, N, N) for every layer (RWKV-PEFT / official state tuning;
        v5-v7 only), converted by :func:`rwkv_ggml.checkpoint.initial_state_from_checkpoint`. From
        then on :meth:`init_state` (and ``state=None`` in every eval) starts from it;
        :meth:`reset_initial_state` goes back to zeros. Returns a copy of the new initial state.
        Raises ModelFormatError if the checkpoint does not fit this model (layers, heads, head size),
        UnsupportedError for v4 (it has no trainable state).
        """
        self._check_open()
        state = initial_state_from_checkpoint(
            source, self.version, n_layer=self.n_layer, n_embed=self.n_embed
        )
        if state.shape != (self.state_size,):
            where = source if not isinstance(source, Mapping) else "state checkpoint"
            raise ModelFormatError(
                f"{where}: time_state has the wrong head size for this model "
                f"({self.hparams.n_head} heads of size {self.hparams.head_size})"
            )
        state.flags.writeable = False
        self._initial_state = state
        return state.copy()

    def reset_initial_state(self) -> None:
        """Undoes :meth:`load_initial_state`: :meth:`init_state` gives the default (zero) state again."""
        self._initial_state = None

    @property
    def fingerprint(self) -> str:
        """A SHA-256 (hex) identifying these weights, cheap to compute (once, then cached).

        It covers the RWKV version, n_vocab, n_embed, n_layer, the file's data type, every tensor's
        name, type and shape, the whole data of tensors up to 4 KiB (the per-channel parameters) and
        16 evenly spaced 16-byte samples of each larger tensor: not the whole file, so a change
        confined to unsampled bytes goes unnoticed, but any re-conversion, quantization or fine-tune
        changes it in practice. It does not depend on ``placement``, ``threads`` or ``gn_eps``.
        :class:`rwkv_ggml.State` uses it to refuse a state made by another model.
        """
        fp = self._fingerprint
        if fp is None:
            self._check_open()
            hp = self.hparams
            h = hashlib.sha256(
                f"rwkv_ggml weights v1|{hp.version}|{hp.n_vocab}|{hp.n_embed}|{hp.n_layer}|"
                f"{self.dtype}".encode()
            )
            for name in self._weights:
                rec = self._store.record(name)
                h.update(f"|{name}|{rec.dtype.name}|{tuple(rec.ne)}|".encode())
                data = self._store.raw(name).reshape(-1).view(np.uint8)
                if data.size <= 4096:
                    h.update(data.tobytes())
                else:
                    for start in np.linspace(0, data.size - 16, 16).astype(np.int64):
                        h.update(data[start : start + 16].tobytes())
                del data
            fp = h.hexdigest()
            self._fingerprint = fp
        return fp

    # ---- lifetime ----
    def close(self) -> None:
        """Frees the weights, graphs and threads. Idempotent."""
        with self._lock:
            self._closed = True
            self._weights = {}
            self._graph_weights = {}
            self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.dtype}, {self.threads} threads"
        return (
            f"Model({self.path!r}, v{self.hparams.version}, n_embed={self.n_embed}, n_layer={self.n_layer}, "
            f"n_vocab={self.n_vocab}, {state})"
        )
