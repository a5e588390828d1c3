"""Batched decode (Model.eval_batch, StateBank) against separate Model.eval calls: every tiny model and
format, B = 1, 2, 3, 8, 17, random slot orders, sequences joining and leaving mid-run, untouched rows of the
slots not in a step, the array forms of the states and the argument errors.

What "equal" means (per format; the bounds are relative to the largest |value|):

* B = 1 is bit-identical to eval (one column takes the same mat-vec kernels).
* The recurrences, norms and element-wise steps are bit-identical for any B
  (tests/engine/test_rwkv_batch_ops.py); only the matrix products of B columns can differ:
  - F32 and F16 weights: bit-identical up to B = 32 at the AVX-512 level (the row tiles add in the
    mat-vec's order; the column panels start at 33 columns) and for any B at the AVX2 and scalar levels
    (only the tiles run there; tests/engine/test_float_tile_order.py checks every column count).
    Otherwise within F32_BOUND.
  - block-quantized weights, every level: bit-identical up to B = 9 (vec_dot_*_xn equals the mat-vec's
    vec_dot); with AVX512_VNNI at the AVX-512 level the narrow panels keep that up to B = 16 for the
    32-element block types and B = 32 for Q8_0 (tests/engine/test_quant_narrow.py). Past that, with
    AVX512_VNNI, the column panels add the f32 block terms in another order,
    and a last-bit difference can flip one int8 activation code (tests/model/test_sequence.py,
    FLIP_BOUND), which in these tiny models moves every logit a little: within FLIP_BOUND (observed up
    to 5.7e-2 at B = 17 on the v5.1 Q4_0 model with this file's seeds, before and after the row-kernel
    change; other draws gave <= 1.4e-2, as sequence mode's 1e-2).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from rwkv_ggml import ggml
from rwkv_ggml.batch import MAX_BATCH_GRAPHS, StateBank
from rwkv_ggml.errors import ClosedError, EngineArgumentError
from rwkv_ggml.model import Model
from tests.conftest import tiny_path
from tests.model.formats import FORMATS, model_in_format
from tests.reference.random_models import write_random_model

B_VALUES = (1, 2, 3, 8, 17)
F32_BOUND = 5e-5
FLIP_BOUND = 1e-1
FLOAT_EXACT_MAX_B = 32  # below RG_FPANEL_MIN_T (ops_matmul_panel.c), AVX-512 level; any B below it
QUANT_EXACT_MAX_B = 9  # below RG_QPANEL_MIN_T
# ROUTE_QNARROW (ops_matmul.c), AVX512_VNNI at the AVX-512 level
NARROW_EXACT_MAX_B = {"Q8_0": 32, "Q4_0": 16, "Q4_1": 16, "Q5_0": 16, "Q5_1": 16}
STEPS = 3
# (stem, GroupNorm epsilon): the v5 tiny models were made with rwkv.cpp's 1e-5
TINY = [("4v0-660K", None), ("5v1-730K", 1e-5), ("5v2-730K", 1e-5), ("7v0-834K", None)]


@pytest.fixture(scope="module")
def v6_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The v6 tiny model ships quantized only: a random v6 model stands in for its F32 source."""
    path = tmp_path_factory.mktemp("batch") / "v6.bin"
    write_random_model(path, "6", 64, 2, 97, head_size=16, lora_dims=32, seed=11)
    return path


def _model_path(stem: str, fmt: str, v6_path: Path, factory: pytest.TempPathFactory) -> Path:
    if stem == "6v0-3m" and fmt in ("Q5_0", "Q5_1"):
        return tiny_path(f"tiny-rwkv-6v0-3m-{fmt}.bin")
    source = v6_path if stem == "6v0-3m" else tiny_path(f"tiny-rwkv-{stem}-FP32.bin")
    return model_in_format(source, fmt, factory)


def _assert_close(got: np.ndarray, want: np.ndarray, quantized: bool, what: str) -> None:
    finite = np.abs(want) < 1e29  # v4's pp starts at -1e30 and stays huge for unused channels
    scale = max(1.0, float(np.abs(want[finite]).max()))
    diff = np.abs(got[finite].astype(np.float64) - want[finite])
    bound = FLIP_BOUND if quantized else F32_BOUND
    err = float(diff.max())
    assert err <= bound * scale, f"{what}: max error {err:.3g} > {bound} * {scale:.3g}"
    # untouched huge entries (v4's pp) must stay exactly as they were
    np.testing.assert_array_equal(got[~finite], want[~finite])


