"""The subcommands of ``rwkv-ggml``: each ``cmd_*`` takes the parsed arguments and returns the exit status.

User mistakes they find themselves raise :class:`CliError`; everything else is left to the library's
typed exceptions, which ``main`` turns into one line each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .streams import (
    CliError,
    error_line,
    note,
    one_line,
    progress_bar,
    read_stdin,
    stdin_is_terminal,
    write_out,
)

if TYPE_CHECKING:
    from ..model import Model


def _model_spec(args: argparse.Namespace) -> str | None:
    """--model/-m, or the positional MODEL that bench and info took before (still accepted)."""
    model: str | None = getattr(args, "model", None)
    legacy: str | None = getattr(args, "model_path", None)
    if model is not None and legacy is not None:
        raise CliError(f"the model is given twice ('{legacy}' and --model '{model}'): give it once, with -m")
    return model if model is not None else legacy


def _model_path(args: argparse.Namespace) -> Path:
    """The model file the arguments name: -m PATH, -m hf:OWNER/NAME[/FILE] (downloaded and converted
    once, see rwkv_ggml.hub), or the packaged default model."""
    from ..generation import default_model_path

    spec = _model_spec(args)
    dtype: str | None = getattr(args, "dtype", None)
    if spec is not None and spec.startswith("hf:"):
        from ..hub import DEFAULT_DTYPE, parse_hf_model, pretrained_model_file

        repo_id, filename = parse_hf_model(spec)
        return pretrained_model_file(
            repo_id,
            filename,
            dtype=dtype or DEFAULT_DTYPE,
            threads=getattr(args, "threads", None),
            progress=progress_bar(),
        )
    if dtype is not None:
        raise CliError(
            "--dtype applies to hf: models only; to change a model file's dtype use 'rwkv-ggml quantize'"
        )
    if spec is None:
        return default_model_path()
    path = Path(spec)
    if not path.exists():
        raise CliError(f"model file '{path}' does not exist")
    convert_hint = f"rwkv-ggml convert '{path}' model.bin --dtype Q8_0"
    if path.is_dir():
        raise CliError(
            f"'{path}' is a directory, not a model file; if it holds a checkpoint, convert it: {convert_hint}"
        )
    if path.name.endswith((".pth", ".safetensors", ".safetensors.index.json")):
        raise CliError(f"'{path}' is a checkpoint, not a model file (.bin): convert it first: {convert_hint}")
    return path


def _load_model(args: argparse.Namespace, threads: int | None = None) -> Model:
    from ..model import Model

    path = _model_path(args)
    return Model(
        path, threads=args.threads if threads is None else threads, gn_eps=getattr(args, "gn_eps", None)
    )


def _tokenizer(model: Model, kind: str | None) -> Any:
    from ..tokenizer import Tokenizer

    return Tokenizer.for_model(model, kind)


def _sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "min_p": args.min_p,
        "presence_penalty": args.presence_penalty,
        "frequency_penalty": args.frequency_penalty,
        "repetition_penalty": args.repetition_penalty,
        "penalty_decay": args.penalty_decay,
        "seed": args.seed,
        "stop_tokens": tuple(args.stop_token),
        "stop_strings": tuple(_unescape(s) for s in args.stop),
    }


def _structured_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """generate()'s response_format / grammar / regex from --json-schema FILE, --grammar FILE, --regex."""
    import json

    if args.json_schema is None and args.grammar is None and args.regex is None:
        return {}
    try:
        import llguidance  # noqa: F401
    except ImportError:
        raise CliError(
            "--json-schema/--grammar/--regex need llguidance: pip install 'rwkv_ggml[structured]'"
        ) from None
    if args.regex is not None:
        return {"regex": args.regex}
    path = Path(args.json_schema if args.json_schema is not None else args.grammar)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read '{path}': {getattr(exc, 'strerror', None) or exc}") from None
    if args.grammar is not None:
        return {"grammar": text}
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise CliError(f"'{path}' is not a JSON schema (not valid JSON: {exc})") from None
    return {"response_format": {"type": "json_schema", "json_schema": {"name": path.stem, "schema": schema}}}


def _unescape(text: str) -> str:
    """Lets ``--stop '\\n\\n'`` mean two newlines: shells make literal newlines awkward."""
    if not text:
        raise CliError("--stop needs a non-empty text")
    return text.replace("\\n", "\n").replace("\\t", "\t")


