"""RWKV-6 and RWKV-7 GGUF files (llama.cpp's converter and quantizer) as our model description.

:func:`read_gguf_model` parses the container (:mod:`rwkv_ggml.gguf_format`) and presents the tensors
under the rwkv.cpp names and shapes that :func:`rwkv_ggml.arch.validate` checks (formats.md §7.3):

* most tensors are the file's own bytes with other sizes (a squeezed vector regains its (C, 1, 1)
  shape, a flattened per-head vector its (N, H) shape): records point into the GGUF file, nothing
  is copied;
* RWKV-6's fused token-shift mix (w, k, v, r, g stacked) becomes five records, one per plane;
  RWKV-7's fused mix (r, w, k, v, a, g) is already our ``att.x_rwkvag``;
* the LoRA matrices are stored in our orientation already (llama.cpp transposes them as rwkv.cpp does);
* some RWKV-6 conversions divide ``att.output`` and ``ffn.value`` of layer i by 2**(i // n)
  (``rwkv6.rescale_every_n_layers`` = n) and halve the residual stream every n layers at run time;
  we undo the division at load (exact: a power-of-two change of each value or block scale) so the
  weights are the trained ones. These tensors and any BF16 tensor (our engine has no BF16: widened
  to F32, exactly) are computed into memory (:attr:`GgufModelFile.held`).

Types F32, F16, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 have the same block layout as ours and are used in
place; any other type is refused naming the tensor and the type. The World vocabulary stored in the
file (``tokenizer.ggml.model`` = "rwkv") is decoded into :attr:`GgufModelFile.vocab_table`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import ModelFormatError, UnsupportedError
from .fileformat import CURRENT_VERSION, DType, ModelFile, TensorRecord, read_model_file, tensor_nbytes
from .gguf_format import GgufFile, GgufTensor, is_gguf, read_gguf

__all__ = ["GgufModelFile", "open_model_file", "read_gguf_model", "unescape_token"]

# ggml type id -> our type (same block layout; ids differ from rwkv.cpp's from Q5_0 on)
_SAME_LAYOUT = {
    0: DType.F32,
    1: DType.F16,
    2: DType.Q4_0,
    3: DType.Q4_1,
    6: DType.Q5_0,
    7: DType.Q5_1,
    8: DType.Q8_0,
    12: DType.Q4_K,
    13: DType.Q5_K,
    14: DType.Q6_K,
}
_BF16 = 30
_HYBRIDS = {"rwkv6qwen2": "RWKV-6 with Qwen2 layers", "arwkv7": "RWKV-7 attention on a Qwen2.5 model"}
_RWKV6_MIX = ("w", "k", "v", "r", "g")  # planes of rwkv6's time_mix_lerp_fused

# Names shared by both versions: GGUF name (after "blk.<i>.") -> (our name after "blocks.<i>.", vector?)
_LAYER_COMMON = {
    "attn_norm.weight": ("ln1.weight", True),
    "attn_norm.bias": ("ln1.bias", True),
    "attn_norm_2.weight": ("ln2.weight", True),
    "attn_norm_2.bias": ("ln2.bias", True),
    "time_mix_key.weight": ("att.key.weight", False),
    "time_mix_value.weight": ("att.value.weight", False),
    "time_mix_receptance.weight": ("att.receptance.weight", False),
    "time_mix_output.weight": ("att.output.weight", False),
    "time_mix_ln.weight": ("att.ln_x.weight", True),
    "time_mix_ln.bias": ("att.ln_x.bias", True),
    "channel_mix_key.weight": ("ffn.key.weight", False),
    "channel_mix_value.weight": ("ffn.value.weight", False),
}
_LAYER_V6 = {
    "time_mix_gate.weight": ("att.gate.weight", False),
    "time_mix_lerp_x.weight": ("att.time_maa_x", True),
    "time_mix_w1.weight": ("att.time_maa_w1", False),
    "time_mix_w2.weight": ("att.time_maa_w2", False),
    "time_mix_decay.weight": ("att.time_decay", True),
    "time_mix_decay_w1.weight": ("att.time_decay_w1", False),
    "time_mix_decay_w2.weight": ("att.time_decay_w2", False),
    "time_mix_first.weight": ("att.time_faaaa", True),
    "channel_mix_lerp_k.weight": ("ffn.time_maa_k", True),
    "channel_mix_lerp_r.weight": ("ffn.time_maa_r", True),
    "channel_mix_receptance.weight": ("ffn.receptance.weight", False),
} | {f"time_mix_lerp_{p}.weight": (f"att.time_maa_{p}", True) for p in _RWKV6_MIX}
_LAYER_V7 = {
    "time_mix_lerp_fused.weight": ("att.x_rwkvag", True),
    "time_mix_k_k.weight": ("att.k_k", True),
    "time_mix_k_a.weight": ("att.k_a", True),
    "time_mix_r_k.weight": ("att.r_k", True),
    "channel_mix_lerp_k.weight": ("ffn.x_k", True),
} | {f"time_mix_{f}0.weight": (f"att.{f}0", True) for f in "wav"}
_LAYER_V7 |= {f"time_mix_{f}{i}.weight": (f"att.{f}{i}", False) for f in "wavg" for i in (1, 2)}
_TOP = {
    "token_embd.weight": ("emb.weight", False),
    "token_embd_norm.weight": ("blocks.0.ln0.weight", True),
    "token_embd_norm.bias": ("blocks.0.ln0.bias", True),
    "output_norm.weight": ("ln_out.weight", True),
    "output_norm.bias": ("ln_out.bias", True),
    "output.weight": ("head.weight", False),
}


class GgufModelFile(ModelFile):
    """A GGUF model presented as a :class:`~rwkv_ggml.fileformat.ModelFile` under our names and shapes.

    Records of tensors used in place hold offsets into the GGUF file; those in :attr:`held` (computed at
    load) have offset -1 and are read from memory."""

    gguf: GgufFile
    held: dict[str, np.ndarray]
    vocab_table: list[bytes] | None
    notes: list[str]

    def array(self, name: str) -> np.ndarray:
        if name in self.held:
            return self.held[name]
        return super().array(name)

    def close(self) -> None:
        self.gguf.close()
        super().close()

    def __enter__(self) -> GgufModelFile:
        return self


def open_model_file(path: str | os.PathLike[str]) -> ModelFile:
    """A model file of either format: GGUF (by its magic) or rwkv.cpp ``.bin``."""
    return read_gguf_model(path) if is_gguf(path) else read_model_file(path)


def _int_key(gf: GgufFile, key: str, default: int | None = None) -> int:
    value = gf.metadata.get(key, default)
    if value is None:
        raise ModelFormatError(f"{gf.path}: GGUF metadata lacks '{key}'")
    if isinstance(value, (bool, np.ndarray, list, str, float)) or not 0 <= int(value) < 1 << 31:
        raise ModelFormatError(f"{gf.path}: GGUF metadata '{key}' = {value!r:.60} is not a usable count")
    return int(value)


def read_gguf_model(path: str | os.PathLike[str]) -> GgufModelFile:
    """Parse a GGUF file holding an RWKV-6 or RWKV-7 model (see the module docstring).

    Raises ModelFormatError for a malformed file or missing metadata, UnsupportedError for another
    architecture (the hybrids included) or a tensor type we cannot compute with, naming the tensor.
    """
    gf = read_gguf(path)
    try:
        return _as_model(gf)
    except BaseException:
        gf.close()
        raise


def _as_model(gf: GgufFile) -> GgufModelFile:
    arch = gf.metadata.get("general.architecture")
    if arch in _HYBRIDS:
        raise UnsupportedError(
            f"{gf.path}: GGUF architecture '{arch}' ({_HYBRIDS[arch]}) is not supported; rwkv_ggml runs "
            "the pure RWKV architectures 'rwkv6' and 'rwkv7'"
        )
    if arch not in ("rwkv6", "rwkv7"):
        raise UnsupportedError(
            f"{gf.path}: GGUF architecture {arch!r:.60} is not an RWKV model rwkv_ggml runs "
            "(supported: 'rwkv6', 'rwkv7')"
        )
    n_layer = _int_key(gf, f"{arch}.block_count")
    n_embed = _int_key(gf, f"{arch}.embedding_length")
    head_size = _int_key(gf, f"{arch}.wkv.head_size")
    if not 1 <= n_layer <= 1 << 16 or n_embed < 1 or head_size < 1 or n_embed % head_size:
        raise ModelFormatError(
            f"{gf.path}: block_count {n_layer}, embedding_length {n_embed} and wkv.head_size {head_size} "
            "do not describe a model (head_size must divide embedding_length)"
        )
    emb = gf.tensors.get("token_embd.weight")
    if emb is None or len(emb.ne) != 2:
        raise ModelFormatError(f"{gf.path}: missing 2-D tensor 'token_embd.weight'")
    builder = _Builder(gf, n_embed, head_size)
    rescale = _int_key(gf, f"{arch}.rescale_every_n_layers", 0) if arch == "rwkv6" else 0
    builder.add_all(arch, n_layer, rescale)
    key = builder.records.get("blocks.0.att.key.weight")
    data_type = int(key.dtype) if key is not None else int(DType.F32)
    mf = GgufModelFile(
        path=gf.path,
        version=CURRENT_VERSION,
        n_vocab=int(emb.ne[1]),
        n_embed=n_embed,
        n_layer=n_layer,
        data_type=data_type,
        file_size=gf.file_size,
        tensors=builder.records,
    )
    mf.gguf, mf.held, mf.notes = gf, builder.held, builder.notes
    mf.vocab_table = vocab_table(gf, int(emb.ne[1]))
    return mf


class _Builder:
    """Collects our records (and held arrays) from the GGUF tensors."""

    def __init__(self, gf: GgufFile, n_embed: int, head_size: int) -> None:
        self.gf = gf
        self.C = n_embed
        self.N = head_size
        self.H = n_embed // head_size
        self.records: dict[str, TensorRecord] = {}
        self.held: dict[str, np.ndarray] = {}
        self.notes: list[str] = []

    def fail(self, t: GgufTensor, msg: str) -> ModelFormatError:
        return ModelFormatError(f"{self.gf.path}: tensor '{t.name}': {msg}")

    def add_all(self, arch: str, n_layer: int, rescale: int) -> None:
        table = _LAYER_V6 if arch == "rwkv6" else _LAYER_V7
        for name, (ours, vector) in _TOP.items():
            if name in self.gf.tensors:
                self.add(self.gf.tensors[name], ours, vector)
        for i in range(n_layer):
            for suffix, (ours, vector) in (_LAYER_COMMON | table).items():
                t = self.gf.tensors.get(f"blk.{i}.{suffix}")
                if t is None or (arch == "rwkv7" and i == 0 and ours[-2:] in ("v0", "v1", "v2")):
                    continue  # missing: arch.validate names it; layer 0's v LoRA is a placeholder
                scale = 2.0 ** (i // rescale) if rescale > 0 and ours in _RESCALED else 1.0
                self.add(t, f"blocks.{i}.{ours}", vector, scale)
            fused = self.gf.tensors.get(f"blk.{i}.time_mix_lerp_fused.weight")
            if arch == "rwkv6" and fused is not None:
                self.split_v6_mix(fused, i)

    def our_type(self, t: GgufTensor, vector: bool) -> DType | None:
        """Our type for the tensor, or None when it must be widened to F32 in memory."""
        dtype = _SAME_LAYOUT.get(t.type_id)
        if t.type_id == _BF16 or (vector and dtype == DType.F16):
            return None
        if dtype is None or (vector and dtype != DType.F32):
            allowed = (
                "F32, F16 or BF16"
                if vector
                else "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K or Q6_K"
            )
            raise UnsupportedError(
                f"{self.gf.path}: tensor '{t.name}' is {t.type_name}, which rwkv_ggml cannot compute with "
                f"(this tensor may be {allowed})"
            )
        return dtype

    def target_ne(self, t: GgufTensor, ours: str, vector: bool) -> tuple[int, ...]:
        """Our sizes for the tensor: the per-channel vectors get their rwkv.cpp shapes back."""
        C, N, H = self.C, self.N, self.H
        shapes = {
            "att.time_decay": (1, N, H),
            "att.time_faaaa": (1, N, H),
            "att.r_k": (N, H),
            "att.x_rwkvag": (C, 1, 6),
        }
        suffix = ours.split(".", 2)[-1] if ours.startswith("blocks.") else ours
        if suffix in shapes:
            ne: tuple[int, ...] = shapes[suffix]
        elif vector and suffix in ("att.w0", "att.a0", "att.v0", "att.k_k", "att.k_a", "ffn.x_k"):
            ne = (C, 1, 1)
        elif vector:
            ne = (C,)
        else:
            ne = t.ne
            while len(ne) > 1 and ne[-1] == 1 and len(ne) > 3:
                ne = ne[:-1]
            if len(ne) > 3:
                raise self.fail(t, f"has sizes {t.ne}; a matrix has at most 3 dimensions")
            return ne
        if int(np.prod(ne)) != t.n_elements:
            raise self.fail(t, f"has sizes {t.ne} ({t.n_elements} elements); {ours} needs {ne}")
        return ne

    def add(self, t: GgufTensor, ours: str, vector: bool, scale: float = 1.0) -> None:
        dtype = self.our_type(t, vector)
        ne = self.target_ne(t, ours, vector)
        if dtype is not None and scale == 1.0:
            self.records[ours] = TensorRecord(ours, dtype, ne, t.offset, t.nbytes)
            return
        raw = self.gf.view(t.offset, t.nbytes)
        data: np.ndarray | None
        if dtype is None:  # widen F16/BF16 to F32
            values = _bf16_to_f32(raw) if t.type_id == _BF16 else raw.view("<f2").astype(np.float32)
            dtype, data = DType.F32, values * np.float32(scale)
            if t.type_id == _BF16:
                self.note("BF16 tensors widened to F32 at load (the engine has no BF16 type)")
        else:
            data = _rescaled(raw, dtype, scale)
            if data is None:  # (values near 65504 times 2**k: never in a trained model)
                raise self.fail(t, f"multiplying it back by {scale:g} (rescale_every_n_layers) overflows F16")
        if scale != 1.0:
            self.note(
                "att.output and ffn.value weights multiplied back by 2**(layer // rescale_every_n_layers)"
            )
        self.held[ours] = np.ascontiguousarray(data).view(_VIEW[dtype]).reshape(_numpy_shape(dtype, ne))
        self.records[ours] = TensorRecord(ours, dtype, ne, -1, tensor_nbytes(dtype, ne))

    def split_v6_mix(self, fused: GgufTensor, i: int) -> None:
        """rwkv6's fused mix: five C-vectors in w, k, v, r, g order, each one record (or held array)."""
        if fused.n_elements != 5 * self.C:
            raise self.fail(
                fused, f"has sizes {fused.ne}; the fused token-shift mix holds 5 x {self.C} values"
            )
        dtype = self.our_type(fused, True)
        for plane, p in enumerate(_RWKV6_MIX):
            ours = f"blocks.{i}.att.time_maa_{p}"
            if dtype is not None:
                self.records[ours] = TensorRecord(
                    ours, dtype, (self.C,), fused.offset + plane * 4 * self.C, 4 * self.C
                )
                continue
            size = 2 * self.C  # F16 or BF16
            part = GgufTensor(fused.name, fused.type_id, (self.C,), fused.offset + plane * size, size)
            self.add(part, ours, True)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


