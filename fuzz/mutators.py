"""Structure-aware mutation of ``.bin`` model files for the ``bin`` target.

Byte-level mutation of a model file mostly lands in weight bytes nobody validates, and a change to a
record's sizes almost always leaves the data length wrong, so the file is refused by the container
parser before the architecture checks and the model loader see it. This mutator parses the file into
header and records, changes one thing a real (damaged or hand-made) file could have differently (a
header field, a tensor's type, sizes or name, a record dropped, duplicated into another layer or moved)
and writes it back with each record's data resized to fit, so the result is usually a well-formed
container whose *model* is wrong. A share of the calls fall back to libFuzzer's byte-level mutation.
"""

from __future__ import annotations

import random
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

from rwkv_ggml.arch_tensors import LAYER_NAMES
from rwkv_ggml.fileformat import DType

_HEADER = struct.Struct("<6I")
_RECORD_HEAD = struct.Struct("<3i")
# Elements per block and bytes per block of each file type id (formats.md §2 / §5.1), from the reader's table.
_LAYOUT = {int(t): (t.block_size, t.type_size) for t in DType}
_MAX_DATA = 1 << 20  # never grow one tensor's data beyond this
# Per-layer tensor names of every RWKV version, so renames can produce foreign or misplaced tensors.
_SUFFIXES = tuple(sorted(frozenset().union(*LAYER_NAMES.values())))
_GLOBALS = ("emb.weight", "head.weight", "ln_out.weight", "ln_out.bias")
_LAYER = re.compile(r"blocks\.(\d+)\.(.+)")


@dataclass(frozen=True)
class _Record:
    name: bytes
    type_id: int
    ne: tuple[int, ...]
    data: bytes


def parse(data: bytes) -> tuple[list[int], list[_Record]] | None:
    """Header fields and records of a well-formed container, or None."""
    if len(data) < _HEADER.size:
        return None
    header = list(_HEADER.unpack_from(data))
    records, pos = [], _HEADER.size
    while pos < len(data):
        if pos + _RECORD_HEAD.size > len(data):
            return None
        dims, key_length, type_id = _RECORD_HEAD.unpack_from(data, pos)
        layout = _LAYOUT.get(type_id)
        if not 1 <= dims <= 3 or not 1 <= key_length <= 1024 or layout is None:
            return None
        pos += _RECORD_HEAD.size
        if pos + 4 * dims + key_length > len(data):
            return None
        ne = struct.unpack_from(f"<{dims}i", data, pos)
        pos += 4 * dims
        name = data[pos : pos + key_length]
        pos += key_length
        size = _nbytes(type_id, ne)
        if size is None or pos + size > len(data):
            return None
        records.append(_Record(name, type_id, tuple(ne), data[pos : pos + size]))
        pos += size
    return header, records


def _nbytes(type_id: int, ne: tuple[int, ...]) -> int | None:
    block, size = _LAYOUT.get(type_id, (0, 0))
    count = 1
    for n in ne:
        count *= n
    if block == 0 or count <= 0 or ne[0] % block:
        return None
    return count // block * size


def serialize(header: list[int], records: list[_Record]) -> bytes:
    out = [_HEADER.pack(*(v & 0xFFFFFFFF for v in header))]
    for r in records:
        out.append(_RECORD_HEAD.pack(len(r.ne), len(r.name), r.type_id))
        out.append(struct.pack(f"<{len(r.ne)}i", *(max(-(1 << 31), min(v, (1 << 31) - 1)) for v in r.ne)))
        out.append(r.name)
        out.append(r.data)
    return b"".join(out)


