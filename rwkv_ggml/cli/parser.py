"""The argument parser of ``rwkv-ggml``: one subparser per command, shared option groups, and
argument types whose errors are one line naming the option."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from ..generation import DEFAULT_MAX_TOKENS
from . import commands
from .streams import PROG


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``rwkv-ggml: error: MESSAGE (see ... --help)``."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def _int_at_least(minimum: int, what: str) -> Any:
    """An argparse type: an int >= minimum, with a one-line message naming ``what`` otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


MODEL_HELP = (
    "model file (.bin or .gguf), or hf:OWNER/REPO[/FILE] for a checkpoint on the Hugging Face hub "
    "(downloaded, converted and quantized once into a cache, see --dtype); default: the packaged model"
)


def _add_model(p: argparse.ArgumentParser, *, positional_alias: bool = False) -> None:
    p.add_argument("--model", "-m", metavar="MODEL", help=MODEL_HELP)
    if positional_alias:
        # the positional MODEL of earlier versions, still accepted (not shown in --help)
        p.add_argument("model_path", nargs="?", metavar="MODEL", help=argparse.SUPPRESS)
    p.add_argument(
        "--dtype",
        metavar="DTYPE",
        help="with --model hf:...: the dtype the checkpoint is converted to once (default Q8_0)",
    )


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        "-t",
        type=_positive_int,
        metavar="N",
        help="compute threads (default: 1 for models under 64 MiB, where a second thread costs more "
        "than it gains, else the number of physical cores)",
    )


def _add_dtype(p: argparse.ArgumentParser, default: str | None) -> None:
    choices = "f32, f16, Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0" if default else "Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0"
    shown = f" (default {default})" if default else ""
    p.add_argument("--dtype", default=default, metavar="DTYPE", help=f"{choices}{shown}")


def _add_head_dtype(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--head-dtype",
        metavar="DTYPE",
        help="also quantize the output matrix head.weight, to DTYPE (e.g. Q8_0; default: keep it as it "
        "is, as rwkv.cpp does); fewer bytes read per token for a small logit error (docs/quantization.md)",
    )


def _add_gn_eps(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gn-eps",
        type=_float,
        metavar="EPS",
        help="GroupNorm epsilon of RWKV v5+ att.ln_x (default: the model's trained value, 64e-5; "
        "rwkv.cpp uses 1e-5 for v5)",
    )


def _add_tokenizer(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tokenizer",
        choices=("20b", "world", "bytes"),
        help="tokenizer (default: chosen from the model's vocabulary size)",
    )


def _add_structured(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("structured output (needs llguidance: pip install 'rwkv_ggml[structured]')")
    one = g.add_mutually_exclusive_group()
    one.add_argument("--json-schema", metavar="FILE", help="the output is JSON valid under this JSON schema")
    one.add_argument("--grammar", metavar="FILE", help="the output follows this grammar (Lark or GBNF)")
    one.add_argument("--regex", metavar="REGEX", help="the whole output matches this regular expression")


def _add_sampling(p: argparse.ArgumentParser, max_tokens: int) -> None:
    # The defaults are the Python API's (one definition), so a seed gives the same text in both.
    from .. import sampling as s

    g = p.add_argument_group("sampling")
    g.add_argument(
        "--max-tokens",
        "-n",
        type=_nonneg_int,
        default=max_tokens,
        metavar="N",
        help=f"new tokens to generate at most (default {max_tokens})",
    )
    g.add_argument(
        "--temperature",
        type=_float,
        default=s.DEFAULT_TEMPERATURE,
        metavar="T",
        help=f"0 = greedy (default {s.DEFAULT_TEMPERATURE})",
    )
    g.add_argument(
        "--top-p",
        type=_float,
        default=s.DEFAULT_TOP_P,
        metavar="P",
        help=f"nucleus sampling, 1 = off (default {s.DEFAULT_TOP_P})",
    )
    g.add_argument(
        "--top-k", type=_nonneg_int, default=s.DEFAULT_TOP_K, metavar="K", help="0 = off (default)"
    )
    g.add_argument("--min-p", type=_float, default=s.DEFAULT_MIN_P, metavar="P", help="0 = off (default)")
    g.add_argument("--presence-penalty", type=_float, default=s.DEFAULT_PRESENCE_PENALTY, metavar="X")
    g.add_argument("--frequency-penalty", type=_float, default=s.DEFAULT_FREQUENCY_PENALTY, metavar="X")
    g.add_argument(
        "--repetition-penalty",
        type=_float,
        default=s.DEFAULT_REPETITION_PENALTY,
        metavar="X",
        help="1 = off (default)",
    )
    g.add_argument(
        "--penalty-decay",
        type=_float,
        default=s.DEFAULT_PENALTY_DECAY,
        metavar="X",
        help=f"per-token decay of the penalty counts (default {s.DEFAULT_PENALTY_DECAY})",
    )
    g.add_argument("--seed", type=_nonneg_int, metavar="S", help="random seed, for reproducible output")
    g.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="stop when this text is generated (repeatable; \\n is a newline)",
    )
    g.add_argument(
        "--stop-token",
        action="append",
        default=[],
        type=_nonneg_int,
        metavar="ID",
        help="stop at this token id (repeatable)",
    )


