"""Tests of rwkv_ggml.fileformat: the shipped tiny models, write/read round trips, atomic
writing, and a corruption suite in which every malformed file must raise ModelFormatError
(never IndexError, struct.error, MemoryError or a silent success)."""

from __future__ import annotations

import math
import os
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_path

from rwkv_ggml.errors import ClosedError, DTypeError, ModelFormatError, ModelIOError
from rwkv_ggml.fileformat import (
    FILE_MAGIC,
    DType,
    ModelFile,
    TensorRecord,
    read_model_file,
    tensor_nbytes,
    write_model_file,
)
from tests.reference.quant_ref import quantize_ref

# --- the shipped tiny models (testdata.md §1) ---------------------------------------------------

# stem -> (n_embed, n_layer, total tensors, {format: tensors of that format's main type})
TINY = {
    "4v0-660K": (128, 4, 78, {"FP16": 30, "Q5_0": 28, "Q5_1": 28}),
    "5v1-730K": (64, 12, 246, {"FP16": 86, "Q5_0": 84, "Q5_1": 84}),
    "5v2-730K": (64, 12, 270, {"FP16": 98, "Q5_0": 96, "Q5_1": 96}),
    "6v0-3m": (128, 12, 342, {"Q5_0": 132, "Q5_1": 132}),
    "7v0-834K": (64, 12, 339, {"FP16": 168, "Q5_0": 72, "Q5_1": 72}),
}
TINY_FILES = [
    (stem, fmt)
    for stem, (_, _, _, per) in TINY.items()
    for fmt in (["FP32"] if stem != "6v0-3m" else []) + list(per)
]


@pytest.mark.parametrize(("stem", "fmt"), TINY_FILES, ids=[f"{s}-{f}" for s, f in TINY_FILES])
def test_tiny_model_parses(stem: str, fmt: str) -> None:
    path = tiny_path(f"tiny-rwkv-{stem}-{fmt}.bin")
    n_embed, n_layer, n_tensors, per_format = TINY[stem]
    with read_model_file(path) as model:
        main = DType.from_name(fmt)
        assert (model.n_vocab, model.n_embed, model.n_layer) == (256, n_embed, n_layer)
        assert model.data_type == main
        # Only the v4 FP32/FP16 files are version 100 (still valid: they hold no quantized data).
        assert model.version == (100 if stem == "4v0-660K" and fmt in ("FP32", "FP16") else 101)
        assert model.file_size == path.stat().st_size
        assert len(model.tensors) == n_tensors
        counts = Counter(record.dtype for record in model.tensors.values())
        expected_main = n_tensors if fmt == "FP32" else per_format[fmt]
        expected_counts = Counter({DType.F32: n_tensors - expected_main})
        expected_counts[main] += expected_main
        assert counts == +expected_counts
        assert "emb.weight" in model.tensors and "head.weight" in model.tensors

        # The records tile the file exactly: header, then record after record up to EOF.
        pos = 24
        for record in model.tensors.values():
            header_len = 12 + 4 * len(record.ne) + len(record.name.encode())
            assert record.offset == pos + header_len
            assert record.nbytes == tensor_nbytes(record.dtype, record.ne)
            pos = record.offset + record.nbytes
        assert pos == model.file_size

        for name, record in model.tensors.items():
            array = model.array(name)
            assert not array.flags.writeable
            if record.dtype == DType.F32:
                assert array.dtype == np.float32 and array.shape == record.shape
                assert np.all(np.isfinite(array)), name
            elif record.dtype == DType.F16:
                assert array.dtype == np.float16 and array.shape == record.shape
            else:
                rows = math.prod(record.ne[1:])
                assert array.dtype == np.uint8
                assert array.shape == (rows, record.ne[0] // 32 * record.dtype.type_size)


def test_tiny_v4_details() -> None:
    """Facts from testdata.md that pin down offsets and value decoding (unaligned f32 data)."""
    with read_model_file(tiny_path("tiny-rwkv-4v0-660K-FP32.bin")) as model:
        first = next(iter(model.tensors.values()))
        assert first == TensorRecord("emb.weight", DType.F32, (128, 256), 54, 128 * 256 * 4)
        assert first.shape == (256, 128) and first.n_elements == 256 * 128
        names = list(model.tensors)
        # Loaders must go by name: ln0 comes after block 0's ffn tensors in this file.
        assert names.index("blocks.0.ln0.weight") > names.index("blocks.0.ffn.value.weight")
        # Layer 3's time_decay is -exp(0) = -1 up to training noise.
        decay = model.array("blocks.3.att.time_decay")
        assert decay.shape == (128,)
        np.testing.assert_allclose(decay, -1.0, atol=1e-6)


@pytest.mark.parametrize("stem", ["4v0-660K", "5v1-730K", "5v2-730K", "7v0-834K"])
def test_fp16_file_is_fp32_file_rounded(stem: str) -> None:
    """The converter's FP16 file equals the FP32 file with the 2-D weights rounded to f16."""
    with (
        read_model_file(tiny_path(f"tiny-rwkv-{stem}-FP32.bin")) as f32,
        read_model_file(tiny_path(f"tiny-rwkv-{stem}-FP16.bin")) as f16,
    ):
        assert list(f32.tensors) == list(f16.tensors)
        for name, record in f16.tensors.items():
            assert record.ne == f32.tensors[name].ne
            reference = f32.array(name)
            if record.dtype == DType.F16:
                expected = reference.astype(np.float16).view(np.uint16)
                assert np.array_equal(f16.array(name).view(np.uint16), expected), name
            else:
                assert np.array_equal(f16.array(name).view(np.uint32), reference.view(np.uint32)), name


# --- DType and tensor_nbytes --------------------------------------------------------------------


def test_dtype_properties() -> None:
    table = {
        DType.F32: (0, 1, 4, False),
        DType.F16: (1, 1, 2, False),
        DType.Q4_0: (2, 32, 18, True),
        DType.Q4_1: (3, 32, 20, True),
        DType.Q5_0: (7, 32, 22, True),
        DType.Q5_1: (8, 32, 24, True),
        DType.Q8_0: (9, 32, 34, True),
    }
    table |= {DType.Q4_K: (13, 256, 144, True), DType.Q5_K: (14, 256, 176, True)}  # formats.md §7.4
    table[DType.Q6_K] = (15, 256, 210, True)
    assert set(table) == set(DType)
    for dtype, (type_id, block, size, quantized) in table.items():
        got = (int(dtype), dtype.block_size, dtype.type_size, dtype.is_quantized)
        assert got == (type_id, block, size, quantized)
    assert FILE_MAGIC == 0x67676D66


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Q5_1", DType.Q5_1),
        ("q5_1", DType.Q5_1),
        ("q4_0", DType.Q4_0),
        ("Q8_0", DType.Q8_0),
        ("f16", DType.F16),
        ("fp16", DType.F16),
        ("FP16", DType.F16),
        ("F32", DType.F32),
        ("fp32", DType.F32),
        (" q5-0 ", DType.Q5_0),
    ],
)
def test_dtype_from_name(text: str, expected: DType) -> None:
    assert DType.from_name(text) is expected