_RESCALED = ("att.output.weight", "ffn.value.weight")
_VIEW: dict[DType, type[np.generic]] = {DType.F32: np.float32, DType.F16: np.float16}
_VIEW.update({d: np.uint8 for d in DType if d.is_quantized})
# Byte offsets of the F16 scale fields in each block (d; d and m for the _1 types).
_SCALE_FIELDS = {DType.Q4_0: (0,), DType.Q5_0: (0,), DType.Q8_0: (0,), DType.Q4_1: (0, 2), DType.Q5_1: (0, 2)}
_SCALE_FIELDS |= {DType.Q4_K: (0, 2), DType.Q5_K: (0, 2), DType.Q6_K: (208,)}  # d, dmin / d (formats.md §7.4)


def _numpy_shape(dtype: DType, ne: tuple[int, ...]) -> tuple[int, ...]:
    if not dtype.is_quantized:
        return tuple(reversed(ne))
    rows = int(np.prod(ne[1:]))
    return (rows, tensor_nbytes(dtype, ne) // rows)


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)


def _rescaled(raw: np.ndarray, dtype: DType, scale: float) -> np.ndarray | None:
    """The tensor's bytes with every value multiplied by ``scale`` (a power of two): the values for
    F32/F16, the block scales for the quantized types. None if an F16 value would overflow."""
    if dtype == DType.F32:
        return raw.view("<f4") * np.float32(scale)
    if dtype == DType.F16:
        out = raw.view("<f2").astype(np.float32) * np.float32(scale)
        return out.astype(np.float16) if np.all(np.abs(out) <= 65504) else None
    blocks = raw.reshape(-1, dtype.type_size).copy()
    for at in _SCALE_FIELDS[dtype]:
        field = blocks[:, at : at + 2].copy().view("<f2").astype(np.float32) * np.float32(scale)
        if not np.all(np.abs(field) <= 65504):
            return None
        blocks[:, at : at + 2] = field.astype("<f2").view(np.uint8)
    return blocks.reshape(-1)