def _sub(sub: Any, name: str, example: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subparser whose --help ends with an example (kept as written)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Run RWKV language models on the CPU (rwkv_ggml).",
        epilog=f"example:\n  {PROG} generate 'Once upon a time' -n 50\n"
        f"  {PROG} generate 'The capital of France is' -m hf:fla-hub/rwkv7-0.4B-world",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    _add_text_commands(sub)
    _add_model_file_commands(sub)
    _add_file_writing_commands(sub)
    _add_serve_command(sub)
    return parser


def _add_text_commands(sub: Any) -> None:
    """generate and chat."""
    p = _sub(
        sub,
        "generate",
        f"{PROG} generate 'Once upon a time' -n 100 --temperature 0.8 -m model.bin",
        help="continue a prompt, streaming the text",
        description="Continue PROMPT (or standard input), streaming the new text to standard output.",
    )
    p.add_argument(
        "prompt", nargs="?", metavar="PROMPT", help="the text to continue; '-' or omitted: read stdin"
    )
    p.add_argument(
        "--prompts-file",
        metavar="FILE",
        help="continue every line of FILE ('-': stdin) together in one batch (blank lines skipped); "
        "prints one JSON object per prompt, in order: index, prompt, text, finish_reason, tokens",
    )
    _add_model(p)
    _add_sampling(p, DEFAULT_MAX_TOKENS)
    _add_structured(p)
    _add_tokenizer(p)
    _add_threads(p)
    _add_gn_eps(p)
    p.add_argument(
        "--echo",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="print the prompt before the continuation (default: yes)",
    )
    p.set_defaults(func=commands.cmd_generate)

    p = _sub(
        sub,
        "chat",
        f"{PROG} chat -m hf:BlinkDL/rwkv-7-world/RWKV-x070-World-1.5B-v3-20250127-ctx4096.pth",
        help="interactive chat that keeps the state between turns",
        description=f"Chat with a model; the conversation state is kept between turns. "
        f"Reads one message per line (also from a pipe). {commands.CHAT_HELP}.",
    )
    _add_model(p)
    _add_sampling(p, DEFAULT_MAX_TOKENS)
    _add_tokenizer(p)
    _add_threads(p)
    _add_gn_eps(p)
    p.add_argument(
        "--system",
        metavar="TEXT",
        help="a system message, fed once as 'System: TEXT' before the conversation",
    )
    p.add_argument("--user-name", default="User", metavar="NAME", help="the user's name in the transcript")
    p.add_argument(
        "--assistant-name", default="Assistant", metavar="NAME", help="the assistant's name in the transcript"
    )
    p.set_defaults(func=commands.cmd_chat)


def _add_model_file_commands(sub: Any) -> None:
    """bench, perplexity, info."""
    p = _sub(
        sub,
        "bench",
        f"{PROG} bench -m model.bin -n 64 --threads 2",
        help="per-token latency and prompt throughput of a model",
        description="Measure a model: median latency of one token in RNN mode, and tokens/s of "
        "sequence mode on a prompt of random tokens.",
    )
    _add_model(p, positional_alias=True)
    p.add_argument(
        "--tokens",
        "-n",
        type=_positive_int,
        default=64,
        metavar="N",
        help="tokens timed one by one (default 64)",
    )
    p.add_argument(
        "--prompt-tokens",
        type=_positive_int,
        default=128,
        metavar="T",
        help="length of the timed prompt (default 128)",
    )
    p.add_argument("--repeats", type=_positive_int, default=3, metavar="R", help="prompt runs (default 3)")
    _add_threads(p)
    _add_gn_eps(p)
    p.set_defaults(func=commands.cmd_bench)

    p = _sub(
        sub,
        "perplexity",
        f"{PROG} perplexity book.txt -m model.bin -n 10000",
        help="perplexity of a model on a text file",
        description="Mean negative log-likelihood per token and perplexity of a UTF-8 text file, "
        "computed in sequence mode with the logits of every position. FILE may be "
        "a pipe or process substitution (<(zcat text.gz)); '-' reads standard input. "
        "The whole text is read before the model runs.",
    )
    p.add_argument("file", metavar="FILE", help="UTF-8 text file, a pipe, or '-' for standard input")
    _add_model(p)
    _add_tokenizer(p)
    _add_threads(p)
    _add_gn_eps(p)
    p.add_argument("--max-tokens", "-n", type=_positive_int, metavar="N", help="use only the first N tokens")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on standard error (default: when it is a terminal)",
    )
    p.set_defaults(func=commands.cmd_perplexity)

    p = _sub(
        sub,
        "info",
        f"{PROG} info -m model.bin",
        help="version, dtype, shapes, parameter count and size of a model file",
        description="Describe a model file (default: the packaged default model).",
    )
    _add_model(p, positional_alias=True)
    p.set_defaults(func=commands.cmd_info)


