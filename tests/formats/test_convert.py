"""Tests of rwkv_ggml.conversion: official / Hugging Face checkpoints -> rwkv.cpp .bin.

How the checkpoints are made: random models in the rwkv.cpp file layout come from
``tests/reference/random_models.py``; :func:`official_from_bin` turns them back into *raw official*
checkpoints by inverting architecture.md's conversion column (v4 ``time_decay = log(-td)``,
v5 ``log(-log(td))``, un-transposing v6/v7 LoRA matrices, splitting v7 ``x_rwkvag``, ...). Every
converted file is then checked three ways:

1. element-wise against :func:`hand_preprocess`, the spec's conversion rules written out again
   here, applied to the raw checkpoint (so converter and test do not share code);
2. its FP16/FP32 choice per tensor against an explicit list of the FP16 tensors (formats.md §4.1);
3. its logits, through the float64 reference models, against the logits of the original
   random model (catches a layout mistake that both 1. and the converter might share).

Finally the shipped rwkv.cpp tiny models are turned back into raw checkpoints and converted:
the result must reproduce the files rwkv.cpp's own converter wrote.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from rwkv_ggml.conversion import convert, convert_state_dict, plan_conversion
from rwkv_ggml.errors import ModelFormatError, UnsupportedError
from rwkv_ggml.fileformat import read_model_file

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTDATA = REPO_ROOT / ".." / "shared" / "testdata" / "rwkv.cpp-tiny"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.reference.random_models import random_model_weights  # noqa: E402
from tests.reference.rwkv_ref import reference_model  # noqa: E402

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

C, L, V, N, F = 16, 2, 64, 4, 24
H = C // N
TOKENS = [3, 17, 42, 5]
VERSIONS = ["4", "5.1", "5.1-gated", "5.2", "6", "7"]
V7_ORDER = "rwkvag"
# A scrambled checkpoint order for v7's six mix vectors: the converter must not depend on it.
V7_SCRAMBLED = "gakrwv"

Arrays = dict[str, np.ndarray]


# ---------------------------------------------------------------------------------------------
# bin layout -> raw official checkpoint (inverse of the spec's conversion column)


def official_from_bin(version: str, weights: Mapping[str, np.ndarray]) -> Arrays:
    """Raw official float32 tensors (official names and shapes) that convert to ``weights``."""
    out: Arrays = {}
    f64 = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    for name, a in f64.items():
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
        suffix = m.group(2) if m else ""
        prefix = name[: len(name) - len(suffix)]
        if (
            suffix.startswith(("att.time_mix_", "ffn.time_mix_", "att.time_maa_", "ffn.time_maa_"))
            and a.ndim == 1
        ):
            out[name] = a.reshape(1, 1, -1)
        elif version == "4" and suffix == "att.time_decay":
            out[name] = np.log(-a)
        elif version.startswith("5") and suffix == "att.time_decay":
            raw = np.log(-np.log(a))
            out[name] = raw.reshape(-1) if version != "5.2" else raw.reshape(a.shape[0], a.shape[1])
        elif version.startswith("5") and suffix == "att.time_first":
            out[name] = np.log(a).reshape(-1)
        elif suffix == "att.time_faaaa":
            out[name] = a.reshape(a.shape[0], a.shape[1])
        elif version == "6" and suffix in ("att.time_maa_w1", "att.time_decay_w1", "att.time_decay_w2"):
            out[name] = a.T
        elif version == "6" and suffix == "att.time_maa_w2":
            out[name] = a.transpose(0, 2, 1)
        elif version == "6" and suffix == "att.time_decay":
            out[name] = a.reshape(1, 1, -1)
        elif version == "7" and suffix == "att.x_rwkvag":
            for c in V7_SCRAMBLED:
                out[f"{prefix}att.x_{c}"] = a[V7_ORDER.index(c)].reshape(1, 1, -1)
        elif version == "7" and re.fullmatch(r"att\.[wavg][12]", suffix):
            out[name] = a.T
        else:
            out[name] = a
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# The spec's conversion, written independently of rwkv_ggml.conversion


def hand_preprocess(version: str, raw: Mapping[str, np.ndarray]) -> Arrays:
    """architecture.md §3.1/§4.1/§5.1/§6.1 'rwkv.cpp conversion' applied to raw tensors (float64)."""
    out: Arrays = {}
    r = {k: np.asarray(v, dtype=np.float64) for k, v in raw.items()}
    heads = H
    for name, a in r.items():
        suffix = name.split(".", 2)[2] if name.startswith("blocks.") else name
        layer_prefix = name[: len(name) - len(suffix)]
        if version == "4":
            if suffix == "att.time_decay":
                out[name] = -np.exp(a)
            elif ".time_" in name:
                out[name] = np.squeeze(a)
            else:
                out[name] = a
        elif version.startswith("5"):
            if suffix == "att.time_decay":
                out[name] = np.exp(-np.exp(a)).reshape(heads, -1, 1)
            elif suffix == "att.time_first":
                out[name] = np.exp(a).reshape(heads, 1, 1)
            elif suffix == "att.time_faaaa":
                out[name] = a.reshape(heads, -1, 1)
            elif ".time_" in name:
                out[name] = np.squeeze(a)
            else:
                out[name] = a
        elif version == "6":
            if suffix in ("att.time_maa_w1", "att.time_decay_w1", "att.time_decay_w2"):
                out[name] = a.T
            elif suffix == "att.time_maa_w2":
                out[name] = np.swapaxes(a, 1, 2)
            elif suffix in ("att.time_decay", "att.time_faaaa"):
                out[name] = a.reshape(heads, -1, 1)
            elif ".time_" in name:
                out[name] = np.squeeze(a)
            else:
                out[name] = a
        else:
            if suffix.startswith("att.x_"):
                key = layer_prefix + "att.x_rwkvag"
                if key not in out:
                    out[key] = np.concatenate([r[f"{layer_prefix}att.x_{c}"] for c in V7_ORDER], axis=0)
            elif suffix in ("att.w1", "att.w2", "att.a1", "att.a2", "att.v1", "att.v2", "att.g1", "att.g2"):
                out[name] = a.T
            else:
                out[name] = a
    return out


def fp16_names(version: str, names: list[str]) -> set[str]:
    """The tensors an FP16 file stores as FP16, listed out (formats.md §4.1 table, right column)."""
    matrices = {"emb.weight", "head.weight"}
    suffixes = {
        "att.key.weight",
        "att.value.weight",
        "att.receptance.weight",
        "att.output.weight",
        "att.gate.weight",
        "ffn.key.weight",
        "ffn.value.weight",
        "ffn.receptance.weight",
    }
    if version == "7":
        suffixes |= {f"att.{p}{i}" for p in "wavg" for i in (1, 2)}
    return {n for n in names if n in matrices or (n.startswith("blocks.") and n.split(".", 2)[2] in suffixes)}


# ---------------------------------------------------------------------------------------------
# Writing checkpoints in the various layouts


def to_hf(name: str) -> str:
    """transformers' RWKV naming (convert_rwkv_checkpoint_to_hf.py), also used by HF v5/v6 models."""
    if name == "head.weight":
        return name
    if name.startswith("emb."):
        name = "embeddings." + name[len("emb.") :]
    name = name.replace("blocks.0.ln0.", "blocks.0.pre_ln.")
    name = re.sub(r"^blocks\.(\d+)\.att\.", r"blocks.\1.attention.", name)
    name = re.sub(r"^blocks\.(\d+)\.ffn\.", r"blocks.\1.feed_forward.", name)
    for short, long in (("k", "key"), ("v", "value"), ("r", "receptance"), ("g", "gate")):
        if name.endswith(".time_mix_" + short):
            name = name[: -len(short)] + long
    return "rwkv." + name