# ---- the vocabulary ----


def unescape_token(text: str) -> bytes:
    """The bytes of one token text as llama.cpp's converter writes World tokens: the inside of Python's
    ``repr`` of the bytes (``\\xNN``, ``\\t``, ``\\n``, ``\\r``, ``\\\\``, ``\\'``; other characters stand
    for themselves). Raises ValueError for a malformed escape."""
    if "\\" not in text:
        return text.encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
            continue
        e = text[i + 1 : i + 2]
        if e == "x":
            digits = text[i + 2 : i + 4]
            if len(digits) != 2 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(f"bad \\x escape in token {text[:40]!r}")
            out.append(int(digits, 16))
            i += 4
        elif e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        else:
            raise ValueError(f"unsupported escape \\{e} in token {text[:40]!r}")
    return bytes(out)


_ESCAPES = {"t": 0x09, "n": 0x0A, "r": 0x0D, "\\": 0x5C, "'": 0x27, '"': 0x22}
_NORMAL_TOKEN = 1  # llama.cpp's token type of an ordinary token (3: control, 5: unused)


def vocab_table(gf: GgufFile, n_vocab: int) -> list[bytes] | None:
    """The World vocabulary stored in the file as a table id -> bytes (control and unused tokens, such
    as id 0 "<s>", map to b""), or None if the file holds no RWKV vocabulary."""
    if gf.metadata.get("tokenizer.ggml.model") != "rwkv":
        return None
    tokens: Any = gf.metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ModelFormatError(f"{gf.path}: 'tokenizer.ggml.tokens' must be an array of strings")
    if not 0 < len(tokens) <= n_vocab:
        raise ModelFormatError(
            f"{gf.path}: the vocabulary has {len(tokens)} tokens, the embedding {n_vocab} rows"
        )
    types: Any = gf.metadata.get("tokenizer.ggml.token_type")
    if types is None:
        types = np.full(len(tokens), _NORMAL_TOKEN)
        types[0] = 3  # id 0 is the end-of-text token
    elif not isinstance(types, np.ndarray) or types.shape != (len(tokens),):
        raise ModelFormatError(f"{gf.path}: 'tokenizer.ggml.token_type' must hold one integer per token")
    table = [b""] * n_vocab
    seen: dict[bytes, int] = {}
    for i, (text, kind) in enumerate(zip(tokens, types.tolist(), strict=True)):
        if kind != _NORMAL_TOKEN:
            continue
        try:
            data = unescape_token(text)
        except ValueError as exc:
            raise ModelFormatError(f"{gf.path}: token {i}: {exc}") from None
        if not data or data in seen:
            what = "is empty" if not data else f"has the same bytes as token {seen[data]}"
            raise ModelFormatError(f"{gf.path}: vocabulary token {i} {what}")
        table[i] = data
        seen[data] = i
    return table


def describe(mf: GgufModelFile) -> list[tuple[str, str]]:
    """(key, value) lines for ``rwkv-ggml info``: the metadata (arrays summarised) and the load notes."""
    lines = []
    for key, value in mf.gguf.metadata.items():
        kind = mf.gguf.metadata_types[key]
        if isinstance(value, (list, np.ndarray)):
            shown = f"{kind} of {len(value)}"
        else:
            shown = (
                repr(value)
                if isinstance(value, str)
                else f"{value:.7g}"
                if isinstance(value, float)
                else str(value)
            )
            shown = shown if len(shown) <= 100 else shown[:97] + "..."
        lines.append((key, shown))
    lines += [("note", n) for n in mf.notes]
    return lines
