"""GGUF files written the way llama.cpp's converter lays out RWKV-6/RWKV-7 models (formats.md §7.3),
from an rwkv.cpp ``.bin``: for the GGUF tests and the fuzzer's seeds. Needs the ``gguf`` package."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rwkv_ggml.fileformat import DType, ModelFile, read_model_file

# our type -> ggml type id (the ids differ from rwkv.cpp's from Q5_0 on)
GGML_TYPE = {DType.Q4_0: 2, DType.Q4_1: 3, DType.Q5_0: 6, DType.Q5_1: 7, DType.Q8_0: 8}
GGML_TYPE |= {DType.Q4_K: 12, DType.Q5_K: 13, DType.Q6_K: 14}


def block_of(name: str) -> tuple[int, str] | None:
    if not name.startswith("blocks."):
        return None
    _, i, rest = name.split(".", 2)
    return int(i), rest


_COMMON = {
    "ln1.weight": "attn_norm.weight",
    "ln1.bias": "attn_norm.bias",
    "ln2.weight": "attn_norm_2.weight",
    "ln2.bias": "attn_norm_2.bias",
    "att.key.weight": "time_mix_key.weight",
    "att.value.weight": "time_mix_value.weight",
    "att.receptance.weight": "time_mix_receptance.weight",
    "att.output.weight": "time_mix_output.weight",
    "att.gate.weight": "time_mix_gate.weight",
    "att.ln_x.weight": "time_mix_ln.weight",
    "att.ln_x.bias": "time_mix_ln.bias",
    "ffn.key.weight": "channel_mix_key.weight",
    "ffn.value.weight": "channel_mix_value.weight",
    "ffn.receptance.weight": "channel_mix_receptance.weight",
    # v6
    "att.time_maa_x": "time_mix_lerp_x.weight",
    "att.time_maa_w1": "time_mix_w1.weight",
    "att.time_maa_w2": "time_mix_w2.weight",
    "att.time_decay": "time_mix_decay.weight",
    "att.time_decay_w1": "time_mix_decay_w1.weight",
    "att.time_decay_w2": "time_mix_decay_w2.weight",
    "att.time_faaaa": "time_mix_first.weight",
    "ffn.time_maa_k": "channel_mix_lerp_k.weight",
    "ffn.time_maa_r": "channel_mix_lerp_r.weight",
    # v7
    "att.x_rwkvag": "time_mix_lerp_fused.weight",
    "att.k_k": "time_mix_k_k.weight",
    "att.k_a": "time_mix_k_a.weight",
    "att.r_k": "time_mix_r_k.weight",
    "ffn.x_k": "channel_mix_lerp_k.weight",
} | {f"att.{f}{i}": f"time_mix_{f}{i}.weight" for f in "wavg" for i in "012"}
_TOP = {
    "emb.weight": "token_embd.weight",
    "ln_out.weight": "output_norm.weight",
    "ln_out.bias": "output_norm.bias",
    "head.weight": "output.weight",
}


_FLATTENED = ("att.time_decay", "att.w0", "att.a0", "att.v0", "att.k_k", "att.k_a", "att.r_k", "ffn.x_k")


def _as_llama(mf: ModelFile, arr: np.ndarray, rest: str) -> np.ndarray:
    """One tensor in llama.cpp's layout: per-channel vectors squeezed flat, v7's mix (6, 1, 1, C),
    v6's bonus (H, N); the matrices (LoRA included) are already in its orientation."""
    if rest == "att.x_rwkvag":
        return arr.reshape(6, 1, 1, mf.n_embed)
    if rest == "att.time_faaaa":
        return arr.reshape(arr.shape[0], arr.shape[1])
    return arr.reshape(-1) if rest in _FLATTENED else arr


