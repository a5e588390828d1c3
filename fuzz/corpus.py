"""Seed corpus of the fuzz targets, built at run time from the tiny rwkv.cpp models.

The models are read in place from ``<repo>/../shared/testdata/rwkv.cpp-tiny`` (never copied into
the repository). Each is first shrunk to one layer, an 8-token vocabulary and an FFN width of 32:
still a complete, loadable model of its version and data type, but 10-100 KB instead of 1-4 MB, so
an execution costs less and the fuzzer's mutations land on structure (headers, records, names,
shapes) instead of on weight bytes nobody validates. From those:

* ``bin/``: the shrunk models themselves;
* ``pth/`` and ``safetensors/``: the same weights as official checkpoints (the rwkv.cpp conversion
  undone: official names and shapes), in float32 and in bf16/float16 (``pth`` needs torch; without it
  that folder stays empty);
* ``state/``: state files saved by ``State.save`` for the shrunk models;
* ``gguf/``: the shrunk v6/v7 models as GGUF files in llama.cpp's layout (needs the ``gguf`` package).

Usage: ``python fuzz/corpus.py [--out DIR]`` (default ``fuzz/corpus``, ignored by git).
"""

from __future__ import annotations

import argparse
import collections
import math
import pathlib
import re
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from rwkv_ggml.fileformat import DType, ModelFile, read_model_file, write_model_file  # noqa: E402 (after the path)

TINY_MODELS = REPO_ROOT / ".." / "shared" / "testdata" / "rwkv.cpp-tiny"
DEFAULT_OUT = REPO_ROOT / "fuzz" / "corpus"
FORMATS = ("bin", "gguf", "pth", "safetensors", "state")
# The model the state target also loads its inputs against (targets.state_model).
STATE_MODEL = "tiny-rwkv-5v2-730K-FP32.bin"

_VOCAB = 8
_FFN = 32
_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")


def tiny_models() -> list[pathlib.Path]:
    if not TINY_MODELS.is_dir():
        raise FileNotFoundError(f"the tiny models folder {TINY_MODELS.resolve()} is absent")
    return sorted(TINY_MODELS.glob("tiny-rwkv-*.bin"))


def _rows(raw: np.ndarray, rec_ne: tuple[int, ...], keep: int) -> tuple[tuple[int, ...], np.ndarray]:
    """The first ``keep`` rows (outermost ggml dimension) of a 2-D tensor's bytes."""
    ne = (rec_ne[0], keep)
    return ne, np.ascontiguousarray(raw.reshape(rec_ne[1], -1)[:keep])


