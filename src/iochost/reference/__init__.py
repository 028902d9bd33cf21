"""``python -m iochost.reference [--check] [DIR]``: the pages of docs/ generated from the code.

Each page is written from the one place its facts are defined, so it cannot drift from what
the daemon does: the error codes (``errors.ErrorCode``), the settings (``settings.Settings``),
the command line (``cli.build_parser``), the REST API (the app's OpenAPI document), config.yaml
(``config.schema.PluginConfig``), the metrics (the app's Prometheus registry), the plugin
lifecycle (``supervisor.lifecycle.TABLE``) and the JSON Schemas for editors (``editor_schemas``).
``--check`` writes nothing and exits 1 naming each page that differs from the code
(tests/test_reference.py does the same). Nothing in the daemon imports this package.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from iochost.editor_schemas import SCHEMA_NAMES, SchemaName, json_schema
from iochost.reference import cli_page, config_page, errors_page, metrics_page, rest_page, settings_page
from iochost.supervisor import lifecycle_doc

__all__ = ["PAGES", "main", "stale_pages"]


def schema_page(name: SchemaName) -> Callable[[], str]:
    """docs/schemas/NAME.schema.json: what ``iochost schema NAME`` prints, as the site serves it."""
    return lambda: json.dumps(json_schema(name), indent=2) + "\n"


# Paths relative to docs/, the site's root.
PAGES: dict[str, Callable[[], str]] = {
    "reference/cli.md": cli_page.page,
    "reference/settings.md": settings_page.page,
    "reference/config.md": config_page.page,
    "reference/rest.md": rest_page.page,
    "reference/errors.md": errors_page.page,
    "reference/metrics.md": metrics_page.page,
    lifecycle_doc.DEFAULT_PATH.relative_to("docs").as_posix(): lifecycle_doc.render,
    **{f"schemas/{name}.schema.json": schema_page(name) for name in SCHEMA_NAMES},
}


def stale_pages(directory: Path) -> list[str]:
    """The pages in ``directory`` that are missing or differ from what the code generates."""
    return [name for name, render in PAGES.items()
            if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != render()]


def main(argv: list[str] | None = None) -> int:
    """Write every page into DIR, or with ``--check`` report the stale ones; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m iochost.reference", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("directory", nargs="?", type=Path, default=Path("docs"),
                        help="where the pages go (default %(default)s, from the repository's root)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is out of date")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages(args.directory)
        for name in stale:
            print(f"{args.directory / name} differs from the code: run python -m iochost.reference",
                  file=sys.stderr)
        return 1 if stale else 0
    for name, render in PAGES.items():
        (args.directory / name).parent.mkdir(parents=True, exist_ok=True)
        (args.directory / name).write_text(render(), encoding="utf-8")
    return 0
