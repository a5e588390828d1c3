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


def model_bytes(tmp_path: pathlib.Path, seed: pathlib.Path,
                extra: list[tuple[str, DType, tuple[int, ...], bytes]]) -> bytes:
    """The seed model's bytes with ``extra`` tensor records appended."""
    with read_model_file(seed) as mf:
        n_vocab, n_embed, n_layer, data_type = mf.n_vocab, mf.n_embed, mf.n_layer, mf.data_type
    out = tmp_path / "model.bin"
    write_model_file(out, n_vocab=n_vocab, n_embed=n_embed, n_layer=n_layer, data_type=data_type,
                     tensors=[*tensors_of(seed), *extra])
    return out.read_bytes()


@pytest.mark.xfail(strict=True, reason="arch._check_layers_and_foreign takes 'blocks.².x' for a layer number "
                                       "(str.isdigit accepts superscripts) and int('²') raises a bare "
                                       "ValueError; fix in arch.py: accept ASCII digits only")
def test_bin_layer_index_with_a_superscript_digit(tmp_path: pathlib.Path, shrunk_v4: pathlib.Path) -> None:
    """Found by the bin target: an extra tensor named 'blocks.\u00b2.x' (valid UTF-8 name)."""
    data = model_bytes(tmp_path, shrunk_v4, [("blocks.\u00b2.x", DType.F32, (1,), b"\0" * 4)])
    assert_no_finding(targets.fuzz_bin, data)
