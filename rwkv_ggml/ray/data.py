"""Batch inference over a ``ray.data.Dataset``: generation, embeddings and log-likelihood scoring.

Each of :class:`Generate`, :class:`Embed` and :class:`Score` is a callable class for
``Dataset.map_batches``: Ray makes one instance per actor of an actor pool, so the model is loaded once
per actor, and calls it with batches of rows (a dict of numpy arrays, ``batch_format="numpy"``; a pandas
DataFrame works too). The result is the batch's columns plus the new ones. :func:`generate`,
:func:`embed` and :func:`score` wrap the ``map_batches`` call with the resources sized from ``threads``::

    import ray
    from rwkv_ggml.ray import data as rd

    ds = ray.data.from_items([{"id": i, "prompt": p} for i, p in enumerate(prompts)])
    out = rd.generate(ds, "/models/rwkv.bin", actors=4, threads=2, max_tokens=64, temperature=0.0)
    out.write_parquet("/results/")

Determinism. A row's result does not depend on how the dataset is split or which actor runs it:

* sampling is per row, each row with its own seed: ``seed=S`` alone gives every row the seed S (the
  result of ``rwkv_ggml.generate(model, prompt, seed=S)``); ``seed=S, id_column="id"`` gives each row
  the seed ``row_seed(S, id)``, a hash of S and the row's id (independent streams, same for the same id
  everywhere); ``seed_column`` reads each row's seed from a column; no seed: fresh random draws;
* the rows of a batch are decoded together, up to ``max_batch`` at a time, in one ``eval_batch`` per step.
  With one row at a time (``max_batch=1``) every row is bit-identical to generating it alone. With more,
  the logits differ from single-row ones by the rounding of the batch's matrix products (module
  :mod:`rwkv_ggml.batch_generation`), which can only change a token where two candidates are that close:
  a greedy near-tie, or a seeded draw within ~1e-5 of a probability boundary.

Embeddings (:func:`rwkv_ggml.generation.embed`) and scores (:meth:`rwkv_ggml.model.Model.perplexity`) are
computed row by row and are exactly the in-process values.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..batch_generation import BatchGenerator
from ..generation import DEFAULT_MAX_TOKENS, _check_max_tokens, _sampling_params
from ..sampling import SamplingParams
from ._common import (
    DEFAULT_RAY_PLACEMENT,
    ModelSpec,
    check_model_spec,
    check_threads,
    column,
    load_model,
    pass_through,
    row_seed,
)

if TYPE_CHECKING:
    import ray.data

#: Rows per ``map_batches`` batch in the wrappers: enough rows for ``eval_batch`` to pay off, few enough
#: that a batch's results come back (and a failed batch is retried) at a fine grain.
DEFAULT_BATCH_SIZE = 32


def _generate_params(
    params: SamplingParams | None,
    stop: str | Sequence[str] | None,
    sampling: dict[str, Any],
    id_column: str | None,
    seed_column: str | None,
    max_batch: int | None,
) -> SamplingParams:
    """The checks of :class:`Generate`'s options (also run on the driver, before any actor starts)."""
    sp = _sampling_params(params, stop, sampling)
    if sp.seed is None and id_column is not None and seed_column is None:
        raise ValueError("id_column derives per-row seeds from seed=: give a seed too")
    if max_batch is not None and (
        isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1
    ):
        raise ValueError(f"max_batch must be None or an integer >= 1, got {max_batch!r}")
    return sp


class _ModelActor:
    """Loads the model once (in the actor's constructor) with ``threads`` engine threads."""

    @classmethod
    def check_arguments(cls, arguments: dict[str, Any]) -> None:
        """Raises the error the constructor would raise for these arguments, without loading the model."""
        check_model_spec(arguments["model"])
        check_threads(arguments["threads"])

    def __init__(self, model: ModelSpec, threads: int, placement: str, dtype: str) -> None:
        self.model = load_model(check_model_spec(model), check_threads(threads), placement, dtype)

    def _row_error(self, batch: Any, id_column: str | None, row: int, exc: Exception) -> ValueError:
        where = f"row {row} of the batch"
        if id_column is not None:
            value = column(batch, id_column)[row]
            where += f" ({id_column}={value.item() if isinstance(value, np.generic) else value!r})"
        return ValueError(f"{where}: {exc}")


