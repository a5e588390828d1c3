"""GGUF files (formats.md §7): the reader, the RWKV-6/RWKV-7 mapping, the vocabulary, hostile files.

The GGUF files are written here with the ``gguf`` package (the test extra) in the layout llama.cpp's
converter produces (formats.md §7.3): the tiny rwkv.cpp models and a random RWKV-7 model, rewritten
tensor by tensor. Loading one must give the logits of the same weights loaded from the ``.bin``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import run_cli, tiny_path

from rwkv_ggml import Model
from rwkv_ggml.errors import ModelFormatError, ModelIOError, UnsupportedError
from rwkv_ggml.fileformat import DType, read_model_file, write_model_file
from rwkv_ggml.gguf_format import read_gguf
from rwkv_ggml.gguf_model import read_gguf_model, unescape_token, vocab_table
from rwkv_ggml.quantization import quantize
from rwkv_ggml.tokenizer.base import WORLD_VOCAB_FILE
from rwkv_ggml.tokenizer.world import WorldTokenizer, parse_world_vocab
from tests.engine.test_kquant_engine import dequantize_np
from tests.reference.gguf_files import block_of, write_gguf
from tests.reference.kquant_ref import quantize_k
from tests.reference.random_models import write_random_model

gguf = pytest.importorskip("gguf")

TOKENS = [1, 17, 200, 3, 255, 0, 42]


def _logits(path: Path, **kw: Any) -> np.ndarray:
    with Model(path, threads=1, **kw) as model:
        logits, state = model.eval(TOKENS[0])
        rows = [logits.copy()]
        for t in TOKENS[1:]:
            logits, state = model.eval(t, state)
            rows.append(logits.copy())
        seq, _ = model.eval_sequence(TOKENS)
        rows.append(np.asarray(seq).reshape(-1))
    return np.concatenate([r.reshape(-1) for r in rows])


# ---- the RWKV-6 / RWKV-7 mapping: the same logits as the .bin ----


@pytest.mark.parametrize("placement", ["hugepage", "mmap"])
@pytest.mark.parametrize(
    "stem", ["tiny-rwkv-7v0-834K-FP32", "tiny-rwkv-7v0-834K-FP16", "tiny-rwkv-7v0-834K-Q5_1"]
)
def test_v7_gguf_same_logits_as_bin(tmp_path: Path, stem: str, placement: str) -> None:
    src = tiny_path(stem + ".bin")
    out = write_gguf(src, tmp_path / "m.gguf")
    np.testing.assert_array_equal(_logits(out, placement=placement), _logits(src, placement=placement))


@pytest.mark.parametrize("stem", ["tiny-rwkv-6v0-3m-Q5_0", "tiny-rwkv-6v0-3m-Q5_1"])
@pytest.mark.parametrize("fused", [True, False])
def test_v6_gguf_same_logits_as_bin(tmp_path: Path, stem: str, fused: bool) -> None:
    src = tiny_path(stem + ".bin")
    out = write_gguf(src, tmp_path / "m.gguf", fused_v6_mix=fused)
    np.testing.assert_array_equal(_logits(out), _logits(src))


@pytest.mark.parametrize("stem", ["tiny-rwkv-6v0-3m-Q5_0", "tiny-rwkv-6v0-3m-Q5_1"])
def test_v6_rescaled_conversion_is_undone(tmp_path: Path, stem: str) -> None:
    """The converter divided att.output/ffn.value of layer i by 2**(i // 3): the loader multiplies
    back (the block scales, exactly), so the logits are those of the trained weights."""
    src = tiny_path(stem + ".bin")
    out = write_gguf(src, tmp_path / "m.gguf", rescale_every=3)
    np.testing.assert_array_equal(_logits(out, placement="mmap"), _logits(src))
    with read_gguf_model(out) as mf:
        assert "blocks.11.att.output.weight" in mf.held and "blocks.0.att.output.weight" not in mf.held


@pytest.mark.parametrize("fmt", ["Q8_0", "Q4_0", "Q4_1", "Q5_0"])
def test_quantized_blocks_used_in_place(tmp_path: Path, fmt: str) -> None:
    """Q8_0/Q4_0/...: the very blocks of the .bin, read from the GGUF file without a copy into memory."""
    q = tmp_path / f"q-{fmt}.bin"
    quantize(tiny_path("tiny-rwkv-7v0-834K-FP32.bin"), q, fmt, threads=1, progress=False)
    out = write_gguf(q, tmp_path / "q.gguf")
    np.testing.assert_array_equal(_logits(out), _logits(q))
    with read_gguf_model(out) as mf:
        assert mf.held == {}
        assert mf.tensors["blocks.3.att.key.weight"].dtype == DType.from_name(fmt)


def test_bf16_widened_to_f32(tmp_path: Path) -> None:
    """BF16 matrices load as F32 (the engine has no BF16): the logits of the bf16-rounded weights."""
    src = tiny_path("tiny-rwkv-7v0-834K-FP32.bin")
    out = write_gguf(src, tmp_path / "b.gguf", bf16=True)
    rounded = tmp_path / "rounded.bin"
    with read_model_file(src) as mf:
        items = []
        for name, rec in mf.tensors.items():
            arr = np.array(mf.array(name))
            if (
                len(rec.ne) >= 2 and block_of(name) and "x_rwkvag" not in name and "r_k" not in name
            ) or name in ("emb.weight", "head.weight"):
                arr = ((arr.view(np.uint32) >> 16) << 16).view(np.float32)
            items.append((name, arr))
        write_model_file(
            rounded, n_vocab=mf.n_vocab, n_embed=mf.n_embed, n_layer=mf.n_layer, data_type=0, tensors=items
        )
    np.testing.assert_allclose(_logits(out), _logits(rounded), rtol=0, atol=1e-5)
    with read_gguf_model(out) as mf:
        assert any("BF16" in n for n in mf.notes)


def test_random_v7_model(tmp_path: Path) -> None:
    src = tmp_path / "r.bin"
    write_random_model(src, "7", 128, 3, 300, head_size=32, dtype="f16", seed=5)
    out = write_gguf(src, tmp_path / "r.gguf")
    np.testing.assert_array_equal(_logits(out), _logits(src))
    with Model(out, threads=1) as model:
        assert (model.version, model.n_vocab, model.n_embed, model.n_layer) == ("7", 300, 128, 3)
        assert model.hparams.head_size == 32


# ---- the vocabulary ----


def _converter_tokens(table: list[bytes]) -> list[str]:
    """Token texts as llama.cpp's converter writes the World vocabulary: "<s>", then repr of the bytes."""
    return ["<s>"] + [repr(b)[2:-1] for b in table[1:] if b]


def test_world_vocabulary_from_gguf_equals_world_tokenizer(tmp_path: Path) -> None:
    world = parse_world_vocab(WORLD_VOCAB_FILE, 65536)
    n = 1 + sum(1 for b in world[1:] if b)
    assert world[n:] == [b""] * (65536 - n)  # the ids the converter writes are 0..n-1
    w = gguf.GGUFWriter(str(tmp_path / "v.gguf"), "rwkv7")
    w.add_tokenizer_model("rwkv")
    # as the converter pads the list to the embedding's 65536 rows: "[PAD<i>]" tokens of type 5 (unused)
    w.add_token_list(_converter_tokens(world) + [f"[PAD{i}]" for i in range(n, 65536)])
    w.add_token_types([3] + [1] * (n - 1) + [5] * (65536 - n))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with read_gguf(tmp_path / "v.gguf") as gf:
        table = vocab_table(gf, 65536)
    assert table == world
    ours, theirs = WorldTokenizer.from_table(table, "v.gguf"), WorldTokenizer()
    text = "Hello, world! \n\t'quotes\" ünïcödé 中文 \\x41 🙂 [PAD65530]"
    assert ours.encode(text) == theirs.encode(text)
    assert ours.decode(theirs.encode(text)) == text


@pytest.mark.parametrize("text", ["abc", "\\x00\\xff", "\\t\\n\\r\\\\\\'\"", "é"])
def test_unescape_token_inverts_repr(text: str) -> None:
    data = eval("b'" + text.replace("é", "\\xc3\\xa9") + "'")  # a literal the test wrote
    assert unescape_token(repr(data)[2:-1]) == data


def test_gguf_alone_generates_text_with_its_vocabulary(tmp_path: Path) -> None:
    """The tokenizer comes from the file: 256 single-byte tokens but in reverse order."""
    table = [b""] + [bytes([255 - i]) for i in range(255)]
    out = write_gguf(
        tiny_path("tiny-rwkv-7v0-834K-FP32.bin"), tmp_path / "t.gguf", tokens=_converter_tokens(table)
    )
    with Model(out, threads=1) as model:
        assert model.tokenize("ab") == [256 - ord("a"), 256 - ord("b")]  # byte b is token 256 - b
        assert model.detokenize([256 - ord("z"), 256 - ord("y")]) == "zy"
        gen = model.generate("ab", max_tokens=4, temperature=0)
        text = "".join(gen)
        assert text == gen.text and 0 < len(text) <= 4
    info = run_cli("info", str(out))
    assert info.returncode == 0, info.stderr
    assert "rwkv7.wkv.head_size" in info.stdout and "tokenizer.ggml.tokens" in info.stdout
    gen = run_cli("generate", "-m", str(out), "ab", "--max-tokens", "3", "--temperature", "0")
    assert gen.returncode == 0, gen.stderr


# ---- refused architectures and types ----


@pytest.mark.parametrize("arch", ["rwkv6qwen2", "arwkv7"])
def test_hybrids_not_supported(tmp_path: Path, arch: str) -> None:
    w = gguf.GGUFWriter(str(tmp_path / "h.gguf"), arch)
    w.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedError, match=f"{arch}.*not supported"):
        Model(tmp_path / "h.gguf")


