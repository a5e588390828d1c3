"""The rwkv-ggml command line, run as ``python -m rwkv_ggml`` in a subprocess, as a user would.

Every command on success, and the mistakes users make: a missing model, a file that is not a model,
bad flags, an empty prompt. A mistake must give a non-zero exit and exactly one stderr line
``rwkv-ggml: error: ...``, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rwkv_ggml.fileformat import read_model_file
from rwkv_ggml.generation import complete
from rwkv_ggml.model import Model
from tests.conftest import run_cli, tiny_path

TINY4 = "tiny-rwkv-4v0-660K-FP32.bin"


def run(*args: str, stdin: str | None = None, check_rc: int | None = 0) -> subprocess.CompletedProcess[str]:
    proc = run_cli(*args, stdin=stdin)
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess[str], rc: int, *needles: str) -> None:
    assert proc.returncode == rc, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rwkv-ggml: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def tiny() -> str:
    return str(tiny_path(TINY4))


# ---- help ----------------------------------------------------------------------------------------


def test_help_everywhere() -> None:
    assert "generate" in run("--help").stdout
    for cmd in ("generate", "chat", "bench", "perplexity", "info", "quantize", "convert", "merge-lora"):
        out = run(cmd, "--help").stdout
        assert out.startswith("usage: rwkv-ggml " + cmd), out
        # every --help ends with an example of the command
        last_two = out.rstrip().splitlines()[-2:]
        assert last_two[0] == "example:" and last_two[1].startswith(f"  rwkv-ggml {cmd} "), out


def test_every_model_command_takes_the_model_as_one_option() -> None:
    for cmd in ("generate", "chat", "bench", "perplexity", "info"):
        out = run(cmd, "--help").stdout
        assert "--model MODEL, -m MODEL" in out and "hf:OWNER/REPO[/FILE]" in out, (cmd, out)
    for cmd in ("generate", "chat", "bench", "perplexity"):  # -n: a token count wherever one is taken
        assert "-n N" in run(cmd, "--help").stdout, cmd
    for cmd in ("quantize", "convert", "merge-lora"):  # --dtype: one spelling of the output format
        assert "--dtype DTYPE" in run(cmd, "--help").stdout, cmd


def test_no_command_shows_usage() -> None:
    proc = run(check_rc=2)
    assert "usage" in proc.stderr


# ---- generate ------------------------------------------------------------------------------------


def test_generate_matches_the_api(tiny: str) -> None:
    proc = run("generate", "The king", "--model", tiny, "--max-tokens", "20", "--temperature", "0")
    with Model(tiny, threads=1) as m:
        expected = complete(m, "The king", 20, temperature=0.0)
    assert proc.stdout == "The king" + expected + "\n"
    proc = run("generate", "The king", "--model", tiny, "-n", "20", "--temperature", "0", "--no-echo")
    assert proc.stdout == expected + "\n"


def test_generate_reads_stdin_and_is_reproducible_with_a_seed(tiny: str) -> None:
    a = run("generate", "--model", tiny, "-n", "30", "--seed", "5", stdin="Hello")
    b = run("generate", "-", "--model", tiny, "-n", "30", "--seed", "5", stdin="Hello")
    assert a.stdout == b.stdout and a.stdout.startswith("Hello")


def test_generate_sampling_flags_and_stop(tiny: str) -> None:
    full = run("generate", "The", "--model", tiny, "-n", "40", "--temperature", "0", "--no-echo").stdout
    stop = full[5:8]
    out = run(
        "generate",
        "The",
        "--model",
        tiny,
        "-n",
        "40",
        "--temperature",
        "0",
        "--no-echo",
        "--stop",
        stop,
        "--top-k",
        "3",
        "--top-p",
        "0.9",
        "--min-p",
        "0.05",
        "--presence-penalty",
        "0",
        "--frequency-penalty",
        "0",
        "--repetition-penalty",
        "1",
        "--threads",
        "1",
    ).stdout
    assert out == full[: full.find(stop)] + "\n"


def test_generate_with_the_default_model() -> None:
    proc = run("generate", "Once upon a time", "-n", "60", "--seed", "0")
    assert proc.stdout.startswith("Once upon a time")
    assert sum(c.isalpha() for c in proc.stdout) > 30, proc.stdout


def test_generate_empty_prompt(tiny: str) -> None:
    assert_one_line_error(run("generate", "", "--model", tiny, check_rc=None), 1, "prompt is empty")
    assert_one_line_error(run("generate", "--model", tiny, stdin="", check_rc=None), 1, "prompt is empty")


def test_generate_missing_model(tmp_path: Path) -> None:
    missing = tmp_path / "nope.bin"
    assert_one_line_error(
        run("generate", "hi", "--model", str(missing), check_rc=None), 1, "nope.bin", "does not exist"
    )


def test_generate_non_model_file(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not a model\n" * 10)
    assert_one_line_error(run("generate", "hi", "--model", str(junk), check_rc=None), 1, "notes.txt")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert_one_line_error(run("generate", "hi", "--model", str(empty), check_rc=None), 1, "empty.bin")
    assert_one_line_error(run("generate", "hi", "--model", str(tmp_path), check_rc=None), 1, "directory")


def test_bad_flags(tiny: str) -> None:
    assert_one_line_error(
        run("generate", "hi", "--model", tiny, "--temperature", "hot", check_rc=None), 2, "--temperature"
    )
    assert_one_line_error(run("generate", "hi", "--bogus", check_rc=None), 2, "--bogus")
    assert_one_line_error(
        run("generate", "hi", "--model", tiny, "--max-tokens", "-3", check_rc=None), 2, "--max-tokens"
    )
    assert_one_line_error(run("frobnicate", check_rc=None), 2, "frobnicate")
    assert_one_line_error(
        run("generate", "hi", "--model", tiny, "--temperature", "-1", check_rc=None), 1, "temperature"
    )
    assert_one_line_error(run("generate", "hi", "--model", tiny, "--top-p", "0", check_rc=None), 1, "top_p")
    assert_one_line_error(
        run("generate", "hi", "--model", tiny, "--stop-token", "999", check_rc=None), 1, "999"
    )
    assert_one_line_error(run("generate", "hi", "--model", tiny, "--tokenizer", "world", check_rc=None), 1)
    assert_one_line_error(
        run("generate", "hi", "--model", tiny, "--threads", "0", check_rc=None), 2, "--threads"
    )


# ---- chat ----------------------------------------------------------------------------------------


def test_chat_from_a_pipe(tiny: str, tmp_path: Path) -> None:
    saved = tmp_path / "conv.state"
    script = (
        f"Hello\n/save {saved}\n/reset\n/load {saved}\n/load {tmp_path / 'missing.state'}\n"
        f"/bogus\n\nHow are you?\n/quit\nnever read\n"
    )
    proc = run("chat", "--model", tiny, "-n", "12", "--temperature", "0", stdin=script)
    replies = [line for line in proc.stdout.splitlines() if line.startswith("Assistant:")]
    assert len(replies) == 2, proc.stdout
    assert saved.is_file()
    assert "Traceback" not in proc.stderr
    assert "missing.state" in proc.stderr and "/bogus" in proc.stderr
    # /reset + /load restore the saved conversation: the second reply equals one without the detour
    direct = run("chat", "--model", tiny, "-n", "12", "--temperature", "0", stdin="Hello\nHow are you?\n")
    assert direct.stdout == proc.stdout


def test_chat_ends_at_end_of_input(tiny: str) -> None:
    proc = run("chat", "--model", tiny, "-n", "5", "--seed", "1", stdin="hi\n")
    assert proc.stdout.startswith("Assistant:")


def test_chat_missing_model(tmp_path: Path) -> None:
    assert_one_line_error(
        run("chat", "--model", str(tmp_path / "x.bin"), stdin="hi\n", check_rc=None), 1, "x.bin"
    )


# ---- bench, perplexity, info ---------------------------------------------------------------------


def test_bench(tiny: str) -> None:
    out = run(
        "bench", "-m", tiny, "-n", "4", "--prompt-tokens", "8", "--repeats", "1", "--threads", "1"
    ).stdout
    assert "tokens/s" in out and "per token: median" in out and "prompt: 8 tokens" in out
    assert f"model: {tiny} " in out
    # the positional MODEL of earlier versions still works
    out = run("bench", tiny, "-n", "2", "--prompt-tokens", "4", "--repeats", "1", "--threads", "1").stdout
    assert f"model: {tiny} " in out


def test_bench_defaults_to_the_packaged_model() -> None:
    out = run("bench", "-n", "2", "--prompt-tokens", "4", "--repeats", "1", "--threads", "1").stdout
    assert "default-model.bin" in out.splitlines()[0]


def test_bench_errors(tiny: str, tmp_path: Path) -> None:
    assert_one_line_error(run("bench", "-m", str(tmp_path / "m.bin"), check_rc=None), 1, "m.bin")
    assert_one_line_error(run("bench", str(tmp_path / "m.bin"), check_rc=None), 1, "m.bin")
    assert_one_line_error(run("bench", tiny, "-m", tiny, check_rc=None), 1, "given twice")


def test_perplexity_matches_the_api(tiny: str, tmp_path: Path) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 4
    path = tmp_path / "t.txt"
    path.write_text(text)
    out = run("perplexity", str(path), "--model", tiny).stdout
    with Model(tiny, threads=1) as m:
        nll, ppl = m.perplexity(list(text.encode()))
    line = next(x for x in out.splitlines() if x.startswith("perplexity:"))
    assert abs(float(line.split()[1]) - ppl) < 1e-3 * ppl
    nll_line = next(x for x in out.splitlines() if x.startswith("NLL per token:"))
    assert abs(float(nll_line.split()[3]) - nll) < 1e-3
    assert f"{len(text)} tokens" in out
    assert proc_stderr_is_empty(run("perplexity", str(path), "--model", tiny))


def proc_stderr_is_empty(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.stderr == ""


def test_perplexity_progress_and_first_n_tokens(tiny: str, tmp_path: Path) -> None:
    """A text over several chunks: the same numbers as the API, a progress bar on stderr with --progress
    (by default only on a terminal), -n keeps the first N tokens."""
    text = "Now is the winter of our discontent made glorious summer by this sun of York. " * 12
    path = tmp_path / "long.txt"
    path.write_text(text)
    proc = run("perplexity", str(path), "-m", tiny, "--progress", "--threads", "1")
    assert "tok/s" in proc.stderr or "tok]" in proc.stderr, proc.stderr
    tokens = list(text.encode())
    with Model(tiny, threads=1) as m:
        nll, _ = m.perplexity(tokens)
        nll_first, _ = m.perplexity(tokens[:300])
    nll_line = next(x for x in proc.stdout.splitlines() if x.startswith("NLL per token:"))
    assert abs(float(nll_line.split()[3]) - nll) < 1e-4
    out = run("perplexity", str(path), "-m", tiny, "-n", "300", "--no-progress").stdout
    nll_line = next(x for x in out.splitlines() if x.startswith("NLL per token:"))
    assert abs(float(nll_line.split()[3]) - nll_first) < 1e-4
    assert "300 tokens" in out


def test_perplexity_errors(tiny: str, tmp_path: Path) -> None:
    assert_one_line_error(
        run("perplexity", str(tmp_path / "none.txt"), "--model", tiny, check_rc=None), 1, "none.txt"
    )
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9 au lait")
    assert_one_line_error(run("perplexity", str(bad), "--model", tiny, check_rc=None), 1, "UTF-8")
    short = tmp_path / "one.txt"
    short.write_text("a")
    assert_one_line_error(run("perplexity", str(short), "--model", tiny, check_rc=None), 1, "at least 2")


def test_info(tiny: str) -> None:
    out = run("info", "-m", tiny).stdout
    assert out == run("info", tiny).stdout  # the positional MODEL of earlier versions
    assert run("info").stdout.startswith("file: ") and "default-model.bin" in run("info").stdout
    with read_model_file(tiny) as mf:
        n_params = sum(r.n_elements for r in mf.tensors.values())
    assert "version: 4\n" in out and "dtype: F32\n" in out
    assert "n_vocab: 256\n" in out and "n_embed: 128\n" in out and "n_layer: 4\n" in out
    assert f"parameters: {n_params} " in out
    assert f"file size: {Path(tiny).stat().st_size} bytes" in out


def test_info_errors(tmp_path: Path) -> None:
    assert_one_line_error(run("info", "-m", str(tmp_path / "m.bin"), check_rc=None), 1, "does not exist")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(300))
    assert_one_line_error(run("info", "-m", str(junk), check_rc=None), 1, "junk.bin")


# ---- quantize, convert, merge-lora ---------------------------------------------------------------


def test_quantize(tiny: str, tmp_path: Path) -> None:
    dst = tmp_path / "q8.bin"
    run("quantize", tiny, str(dst), "--dtype", "Q8_0", "--threads", "1")
    assert "dtype: Q8_0" in run("info", "-m", str(dst)).stdout
    old = tmp_path / "q5.bin"  # the positional FORMAT of earlier versions still works
    run("quantize", tiny, str(old), "Q5_1", "--threads", "1")
    assert "dtype: Q5_1" in run("info", "-m", str(old)).stdout
    x = str(tmp_path / "x.bin")
    assert_one_line_error(run("quantize", tiny, x, "--dtype", "Q9_9", check_rc=None), 1, "Q9_9")
    assert_one_line_error(
        run("quantize", str(tmp_path / "no.bin"), x, "--dtype", "Q8_0", check_rc=None), 1, "no.bin"
    )
    assert_one_line_error(run("quantize", tiny, check_rc=None), 2)
    assert_one_line_error(run("quantize", tiny, x, check_rc=None), 1, "needs --dtype")
    assert_one_line_error(
        run("quantize", tiny, x, "Q4_0", "--dtype", "Q8_0", check_rc=None), 1, "two formats"
    )


def test_quantize_and_convert_head_dtype(tiny: str, tmp_path: Path) -> None:
    """--head-dtype quantizes head.weight too; info shows the head's type."""
    from safetensors.numpy import save_file

    dst = tmp_path / "q4-head-q8.bin"
    run("quantize", tiny, str(dst), "--dtype", "Q4_0", "--head-dtype", "Q8_0", "--threads", "1")
    out = run("info", "-m", str(dst)).stdout
    assert "dtype: Q4_0" in out and "1 Q8_0; head Q8_0)" in out
    assert "head F32)" in run("info", "-m", tiny).stdout
    x = str(tmp_path / "x.bin")
    assert_one_line_error(
        run("quantize", tiny, x, "--dtype", "Q4_0", "--head-dtype", "Q9", check_rc=None),
        1,
        "'Q9'",
    )
    src = tmp_path / "ckpt.safetensors"
    save_file(_v4_checkpoint(), str(src))
    conv = tmp_path / "conv.bin"
    run("convert", str(src), str(conv), "--dtype", "Q5_1", "--head-dtype", "Q8_0", "--threads", "1")
    assert "head Q8_0)" in run("info", "-m", str(conv)).stdout
    assert_one_line_error(
        run("convert", str(src), str(tmp_path / "y.bin"), "--head-dtype", "Q8_0", check_rc=None),
        1,
        "needs a quantized --dtype",
    )
    assert not (tmp_path / "x.bin").exists() and not (tmp_path / "y.bin").exists()