def _read_prompts_file(name: str) -> list[str]:
    if name == "-":
        if sys.stdin is None:
            raise CliError("--prompts-file -: standard input is closed")
        text = read_stdin()
    else:
        try:
            text = Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read the prompts file '{name}': {exc}") from None
    prompts = [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise CliError(f"the prompts file '{name}' has no prompts (one per line)")
    return prompts


def _generate_batch(args: argparse.Namespace) -> int:
    """generate --prompts-file: every prompt decoded together (batch_generation), JSON lines out."""
    import json

    from ..batch_generation import generate_batch
    from ..sampling import params_from_options

    if args.prompt is not None:
        raise CliError("give either PROMPT or --prompts-file, not both")
    prompts = _read_prompts_file(args.prompts_file)
    with _load_model(args) as model:
        params = params_from_options(None, None, **_sampling_kwargs(args))
        results = generate_batch(
            model, prompts, args.max_tokens, tokenizer=_tokenizer(model, args.tokenizer), params=params
        )
        for i, (prompt, r) in enumerate(zip(prompts, results, strict=True)):
            record = {
                "index": i,
                "prompt": prompt,
                "text": r.text,
                "finish_reason": r.finish_reason,
                "tokens": r.tokens,
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
            }
            write_out(sys.stdout, json.dumps(record, ensure_ascii=False) + "\n")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from ..generation import generate

    if args.prompts_file is not None:
        return _generate_batch(args)
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
    with _load_model(args) as model:
        gen = generate(
            model,
            prompt,
            args.max_tokens,
            tokenizer=_tokenizer(model, args.tokenizer),
            **_sampling_kwargs(args),
            **_structured_kwargs(args),
        )
        if args.echo:
            write_out(sys.stdout, prompt)
        for chunk in gen:
            write_out(sys.stdout, chunk)
        write_out(sys.stdout, "\n")
    return 0


CHAT_HELP = "commands: /reset (forget the conversation), /save FILE, /load FILE, /quit"
CHAT_KEYS = "Ctrl-C stops a reply; Ctrl-C or Ctrl-D at the prompt quits"


def cmd_chat(args: argparse.Namespace) -> int:
    from ..chat_session import ChatSession

    interactive = stdin_is_terminal()
    with _load_model(args) as model:
        kwargs = _sampling_kwargs(args)
        stops = kwargs.pop("stop_strings")
        # One session for the whole chat: with --seed its random stream is seeded once, not per turn.
        session = ChatSession(
            model,
            _tokenizer(model, args.tokenizer),
            system=args.system,
            user=args.user_name,
            assistant=args.assistant_name,
            stop=stops or None,
            **kwargs,
        )
        if interactive:
            note(f"Chatting with {Path(model.path).name}. {CHAT_HELP}. {CHAT_KEYS}.")
        while True:
            # Ctrl-C here (at the prompt) is not caught: main() ends the chat with status 130.
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
            _chat_reply(session, line, args.assistant_name, args.max_tokens)


def _chat_reply(session: Any, line: str, assistant: str, max_tokens: int) -> None:
    """Streams one reply as ``"Assistant: text"``. Ctrl-C stops the reply, not the chat: the part
    already written stays in the conversation (closing the stream brings the state up to date)."""
    write_out(sys.stdout, f"{assistant}:")
    stream = None
    try:
        stream = session.send(line, max_tokens)
        separator = " "  # one space after "Assistant:"; the session strips what the model put there
        for chunk in stream:
            write_out(sys.stdout, separator + chunk)
            separator = ""
    except KeyboardInterrupt:
        if stream is not None:
            stream.close()
        write_out(sys.stdout, "\n")
        note(f"(reply stopped; {CHAT_KEYS})")
        return
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
            note(CHAT_HELP)
        else:
            raise CliError(f"unknown command {name!r}; {CHAT_HELP}")
    except (CliError, OSError, ValueError) as exc:
        error_line(one_line(exc))
    return False


def cmd_bench(args: argparse.Namespace) -> int:
    import numpy as np

    with _load_model(args) as model:
        rng = np.random.default_rng(0)
        hi = model.n_vocab
        prompt = rng.integers(0, hi, size=args.prompt_tokens).tolist()
        print(
            f"model: {model.path} (v{model.version}, {model.dtype}, n_embed={model.n_embed}, "
            f"n_layer={model.n_layer}, n_vocab={model.n_vocab}), threads: {model.threads}"
        )
        # prompt throughput (sequence mode): one warm-up, then the median of --repeats runs
        model.eval_sequence(prompt)
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            _, state = model.eval_sequence(prompt)
            runs.append(time.perf_counter() - t0)
        seq = statistics.median(runs)
        print(
            f"prompt: {args.prompt_tokens} tokens in {seq * 1e3:.1f} ms (median of {args.repeats}) = "
            f"{args.prompt_tokens / seq:.1f} tokens/s"
        )
        # per-token latency (RNN mode, logits included), continuing from the prompt's state
        logits_out = np.empty(model.n_vocab, dtype=np.float32)
        model.eval(int(prompt[-1]), state, state_out=state, logits_out=logits_out)
        times = []
        for tok in rng.integers(0, hi, size=args.tokens).tolist():
            t0 = time.perf_counter()
            model.eval(int(tok), state, state_out=state, logits_out=logits_out)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(
            f"per token: median {med * 1e3:.3f} ms over {args.tokens} tokens "
            f"(min {min(times) * 1e3:.3f}, max {max(times) * 1e3:.3f}) = {1 / med:.1f} tokens/s"
        )
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
    with _load_model(args) as model:
        tokens = _tokenizer(model, args.tokenizer).encode(text)
        if args.max_tokens is not None:
            tokens = tokens[: args.max_tokens]
        if len(tokens) < 2:
            raise CliError(f"{name} has {len(tokens)} token(s); perplexity needs at least 2")
        show = progress_bar() if args.progress is None else args.progress
        t0 = time.perf_counter()
        nll, ppl = _perplexity(model, tokens, show)
        dt = time.perf_counter() - t0
    print(f"file: {'-' if args.file == '-' else path} ({len(data)} bytes, {len(tokens)} tokens)")
    print(f"NLL per token: {nll:.4f} nats ({nll / 0.6931471805599453:.4f} bits)")
    print(f"perplexity: {ppl:.4f}")
    print(f"time: {dt:.2f} s ({len(tokens) / dt:.0f} tokens/s)")
    return 0


def _perplexity(model: Model, tokens: list[int], show_progress: bool) -> tuple[float, float]:
    """``model.perplexity(tokens)``, a chunk at a time so that a progress bar can follow it on stderr.
    Chunks of the model's own chunk size with the state carried over give the same logits, so the
    same numbers."""
    import numpy as np
    from tqdm import tqdm

    from ..model import DEFAULT_CHUNK_SIZE

    fed = tokens[:-1]  # the last token predicts nothing
    total, state = 0.0, None
    with tqdm(total=len(fed), unit="tok", disable=not show_progress, file=sys.stderr, leave=False) as bar:
        for start in range(0, len(fed), DEFAULT_CHUNK_SIZE):
            chunk = fed[start : start + DEFAULT_CHUNK_SIZE]
            logits, state = model.eval_sequence(chunk, state, all_logits=True)
            assert logits is not None
            z = logits.astype(np.float64)
            z -= z.max(axis=1, keepdims=True)
            targets = tokens[start + 1 : start + 1 + len(chunk)]
            total += float(np.sum(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(chunk)), targets]))
            bar.update(len(chunk))
    nll = total / len(fed)
    return nll, float(np.exp(nll))


