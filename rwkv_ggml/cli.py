"""The ``rwkv-ggml`` command line (also ``python -m rwkv_ggml``).

Subcommands: generate, chat, bench, perplexity, info, quantize, convert, merge-lora. Every one has
``--help``. A user mistake (a missing or malformed model file, a bad flag, an empty prompt) prints
one line ``rwkv-ggml: error: ...`` on stderr and exits with status 1 (2 for bad command-line
syntax), never a traceback; set ``RWKV_GGML_DEBUG=1`` to get the traceback anyway. That holds for
every exception, running out of memory included. Ctrl-C exits with 130 and a closed output pipe
(``| head``) ends the program quietly. A standard stream that is closed altogether (``<&-``,
``>&-``) reads as empty input, or, where the command's output would be lost, is one error line.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ._stdio import (
    PROG,
    CliError,
    StreamClosedError,
    error_line,
    fill_closed_std_fds,
    note,
    one_line,
    progress_bar,
    read_stdin,
    silence_stdout,
    stdin_is_terminal,
    write_out,
)

if TYPE_CHECKING:
    from .model import Model


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``rwkv-ggml: error: MESSAGE (see ... --help)``."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


# ------------------------------------------------------------------------------------------------
# Helpers


def _load_model(path: str | None, threads: int | None, gn_eps: float | None = None) -> Model:
    from .generate import default_model_path
    from .model import Model

    model_path = default_model_path() if path is None else Path(path)
    if path is not None:
        if not model_path.exists():
            raise CliError(f"model file '{model_path}' does not exist")
        if model_path.is_dir():
            raise CliError(f"'{model_path}' is a directory, not a model file")
    return Model(model_path, threads=threads, gn_eps=gn_eps)


def _tokenizer(model: Model, kind: str | None) -> Any:
    from .tokenizer import Tokenizer

    return Tokenizer.for_model(model, kind)


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


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", metavar="PATH", help="model file (.bin); default: the packaged default model")


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", "-t", type=_positive_int, metavar="N",
                   help="compute threads (default: the number of physical cores)")


def _add_gn_eps(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gn-eps", type=_float, metavar="EPS",
                   help="GroupNorm epsilon of RWKV v5+ att.ln_x (default: the model's trained value, 64e-5; "
                        "rwkv.cpp uses 1e-5 for v5)")


def _add_tokenizer(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", choices=("20b", "world", "bytes"),
                   help="tokenizer (default: chosen from the model's vocabulary size)")


def _add_sampling(p: argparse.ArgumentParser, max_tokens: int) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--max-tokens", "-n", type=_nonneg_int, default=max_tokens, metavar="N",
                   help=f"new tokens to generate at most (default {max_tokens})")
    g.add_argument("--temperature", type=_float, default=1.0, metavar="T", help="0 = greedy (default 1.0)")
    g.add_argument("--top-p", type=_float, default=0.85, metavar="P", help="nucleus sampling, 1 = off (default 0.85)")
    g.add_argument("--top-k", type=_nonneg_int, default=0, metavar="K", help="0 = off (default)")
    g.add_argument("--min-p", type=_float, default=0.0, metavar="P", help="0 = off (default)")
    g.add_argument("--presence-penalty", type=_float, default=0.0, metavar="X")
    g.add_argument("--frequency-penalty", type=_float, default=0.0, metavar="X")
    g.add_argument("--repetition-penalty", type=_float, default=1.0, metavar="X", help="1 = off (default)")
    g.add_argument("--penalty-decay", type=_float, default=0.996, metavar="X",
                   help="per-token decay of the penalty counts (default 0.996)")
    g.add_argument("--seed", type=_nonneg_int, metavar="S", help="random seed, for reproducible output")
    g.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when this text is generated (repeatable; \\n is a newline)")
    g.add_argument("--stop-token", action="append", default=[], type=_nonneg_int, metavar="ID",
                   help="stop at this token id (repeatable)")


def _sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k, "min_p": args.min_p,
        "presence_penalty": args.presence_penalty, "frequency_penalty": args.frequency_penalty,
        "repetition_penalty": args.repetition_penalty, "penalty_decay": args.penalty_decay,
        "seed": args.seed, "stop_tokens": tuple(args.stop_token),
        "stop_strings": tuple(_unescape(s) for s in args.stop),
    }


def _unescape(text: str) -> str:
    """Lets ``--stop '\\n\\n'`` mean two newlines: shells make literal newlines awkward."""
    if not text:
        raise CliError("--stop needs a non-empty text")
    return text.replace("\\n", "\n").replace("\\t", "\t")


# ------------------------------------------------------------------------------------------------
# Commands


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate

    if args.prompt is None or args.prompt == "-":
        if sys.stdin is None:
            raise CliError("no prompt: standard input is closed; give the prompt as an argument")
        if args.prompt is None and sys.stdin.isatty():
            raise CliError("no prompt: give it as an argument or on standard input")
        prompt = read_stdin()
    else:
        prompt = args.prompt
    if not prompt:
        raise CliError("the prompt is empty: give some text to continue")
    with _load_model(args.model, args.threads, args.gn_eps) as model:
        gen = generate(model, prompt, args.max_tokens, tokenizer=_tokenizer(model, args.tokenizer),
                       **_sampling_kwargs(args))
        if args.echo:
            write_out(sys.stdout, prompt)
        for chunk in gen:
            write_out(sys.stdout, chunk)
        write_out(sys.stdout, "\n")
    return 0


_CHAT_HELP = "commands: /reset (forget the conversation), /save FILE, /load FILE, /quit"


def cmd_chat(args: argparse.Namespace) -> int:
    from .generate import ChatSession

    interactive = stdin_is_terminal()
    with _load_model(args.model, args.threads, args.gn_eps) as model:
        kwargs = _sampling_kwargs(args)
        stops = kwargs.pop("stop_strings")
        session = ChatSession(model, _tokenizer(model, args.tokenizer), system=args.system, user=args.user_name,
                              assistant=args.assistant_name, stop=stops or None, **kwargs)
        if interactive:
            note(f"Chatting with {Path(model.path).name}. {_CHAT_HELP}")
        while True:
            if interactive:
                try:
                    line = input(f"{args.user_name}: ")
                except EOFError:
                    note()
                    return 0
            else:
                raw = "" if sys.stdin is None else sys.stdin.readline()
                if not raw:
                    return 0
                line = raw.rstrip("\n")
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if _chat_command(session, line):
                    return 0
                continue
            write_out(sys.stdout, f"{args.assistant_name}:")
            started = False
            for chunk in session.send(line, args.max_tokens):
                if not started:  # print exactly one space after "Assistant:", whatever the model put there
                    chunk = chunk.lstrip(" ")
                    if not chunk:
                        continue
                    chunk, started = " " + chunk, True
                write_out(sys.stdout, chunk)
            write_out(sys.stdout, "\n")


def _chat_command(session: Any, line: str) -> bool:
    """Runs a /command; True means quit. Mistakes are reported and the chat goes on."""
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    try:
        if name in ("/quit", "/exit"):
            return True
        if name == "/reset":
            session.reset()
            note("(conversation reset)")
        elif name == "/save":
            if not arg:
                raise CliError("/save needs a file name")
            session.save(arg)
            note(f"(state saved to {arg})")
        elif name == "/load":
            if not arg:
                raise CliError("/load needs a file name")
            session.load(arg)
            note(f"(state loaded from {arg})")
        elif name == "/help":
            note(_CHAT_HELP)
        else:
            raise CliError(f"unknown command {name!r}; {_CHAT_HELP}")
    except (CliError, OSError, ValueError) as exc:
        error_line(one_line(exc))
    return False


def cmd_bench(args: argparse.Namespace) -> int:
    import numpy as np

    with _load_model(args.model_path, args.threads, args.gn_eps) as model:
        rng = np.random.default_rng(0)
        hi = model.n_vocab
        prompt = rng.integers(0, hi, size=args.prompt_tokens).tolist()
        print(f"model: {model.path} (v{model.version}, {model.dtype}, n_embed={model.n_embed}, "
              f"n_layer={model.n_layer}, n_vocab={model.n_vocab}), threads: {model.threads}")
        # prompt throughput (sequence mode): one warm-up, then the median of --repeats runs
        model.eval_sequence(prompt)
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            _, state = model.eval_sequence(prompt)
            runs.append(time.perf_counter() - t0)
        seq = statistics.median(runs)
        print(f"prompt: {args.prompt_tokens} tokens in {seq * 1e3:.1f} ms (median of {args.repeats}) = "
              f"{args.prompt_tokens / seq:.1f} tokens/s")
        # per-token latency (RNN mode, logits included), continuing from the prompt's state
        logits_out = np.empty(model.n_vocab, dtype=np.float32)
        model.eval(int(prompt[-1]), state, state_out=state, logits_out=logits_out)
        times = []
        for tok in rng.integers(0, hi, size=args.tokens).tolist():
            t0 = time.perf_counter()
            model.eval(int(tok), state, state_out=state, logits_out=logits_out)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(f"per token: median {med * 1e3:.3f} ms over {args.tokens} tokens "
              f"(min {min(times) * 1e3:.3f}, max {max(times) * 1e3:.3f}) = {1 / med:.1f} tokens/s")
    return 0


def cmd_perplexity(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if args.file == "-":
        if sys.stdin is None:
            raise CliError("standard input is closed: nothing to read the text from")
        data = sys.stdin.buffer.read()
        name = "standard input"
    else:
        # read_bytes, not a size-first read: a pipe or process substitution is a fine text source
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CliError(f"text file '{path}' does not exist") from None
        except IsADirectoryError:
            raise CliError(f"'{path}' is a directory, not a text file") from None
        name = f"'{path}'"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{name} is not UTF-8 text (bad byte at offset {exc.start})") from None
    with _load_model(args.model, args.threads, args.gn_eps) as model:
        tokens = _tokenizer(model, args.tokenizer).encode(text)
        if args.max_tokens is not None:
            tokens = tokens[:args.max_tokens]
        if len(tokens) < 2:
            raise CliError(f"{name} has {len(tokens)} token(s); perplexity needs at least 2")
        t0 = time.perf_counter()
        nll, ppl = model.perplexity(tokens)
        dt = time.perf_counter() - t0
    print(f"file: {'-' if args.file == '-' else path} ({len(data)} bytes, {len(tokens)} tokens)")
    print(f"NLL per token: {nll:.4f} nats ({nll / 0.6931471805599453:.4f} bits)")
    print(f"perplexity: {ppl:.4f}")
    print(f"time: {dt:.2f} s ({len(tokens) / dt:.0f} tokens/s)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .fileformat import read_model_file

    path = Path(args.model_path)
    if not path.exists():
        raise CliError(f"model file '{path}' does not exist")
    with _load_model(str(path), 1) as model:
        version, dtype = model.version, model.dtype
        n_vocab, n_embed, n_layer, state_size = model.n_vocab, model.n_embed, model.n_layer, model.state_size
        gn_eps = model.gn_eps
    with read_model_file(path) as mf:
        n_params = sum(rec.n_elements for rec in mf.tensors.values())
        n_tensors = len(mf.tensors)
    size = path.stat().st_size
    print(f"file: {path}")
    print(f"file size: {size} bytes ({size / 2**20:.2f} MiB)")
    print(f"version: {version}")
    print(f"dtype: {dtype}")
    print(f"n_vocab: {n_vocab}")
    print(f"n_embed: {n_embed}")
    print(f"n_layer: {n_layer}")
    print(f"tensors: {n_tensors}")
    print(f"parameters: {n_params} ({n_params / 1e6:.2f}M)")
    print(f"state size: {state_size} floats")
    if gn_eps:
        print(f"GroupNorm eps: {gn_eps:g} (--gn-eps of the other commands overrides it)")
    return 0


def _check_src(path: str, what: str) -> None:
    p = Path(path)
    if not p.exists():
        raise CliError(f"{what} '{p}' does not exist")


def cmd_quantize(args: argparse.Namespace) -> int:
    from .quantize import quantize

    _check_src(args.src, "source model")
    quantize(args.src, args.dst, args.format, threads=args.threads, progress=progress_bar())
    print(f"wrote {args.dst}")
    return 0


def _write_maybe_quantized(dst: str, dtype: str, threads: int | None, make: Callable[[str, str], None]) -> None:
    """Runs ``make(path, "f16"/"f32")``; for a quantized dtype, to a temporary F16 file next to
    ``dst`` that is then quantized into ``dst`` (convert only writes float files)."""
    from .fileformat import DType
    from .quantize import quantize

    try:
        target = DType.from_name(dtype)
    except ValueError:
        raise CliError(f"unknown dtype {dtype!r}; choose f32, f16, Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0") from None
    if not target.is_quantized:
        make(dst, target.name.lower())
        return
    directory = Path(dst).resolve().parent
    fd, tmp = tempfile.mkstemp(prefix=f".{Path(dst).name}.", suffix=".f16.tmp", dir=directory)
    os.close(fd)
    try:
        make(tmp, "f16")
        quantize(tmp, dst, target, threads=threads, progress=progress_bar())
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert

    _check_src(args.src, "checkpoint")
    _write_maybe_quantized(args.dst, args.dtype, args.threads,
                           lambda path, dtype: convert(args.src, path, dtype, progress=progress_bar()))
    print(f"wrote {args.dst}")
    return 0


def cmd_merge_lora(args: argparse.Namespace) -> int:
    from .convert import merge_lora

    _check_src(args.base, "base checkpoint")
    _check_src(args.lora, "LoRA checkpoint")
    _write_maybe_quantized(args.out, args.dtype, args.threads,
                           lambda path, dtype: merge_lora(args.base, args.lora, path, args.alpha, dtype,
                                                          progress=progress_bar()))
    print(f"wrote {args.out}")
    return 0


# ------------------------------------------------------------------------------------------------
# Parser and main


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Run RWKV language models on the CPU (rwkv_ggml).")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("generate", help="continue a prompt, streaming the text",
                       description="Continue PROMPT (or standard input), streaming the new text to standard output.")
    p.add_argument("prompt", nargs="?", metavar="PROMPT", help="the text to continue; '-' or omitted: read stdin")
    _add_model(p)
    _add_sampling(p, 200)
    _add_tokenizer(p)
    _add_threads(p)
    _add_gn_eps(p)
    p.add_argument("--echo", action=argparse.BooleanOptionalAction, default=True,
                   help="print the prompt before the continuation (default: yes)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="interactive chat that keeps the state between turns",
                       description=f"Chat with a model; the conversation state is kept between turns. "
                                   f"Reads one message per line (also from a pipe). {_CHAT_HELP}.")
    _add_model(p)
    _add_sampling(p, 200)
    _add_tokenizer(p)
    _add_threads(p)
    _add_gn_eps(p)
    p.add_argument("--system", metavar="TEXT", help="text fed once before the conversation")
    p.add_argument("--user-name", default="User", metavar="NAME", help="the user's name in the transcript")
    p.add_argument("--assistant-name", default="Assistant", metavar="NAME",
                   help="the assistant's name in the transcript")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("bench", help="per-token latency and prompt throughput of a model",
                       description="Measure a model: median latency of one token in RNN mode, and tokens/s of "
                                   "sequence mode on a prompt of random tokens.")
    p.add_argument("model_path", metavar="MODEL", help="model file (.bin)")
    p.add_argument("--tokens", type=_positive_int, default=64, metavar="N",
                   help="tokens timed one by one (default 64)")
    p.add_argument("--prompt-tokens", type=_positive_int, default=128, metavar="T",
                   help="length of the timed prompt (default 128)")
    p.add_argument("--repeats", type=_positive_int, default=3, metavar="R", help="prompt runs (default 3)")
    _add_threads(p)
    _add_gn_eps(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("perplexity", help="perplexity of a model on a text file",
                       description="Mean negative log-likelihood per token and perplexity of a UTF-8 text file, "
                                   "computed in sequence mode with the logits of every position. FILE may be "
                                   "a pipe or process substitution (<(zcat text.gz)); '-' reads standard input. "
                                   "The whole text is read before the model runs.")
    p.add_argument("file", metavar="FILE", help="UTF-8 text file, a pipe, or '-' for standard input")
    _add_model(p)
    _add_tokenizer(p)
    _add_threads(p)
    _add_gn_eps(p)
    p.add_argument("--max-tokens", type=_positive_int, metavar="N", help="use only the first N tokens")
    p.set_defaults(func=cmd_perplexity)

    p = sub.add_parser("info", help="version, dtype, shapes, parameter count and size of a model file",
                       description="Describe a model file.")
    p.add_argument("model_path", metavar="MODEL", help="model file (.bin)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("quantize", help="quantize an F32/F16 model file",
                       description="Quantize SRC (an F32 or F16 model file) to FORMAT, writing DST.")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument("format", metavar="FORMAT", help="Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0")
    _add_threads(p)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("convert", help="convert a .pth / safetensors checkpoint to a model file",
                       description="Convert an RWKV checkpoint (.pth or .safetensors) to our .bin format, "
                                   "without PyTorch. A quantized --dtype converts to F16 first, then quantizes.")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument("--dtype", default="f16", metavar="DTYPE",
                   help="f32, f16 (default), Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0")
    _add_threads(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("merge-lora", help="merge a LoRA checkpoint into a base checkpoint",
                       description="Merge LORA (lora_A/lora_B pairs) into BASE with scale alpha / rank, "
                                   "writing the model file OUT.")
    p.add_argument("base", metavar="BASE")
    p.add_argument("lora", metavar="LORA")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--alpha", type=_float, required=True, metavar="A", help="LoRA alpha")
    p.add_argument("--dtype", default="f16", metavar="DTYPE",
                   help="f32, f16 (default), Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0")
    _add_threads(p)
    p.set_defaults(func=cmd_merge_lora)
    return parser


# Commands whose whole point is what they print: with standard output closed they would do their work
# for nothing, so they stop at once. (quantize/convert/merge-lora write files; their "wrote" line is a
# courtesy and they run anyway.)
_PRINTING_COMMANDS = frozenset({"generate", "chat", "bench", "perplexity", "info"})


def main(argv: Sequence[str] | None = None) -> int:
    fill_closed_std_fds()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        if sys.stderr is not None:
            parser.print_help(sys.stderr)
        return 2
    from .errors import RwkvGgmlError

    debug = bool(os.environ.get("RWKV_GGML_DEBUG"))
    try:
        if sys.stdout is None and args.command in _PRINTING_COMMANDS:
            raise StreamClosedError("standard output is closed: the output would be lost")
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        try:
            if sys.stderr is not None:
                sys.stderr.write("\n")  # end the "^C" line the terminal echoed
        except (OSError, ValueError):
            pass
        return 130
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): stop quietly, without a second error at exit
        silence_stdout()
        return 0
    except MemoryError as exc:
        # numpy's "Unable to allocate 7.3 TiB ..." and our OutOfMemoryError say how much; a bare
        # MemoryError says nothing, so the line at least names the problem
        if debug:
            raise
        detail = str(exc)
        error_line(f"out of memory: {one_line(exc)}" if detail else "out of memory")
        return 1
    except (CliError, RwkvGgmlError, OSError, ValueError, TypeError, NotImplementedError) as exc:
        if debug:
            raise
        error_line(one_line(exc))
        return 1
    except Exception as exc:
        # a bug of ours, not a user mistake; still one line, and the way to get the traceback
        if debug:
            raise
        error_line(f"internal error ({type(exc).__name__}: {one_line(exc)}); "
                    f"rerun with RWKV_GGML_DEBUG=1 for the traceback")
        return 1


def run() -> NoReturn:
    """Entry point: ``sys.exit(main())``."""
    sys.exit(main())


if __name__ == "__main__":
    run()
