"""Hostile checkpoints: bounded memory, typed errors naming the file, no hangs.

Each case is a file an attacker (or a broken download) can hand to ``load_checkpoint`` /
``convert``: an expanded view declaring gigabytes over a one-element storage, JSON nested
beyond Python's recursion limit, impossible shapes, a zip needing an unknown version, a FIFO
where a file should be. Whatever happens underneath, only rwkv_ggml's typed errors may come
out, and no case may allocate more than the file holds or block. The cases that could hang or
exhaust memory if they regressed run in a child process under a time and address-space limit.
"""

from __future__ import annotations

import json
import os
import random
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from rwkv_ggml.checkpoint import load_checkpoint
from rwkv_ggml.errors import ModelFormatError, ModelIOError, RwkvGgmlError
from tests.formats.test_checkpoint import safetensors_bytes
from tests.formats.test_checkpoint_pickle import _FakeStorage, _FakeTensor, crafted_pth

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_child(code: str, *, timeout: float = 120, address_space_gib: int | None = None) -> str:
    """Run ``code`` in a fresh interpreter (this repository importable) and return its stdout.

    ``address_space_gib`` caps the child's virtual memory, so a regression that tries to
    allocate gigabytes fails there with MemoryError instead of exhausting the machine.
    """
    prelude = "import resource, sys\n"
    if address_space_gib is not None:
        limit = address_space_gib << 30
        prelude += f"resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# ---------------------------------------------------------------------------------------------
# Expanded (stride-0) views: memory is bounded by the data in the file


