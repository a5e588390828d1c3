"""Tests of the numpy reference quantizer (tests/reference/quant_ref.py).

The strongest check is arithmetic-independent: applying formats.md §4.2/§5.3 to the shipped
FP32 tiny models must regenerate the shipped Q5_0/Q5_1 files byte for byte. The rest pins the
block layout with hand-derived bytes, states the round-trip error bound of each format, and
covers the edge cases where the rules are easy to get wrong (zero blocks, constants, extreme
magnitudes, the sign rule of the _0 types, roundf's halfway cases).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_path

from rwkv_ggml.fileformat import DType, TensorRecord, read_model_file, write_model_file
from tests.reference.quant_ref import block_codes, block_scales, dequantize_ref, quantize_ref

QUANT_TYPES = [DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q8_0]
F32 = np.float32

# --- regenerate the shipped quantized files -----------------------------------------------------

_NOT_QUANTIZED = ("att.v1", "att.v2", "att.g1", "att.g2", "att.a1", "att.a2", "att.w1", "att.w2", "att.r_k")


def quantized_by_rwkv_cpp(record: TensorRecord) -> bool:
    """formats.md §4.2: which tensors the quantizer converts."""
    return (
        record.dtype in (DType.F32, DType.F16)
        and len(record.ne) == 2
        and record.name not in ("emb.weight", "head.weight")
        and not any(part in record.name for part in _NOT_QUANTIZED)
    )


SHIPPED = {"4v0-660K": 28, "5v1-730K": 84, "5v2-730K": 96, "7v0-834K": 72}  # quantized tensors per file


@pytest.mark.parametrize("qtype", [DType.Q5_0, DType.Q5_1], ids=lambda t: t.name)
@pytest.mark.parametrize("stem", list(SHIPPED))
def test_regenerates_shipped_file(tmp_path: Path, stem: str, qtype: DType) -> None:
    with (
        read_model_file(tiny_path(f"tiny-rwkv-{stem}-FP32.bin")) as source,
        read_model_file(tiny_path(f"tiny-rwkv-{stem}-{qtype.name}.bin")) as shipped,
    ):
        assert (shipped.version, shipped.data_type) == (101, qtype)
        assert (shipped.n_vocab, shipped.n_embed, shipped.n_layer) == (
            source.n_vocab,
            source.n_embed,
            source.n_layer,
        )
        assert list(shipped.tensors) == list(source.tensors)

        regenerated: list[tuple] = []
        n_quantized = 0
        for name, record in source.tensors.items():
            target = shipped.tensors[name]
            assert target.ne == record.ne, name
            if quantized_by_rwkv_cpp(record):
                n_quantized += 1
                assert target.dtype == qtype, name
                rows = np.asarray(source.array(name), dtype=F32).reshape(-1, record.ne[0])
                ours = quantize_ref(rows, qtype)
                theirs = shipped.array(name)
                if not np.array_equal(ours, theirs):
                    bad_blocks = np.flatnonzero((ours != theirs).reshape(-1, qtype.type_size).any(axis=1))
                    pytest.fail(
                        f"{name}: {bad_blocks.size} of {ours.size // qtype.type_size} blocks differ, "
                        f"first block {bad_blocks[0]}"
                    )
                regenerated.append((name, qtype, record.ne, ours))
            else:
                # Everything else is a byte-identical copy (same type, same bytes).
                assert target.dtype == record.dtype, name
                assert source.array(name).tobytes() == shipped.array(name).tobytes(), name
                regenerated.append((name, np.array(source.array(name))))
        assert n_quantized == SHIPPED[stem]

        # And the whole file, header included, comes out identical through our writer.
        out = tmp_path / "regenerated.bin"
        write_model_file(
            out,
            n_vocab=source.n_vocab,
            n_embed=source.n_embed,
            n_layer=source.n_layer,
            data_type=qtype,
            tensors=iter(regenerated),
        )
        assert out.read_bytes() == shipped.path.read_bytes()


# --- layout with hand-derived bytes ---------------------------------------------------------------


def _golden_cases() -> list[tuple[DType, np.ndarray, bytes]]:
    """Blocks chosen so that d = 1 exactly and every code is obvious; bytes derived by hand
    from formats.md §5.1 (d = f16 1.0 = 00 3C; qs[j] = q_j | q_{j+16} << 4 = 17·j here)."""
    j = np.arange(32)
    nibbles = bytes(17 * k for k in range(16))
    one = b"\x00\x3c"
    return [
        # x = -8..7 twice: amax 8 at x[0] = -8, d = -8/-8 = 1, q = x + 8 = j mod 16.
        (DType.Q4_0, (j % 16 - 8).astype(F32), one + nibbles),
        # x = 0..15 twice: min 0, d = 15/15 = 1, m = 0, q = j mod 16.
        (DType.Q4_1, (j % 16).astype(F32), one + b"\x00\x00" + nibbles),
        # x = -16..15: d = -16/-16 = 1, q = x + 16 = j; bit 4 set for j >= 16 -> qh = 0xFFFF0000.
        (DType.Q5_0, (j - 16).astype(F32), one + b"\x00\x00\xff\xff" + nibbles),
        # x = 0..31: d = 31/31 = 1, m = 0, q = j.
        (DType.Q5_1, j.astype(F32), one + b"\x00\x00" + b"\x00\x00\xff\xff" + nibbles),
        # amax 127 -> d = 1, q = x as int8.
        (
            DType.Q8_0,
            np.concatenate([[127], np.arange(-15, 16)]).astype(F32),
            one + bytes([127]) + np.arange(-15, 16, dtype=np.int8).tobytes(),
        ),
    ]


@pytest.mark.parametrize(
    ("qtype", "x", "expected"), _golden_cases(), ids=[case[0].name for case in _golden_cases()]
)
def test_golden_block(qtype: DType, x: np.ndarray, expected: bytes) -> None:
    assert len(expected) == qtype.type_size
    data = quantize_ref(x[None, :], qtype)
    assert data.shape == (1, qtype.type_size)
    assert data.tobytes() == expected
    assert np.array_equal(dequantize_ref(data, qtype, (32,)), x)  # all values exactly representable


def test_q8_0_rounds_half_away_from_zero() -> None:
    below_half = np.nextafter(F32(0.5), F32(0))  # 0.49999997: floor(x + 0.5) would wrongly give 1
    halfway = [2.5, -2.5, 0.5, -0.5, 1.5, -1.5, below_half, -below_half]
    x = np.zeros(32, dtype=F32)
    x[0] = 127  # d = 1, id = 1: the code is roundf(x)
    x[1 : 1 + len(halfway)] = halfway
    codes = block_codes(quantize_ref(x[None, :], DType.Q8_0), DType.Q8_0)[0]
    assert codes[:9].tolist() == [127, 3, -3, 1, -1, 2, -2, 0, 0]


# --- round-trip error bounds on random data -----------------------------------------------------


def _random_matrix(seed: int, rows: int = 64, cols: int = 256) -> np.ndarray:
    """Normal data with per-block scales over six decades and per-block offsets."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).reshape(-1, 32)
    x *= 10.0 ** rng.uniform(-3, 3, size=(x.shape[0], 1))
    x += rng.standard_normal((x.shape[0], 1)) * np.abs(x).max(axis=1, keepdims=True) * 0.5
    return x.reshape(rows, cols).astype(F32)


