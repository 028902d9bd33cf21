"""docs/how-to/troubleshooting.md against ``iochost.errors.ErrorCode``: every code has a section
headed by the code itself (``## FETCH_FAILED``, anchor ``#fetch_failed``), and every section
headed like a code names one that exists."""

from __future__ import annotations

import re
from pathlib import Path

from iochost.errors import ErrorCode

PAGE = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "troubleshooting.md"
CODE_HEADING = re.compile(r"^## ([A-Z][A-Z0-9_]*)\s*$")


def _code_headings() -> list[str]:
    headings, fenced = [], False
    for line in PAGE.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (found := CODE_HEADING.match(line)):
            headings.append(found.group(1))
    return headings


def test_every_error_code_has_a_section() -> None:
    missing = sorted(code.value for code in ErrorCode if code.value not in _code_headings())
    assert not missing, f"troubleshooting.md has no '## CODE' section for {missing}"


def test_every_code_section_names_an_existing_code() -> None:
    known = {code.value for code in ErrorCode}
    unknown = [name for name in _code_headings() if name not in known]
    assert not unknown, f"troubleshooting.md has sections for codes that do not exist: {unknown}"


def test_each_code_has_one_section() -> None:
    headings = _code_headings()
    doubled = sorted({name for name in headings if headings.count(name) > 1})
    assert not doubled, f"troubleshooting.md has more than one section for {doubled}"
