"""Every documentation citation in the code resolves inside the repository.

Code cites the reference documents in docs/ as ``architecture.md §7``, ``formats.md §4.2/§5.3``,
``tokenizers.md section 2.4`` and by equation label, ``(V7.10)`` or ``V5.4-V5.5``. These tests find
every such citation in the code and check that docs/<name>.md exists and has a heading with that
section number, and that every cited equation label is defined in docs/architecture.md. They also
check that no code file points at the specs' old home outside the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs"
SCANNED_DIRS = ("rwkv_ggml", "csrc", "tests", "benchmarks", "tools")
SCANNED_SUFFIXES = {".py", ".pyi", ".c", ".h", ".inc", ".md", ".sh", ".toml", ".cfg", ""}
CITED_DOCS = ("architecture", "formats", "testdata", "tokenizers")

# "formats.md §4.2", "architecture.md §3.1/§4.1/§5.1/§6.1", "formats.md §1–§2", "§5.4." at a sentence end
_SECTION_LIST = r"§\d+(?:\.\d+)*(?:\s*[/–,-]\s*§\d+(?:\.\d+)*)*"
SECTION_CITATION = re.compile(
    rf"\b({'|'.join(CITED_DOCS)})\.md`?\s*(?:\(\s*)?({_SECTION_LIST}|section\s+\d+(?:\.\d+)*)"
)
SECTION_NUMBER = re.compile(r"\d+(?:\.\d+)*")
# (E1), (S3), (V7.10), (CM4.2); the dotted version labels also without parentheses ("V5.4-V5.5")
EQUATION_LABEL = re.compile(r"\(((?:E|S)\d+)\)|\b((?:V[4-7]|CM[4-7])\.\d+)\b")


def _code_files() -> list[Path]:
    files = []
    for top in SCANNED_DIRS:
        root = REPO_ROOT / top
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if (
                path.is_file()
                and path.suffix in SCANNED_SUFFIXES
                and "__pycache__" not in path.parts
                and path.resolve() != Path(__file__).resolve()
            ):
                files.append(path)
    return files


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        return []


def _section_headings(doc: Path) -> set[str]:
    """Section numbers of the Markdown headings of ``doc``: "## 7. The state" -> "7", "### 4.2 X" -> "4.2"."""
    numbers = set()
    for line in _lines(doc):
        m = re.match(r"#+\s+(\d+(?:\.\d+)*)\.?(?:\s|$)", line)
        if m:
            numbers.add(m.group(1))
    return numbers


def _equation_labels(doc: Path) -> set[str]:
    """Labels defined in ``doc``: a line that starts (after indentation) with "(V7.10)" and the like."""
    labels = set()
    for line in _lines(doc):
        m = re.match(r"\s+\(((?:E|S)\d+|(?:V[4-7]|CM[4-7])\.\d+)\)\s", line)
        if m:
            labels.add(m.group(1))
    return labels


def _cited_sections() -> list[tuple[str, str, str]]:
    """(where, document name, section number) for every section citation in the code."""
    found = []
    for path in _code_files():
        for number, line in enumerate(_lines(path), start=1):
            for m in SECTION_CITATION.finditer(line):
                where = f"{path.relative_to(REPO_ROOT)}:{number}"
                for section in SECTION_NUMBER.findall(m.group(2)):
                    found.append((where, m.group(1), section))
    return found


def test_the_scan_finds_citations() -> None:
    # Guards the test itself: if a refactor of the patterns found nothing, everything would "pass".
    cited = _cited_sections()
    assert len(cited) > 50
    assert {doc for _, doc, _ in cited} >= {"architecture", "formats", "testdata"}


def test_every_cited_section_exists_in_docs() -> None:
    headings = {
        name: _section_headings(DOCS / f"{name}.md") for name in CITED_DOCS if (DOCS / f"{name}.md").exists()
    }
    missing = [
        f"{where}: {doc}.md §{section}"
        for where, doc, section in _cited_sections()
        if section not in headings.get(doc, set())
    ]
    assert not missing, "citations of sections that docs/ does not have:\n" + "\n".join(missing)


def test_every_cited_equation_label_is_defined() -> None:
    defined = _equation_labels(DOCS / "architecture.md")
    assert {"E1", "S1", "V4.4", "V5.4", "V6.7", "V7.10", "CM4.3", "CM7.2"} <= defined
    missing = []
    for path in _code_files():
        for number, line in enumerate(_lines(path), start=1):
            for m in EQUATION_LABEL.finditer(line):
                label = m.group(1) or m.group(2)
                if label not in defined:
                    missing.append(f"{path.relative_to(REPO_ROOT)}:{number}: {label}")
    assert not missing, "equation labels that docs/architecture.md does not define:\n" + "\n".join(missing)


def test_docs_index_lists_every_document() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for doc in sorted(DOCS.glob("*.md")):
        if doc.name != "README.md":
            assert f"({doc.name})" in index, f"docs/README.md does not link {doc.name}"


def test_sdist_ships_the_docs() -> None:
    manifest = (REPO_ROOT / "MANIFEST.in").read_text(encoding="utf-8").splitlines()
    assert "recursive-include docs *.md" in [line.strip() for line in manifest]


def test_no_code_file_points_at_specs_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{number}"
        for path in _code_files()
        for number, line in enumerate(_lines(path), start=1)
        if "shared/spec" in line
    ]
    assert not offenders, "cite docs/ instead of shared/spec:\n" + "\n".join(offenders)