@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda t: t.name)
def test_round_trip_error_bound(qtype: DType) -> None:
    """Per element |x - deq(q(x))| <= |d|/2, plus the effect of storing d (and m) as f16.

    For the _0 types d = -mx/L (L = 8 or 16) makes the extreme value code 0, so values on the
    other side beyond (L - 1/2)·|d| are clamped to code 2L-1 and may be off by up to |d|; the
    test checks those are exactly the clamped codes and bounds them by |d|.
    """
    x = _random_matrix(seed=int(qtype))
    data = quantize_ref(x, qtype)
    assert data.shape == (x.shape[0], x.shape[1] // 32 * qtype.type_size)
    deq = dequantize_ref(data, qtype, (x.shape[1], x.shape[0]))
    assert deq.shape == x.shape and deq.dtype == F32

    blocks = x.reshape(-1, 32).astype(np.float64)
    err = np.abs(blocks - deq.reshape(-1, 32))
    codes = block_codes(data, qtype)
    d16, m16 = block_scales(data, qtype)
    if qtype in (DType.Q4_0, DType.Q5_0):
        levels = 8 if qtype == DType.Q4_0 else 16
        first = np.argmax(np.abs(blocks), axis=1)
        mx = blocks[np.arange(len(blocks)), first]
        d32 = (mx.astype(F32) / F32(-levels)).astype(np.float64)[:, None]
        assert np.all(np.sign(d16) == -np.sign(mx))  # d carries the opposite sign of the extreme
        assert np.all(codes[np.arange(len(blocks)), first] == 0)  # the extreme maps to code 0
        scaled = blocks / d32
        clamped = scaled > levels - 0.5 + 1e-5
        assert np.all(codes[clamped] == 2 * levels - 1)
        bound = np.where(clamped, 1.0, 0.5) * np.abs(d32) + levels * np.abs(d32 - d16[:, None])
        assert np.all((codes >= 0) & (codes <= 2 * levels - 1))
    elif qtype in (DType.Q4_1, DType.Q5_1):
        top = 15 if qtype == DType.Q4_1 else 31
        mn, mx = blocks.min(axis=1), blocks.max(axis=1)
        d32 = ((mx.astype(F32) - mn.astype(F32)) / F32(top)).astype(np.float64)[:, None]
        assert m16 is not None
        bound = 0.5 * d32 + np.abs(mn - m16)[:, None] + top * np.abs(d32 - d16[:, None])
        assert np.all((codes >= 0) & (codes <= top))
    else:
        d32 = (np.abs(blocks).max(axis=1).astype(F32) / F32(127)).astype(np.float64)[:, None]
        bound = 0.5 * d32 + 127 * np.abs(d32 - d16[:, None])
        assert np.all(np.abs(codes) <= 127)
    # Slack for the f32 rounding of x·id and of the dequantization product.
    slack = 1e-5 * np.abs(d32) + 1e-6 * np.abs(blocks)
    excess = err - (bound + slack)
    assert excess.max() <= 0, f"worst element exceeds its bound by {excess.max():.3g}"
    # The bound is tight: typical errors do reach close to d/2.
    assert (err / np.abs(d32)).max() > 0.45


# --- edge cases ---------------------------------------------------------------------------------

ZERO_BLOCK_BYTES = {
    # d = mx/-8 with mx = +0.0 is -0.0 -> f16 0x8000; every code is trunc(0 + 8.5) = 8 -> qs 0x88.
    DType.Q4_0: b"\x00\x80" + b"\x88" * 16,
    DType.Q4_1: b"\x00" * 20,
    # codes 16: low nibbles 0, every fifth bit set.
    DType.Q5_0: b"\x00\x80" + b"\xff" * 4 + b"\x00" * 16,
    DType.Q5_1: b"\x00" * 24,
    DType.Q8_0: b"\x00" * 34,
}


@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda t: t.name)
def test_all_zero_block(qtype: DType) -> None:
    zero = np.zeros((1, 32), dtype=F32)
    data = quantize_ref(zero, qtype)
    assert data.tobytes() == ZERO_BLOCK_BYTES[qtype]
    assert np.all(dequantize_ref(data, qtype, (32,)) == 0)
    # -0.0 everywhere: the C scans start from +0 (|x| > amax is false), so _0 types are unchanged;
    # for the _1 types the minimum is the first -0.0, stored as m = f16 -0.0.
    negzero = quantize_ref(-zero, qtype)
    if qtype in (DType.Q4_1, DType.Q5_1):
        assert negzero.tobytes() == b"\x00\x00\x00\x80" + ZERO_BLOCK_BYTES[qtype][4:]
    else:
        assert negzero.tobytes() == ZERO_BLOCK_BYTES[qtype]


