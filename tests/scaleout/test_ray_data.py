"""Ray Data batch inference (rwkv_ggml/ray/data.py) on a real local cluster against the in-process API.

Greedy equality with B > 1: a batch's logits differ from a single row's by the mat-mat rounding
(tests/text/test_generate_batch.py), which can change a greedy token only where the top two logits are
within twice that bound. The prompts are chosen so that every greedy step of their sequential run wins
by MARGIN_FACTOR bounds (the few that do not are left out, and a test checks that few are); for those
the tokens must be equal, whatever the split into batches and actors.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rwkv_ggml import Model, generate
from rwkv_ggml.generation import default_model_path
from tests.text.greedy_margins import MARGIN_FACTOR, ROUNDING_BOUND, greedy_margin

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'rwkv_ggml[ray]'; CI installs it)")

from rwkv_ggml.ray import data as rd  # noqa: E402  (after the skip)
from rwkv_ggml.ray._common import row_seed  # noqa: E402

pytestmark = pytest.mark.usefixtures("ray_cluster")

MAX_TOKENS = 8
HEADS = ["KING", "Thou art", "My lord", "The", "What is", "I will", "Good morrow", "O, ", "First Citizen"]
HEADS += ["ROMEO", "Come, ", "Why"]
TAILS = ["", " the", " my", " a", " to", " and", " is", " of", " in", " not", " with", " that", " shall"]
TAILS += [" sir", " love", " night", " day"]
CANDIDATES = [h + t for h, t in itertools.product(HEADS, TAILS)]


@pytest.fixture(scope="module")
def model() -> Iterator[Model]:
    with Model(default_model_path(), threads=1) as m:
        yield m


def _alone(model: Model, prompt: str, **options: Any) -> dict[str, Any]:
    gen = generate(model, prompt, MAX_TOKENS, **options)
    text = "".join(gen)
    return {
        "text": text,
        "tokens": list(gen.tokens),
        "finish_reason": "length" if gen.finish_reason == "length" else "stop",
        "prompt_tokens": len(model.tokenize(prompt)),
        "completion_tokens": len(gen.tokens),
    }


@pytest.fixture(scope="module")
def greedy_reference(model: Model) -> dict[str, dict[str, Any]]:
    """The sequential greedy result of every candidate prompt whose greedy margins are safe."""
    out = {}
    for prompt in CANDIDATES:
        want = _alone(model, prompt, temperature=0.0)
        if greedy_margin(model, prompt, want["tokens"]) > MARGIN_FACTOR * ROUNDING_BOUND:
            out[prompt] = want
    assert len(out) >= 0.9 * len(CANDIDATES), "too many near-tie prompts: the prompt set needs changing"
    return out


def _rows(ds: Any) -> list[dict[str, Any]]:
    return sorted(ds.take_all(), key=lambda r: int(r["id"]))


def _check_generated(rows: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(rows) == len(want)
    for row, w in zip(rows, want, strict=True):
        got = {k: row[k] for k in ("text", "finish_reason", "prompt_tokens", "completion_tokens")}
        assert got == {k: w[k] for k in got}, row["prompt"]


def test_greedy_pipeline_with_two_actors_equals_sequential(
    greedy_reference: dict[str, dict[str, Any]],
) -> None:
    prompts = list(greedy_reference)
    ds = ray.data.from_items([{"id": i, "prompt": p} for i, p in enumerate(prompts)], override_num_blocks=6)
    out = rd.generate(
        ds,
        str(default_model_path()),
        actors=2,
        threads=1,
        batch_size=16,
        max_tokens=MAX_TOKENS,
        temperature=0.0,
    )
    rows = _rows(out)
    assert [r["prompt"] for r in rows] == prompts  # the input columns pass through
    _check_generated(rows, [greedy_reference[p] for p in prompts])
    assert {r["finish_reason"] for r in rows} == {"length"}


def test_seeded_rows_do_not_depend_on_the_split(model: Model) -> None:
    # per-row seeds from the row id; one row decoded at a time (max_batch=1), so each row is bit-identical
    # to generating it alone with its seed, whichever batch size, block or actor it lands in
    prompts = CANDIDATES[:24]
    items = [{"id": 100 + i, "prompt": p} for i, p in enumerate(prompts)]
    options = dict(max_tokens=MAX_TOKENS, temperature=1.0, top_p=0.9, seed=7, id_column="id", max_batch=1)
    small = _rows(
        rd.generate(
            ray.data.from_items(items, override_num_blocks=5),
            str(default_model_path()),
            actors=2,
            batch_size=3,
            **options,
        )
    )
    large = _rows(
        rd.generate(
            ray.data.from_items(items, override_num_blocks=1),
            str(default_model_path()),
            actors=1,
            batch_size=24,
            **options,
        )
    )
    want = [
        _alone(model, p, temperature=1.0, top_p=0.9, seed=row_seed(7, 100 + i)) for i, p in enumerate(prompts)
    ]
    _check_generated(small, want)
    _check_generated(large, want)
    assert len({r["text"] for r in small}) > 1


def test_embeddings_equal_model_embed(model: Model) -> None:
    texts = CANDIDATES[:40]
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=4)
    rows = _rows(rd.embed(ds, str(default_model_path()), actors=2, batch_size=8))
    for row, text in zip(rows, texts, strict=True):
        vec = np.asarray(row["embedding"])
        assert vec.dtype == np.float32 and vec.shape == (model.n_embed,)
        np.testing.assert_array_equal(vec, model.embed(text))


def test_scores_equal_in_process_perplexity(model: Model) -> None:
    texts = CANDIDATES[:30]
    contexts = CANDIDATES[30:60]
    items = [{"id": i, "text": t, "context": c} for i, (t, c) in enumerate(zip(texts, contexts, strict=True))]
    ds = ray.data.from_items(items, override_num_blocks=3)
    plain = _rows(rd.score(ds, str(default_model_path()), actors=2, batch_size=8))
    with_context = _rows(
        rd.score(ds, str(default_model_path()), actors=2, batch_size=8, context_column="context")
    )
    for row, text in zip(plain, texts, strict=True):
        ids = model.tokenize(text)
        mean_nll, ppl = model.perplexity(ids)
        assert row["scored_tokens"] == len(ids) - 1
        assert row["nll"] == mean_nll * (len(ids) - 1) and row["perplexity"] == ppl
    for row, text, context in zip(with_context, texts, contexts, strict=True):
        ctx, ids = model.tokenize(context), model.tokenize(text)
        # the text's tokens scored after the context: the log-softmax of the full sequence's logits
        logits, _ = model.eval_sequence(ctx + ids, all_logits=True)
        assert logits is not None
        z = logits[len(ctx) - 1 : -1].astype(np.float64)
        logp = z - z.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
        want = -float(logp[np.arange(len(ids)), ids].sum())
        assert row["scored_tokens"] == len(ids)
        assert row["nll"] == pytest.approx(want, rel=1e-4)  # a state carried over vs one sequence: rounding


def test_a_bad_row_fails_the_job_naming_the_row() -> None:
    items = [{"id": i, "prompt": p} for i, p in enumerate(["Hello", "", "World"])]
    ds = ray.data.from_items(items, override_num_blocks=1)
    out = rd.generate(ds, str(default_model_path()), batch_size=3, max_tokens=2, id_column="id", seed=1)
    with pytest.raises(Exception, match=r"row 1 of the batch \(id=1\): the prompt is empty"):
        out.take_all()


def test_bad_arguments_are_refused_before_anything_runs() -> None:
    ds = ray.data.from_items([{"prompt": "x"}])
    with pytest.raises(ValueError, match="actors must be an integer >= 1"):
        rd.generate(ds, str(default_model_path()), actors=0)
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        rd.embed(ds, str(default_model_path()), threads=0)
    with pytest.raises(TypeError, match="model must be a model file path"):
        rd.score(ds, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown sampling option"):
        rd.generate(ds, str(default_model_path()), temprature=0.0)


def test_row_seeds_are_stable_and_distinct() -> None:
    assert row_seed(7, 5) == row_seed(7, np.int64(5)) != row_seed(7, "5") != row_seed(8, 5)
    assert row_seed(0, "a") == row_seed(0, "a") and 0 <= row_seed(2**40, b"x") < 2**63
    with pytest.raises(TypeError, match="row id must be"):
        row_seed(1, 1.5)


def test_the_package_and_its_lazy_names_do_not_import_ray() -> None:
    import subprocess
    import sys

    code = (
        "import sys, rwkv_ggml\n"
        "for name in rwkv_ggml.__all__: getattr(rwkv_ggml, name)\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"