class Generate(_ModelActor):
    """Generates a continuation of each row's ``prompt_column`` (text or token ids); adds the columns
    ``text``, ``prompt_tokens``, ``completion_tokens`` and ``finish_reason`` ("stop" or "length").

    ``sampling``: :class:`~rwkv_ggml.sampling.SamplingParams` fields (``temperature=0.0`` is greedy;
    ``stop_strings``, ``top_p``, ...), or ``params=`` a SamplingParams; ``stop``: extra stop strings.
    Seeds: see the module docstring (``seed``, ``id_column``, ``seed_column``). ``max_tokens``: one
    limit, or ``max_tokens_column`` per row. ``max_batch``: the most rows decoded together (default: the
    whole batch; 1: each row alone, bit-identical to ``rwkv_ggml.generate``).
    """

    def __init__(
        self,
        model: ModelSpec,
        *,
        threads: int = 1,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        prompt_column: str = "prompt",
        id_column: str | None = None,
        seed_column: str | None = None,
        max_tokens_column: str | None = None,
        max_batch: int | None = None,
        params: SamplingParams | None = None,
        stop: str | Sequence[str] | None = None,
        placement: str = DEFAULT_RAY_PLACEMENT,
        dtype: str = "Q8_0",
        **sampling: Any,
    ) -> None:
        self.params = _generate_params(params, stop, sampling, id_column, seed_column, max_batch)
        self.max_tokens = _check_max_tokens(max_tokens)
        self.prompt_column, self.id_column = prompt_column, id_column
        self.seed_column, self.max_tokens_column = seed_column, max_tokens_column
        self.max_batch = max_batch
        super().__init__(model, threads, placement, dtype)

    def _row_params(self, batch: Any, n: int) -> list[SamplingParams]:
        import dataclasses

        if self.seed_column is not None:
            seeds = [int(s) for s in column(batch, self.seed_column)]
        elif self.id_column is not None:
            assert self.params.seed is not None
            seeds = [row_seed(self.params.seed, i) for i in column(batch, self.id_column)]
        else:
            return [self.params] * n
        return [dataclasses.replace(self.params, seed=s) for s in seeds]

    @classmethod
    def check_arguments(cls, arguments: dict[str, Any]) -> None:
        super().check_arguments(arguments)
        _check_max_tokens(arguments["max_tokens"])
        names = ("params", "stop", "sampling", "id_column", "seed_column", "max_batch")
        _generate_params(*(arguments[name] for name in names))

    def __call__(self, batch: Any) -> dict[str, Any]:
        prompts = column(batch, self.prompt_column)
        n = len(prompts)
        limits = (
            [self.max_tokens] * n
            if self.max_tokens_column is None
            else [_check_max_tokens(int(m)) for m in column(batch, self.max_tokens_column)]
        )
        generator = BatchGenerator(self.model, capacity=max(1, min(n, self.max_batch or n)))
        ids = []
        for row, (prompt, limit, sp) in enumerate(
            zip(prompts, limits, self._row_params(batch, n), strict=True)
        ):
            try:
                ids.append(generator.add(prompt, limit, params=sp))
            except (TypeError, ValueError) as exc:
                raise self._row_error(batch, self.id_column, row, exc) from None
        for _ in generator.events():
            pass
        results = [generator.result(rid) for rid in ids]
        out = pass_through(batch)
        out["text"] = np.array([r.text for r in results], dtype=object)
        out["prompt_tokens"] = np.array([r.prompt_tokens for r in results], dtype=np.int64)
        out["completion_tokens"] = np.array([r.completion_tokens for r in results], dtype=np.int64)
        out["finish_reason"] = np.array([r.finish_reason for r in results], dtype=object)
        return out


class Embed(_ModelActor):
    """Adds ``output_column`` (default ``"embedding"``): each row's ``text_column`` embedded with
    :func:`rwkv_ggml.generation.embed` (float32, shape ``(n_embed,)`` per row, L2-normalised): exactly
    ``model.embed(text)``."""

    def __init__(
        self,
        model: ModelSpec,
        *,
        threads: int = 1,
        text_column: str = "text",
        output_column: str = "embedding",
        id_column: str | None = None,
        placement: str = DEFAULT_RAY_PLACEMENT,
        dtype: str = "Q8_0",
    ) -> None:
        self.text_column, self.output_column, self.id_column = text_column, output_column, id_column
        super().__init__(model, threads, placement, dtype)

    def __call__(self, batch: Any) -> dict[str, Any]:
        vectors = np.zeros((0, self.model.n_embed), dtype=np.float32)
        rows = []
        for row, text in enumerate(column(batch, self.text_column)):
            try:
                rows.append(self.model.embed(text))
            except (TypeError, ValueError) as exc:
                raise self._row_error(batch, self.id_column, row, exc) from None
        if rows:
            vectors = np.stack(rows)
        out = pass_through(batch)
        out[self.output_column] = vectors
        return out


