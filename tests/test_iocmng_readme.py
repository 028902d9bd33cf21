"""iocmng 2.7.9's README, downloaded from the package index at test time, run under iochost.

The README's complete plugins (tests/iocmng_material.py finds them in the sdist) are validated
and run unchanged; its "Run Standalone" command is run as ``iochost run`` with the same flags,
and its "Deploy via REST API" request is sent, with the same body, to a real daemon. Every PV is
read over CA. tests/test_declarative_readme.py takes the same examples through their behaviour step by
step; bench/iocmng_compat.py runs them beside iocmng 2.7.9 itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import DAEMON_CA_PORTS, IOC_CA_PORT, Processes, ca_search, wait_for
from daemon_harness import Daemon
from gitrepos import Repo
from iochost.discovery.holders import port_taken
from iocmng_material import (
    CodeBlock,
    PluginExample,
    code_blocks,
    example_named,
    plugin_class,
    plugin_examples,
    readme_examples_for_tests,
    sdist_file,
    sdist_for_tests,
    shell_commands,
)
from test_declarative import _ioc

pytestmark = pytest.mark.slow

# The README's two complete plugins, by module: the Python monitor ("Create a Task (Python)")
# and the zero-code interlock ("Create a Declarative Task (Zero Code)").
EXPECTED = {"my_monitor": ("MyMonitor", "TaskBase"), "my_interlock": ("MyInterlock", "DeclarativeTask")}


@pytest.fixture(scope="module")
def readme(request: pytest.FixtureRequest) -> list[PluginExample]:
    return readme_examples_for_tests(request.config)


@pytest.fixture(scope="module")
def readme_blocks(request: pytest.FixtureRequest) -> list[CodeBlock]:
    """Every code block of the README."""
    return code_blocks(sdist_file(sdist_for_tests(request.config), "README.md"))


def _command(blocks: list[CodeBlock], program: str) -> list[str]:
    """The README's one shell command starting with ``program`` (continuation lines joined)."""
    found = [words for block in blocks if block.lang in ("bash", "sh", "shell")
             for words in shell_commands(block.text) if words[0] == program]
    assert len(found) == 1, f"expected one {program} command in the README, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def device(ca: Any) -> Iterator[None]:
    """The interlock's device, DEVICE:TEMP and DEVICE:PRESSURE, on the lone IOCs' CA port: one
    for the module (a restarted one would leave this process's channels reconnecting)."""
    procs = Processes()
    try:
        _ioc(procs, {**os.environ}, IOC_CA_PORT, "DEVICE", "TEMP", "PRESSURE")
        yield
    finally:
        procs.stop_all()


def _device_at_zero(ca: Any) -> None:
    for pv in ("DEVICE:TEMP", "DEVICE:PRESSURE"):
        ca.caput(pv, 0.0, wait=True, timeout=10)


def test_readme_has_its_two_complete_plugins(readme: list[PluginExample],
                                            readme_blocks: list[CodeBlock]) -> None:
    """Exactly the README's two plugins, each class with its own config.yaml: a parser that
    found fewer (or paired a class with the wrong YAML) would let the run tests pass on less."""
    assert {e.name: (e.class_name, e.base) for e in readme} == EXPECTED
    plugin_blocks = [b for b in readme_blocks if b.lang == "python" and plugin_class(b.text)]
    assert len(plugin_blocks) == len(readme), "a plugin class of the README has no config.yaml"
    for example in readme:
        assert example.config_line > example.code_line
        assert example.module_file == f"{example.name}.py"  # the README's caption above the code
    interlock = example_named(readme, "my_interlock")
    assert "transforms:" in interlock.config and "rules:" in interlock.config
    assert "threshold:" in example_named(readme, "my_monitor").config


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_readme_example_validates_unchanged(name: str, readme: list[PluginExample], tmp_path: Path) -> None:
    plugin = example_named(readme, name).write(tmp_path / name)
    report = subprocess.run([sys.executable, "-m", "iochost", "validate", "--json", str(plugin)],
                            capture_output=True, text=True)
    assert report.returncode == 0, report.stdout + report.stderr
    result = json.loads(report.stdout)
    assert result["issues"] == [] and result["plugin"]["class_name"] == EXPECTED[name][0]