def cmd_info(args: argparse.Namespace) -> int:
    from ..gguf_model import GgufModelFile, describe, open_model_file
    from ..model import Model

    path = _model_path(args)
    with Model(path, threads=1) as model:
        version, dtype = model.version, model.dtype
        n_vocab, n_embed, n_layer, state_size = model.n_vocab, model.n_embed, model.n_layer, model.state_size
        gn_eps = model.gn_eps
    with open_model_file(path) as mf:
        n_params = sum(rec.n_elements for rec in mf.tensors.values())
        n_tensors = len(mf.tensors)
        types = Counter(rec.dtype.name for rec in mf.tensors.values())
        head_type = mf.tensors["head.weight"].dtype.name if "head.weight" in mf.tensors else "-"
        gguf_lines = describe(mf) if isinstance(mf, GgufModelFile) else []
    size = path.stat().st_size
    print(f"file: {path}")
    print(f"file size: {size} bytes ({size / 2**20:.2f} MiB)")
    print(f"version: {version}")
    print(f"dtype: {dtype}")
    print(f"n_vocab: {n_vocab}")
    print(f"n_embed: {n_embed}")
    print(f"n_layer: {n_layer}")
    print(f"tensors: {n_tensors} ({', '.join(f'{n} {t}' for t, n in types.most_common())}; head {head_type})")
    print(f"parameters: {n_params} ({n_params / 1e6:.2f}M)")
    print(f"state size: {state_size} floats")
    if gn_eps:
        print(f"GroupNorm eps: {gn_eps:g} (--gn-eps of the other commands overrides it)")
    if gguf_lines:
        print("GGUF metadata:")
        for key, value in gguf_lines:
            print(f"  {key}: {value}")
    return 0