def _bit_identical(B: int, fmt: str) -> bool:
    """Whether a batch of B equals B separate evals bit for bit at the level in effect (module docstring)."""
    if B == 1:
        return True
    if fmt.startswith("Q"):
        narrow = ggml.simd_level() == 2 and ggml.cpu_features()["avx512_vnni"]
        exact_max = NARROW_EXACT_MAX_B.get(fmt, QUANT_EXACT_MAX_B) if narrow else QUANT_EXACT_MAX_B
        return exact_max >= B
    return ggml.simd_level() < 2 or B <= FLOAT_EXACT_MAX_B


def _distinct_states(m: Model, n: int, g: np.random.Generator) -> np.ndarray:
    """n different states: each after its own short random prompt."""
    return np.stack(
        [m.eval_sequence(g.integers(0, m.n_vocab, 1 + i % 4), compute_logits=False)[1] for i in range(n)]
    )


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("stem, gn_eps", [*TINY, ("6v0-3m", None)])
def test_eval_batch_equals_separate_evals(
    stem: str, gn_eps: float | None, fmt: str, v6_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    quantized = fmt.startswith("Q")
    with Model(_model_path(stem, fmt, v6_path, tmp_path_factory), threads=2, gn_eps=gn_eps) as m:
        # a stable seed (hash() of a str changes per process): the same draws, so the same bounds, every run
        g = np.random.default_rng(zlib.crc32(f"{stem}/{fmt}".encode()))
        for B in B_VALUES:
            bank = StateBank(m, B + 4)
            slots = [bank.allocate(s) for s in _distinct_states(m, B + 4, g)]
            idle = slots[B:]  # allocated, never stepped: their rows must stay as they are
            idle_before = bank.array[idle].copy()
            stepped = slots[:B]
            want = {s: bank.state(s) for s in stepped}
            for step in range(STEPS):
                order = list(g.permutation(stepped))
                tokens = g.integers(0, m.n_vocab, B)
                logits = bank.eval_batch(tokens, order)
                assert logits is not None and logits.shape == (B, m.n_vocab)
                for b, slot in enumerate(order):
                    one, want[slot] = m.eval(int(tokens[b]), want[slot])
                    assert one is not None
                    what = f"B={B} step {step} sequence {b}"
                    if _bit_identical(B, fmt):
                        np.testing.assert_array_equal(logits[b], one, err_msg=what)
                        np.testing.assert_array_equal(bank.array[slot], want[slot], err_msg=what)
                    else:
                        _assert_close(logits[b], one, quantized, f"{what} logits")
                        _assert_close(bank.array[slot], want[slot], quantized, f"{what} state")
            np.testing.assert_array_equal(bank.array[idle], idle_before)


@pytest.mark.parametrize("fmt", ["F32", "F16"])
@pytest.mark.parametrize("level", [0, 1])
def test_float_batches_are_exact_below_avx512(
    fmt: str, level: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """At the AVX2 and scalar levels the float tiles add in that level's mat-vec order: B = 32 (the most
    the tiles take before the AVX2 column panels) at AVX2, and B = 40 on the scalar level, which has no
    panels (the AVX2 tile used to sum each column in one 8-lane accumulator, 1e-5 off the mat-vec)."""
    if level > ggml.simd_max_level():
        pytest.skip(f"the CPU has no level {level}")
    n = 40 if level == 0 else 32
    previous = ggml.simd_level()
    ggml.simd_select(level)
    try:
        with Model(
            model_in_format(tiny_path("tiny-rwkv-7v0-834K-FP32.bin"), fmt, tmp_path_factory), threads=2
        ) as m:
            g = np.random.default_rng(level)
            states = _distinct_states(m, n, g)
            tokens = g.integers(0, m.n_vocab, n)
            logits, new_states = m.eval_batch(tokens, states)
            assert logits is not None
            for b in range(n):
                one, state = m.eval(int(tokens[b]), states[b])
                np.testing.assert_array_equal(logits[b], one, err_msg=f"sequence {b}")
                np.testing.assert_array_equal(new_states[b], state, err_msg=f"sequence {b}")
    finally:
        ggml.simd_select(previous)


@pytest.mark.parametrize(
    "path, gn_eps",
    [
        ("tiny-rwkv-7v0-834K-FP32.bin", None),
        ("tiny-rwkv-5v2-730K-Q5_1.bin", 1e-5),
        ("tiny-rwkv-4v0-660K-FP16.bin", None),
    ],
)
def test_sequences_join_and_leave_mid_run(path: str, gn_eps: float | None) -> None:
    """A bank of 5 slots serving 8 sequences over 12 steps: each step, some sequences leave (their slot freed
    and reused), others join (from a fresh state or a prompt), and a random subset of the active ones is
    stepped in random order. Every sequence's logits and state follow its own chain of evals; the rows of
    the allocated slots not in a step are untouched."""
    with Model(tiny_path(path), threads=2, gn_eps=gn_eps) as m:
        g = np.random.default_rng(7)
        bank = StateBank(m, 5)
        active: dict[int, np.ndarray] = {}  # slot -> the state its sequence has by separate evals
        joined = 0
        for step in range(12):
            for slot in list(active):
                if g.random() < 0.25:
                    bank.free(slot)
                    del active[slot]
            while bank.n_free and joined < 8 and (not active or g.random() < 0.5):
                start = (
                    m.init_state()
                    if joined % 2 == 0
                    else m.eval_sequence(g.integers(0, m.n_vocab, 3), compute_logits=False)[1]
                )
                active[bank.allocate(start)] = start.copy()
                joined += 1
            if not active:
                continue
            members = list(g.permutation(list(active)))[: max(1, int(g.integers(1, len(active) + 1)))]
            others = [s for s in active if s not in members]
            others_before = bank.array[others].copy()
            tokens = g.integers(0, m.n_vocab, len(members))
            logits = bank.eval_batch(tokens, members)
            assert logits is not None
            for b, slot in enumerate(members):
                one, active[slot] = m.eval(int(tokens[b]), active[slot])
                assert one is not None
                quantized = m.dtype.startswith("Q")
                _assert_close(logits[b], one, quantized, f"step {step} slot {slot} logits")
                _assert_close(bank.array[slot], active[slot], quantized, f"step {step} slot {slot} state")
            np.testing.assert_array_equal(bank.array[others], others_before)
        assert joined == 8


def test_array_forms_of_the_states() -> None:
    with Model(tiny_path("tiny-rwkv-7v0-834K-FP32.bin"), threads=2) as m:
        g = np.random.default_rng(3)
        states = _distinct_states(m, 3, g)
        original = states.copy()
        tokens = [5, 17, 99]
        logits, new = m.eval_batch(tokens, states)
        np.testing.assert_array_equal(states, original)  # not modified without state_out=states
        assert logits is not None and new.shape == states.shape and new is not states
        # in place, into logits_out; and compute_logits=False gives the same states
        out = np.empty((3, m.n_vocab), np.float32)
        inplace = original.copy()
        logits2, new2 = m.eval_batch(tokens, inplace, state_out=inplace, logits_out=out)
        assert new2 is inplace and logits2 is out
        np.testing.assert_array_equal(out, logits)
        np.testing.assert_array_equal(inplace, new)
        none, new3 = m.eval_batch(tokens, original, compute_logits=False)
        assert none is None
        np.testing.assert_array_equal(new3, new)
        # states=None: B fresh states
        fresh_logits, _ = m.eval_batch([1, 2], None)
        assert fresh_logits is not None
        np.testing.assert_array_equal(fresh_logits, m.eval_batch([1, 2], np.stack([m.init_state()] * 2))[0])
        # a plain array as a bank, with slots: only those rows change
        bank = np.stack([m.init_state()] * 4)
        before = bank.copy()
        bank_logits, returned = m.eval_batch([7, 8], bank, slots=[3, 1])
        assert returned is bank and bank_logits is not None
        np.testing.assert_array_equal(bank[[0, 2]], before[[0, 2]])
        _, solo_state = m.eval(8, before[1])
        _assert_close(bank[1], solo_state, False, "array bank row 1")


@pytest.mark.parametrize("path", ["tiny-rwkv-7v0-834K-FP32.bin", "tiny-rwkv-4v0-660K-Q5_1.bin"])
def test_eval_batch_is_thread_count_invariant(path: str) -> None:
    """Threads split (sequence, head) pairs and the products' rows: the results do not depend on how many."""
    results = []
    for threads in (1, 2, 4):
        with Model(tiny_path(path), threads=threads) as m:
            g = np.random.default_rng(1)
            states = _distinct_states(m, 9, g)
            for _ in range(2):
                logits, states = m.eval_batch(g.integers(0, m.n_vocab, 9), states, state_out=states)
            results.append((logits, states))
    for logits, states in results[1:]:
        np.testing.assert_array_equal(logits, results[0][0])
        np.testing.assert_array_equal(states, results[0][1])


def test_batch_graphs_are_bounded() -> None:
    with Model(tiny_path("tiny-rwkv-4v0-660K-FP32.bin"), threads=1) as m:
        for B in range(1, MAX_BATCH_GRAPHS + 4):
            m.eval_batch([1] * B)
        assert sum(1 for key in m._graphs if key[0] == "batch") == MAX_BATCH_GRAPHS


def test_bad_input_gets_clear_errors() -> None:
    m = Model(tiny_path("tiny-rwkv-4v0-660K-FP32.bin"), threads=1)
    S, V = m.state_size, m.n_vocab
    bank = StateBank(m, 3)
    a, b = bank.allocate(), bank.allocate()
    cases = [
        (lambda: m.eval_batch([]), "B = 0"),
        (lambda: m.eval_batch(np.array([], np.int32)), "B = 0"),
        (lambda: m.eval_batch([1, V]), "outside the vocabulary"),
        (lambda: m.eval_batch([1, -1]), "outside the vocabulary"),
        (lambda: m.eval_batch([1, 2], np.zeros((3, S), np.float32)), r"shape \(3, "),
        (lambda: m.eval_batch([1, 2], np.zeros((2, S + 1), np.float32)), "shape"),
        (lambda: m.eval_batch([1, 2], np.zeros((2, S), np.float64)), "dtype"),
        (lambda: m.eval_batch([1, 2], np.zeros(2 * S, np.float32)), "shape"),
        (lambda: m.eval_batch([1, 2], None, state_out=np.zeros((2, S), np.float32)[:, ::-1]), "C-contiguous"),
        (lambda: bank.eval_batch([1, 2], [a, a]), "more than once"),
        (lambda: bank.eval_batch([1, 2], [a]), "B = 2"),
        (lambda: bank.eval_batch([1, 2], [a, 2]), "not allocated"),
        (lambda: bank.eval_batch([1, 2], [a, 3]), "outside the bank"),
        (lambda: bank.eval_batch([1], [1.5]), "ints"),
        (lambda: m.eval_batch([1], bank, slots=[b], state_out=np.zeros((1, S), np.float32)), "state_out"),
        (lambda: m.eval_batch([1, 2], np.zeros((4, S), np.float32), slots=[0, 0]), "more than once"),
        (lambda: m.eval_batch([1], bank, slots=[a], logits_out=np.zeros(V, np.float32)), "logits_out"),
        (lambda: bank.free(2), "not an allocated slot"),
        (lambda: StateBank(m, 0), "capacity"),
    ]
    for call, match in cases:
        with pytest.raises(EngineArgumentError, match=match):
            call()
    bank.allocate()
    with pytest.raises(EngineArgumentError, match="full"):
        bank.allocate()
    with (
        Model(tiny_path("tiny-rwkv-4v0-660K-FP16.bin"), threads=1) as other,
        pytest.raises(EngineArgumentError, match="another model"),
    ):
        other.eval_batch([1], bank, slots=[a])
    m.close()
    with pytest.raises(ClosedError):
        m.eval_batch([1])
    with pytest.raises(ClosedError):
        bank.eval_batch([1], [a])