def to_fla(raw: Mapping[str, np.ndarray]) -> Arrays:
    """flash-linear-attention RWKV-7 naming: nn.Linear LoRA factors (transposed), flat vectors."""
    out: Arrays = {}
    renames = {"ln0": "pre_norm", "ln1": "attn_norm", "ln2": "ffn_norm"}
    proj = {"receptance": "r_proj", "key": "k_proj", "value": "v_proj", "output": "o_proj"}
    for name, a in raw.items():
        if name == "emb.weight":
            out["model.embeddings.weight"] = a
            continue
        if name.startswith("ln_out."):
            out["model.norm." + name.split(".")[1]] = a
            continue
        if name == "head.weight":
            out["lm_head.weight"] = a
            continue
        _, layer, rest = name.split(".", 2)
        p = f"model.layers.{layer}."
        part = rest.split(".")
        if part[0] in renames:
            out[p + renames[part[0]] + "." + part[1]] = a
        elif rest.startswith("att.") and part[1] in proj:
            out[p + f"attn.{proj[part[1]]}.weight"] = a
        elif rest.startswith("att.ln_x."):
            out[p + "attn.g_norm." + part[2]] = a
        elif re.fullmatch(r"att\.[wavg][012]", rest):
            which, idx = rest[4], rest[5]
            if idx == "0":
                out[p + f"attn.{which}_lora.lora.2.bias"] = a.reshape(-1)
            elif idx == "1":
                out[p + f"attn.{which}_lora.lora.0.weight"] = np.ascontiguousarray(a.T)
            else:
                out[p + f"attn.{which}_lora.lora.2.weight"] = np.ascontiguousarray(a.T)
        elif rest.startswith("att.x_") or rest in ("att.k_k", "att.k_a"):
            out[p + "attn." + rest[4:]] = a.reshape(-1) if rest in ("att.k_k", "att.k_a") else a
        elif rest.startswith("att."):
            out[p + "attn." + rest[4:]] = a
        else:  # ffn.x_k, ffn.key.weight, ffn.value.weight
            out[p + rest] = a
    return out