@pytest.mark.parametrize("text", ["Q4_2", "q2_k", "", "int8", "bf16"])
def test_dtype_from_name_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="Q5_1") as info:
        DType.from_name(text)
    assert "F32" in str(info.value) and "Q8_0" in str(info.value)


def test_tensor_nbytes() -> None:
    assert tensor_nbytes(DType.F32, (128, 256)) == 128 * 256 * 4
    assert tensor_nbytes(DType.F16, (7,)) == 14
    assert tensor_nbytes(DType.Q5_1, (64, 3, 2)) == 2 * 3 * 2 * 24
    assert tensor_nbytes(DType.Q8_0, (32,)) == 34
    for dtype, ne in [
        (DType.Q4_0, (48, 2)),
        (DType.F32, (0, 3)),
        (DType.F32, (3, -1)),
        (DType.F32, ()),
        (DType.F32, (1, 1, 1, 1)),
        (DType.F32, (1 << 20, 1 << 20, 2)),
        (DType.F32, (2.0,)),
    ]:
        with pytest.raises(ModelFormatError):
            tensor_nbytes(dtype, ne)


# --- write -> read round trip -------------------------------------------------------------------


def _sample_tensors(rng: np.random.Generator) -> list[tuple]:
    """A small model with every record flavour: 1/2/3-D f32, f16, and a quantized 4-tuple."""
    q_source = rng.standard_normal((3, 64), dtype=np.float32)
    return [
        ("emb.weight", rng.standard_normal((5, 32), dtype=np.float32)),
        ("blocks.0.ln1.weight", rng.standard_normal(8, dtype=np.float32)),
        ("blocks.0.att.time_decay", rng.standard_normal((4, 2, 1), dtype=np.float32)),
        ("blocks.0.att.key.weight", rng.standard_normal((3, 16)).astype(np.float16)),
        ("blocks.0.ffn.key.weight", DType.Q5_1, (64, 3), quantize_ref(q_source, DType.Q5_1)),
        (
            "blocks.0.ffn.value.weight",
            DType.Q8_0,
            (32, 1),
            quantize_ref(q_source[:1, :32], DType.Q8_0).tobytes(),
        ),
        ("名前.ünïcode", np.arange(3, dtype=np.float32)),
    ]


