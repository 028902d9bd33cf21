"""docs/how-to/migrating-from-iocmng.md against the code it describes: every iocmng route its REST
table names is served with that method, and every iocmng variable it says is read is one
the settings read (and none the settings read is missing from it). The behaviour behind
each row is tested where it is built (test_iocmng_routes, test_pv_gateway, ...)."""

from __future__ import annotations

import re
from pathlib import Path

from iochost.api import create_app
from iochost.settings import ENV_ALIASES, Settings

PAGE = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "migrating-from-iocmng.md"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


def _section(title: str) -> str:
    text = PAGE.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def _first_cells(section: str) -> list[str]:
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    return [row.split(" | ")[0].lstrip("| ") for row in rows[1:]]  # the header row left out


def routes_named(cell: str) -> list[tuple[str, str]]:
    """``POST /plugins`, `/tasks``: each path with the method last named before it."""
    named, method = [], None
    for chunk in re.findall(r"`([^`]+)`", cell):
        first, _, rest = chunk.partition(" ")
        if first in METHODS:
            method, chunk = first, rest
        assert method is not None, f"no method before {chunk!r} in {cell!r}"
        named.append((method, re.sub(r"\[\?[^\]]*\]$", "", chunk)))
    return named


def test_every_iocmng_route_on_the_page_is_served() -> None:
    paths = create_app(Settings()).openapi()["paths"]
    named = [route for cell in _first_cells(_section("REST")) for route in routes_named(cell)]
    assert len(named) >= 25, named  # a table that stopped parsing must not pass
    missing = [(method, path) for method, path in named
               if method.lower() not in paths.get("/api/v1" + path, {})]
    assert missing == []


def test_the_iocmng_variables_the_page_names_are_the_ones_read() -> None:
    said = set(re.findall(r"\(`(IOCMNG_[A-Z_]+)` read too", _section("Environment variables")))
    read = {name for name in ENV_ALIASES.values() if name.startswith("IOCMNG_")}
    assert said == read
    for name in said:  # and each really configures the daemon
        setting = next(key for key, alias in ENV_ALIASES.items() if alias == name)
        assert setting in Settings.model_fields