def save_pth(path: Path, tensors: Mapping[str, np.ndarray], dtype: object = None) -> None:
    sd = {}
    for k, v in tensors.items():
        t = torch.from_numpy(np.ascontiguousarray(v))
        sd[k] = t.to(dtype) if dtype is not None else t
    torch.save(sd, str(path))


def save_safetensors(path: Path, tensors: Mapping[str, np.ndarray], dtype: object = None) -> None:
    sd = {}
    for k, v in tensors.items():
        t = torch.from_numpy(np.ascontiguousarray(v))
        sd[k] = t.to(dtype) if dtype is not None else t
    safetensors_torch.save_file(sd, str(path))


def bf16_round(tensors: Mapping[str, np.ndarray]) -> Arrays:
    """The values a bf16 checkpoint actually holds (what the converter must see)."""
    return {
        k: torch.from_numpy(np.ascontiguousarray(v)).to(torch.bfloat16).float().numpy()
        for k, v in tensors.items()
    }


# ---------------------------------------------------------------------------------------------
# Checking a converted file


def read_back(path: Path) -> tuple[object, Arrays]:
    mf = read_model_file(path)
    with mf:
        arrays = {name: np.array(mf.array(name)) for name in mf.tensors}
    return mf, arrays


def check_file(path: Path, version: str, raw: Mapping[str, np.ndarray], dtype: str) -> Arrays:
    """Compare a converted file with the hand-preprocessed raw checkpoint; return its tensors."""
    mf, got = read_back(path)
    expected = hand_preprocess(version, raw)
    assert (mf.n_vocab, mf.n_embed, mf.n_layer) == (V, C, L)
    assert mf.data_type == (1 if dtype == "f16" else 0)
    assert mf.version == 101
    assert set(got) == set(expected), set(got) ^ set(expected)
    half = fp16_names(version, list(expected)) if dtype == "f16" else set()
    for name, want in expected.items():
        have = got[name]
        assert have.shape == want.shape, (name, have.shape, want.shape)
        assert have.dtype == (np.float16 if name in half else np.float32), (name, have.dtype)
        if have.dtype == np.float16:
            # FP16 tensors are plain copies/transposes: exactly the f32 value rounded once to half.
            np.testing.assert_array_equal(have, want.astype(np.float32).astype(np.float16), err_msg=name)
        else:
            np.testing.assert_allclose(have, want, rtol=2e-6, atol=1e-7, err_msg=name)
    return got


