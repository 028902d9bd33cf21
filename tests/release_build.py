"""The release as ``python -m build`` makes it, from a copy of this checkout (uncommitted
changes included, its .git for the version): for the tests that install iochost as a user
does (test_release.py, test_tutorial.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEFT_OUT = shutil.ignore_patterns(".venv", "test-artifacts", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                                  "__pycache__", "*.egg-info", "build", "dist", "site", ".hypothesis")


@dataclass(frozen=True)
class Release:
    sdist: Path
    wheel: Path
    version: str  # what setuptools-scm gives the tree


def run(argv: list[str], cwd: Path | None = None, timeout: float = 600) -> str:
    """``argv``'s stdout; its whole output in the failure when it exits non-zero."""
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_release(directory: Path) -> Release:
    """The sdist and wheel of this checkout, built in ``directory``."""
    tree = directory / "iochost"
    shutil.copytree(ROOT, tree, symlinks=True, ignore=LEFT_OUT)
    version = run([sys.executable, "-m", "setuptools_scm"], cwd=tree).strip()
    dist = directory / "dist"
    run([sys.executable, "-m", "build", "--outdir", str(dist), str(tree)])
    (sdist,), (wheel,) = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    return Release(sdist, wheel, version)
