"""The ``rwkv-ggml`` command line (also ``python -m rwkv_ggml``).

Subcommands: generate, chat, bench, perplexity, info, quantize, convert, merge-lora, serve. Every one has
``--help``. A user mistake (a missing or malformed model file, a bad flag, an empty prompt) prints
one line ``rwkv-ggml: error: ...`` on stderr and exits with status 1 (2 for bad command-line
syntax), never a traceback; set ``RWKV_GGML_DEBUG=1`` to get the traceback anyway. That holds for
every exception, running out of memory included. Ctrl-C exits with 130 and a closed output pipe
(``| head``) ends the program quietly. A standard stream that is closed altogether (``<&-``,
``>&-``) reads as empty input, or, where the command's output would be lost, is one error line.

This module maps exceptions to exit statuses (``main``); ``parser`` builds the argument parser,
``commands`` holds one ``cmd_*`` function per subcommand, ``streams`` reads and writes the standard
streams without assuming they exist.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .parser import build_parser
from .streams import (
    PROG,
    CliError,
    StreamClosedError,
    error_line,
    fill_closed_std_fds,
    one_line,
    silence_stdout,
)

__all__ = ["PROG", "CliError", "build_parser", "main", "run"]


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
    from ..errors import RwkvGgmlError

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
        error_line(
            f"internal error ({type(exc).__name__}: {one_line(exc)}); "
            f"rerun with RWKV_GGML_DEBUG=1 for the traceback"
        )
        return 1


def run() -> NoReturn:
    """Entry point: ``sys.exit(main())``."""
    sys.exit(main())


if __name__ == "__main__":
    run()