def assert_same_logits(
    version: str, converted: Arrays, original: Mapping[str, np.ndarray], atol: float
) -> None:
    ref_conv = reference_model(converted, L)
    ref_orig = reference_model(original, L)
    state_a, state_b = ref_conv.init_state(), ref_orig.init_state()
    for token in TOKENS:
        logits_a, state_a = ref_conv.eval(token, state_a)
        logits_b, state_b = ref_orig.eval(token, state_b)
        err = np.max(np.abs(logits_a - logits_b))
        assert err <= atol, f"v{version} token {token}: max |Δlogit| = {err:g}"


def model(version: str, seed: int = 7) -> tuple[dict[str, np.ndarray], Arrays]:
    original = random_model_weights(version, C, L, V, head_size=N, ffn_dim=F, lora_dims=3, seed=seed)
    return original, official_from_bin(version, original)


# ---------------------------------------------------------------------------------------------
# Tests


def test_inverse_and_hand_preprocess_agree_with_random_models() -> None:
    """Self-check of the test's own two halves: hand_preprocess(official_from_bin(w)) == w."""
    for version in VERSIONS:
        original, raw = model(version)
        back = hand_preprocess(version, raw)
        assert set(back) == set(original), version
        for name, want in original.items():
            assert back[name].shape == want.shape, (version, name)
            np.testing.assert_allclose(back[name], want, rtol=1e-5, atol=1e-6, err_msg=f"v{version} {name}")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_convert_pth(tmp_path: Path, version: str, dtype: str) -> None:
    original, raw = model(version)
    src, dst = tmp_path / "model.pth", tmp_path / "model.bin"
    save_pth(src, raw)
    convert(src, dst, dtype, progress=False)
    got = check_file(dst, version, raw, dtype)
    if dtype == "f32":
        # Everything survived the log/exp round trip to ~1e-7: logits agree with the source model.
        assert_same_logits(version, got, original, atol=1e-4)
    else:
        # FP16 matrices perturb the logits by ~1e-3 relative; compare loosely.
        assert_same_logits(version, got, original, atol=0.1)


@pytest.mark.parametrize("version", VERSIONS)
def test_convert_safetensors_official_layout(tmp_path: Path, version: str) -> None:
    original, raw = model(version, seed=11)
    src, dst = tmp_path / "model.safetensors", tmp_path / "model.bin"
    save_safetensors(src, raw)
    convert(src, dst, "f32", progress=False)
    got = check_file(dst, version, raw, "f32")
    assert_same_logits(version, got, original, atol=1e-4)


@pytest.mark.parametrize("version", ["4", "5.1", "5.1-gated", "5.2", "6"])
def test_convert_safetensors_hf_layout(tmp_path: Path, version: str) -> None:
    original, raw = model(version, seed=13)
    hf = {to_hf(k): v for k, v in raw.items()}
    assert "rwkv.embeddings.weight" in hf and "rwkv.blocks.0.pre_ln.weight" in hf
    if version == "4":
        assert (
            "rwkv.blocks.1.attention.time_mix_key" in hf
            and "rwkv.blocks.1.feed_forward.time_mix_receptance" in hf
        )
    src, dst = tmp_path / "hf.safetensors", tmp_path / "model.bin"
    save_safetensors(src, hf)
    convert(src, dst, "f16", progress=False)
    check_file(dst, version, raw, "f16")
    convert(src, dst, "f32", progress=False)
    got = check_file(dst, version, raw, "f32")
    assert_same_logits(version, got, original, atol=1e-4)


def test_convert_hf_layout_pth(tmp_path: Path) -> None:
    """transformers saves pytorch_model.bin files too: the HF names work through .pth as well."""
    _, raw = model("4", seed=3)
    src, dst = tmp_path / "pytorch_model.bin", tmp_path / "model.bin"
    save_pth(src, {to_hf(k): v for k, v in raw.items()})
    convert(src, dst, "f32", progress=False)
    check_file(dst, "4", raw, "f32")