def test_other_tensor_type_named(tmp_path: Path) -> None:
    """A Q2_K matrix (a type the engine has no kernels for): refused naming tensor and type."""
    w = gguf.GGUFWriter(str(tmp_path / "k2.gguf"), "rwkv7")
    w.add_embedding_length(256)
    w.add_block_count(1)
    w.add_wkv_head_size(64)
    w.add_tensor("token_embd.weight", np.zeros((4, 84), np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q2_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedError, match="'token_embd.weight' is Q2_K"):
        Model(tmp_path / "k2.gguf")


# ---- hostile files ----


def _gguf_bytes(tmp_path: Path) -> bytes:
    return write_gguf(tiny_path("tiny-rwkv-7v0-834K-Q5_0.bin"), tmp_path / "base.gguf").read_bytes()


def _header(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


HOSTILE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    # not GGUF by its magic: the .bin reader answers
    "wrong magic": (lambda b: b"GGUX" + b[4:], "not an rwkv.cpp model file"),
    "version 1": (lambda b: b[:4] + struct.pack("<I", 1) + b[8:], "unsupported GGUF version 1"),
    "version 99": (lambda b: b[:4] + struct.pack("<I", 99) + b[8:], "unsupported GGUF version 99"),
    "absurd tensor count": (lambda b: b[:8] + struct.pack("<Q", 1 << 60) + b[16:], "tensor count"),
    "tensor count past the file": (lambda b: b[:8] + struct.pack("<Q", 60000) + b[16:], "tensor count"),
    "absurd metadata count": (lambda b: b[:16] + struct.pack("<Q", 1 << 62) + b[24:], "metadata count"),
    "truncated": (lambda b: b[: len(b) // 2], "past the end of the file|file ends"),
    "huge key": (lambda b: _header(0, 1) + struct.pack("<Q", 1 << 40) + bytes(16), "above the limit"),
    "unterminated string": (
        lambda b: _header(0, 1) + _string(b"k") + struct.pack("<IQ", 8, 1000) + b"ab",
        "file ends",
    ),
    "bad utf-8": (lambda b: _header(0, 1) + _string(b"\xff\xfe") + struct.pack("<IB", 0, 1), "UTF-8"),
    "unknown value type": (
        lambda b: _header(0, 1) + _string(b"k") + struct.pack("<I", 13) + bytes(8),
        "value type 13",
    ),
    "huge array": (
        lambda b: _header(0, 1) + _string(b"k") + struct.pack("<IIQ", 9, 4, 1 << 40) + bytes(16),
        "array length",
    ),
    "array past the file": (
        lambda b: _header(0, 1) + _string(b"k") + struct.pack("<IIQ", 9, 10, 1000) + bytes(16),
        "array length",
    ),
    "deeply nested array": (
        lambda b: (
            _header(0, 1)
            + _string(b"k")
            + struct.pack("<IIQ", 9, 9, 1)
            + struct.pack("<IQ", 9, 1) * 3
            + bytes(32)
        ),
        "nested",
    ),
    "bad alignment": (
        lambda b: _header(0, 1) + _string(b"general.alignment") + struct.pack("<II", 4, 24),
        "power of two",
    ),
}


def _tensor_file(ne: tuple[int, ...], type_id: int, offset: int, data: int, extra: bytes = b"") -> bytes:
    info = _string(b"t") + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
    info += struct.pack("<IQ", type_id, offset)
    head = _header(1 + bool(extra), 0) + info + extra
    head += bytes(-len(head) % 32)
    return head + bytes(data)


TENSOR_CASES = {
    "too many dims": (_tensor_file((1, 1, 1, 1, 1), 0, 0, 4), "dimensions"),
    "zero size": (_tensor_file((0, 4), 0, 0, 0), "every size"),
    "absurd size": (_tensor_file((1 << 30, 1 << 30), 0, 0, 4), "more than the limit"),
    "unknown type": (_tensor_file((4,), 99, 0, 16), "unknown tensor type id 99"),
    "not a block multiple": (_tensor_file((33,), 8, 0, 64), "block size 32"),
    "misaligned": (_tensor_file((4,), 0, 4, 32), "not a multiple of the alignment"),
    "outside the file": (_tensor_file((4,), 0, 1 << 40, 16), "past the end"),
    "size does not fit": (_tensor_file((64,), 0, 0, 100), "past the end"),
    "overlapping": (
        _tensor_file((8,), 0, 0, 64, _string(b"u") + struct.pack("<IQIQ", 1, 8, 0, 0)),
        "overlap",
    ),
    "duplicate name": (
        _tensor_file((8,), 0, 0, 64, _string(b"t") + struct.pack("<IQIQ", 1, 8, 0, 32)),
        "duplicate tensor name",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_headers(tmp_path: Path, case: str) -> None:
    damage, message = HOSTILE[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(damage(_gguf_bytes(tmp_path)))
    with pytest.raises(ModelFormatError, match=message) as err:
        Model(path, threads=1)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("case", sorted(TENSOR_CASES))
def test_hostile_tensor_infos(tmp_path: Path, case: str) -> None:
    data, message = TENSOR_CASES[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(ModelFormatError, match=message) as err:
        read_gguf(path)
    assert str(path) in str(err.value)


def test_missing_metadata_and_tensors(tmp_path: Path) -> None:
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "rwkv7")
    w.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelFormatError, match="lacks 'rwkv7.block_count'"):
        Model(tmp_path / "m.gguf")
    src = tiny_path("tiny-rwkv-7v0-834K-FP32.bin")
    out = write_gguf(src, tmp_path / "w.gguf", extra=lambda w: None)
    raw = out.read_bytes().replace(b"blk.3.time_mix_k_k.weight", b"blk.3.time_mix_k_q.weight")
    (tmp_path / "w2.gguf").write_bytes(raw)
    with pytest.raises(ModelFormatError, match="missing tensor 'blocks.3.att.k_k'"):
        Model(tmp_path / "w2.gguf")


def test_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(ModelIOError):
        read_gguf(tmp_path)


def test_from_pretrained_uses_a_gguf_file_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GGUF file named in a hub repository is loaded as it is (no conversion into the cache)."""
    pytest.importorskip("huggingface_hub")
    from tests.formats.test_hub import REPO, HubCache, hub_constants

    cache = HubCache(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache.root))
    monkeypatch.setenv("RWKV_GGML_CACHE", str(tmp_path / "ours"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache.root))
    src = tiny_path("tiny-rwkv-7v0-834K-Q5_1.bin")
    made = write_gguf(src, tmp_path / "m.gguf")
    cache.add("rwkv7-q5_1.gguf", made.read_bytes())
    with Model.from_pretrained(REPO, "rwkv7-q5_1.gguf", threads=1) as model:
        assert model.path.endswith("rwkv7-q5_1.gguf") and model.version == "7"
    assert not (tmp_path / "ours").exists()


@pytest.mark.parametrize("stem", ["tiny-rwkv-7v0-834K-FP32", "tiny-rwkv-6v0-3m-Q5_1"])
def test_convert_gguf_to_bin(tmp_path: Path, stem: str) -> None:
    """`rwkv-ggml convert x.gguf y.bin`: blocks copied, float tensors as --dtype; the rescaling undone."""
    src = tiny_path(stem + ".bin")
    made = write_gguf(src, tmp_path / "m.gguf", rescale_every=4 if "6v0" in stem else 0)
    result = run_cli("convert", str(made), str(tmp_path / "back.bin"), "--dtype", "f32")
    assert result.returncode == 0, result.stderr
    with read_model_file(src) as a, read_model_file(tmp_path / "back.bin") as b:
        assert set(a.tensors) == set(b.tensors)
        for name, rec in a.tensors.items():
            assert (b.tensors[name].dtype, b.tensors[name].ne) == (rec.dtype, rec.ne), name
            np.testing.assert_array_equal(b.array(name), a.array(name), err_msg=name)
    q8 = run_cli("convert", str(made), str(tmp_path / "q8.bin"), "--dtype", "Q8_0")
    if "Q5_1" in stem:  # blocks cannot be quantized again: said so, nothing written
        assert q8.returncode == 1 and "already holds Q5_1 tensors" in q8.stderr
        assert not (tmp_path / "q8.bin").exists()
    else:
        assert q8.returncode == 0, q8.stderr
        with Model(tmp_path / "q8.bin", threads=1) as model:
            assert model.dtype == "Q8_0"


# ---- K-quants ----


def _kquant_files(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """A random RWKV-7 model whose matrices with ne[0] a multiple of 256 are ``kind`` blocks (quantized
    by tests/reference/kquant_ref), as a .bin of the blocks and a .bin of their decoded F32 values."""
    src = tmp_path / "r.bin"
    write_random_model(src, "7", 256, 2, 300, head_size=64, seed=9)
    target = DType.from_name(kind)
    blocks, decoded = [], []
    with read_model_file(src) as mf:
        for name, rec in mf.tensors.items():
            arr = np.array(mf.array(name), dtype=np.float32)
            if len(rec.ne) == 2 and rec.ne[0] % 256 == 0 and name != "blocks.0.att.r_k":
                q = quantize_k(arr, kind)
                blocks.append((name, target, rec.ne, q))
                decoded.append((name, dequantize_np(kind, q).reshape(arr.shape)))
            else:
                blocks.append((name, arr))
                decoded.append((name, arr))
        header = {"n_vocab": mf.n_vocab, "n_embed": mf.n_embed, "n_layer": mf.n_layer}
    write_model_file(tmp_path / "k.bin", data_type=target, tensors=blocks, **header)
    write_model_file(tmp_path / "deq.bin", data_type=DType.F32, tensors=decoded, **header)
    return tmp_path / "k.bin", tmp_path / "deq.bin"


@pytest.mark.parametrize("kind", ["Q4_K", "Q5_K", "Q6_K"])
def test_kquant_gguf_model_end_to_end(tmp_path: Path, kind: str) -> None:
    """A GGUF file with K-quant matrices: the blocks are used in place (the logits of the same blocks in a
    .bin, bit for bit), and they are the logits of the decoded weights up to the 8-bit activation
    quantization of the integer products; perplexity on a token sequence within 1% of the decoded one."""
    kbin, deq = _kquant_files(tmp_path, kind)
    out = write_gguf(kbin, tmp_path / "k.gguf")
    got = _logits(out)
    np.testing.assert_array_equal(got, _logits(kbin))
    want = _logits(deq)
    assert np.max(np.abs(got - want)) <= 0.05 * np.max(np.abs(want))
    tokens = [int(t) for t in np.random.default_rng(3).integers(0, 300, 64)]
    with Model(out, threads=1) as a, Model(deq, threads=1) as b:
        assert a.dtype == kind and a.hparams.head_size == 64
        (_, ppl_k), (_, ppl_f) = a.perplexity(tokens), b.perplexity(tokens)
    print(f"{kind}: perplexity {ppl_k:.4f} vs decoded F32 {ppl_f:.4f}")
    assert abs(ppl_k - ppl_f) <= 0.01 * ppl_f


def test_kquant_rescaled_v6_scales(tmp_path: Path) -> None:
    """The v6 rescaling undone on K-quant blocks too: their f16 super-block scales (d, dmin) doubled."""
    from rwkv_ggml.gguf_model import _rescaled

    q = quantize_k(np.random.default_rng(1).standard_normal((2, 512)).astype(np.float32), "Q4_K")
    doubled = _rescaled(q.reshape(-1), DType.Q4_K, 2.0)
    assert doubled is not None
    np.testing.assert_array_equal(dequantize_np("Q4_K", doubled), 2 * dequantize_np("Q4_K", q))


def test_quantize_refuses_kquant_targets(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Q6_K is a K-quant rwkv_ggml reads but does not write"):
        quantize(tiny_path("tiny-rwkv-7v0-834K-FP32.bin"), tmp_path / "x.bin", "Q6_K", progress=False)
    assert not (tmp_path / "x.bin").exists()
