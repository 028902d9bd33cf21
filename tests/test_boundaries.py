"""The daemon's import boundary, checked on the real ``iochost serve``: it never loads
softioc, cothread or the worker package (those live in the worker and probe processes),
nor the launcher's target registry (only members import it)."""

from __future__ import annotations

import json
from pathlib import Path

from daemon_harness import Daemon, add, delete
from gitrepos import plugin_repo
from sample_plugins import TICKER, TICKER_CONFIG

# Loaded into every process of the daemon's tree through PYTHONPATH: at a normal exit
# (the daemon's SIGTERM path exits 0) each writes the modules it loaded, keyed by its pid.
SITECUSTOMIZE = """
import atexit, json, os, sys

def _dump():
    folder = os.environ.get("TEST_SYS_MODULES_DUMP")
    if folder:
        with open(os.path.join(folder, f"{os.getpid()}.json"), "w") as out:
            json.dump(sorted(sys.modules), out)

atexit.register(_dump)
"""

FORBIDDEN = ("softioc", "cothread", "iochost.worker", "iochost.launch.targets")


def forbidden(modules: list[str]) -> list[str]:
    """The modules of ``modules`` the daemon must never load."""
    return [name for name in modules if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)]


def test_forbidden_matches_packages_not_prefixes() -> None:
    assert forbidden(["softioc.builder", "iochost.worker", "iochost.workers_elsewhere", "cothreadish"]) == \
        ["softioc.builder", "iochost.worker"]


def test_serve_never_imports_softioc_or_the_worker_package(tmp_path: Path) -> None:
    """Start, validate and start a plugin, delete it (the autosave teardown), stop: the
    daemon process's sys.modules at exit holds none of the worker side."""
    hook, dumps = tmp_path / "hook", tmp_path / "modules"
    hook.mkdir()
    dumps.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    repo = plugin_repo(tmp_path, "ticker", TICKER, TICKER_CONFIG)
    daemon = Daemon(tmp_path / "data", env={"PYTHONPATH": str(hook), "TEST_SYS_MODULES_DUMP": str(dumps)})
    with daemon.serving():
        with daemon.client() as api:
            add(api, "ticker", repo)
            delete(api, "ticker")
    assert daemon.proc is not None
    modules = json.loads((dumps / f"{daemon.proc.pid}.json").read_text())
    assert "iochost.supervisor.shell" in modules and "iochost.validate.import_check" in modules  # the daemon's own
    assert forbidden(modules) == []


def test_every_launch_target_the_daemon_names_is_in_the_registry() -> None:
    """The daemon names programs by key (``protocol``); members look them up in ``targets``."""
    from iochost.launch import protocol, targets

    assert set(targets.TARGETS) == set(protocol.TARGET_KEYS) == {protocol.WORKER, protocol.PROBE}
    assert all(callable(run) for run in targets.TARGETS.values())
