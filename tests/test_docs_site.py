"""The documentation site as it is published: ``mkdocs build --strict`` (every link, anchor and
page checked, mkdocs.yml's ``validation``), served from the address iochost's own files name."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from iochost.editor_schemas import DOCS_URL, SCHEMA_NAMES, json_schema, schema_url

ROOT = Path(__file__).resolve().parents[1]


class _Loader(yaml.SafeLoader):
    """mkdocs.yml's ``!!python/name:`` tags read as plain text: only its keys are looked at."""


_Loader.add_multi_constructor("tag:yaml.org,2002:python/name:", lambda loader, suffix, node: suffix)


def mkdocs_config() -> dict[str, object]:
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)


def test_the_site_is_published_where_the_schema_line_points() -> None:
    """`iochost new`'s `$schema=` line names DOCS_URL: the site must be published there."""
    assert mkdocs_config()["site_url"] == DOCS_URL


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # Material's banner, not ours
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def test_the_site_builds_strictly_with_every_page(site: Path) -> None:
    """Each page of docs/ is in the built site (at its directory URL, as mkdocs serves it)."""
    for page in (ROOT / "docs").rglob("*.md"):
        path = page.relative_to(ROOT / "docs").with_suffix("")
        built = site / path.parent / "index.html" if path.name == "index" else site / path / "index.html"
        assert built.is_file(), f"docs/{path}.md has no page in the site"


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_the_published_schema_is_what_iochost_schema_prints(site: Path, name: str) -> None:
    """What an editor downloads from the `$schema=` URL equals `iochost schema NAME` now."""
    published = site / schema_url(name).removeprefix(DOCS_URL)
    assert json.loads(published.read_text()) == json_schema(name)


def test_every_link_of_the_readme_resolves() -> None:
    """README.md is not part of the site (mkdocs checks the pages' links): its own links into
    docs/ are checked here, so a page renamed on the site does not leave GitHub's view broken."""
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    local = [link for link in links if "://" not in link]
    assert local, "the README links into docs/"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing
