"""Regression tests for what the fuzzer (fuzz/) found: each builds its reproducer from a tiny model
in a few lines (no binary inputs are committed) and runs it through the fuzz target that found it.

A test marked ``xfail(strict=True)`` is a defect found in a module another change owns: it documents
the reproducer and fails loudly (XPASS) once that module is fixed, when its marker must be removed.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import tiny_path

from fuzz import corpus, harness, targets
from rwkv_ggml.fileformat import DType, read_model_file, write_model_file


def assert_no_finding(target: harness.Target, data: bytes) -> None:
    finding = harness.check(target, data)
    assert finding is None, finding.detail if finding else ""


@pytest.fixture(scope="module")
def shrunk_v4(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A complete one-layer v4 model (the fuzzer's seed)."""
    src = tiny_path("tiny-rwkv-4v0-660K-FP32.bin")
    return corpus.shrink(src, tmp_path_factory.mktemp("seed") / "v4.bin")


def tensors_of(path: pathlib.Path) -> Iterator[tuple[str, DType, tuple[int, ...], bytes]]:
    with read_model_file(path) as mf:
        for name, rec in mf.tensors.items():
            yield name, rec.dtype, rec.ne, np.asarray(mf.array(name)).tobytes()


def model_bytes(
    tmp_path: pathlib.Path, seed: pathlib.Path, extra: list[tuple[str, DType, tuple[int, ...], bytes]]
) -> bytes:
    """The seed model's bytes with ``extra`` tensor records appended."""
    with read_model_file(seed) as mf:
        n_vocab, n_embed, n_layer, data_type = mf.n_vocab, mf.n_embed, mf.n_layer, mf.data_type
    out = tmp_path / "model.bin"
    write_model_file(
        out,
        n_vocab=n_vocab,
        n_embed=n_embed,
        n_layer=n_layer,
        data_type=data_type,
        tensors=[*tensors_of(seed), *extra],
    )
    return out.read_bytes()


def many_records(count: int) -> bytes:
    """A v101 header and ``count`` one-element F32 records (25 bytes each)."""
    import struct

    from rwkv_ggml.fileformat import FILE_MAGIC

    record = struct.pack("<3ii", 1, 8, 0, 1)
    return struct.pack("<6I", FILE_MAGIC, 101, 8, 64, 1, 0) + b"".join(
        record + b"t%07d" % i + b"\0\0\0\0" for i in range(count)
    )


def test_bin_record_count_is_bounded(tmp_path: pathlib.Path) -> None:
    """Found by review while fuzzing (the fuzzer's inputs are too small to show it): every record costs
    ~200 bytes of parsed objects, so a 27 MB file of 1-element records took 220 MB and 7 s to parse
    before any model check, and memory grew without bound with the file."""
    from rwkv_ggml.errors import ModelFormatError
    from rwkv_ggml.fileformat import MAX_N_TENSORS

    path = tmp_path / "many.bin"
    path.write_bytes(many_records(MAX_N_TENSORS))
    with read_model_file(path) as mf:  # the limit itself is fine
        assert len(mf.tensors) == MAX_N_TENSORS
    path.write_bytes(many_records(MAX_N_TENSORS + 1))
    with pytest.raises(ModelFormatError, match=f"more than {MAX_N_TENSORS} tensor records"):
        read_model_file(path)


def test_bin_writer_refuses_what_the_reader_would(tmp_path: pathlib.Path) -> None:
    from rwkv_ggml.errors import ModelFormatError
    from rwkv_ggml.fileformat import MAX_N_TENSORS

    one = np.zeros(1, np.float32)
    with pytest.raises(ModelFormatError, match="more than"):
        write_model_file(
            tmp_path / "m.bin",
            n_vocab=8,
            n_embed=64,
            n_layer=1,
            data_type=DType.F32,
            tensors=((f"t{i}", one) for i in range(MAX_N_TENSORS + 1)),
        )
    assert not (tmp_path / "m.bin").exists()


def test_bin_layer_index_with_a_superscript_digit(tmp_path: pathlib.Path, shrunk_v4: pathlib.Path) -> None:
    """Found by the bin target: an extra tensor named 'blocks.\u00b2.x' (valid UTF-8 name)."""
    data = model_bytes(tmp_path, shrunk_v4, [("blocks.\u00b2.x", DType.F32, (1,), b"\0" * 4)])
    assert_no_finding(targets.fuzz_bin, data)