def _v4_checkpoint(C: int = 32, L: int = 2, V: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """A random RWKV-4 state dict under the official names (architecture.md §3.1)."""
    rng = np.random.default_rng(seed)

    def r(*shape: int, scale: float = 0.1) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    sd = {
        "emb.weight": r(V, C),
        "blocks.0.ln0.weight": 1 + r(C),
        "blocks.0.ln0.bias": r(C),
        "ln_out.weight": 1 + r(C),
        "ln_out.bias": r(C),
        "head.weight": r(V, C),
    }
    for i in range(L):
        p = f"blocks.{i}."
        sd.update(
            {
                p + "ln1.weight": 1 + r(C),
                p + "ln1.bias": r(C),
                p + "ln2.weight": 1 + r(C),
                p + "ln2.bias": r(C),
            }
        )
        for name in ("time_mix_k", "time_mix_v", "time_mix_r"):
            sd[p + "att." + name] = rng.uniform(0, 1, (1, 1, C)).astype(np.float32)
        sd[p + "att.time_decay"] = r(C, scale=1.0)
        sd[p + "att.time_first"] = r(C, scale=1.0)
        for name in ("key", "value", "receptance", "output"):
            sd[p + f"att.{name}.weight"] = r(C, C)
        for name in ("time_mix_k", "time_mix_r"):
            sd[p + "ffn." + name] = rng.uniform(0, 1, (1, 1, C)).astype(np.float32)
        sd[p + "ffn.key.weight"] = r(4 * C, C)
        sd[p + "ffn.receptance.weight"] = r(C, C)
        sd[p + "ffn.value.weight"] = r(C, 4 * C)
    return sd


def test_convert_float_and_quantized(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    src = tmp_path / "ckpt.safetensors"
    save_file(_v4_checkpoint(), str(src))
    for dtype, shown in (("f32", "F32"), ("f16", "F16"), ("Q8_0", "Q8_0"), ("q5_1", "Q5_1")):
        dst = tmp_path / f"m-{dtype}.bin"
        run("convert", str(src), str(dst), "--dtype", dtype, "--threads", "1")
        out = run("info", "-m", str(dst)).stdout
        assert f"dtype: {shown}\n" in out and "n_embed: 32\n" in out and "n_layer: 2\n" in out
    # no temporary file is left next to the output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ckpt.safetensors", "m-f32.bin", "m-f16.bin", "m-Q8_0.bin", "m-q5_1.bin"]
    )
    assert_one_line_error(
        run("convert", str(src), str(tmp_path / "x.bin"), "--dtype", "f8", check_rc=None), 1, "f8"
    )
    assert_one_line_error(
        run("convert", str(tmp_path / "none.pth"), str(tmp_path / "x.bin"), check_rc=None), 1, "none.pth"
    )
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    assert_one_line_error(run("convert", str(junk), str(tmp_path / "x.bin"), check_rc=None), 1)


def test_merge_lora(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    base_sd = _v4_checkpoint()
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 32)).astype(np.float32)
    b = rng.standard_normal((32, 4)).astype(np.float32)
    save_file(base_sd, str(tmp_path / "base.safetensors"))
    save_file(
        {"blocks.0.att.key.lora_A": a, "blocks.0.att.key.lora_B": b}, str(tmp_path / "lora.safetensors")
    )
    out = tmp_path / "merged.bin"
    run(
        "merge-lora",
        str(tmp_path / "base.safetensors"),
        str(tmp_path / "lora.safetensors"),
        str(out),
        "--alpha",
        "8",
        "--dtype",
        "f32",
    )
    with read_model_file(out) as mf:
        merged = np.array(mf.array("blocks.0.att.key.weight"))
    expected = base_sd["blocks.0.att.key.weight"] + b @ a * (8 / 4)
    np.testing.assert_allclose(merged.reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)
    run(
        "merge-lora",
        str(tmp_path / "base.safetensors"),
        str(tmp_path / "lora.safetensors"),
        str(tmp_path / "merged-q.bin"),
        "--alpha",
        "8",
        "--dtype",
        "Q8_0",
    )
    assert "dtype: Q8_0" in run("info", "-m", str(tmp_path / "merged-q.bin")).stdout
    assert_one_line_error(
        run(
            "merge-lora",
            str(tmp_path / "base.safetensors"),
            str(tmp_path / "lora.safetensors"),
            str(out),
            check_rc=None,
        ),
        2,
        "--alpha",
    )
    assert_one_line_error(
        run(
            "merge-lora",
            str(tmp_path / "base.safetensors"),
            str(tmp_path / "nolora.st"),
            str(out),
            "--alpha",
            "1",
            check_rc=None,
        ),
        1,
        "nolora.st",
    )


def test_a_checkpoint_given_as_the_model_names_the_convert_command(tmp_path: Path) -> None:
    ckpt = tmp_path / "RWKV-x070-World-0.1B.pth"
    ckpt.write_bytes(b"PK\x03\x04")
    proc = run("generate", "hi", "-m", str(ckpt), check_rc=None)
    assert_one_line_error(
        proc, 1, "is a checkpoint, not a model file", f"rwkv-ggml convert '{ckpt}' model.bin"
    )
    proc = run("info", "-m", str(tmp_path), check_rc=None)
    assert_one_line_error(proc, 1, "is a directory", f"rwkv-ggml convert '{tmp_path}' model.bin")