def _check_src(path: str, what: str) -> None:
    p = Path(path)
    if not p.exists():
        raise CliError(f"{what} '{p}' does not exist")


def cmd_quantize(args: argparse.Namespace) -> int:
    from ..quantization import quantize

    if args.format is not None and args.dtype is not None and args.format != args.dtype:
        raise CliError(f"two formats given ('{args.format}' and --dtype '{args.dtype}'): give --dtype only")
    fmt = args.dtype or args.format
    if fmt is None:
        raise CliError("quantize needs --dtype: Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0")
    _check_src(args.src, "source model")
    quantize(args.src, args.dst, fmt, threads=args.threads, progress=progress_bar(), head=_head(args))
    print(f"wrote {args.dst}")
    return 0


def _head(args: argparse.Namespace) -> str | bool:
    """The ``head=`` of quantize(): --head-dtype or False (keep the head as it is)."""
    return getattr(args, "head_dtype", None) or False


def _write_maybe_quantized(
    dst: str,
    dtype: str,
    threads: int | None,
    make: Callable[[str, str], None],
    head: str | bool = False,
) -> None:
    """Runs ``make(path, "f16"/"f32")``; for a quantized dtype, to a temporary F16 file next to
    ``dst`` that is then quantized into ``dst`` (convert only writes float files)."""
    from ..fileformat import DType
    from ..quantization import quantize

    try:
        target = DType.from_name(dtype)
    except ValueError:
        raise CliError(f"unknown dtype {dtype!r}; choose f32, f16, Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0") from None
    if not target.is_quantized and head:
        raise CliError(f"--head-dtype needs a quantized --dtype (Q4_0 ... Q8_0), not {dtype!r}")
    if not target.is_quantized:
        make(dst, target.name.lower())
        return
    directory = Path(dst).resolve().parent
    fd, tmp = tempfile.mkstemp(prefix=f".{Path(dst).name}.", suffix=".f16.tmp", dir=directory)
    os.close(fd)
    try:
        make(tmp, "f16")
        quantize(tmp, dst, target, threads=threads, progress=progress_bar(), head=head)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def cmd_convert(args: argparse.Namespace) -> int:
    from ..conversion import convert
    from ..gguf_convert import block_types, convert_gguf
    from ..gguf_format import is_gguf

    _check_src(args.src, "checkpoint")
    if is_gguf(args.src):  # a GGUF model: its blocks are copied, its float tensors become --dtype
        blocks = block_types(args.src)
        if blocks and args.dtype.strip().lower() not in ("f16", "fp16", "f32", "fp32"):
            raise CliError(
                f"{args.src} already holds {', '.join(blocks)} tensors, which cannot be quantized again; "
                "convert it with --dtype f16 or f32 (its quantized tensors are copied as they are)"
            )
        _write_maybe_quantized(
            args.dst, args.dtype, args.threads, lambda path, d: convert_gguf(args.src, path, d)
        )
        print(f"wrote {args.dst}")
        return 0
    _write_maybe_quantized(
        args.dst,
        args.dtype,
        args.threads,
        lambda path, dtype: convert(args.src, path, dtype, progress=progress_bar()),
        head=_head(args),
    )
    print(f"wrote {args.dst}")
    return 0


def cmd_merge_lora(args: argparse.Namespace) -> int:
    from ..conversion import merge_lora

    _check_src(args.base, "base checkpoint")
    _check_src(args.lora, "LoRA checkpoint")
    _write_maybe_quantized(
        args.out,
        args.dtype,
        args.threads,
        lambda path, dtype: merge_lora(
            args.base, args.lora, path, args.alpha, dtype, progress=progress_bar()
        ),
    )
    print(f"wrote {args.out}")
    return 0


SERVER_EXTRA_HINT = 'the server needs its optional dependencies: pip install "rwkv_ggml[server]"'


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise CliError(f"{SERVER_EXTRA_HINT} ({exc})") from None
    from ..server.config import ServerConfig
    from ..server.runner import serve

    config = ServerConfig(
        model=_model_path(args),
        model_name=args.model_name,
        host=args.host,
        port=args.port,
        threads=args.threads,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        state_cache_mb=args.state_cache_mb,
        api_key=args.api_key,
        max_tokens_cap=args.max_tokens_cap,
        max_prompt_tokens=args.max_prompt_tokens,
        request_timeout=args.request_timeout,
        prefill_chunk=args.prefill_chunk,
        shutdown_timeout=args.shutdown_timeout,
    )
    return serve(config)
