"""docs/reference/ and docs/schemas/ against the code they are generated from (``python -m
iochost.reference``): the checked-in pages are what the generator writes today; each page
names every error code, setting, command and flag, route, config.yaml key and metric the
code has (so a generator that silently drops one fails here); every link between the
generated pages resolves; the generator's --check fails on a stale page."""

from __future__ import annotations

import argparse
import asyncio
import re
import typing
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from iochost import reference
from iochost.config.schema import PluginConfig
from iochost.epics_server_vars import VARIABLES
from iochost.errors import ErrorCode
from iochost.reference import cli_page, config_page, errors_page, metrics_page, rest_page, settings_page
from iochost.reference.application import app
from iochost.reference.markdown import anchor, cell
from iochost.settings import ENV_ONLY, Settings
from iochost.supervisor import lifecycle_doc

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _rows(page: str) -> list[list[str]]:
    """The cells of each row of the page's first table, below its header."""
    lines = [line for line in page.split("\n## ")[0].splitlines()
             if line.startswith("| ") and not line.startswith("|---")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[1:]]


def _sections(page: str) -> dict[str, str]:
    """The page's ``## `` sections by heading."""
    return {part.split("\n", 1)[0]: part for part in page.split("\n## ")[1:]}


def test_the_checked_in_pages_are_what_the_code_generates() -> None:
    assert reference.stale_pages(DOCS) == [], "run: python -m iochost.reference"


def test_one_command_writes_every_generated_page_the_lifecycle_included() -> None:
    assert "reference/lifecycle.md" in reference.PAGES
    assert DOCS / "reference" / "lifecycle.md" == DOCS.parent / lifecycle_doc.DEFAULT_PATH
    assert not (DOCS / "lifecycle.md").exists(), "the lifecycle page moved to docs/reference/"


def test_every_error_code_is_listed_with_its_status_and_a_meaning() -> None:
    rows = {row[0].strip("`"): row for row in _rows(errors_page.page())}
    assert list(rows) == [code.value for code in ErrorCode]
    for code in ErrorCode:
        assert rows[code.value][1] == str(code.http_status) and 100 <= code.http_status < 600
        assert rows[code.value][2] and rows[code.value][2] == cell(code.meaning)


def test_every_setting_is_listed_with_its_flag_variable_and_meaning() -> None:
    rows = _rows(settings_page.page())
    assert len(rows) == len(Settings.model_fields)
    for (name, field), (flag, environment, default, meaning) in zip(Settings.model_fields.items(), rows, strict=True):
        assert f"`IOCHOST_{name.upper()}`" in environment
        assert (f"`--{name.replace('_', '-')}`" in flag) != (name in ENV_ONLY), flag
        assert default and meaning and field.description, f"{name}: give the field a description"


def test_every_epics_server_variable_is_listed_with_what_it_becomes() -> None:
    section = settings_page.page().split("\n## EPICS server variables\n")[1]
    for variable in VARIABLES:
        (row,) = [line for line in section.splitlines() if f"`{variable.name}`" in line]
        becomes = row.rsplit(" | ", 1)[1]
        if variable.handling == "setting":
            assert variable.setting is not None and f"`--{variable.setting.replace('_', '-')}`" in becomes
        else:
            assert becomes.startswith(variable.handling)


def test_every_command_and_every_argument_is_on_the_cli_page() -> None:
    root = cli_page.parser()
    sections = _sections(cli_page.page())
    subcommands = list(cli_page.commands(root))
    assert [name for name, _, _ in subcommands] == list(sections)
    assert {"serve", "run", "validate", "new", "schema", "healthcheck", "display"} <= set(sections)
    for name, summary, command in subcommands:
        section = sections[name]
        assert summary and cli_page.synopsis(f"iochost {name}", command) in section
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            spelt = action.option_strings or [(action.metavar or action.dest.upper())]
            assert all(f"`{word}`" in section for word in spelt), (name, spelt)
            if action.help and "%" not in action.help and name != "serve":
                assert cell(action.help) in section, (name, action.help)


def test_each_serve_flag_names_its_variable_and_default() -> None:
    section = _sections(cli_page.page())["serve"]
    flags = [name for name in Settings.model_fields if name not in ENV_ONLY]
    rows = [line for line in section.splitlines() if line.startswith("| `--")]
    assert len(rows) == len(flags)
    for name, row in zip(flags, rows, strict=True):
        assert row.startswith(f"| `--{name.replace('_', '-')}`") and f"`IOCHOST_{name.upper()}`" in row


def test_every_route_of_the_openapi_document_is_on_the_rest_page() -> None:
    page = rest_page.page()
    document = app().openapi()
    operations = [(method.upper(), path) for path, item in document["paths"].items() for method in item]
    assert len(operations) > 30
    headings = re.findall(r"^### (\w+) `([^`]+)`$", page, flags=re.MULTILINE)
    assert headings == operations