def test_convert_fla_rwkv7_layout(tmp_path: Path) -> None:
    original, raw = model("7", seed=17)
    fla = to_fla(raw)
    assert (
        "model.layers.1.attn.v_lora.lora.0.weight" in fla and "model.layers.0.attn.w_lora.lora.2.bias" in fla
    )
    src, dst = tmp_path / "model.safetensors", tmp_path / "model.bin"
    save_safetensors(src, fla)
    convert(src, dst, "f32", progress=False)
    got = check_file(dst, "7", raw, "f32")
    assert_same_logits("7", got, original, atol=1e-4)


@pytest.mark.parametrize("container", ["pth", "safetensors"])
def test_convert_bf16_checkpoint(tmp_path: Path, container: str) -> None:
    """Official checkpoints are bf16: the converter must widen exactly, then preprocess in f32."""
    _, raw = model("5.2", seed=19)
    src, dst = tmp_path / f"model.{container}", tmp_path / "model.bin"
    (save_pth if container == "pth" else save_safetensors)(src, raw, torch.bfloat16)
    convert(src, dst, "f16", progress=False)
    check_file(dst, "5.2", bf16_round(raw), "f16")


def test_convert_fp16_checkpoint(tmp_path: Path) -> None:
    _, raw = model("6", seed=23)
    src, dst = tmp_path / "model.pth", tmp_path / "model.bin"
    save_pth(src, raw, torch.float16)
    convert(src, dst, "f32", progress=False)
    half = {k: v.astype(np.float16).astype(np.float32) for k, v in raw.items()}
    check_file(dst, "6", half, "f32")


def test_v7_mix_vectors_concatenated_in_rwkvag_order() -> None:
    """Direct check of the x_rwkvag layout: slice f of (6,1,C) is x_f, whatever the input order."""
    _, raw = model("7")
    for c in V7_ORDER:  # make each vector recognisable
        raw[f"blocks.1.att.x_{c}"] = np.full((1, 1, C), V7_ORDER.index(c) + 1.0, dtype=np.float32)
    out = dict(convert_state_dict(raw))
    x = out["blocks.1.att.x_rwkvag"]
    assert x.shape == (6, 1, C) and x.dtype == np.float32
    for f in range(6):
        np.testing.assert_array_equal(x[f, 0], np.full(C, f + 1.0, dtype=np.float32))
    assert not any(re.fullmatch(r"blocks\.\d+\.att\.x_[rwkvag]", n) for n in out)


def test_v4_time_decay_is_minus_exp_and_mixes_squeezed() -> None:
    _, raw = model("4")
    out = dict(convert_state_dict(raw, "f16"))
    td = raw["blocks.0.att.time_decay"].astype(np.float64)
    np.testing.assert_allclose(out["blocks.0.att.time_decay"], -np.exp(td), rtol=1e-6)
    assert out["blocks.0.att.time_mix_k"].shape == (C,) and out["blocks.0.att.time_mix_k"].dtype == np.float32
    np.testing.assert_array_equal(out["blocks.0.att.time_first"], raw["blocks.0.att.time_first"])
    assert out["blocks.0.att.key.weight"].dtype == np.float16


def test_official_5_1_keeps_time_first_and_gate() -> None:
    """Official 5.1 (gate + per-head decay) converts, recognisably: exp'd time_first (H,1,1) + gate."""
    _, raw = model("5.1-gated")
    plan = plan_conversion(raw)
    assert plan.version == "5.1-gated" and plan.n_head == H
    out = dict(convert_state_dict(raw))
    assert "blocks.0.att.gate.weight" in out and "blocks.0.att.time_faaaa" not in out
    tf = raw["blocks.0.att.time_first"].astype(np.float64)
    np.testing.assert_allclose(out["blocks.0.att.time_first"], np.exp(tf).reshape(H, 1, 1), rtol=1e-6)
    td = raw["blocks.0.att.time_decay"].astype(np.float64)
    np.testing.assert_allclose(
        out["blocks.0.att.time_decay"], np.exp(-np.exp(td)).reshape(H, 1, 1), rtol=1e-6
    )


