"""Random-weight RWKV models of real shapes for the benchmarks, written once into a cache folder.

Weights are random (the benchmarks measure speed, not text), drawn with realistic magnitudes so no
kernel sees denormals or infinities. Other formats are derived from the F32 file with our converter
rules (F16), and the block types from the F16 file with our quantizer (so emb and head stay F16).
An official-layout ``.pth`` of the same weights can be written
for the official ``rwkv`` package (needs torch).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
from pathlib import Path

import numpy as np

from rwkv_ggml.fileformat import DType, read_model_file, write_model_file

CACHE = Path(os.environ.get("RWKV_GGML_BENCH_CACHE", Path.home() / ".cache" / "rwkv_ggml_bench"))

# name: (version, n_layer, n_embed, n_vocab, ffn_dim)
SHAPES = {
    "v4-169m": ("4", 12, 768, 50277, 3072),
    "v4-1.5b": ("4", 24, 2048, 50277, 8192),
    "v7-0.1b": ("7", 12, 768, 65536, 3072),
    "v7-1.5b": ("7", 24, 2048, 65536, 8192),
}


def _v4_tensors(L: int, C: int, V: int, F: int, rng: np.random.Generator):
    def mat(rows: int, cols: int) -> np.ndarray:
        return rng.standard_normal((rows, cols), dtype=np.float32) / np.float32(np.sqrt(cols))

    def vec(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, C).astype(np.float32)

    yield "emb.weight", rng.standard_normal((V, C), dtype=np.float32)
    yield "blocks.0.ln0.weight", vec(0.9, 1.1)
    yield "blocks.0.ln0.bias", vec(-0.1, 0.1)
    for i in range(L):
        p = f"blocks.{i}."
        for n in ("ln1", "ln2"):
            yield p + n + ".weight", vec(0.9, 1.1)
            yield p + n + ".bias", vec(-0.1, 0.1)
        for n in ("k", "v", "r"):
            yield p + "att.time_mix_" + n, vec(0.0, 1.0)
        yield p + "att.time_decay", -np.exp(vec(-3.0, 1.5))
        yield p + "att.time_first", vec(-1.0, 1.0)
        for n in ("key", "value", "receptance", "output"):
            yield p + f"att.{n}.weight", mat(C, C)
        for n in ("k", "r"):
            yield p + "ffn.time_mix_" + n, vec(0.0, 1.0)
        yield p + "ffn.key.weight", mat(F, C)
        yield p + "ffn.receptance.weight", mat(C, C)
        yield p + "ffn.value.weight", mat(C, F)
    yield "ln_out.weight", vec(0.9, 1.1)
    yield "ln_out.bias", vec(-0.1, 0.1)
    yield "head.weight", mat(V, C)


def f32_model(name: str) -> Path:
    """The cached F32 file of a shape (v4 shapes are generated here; v7 needs the v7 generator)."""
    version, L, C, V, F = SHAPES[name]
    path = CACHE / f"{name}-F32.bin"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    if version == "4":
        tensors = _v4_tensors(L, C, V, F, rng)
    else:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.reference.random_models import random_model_weights

        tensors = iter(
            random_model_weights(version, C, L, V, head_size=64, ffn_dim=F, lora_dims=64, seed=1234).items()
        )
    write_model_file(path, n_vocab=V, n_embed=C, n_layer=L, data_type=DType.F32, tensors=tensors)
    return path


def model_file(name: str, fmt: str) -> Path:
    """The cached file of a shape in F32, F16 or a block format."""
    src = f32_model(name)
    if fmt == "F32":
        return src
    path = CACHE / f"{name}-{fmt}.bin"
    if path.exists():
        return path
    if fmt == "F16":
        fp32_parts = (".time_", ".k_k", ".k_a", ".r_k", ".x_rwkvag", ".x_k", ".w0", ".a0", ".v0")
        with read_model_file(src) as mf:

            def tensors():
                for n, rec in mf.tensors.items():
                    a = np.asarray(mf.array(n))
                    f16 = len(rec.ne) >= 2 and not any(part in n for part in fp32_parts)
                    yield n, a.astype(np.float16) if f16 else np.array(a)

            write_model_file(
                path,
                n_vocab=mf.n_vocab,
                n_embed=mf.n_embed,
                n_layer=mf.n_layer,
                data_type=DType.F16,
                tensors=tensors(),
            )
    else:
        from rwkv_ggml.quantization import quantize

        # from the F16 file, as people quantize real models: emb and head then stay F16 (formats.md §4.2)
        quantize(model_file(name, "F16"), path, fmt, progress=False)
    return path


def official_pth(name: str) -> Path:
    """The same weights as an official checkpoint (undoing the rwkv.cpp preprocessing), for the official
    ``rwkv`` package. Needs torch."""
    import torch

    path = CACHE / f"{name}-official.pth"
    if path.exists():
        return path
    with read_model_file(f32_model(name)) as mf:
        tensors = _official_v4(mf) if SHAPES[name][0] == "4" else _official_v7(mf)
        torch.save({n: torch.from_numpy(a) for n, a in tensors}, path)
    return path


def _official_v4(mf):
    for n in mf.tensors:
        a = np.array(mf.array(n))
        if n.endswith("att.time_decay"):
            a = np.log(-a)  # the file holds -exp(raw)
        if ".time_mix_" in n:
            a = a.reshape(1, 1, -1)
        yield n, a


def _official_v7(mf):
    """Our converter's v7 rules backwards: the stacked token-shift mixes split into x_r ... x_g, the LoRA
    matrices transposed back to (in, out)."""
    for n in mf.tensors:
        a = np.array(mf.array(n))
        if n.endswith("att.x_rwkvag"):
            prefix = n[: -len("x_rwkvag")]
            for i, c in enumerate("rwkvag"):
                yield prefix + "x_" + c, np.ascontiguousarray(a.reshape(6, -1)[i].reshape(1, 1, -1))
            continue
        if re.fullmatch(r"blocks\.\d+\.att\.[wavg][12]", n):
            a = np.ascontiguousarray(a.T)
        yield n, a


def streamed_bytes(path: Path) -> int:
    """Bytes of weights one token reads: every tensor except the embedding table (one row of it)."""
    with read_model_file(path) as mf:
        emb = mf.tensors["emb.weight"]
        return sum(r.nbytes for n, r in mf.tensors.items() if n != "emb.weight") + emb.nbytes // emb.shape[0]


def load_official(name: str, strategy: str, threads: int):
    """The official ``rwkv`` package's model of the same weights (None when torch or rwkv is missing).

    The package picks its architecture when ``rwkv.model`` is imported (RWKV_V7_ON=1 makes ``RWKV`` the
    RWKV-7 class), so the module is re-imported when the version asked for changes."""
    try:
        import torch

        os.environ.setdefault("RWKV_JIT_ON", "1")
        os.environ.setdefault("RWKV_CUDA_ON", "0")
        import rwkv.model
    except ImportError:
        return None
    v7 = SHAPES[name][0] == "7"
    if (os.environ.get("RWKV_V7_ON") == "1") != v7 or not hasattr(rwkv.model.RWKV, "_rwkv_ggml_v7"):
        os.environ["RWKV_V7_ON"] = "1" if v7 else "0"
        with contextlib.redirect_stdout(io.StringIO()):  # the RWKV-7 module announces itself
            importlib.reload(rwkv.model)
        rwkv.model.RWKV._rwkv_ggml_v7 = v7
    torch.set_num_threads(threads)
    path = official_pth(name)
    if v7:  # the RWKV-7 class appends ".pth" itself and takes no verbose argument
        with contextlib.redirect_stdout(io.StringIO()):
            return rwkv.model.RWKV(model=str(path.with_suffix("")), strategy=strategy)
    return rwkv.model.RWKV(model=str(path), strategy=strategy, verbose=False)
