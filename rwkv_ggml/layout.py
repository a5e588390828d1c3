"""The RWKV versions this package knows and the layout of their recurrent state: the one definition.

Everything that touches a flat state array (the graph builders, ``Model.init_state``, :class:`State`,
state files, the state-tuning reader) takes its offsets, sizes and initial values from
:func:`state_layout`. The module depends on nothing but numpy, so every layer (checkpoint readers
included) may use it.

The layout (architecture.md §7), per layer, one after the other::

    ffn_x      C floats    the channel mix's token shift (the previous token's normalised input)
    att_x      C floats    the time mix's token shift
    recurrent  v4: aa, bb, pp (3 x C floats; pp starts at -1e30, the others at 0)
               v5+: the H matrices of N x N floats of the WKV state (H * N * N = N * C floats, zeros)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class VersionInfo:
    """What a version string means. ``family``: "4", "5", "6" or "7" (the graph and state layout);
    ``gn_eps``: the default GroupNorm epsilon of ``att.ln_x`` (0 for v4, which has none)."""

    family: str
    gn_eps: float


# GroupNorm epsilon (architecture.md §9.2): the official models were trained with
# 1e-5 * head_size_divisor**2 = 64e-5, v5 included (rwkv.cpp uses 1e-5 for v5; Model(gn_eps=1e-5) gives it).
OFFICIAL_GN_EPS = 64e-5
RWKV_CPP_V5_GN_EPS = 1e-5

VERSIONS: dict[str, VersionInfo] = {
    "4": VersionInfo("4", 0.0),
    "5.1": VersionInfo("5", OFFICIAL_GN_EPS),
    "5.1-gated": VersionInfo("5", OFFICIAL_GN_EPS),
    "5.2": VersionInfo("5", OFFICIAL_GN_EPS),
    "6": VersionInfo("6", OFFICIAL_GN_EPS),
    "7": VersionInfo("7", OFFICIAL_GN_EPS),
}
SUPPORTED_VERSIONS = tuple(VERSIONS)

V4_PP_INIT = -1e30  # v4's running maximum exponent starts "minus infinity" (architecture.md §3.4)


def family(version: str) -> str:
    """ "4", "5", "6" or "7": "5.1", "5.1-gated" and "5.2" share the v5 graph and state layout."""
    info = VERSIONS.get(version)
    return info.family if info is not None else version.split(".")[0]


@dataclass(frozen=True)
class LayerSlots:
    """Offsets (in floats) of one layer's parts of the flat state, and the recurrent part's size."""

    ffn_x: int
    att_x: int
    recurrent: int
    recurrent_size: int


@dataclass(frozen=True)
class StateLayout:
    """The flat float32 state of a model: ``n_layer`` blocks of ffn_x, att_x, recurrent (module docstring).

    ``head_size`` is ignored for v4 (its recurrent part is aa, bb, pp)."""

    version: str
    n_layer: int
    n_embed: int
    head_size: int = 0

    @property
    def is_v4(self) -> bool:
        return family(self.version) == "4"

    @property
    def recurrent_size(self) -> int:
        """Floats of one layer's recurrent part: 3*C (v4) or N*C (v5+: H matrices N x N)."""
        return (3 if self.is_v4 else self.head_size) * self.n_embed

    @property
    def layer_size(self) -> int:
        return 2 * self.n_embed + self.recurrent_size

    @property
    def size(self) -> int:
        """Floats in the whole state."""
        return self.layer_size * self.n_layer

    def layer(self, index: int) -> LayerSlots:
        """Where layer ``index``'s ffn_x, att_x and recurrent part start."""
        base = index * self.layer_size
        return LayerSlots(
            ffn_x=base,
            att_x=base + self.n_embed,
            recurrent=base + 2 * self.n_embed,
            recurrent_size=self.recurrent_size,
        )

    def fresh(self) -> FloatArray:
        """A new initial state: zeros, except v4's pp = -1e30."""
        state = np.zeros(self.size, dtype=np.float32)
        if self.is_v4:
            C = self.n_embed
            for index in range(self.n_layer):
                pp = self.layer(index).recurrent + 2 * C  # after aa and bb
                state[pp : pp + C] = V4_PP_INIT
        return state


def state_layout(version: str, n_layer: int, n_embed: int, head_size: int = 0) -> StateLayout:
    """The state layout of a model of this version and these sizes (``head_size``: N of v5+; ignored for
    v4). ``state_layout(...).layer(i).recurrent`` is where layer i's WKV matrices (v5+) or aa, bb, pp
    (v4) start; ``.size`` the total floats; ``.fresh()`` a new initial state."""
    return StateLayout(version=version, n_layer=n_layer, n_embed=n_embed, head_size=head_size)
