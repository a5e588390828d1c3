"""What the Ray Data callables and the Serve deployments share: loading the model in a worker, per-row seeds.

No Ray import here: these run inside the workers Ray starts, on plain Python values.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from ..api import Model

#: Where a worker's weights live: ``"mmap"`` maps the file read-only, so every actor or replica on a node
#: shares one copy through the page cache (the other placement, ``"hugepage"``, gives each process a
#: private copy: faster per token, but N processes hold N copies).
DEFAULT_RAY_PLACEMENT = "mmap"

ModelSpec = str | os.PathLike[str]


def check_model_spec(model: Any) -> ModelSpec:
    """``model`` is a path (str or PathLike, readable from every node that runs a worker) or
    ``"hf:OWNER/NAME[/FILE]"`` (downloaded and converted on each node, as ``Model.from_pretrained``)."""
    if isinstance(model, (str, os.PathLike)) and os.fspath(model):
        return model
    raise TypeError(
        f"model must be a model file path or 'hf:OWNER/NAME[/FILE]', got {type(model).__name__} {model!r}"
    )


def check_threads(threads: Any) -> int:
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1 (the engine threads per actor), got {threads!r}")
    return int(threads)


def load_model(
    model: ModelSpec, threads: int, placement: str = DEFAULT_RAY_PLACEMENT, dtype: str = "Q8_0"
) -> Model:
    """The model a worker runs: the file ``model`` names, or the ``hf:`` checkpoint (``dtype`` is the
    type it is converted to, as ``Model.from_pretrained``)."""
    spec = os.fspath(model)
    if spec.startswith("hf:"):
        from ..hub import parse_hf_model

        repo_id, filename = parse_hf_model(spec)
        return Model.from_pretrained(
            repo_id, filename, dtype=dtype, threads=threads, progress=False, placement=placement
        )
    return Model(spec, threads, placement=placement)


def _seed_key(row_id: Any) -> bytes:
    """A row id as bytes that are the same in every process (``hash()`` is salted per process)."""
    if isinstance(row_id, (bool, np.bool_)):
        raise TypeError(f"a row id must be an integer, a string or bytes, got {row_id!r}")
    if isinstance(row_id, (int, np.integer)):
        return b"i" + str(int(row_id)).encode()
    if isinstance(row_id, str):
        return b"s" + row_id.encode("utf-8", "surrogatepass")
    if isinstance(row_id, (bytes, np.bytes_)):
        return b"b" + bytes(row_id)
    raise TypeError(f"a row id must be an integer, a string or bytes, got {type(row_id).__name__} {row_id!r}")


def row_seed(seed: int, row_id: Any) -> int:
    """The sampling seed of one row: a hash of the base ``seed`` and the row's id, so a row draws the same
    tokens however the dataset is split into blocks and batches and whichever actor runs it, and different
    rows draw independent streams. A 63-bit integer (any ``SamplingParams.seed``)."""
    digest = hashlib.blake2b(_seed_key(row_id), digest_size=8, key=str(int(seed)).encode()).digest()
    return int.from_bytes(digest, "little") >> 1


def column(batch: Any, name: str) -> list[Any]:
    """One column of a batch (a dict of numpy arrays, or a pandas DataFrame) as a list of Python values."""
    try:
        values = batch[name]
    except KeyError:
        have = ", ".join(repr(str(c)) for c in batch)
        raise KeyError(f"the batch has no column {name!r} (its columns: {have})") from None
    return list(values)


def pass_through(batch: Any) -> dict[str, Any]:
    """The input columns, to which a callable adds its own (a column of the same name is replaced)."""
    return {str(name): np.asarray(batch[name]) for name in batch}


__all__ = [
    "DEFAULT_RAY_PLACEMENT",
    "ModelSpec",
    "check_model_spec",
    "check_threads",
    "load_model",
    "row_seed",
]