def test_readme_standalone_command_serves_iocmngs_pv_names(readme: list[PluginExample],
                                                          readme_blocks: list[CodeBlock], tmp_path: Path,
                                                          processes: Processes, ca: Any, device: None) -> None:
    """"Run Standalone": the README's ``iocmng-run`` line, given to ``iochost run`` with the
    same flags from the plugin's directory, serves the PV names iocmng-run serves (recorded by
    bench/iocmng_compat.py) under the README's prefix, and the interlock's rule works."""
    argv = _command(readme_blocks, "iocmng-run")
    module = argv[argv.index("-m") + 1]
    prefix = argv[argv.index("--prefix") + 1]
    example = example_named(readme, module)
    plugin = example.write(tmp_path / module)
    _device_at_zero(ca)
    # the lone IOCs' CA port is the device's: this IOC takes a searched port no daemon holds
    port = next(p for p in DAEMON_CA_PORTS if not port_taken("127.0.0.1", p))
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = processes.start([sys.executable, "-m", "iochost", "run", *argv[1:]], cwd=plugin,
                               env={**os.environ, "EPICS_CAS_SERVER_PORT": str(port)},
                               stdout=out, stderr=subprocess.STDOUT)
    expected = [f"{prefix}:{pv}" for pv in example.recorded_pvs()]

    def serving() -> bool:
        assert proc.poll() is None, f"iochost run exited {proc.returncode}:\n{log.read_text()}"
        return ca_search(expected) == set(expected)

    wait_for(serving, timeout=60, what=f"the {len(expected)} PVs iocmng-run serves")
    wait_for(lambda: list(ca.caget(f"{prefix}:CONN_INP", timeout=2)) == [1, 1], timeout=30,
             what="both links connected")
    ca.caput("DEVICE:TEMP", 50.0, wait=True)
    wait_for(lambda: ca.caget(f"{prefix}:temp", timeout=2) == 50.0, timeout=10, what="temp follows the device")
    ca.caput("DEVICE:PRESSURE", 3.0, wait=True)  # the README's rule: pressure > 2.0
    alarm = wait_for(lambda: (v := ca.caget(f"{prefix}:alarm", timeout=2, format=ca.FORMAT_TIME)) == 1 and v,
                     timeout=10, what="OVER_TEMP fired")
    assert alarm.severity == 2  # alarm_on: MAJOR
    assert ca.caget(f"{prefix}:MESSAGE", timeout=2) == "Temperature or pressure limit exceeded"


def test_readme_rest_deploy_request(readme: list[PluginExample], readme_blocks: list[CodeBlock],
                                    tmp_path: Path, ca: Any, device: None) -> None:
    """"Deploy via REST API": the README's curl request -- its method, path and JSON body, with
    ``git_url`` pointing at a local repository holding the interlock at the body's ``path`` --
    against a real daemon: iocmng's ``ok`` comes back, and the plugin starts and serves."""
    argv = _command(readme_blocks, "curl")
    method = argv[argv.index("-X") + 1]
    url = httpx.URL(next(a for a in argv if a.startswith("http")))
    body = json.loads(argv[argv.index("-d") + 1])
    assert argv[argv.index("-H") + 1] == "Content-Type: application/json"
    example = example_named(readme, "my_interlock")
    repo = Repo(tmp_path / "my-tasks")
    example.write(repo.path / body["path"])
    repo.commit("the README's interlock")
    body["git_url"] = repo.url
    _device_at_zero(ca)
    with Daemon(tmp_path / "data").serving() as daemon:
        response = httpx.request(method, daemon.url + url.path, json=body, timeout=120)
        assert response.status_code == 201, response.text
        assert response.json()["ok"] is True  # iocmng's field, checked by its scripts
        name = body["name"]
        pvs = [f"IOCHT:{name.upper()}:{pv}" for pv in example.recorded_pvs()]
        wait_for(lambda: ca_search(pvs) == set(pvs), timeout=60, what="the interlock's PVs served")
        wait_for(lambda: list(ca.caget(f"IOCHT:{name.upper()}:CONN_INP", timeout=2)) == [1, 1],
                 timeout=30, what="both links connected")
        ca.caput("DEVICE:PRESSURE", 3.0, wait=True)
        wait_for(lambda: ca.caget(f"IOCHT:{name.upper()}:alarm", timeout=2) == 1, timeout=10,
                 what="OVER_TEMP fired")
        with daemon.client() as api:
            assert api.delete(f"/plugins/{name}").status_code == 200


# -- the parser, on documents of our own ------------------------------------------------------------
DOC = """\
# Title

## One

**relay.py**
```python
from iocmng import TaskBase

class FirstTask(TaskBase):
    def execute(self):
        pass
```

Some words, then the config:

```yaml
parameters:
  mode: continuous
```

## Two

```python
from iocmng import JobBase

class SecondJob(JobBase):
    pass
```

## Three

```yaml
parameters: {mode: triggered}
```

```python
from iocmng import TaskBase

class Fragment(TaskBase):
    ...
```
```yaml
not_a_config: 1
```
"""


def test_parser_pairs_by_content_and_section() -> None:
    """A class takes the first config.yaml after it in its own section: "Two" has none (the
    YAML of "Three" is another section's), and "Three"'s YAML that is no config is skipped.
    The module's file is the caption above the code, whatever the class is called."""
    examples = plugin_examples(DOC)
    assert [(e.module_file, e.class_name, e.section) for e in examples] == [("relay.py", "FirstTask", "One")]
    assert examples[0].config == "parameters:\n  mode: continuous\n"
    assert [b.lang for b in code_blocks(DOC)] == ["python", "yaml", "python", "yaml", "python", "yaml"]


def test_parser_refuses_an_unclosed_block() -> None:
    with pytest.raises(ValueError, match="line 3: code block never closed"):
        code_blocks("# T\n\n```python\nx = 1\n")