def _write_sample(path: Path, **overrides: object) -> list[tuple]:
    tensors = _sample_tensors(np.random.default_rng(1234))
    kwargs: dict = dict(n_vocab=5, n_embed=32, n_layer=1, data_type=DType.F32, tensors=iter(tensors))
    kwargs.update(overrides)
    write_model_file(path, **kwargs)
    return tensors


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    tensors = _write_sample(path, data_type=DType.Q5_1)
    with read_model_file(path) as model:
        header = (model.version, model.n_vocab, model.n_embed, model.n_layer, model.data_type)
        assert header == (101, 5, 32, 1, 8)
        assert list(model.tensors) == [t[0] for t in tensors]
        for item in tensors:
            record = model.tensors[item[0]]
            if len(item) == 2:
                array = item[1]
                assert record.dtype == (DType.F32 if array.dtype == np.float32 else DType.F16)
                assert record.ne == tuple(reversed(array.shape)) and record.shape == array.shape
                got = model.array(item[0])
                assert got.dtype == array.dtype and np.array_equal(got, array)
            else:
                _, dtype, ne, data = item
                assert (record.dtype, record.ne) == (dtype, ne)
                raw = data if isinstance(data, bytes) else data.tobytes()
                assert model.array(item[0]).tobytes() == raw
        assert model.file_size == 24 + sum(
            12 + 4 * len(r.ne) + len(r.name.encode()) + r.nbytes for r in model.tensors.values()
        )
    raw = path.read_bytes()
    assert raw[:24] == struct.pack("<6I", FILE_MAGIC, 101, 5, 32, 1, 8)


def test_round_trip_version_100_and_byte_order(tmp_path: Path) -> None:
    """Version 100 is writable for F32/F16; big-endian or strided inputs are stored little-endian."""
    path = tmp_path / "v100.bin"
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    write_model_file(
        path,
        n_vocab=1,
        n_embed=1,
        n_layer=1,
        data_type=DType.F32,
        version=100,
        tensors=[
            ("big", base.astype(">f4")),
            ("strided", base[:, ::2]),
            ("raw", DType.F32, (3,), np.array([1, 2, 3], dtype=">f4")),
        ],
    )
    with read_model_file(path) as model:
        assert model.version == 100
        assert np.array_equal(model.array("big"), base)
        assert np.array_equal(model.array("strided"), base[:, ::2])
        assert np.array_equal(model.array("raw"), [1, 2, 3])


