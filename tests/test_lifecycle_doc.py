"""docs/reference/lifecycle.md is generated from ``lifecycle.TABLE`` and must match it: regenerate
it with ``python -m iochost.reference`` (every generated page) or ``python -m
iochost.supervisor.lifecycle_doc`` (this one) after changing the table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from iochost.supervisor import lifecycle_doc
from iochost.supervisor.lifecycle import TABLE

DOC = Path(__file__).resolve().parent.parent / lifecycle_doc.DEFAULT_PATH


def test_the_checked_in_document_is_what_the_table_generates() -> None:
    assert DOC.read_text(encoding="utf-8") == lifecycle_doc.render(), (
        f"{DOC} is out of date: run {lifecycle_doc.COMMAND}")


def test_the_diagram_draws_every_move_of_the_table_and_no_other() -> None:
    drawn = set()
    for line in lifecycle_doc.diagram():
        arrow = re.fullmatch(r"\s+(\w+) --> (\w+): (.+)", line)
        if arrow:
            drawn |= {(arrow[1], event, arrow[2]) for event in arrow[3].split(", ")}
    moves = {(state.value, lifecycle_doc.event_name(event), target.value)
             for (state, event), (_, targets) in TABLE.items() for target in targets if target != state}
    assert drawn == moves and moves


def test_the_table_has_one_line_per_row() -> None:
    lines = [line for line in lifecycle_doc.table() if line.startswith("| ") and "`" in line]
    assert len(lines) == len(TABLE)


def test_the_page_is_in_the_reference_section() -> None:
    assert lifecycle_doc.DEFAULT_PATH == Path("docs/reference/lifecycle.md")


def test_the_command_checks_and_writes_the_file(tmp_path: Path) -> None:
    target = tmp_path / "lifecycle.md"
    command = [sys.executable, "-m", "iochost.supervisor.lifecycle_doc"]
    assert subprocess.run([*command, "--check", str(target)], capture_output=True, timeout=60).returncode == 1
    assert subprocess.run([*command, str(target)], timeout=60).returncode == 0
    assert target.read_text(encoding="utf-8") == DOC.read_text(encoding="utf-8")
    assert subprocess.run([*command, "--check", str(target)], timeout=60).returncode == 0