@pytest.mark.parametrize("model", ["tiny-rwkv-4v0-660K-Q5_1.bin", "tiny-rwkv-5v2-730K-Q5_1.bin"])
def test_bin_header_n_layer_far_above_the_tensors(tmp_path: pathlib.Path, model: str) -> None:
    """Found by the bin target (a timeout): one header field changed in a one-layer model."""
    import struct
    import tracemalloc

    from rwkv_ggml.arch import validate
    from rwkv_ggml.errors import ModelFormatError

    data = bytearray(corpus.shrink(tiny_path(model), tmp_path / "seed.bin").read_bytes())
    # n_layer: the fuzzer's input had 55254 (the container allows 65535); 2048 shows the same, cheaper
    struct.pack_into("<I", data, 16, 2048)
    (tmp_path / "deep.bin").write_bytes(bytes(data))
    with read_model_file(tmp_path / "deep.bin") as mf:
        tracemalloc.start()
        try:
            with pytest.raises(ModelFormatError):
                validate(mf)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # Refusing a 30 KB file needs a few KB of bookkeeping, not tens of MB (hundreds at 65535 layers).
    assert peak < 2 << 20, f"refusing it allocated {peak >> 20} MiB"


def test_safetensors_v5_time_decay_of_zero_size(tmp_path: pathlib.Path) -> None:
    """Found by the safetensors target: the seed checkpoint with one shape changed to [0]."""
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    seed = corpus.shrink(tiny_path("tiny-rwkv-5v1-730K-FP32.bin"), tmp_path / "seed.bin")
    with read_model_file(seed) as mf:
        tensors = dict(corpus.official_tensors(mf, "5.1"))
    tensors["blocks.0.att.time_decay"] = np.zeros((0,), np.float32)
    safetensors_numpy.save_file(tensors, str(tmp_path / "model.safetensors"))
    assert_no_finding(targets.fuzz_safetensors, (tmp_path / "model.safetensors").read_bytes())


@pytest.mark.parametrize("placement", ["hugepage", "mmap"])
def test_weights_read_after_release_is_a_closed_error(placement: str) -> None:
    """Not a fuzzer finding (mypy's, while fixing the reader): a released WeightStore raised a bare
    TypeError (np.frombuffer(None)) for the tensors it had copied, ClosedError for the mapped ones."""
    from rwkv_ggml.errors import ClosedError
    from rwkv_ggml.weights import WeightStore

    store = WeightStore(read_model_file(tiny_path("tiny-rwkv-4v0-660K-Q5_1.bin")), placement)
    assert store.raw("blocks.0.ln1.weight").shape == (128,)
    store.close()
    with pytest.raises(ClosedError):
        store.raw("blocks.0.ln1.weight")


def test_pth_corrupt_deflate_stream() -> None:
    """Found by the pth target: a compressed member whose deflate stream is damaged."""
    import io
    import pickle
    import struct
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({}, protocol=2) * 50)
    data = bytearray(buf.getvalue())
    name_length, extra_length = struct.unpack_from("<HH", data, 26)
    start = 30 + name_length + extra_length  # the member's data follows its local header
    data[start : start + 5] = b"\x00\x05\x00\x00\x00"  # a stored block whose LEN and NLEN disagree
    assert_no_finding(targets.fuzz_pth, bytes(data))


def test_pth_pickle_declaring_a_huge_bytes_object() -> None:
    """Found by the pth target (structure-aware mutator): one BINBYTES8 length field in data.pkl."""
    import io
    import struct
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"x.")
    assert_no_finding(targets.fuzz_pth, buf.getvalue())


def test_pth_pickle_memo_index_sizes_the_memo_table() -> None:
    """Found by the pth target (an out-of-memory): one LONG_BINPUT index in data.pkl."""
    import io
    import struct
    import tracemalloc
    import zipfile

    from rwkv_ggml.errors import ModelFormatError

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}r" + struct.pack("<I", 1 << 22) + b".")
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError):
            targets.fuzz_pth(buf.getvalue())  # a pickle of an empty dict: no tensors
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"reading a 139-byte checkpoint allocated {peak >> 20} MiB"