def test_huge_expanded_view_is_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    path = tmp_path / "expanded.pth"
    big = torch.zeros(1).expand(65536, 65536)  # 4 bytes of storage, 16 GiB declared
    torch.save({"emb.weight": big, "small": torch.arange(4.0).reshape(4, 1).expand(4, 3)}, str(path))
    assert path.stat().st_size < 4096
    with pytest.raises(ModelFormatError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: tensor 'emb.weight'"), message
    assert "4294967296 elements" in message and "holds only 1" in message


def test_huge_expanded_view_converts_to_an_error_in_bounded_memory(tmp_path: Path) -> None:
    """The whole converter, in a child capped at 3 GiB of address space: one error line, small RSS."""
    src = tmp_path / "expanded.pth"
    big = torch.zeros(1).expand(65536, 65536)
    torch.save(
        {"emb.weight": big, "head.weight": big, "ln_out.weight": torch.ones(1).expand(65536)}, str(src)
    )
    out = run_child(
        "from rwkv_ggml.conversion import convert\n"
        "from rwkv_ggml.errors import ModelFormatError\n"
        "try:\n"
        f"    convert({str(src)!r}, {str(tmp_path / 'out.bin')!r}, 'f32', progress=False)\n"
        "    print('converted')\n"
        "except ModelFormatError as e:\n"
        "    print('refused:', e)\n"
        "print('maxrss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n",
        address_space_gib=3,
    )
    assert "refused:" in out and "emb.weight" in out, out
    maxrss_kib = int(out.split("maxrss_kib")[1])
    assert maxrss_kib < 1 << 20, f"peak RSS {maxrss_kib} KiB for a {src.stat().st_size}-byte file"
    assert not (tmp_path / "out.bin").exists()


def test_expansion_limit_counts_elements_beyond_the_storage(tmp_path: Path) -> None:
    """Just over the allowance (for the whole file) is refused; a view covering its storage several
    times over but declaring no more elements than the storage holds (overlapping strides) reads."""
    path = tmp_path / "limit.pth"
    row, small = _FakeStorage("0", 4096), _FakeStorage("1", 16)
    tensors = {
        "over": _FakeTensor(row, 0, (4098, 4096), (0, 1)),  # one row repeated: 2**24 + 4096 more elements
        "overlap": _FakeTensor(small, 0, (4, 4), (1, 1)),  # 16 elements from a 16-element storage
    }
    blobs = {"0": bytes(4 * 4096), "1": struct.pack("<16f", *range(16))}
    crafted_pth(path, tensors, blobs)
    with pytest.raises(ModelFormatError, match=r"tensor 'over'.*16785408 elements.*holds only 4096"):
        load_checkpoint(path)
    # The allowance is for the whole file: two views each declaring 2**23 + 4096 elements beyond the storage.
    half = {"a": _FakeTensor(row, 0, (2050, 4096), (0, 1)), "b": _FakeTensor(row, 0, (2050, 4096), (0, 1))}
    crafted_pth(path, half, blobs)
    with pytest.raises(ModelFormatError, match=r"tensor 'b'.*8396800 elements"):
        load_checkpoint(path)
    del tensors["over"]
    crafted_pth(path, tensors, blobs)
    with load_checkpoint(path) as ckpt:
        assert ckpt["overlap"].numpy().tolist() == [[i + j for j in range(4)] for i in range(4)]


# ---------------------------------------------------------------------------------------------
# Malformed files: every one is a ModelFormatError naming the file


def nested_json(depth: int) -> bytes:
    return b'{"a": ' + b"[" * depth + b"]" * depth + b"}"


def zip_version_needed(path: Path, version: int) -> None:
    """Rewrite every "version needed to extract" field of a zip (local and central headers)."""
    data = bytearray(path.read_bytes())
    for magic, at in ((b"PK\x03\x04", 4), (b"PK\x01\x02", 6)):
        i = data.find(magic)
        while i >= 0:
            data[i + at] = version
            i = data.find(magic, i + 4)
    path.write_bytes(bytes(data))


def tensor_header(shape: list[int]) -> bytes:
    return safetensors_bytes({"emb.weight": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}})


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (struct.pack("<Q", 200_006) + nested_json(100_000), "nests too deeply"),
        (tensor_header([0, 2**40]), r"impossible shape \[0, 1099511627776\]"),
        (tensor_header([0, 2**70]), "impossible shape"),
        (tensor_header([0] + [1] * 40), "impossible shape"),
        (
            safetensors_bytes(None, raw_header=b'{"a": {"dtype": "F32", "shape": [1' + b"0" * 5000 + b"]}}"),
            "not valid JSON",
        ),
        (safetensors_bytes(None, raw_header=b'{"a\xff": 1}'), "not valid JSON"),
        (tensor_header([2**63]), "impossible shape"),
    ],
    ids=["nested-json", "empty-2**40", "empty-2**70", "41-dims", "5000-digit-dim", "bad-utf8", "dim-2**63"],
)
def test_malformed_safetensors_is_a_format_error(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError, match=match) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(str(path))


