"""The tiny rwkv.cpp models give their expected logits on every kernel level, the portable scalar one too.

test_model_v5_v7 checks the level the process runs with (the CPU's best, or the scalar level under
RWKV_GGML_FORCE_SCALAR=1); this runs every quantized and FP16 file on each level this CPU has, so a
machine without AVX2 is covered on any machine. rwkv.cpp's sum criterion (1.05 |E|) is tight: before the
scalar f32 dot product added its terms in the SIMD kernels' tree, the scalar level put one activation of
the 6v0 Q5_0 model on the other side of a Q8 rounding boundary (sum -22.62 against the bound 22.21).
"""

from __future__ import annotations

import numpy as np
import pytest

from rwkv_ggml import Model, ggml
from tests.conftest import tiny_path
from tests.model.test_model_v5_v7 import MAX_ABS, PROMPT, SUM_E, TINY, _tiny_cases, rwkv_cpp_gn_eps, serial

LEVELS = list(range(ggml.simd_max_level() + 1))


@pytest.mark.parametrize("stem, fmt", [c for c in _tiny_cases() if c[1] != "FP32"])
@pytest.mark.parametrize("level", LEVELS, ids=[["scalar", "avx2", "avx512"][lv] for lv in LEVELS])
def test_tiny_models_on_every_level(stem: str, fmt: str, level: int) -> None:
    expected = np.fromfile(tiny_path(f"expected-logits-{stem}.bin"), dtype="<f4")
    previous = ggml.simd_level()
    try:
        assert ggml.simd_select(level) == level
        with Model(
            tiny_path(f"tiny-rwkv-{stem}-{fmt}.bin"), threads=2, gn_eps=rwkv_cpp_gn_eps(TINY[stem][0])
        ) as m:
            per_token, _ = serial(m, PROMPT)
            seq_logits, _ = m.eval_sequence(PROMPT)
    finally:
        ggml.simd_select(previous)
    for mode, logits in (("serial", per_token[-1]), ("sequence", seq_logits)):
        diff = logits - expected
        assert float(np.abs(diff).max()) <= MAX_ABS[fmt], f"{mode}: max |logit - expected|"
        diff_sum = float(np.sum(diff, dtype=np.float32))
        assert abs(diff_sum) <= 1.05 * abs(SUM_E[(stem, fmt)]), (
            f"{mode}: rwkv.cpp sum criterion, sum = {diff_sum}"
        )
