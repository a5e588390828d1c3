"""Batched decode: one token for each of B sequences in one graph and one engine call.

Per-token evaluation streams every weight once per token; :meth:`rwkv_ggml.model.Model.eval_batch` streams
them once for B sequences, whose activations are the B columns of the graph's matrices. Each sequence keeps
its own state: a row of a bank of whole model states, which the graph reads and writes in place (the token
shifts gather and scatter their slots, the batched WKV ops update the recurrent part in place), so a step
copies no whole state.

States come in two forms:

* a ``(B, state_size)`` float32 array, one row per sequence (``Model.eval_batch(tokens, states)``); the
  new states are written to ``state_out`` (which may be ``states`` itself) or a new array;
* a :class:`StateBank`: ``capacity`` rows, slots allocated and freed as sequences join and leave, and
  ``bank.eval_batch(tokens, slots)`` steps any subset of the allocated slots in any order. The rows of
  slots not in the step are untouched. A plain writable ``(capacity, state_size)`` array with ``slots=``
  works the same way without the allocation bookkeeping.

Results equal B separate :meth:`~rwkv_ggml.model.Model.eval` calls: the recurrences, norms and element-wise
steps are bit-identical, and so are the matrix products while their kernels add in the mat-vec's order:
F32/F16 weights up to B = 32 (any B on the scalar level), the block types
up to B = 9, or with AVX512_VNNI up to B = 16 (Q8_0: 32). Larger batches take column-panel kernels, which
round differently (tests/model/test_batch.py states the bounds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import _checks
from .errors import EngineArgumentError

if TYPE_CHECKING:
    from .model import Model

FloatArray = npt.NDArray[np.float32]
SlotArray = npt.NDArray[np.int32]

# Batch graphs kept per model (one per (B, capacity) in use), least recently used dropped first.
MAX_BATCH_GRAPHS = 8


def check_batch_tokens(tokens: Any, n_vocab: int) -> npt.NDArray[np.int32]:
    """One token id per sequence: a non-empty 1-D int sequence in the vocabulary."""
    if (isinstance(tokens, np.ndarray) and tokens.ndim == 1 and tokens.size == 0) or (
        isinstance(tokens, (list, tuple)) and len(tokens) == 0
    ):
        raise EngineArgumentError("eval_batch needs at least one sequence (tokens is empty: B = 0)")
    return _checks.check_tokens(tokens, n_vocab)


def check_slots(slots: Any, B: int, capacity: int) -> SlotArray:
    """B distinct bank rows in 0..capacity-1, as int32."""
    try:
        arr = np.asarray(slots)
    except (TypeError, ValueError) as exc:
        raise EngineArgumentError(f"slots must be a sequence of ints: {exc}") from None
    if arr.ndim != 1 or arr.size != B:
        raise EngineArgumentError(
            f"slots must be a 1-D sequence of B = {B} ints (one per token), got shape {arr.shape}"
        )
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise EngineArgumentError(f"slots must be ints, got {arr.dtype}")
    bad = np.flatnonzero((arr < 0) | (arr >= capacity))
    if bad.size:
        raise EngineArgumentError(
            f"slot {int(arr[bad[0]])} at position {int(bad[0])} is outside the bank (0..{capacity - 1})"
        )
    uniq, counts = np.unique(arr, return_counts=True)
    if uniq.size != arr.size:
        twice = int(uniq[np.argmax(counts > 1)])
        raise EngineArgumentError(
            f"slot {twice} appears more than once: each sequence of a step needs its own state"
        )
    return arr.astype(np.int32)


def check_states(states: Any, what: str, state_size: int, rows: int | None, writable: bool) -> FloatArray:
    """A C-contiguous float32 array of shape (rows, state_size) (any rows >= 1 if rows is None)."""
    if not isinstance(states, np.ndarray):
        raise EngineArgumentError(f"{what} must be a numpy float32 array, got {type(states).__name__}")
    if states.dtype != np.float32:
        raise EngineArgumentError(f"{what} has dtype {states.dtype}; states are float32")
    want = f"({rows if rows is not None else 'n'}, {state_size})"
    if (
        states.ndim != 2
        or states.shape[1] != state_size
        or states.shape[0] < 1
        or (rows is not None and states.shape[0] != rows)
    ):
        raise EngineArgumentError(f"{what} has shape {states.shape}; need {want} float32 (one state per row)")
    if not states.flags.c_contiguous:
        raise EngineArgumentError(f"{what} must be C-contiguous")
    if writable and not states.flags.writeable:
        raise EngineArgumentError(f"{what} is read-only")
    return states


class StateBank:
    """``capacity`` model states in one ``(capacity, state_size)`` float32 array (:attr:`array`), handed out
    as slots: :meth:`allocate` when a sequence joins (its row starts from the model's initial state or a
    given one), :meth:`free` when it leaves; :meth:`eval_batch` steps any allocated slots in any order,
    updating their rows in place. Not thread-safe: one scheduler owns a bank.
    """

    def __init__(self, model: Model, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or int(capacity) < 1:
            raise EngineArgumentError(f"capacity must be an int >= 1, got {capacity!r}")
        self.model = model
        self.array: FloatArray = np.zeros((int(capacity), model.state_size), dtype=np.float32)
        self._free = list(range(int(capacity) - 1, -1, -1))  # popped from the end: lowest slot first
        self._allocated: set[int] = set()

    @property
    def capacity(self) -> int:
        return int(self.array.shape[0])

    @property
    def n_free(self) -> int:
        return len(self._free)

    def active_slots(self) -> list[int]:
        """The allocated slots, ascending."""
        return sorted(self._allocated)

    def allocate(self, state: FloatArray | None = None) -> int:
        """A free slot, its row set to ``state`` (copied) or the model's initial state."""
        if not self._free:
            raise EngineArgumentError(f"the state bank is full ({self.capacity} slots): free one first")
        row = (
            self.model.init_state()
            if state is None
            else _checks.check_state_array(state, "state", self.model.state_size)
        )
        slot = self._free.pop()
        self.array[slot] = row
        self._allocated.add(slot)
        return slot

    def free(self, slot: int) -> None:
        """Returns a slot to the bank (its row is left as it is until reallocated)."""
        s = self._check_allocated(slot)
        self._allocated.remove(s)
        self._free.append(s)

    def state(self, slot: int) -> FloatArray:
        """A copy of the slot's state (e.g. to save or branch it)."""
        row: FloatArray = self.array[self._check_allocated(slot)].copy()
        return row

    def set_state(self, slot: int, state: FloatArray) -> None:
        row = _checks.check_state_array(state, "state", self.model.state_size)
        self.array[self._check_allocated(slot)] = row

    def check_step(self, slots: Any, B: int) -> SlotArray:
        """The slots of a step: B distinct allocated slots."""
        arr = check_slots(slots, B, self.capacity)
        for s in arr:
            if int(s) not in self._allocated:
                raise EngineArgumentError(f"slot {int(s)} is not allocated (allocate() it first)")
        return arr

    def eval_batch(
        self, tokens: Any, slots: Any, *, logits_out: FloatArray | None = None, compute_logits: bool = True
    ) -> FloatArray | None:
        """One token for each slot (``tokens[b]`` for ``slots[b]``): the (B, n_vocab) logits (None with
        ``compute_logits=False``); the slots' rows are updated in place."""
        logits, _ = self.model.eval_batch(
            tokens, self, slots=slots, logits_out=logits_out, compute_logits=compute_logits
        )
        return logits

    def _check_allocated(self, slot: Any) -> int:
        if (
            isinstance(slot, bool)
            or not isinstance(slot, (int, np.integer))
            or int(slot) not in self._allocated
        ):
            raise EngineArgumentError(f"slot {slot!r} is not an allocated slot of this bank")
        return int(slot)
