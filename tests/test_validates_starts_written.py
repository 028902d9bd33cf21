"""Validates => starts for plugins written by hand, on a real daemon: functions a plugin registers count the same at
validation and at run, and an import error is shown first with its file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import wait_for
from daemon_harness import snapshot
from test_validates_starts import (
    PLUGIN_CODE,
    daemon,  # noqa: F401 - a fixture (module scoped: this module starts its own daemon)
)

pytestmark = pytest.mark.slow


# -- the defects the issue names, each through a real add -------------------------------------
REGISTERING = '''\
from iochost import DeclarativeTask, register

register("double_it", lambda value: 2 * value)


class Doubler(DeclarativeTask):
    pass
'''
DOUBLER_CONFIG = '''\
parameters:
  interval: 0.2
arguments:
  inputs:
    n:
      type: int
      value: 21
      low: 0
      high: 100
  outputs:
    twice:
      type: float
transforms:
  - output: twice
    expression: "{expression}"
'''


def test_functions_the_plugin_registers_count_at_validation_and_run(
        daemon: Any, api: httpx.Client, ca: Any, repos: Path) -> None:
    """README: ``iochost.register(name, fn)`` extends the library: the daemon must not refuse
    a call of it (it never imports the plugin; the probe does, and checks there)."""
    from gitrepos import plugin_repo

    # int n, low/high
    repo = plugin_repo(repos, "doubler", REGISTERING, DOUBLER_CONFIG.format(expression="double_it(n)"))
    response = api.post("/plugins", json={"name": "doubler", "git_url": repo.url})
    assert response.status_code == 201, response.text
    try:
        wait_for(lambda: ca.caget("IOCHT:DOUBLER:twice", timeout=5) == 42.0, what="TWICE = double_it(21)")
        ca.caput("IOCHT:DOUBLER:n", 30, wait=True, timeout=5)
        wait_for(lambda: ca.caget("IOCHT:DOUBLER:twice", timeout=5) == 60.0, what="TWICE = double_it(30)")
    finally:
        assert api.delete("/plugins/doubler").status_code == 200

    # registered neither at import nor in initialize() (iocmng allows both): the start fails, naming
    # the function, its expression and line, and the library the plugin sees
    unknown = plugin_repo(repos, "tripler", REGISTERING, DOUBLER_CONFIG.format(expression="triple_it(n)"))
    response = api.post("/plugins", json={"name": "tripler", "git_url": unknown.url})
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["code"] == "WORKER_START_FAILED" and body["exception"]["type"] == "UnregisteredFunctionError", body
    assert "config.yaml:15: transforms[0].expression: 'triple_it(n)' calls triple_it()" in body["message"], body
    assert "double_it" in body["message"]  # the library it lists is the one the plugin sees
    assert api.get("/plugins/tripler").status_code == 404


def test_an_import_error_is_shown_first_with_its_file_and_line(daemon: Any, api: httpx.Client, repos: Path) -> None:
    """``from iochost import Taskbase`` hides the class from discovery; the ImportError is the
    cause, and the discovery error names the class it found and its base."""
    from gitrepos import plugin_repo

    code = PLUGIN_CODE["task"].replace("TaskBase", "Taskbase")
    repo = plugin_repo(repos, "typo", code, "parameters:\n  interval: 1\n", module="plugin")
    before = snapshot(daemon)
    response = api.post("/plugins", json={"name": "typo", "git_url": repo.url})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "VALIDATION_FAILED"
    first, second = body["errors"]
    assert (first["stage"], first["file"], first["line"]) == ("import", "plugin.py", 1), first
    assert first["message"].startswith("ImportError: cannot import name 'Taskbase' from 'iochost'"), first
    assert (second["stage"], second["file"], second["line"]) == ("discovery", "plugin.py", 4), second
    assert "classes found: Generated (plugin.py:4, bases: iochost.Taskbase)" in second["message"], second
    assert snapshot(daemon) == before  # nothing left behind

