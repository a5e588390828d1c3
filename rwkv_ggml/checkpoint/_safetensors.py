"""safetensors checkpoints, single or sharded (``*.safetensors.index.json``)."""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path
from typing import Any

from ..errors import ModelFormatError, ModelIOError, UnsupportedError
from ._container import Checkpoint, open_regular_file
from ._tensor import (
    _MAX_HEADER_BYTES,
    _check_shape,
    _contiguous_strides,
    _ElemType,
    _et,
    _numel,
    _short,
    _Spec,
)
from .layouts import _detect_layout

# safetensors dtype strings -> element type. FP8 types are rejected (never used by RWKV).
_SAFETENSORS_TYPES: dict[str, _ElemType] = {
    "F64": _et("F64", "<f8"),
    "F32": _et("F32", "<f4"),
    "F16": _et("F16", "<f2"),
    "BF16": _et("BF16", "<u2", bf16=True),
    "I64": _et("I64", "<i8"),
    "I32": _et("I32", "<i4"),
    "I16": _et("I16", "<i2"),
    "I8": _et("I8", "<i1"),
    "U64": _et("U64", "<u8"),
    "U32": _et("U32", "<u4"),
    "U16": _et("U16", "<u2"),
    "U8": _et("U8", "<u1"),
    "BOOL": _et("BOOL", "?"),
}


# ---------------------------------------------------------------------------------------------
# safetensors


def _open_sharded(ckpt: Checkpoint, index_path: Path) -> None:
    """A ``*.safetensors.index.json``: its ``weight_map`` names the shards, read like one file."""
    with open_regular_file(index_path) as f:
        try:
            text = f.read(_MAX_HEADER_BYTES + 1)
        except OSError as e:
            raise ModelIOError(f"cannot read '{index_path}': {e.strerror or e}") from e
    if len(text) > _MAX_HEADER_BYTES:
        raise ModelFormatError(f"{index_path}: shard index is larger than {_MAX_HEADER_BYTES} bytes")
    index = _parse_json(text, f"{index_path}: shard index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelFormatError(f"{index_path}: missing or malformed 'weight_map'")
    shards: list[Path] = []
    for shard in weight_map.values():
        shard_path = index_path.parent / shard
        if Path(shard).name != shard or shard in ("", ".", ".."):
            raise ModelFormatError(f"{index_path}: shard name '{_short(shard)}' is not a plain file name")
        if shard_path not in shards:
            shards.append(shard_path)
    _open_safetensors(ckpt, shards)


def _parse_json(data: bytes, what: str) -> Any:
    """JSON from a file; malformed text, bad UTF-8 and absurd nesting are all a ModelFormatError."""
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        kind = "nests too deeply" if isinstance(e, RecursionError) else "is not valid JSON"
        raise ModelFormatError(f"{what} {kind} ({_short(e)})") from e


def _open_safetensors(ckpt: Checkpoint, files: list[Path]) -> None:
    entries: list[tuple[str, _Spec, Path]] = []
    for file in files:
        mm = ckpt._map_file(file)
        size = len(mm)
        if size < 8:
            raise ModelFormatError(f"{file}: safetensors file is only {size} bytes (truncated)")
        (header_len,) = struct.unpack_from("<Q", mm, 0)
        if header_len > min(size - 8, _MAX_HEADER_BYTES):
            raise ModelFormatError(
                f"{file}: safetensors header claims {header_len} bytes but the file has {size - 8} after "
                "the length field (truncated or not a safetensors file)"
            )
        header = _parse_json(bytes(mm[8 : 8 + header_len]), f"{file}: safetensors header")
        if not isinstance(header, dict):
            raise ModelFormatError(f"{file}: safetensors header is not a JSON object")
        data_start = 8 + header_len
        data_size = size - data_start
        found: list[tuple[int, str, _Spec]] = []
        for name, info in header.items():
            if name == "__metadata__":
                if isinstance(info, dict):
                    ckpt.metadata.update({str(k): str(v) for k, v in info.items()})
                continue
            spec = _safetensors_spec(file, name, info, mm, data_start, data_size)
            found.append((spec.base, name, spec))
        found.sort(key=lambda item: item[0])  # file order: the order the writer laid tensors out
        entries.extend((name, spec, file) for _, name, spec in found)
    if not entries:
        raise ModelFormatError(f"{files[0]}: safetensors file holds no tensors")
    ckpt.layout = _detect_layout([name for name, _, _ in entries])
    for name, spec, file in entries:
        ckpt._add(name, spec, file)


def _safetensors_spec(
    file: Path, name: str, info: Any, mm: mmap.mmap, data_start: int, data_size: int
) -> _Spec:
    what = f"{file}: tensor '{name}'"
    if not isinstance(info, dict):
        raise ModelFormatError(f"{what}: header entry is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str):
        raise ModelFormatError(f"{what}: missing dtype")
    etype = _SAFETENSORS_TYPES.get(dtype)
    if etype is None:
        raise UnsupportedError(f"{what}: dtype {_short(dtype)} is not supported (use F32, F16 or BF16)")
    if not isinstance(shape, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise ModelFormatError(f"{what}: malformed shape {_short(shape)}")
    _check_shape(tuple(shape), what)
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise ModelFormatError(f"{what}: malformed data_offsets {_short(offsets)}")
    begin, end = offsets
    numel = _numel(tuple(shape))
    if not 0 <= begin <= end:
        raise ModelFormatError(f"{what}: data_offsets [{begin}, {end}] are not an increasing pair")
    if end - begin != numel * etype.raw.itemsize:
        raise ModelFormatError(
            f"{what}: data_offsets span {end - begin} bytes but shape {shape} of {dtype} needs "
            f"{numel * etype.raw.itemsize}"
        )
    if end > data_size:
        raise ModelFormatError(
            f"{what}: data ends at byte {data_start + end} but the file has only {data_start + data_size} "
            "bytes (truncated)"
        )
    return _Spec(
        buffer=lambda: mm,
        base=data_start + begin,
        storage_numel=numel,
        etype=etype,
        offset=0,
        shape=tuple(shape),
        strides=_contiguous_strides(tuple(shape)),
    )
