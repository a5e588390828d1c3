"""Argument checks of the core Model: each returns the normalised value or raises EngineArgumentError
naming the argument and what it should be."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import EngineArgumentError

FloatArray = npt.NDArray[np.float32]

MAX_THREADS = 512
MAX_CHUNK_SIZE = 4096


def check_threads(threads: Any) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise EngineArgumentError(f"threads must be an int in 1..{MAX_THREADS}, got {threads!r}")
    return threads


def check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise EngineArgumentError(f"{what} must be True or False, got {value!r}")
    return value


def check_gn_eps(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise EngineArgumentError(f"gn_eps must be a finite number > 0, got {value!r}")
    return float(value)


def check_token(token: Any, n_vocab: int) -> int:
    if isinstance(token, (bool, np.bool_)) or not isinstance(token, (int, np.integer)):
        raise EngineArgumentError(f"token must be an int, got {type(token).__name__}")
    tok = int(token)
    if not 0 <= tok < n_vocab:
        raise EngineArgumentError(f"token id {tok} is outside the vocabulary (0..{n_vocab - 1})")
    return tok


def check_tokens(tokens: Any, n_vocab: int) -> npt.NDArray[np.int32]:
    """A non-empty 1-D sequence of token ids in the vocabulary, as int32."""
    if isinstance(tokens, (str, bytes)):
        raise EngineArgumentError("tokens must be a sequence of ints (encode text with a Tokenizer first)")
    try:
        arr = np.asarray(tokens)
    except (TypeError, ValueError) as exc:
        raise EngineArgumentError(f"tokens must be a sequence of ints: {exc}") from None
    if arr.ndim != 1:
        raise EngineArgumentError(f"tokens must be a 1-D sequence of ints, got shape {arr.shape}")
    if arr.size == 0:
        raise EngineArgumentError("tokens is empty")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise EngineArgumentError(f"tokens must be ints, got {arr.dtype}")
    bad = np.flatnonzero((arr < 0) | (arr >= n_vocab))
    if bad.size:
        i = int(bad[0])
        raise EngineArgumentError(
            f"token id {int(arr[i])} at position {i} is outside the vocabulary (0..{n_vocab - 1})"
        )
    return arr.astype(np.int32)


def check_chunk_size(chunk_size: Any, default: int) -> int:
    if chunk_size is None:
        return default
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, (int, np.integer))
        or not 1 <= int(chunk_size) <= MAX_CHUNK_SIZE
    ):
        raise EngineArgumentError(f"chunk_size must be an int in 1..{MAX_CHUNK_SIZE}, got {chunk_size!r}")
    return int(chunk_size)


def check_state_array(state: Any, what: str, size: int, writable: bool = False) -> FloatArray:
    """A C-contiguous float32 vector of ``size`` floats (writable if asked)."""
    if not isinstance(state, np.ndarray):
        raise EngineArgumentError(f"{what} must be a numpy float32 array, got {type(state).__name__}")
    if state.dtype != np.float32:
        raise EngineArgumentError(f"{what} has dtype {state.dtype}; the state is float32")
    if state.ndim != 1 or state.size != size:
        raise EngineArgumentError(f"{what} has shape {state.shape}; this model's state is ({size},) float32")
    if not state.flags.c_contiguous:
        raise EngineArgumentError(f"{what} must be C-contiguous")
    if writable and not state.flags.writeable:
        raise EngineArgumentError(f"{what} is read-only")
    return state


def check_logits_out(logits_out: Any, shape: tuple[int, ...], contiguous: bool) -> FloatArray:
    """A writable float32 array of ``shape`` (C-contiguous if asked) for the logits to be written into."""
    if (
        not isinstance(logits_out, np.ndarray)
        or logits_out.dtype != np.float32
        or logits_out.shape != shape
        or not logits_out.flags.writeable
        or (contiguous and not logits_out.flags.c_contiguous)
    ):
        layout = "C-contiguous " if contiguous else ""
        raise EngineArgumentError(f"logits_out must be a writable {layout}float32 array of shape {shape}")
    return logits_out
