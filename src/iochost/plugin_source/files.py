"""Which files of a plugin directory are the plugin's own Python code."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

SKIPPED_DIRS = {"__pycache__", "site-packages", "node_modules"}
TEST_DIRS = {"test", "tests"}


def python_files(plugin_dir: Path, limit: int | None = None) -> list[str]:
    """Every ``.py`` file, as a posix path relative to ``plugin_dir``, sorted; at most
    ``limit`` of them (the walk stops there).

    Hidden directories (``.git``), caches and virtual environments are not plugin code.
    Symlinked directories are not followed.
    """
    found: list[str] = []
    for root, dirs, files in os.walk(plugin_dir):
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and d not in SKIPPED_DIRS and not (Path(root, d) / "pyvenv.cfg").exists()
        )
        for name in sorted(files):
            if name.endswith(".py"):
                found.append(Path(root, name).relative_to(plugin_dir).as_posix())
                if limit is not None and len(found) >= limit:
                    return found
    return found


def is_test_file(relative: str) -> bool:
    """Tests may subclass TaskBase for fixtures; they are never the plugin class."""
    path = PurePosixPath(relative)
    return (
        any(part in TEST_DIRS for part in path.parts[:-1])
        or path.name.startswith("test_")
        or path.name.endswith("_test.py")
        or path.name == "conftest.py"
    )
