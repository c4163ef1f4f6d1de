"""Nothing in data_pipeline/ is pasted from the libraries it builds on.

Every line of 30 or more characters of data_pipeline/'s Python files, indentation and comments included, is
compared with the lines of the installed spaCy, datatrove, trafilatura and ftfy sources. Import statements and
the signature lines of functions and classes are left out: they name upstream modules and the interfaces our
subclasses override, which have to be spelled as upstream spells them.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ("spacy", "datatrove", "trafilatura", "ftfy")
SOURCE_SUFFIXES = {".py", ".pyx", ".pxd", ".pyi"}
MIN_CHARS = 30
_NAMING_ONLY = re.compile(r"\s*(?:import |from \S+ import |(?:async )?def |class )")


def _long_lines(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return [(number, line.rstrip()) for number, line in enumerate(text.splitlines(), 1) if len(line.strip()) >= MIN_CHARS]


def _upstream_lines() -> dict[str, str]:
    """line -> the upstream file that has it."""
    lines: dict[str, str] = {}
    for package in UPSTREAM:
        package_dir = Path(importlib.util.find_spec(package).origin).parent
        for path in sorted(package_dir.rglob("*")):
            if path.suffix in SOURCE_SUFFIXES and path.is_file():
                for _, line in _long_lines(path):
                    lines.setdefault(line, f"{package}/{path.relative_to(package_dir)}")
    return lines


def test_no_line_of_data_pipeline_is_a_line_of_an_upstream_library():
    upstream = _upstream_lines()
    assert len(upstream) > 10_000  # the sources were found
    copied = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()} (= {upstream[line]})"
        for path in sorted((ROOT / "data_pipeline").rglob("*.py"))
        for number, line in _long_lines(path)
        if line in upstream and not _NAMING_ONLY.match(line)
    ]
    assert copied == []