def _add_file_writing_commands(sub: Any) -> None:
    """quantize, convert, merge-lora."""
    p = _sub(
        sub,
        "quantize",
        f"{PROG} quantize model-f16.bin model-q8_0.bin --dtype Q8_0",
        help="quantize an F32/F16 model file",
        description="Quantize SRC (an F32 or F16 model file) to --dtype, writing DST.",
    )
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    # the positional FORMAT of earlier versions, still accepted (not shown in --help)
    p.add_argument("format", nargs="?", metavar="FORMAT", help=argparse.SUPPRESS)
    _add_dtype(p, None)
    _add_head_dtype(p)
    _add_threads(p)
    p.set_defaults(func=commands.cmd_quantize)

    p = _sub(
        sub,
        "convert",
        f"{PROG} convert RWKV-x070-World-0.1B.pth rwkv7-0.1b-q8_0.bin --dtype Q8_0",
        help="convert a .pth / safetensors checkpoint or a GGUF model to a model file",
        description="Convert an RWKV checkpoint (.pth or .safetensors) or an RWKV-6/7 GGUF file to our "
        ".bin format, without PyTorch. A quantized --dtype converts to F16 first, then quantizes "
        "(a GGUF file's quantized tensors are copied as they are).",
    )
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    _add_dtype(p, "f16")
    _add_head_dtype(p)
    _add_threads(p)
    p.set_defaults(func=commands.cmd_convert)

    p = _sub(
        sub,
        "merge-lora",
        f"{PROG} merge-lora base.pth lora.pth merged.bin --alpha 32 --dtype Q8_0",
        help="merge a LoRA checkpoint into a base checkpoint",
        description="Merge LORA (lora_A/lora_B pairs) into BASE with scale alpha / rank, "
        "writing the model file OUT.",
    )
    p.add_argument("base", metavar="BASE")
    p.add_argument("lora", metavar="LORA")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--alpha", type=_float, required=True, metavar="A", help="LoRA alpha")
    _add_dtype(p, "f16")
    _add_threads(p)
    p.set_defaults(func=commands.cmd_merge_lora)


def _add_serve_command(sub: Any) -> None:
    """serve (the OpenAI-compatible HTTP server; docs/server.md)."""
    p = _sub(
        sub,
        "serve",
        f"{PROG} serve -m model.bin --port 8000 --max-batch 16 --api-key secret",
        help="an OpenAI-compatible HTTP server (needs the [server] extra)",
        description="Serve a model over HTTP with the OpenAI routes (/v1/completions, /v1/chat/completions, "
        "/v1/embeddings, /v1/models), /health and /metrics; concurrent requests share decode steps, a "
        "state cache lets a follow-up chat turn skip re-reading the history. SIGTERM or Ctrl-C stops it.",
    )
    _add_model(p)
    _add_threads(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_positive_int, default=8000, metavar="N", help="port (default 8000)")
    p.add_argument("--model-name", metavar="NAME", help="the model id clients use (default: the file's stem)")
    p.add_argument(
        "--max-batch",
        type=_positive_int,
        default=8,
        metavar="N",
        help="requests decoded together (default 8)",
    )
    p.add_argument(
        "--max-queue",
        type=_nonneg_int,
        default=64,
        metavar="N",
        help="requests waiting for a slot before new ones get 429 (default 64)",
    )
    p.add_argument(
        "--state-cache-mb",
        type=_nonneg_float,
        default=256.0,
        metavar="MB",
        help="memory for cached prompt/reply states (default 256; 0 turns the cache off)",
    )
    p.add_argument("--api-key", metavar="KEY", help="require 'Authorization: Bearer KEY' on the /v1 routes")
    p.add_argument(
        "--max-tokens-cap",
        type=_positive_int,
        default=4096,
        metavar="N",
        help="the largest max_tokens a request may ask for (default 4096)",
    )
    p.add_argument(
        "--max-prompt-tokens",
        type=_positive_int,
        default=32768,
        metavar="N",
        help="the longest prompt accepted, in tokens (default 32768)",
    )
    p.add_argument(
        "--request-timeout",
        type=_positive_float,
        default=600.0,
        metavar="S",
        help="seconds a request may run before it is cancelled (default 600)",
    )
    p.add_argument(
        "--prefill-chunk",
        type=_positive_int,
        default=256,
        metavar="N",
        help="prompt tokens read per scheduler step, so joining prompts do not stall running streams "
        "(default 256)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=_nonneg_float,
        default=10.0,
        metavar="S",
        help="on SIGTERM, seconds in-flight requests get to finish before they are cancelled (default 10)",
    )
    p.set_defaults(func=commands.cmd_serve)


def _nonneg_float(text: str) -> float:
    value = _float(text)
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value
