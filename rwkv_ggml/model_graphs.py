"""The graphs of a loaded model: built once per shape, cached by the Model, computed per eval.

One graph evaluates T tokens of one sequence (T = 1: per-token mode), or one token for each of B
sequences of a state bank (batched decode). Its outputs list the state's readers first, then its
writes, then the head, so an eval may update a state in place and a state-only eval computes a prefix
of the nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import ggml
from .arch import Hyper
from .graphs import common as gcommon
from .graphs import v4 as graph_v4
from .graphs import v5 as graph_v5
from .graphs import v6 as graph_v6
from .graphs import v7 as graph_v7

# Arena bytes for one graph's metadata (tensor headers, node lists). The pages are only touched as used,
# so a generous reservation costs nothing; a 24-layer sequence graph needs about 2 MB.
_METADATA_BYTES = 64 << 20
# The graph builder of each version family (arch.Hyper.family).
_GRAPH_BUILDERS = {"4": graph_v4.build, "5": graph_v5.build, "6": graph_v6.build, "7": graph_v7.build}


@dataclass
class ModelGraph:
    """The graph for a sequence length T: its context, inputs and outputs. Computing the first
    ``n_state_nodes`` nodes yields the new state without the head (the largest matrix)."""

    ctx: ggml.Context
    io: gcommon.GraphIO
    ids_view: np.ndarray
    logits_view: np.ndarray  # (T or 1, V) view of the logits' planned memory: read without a round trip
    logits: ggml.Tensor
    hidden: ggml.Tensor
    graph: ggml.Graph
    n_state_nodes: int
    slots_view: np.ndarray | None = None  # batch graphs: the bank row of each sequence


class Resources:
    """What a Model owns, released in reverse order of acquisition (graphs, then the weights' context, the
    thread pool, the weights' memory). Separate from the Model so that weakref.finalize can release them
    when a Model is dropped without close()."""

    def __init__(self) -> None:
        # (T, all_logits) for sequence graphs, ("batch", B, capacity) for batch graphs
        self.graphs: dict[tuple[Any, ...], ModelGraph] = {}
        self._closers: list[Callable[[], None]] = []

    def own(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def release(self) -> None:
        for g in self.graphs.values():
            g.ctx.close()
        self.graphs.clear()
        while self._closers:
            self._closers.pop()()


def _build(
    ctx: ggml.Context,
    hp: Hyper,
    w: Mapping[str, ggml.Tensor],
    T: int,
    state_in: np.ndarray,
    state_out: np.ndarray,
    all_logits: bool = False,
    B: int = 0,
) -> tuple[gcommon.GraphIO, ggml.Tensor, ggml.Tensor, list[ggml.Tensor]]:
    """B > 0: a batch graph (one token for each of B sequences; state_in is the bank, state_out
    unused)."""
    if B:
        bank = ctx.external(state_in)
        io = gcommon.GraphIO(
            T=1,
            ids=ctx.new_tensor(ggml.I32, (B,)),
            state_in=bank,
            state_out=bank,
            B=B,
            slots=ctx.new_tensor(ggml.I32, (B,)),
        )
    else:
        io = gcommon.GraphIO(
            T=T,
            ids=ctx.new_tensor(ggml.I32, (T,)),
            state_in=ctx.external(state_in),
            state_out=ctx.external(state_out),
        )
    x = _GRAPH_BUILDERS[hp.family](ctx, w, hp, io)
    last = gcommon.column(ctx, x, T - 1) if T > 1 and not all_logits else x
    # (S3) logits = head . LN(x; ln_out), for the last token (or every token)
    hidden = ctx.layer_norm(last, w["ln_out.weight"], w["ln_out.bias"], gcommon.LN_EPS)
    logits = ctx.mul_mat(w["head.weight"], hidden)
    return io, hidden, logits, io.state_writes


def new_graph(
    hp: Hyper,
    w: Mapping[str, ggml.Tensor],
    pool: ggml.Pool,
    weights_ctx: ggml.Context,
    T: int,
    all_logits: bool,
    batch_shape: tuple[int, int] | None,
    scratch: tuple[np.ndarray, np.ndarray],
    bf16: bool,
) -> ModelGraph:
    """The graph of T tokens of one sequence (computing into the scratch states until repointed), or with
    batch_shape = (B, capacity) of one token for each of B sequences in a bank of capacity states."""
    # A no_alloc context holds only the graph's metadata: the graph plans its activations into one
    # buffer, reusing each intermediate's memory after its last reader (ggml.Context docs).
    ctx = ggml.Context(
        _METADATA_BYTES,
        no_alloc=True,
        pool=pool,
        reads=[weights_ctx],
        bf16_matmul=bf16 and T > 1,
    )
    try:
        if batch_shape is None:
            io, hidden, logits, writes = _build(ctx, hp, w, T, scratch[0], scratch[1], all_logits and T > 1)
        else:  # built on a placeholder bank (untouched pages), repointed at the caller's bank per eval
            placeholder = np.empty((batch_shape[1], hp.state_size), dtype=np.float32)
            io, hidden, logits, writes = _build(ctx, hp, w, 1, placeholder, placeholder, B=batch_shape[0])
        # The state's readers, then its writes, come first in the outputs: every read of the old
        # state precedes every write of the new one (so an eval may update a state in place), and
        # what the writes need precedes the rest (the last layer's channel mix, ln_out, the head)
        # in the dependency order, so the state-only eval computes the prefix ending at the last
        # write.
        graph = ctx.graph(io.state_reads + writes + [hidden, logits])
        n_state_nodes = 1 + max(graph.node_indices(writes))
        ids_view = io.ids.data_view()
        logits_view = logits.data_view().reshape(-1, hp.n_vocab)
    except BaseException:
        ctx.close()
        raise
    slots_view = io.slots.data_view() if io.slots is not None else None
    return ModelGraph(ctx, io, ids_view, logits_view, logits, hidden, graph, n_state_nodes, slots_view)