def test_v6_transposes() -> None:
    _, raw = model("6")
    out = dict(convert_state_dict(raw))
    w1, w2 = raw["blocks.1.att.time_maa_w1"], raw["blocks.1.att.time_maa_w2"]
    np.testing.assert_array_equal(out["blocks.1.att.time_maa_w1"], w1.T)
    np.testing.assert_array_equal(out["blocks.1.att.time_maa_w2"], np.swapaxes(w2, 1, 2))
    np.testing.assert_array_equal(out["blocks.1.att.time_decay_w1"], raw["blocks.1.att.time_decay_w1"].T)
    np.testing.assert_array_equal(
        out["blocks.1.att.time_decay"], raw["blocks.1.att.time_decay"].reshape(H, N, 1)
    )
    assert out["blocks.1.att.time_maa_w1"].flags.c_contiguous


def test_convert_state_dict_accepts_torch_tensors() -> None:
    _, raw = model("5.2")
    as_torch = {k: torch.from_numpy(v).to(torch.bfloat16).requires_grad_(True) for k, v in raw.items()}
    from_torch = dict(convert_state_dict(as_torch))
    from_numpy = dict(convert_state_dict(bf16_round(raw)))
    assert list(from_torch) == list(from_numpy)
    for name in from_numpy:
        np.testing.assert_array_equal(from_torch[name], from_numpy[name], err_msg=name)


def test_extra_tensors_are_skipped() -> None:
    _, raw = model("4")
    raw["optimizer_step"] = np.zeros(1, dtype=np.float32)
    plan = plan_conversion(raw)
    assert plan.skipped == ("optimizer_step",)
    assert "optimizer_step" not in plan.names


# --- errors ---------------------------------------------------------------------------------


def test_quantized_dtype_is_unsupported_here(tmp_path: Path) -> None:
    _, raw = model("4")
    src = tmp_path / "m.pth"
    save_pth(src, raw)
    with pytest.raises(UnsupportedError, match="quantize"):
        convert(src, tmp_path / "out.bin", "Q5_1")
    with pytest.raises(ValueError, match="f32"):
        convert(src, tmp_path / "out.bin", "f8")
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize(
    ("drop", "match"),
    [
        ("blocks.1.att.time_decay", "blocks.1.att.time_decay"),
        ("head.weight", "head.weight"),
        ("emb.weight", "emb.weight"),
        ("blocks.0.ln0.bias", "blocks.0.ln0.bias"),
    ],
)
def test_missing_tensor_names_it_and_writes_nothing(tmp_path: Path, drop: str, match: str) -> None:
    _, raw = model("4")
    del raw[drop]
    src, dst = tmp_path / "m.safetensors", tmp_path / "out.bin"
    save_safetensors(src, raw)
    with pytest.raises(ModelFormatError, match=re.escape(match)):
        convert(src, dst, "f16", progress=False)
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind


def test_missing_layer_is_reported() -> None:
    _, raw = model("4")
    raw = {k: v for k, v in raw.items() if not k.startswith("blocks.1.")}
    raw["blocks.2.ln1.weight"] = np.ones(C, dtype=np.float32)
    with pytest.raises(ModelFormatError, match=r"layer\(s\) \[1\]"):
        plan_conversion(raw)


def test_bad_shape_is_reported() -> None:
    _, raw = model("7")
    raw["blocks.0.att.x_w"] = np.zeros((1, 1, C + 1), dtype=np.float32)
    with pytest.raises(ModelFormatError, match="blocks.0.att.x_w"):
        plan_conversion(raw)


def test_fp16_overflow_is_an_error_not_inf() -> None:
    _, raw = model("4")
    raw["blocks.0.att.key.weight"] = raw["blocks.0.att.key.weight"].copy()
    raw["blocks.0.att.key.weight"][0, 0] = 1e6
    with pytest.raises(ModelFormatError, match="FP16 range"):
        list(convert_state_dict(raw, "f16"))
    list(convert_state_dict(raw, "f32"))  # fine in f32


def test_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, raw = model("4")
    src = tmp_path / "m.pth"
    save_pth(src, raw)
    convert(src, tmp_path / "a.bin", "f16", progress=False)
    assert capsys.readouterr().err == ""
    convert(src, tmp_path / "b.bin", "f16", progress=True)
    err = capsys.readouterr().err
    assert "tensor" in err and "converting m.pth" in err
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