@pytest.mark.parametrize("value", [3.0, -3.0, 0.1])
@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda t: t.name)
def test_constant_block(qtype: DType, value: float) -> None:
    x = np.full((1, 32), value, dtype=F32)
    data = quantize_ref(x, qtype)
    codes = block_codes(data, qtype)[0]
    d16, m16 = block_scales(data, qtype)
    deq = dequantize_ref(data, qtype, (32,))
    if qtype in (DType.Q4_0, DType.Q5_0):
        assert np.all(codes == 0) and np.sign(d16[0]) == -np.sign(value)  # every element is the extreme
    elif qtype in (DType.Q4_1, DType.Q5_1):
        assert np.all(codes == 0) and d16[0] == 0
        assert m16 is not None and m16[0] == F32(value).astype(np.float16)
    else:
        assert np.all(codes == np.sign(value) * 127)
    assert np.all(deq == deq[0])
    if value in (3.0, -3.0) and qtype != DType.Q8_0:
        assert np.all(deq == value)  # 3/8, 3/16 and 3 are exact in f16
    np.testing.assert_allclose(deq, value, rtol=1e-3)


@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda t: t.name)
def test_extreme_magnitudes(qtype: DType) -> None:
    """Scaling a block by 2**±100 (~1.3e30 / ~7.9e-31) scales every f32 intermediate exactly,
    so the codes must not change; only the stored f16 scales overflow to inf or underflow to 0."""
    rng = np.random.default_rng(99)
    base = (rng.uniform(0.01, 1.0, size=(4, 64)) * rng.choice([-1.0, 1.0], size=(4, 64))).astype(F32)
    base[0] = np.abs(base[0])  # one row of positive-only blocks (min > 0 for the _1 types)
    reference = quantize_ref(base, qtype)
    for scale in (2.0**100, 2.0**-100):
        x = (base * F32(scale)).astype(F32)
        assert np.abs(x).max() >= 1e30 if scale > 1 else np.abs(x).max() <= 1e-30
        data = quantize_ref(x, qtype)
        assert np.array_equal(block_codes(data, qtype), block_codes(reference, qtype))
        d16, m16 = block_scales(data, qtype)
        ref_d16, _ = block_scales(reference, qtype)
        if scale > 1:
            assert np.all(np.isinf(d16) & (np.sign(d16) == np.sign(ref_d16)))
        else:
            assert np.all(d16 == 0)
            assert np.all(dequantize_ref(data, qtype, (64, 4)) == 0)  # everything underflows in f16
        if m16 is not None:
            assert np.all(np.isinf(m16)) if scale > 1 else np.all(m16 == 0)


