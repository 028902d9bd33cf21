"""The release as a user installs it: ``python -m build`` makes an sdist and a wheel that
``twine check`` passes, versioned from git (setuptools-scm), and the wheel installed into a
fresh venv (its dependencies from the package index) gives a working ``iochost``: its
version, its schema, and ``serve`` with the example plugins the wheel carries, every one
running, as the Quick start runs them from a checkout.

The tree built is a copy of this checkout (``release_build``: uncommitted changes included,
its .git for the version), so the test proves what is about to be committed.
"""

from __future__ import annotations

import json
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from conftest import wait_for
from daemon_harness import Daemon, worker_pids
from release_build import ROOT, build_release, run

pytestmark = pytest.mark.slow

EXAMPLES = sorted(path.parent.name for path in (ROOT / "src" / "iochost" / "examples").glob("*/config.yaml"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(sdist, wheel, the version setuptools-scm gives the tree)."""
    release = build_release(tmp_path_factory.mktemp("release"))
    return release.sdist, release.wheel, release.version


def test_the_sdist_and_wheel_pass_twine_and_carry_the_git_version(built: tuple[Path, Path, str]) -> None:
    sdist, wheel, version = built
    assert version and version != "0.1.0", "the version comes from git, not from a hand-kept string"
    run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)])
    assert wheel.name.startswith(f"iochost-{version.replace('-', '_')}-")
    names = zipfile.ZipFile(wheel).namelist()
    for example in EXAMPLES:
        assert f"iochost/examples/{example}/config.yaml" in names
    for needed in ("iochost/py.typed", "iochost/ui/static/app.js", "iochost/builtin/daemon_status/daemon_status.py",
                   "iochost/examples/__main__.py"):
        assert needed in names, needed
    assert not [name for name in names if "__pycache__" in name or name.startswith("tests/")]


def test_the_wheel_installed_in_a_fresh_venv_serves_its_examples(built: tuple[Path, Path, str],
                                                                 tmp_path: Path) -> None:
    _, wheel, version = built
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "-q", str(wheel)], timeout=900)
    assert run([str(venv / "bin" / "iochost"), "--version"]).strip() == f"iochost {version}"
    assert json.loads(run([str(venv / "bin" / "iochost"), "schema"]))["title"] == "iochost config.yaml"
    examples = Path(run([python, "-m", "iochost.examples"]).strip())
    assert examples.is_relative_to(venv), f"the examples come from the installed wheel, not {examples}"
    assert sorted(path.parent.name for path in examples.glob("*/config.yaml")) == EXAMPLES

    daemon = Daemon(tmp_path / "data", "--examples", str(examples), local_sources=False, python=python)
    try:
        daemon.start()

        def running() -> bool:
            plugins = httpx.get(daemon.url + "/api/v1/plugins", timeout=5).json()["plugins"]
            return sorted(p["name"] for p in plugins if p["state"] == "running") == EXAMPLES
        wait_for(running, timeout=120, what=f"every example running: {EXAMPLES}", sleep=time.sleep)
        assert daemon.terminate() == 0
        assert "Traceback" not in daemon.log()
    finally:
        daemon.cleanup()
        assert worker_pids(daemon.data_dir) == []