def test_nested_shard_index_is_a_format_error(tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    index.write_bytes(nested_json(100_000))
    with pytest.raises(ModelFormatError, match=rf"^{re.escape(str(index))}: shard index nests too deeply"):
        load_checkpoint(index)


def test_zip_needing_an_unknown_version_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "v100.pth"
    torch.save({"emb.weight": torch.zeros(2, 2)}, str(path))
    zip_version_needed(path, 100)
    with pytest.raises(ModelFormatError, match=rf"^{re.escape(str(path))}: .*zip file version 10\.0"):
        load_checkpoint(path)


def test_impossible_pickled_sizes_are_format_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    storage = _FakeStorage("0", 4)
    for size, offset in (((0, 2**70), 0), ((0, 2**40), 0), ((10**5000,), 0), ((2,), 10**5000)):
        crafted_pth(path, {"t": _FakeTensor(storage, offset, size, (1,) * len(size))}, {"0": bytes(16)})
        with pytest.raises(ModelFormatError) as info:
            load_checkpoint(path)
        assert str(info.value).startswith(str(path)) and len(str(info.value)) < 1000


def mutate(seed: bytes, rng: random.Random) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.choice((1, 1, 2, 4, 16))):
        pos, op = rng.randrange(len(data)), rng.random()
        if op < 0.6:
            data[pos] = rng.randrange(256)
        elif op < 0.7:
            data[pos : pos + 4] = rng.choice((b"\xff\xff\xff\xff", b"\0\0\0\0", b"\x7f\xff\xff\xff", b"9999"))
        elif op < 0.85:
            del data[pos : pos + rng.randrange(1, 64)]
        else:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    return bytes(data)


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_mutated_checkpoints_raise_only_typed_errors(tmp_path: Path, kind: str) -> None:
    """A small deterministic mutation sweep: loading and reading every tensor either works or
    raises one of our errors (whatever zipfile, pickle, json, struct or numpy raise underneath)."""
    g = torch.Generator().manual_seed(0)
    sd = {
        "emb.weight": torch.randn(8, 4, generator=g),
        "blocks.0.ln1.weight": torch.randn(4, generator=g).half(),
        "t": torch.randn(3, 5, generator=g).t(),
        "b": torch.randn(2, 3, generator=g).bfloat16(),
    }
    seed_path = tmp_path / f"seed.{kind}"
    if kind == "pth":
        torch.save(sd, str(seed_path))
    else:
        safetensors_torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(seed_path))
    seed = seed_path.read_bytes()
    rng = random.Random(4)
    path = tmp_path / f"mutant.{kind}"
    for _ in range(800):
        path.write_bytes(mutate(seed, rng))
        try:
            with load_checkpoint(path) as ckpt:
                for name in ckpt:
                    ckpt[name].numpy()
        except RwkvGgmlError:
            pass


# ---------------------------------------------------------------------------------------------
# Non-regular files: refused at once, never opened for a blocking read


def test_fifos_and_folders_are_refused_without_blocking(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    safetensors_torch.save_file({"emb.weight": torch.zeros(2, 2)}, str(good / "a.safetensors"))
    fifo = tmp_path / "model.pth"
    os.mkfifo(fifo)
    in_folder = tmp_path / "folder"
    in_folder.mkdir()
    os.mkfifo(in_folder / "model.safetensors")
    index_fifo = tmp_path / "fifo_index" / "model.safetensors.index.json"
    index_fifo.parent.mkdir()
    os.mkfifo(index_fifo)
    shard_fifo = tmp_path / "fifo_shard"
    shard_fifo.mkdir()
    os.mkfifo(shard_fifo / "b.safetensors")
    (shard_fifo / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"x": "b.safetensors"}})
    )
    shard_dir = tmp_path / "dir_shard"
    shard_dir.mkdir()
    (shard_dir / "b.safetensors").mkdir()
    (shard_dir / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"x": "b.safetensors"}})
    )
    cases = {
        str(fifo): str(fifo),
        str(in_folder): str(in_folder / "model.safetensors"),
        str(index_fifo): str(index_fifo),
        str(shard_fifo): str(shard_fifo / "b.safetensors"),
        str(shard_dir / "model.safetensors.index.json"): str(shard_dir / "b.safetensors"),
    }
    # In a child with a timeout: if a FIFO were opened for reading, it would block forever.
    out = run_child(
        "import json\n"
        "from rwkv_ggml.checkpoint import load_checkpoint\n"
        "from rwkv_ggml.conversion import convert\n"
        f"for src in {list(cases)!r}:\n"
        "    for call in (lambda: load_checkpoint(src),\n"
        "                 lambda: convert(src, src + '.bin', progress=False)):\n"
        "        try:\n"
        "            call()\n"
        "            print(json.dumps([src, 'no error', '']))\n"
        "        except Exception as e:\n"
        "            print(json.dumps([src, type(e).__name__, str(e)]))\n",
        timeout=60,
    )
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == 2 * len(cases)
    for src, kind, message in results:
        assert kind == ModelIOError.__name__, (src, kind, message)
        assert f"'{cases[src]}' is not a regular file" in message, (src, message)
    with load_checkpoint(good) as ckpt:  # a folder with a real file still works
        assert list(ckpt) == ["emb.weight"]
