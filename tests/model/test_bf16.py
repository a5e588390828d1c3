"""The opt-in bf16 path for sequence mode: its accuracy bound, and that it leaves everything else exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rwkv_ggml import Model, ggml
from tests.model.formats import model_in_format
from tests.reference.random_models import write_random_model

needs_bf16 = pytest.mark.skipif(
    not ggml.cpu_features()["avx512_bf16"] or ggml.simd_level() < 2,
    reason="no AVX512_BF16 kernels (CPU or selected level)",
)

# bf16 keeps 8 significant bits: each product is off by <= 2^-9 relative, and the errors of a K-long dot
# product mostly cancel; relative to the largest |logit| the observed error is ~3e-3.
BF16_BOUND = 2e-2


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("bf16") / "v4.bin"
    write_random_model(p, "4", 128, 3, 150, ffn_dim=256, seed=4)
    return p


@needs_bf16
@pytest.mark.parametrize("fmt", ["F32", "F16"])
def test_bf16_sequence_within_bound(path: Path, tmp_path_factory: pytest.TempPathFactory, fmt: str) -> None:
    p = model_in_format(path, fmt, tmp_path_factory)
    tokens = np.random.default_rng(0).integers(0, 150, 70)
    with Model(p, threads=2) as exact, Model(p, threads=2, bf16=True) as fast:
        want, want_state = exact.eval_sequence(tokens, all_logits=True)
        got, got_state = fast.eval_sequence(tokens, all_logits=True)
        # per-token mode is never affected
        np.testing.assert_array_equal(exact.eval(5)[0], fast.eval(5)[0])
    err = np.abs(got - want).max() / np.abs(want).max()
    assert 0 < err <= BF16_BOUND  # > 0: the bf16 kernels really ran
    finite = np.abs(want_state) < 1e29
    assert np.abs(got_state - want_state)[finite].max() <= BF16_BOUND * np.abs(want_state[finite]).max()


def test_bf16_is_exact_for_quantized_weights(path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    p = model_in_format(path, "Q8_0", tmp_path_factory)
    tokens = list(range(40))
    with Model(p, threads=2) as exact, Model(p, threads=2, bf16=True) as fast:
        np.testing.assert_array_equal(exact.eval_sequence(tokens)[0], fast.eval_sequence(tokens)[0])


def test_bf16_argument_checked(path: Path) -> None:
    with pytest.raises(ValueError):
        Model(path, bf16="yes")  # type: ignore[arg-type]
