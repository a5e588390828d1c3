"""File- and function-size check: small files with one job each, functions a reader can hold in mind.

Limits: C files <= 700 lines, Python modules <= 600 lines, functions <= 100 lines (Python, measured on
the syntax tree; C, from a top-level definition's opening line to its closing brace). Tests, benchmarks
and tools count too: a test file that outgrows the limit has more than one subject.

    python tools/check_sizes.py          # exit 1 and one line per violation if any limit is exceeded
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = {".c": 700, ".h": 700, ".py": 600}
MAX_FUNCTION_LINES = 100
# a C function definition starts at column 0 with a return type and ends at a closing brace at column 0
_C_DEFINITION = re.compile(r"^[A-Za-z_][\w\s\*]*\b(\w+)\s*\([^;]*$")


def tracked_sources() -> list[Path]:
    """The C and Python files git tracks (plus untracked, not ignored ones), generated files excluded."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sorted(
        ROOT / name for name in out.splitlines() if Path(name).suffix in MAX_LINES and (ROOT / name).is_file()
    )


def python_functions(text: str) -> list[tuple[str, int, int]]:
    """(name, first line, line count) of every function in a module."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            found.append((node.name, start, (node.end_lineno or node.lineno) - start + 1))
    return found


def c_functions(text: str) -> list[tuple[str, int, int]]:
    """(name, first line, line count) of every top-level C function definition."""
    found = []
    name, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        match = _C_DEFINITION.match(line)
        if match and not line.startswith(("typedef", "return")):
            name, start = match.group(1), number
        elif line.startswith("}") and start:
            found.append((name, start, number - start + 1))
            name, start = "", 0
    return found


def violations(paths: list[Path]) -> list[str]:
    problems = []
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace")
        rel = path.relative_to(ROOT)
        n_lines = text.count("\n") + (not text.endswith("\n") and bool(text))
        limit = MAX_LINES[path.suffix]
        if n_lines > limit:
            problems.append(f"{rel}: {n_lines} lines (limit {limit})")
        functions = (
            python_functions(text)
            if path.suffix == ".py"
            else c_functions(text)
            if path.suffix == ".c"
            else []
        )
        for name, start, length in functions:
            if length > MAX_FUNCTION_LINES:
                problems.append(
                    f"{rel}:{start}: function {name} has {length} lines (limit {MAX_FUNCTION_LINES})"
                )
    return problems


def main() -> int:
    problems = violations(tracked_sources())
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
