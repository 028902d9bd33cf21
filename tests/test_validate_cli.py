"""`iochost validate` on the command line: one line when the plugin is valid, every error and exit code 1 when not,
--json, requirements problems, a PV name ending in a newline.

Plugins are real files in tmp_path, checked by the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import EXAMPLES
from test_validate import make

# -- the command line -----------------------------------------------------------------


def iochost(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iochost", "validate", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ})


def test_cli_ok_is_one_line():
    result = iochost(str(EXAMPLES / "diagnostics"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["OK: diagnostics is a job (Diagnostics in diagnostics.py), 6 PVs"]


def test_cli_lists_every_error_and_exits_1(tmp_path):
    plugin = make(tmp_path, {"broken.py": "x = (\n"},
                  config="pvs:\n  outputs:\n    OUT: {type: flaot}\n    BAD NAME: {type: int}\n")
    result = iochost(str(plugin))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == ("[config] config.yaml:3: pvs.outputs.OUT.type: unknown PV type 'flaot'; "
                        "valid types: float, int, string, bool, enum")
    assert lines[1].startswith("[syntax] broken.py:1: SyntaxError:")
    assert lines[-1] == "FAILED: probe: 2 errors (config, syntax)"


@pytest.mark.slow
def test_cli_json(tmp_path):
    plugin = make(tmp_path, config="pvs:\n  outputs:\n    STATUS: {type: int}\n")
    result = iochost(str(plugin), "--json", "--name", "demo", "--prefix", "BL")
    assert result.returncode == 1
    body = json.loads(result.stdout)
    assert body["name"] == "demo" and body["plugin"] is None
    assert body["issues"] == [{"stage": "pvs", "file": "config.yaml", "line": 3,
                               "message": "pvs.outputs.STATUS: STATUS collides with the default PV STATUS "
                                          "of a continuous task", "severity": "error"}]
    ok = json.loads(iochost(str(EXAMPLES / "beam-shutter"), "--json").stdout)
    assert ok["plugin"]["mode"] == "triggered" and ok["plugin"]["pvs"][0] == "IOCHOST:BEAM-SHUTTER:ENABLE"


def test_requirements_problems_become_requirements_issues():
    """The store names the bad line in its own terms; clients get it as a validation issue."""
    from iochost.errors import ErrorCode
    from iochost.store.envs import RequirementsError, check_requirements
    from iochost.validate.requirements import requirements_failure

    problems = check_requirements("numpy\n# pinned:\nsoftioc==0.1\n", {"softioc": "4.5.0"})
    assert [p.line for p in problems] == [3]
    error = requirements_failure(RequirementsError("plugin 'demo': requirements.txt asks for ...", problems))
    assert error.code == ErrorCode.VALIDATION_FAILED and error.message == "plugin 'demo': requirements.txt asks for ..."
    assert error.details["errors"] == [{"stage": "requirements", "file": "requirements.txt", "line": 3,
                                        "message": problems[0].message, "severity": "error"}]
    assert "softioc 4.5.0" in problems[0].message


def test_cli_refuses_a_pv_name_ending_in_a_newline(tmp_path):
    """``"X\\n"`` is a valid YAML key; the PV name check matched it up to ``$`` (which also
    matches before a final newline), so `validate` said OK for a record name no client can
    reach. Now it names the key, escaped, at its line."""
    plugin = make(tmp_path, config='pvs:\n  outputs:\n    "X\\n": {type: int}\n')
    result = iochost(str(plugin))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "config.yaml:3: pvs.outputs.'X\\n': 'X\\n' is not a legal PV name" in result.stdout, result.stdout