def _columns(
    raw: np.ndarray, rec_ne: tuple[int, ...], dtype: DType, keep: int
) -> tuple[tuple[int, ...], np.ndarray]:
    """The first ``keep`` columns (ggml ne[0], whole blocks) of a 2-D tensor's bytes."""
    rows = raw.reshape(rec_ne[1], rec_ne[0] // dtype.block_size, -1)
    ne = (keep, rec_ne[1])
    return ne, np.ascontiguousarray(rows[:, : keep // dtype.block_size])


def shrunk_tensors(mf: ModelFile) -> Iterator[tuple[str, DType, tuple[int, ...], bytes]]:
    """Layer 0 and the non-layer tensors of ``mf``, with the vocabulary and FFN width cut down."""
    for name, rec in mf.tensors.items():
        m = _BLOCK.fullmatch(name)
        if m and m.group(1) != "0":
            continue
        raw = mf.array(name)
        ne = rec.ne
        if name in ("emb.weight", "head.weight"):
            ne, raw = _rows(raw, rec.ne, _VOCAB)
        elif name.endswith("ffn.key.weight"):
            ne, raw = _rows(raw, rec.ne, _FFN)
        elif name.endswith("ffn.value.weight"):
            ne, raw = _columns(raw, rec.ne, rec.dtype, _FFN)
        yield name, rec.dtype, ne, raw.tobytes()


def shrink(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    with read_model_file(src) as mf:
        write_model_file(
            dst,
            n_vocab=_VOCAB,
            n_embed=mf.n_embed,
            n_layer=1,
            data_type=mf.data_type,
            tensors=shrunk_tensors(mf),
            version=mf.version,
        )
    return dst


def state_model_path(folder: pathlib.Path) -> pathlib.Path:
    """The shrunk model the state target loads states against, built in ``folder`` if absent."""
    path = folder / ("shrunk-" + STATE_MODEL)
    if not path.exists():
        shrink(TINY_MODELS / STATE_MODEL, path)
    return path


# --- checkpoints: the rwkv.cpp conversion undone (architecture.md "rwkv.cpp conversion" columns) ---


def _values(mf: ModelFile, name: str, rng: np.random.Generator) -> np.ndarray:
    """Float32 values of a tensor; quantized ones (no dequantizer needed here) become small noise."""
    rec = mf.tensors[name]
    if rec.dtype.is_quantized:
        return rng.standard_normal(rec.shape).astype(np.float32) * 0.05
    return np.array(mf.array(name), dtype=np.float32)


def official_tensors(mf: ModelFile, version: str) -> Iterator[tuple[str, np.ndarray]]:
    """The official checkpoint a (shrunk) model file converts from: names and shapes exact, values
    exact where the transform is invertible (NaN-free otherwise, since values are not what is fuzzed)."""
    rng = np.random.default_rng(0)
    for name in mf.tensors:
        a = _values(mf, name, rng)
        m = _BLOCK.fullmatch(name)
        prefix, suffix = (name[: -len(m.group(2))], m.group(2)) if m else ("", name)
        with np.errstate(all="ignore"):
            if suffix == "att.x_rwkvag":
                for i, c in enumerate("rwkvag"):
                    yield f"{prefix}att.x_{c}", a.reshape(6, -1)[i].reshape(1, 1, -1)
                continue
            if re.fullmatch(r"(att|ffn)\.time_(mix|maa)_[a-z]", suffix):
                a = a.reshape(1, 1, -1)
            elif version == "4" and suffix == "att.time_decay":
                a = np.log(-a)
            elif version.startswith("5") and suffix in ("att.time_decay", "att.time_first", "att.time_faaaa"):
                if suffix == "att.time_decay":
                    a = np.log(-np.log(a))
                elif suffix == "att.time_first":
                    a = np.log(a)
                a = a.reshape(a.shape[0]) if a.shape[1] == 1 else a.reshape(a.shape[0], a.shape[1])
            elif version == "6" and suffix == "att.time_faaaa":
                a = a.reshape(a.shape[0], a.shape[1])
            elif version == "6" and suffix == "att.time_decay":
                a = a.reshape(1, 1, -1)
            elif version == "6" and suffix in ("att.time_maa_w1", "att.time_decay_w1", "att.time_decay_w2"):
                a = a.T
            elif version == "6" and suffix == "att.time_maa_w2":
                a = a.transpose(0, 2, 1)
            elif version == "7" and re.fullmatch(r"att\.[wavg][12]", suffix):
                a = a.T
        yield name, np.ascontiguousarray(np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0))


def _write_checkpoints(model: pathlib.Path, version: str, out: pathlib.Path) -> list[pathlib.Path]:
    from safetensors.numpy import save_file

    with read_model_file(model) as mf:
        tensors = dict(official_tensors(mf, version))
    written = []
    stem = model.stem.removeprefix("shrunk-tiny-rwkv-")
    path = out / "safetensors" / f"{stem}.safetensors"
    save_file(tensors, str(path))
    written.append(path)
    path = out / "safetensors" / f"{stem}-f16.safetensors"
    save_file({k: v.astype(np.float16) for k, v in tensors.items()}, str(path))
    written.append(path)
    try:
        import torch
    except ImportError:
        return written
    state_dict = {k: torch.from_numpy(v) for k, v in tensors.items()}
    path = out / "pth" / f"{stem}.pth"
    torch.save(state_dict, str(path))
    written.append(path)
    path = out / "pth" / f"{stem}-bf16.pth"
    torch.save({k: v.to(torch.bfloat16) for k, v in state_dict.items()}, str(path))
    written.append(path)
    path = out / "pth" / f"{stem}-views.pth"
    torch.save(_views(torch, tensors), str(path))
    written.append(path)
    try:
        import safetensors.torch

        path = out / "safetensors" / f"{stem}-bf16.safetensors"
        safetensors.torch.save_file({k: v.to(torch.bfloat16) for k, v in state_dict.items()}, str(path))
        written.append(path)
    except ImportError:
        pass
    return written


def _views(torch: Any, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    """The state dict as a training script may save it, for the reader's less common paths: matrices
    as transposed (non-contiguous) views, vectors as slices of one shared storage, one float64 tensor,
    one ``nn.Parameter``, all nested under ``"state_dict"`` next to other entries."""
    flat = [k for k, v in tensors.items() if v.ndim != 2]
    shared = torch.from_numpy(np.concatenate([tensors[k].reshape(-1) for k in flat]))
    state: dict[str, Any] = collections.OrderedDict()
    start = 0
    for name, value in tensors.items():
        if value.ndim == 2:
            state[name] = torch.from_numpy(np.ascontiguousarray(value.T)).T
        else:
            state[name] = shared[start : start + value.size].view(value.shape)
            start += value.size
    state["ln_out.bias"] = state["ln_out.bias"].double()
    state["ln_out.weight"] = torch.nn.Parameter(state["ln_out.weight"].clone(), requires_grad=False)
    return {"state_dict": state, "epoch": 3, "note": "fuzz seed"}


def _write_states(model_path: pathlib.Path, out: pathlib.Path) -> list[pathlib.Path]:
    from rwkv_ggml import Model
    from rwkv_ggml.state import State

    stem = model_path.stem.removeprefix("shrunk-tiny-rwkv-")
    with Model(model_path, threads=1) as model:
        _, after = model.eval(1)
        written = []
        for label, state in (("init", State.new(model)), ("after", State.from_array(model, after))):
            path = out / "state" / f"{stem}-{label}.state"
            state.save(path)
            written.append(path)
    return written


def build(out: pathlib.Path = DEFAULT_OUT) -> dict[str, list[pathlib.Path]]:
    """Write the seed corpus under ``out/<format>/``; returns the files per format."""
    from rwkv_ggml.arch import detect_version

    for fmt in FORMATS:
        (out / fmt).mkdir(parents=True, exist_ok=True)
    files: dict[str, list[pathlib.Path]] = {fmt: [] for fmt in FORMATS}
    versions_done: set[str] = set()
    for src in tiny_models():
        model = shrink(src, out / "bin" / f"shrunk-{src.name}")
        files["bin"].append(model)
        with read_model_file(model) as mf:
            version = detect_version(mf.tensors)
            quantized = DType(mf.data_type).is_quantized
        # One checkpoint per version, from an unquantized file where the version has one.
        if version not in versions_done and (not quantized or version == "6"):
            versions_done.add(version)
            for path in _write_checkpoints(model, version, out):
                files[path.parent.name].append(path)
        if version in ("6", "7"):
            files["gguf"] += _write_gguf(model, out)
        # FP32 includes STATE_MODEL: a state of the exact model the state target loads against, so
        # the target's strict path is reachable.
        if src.name.endswith(("FP32.bin", "Q5_1.bin")):
            files["state"] += _write_states(model, out)
    return files


def _write_gguf(model: pathlib.Path, out: pathlib.Path) -> list[pathlib.Path]:
    """The shrunk v6/v7 model as a GGUF file laid out like llama.cpp's converter's, with a 8-token
    vocabulary (and, for v6, the rescaled layout); none without the ``gguf`` package (test extra)."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        return []
    from tests.reference.gguf_files import write_gguf

    dst = out / "gguf" / model.with_suffix(".gguf").name
    tokens = ["<s>"] + [repr(bytes([97 + i]))[2:-1] for i in range(_VOCAB - 1)]
    return [write_gguf(model, dst, rescale_every=1, tokens=tokens)]


def largest(folder: pathlib.Path) -> int:
    """Size of the biggest seed in a folder (the fuzzer's -max_len must allow it)."""
    return max((p.stat().st_size for p in folder.iterdir() if p.is_file()), default=4096)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the fuzzers' seed corpus from the tiny models.")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    files = build(args.out)
    for fmt, paths in files.items():
        size = sum(p.stat().st_size for p in paths)
        print(f"{fmt}: {len(paths)} seeds, {math.ceil(size / 1024)} KiB in {args.out / fmt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