def test_a_route_that_takes_a_token_says_which_one() -> None:
    """OpenAPI marks a route that checks the bearer token; the page says read or admin there."""
    document = app().openapi()
    guards = rest_page.guards()
    roles = set()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            role = rest_page.role(guards[(method.upper(), path)])
            roles.add(role)
            assert (role in ("read", "admin")) == bool(operation.get("security")), (method, path, role)
    assert {"read", "admin"} <= roles


def test_every_error_status_lists_its_codes() -> None:
    page = rest_page.page()
    for code in ErrorCode:
        (row,) = [line for line in page.split("\n## Errors\n")[1].split("\n## ")[0].splitlines()
                  if line.startswith(f"| {code.http_status} |")]
        assert f"`{code.value}`" in row


def _models(model: type[BaseModel], seen: dict[str, type[BaseModel]]) -> dict[str, type[BaseModel]]:
    """``model`` and every model its fields hold, at any depth, by class name."""
    seen[model.__name__] = model
    for field in model.model_fields.values():
        stack: list[object] = [field.annotation]
        while stack:
            kind = stack.pop()
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                if kind.__name__ not in seen:
                    _models(kind, seen)
            else:
                stack += typing.get_args(kind)
    return seen


def test_every_key_of_every_config_model_is_on_the_config_page() -> None:
    sections = _sections(config_page.page())
    models = _models(PluginConfig, {})
    assert {"Parameters", "PVGroup", "PVDef", "LimitAlarm", "StateAlarm", "Transform", "Rule"} <= set(models)
    for name, model in models.items():
        section = sections[config_page.ROOT if model is PluginConfig else name]
        keys = re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)
        assert set(model.model_fields) <= set(keys), (name, set(model.model_fields) - set(keys))


def test_the_config_page_says_which_spellings_are_iocmngs() -> None:
    sections = _sections(config_page.page())
    (arguments,) = [line for line in sections[config_page.ROOT].splitlines() if line.startswith("| `arguments`")]
    assert arguments.endswith("| iocmng's key |")
    (pv_type,) = [line for line in sections["PVDef"].splitlines() if line.startswith("| `type`")]
    assert "also `boolean`, `double`" in pv_type and "any case" in pv_type
    assert "iocmng's" in sections["NamedPVDef"]


async def _scrape() -> httpx.Response:
    """GET /metrics of an app that is not started, twice: the second answer counts the first request."""
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://iochost") as client:
        await client.get("/metrics")
        return await client.get("/metrics")


def test_every_metric_a_scrape_answers_is_on_the_metrics_page() -> None:
    page = metrics_page.page()
    scrape = asyncio.run(_scrape())
    assert scrape.status_code == 200
    families = list(text_string_to_metric_families(scrape.text))
    names = {sample.name for family in families for sample in family.samples}
    # a family with no series yet (no plugin, no job): its first series name as the format writes it
    names |= {family.name + metrics_page.SERIES.get(family.type, ("",))[0] for family in families if not family.samples}
    assert {"iochost_plugins", "iochost_http_requests_total", "iochost_pv_gateway_up"} <= names
    listed = set(re.findall(r"`([a-z_]+)`", page))
    assert names <= listed, names - listed
    for family in families:  # each series's labels are on the row that names it
        for sample in family.samples:
            row = next(line for line in page.splitlines() if line.startswith("| ") and f"`{sample.name}`" in line)
            labels = set(sample.labels) - metrics_page.FORMAT_LABELS
            assert all(f"`{label}`" in row for label in labels), (sample.name, labels)


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("name", [name for name in reference.PAGES if name.endswith(".md")])
def test_links_between_generated_pages_resolve(name: str) -> None:
    """A link to another page of docs/ names a file there; an anchor names a heading of its page."""
    page = reference.PAGES[name]()
    rendered = {name: page}
    for target in LINK.findall(page):
        if "://" in target:
            continue
        path, _, fragment = target.partition("#")
        linked = (DOCS / name).parent / path if path else DOCS / name
        if linked.resolve().is_relative_to(DOCS / "reference") or linked.resolve().is_relative_to(DOCS / "schemas"):
            assert linked.resolve().relative_to(DOCS).as_posix() in reference.PAGES, (name, target)
        if fragment:
            other = linked.resolve().relative_to(DOCS).as_posix()
            if other not in rendered:
                rendered[other] = reference.PAGES[other]()
            text = rendered[other]
            headings = [anchor(re.sub(r"`", "", line.lstrip("#").strip()))
                        for line in text.splitlines() if line.startswith("#")]
            assert fragment in headings, (name, target)


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
    assert reference.stale_pages(tmp_path) == ["reference/settings.md", "reference/errors.md",
                                               "schemas/config.schema.json"]