def write_gguf(
    src: Path,
    out: Path,
    *,
    rescale_every: int = 0,
    bf16: bool = False,
    fused_v6_mix: bool = True,
    extra: Callable[[Any], None] | None = None,
    tokens: list[str] | None = None,
) -> Path:
    """``src`` (.bin) rewritten as a GGUF file as llama.cpp's converter writes that model."""
    import gguf  # the test extra; imported here so that importing this module never needs it

    with read_model_file(src) as mf:
        v7 = "blocks.0.att.x_rwkvag" in mf.tensors
        arch = "rwkv7" if v7 else "rwkv6"
        w = gguf.GGUFWriter(str(out), arch)
        w.add_context_length(1048576)
        w.add_embedding_length(mf.n_embed)
        w.add_block_count(mf.n_layer)
        w.add_layer_norm_eps(1e-5)
        head_size = (
            mf.tensors["blocks.0.att.r_k"].ne[0] if v7 else mf.tensors["blocks.0.att.time_faaaa"].ne[1]
        )
        w.add_wkv_head_size(head_size)
        w.add_feed_forward_length(mf.tensors["blocks.0.ffn.key.weight"].ne[1])
        w.add_head_count(0)
        if not v7:
            w.add_rescale_every_n_layers(rescale_every)
        else:
            _add_v7_lora_ranks(w, mf)
        if tokens is not None:
            w.add_tokenizer_model("rwkv")
            w.add_token_list(tokens)
            w.add_token_types([3] + [1] * (len(tokens) - 1))
        if extra:
            extra(w)
        lerps: dict[int, dict[str, np.ndarray]] = {}
        for name, rec in mf.tensors.items():
            arr = np.array(mf.array(name))
            where = block_of(name)
            if where is None:
                new = _TOP.get(name) or {"blocks.0.ln0.weight": "token_embd_norm.weight"}.get(name)
                new = new or "token_embd_norm.bias"
                _add(w, new, arr, rec.dtype, bf16)
                continue
            i, rest = where
            if rest.startswith("ln0."):
                _add(w, "token_embd_norm." + rest[4:], arr, rec.dtype, bf16)
                continue
            if not v7 and rest[:-1] == "att.time_maa_" and rest[-1] in "wkvrg" and fused_v6_mix:
                lerps.setdefault(i, {})[rest[-1]] = arr
                if len(lerps[i]) == 5:
                    fused = np.stack([lerps[i][p].reshape(1, -1) for p in "wkvrg"])[:, None]
                    _add(w, f"blk.{i}.time_mix_lerp_fused.weight", fused, DType.F32, False)
                continue
            if not v7 and rest[:-1] == "att.time_maa_" and rest[-1] in "wkvrg":
                _add(w, f"blk.{i}.time_mix_lerp_{rest[-1]}.weight", arr, rec.dtype, False)
                continue
            if rescale_every and rest in ("att.output.weight", "ffn.value.weight"):
                arr = _divided(arr, rec.dtype, 2.0 ** (i // rescale_every))
            _add(w, f"blk.{i}.{_COMMON[rest]}", _as_llama(mf, arr, rest), rec.dtype, bf16)
            if v7 and i == 0 and rest[:-1] == "att.a":  # the converter's placeholder v LoRA of layer 0
                _add(w, f"blk.0.time_mix_v{rest[-1]}.weight", _as_llama(mf, arr, rest), rec.dtype, bf16)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return out


def _add_v7_lora_ranks(w: Any, mf: ModelFile) -> None:
    """The LoRA ranks llama.cpp's rwkv7 loader requires as metadata (our reader takes them from the
    shapes): decay (w), in-context learning rate (a), value residual mix (v, absent from layer 0 of our
    files) and gate (g); each LoRA's first matrix is (n_embed, rank) in ggml order."""
    rank = {f: mf.tensors[f"blocks.0.att.{f}1"].ne[1] for f in "wag"}
    v1 = mf.tensors.get("blocks.1.att.v1")
    w.add_decay_lora_rank(rank["w"])
    w.add_iclr_lora_rank(rank["a"])
    w.add_value_residual_mix_lora_rank(v1.ne[1] if v1 is not None else rank["a"])
    w.add_gate_lora_rank(rank["g"])


def world_token_texts(n_vocab: int = 65536) -> list[str]:
    """The World vocabulary as llama.cpp's converter writes it: "<s>" for id 0, each token's bytes as
    Python writes them inside a bytes literal, then "[PADi]" up to n_vocab (the texts must be unique:
    llama.cpp's vocabulary loader maps text to id)."""
    from rwkv_ggml.tokenizer.world import parse_world_vocab

    table = parse_world_vocab(n_vocab=n_vocab)
    texts = ["<s>"] + [repr(b)[2:-1] for b in table[1:] if b]
    return texts + [f"[PAD{i}]" for i in range(len(texts), n_vocab)]


def _add(w: Any, name: str, arr: np.ndarray, dtype: DType, bf16: bool) -> None:
    import gguf

    if dtype.is_quantized:
        w.add_tensor(name, arr, raw_dtype=gguf.GGMLQuantizationType(GGML_TYPE[dtype]))
    elif bf16 and arr.ndim >= 2 and arr.dtype == np.float32:
        bits = (arr.view(np.uint32) >> 16).astype(np.uint16)
        w.add_tensor(name, bits, raw_dtype=gguf.GGMLQuantizationType.BF16)
    else:
        w.add_tensor(name, arr)


def _divided(arr: np.ndarray, dtype: DType, by: float) -> np.ndarray:
    """What the converter's rescaling leaves: values (or block scales) divided by a power of two."""
    if not dtype.is_quantized:
        return (arr / by).astype(arr.dtype)
    blocks = arr.reshape(-1, dtype.type_size).copy()
    for at in (0, 2) if dtype in (DType.Q4_1, DType.Q5_1) else (0,):
        d = blocks[:, at : at + 2].copy().view("<f2").astype(np.float32) / by
        blocks[:, at : at + 2] = d.astype("<f2").view(np.uint8)
    return blocks.reshape(arr.shape)