class Score(_ModelActor):
    """Log-likelihood of each row's ``text_column`` under the model; adds ``nll`` (the summed negative
    log-likelihood in nats), ``scored_tokens`` (how many tokens it sums over) and ``perplexity``
    (``exp(nll / scored_tokens)``).

    Without a context every token but the first is scored given the ones before it:
    ``model.perplexity(tokens)``. With ``context_column`` every token of the text is scored given the
    context and the text before it (the log-likelihood of a completion, as in multiple-choice evaluation);
    the context itself is not scored.
    """

    def __init__(
        self,
        model: ModelSpec,
        *,
        threads: int = 1,
        text_column: str = "text",
        context_column: str | None = None,
        id_column: str | None = None,
        placement: str = DEFAULT_RAY_PLACEMENT,
        dtype: str = "Q8_0",
    ) -> None:
        self.text_column, self.context_column, self.id_column = text_column, context_column, id_column
        super().__init__(model, threads, placement, dtype)

    def _score(self, text: Any, context: Any) -> tuple[float, int, float]:
        from ..generation import _encode

        tokenizer = self.model.tokenizer
        ids = _encode(tokenizer, text)
        state = None
        if context is not None:
            ctx = _encode(tokenizer, context)
            if not ctx:
                raise ValueError("the context is empty: give some text or leave context_column unset")
            if not ids:
                raise ValueError("the text to score is empty")
            if len(ctx) > 1:
                _, state = self.model.eval_sequence(ctx[:-1], compute_logits=False)
            ids = ctx[-1:] + ids
        elif len(ids) < 2:
            raise ValueError(f"scoring needs a text of at least 2 tokens, got {len(ids)}")
        mean_nll, perplexity = self.model.perplexity(ids, state)
        scored = len(ids) - 1
        return mean_nll * scored, scored, perplexity

    def __call__(self, batch: Any) -> dict[str, Any]:
        texts = column(batch, self.text_column)
        contexts = column(batch, self.context_column) if self.context_column else [None] * len(texts)
        scores = []
        for row, (text, context) in enumerate(zip(texts, contexts, strict=True)):
            try:
                scores.append(self._score(text, context))
            except (TypeError, ValueError) as exc:
                raise self._row_error(batch, self.id_column, row, exc) from None
        out = pass_through(batch)
        out["nll"] = np.array([s[0] for s in scores], dtype=np.float64)
        out["scored_tokens"] = np.array([s[1] for s in scores], dtype=np.int64)
        out["perplexity"] = np.array([s[2] for s in scores], dtype=np.float64)
        return out


def _map(
    ds: ray.data.Dataset,
    cls: type[_ModelActor],
    model: ModelSpec,
    actors: int,
    threads: int,
    batch_size: int,
    **kw: Any,
) -> ray.data.Dataset:
    import ray.data

    if isinstance(actors, bool) or not isinstance(actors, int) or actors < 1:
        raise ValueError(f"actors must be an integer >= 1, got {actors!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    threads = check_threads(threads)
    # the constructor's checks here, on the driver: a bad option fails now, not in every actor
    bound = inspect.signature(cls.__init__).bind(None, model, threads=threads, **kw)
    bound.apply_defaults()
    cls.check_arguments(bound.arguments)
    return ds.map_batches(
        cls,
        fn_constructor_args=(model,),
        fn_constructor_kwargs={"threads": threads, **kw},
        compute=ray.data.ActorPoolStrategy(size=actors),
        # one CPU per engine thread: Ray then puts no more actors on a node than it has cores
        num_cpus=threads,
        batch_size=batch_size,
        batch_format="numpy",
    )


def generate(
    ds: ray.data.Dataset,
    model: ModelSpec,
    *,
    actors: int = 1,
    threads: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    **options: Any,
) -> ray.data.Dataset:
    """``ds`` with the :class:`Generate` columns, on a pool of ``actors`` actors of ``threads`` CPUs each;
    ``options``: :class:`Generate`'s (``max_tokens``, ``seed``, ``id_column``, sampling fields...)."""
    return _map(ds, Generate, model, actors, threads, batch_size, **options)


def embed(
    ds: ray.data.Dataset,
    model: ModelSpec,
    *,
    actors: int = 1,
    threads: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    **options: Any,
) -> ray.data.Dataset:
    """``ds`` with the :class:`Embed` column (``options``: its ``text_column``, ``output_column``...)."""
    return _map(ds, Embed, model, actors, threads, batch_size, **options)


def score(
    ds: ray.data.Dataset,
    model: ModelSpec,
    *,
    actors: int = 1,
    threads: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    **options: Any,
) -> ray.data.Dataset:
    """``ds`` with the :class:`Score` columns (``options``: its ``text_column``, ``context_column``...)."""
    return _map(ds, Score, model, actors, threads, batch_size, **options)


def mean_perplexity(nll: Sequence[float], scored_tokens: Sequence[int]) -> float:
    """The perplexity of a whole scored dataset: ``exp(sum(nll) / sum(scored_tokens))``."""
    total = int(np.sum(scored_tokens))
    if total <= 0:
        raise ValueError("no token was scored")
    return math.exp(float(np.sum(nll)) / total)


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Embed",
    "Generate",
    "Score",
    "embed",
    "generate",
    "mean_perplexity",
    "score",
]