def _fit(record: _Record) -> _Record:
    """The record with its data cut or repeated to the size its type and sizes need (when sane)."""
    want = _nbytes(record.type_id, record.ne)
    if want is None or want > _MAX_DATA:
        return record
    data = record.data or b"\0"
    data = (data * (want // len(data) + 1))[:want]
    return replace(record, data=data)


def _interesting(rng: random.Random, value: int) -> int:
    return rng.choice(
        [
            0,
            1,
            2,
            3,
            5,
            8,
            32,
            64,
            100,
            101,
            value - 1,
            value + 1,
            value * 2,
            max(value // 2, 1),
            value * 32,
            -1,
            (1 << 31) - 1,
            (1 << 32) - 1,
            1 << 20,
            rng.randrange(1 << 16),
        ]
    )


def _rename(rng: random.Random, name: str, layers: int) -> str:
    m = _LAYER.fullmatch(name)
    choice = rng.randrange(5)
    if m and choice == 0:  # another layer
        return f"blocks.{rng.choice([0, 1, 2, layers, layers + 1, rng.randrange(1 << 20)])}.{m.group(2)}"
    if m and choice == 1:  # another tensor of the same layer
        return f"blocks.{m.group(1)}.{rng.choice(_SUFFIXES)}"
    if choice == 2:
        return rng.choice(_GLOBALS)
    if choice == 3:  # a name that only looks like a layer
        return rng.choice(
            [
                "blocks.x.ln1.weight",
                "blocks..ln1.weight",
                "blocks.0",
                "blocks.\u00b2.a",
                "blocks.-1.ln1.weight",
                "blocks.01.ln1.weight",
                name + "\0",
                name.upper(),
            ]
        )
    return f"blocks.0.{rng.choice(_SUFFIXES)}"


def _mutate_structure(rng: random.Random, header: list[int], records: list[_Record]) -> None:
    op = rng.randrange(9)
    if op == 0 or not records:
        field = rng.randrange(1, 6)
        header[field] = _interesting(rng, header[field])
        return
    i = rng.randrange(len(records))
    r = records[i]
    if op == 1:
        records[i] = _fit(replace(r, type_id=rng.choice([0, 1, 2, 3, 7, 8, 9, rng.randrange(-2, 20)])))
    elif op == 2 and r.ne:
        ne = list(r.ne)
        d = rng.randrange(len(ne))
        ne[d] = _interesting(rng, ne[d])
        records[i] = _fit(replace(r, ne=tuple(ne)))
    elif op == 3:
        ne = list(r.ne)
        if len(ne) < 3 and rng.random() < 0.5:
            ne.insert(rng.randrange(len(ne) + 1), rng.choice([1, 1, 2, 5, 6]))
        elif len(ne) > 1:
            ne.pop(rng.randrange(len(ne)))
        else:
            ne = ne[::-1]
        records[i] = _fit(replace(r, ne=tuple(ne)))
    elif op == 4:
        records[i] = _fit(replace(r, ne=tuple(reversed(r.ne))))
    elif op == 5:
        name = _rename(rng, r.name.decode("utf-8", "replace"), header[4])
        records[i] = replace(r, name=name.encode("utf-8")[:1024] or b"x")
    elif op == 6 and len(records) > 1:
        del records[i]
    elif op == 7:
        # A copy of a whole layer as a new one, with n_layer raised to match (or not).
        layer = rng.randrange(max(header[4], 1) + 1)
        prefix = b"blocks.0."
        copies = [
            replace(x, name=b"blocks.%d." % layer + x.name[len(prefix) :])
            for x in records
            if x.name.startswith(prefix)
        ]
        records += [c for c in copies if c.name not in {x.name for x in records}]
        if rng.random() < 0.8:
            header[4] = max(header[4], layer + 1)
    else:
        j = rng.randrange(len(records))
        records[i], records[j] = records[j], records[i]


def mutate_bin(
    data: bytes, max_size: int, seed: int, fallback: Callable[[bytes, int], bytes] | None = None
) -> bytes:
    """One mutation of ``data`` (atheris custom-mutator signature, plus the byte-level fallback)."""
    rng = random.Random(seed)
    parsed = parse(data) if rng.random() < 0.75 else None
    if parsed is None:
        if fallback is None:
            return data
        return fallback(data, max_size)
    header, records = parsed
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        _mutate_structure(rng, header, records)
    out = serialize(header, records)
    return out if len(out) <= max_size else out[:max_size]


# --- safetensors --------------------------------------------------------------------------------

# Names of the three key layouts the checkpoint reader recognises, for renames across layouts.
_CHECKPOINT_NAMES = (
    "emb.weight",
    "head.weight",
    "ln_out.weight",
    "ln_out.bias",
    "blocks.0.att.time_decay",
    "blocks.0.att.time_first",
    "blocks.0.att.time_faaaa",
    "blocks.0.att.time_state",
    "blocks.1.ln1.weight",
    "blocks.0.att.x_r",
    "blocks.0.att.w1",
    "blocks.0.att.r_k",
    "blocks.0.att.time_maa_w2",
    "rwkv.embeddings.weight",
    "rwkv.head.weight",
    "rwkv.blocks.0.pre_ln.weight",
    "rwkv.blocks.0.attention.time_mix_key",
    "rwkv.blocks.0.feed_forward.key.weight",
    "rwkv.ln_out.weight",
    "model.embeddings.weight",
    "model.norm.weight",
    "lm_head.weight",
    "model.layers.0.attn.r_proj.weight",
    "model.layers.0.attn.x_r",
    "model.layers.0.attn.w_lora.lora.0.weight",
    "model.layers.0.attn.w_lora.lora.2.bias",
    "model.layers.0.attn.g_norm.weight",
    "blocks.0.att.lora_A",
    "blocks.0.att.key.weight.lora_B",
    "__metadata__",
)
_ST_DTYPES = ("F32", "F16", "BF16", "F64", "I8", "U8", "I32", "I64", "BOOL", "F8_E4M3", "X")


def _mutate_entry(rng: random.Random, entry: dict[str, object]) -> None:
    op = rng.randrange(4)
    shape = entry.get("shape")
    if op == 0:
        entry["dtype"] = rng.choice(_ST_DTYPES)
    elif op == 1 and isinstance(shape, list):
        new = list(shape)
        if new and rng.random() < 0.6:
            d = rng.randrange(len(new))
            value = new[d] if isinstance(new[d], int) else 1
            new[d] = _interesting(rng, value)
        elif rng.random() < 0.5:
            new.insert(rng.randrange(len(new) + 1), rng.choice([0, 1, 1, 2, 6]))
        elif new:
            new.pop(rng.randrange(len(new)))
        entry["shape"] = new
    elif op == 2:
        offsets = entry.get("data_offsets")
        if isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets):
            i = rng.randrange(2)
            offsets = list(offsets)
            offsets[i] = _interesting(rng, offsets[i])
            entry["data_offsets"] = offsets
    else:
        entry[rng.choice(["shape", "dtype", "data_offsets"])] = rng.choice([None, [], "x", 1.5, {}, [[1]]])
    if op < 2 and rng.random() < 0.7:
        _fit_offsets(entry)


_ITEM_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I8": 1, "U8": 1, "I32": 4, "I64": 8, "BOOL": 1}


def _fit_offsets(entry: dict[str, object]) -> None:
    """Make data_offsets span what shape and dtype need (from the same start), so the entry passes
    the size check and its shape reaches the code behind it."""
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    item = _ITEM_SIZE.get(str(entry.get("dtype")))
    if item is None or not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
        return
    if not isinstance(offsets, list) or len(offsets) != 2 or not isinstance(offsets[0], int):
        return
    count = item
    for d in shape:
        count *= d
    entry["data_offsets"] = [offsets[0], offsets[0] + count]


def mutate_safetensors(
    data: bytes, max_size: int, seed: int, fallback: Callable[[bytes, int], bytes] | None = None
) -> bytes:
    """One mutation of a safetensors file's JSON header (the data region is kept as is)."""
    import json

    rng = random.Random(seed)
    header: object = None
    if len(data) >= 8 and rng.random() < 0.75:
        length = int.from_bytes(data[:8], "little")
        try:
            header = json.loads(data[8 : 8 + length])
        except ValueError:
            header = None
    if not isinstance(header, dict) or not header:
        return fallback(data, max_size) if fallback is not None else data
    body = data[8 + length :]
    names = list(header)
    for _ in range(rng.choice([1, 1, 2, 3])):
        name = rng.choice(names)
        op = rng.randrange(5)
        if op <= 1 and isinstance(header.get(name), dict):
            _mutate_entry(rng, header[name])
        elif op == 2 and name in header:  # rename, keeping the entry
            new = rng.choice(_CHECKPOINT_NAMES) if rng.random() < 0.5 else _rename(rng, name, 2)
            header[new] = header.pop(name)
            names = list(header)
        elif op == 3 and len(header) > 1 and name in header:
            del header[name]
            names = list(header)
        else:  # a copy under another layer's name: same bytes, aliasing the original
            m = _LAYER.fullmatch(name)
            if m and name in header:
                header[f"blocks.{rng.choice([1, 2, 3, 1 << 20])}.{m.group(2)}"] = header[name]
    encoded = json.dumps(header).encode("utf-8")
    out = len(encoded).to_bytes(8, "little") + encoded + body
    return out if len(out) <= max_size else out[:max_size]


# --- PyTorch zip checkpoints --------------------------------------------------------------------


def mutate_pth(
    data: bytes, max_size: int, seed: int, fallback: Callable[[bytes, int], bytes] | None = None
) -> bytes:
    """One mutation of a member of a ``.pth`` zip (mostly ``data.pkl``), the archive rebuilt around
    it, so byte-level changes hit the pickle instead of the weights and the zip stays readable."""
    import io
    import zipfile

    rng = random.Random(seed)
    if fallback is None:
        return data
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [(info.filename, zf.read(info)) for info in zf.infolist()]
    except Exception:
        members = []
    if not members or rng.random() < 0.25:
        return fallback(data, max_size)
    pickles = [i for i, (name, _) in enumerate(members) if name.endswith("data.pkl")]
    index = rng.choice(pickles) if pickles and rng.random() < 0.8 else rng.randrange(len(members))
    name, content = members[index]
    op = rng.randrange(10)
    if op == 0:
        del members[index]
    elif op == 1:
        members[index] = (
            rng.choice(["data.pkl", "a/b/data.pkl", name + "x", "archive/data/0", "../x"]),
            content,
        )
    else:
        members[index] = (name, fallback(content, max(len(content) * 2, 64)))
    compression = zipfile.ZIP_DEFLATED if rng.random() < 0.1 else zipfile.ZIP_STORED
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as zf:
        for member_name, member_data in members:
            zf.writestr(member_name, member_data)
    result = out.getvalue()
    return result if len(result) <= max_size else result[:max_size]


Mutator = Callable[[bytes, int, int, "Callable[[bytes, int], bytes] | None"], bytes]
# Targets whose inputs get a structure-aware mutator (the others use libFuzzer's byte mutations).
MUTATORS: dict[str, Mutator] = {"bin": mutate_bin, "pth": mutate_pth, "safetensors": mutate_safetensors}