def test_model_file_close(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    _write_sample(path)
    model = read_model_file(path)
    kept = model.array("emb.weight")
    with pytest.raises(KeyError, match="nope"):
        model.array("nope")
    model.close()
    with pytest.raises(ClosedError):
        model.array("emb.weight")
    assert kept.shape == (5, 32) and np.isfinite(kept).all()  # earlier views stay valid
    with read_model_file(path) as again:
        assert isinstance(again, ModelFile)
    with pytest.raises(ClosedError):
        again.array("emb.weight")


def test_file_changed_after_parse(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    _write_sample(path)
    model = read_model_file(path)
    with open(path, "ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(ModelFormatError, match="changed"):
        model.array("emb.weight")


# --- atomic writing -----------------------------------------------------------------------------


def test_write_streams_tensors(tmp_path: Path) -> None:
    """Each tensor reaches the temporary file before the next one is requested."""
    path = tmp_path / "stream.bin"
    seen_sizes: list[int] = []

    def tensors() -> Iterator[tuple[str, np.ndarray]]:
        for i in range(4):
            temps = [p for p in tmp_path.iterdir() if p.name != "stream.bin"]
            assert len(temps) == 1 and temps[0].name.startswith(".stream.bin.")
            seen_sizes.append(temps[0].stat().st_size)
            yield f"t{i}", np.full(100, i, dtype=np.float32)

    write_model_file(path, n_vocab=1, n_embed=1, n_layer=1, data_type=0, tensors=tensors())
    record = 12 + 4 + 2 + 400
    assert seen_sizes == [24 + i * record for i in range(4)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stream.bin"]
    assert path.stat().st_size == 24 + 4 * record


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_nothing(tmp_path: Path, exc_type: type[BaseException], existing: bool) -> None:
    path = tmp_path / "out.bin"
    if existing:
        path.write_bytes(b"previous contents")

    def failing() -> Iterator[tuple[str, np.ndarray]]:
        yield "a", np.zeros(64, dtype=np.float32)
        raise exc_type("stop")

    with pytest.raises(exc_type, match="stop"):
        write_model_file(path, n_vocab=1, n_embed=1, n_layer=1, data_type=0, tensors=failing())
    if existing:
        assert path.read_bytes() == b"previous contents"
        assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    else:
        assert list(tmp_path.iterdir()) == []


def test_written_file_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        _write_sample(tmp_path / "m.bin")
    finally:
        os.umask(old)
    assert (tmp_path / "m.bin").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (dict(n_vocab=0), ModelFormatError, "n_vocab"),
        (dict(n_layer=1 << 30), ModelFormatError, "n_layer"),
        (dict(version=102), ModelFormatError, "version"),
        (dict(data_type=5), ModelFormatError, "Q4_2"),
        (dict(data_type=DType.Q5_1, version=100), ModelFormatError, "pre-2023"),
        (dict(version=100), ModelFormatError, "version 101"),  # the sample has quantized tensors
        (dict(tensors=[("a", np.zeros(3))]), DTypeError, "float64"),
        (dict(tensors=[("a", np.zeros((1, 1, 1, 1), np.float32))]), ModelFormatError, "4 dimensions"),
        (dict(tensors=[("a", np.zeros(0, np.float32))]), ModelFormatError, "positive"),
        (dict(tensors=[("a", np.float32(1.0))]), ModelFormatError, "0 dimensions"),
        (dict(tensors=[("", np.zeros(1, np.float32))]), ModelFormatError, "name"),
        (dict(tensors=[("x" * 1025, np.zeros(1, np.float32))]), ModelFormatError, "name"),
        (dict(tensors=[("bad\udc80", np.zeros(1, np.float32))]), ModelFormatError, "name"),
        (
            dict(tensors=[("a", np.zeros(1, np.float32)), ("a", np.zeros(1, np.float32))]),
            ModelFormatError,
            "duplicate",
        ),
        (dict(tensors=[("a", DType.Q4_0, (48,), b"\0" * 36)]), ModelFormatError, "multiple"),
        (dict(tensors=[("a", DType.Q4_0, (32,), b"\0" * 17)]), ModelFormatError, "18 bytes"),
        (dict(tensors=[("a", 12, (32,), b"\0" * 18)]), ModelFormatError, "Q3_K"),
        (dict(tensors=[("a", DType.F32, (2,), "text")]), ModelFormatError, "bytes"),
        (dict(tensors=[("a",)]), ModelFormatError, "tuple of 1"),
        (dict(tensors=["a"]), ModelFormatError, "str"),
    ],
)
def test_write_rejects(tmp_path: Path, overrides: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        _write_sample(tmp_path / "bad.bin", **overrides)
    assert list(tmp_path.iterdir()) == []


def test_write_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelIOError, match="no_such_dir"):
        _write_sample(tmp_path / "no_such_dir" / "m.bin")


# --- reading bad files --------------------------------------------------------------------------


def test_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ModelIOError, match="absent.bin"):
        read_model_file(tmp_path / "absent.bin")
    with pytest.raises(ModelIOError, match="not a regular file"):
        read_model_file(tmp_path)


def _header(
    magic: int = FILE_MAGIC,
    version: int = 101,
    n_vocab: int = 256,
    n_embed: int = 32,
    n_layer: int = 2,
    data_type: int = 0,
) -> bytes:
    return struct.pack("<6I", magic, version, n_vocab, n_embed, n_layer, data_type)


def _record(
    name: bytes | str = b"t",
    type_id: int = 0,
    ne: tuple[int, ...] = (4,),
    data: bytes | None = None,
    dim_count: int | None = None,
    key_length: int | None = None,
) -> bytes:
    """Pack a record with any field overridable, valid or not."""
    key = name.encode() if isinstance(name, str) else name
    if data is None:
        try:
            data = b"\x01" * tensor_nbytes(DType(type_id), ne)
        except (ValueError, ModelFormatError):
            data = b""
    head = struct.pack(
        "<3i",
        len(ne) if dim_count is None else dim_count,
        len(key) if key_length is None else key_length,
        type_id,
    )
    return head + struct.pack(f"<{len(ne)}i", *ne) + key + data


def _expect_format_error(path: Path, content: bytes, *fragments: str) -> None:
    path.write_bytes(content)
    with pytest.raises(ModelFormatError) as info:
        read_model_file(path)
    message = str(info.value)
    assert path.name in message
    for fragment in fragments:
        assert fragment in message, message


CORRUPT_CASES = {
    # header
    "empty": (b"", ["shorter than the 24-byte header"]),
    "short header": (_header()[:23], ["23 bytes"]),
    "bad magic": (_header(magic=0x6C6D6767) + _record(), ["67 67 6D 6C"]),
    "version 99": (_header(version=99) + _record(), ["version 99"]),
    "version 102": (_header(version=102) + _record(), ["version 102"]),
    "n_vocab 0": (_header(n_vocab=0) + _record(), ["n_vocab is 0"]),
    "n_vocab huge": (_header(n_vocab=0xFFFFFFFF) + _record(), ["n_vocab", "sanity"]),
    "n_embed 0": (_header(n_embed=0) + _record(), ["n_embed is 0"]),
    "n_embed huge": (_header(n_embed=1 << 28) + _record(), ["n_embed"]),
    "n_layer 0": (_header(n_layer=0) + _record(), ["n_layer is 0"]),
    "n_layer huge": (_header(n_layer=1 << 31) + _record(), ["n_layer"]),
    "header type removed": (_header(data_type=4) + _record(), ["Q4_1_O", "re-quantize"]),
    "header type K-quant": (_header(data_type=11) + _record(), ["Q2_K"]),
    "header type unknown": (_header(data_type=77) + _record(), ["unknown type id 77"]),
    "quantized v100 header": (_header(version=100, data_type=8) + _record(), ["re-quantize"]),
    # record fields
    "dim_count 0": (_header() + _record(dim_count=0), ["record #0", "dim_count is 0"]),
    "dim_count 4": (_header() + _record(dim_count=4), ["dim_count is 4"]),
    "dim_count negative": (_header() + _record(dim_count=-1), ["dim_count is -1"]),
    "key_length 0": (_header() + _record(key_length=0), ["name length is 0"]),
    "key_length negative": (_header() + _record(key_length=-3), ["name length is -3"]),
    "key_length huge": (_header() + _record(key_length=1 << 30), ["name length"]),
    "name not utf-8": (_header() + _record(name=b"bad\xff\xfe"), ["UTF-8"]),
    "type removed": (_header() + _record(type_id=5), ["'t'", "Q4_2"]),
    "type Q8_1": (_header() + _record(type_id=10), ["Q8_1"]),
    "type K-quant": (_header() + _record(type_id=16), ["Q8_K"]),
    "type unknown": (_header() + _record(type_id=999), ["unknown type id 999"]),
    "type negative": (_header() + _record(type_id=-1), ["unknown type id -1"]),
    "ne zero": (_header() + _record(ne=(4, 0)), ["ne[1] = 0"]),
    "ne negative": (_header() + _record(ne=(-4,)), ["ne[0] = -4"]),
    "ne huge": (_header() + _record(ne=(0x7FFFFFFF, 0x7FFFFFFF, 2)), ["2**40"]),
    "ne past eof": (_header() + _record(ne=(1 << 20,), data=b"\0" * 16), ["needs", "more bytes"]),
    "quantized ne0": (_header() + _record(type_id=8, ne=(48, 2), data=b"\0" * 72), ["Q5_1", "ne[0] = 48"]),
    "quantized in v100 file": (_header(version=100) + _record(type_id=9, ne=(32,)), ["re-quantize"]),
    "duplicate name": (
        _header() + _record(name="a") + _record(name="b") + _record(name="a"),
        ["#2", "'a'", "duplicate"],
    ),
    "garbage after records": (_header() + _record() + b"\x07\x00", ["record #1", "inside the record header"]),
}


@pytest.mark.parametrize("case", list(CORRUPT_CASES))
def test_corrupt_file(tmp_path: Path, case: str) -> None:
    content, fragments = CORRUPT_CASES[case]
    _expect_format_error(tmp_path / "corrupt.bin", content, *fragments)


def test_hand_built_file_is_valid(tmp_path: Path) -> None:
    """Control for the corruption suite: the same builders without a defect parse fine."""
    path = tmp_path / "ok.bin"
    path.write_bytes(
        _header(version=100)
        + _record(name="a", ne=(4, 2))
        + _record(name="b", type_id=1, ne=(3,))
        + _record(name="é", ne=(1, 1, 1))
    )
    model = read_model_file(path)
    assert [(r.name, r.dtype, r.ne) for r in model.tensors.values()] == [
        ("a", DType.F32, (4, 2)),
        ("b", DType.F16, (3,)),
        ("é", DType.F32, (1, 1, 1)),
    ]
    path.write_bytes(_header())
    assert read_model_file(path).tensors == {}  # header only: valid, architecture checks come later


def _truncation_points(model: ModelFile) -> dict[str, int]:
    """Cut points inside every part of a file: header, record header, sizes, name, data."""
    records = list(model.tensors.values())
    first, last = records[0], records[-1]
    first_start = 24
    last_start = last.offset - (12 + 4 * len(last.ne) + len(last.name.encode()))
    return {
        "inside magic": 2,
        "inside header": 13,
        "header minus one": 23,
        "inside first record header": first_start + 5,
        "first record header complete": first_start + 12,
        "inside first ne": first_start + 14,
        "inside first name": first.offset - 1,
        "first data missing": first.offset,
        "inside first data": first.offset + first.nbytes // 2,
        "first data one short": first.offset + first.nbytes - 1,
        "inside last record header": last_start + 8,
        "inside last name": last.offset - 2,
        "inside last data": last.offset + 1,
        "one byte short": model.file_size - 1,
    }


@pytest.mark.parametrize("source", ["tiny", "written"])
def test_truncation(tmp_path: Path, source: str) -> None:
    if source == "tiny":
        content = tiny_path("tiny-rwkv-5v2-730K-Q5_1.bin").read_bytes()
    else:
        _write_sample(tmp_path / "src.bin")
        content = (tmp_path / "src.bin").read_bytes()
    (tmp_path / "whole.bin").write_bytes(content)
    model = read_model_file(tmp_path / "whole.bin")
    points = _truncation_points(model)
    assert len(set(points.values())) == len(points) >= 12
    for label, cut in points.items():
        path = tmp_path / "cut.bin"
        path.write_bytes(content[:cut])
        with pytest.raises(ModelFormatError) as info:
            read_model_file(path)
        message = str(info.value)
        assert "cut.bin" in message, label
        if cut >= 24:
            assert f"file ends at byte {cut}" in message, (label, message)


def test_every_truncation_of_small_file(tmp_path: Path) -> None:
    """Every prefix of a small file either ends on a record boundary (and parses to that many
    tensors) or raises ModelFormatError; no other outcome is allowed."""
    _write_sample(tmp_path / "src.bin")
    content = (tmp_path / "src.bin").read_bytes()
    model = read_model_file(tmp_path / "src.bin")
    boundaries = {24: 0}
    for i, record in enumerate(model.tensors.values()):
        boundaries[record.offset + record.nbytes] = i + 1
    path = tmp_path / "cut.bin"
    for cut in range(len(content) + 1):
        path.write_bytes(content[:cut])
        if cut in boundaries:
            assert len(read_model_file(path).tensors) == boundaries[cut]
        else:
            with pytest.raises(ModelFormatError):
                read_model_file(path)


def test_random_corruption_never_crashes(tmp_path: Path) -> None:
    """Byte flips in headers and records give a valid parse or ModelFormatError, nothing else."""
    _write_sample(tmp_path / "src.bin")
    content = (tmp_path / "src.bin").read_bytes()
    model = read_model_file(tmp_path / "src.bin")
    # Mutate structural bytes only: flipping data bytes trivially still parses.
    structural = list(range(24))
    pos = 24
    for record in model.tensors.values():
        structural.extend(range(pos, record.offset))
        pos = record.offset + record.nbytes
    rng = np.random.default_rng(7)
    path = tmp_path / "fuzz.bin"
    outcomes = Counter()
    for _ in range(400):
        mutated = bytearray(content)
        for index in rng.choice(structural, size=int(rng.integers(1, 4)), replace=False):
            mutated[index] = int(rng.integers(0, 256))
        path.write_bytes(bytes(mutated))
        try:
            read_model_file(path)
            outcomes["parsed"] += 1
        except ModelFormatError:
            outcomes["rejected"] += 1
    assert outcomes["rejected"] > 200
