"""Coverage-guided fuzzing of rwkv_ggml's file readers with atheris, for a bounded time.

    python fuzz/run.py --seconds 80                      # every target, 16 s each
    python fuzz/run.py --seconds 3600 --target bin       # one target, longer
    python fuzz/run.py --seconds 3600 --keep-going       # triage: record every distinct finding
    python fuzz/run.py --target state --replay FILE      # run a saved input again, say what it does

Each target runs in its own subprocess (``--child``) with a capped address space, libFuzzer's
per-input timeout and RSS limit, so an exception escaping the library, a crash, a hang or a memory
blow-up is reported as a finding with the input saved, instead of taking the machine down. The exit
status is 0 when nothing was found and 1 otherwise; every saved input's path is printed.

``--target`` takes the names in ``fuzz/targets.py`` (bin, gguf, pth, safetensors, state, all) or
``module:function`` or ``path/to/file.py:function`` for any other function of bytes. See fuzz/README.md.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_WORK = REPO_ROOT / "fuzz" / "out"
PER_INPUT_TIMEOUT_S = 10
RSS_LIMIT_MB = 3072
# libFuzzer's own artifacts: crash- (signal or uncaught exception), timeout-, oom-, leak-, slow-unit-.
_ARTIFACT_PREFIXES = ("crash-", "timeout-", "oom-", "leak-")


def _child(args: argparse.Namespace, libfuzzer_args: list[str]) -> int:
    """Fuzz one target in this process (started by the parent with --child)."""
    from fuzz import harness

    harness.limit_memory(args.memory_limit_mb << 20)
    import atheris  # type: ignore[import-untyped]
    import numpy  # noqa: F401 - imported uninstrumented before the hook is installed

    with atheris.instrument_imports(include=["rwkv_ggml", "fuzz.targets", "fuzz.corpus"]):
        import rwkv_ggml.checkpoint
        import rwkv_ggml.conversion
        import rwkv_ggml.fileformat
        import rwkv_ggml.gguf_format
        import rwkv_ggml.gguf_model
        import rwkv_ggml.model
        import rwkv_ggml.state
        import rwkv_ggml.weights  # noqa: F401
        from fuzz import targets
    target = targets.resolve(args.target)
    if args.target == "state":
        targets.state_model()  # built before fuzzing starts, not inside the first input's time budget
    recorder = harness.Recorder(_label(args.target), target, args.findings, args.keep_going)
    from fuzz.mutators import MUTATORS

    structured = MUTATORS.get(args.target)
    if structured is not None:

        def mutator(data: bytes, max_size: int, seed: int) -> bytes:
            return structured(data, max_size, seed, atheris.Mutate)

        atheris.Setup([sys.argv[0], *libfuzzer_args], recorder, custom_mutator=mutator)
    else:
        atheris.Setup([sys.argv[0], *libfuzzer_args], recorder)
    atheris.Fuzz()
    return 0  # pragma: no cover - atheris.Fuzz exits the process


def _label(target: str) -> str:
    return pathlib.Path(target).name.replace(":", "-").replace(".", "-")


def _replay(args: argparse.Namespace) -> int:
    """Run saved inputs through the target once, in this process, and say what each does."""
    from fuzz import harness, targets

    harness.limit_memory(args.memory_limit_mb << 20)
    target = targets.resolve(args.target)
    status = 0
    for path in args.replay:
        finding = harness.check(target, pathlib.Path(path).read_bytes())
        if finding is None:
            print(f"{path}: no finding")
        else:
            status = 1
            print(f"{path}: FINDING {finding.describe()}\n{finding.detail}")
    return status


def _seeds(args: argparse.Namespace, name: str) -> pathlib.Path | None:
    """The seed folder of a target, building the whole seed corpus first if it is missing."""
    if name not in ("bin", "gguf", "pth", "safetensors", "state"):
        return None
    folder: pathlib.Path = args.corpus / name
    if not folder.is_dir() or not any(folder.iterdir()):
        from fuzz import corpus

        print(f"building the seed corpus in {args.corpus}", flush=True)
        corpus.build(args.corpus)
    return folder


def _run_target(args: argparse.Namespace, name: str, seconds: int) -> list[pathlib.Path]:
    """Fuzz one target in a subprocess for ``seconds``; returns the findings it saved."""
    label = _label(name)
    findings: pathlib.Path = args.findings
    findings.mkdir(parents=True, exist_ok=True)
    grown = args.work / "grown" / label  # inputs the fuzzer found interesting, kept between runs
    grown.mkdir(parents=True, exist_ok=True)
    seeds = _seeds(args, name)
    before = set(findings.iterdir())
    libfuzzer = (
        [str(grown)]
        + ([str(seeds)] if seeds else [])
        + [
            f"-timeout={args.timeout}",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-artifact_prefix={findings}{os.sep}{label}-",
            "-print_final_stats=1",
        ]
        + ([f"-seed={args.seed}"] if args.seed else [])
    )
    if seeds is not None:
        from fuzz.corpus import largest

        libfuzzer.append(f"-max_len={max(largest(seeds) + 4096, 4096)}")
    command = [
        sys.executable,
        str(pathlib.Path(__file__).resolve()),
        "--child",
        "--target",
        name,
        "--findings",
        str(findings),
        "--memory-limit-mb",
        str(args.memory_limit_mb),
    ]
    if args.keep_going:
        command.append("--keep-going")
    env = dict(
        os.environ,
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
    print(f"fuzzing {name} for {seconds} s", flush=True)
    started = time.monotonic()
    left = seconds
    while True:
        # The wall-clock guard only matters if libFuzzer itself hangs outside an input.
        try:
            rc = subprocess.run(
                [*command, "--", *libfuzzer, f"-max_total_time={left}"],
                env=env,
                timeout=left + 4 * args.timeout + 60,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            rc = -1
            print(f"{name}: the fuzzer did not stop on time", flush=True)
        left = seconds - int(time.monotonic() - started)
        # Triage: a crash, hang or blow-up ends the child; start it again for the time left.
        if rc == 0 or not args.keep_going or left < 5:
            break
        print(f"{name}: restarting after exit status {rc}, {left} s left", flush=True)
    new = sorted(set(findings.iterdir()) - before)
    saved = [
        p
        for p in new
        if p.suffix == ".input"
        or (p.name.startswith(f"{label}-") and p.name[len(label) + 1 :].startswith(_ARTIFACT_PREFIXES))
    ]
    print(
        f"{name}: exit status {rc} after {time.monotonic() - started:.0f} s, {len(saved)} finding(s)",
        flush=True,
    )
    if rc != 0 and not saved:
        # A non-zero exit without a saved input is still a failure (the fuzzer could not run).
        print(f"{name}: the fuzzer failed without saving an input", flush=True)
        saved = [pathlib.Path(f"<{name}: fuzzer exit status {rc}>")]
    return saved


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    libfuzzer_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, libfuzzer_args = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=80, help="total fuzzing time, split among the targets")
    parser.add_argument(
        "--target",
        default="all",
        help="bin, gguf, pth, safetensors, state, all (default), module:function or file.py:function",
    )
    parser.add_argument(
        "--corpus",
        type=pathlib.Path,
        default=REPO_ROOT / "fuzz" / "corpus",
        help="seed corpus folder (built from the tiny models if missing)",
    )
    parser.add_argument(
        "--work",
        type=pathlib.Path,
        default=DEFAULT_WORK,
        help="where grown corpora and findings go (default fuzz/out)",
    )
    parser.add_argument(
        "--findings", type=pathlib.Path, default=None, help="where findings go (default WORK/findings)"
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="record every distinct exception and keep fuzzing (crashes still stop a target)",
    )
    parser.add_argument("--timeout", type=int, default=PER_INPUT_TIMEOUT_S, help="seconds allowed per input")
    parser.add_argument("--memory-limit-mb", type=int, default=4096, help="address-space cap per fuzzer")
    parser.add_argument("--replay", nargs="+", metavar="FILE", help="run saved inputs once and report")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="libFuzzer's random seed (0: a new one each run); CI fixes it so a run explores the same inputs",
    )
    args = parser.parse_args(argv)
    if args.findings is None:
        args.findings = args.work / "findings"
    if args.child:
        return _child(args, libfuzzer_args)
    if args.replay:
        if args.target == "all":
            parser.error("--replay needs one --target")
        return _replay(args)
    names = ["bin", "gguf", "pth", "safetensors", "state"] if args.target == "all" else [args.target]
    seconds = max(1, args.seconds // len(names))
    found: list[pathlib.Path] = []
    for name in names:
        found += _run_target(args, name, seconds)
    if found:
        print("FINDINGS (inputs saved; see fuzz/README.md to turn one into a regression test):")
        for path in found:
            print(f"  {path}")
        return 1
    print("no findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
