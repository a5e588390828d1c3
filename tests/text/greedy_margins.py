"""How clearly each greedy choice won: the tests that compare batched or distributed generation with
generating alone need prompts whose greedy steps cannot flip under the batch's rounding."""

from __future__ import annotations

import numpy as np

from rwkv_ggml import Model

ROUNDING_BOUND = 5e-5  # tests/model/test_batch.py F32_BOUND (F32 and F16 weights)
MARGIN_FACTOR = 4.0


def greedy_margin(model: Model, prompt: str, generated: list[int]) -> float:
    """The smallest gap between the best and second-best logit over the steps that produced `generated`
    from `prompt`, relative to each step's largest |logit|."""
    ids = model.tokenize(prompt)
    logits, _ = model.eval_sequence(ids + generated, all_logits=True)
    assert logits is not None
    steps = logits[len(ids) - 1 : len(ids) + len(generated) - 1]
    top2 = np.sort(steps, axis=1)[:, -2:]
    return float(((top2[:, 1] - top2[:, 0]) / np.abs(steps).max(axis=1)).min())