@pytest.mark.parametrize("qtype", [DType.Q4_0, DType.Q5_0], ids=lambda t: t.name)
def test_sign_rule_first_occurrence(qtype: DType) -> None:
    """The _0 types scale by the signed extreme; on a tie in magnitude the first one wins and
    the opposite one is clamped to the top code."""
    levels = 8 if qtype == DType.Q4_0 else 16
    top = 2 * levels - 1
    for first in (2.0, -2.0):
        x = np.zeros((1, 32), dtype=F32)
        x[0, 0], x[0, 5], x[0, 9] = first, -first, first / 2
        data = quantize_ref(x, qtype)
        d16, _ = block_scales(data, qtype)
        assert d16[0] == F32(first / -levels)
        codes = block_codes(data, qtype)[0]
        assert (codes[0], codes[5], codes[9], codes[1]) == (0, top, levels // 2, levels)
        deq = dequantize_ref(data, qtype, (32,))
        assert deq[0] == first and deq[9] == first / 2 and deq[1] == 0
        assert deq[5] == -first * (top - levels) / levels  # clamped: -1.75 / -1.875 instead of -2


@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda t: t.name)
def test_negative_extreme_and_mixed_signs(qtype: DType) -> None:
    x = np.linspace(-1.0, 0.75, 32, dtype=F32)
    x[7] = -4.0  # largest magnitude is negative
    x = x[None, :]
    data = quantize_ref(x, qtype)
    d16, m16 = block_scales(data, qtype)
    deq = dequantize_ref(data, qtype, (32,))
    if qtype in (DType.Q4_0, DType.Q5_0):
        assert d16[0] > 0  # d = -4 / -L
        assert block_codes(data, qtype)[0, 7] == 0 and deq[7] == -4.0
    elif qtype in (DType.Q4_1, DType.Q5_1):
        assert m16 is not None and m16[0] == -4.0 and deq[7] == -4.0
    else:
        assert block_codes(data, qtype)[0, 7] == -127
    assert np.all(np.sign(deq[np.abs(x[0]) > 0.3]) == np.sign(x[0][np.abs(x[0]) > 0.3]))


def test_multi_block_rows_are_independent() -> None:
    """A tensor is rows × (K/32) independent blocks in memory order."""
    x = _random_matrix(seed=5, rows=3, cols=96)
    for qtype in QUANT_TYPES:
        whole = quantize_ref(x, qtype)
        pieces = [quantize_ref(x[r : r + 1, c : c + 32], qtype) for r in range(3) for c in range(0, 96, 32)]
        assert whole.tobytes() == b"".join(p.tobytes() for p in pieces)


@pytest.mark.parametrize(
    ("x", "qtype", "match"),
    [
        (np.zeros((2, 48), F32), DType.Q4_0, "multiple of 32"),
        (np.zeros((2, 32), np.float64), DType.Q4_0, "float32"),
        (np.zeros(32, F32), DType.Q4_0, "2-D"),
        (np.full((1, 32), np.nan, F32), DType.Q5_1, "NaN"),
        (np.full((1, 32), np.inf, F32), DType.Q8_0, "inf"),
        (np.zeros((1, 32), F32), DType.F16, "not a block-quantized type"),
    ],
)
def test_quantize_ref_rejects(x: np.ndarray, qtype: DType, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        quantize_ref(x, qtype)
