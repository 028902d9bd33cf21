"""docs/reference/ and docs/schemas/ against the code they are generated from (``python -m
iochost.reference``): the checked-in pages are what the generator writes today, and they name
every error code and every setting; the generator's --check fails on a stale page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from iochost import reference
from iochost.epics_server_vars import VARIABLES
from iochost.errors import ErrorCode
from iochost.settings import ENV_ONLY, Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _rows(page: str) -> list[list[str]]:
    """The cells of each row of the page's first table, below its header."""
    lines = [line for line in page.split("\n## ")[0].splitlines()
             if line.startswith("| ") and not line.startswith("|---")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[1:]]


def test_the_checked_in_pages_are_what_the_code_generates() -> None:
    assert reference.stale_pages(DOCS) == [], "run: python -m iochost.reference"


def test_every_error_code_is_listed_with_its_status_and_a_meaning() -> None:
    rows = {row[0].strip("`"): row for row in _rows(reference.errors_page())}
    assert list(rows) == [code.value for code in ErrorCode]
    for code in ErrorCode:
        assert rows[code.value][1] == str(code.http_status) and 100 <= code.http_status < 600
        assert rows[code.value][2] and rows[code.value][2] == " ".join(code.meaning.split())


def test_every_setting_is_listed_with_its_flag_variable_and_meaning() -> None:
    rows = _rows(reference.settings_page())
    assert len(rows) == len(Settings.model_fields)
    for (name, field), (flag, environment, default, meaning) in zip(Settings.model_fields.items(), rows, strict=True):
        assert f"`IOCHOST_{name.upper()}`" in environment
        assert (f"`--{name.replace('_', '-')}`" in flag) != (name in ENV_ONLY), flag
        assert default and meaning and field.description, f"{name}: give the field a description"


def test_every_epics_server_variable_is_listed_with_what_it_becomes() -> None:
    section = reference.settings_page().split("\n## EPICS server variables\n")[1]
    for variable in VARIABLES:
        (row,) = [line for line in section.splitlines() if f"`{variable.name}`" in line]
        becomes = row.rsplit(" | ", 1)[1]
        if variable.handling == "setting":
            assert variable.setting is not None and f"`--{variable.setting.replace('_', '-')}`" in becomes
        else:
            assert becomes.startswith(variable.handling)


def test_check_fails_on_a_stale_page_and_passes_once_written(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert reference.main([str(tmp_path)]) == 0
    assert reference.main(["--check", str(tmp_path)]) == 0
    page = tmp_path / "reference" / "settings.md"
    page.write_text(page.read_text().replace("`8080`", "`8081`"))
    assert reference.main(["--check", str(tmp_path)]) == 1
    assert f"{page} differs from the code" in capsys.readouterr().err
    (tmp_path / "reference" / "errors.md").unlink()
    schema = tmp_path / "schemas" / "config.schema.json"
    schema.write_text(schema.read_text().replace('"float"', '"double"', 1))
    assert reference.stale_pages(tmp_path) == ["reference/errors.md", "reference/settings.md",
                                               "schemas/config.schema.json"]
