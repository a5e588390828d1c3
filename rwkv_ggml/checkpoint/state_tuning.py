"""Initial states stored in state-tuned checkpoints (``blocks.N.att.time_state``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ModelFormatError, UnsupportedError
from ..layout import state_layout
from ._container import Checkpoint
from ._load import load_checkpoint
from ._tensor import _short
from .layouts import bounded_layer_index

# ---------------------------------------------------------------------------------------------
# State-tuned checkpoints


# Far beyond any model; only keeps a hostile index printable and its parsing cheap.
_MAX_LAYER_INDEX = 1 << 20

_TIME_STATE = re.compile(r"blocks\.(\d+)\.att\.time_state")


def initial_state_from_checkpoint(
    source: str | os.PathLike[str] | Mapping[str, Any],
    version: str,
    *,
    n_layer: int | None = None,
    n_embed: int | None = None,
) -> np.ndarray:
    """The flat float32 initial state (architecture.md §7 layout) stored in a state-tuned checkpoint.

    ``source`` is a checkpoint path (or an already loaded mapping) holding
    ``blocks.N.att.time_state`` of shape (H, N, N) for every layer; other tensors are ignored.
    ``version`` is the model's ("5.x", "6", "7"): the official v5/v6 code stores the WKV state as
    ``[h][value][key]`` and transposes it on load into our ``[h][key][value]``; v7 trainers
    (RWKV-PEFT) store the kernel's own ``[h][value][key]`` orientation, which is also ours for v7,
    so it is copied as is. The token-shift parts (ffn_x, att_x) start at zero. ``n_layer`` /
    ``n_embed``, when given, are checked against the file. Raises ModelFormatError (naming the
    tensor) on missing layers or inconsistent shapes, UnsupportedError for v4.
    """
    if version.startswith("4"):
        raise UnsupportedError("RWKV v4 has no trainable initial state (time_state)")
    if not (version.startswith("5") or version in ("6", "7")):
        raise UnsupportedError(f"unknown RWKV version {version!r} for a state checkpoint")
    owned: Checkpoint | None = None
    tensors: Mapping[str, Any]
    if isinstance(source, Mapping):
        tensors = source
    else:
        tensors = owned = load_checkpoint(source)
    try:
        where = getattr(tensors, "path", "state checkpoint")
        layers = {
            bounded_layer_index(name, m.group(1), _MAX_LAYER_INDEX, f"{where}: "): name
            for name in tensors
            if (m := _TIME_STATE.fullmatch(name))
        }
        if not layers:
            raise ModelFormatError(
                f"{where}: no blocks.N.att.time_state tensors (not a state-tuned checkpoint)"
            )
        count = max(layers) + 1
        # Only a contiguous 0..count-1 sizes the state below; list the first gaps without ever
        # building range(count) from a number read out of a name (blocks.300000000...).
        missing = [i for i in range(min(count, len(layers) + 20)) if i not in layers]
        if missing or (n_layer is not None and count != n_layer):
            raise ModelFormatError(
                f"{where}: time_state for layers {_short(sorted(layers))}, but the model has "
                f"{n_layer if n_layer is not None else count} layers (missing {_short(missing)})"
            )
        first = tuple(tensors[layers[0]].shape)
        if len(first) != 3 or first[1] != first[2] or first[0] < 1 or first[1] < 1:
            raise ModelFormatError(
                f"{where}: tensor '{layers[0]}' has shape {list(first)}, expected (H, N, N)"
            )
        heads, size = first[0], first[1]
        c = heads * size
        if n_embed is not None and c != n_embed:
            raise ModelFormatError(
                f"{where}: time_state has {heads} heads of size {size} (n_embed {c}), the model has {n_embed}"
            )
        layout = state_layout(version, count, c, size)
        state = layout.fresh()
        for layer in range(count):
            name = layers[layer]
            value = tensors[name]
            if tuple(value.shape) != first:
                raise ModelFormatError(
                    f"{where}: tensor '{name}' has shape {list(value.shape)}, expected {list(first)}"
                )
            s = np.asarray(value, dtype=np.float32)  # a LazyTensor reads itself via __array__
            if version != "7":
                s = s.transpose(0, 2, 1)
            slots = layout.layer(layer)
            state[slots.recurrent : slots.recurrent + slots.recurrent_size] = s.reshape(-1)
        return state
    finally:
        if owned is not None:
            owned.close()
