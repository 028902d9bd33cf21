"""`iochost new`: each kind's scaffold validates, and the test it writes passes (it runs the
plugin with `iochost run` and drives its PVs over CA); bad names and used directories are
refused with exit 2 and nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import Processes
from iochost.cli import main
from iochost.config.pvnames import default_pv_names
from iochost.kinds import Kind
from iochost.scaffold import KINDS, plugin_names

NAMES = {"task": "demo-task", "triggered": "demo_triggered", "job": "demo-job", "declarative": "demo-decl"}


def _run(processes: Processes, argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    proc = processes.start(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = proc.communicate(timeout=timeout)
    return proc.returncode, output


def _chain(processes: Processes, root: Path, kind: str, results: dict[str, list[tuple[str, int, str]]]) -> None:
    """new -> validate -> the generated test, stopping at the first failure."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPICS_", "PYTEST_"))}  # it sets its own
    name = NAMES[kind]
    steps = [
        ("new", [sys.executable, "-m", "iochost", "new", name, "--kind", kind, str(root / kind)], 30),
        ("validate", [sys.executable, "-m", "iochost", "validate", str(root / kind), "--name", name], 60),
        ("pytest", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / kind / "tests")], 120),
    ]
    done = results[kind]
    try:
        for step, argv, timeout in steps:
            code, output = _run(processes, argv, root, env, timeout)
            done.append((step, code, output))
            if code != 0:
                return
    except Exception as exc:  # noqa: BLE001 - a timeout: reported by the test of this kind
        done.append(("error", -1, repr(exc)))


@pytest.fixture(scope="module")
def scaffolds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[tuple[str, int, str]]]]:
    """All four kinds at once, each in a thread of its own: the soft IOCs start in parallel."""
    root = tmp_path_factory.mktemp("scaffolds")
    processes = Processes()
    results: dict[str, list[tuple[str, int, str]]] = {kind: [] for kind in KINDS}
    threads = [threading.Thread(target=_chain, args=(processes, root, kind, results)) for kind in KINDS]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(240)
        yield results
    finally:
        processes.stop_all()


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_scaffold_validates_and_its_test_passes(scaffolds: dict[str, Any], kind: str) -> None:
    steps = scaffolds[kind]
    report = "\n".join(f"--- {step} exit {code}\n{output}" for step, code, output in steps)
    assert [(step, code) for step, code, _ in steps] == [("new", 0), ("validate", 0), ("pytest", 0)], report
    assert "passed" in steps[-1][2] and "failed" not in steps[-1][2], report


def test_files_and_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # DIR defaults to ./NAME
    with pytest.raises(SystemExit) as exited:
        main(["new", "3d-scan", "--kind", "job"])
    assert exited.value.code == 0
    made = tmp_path / "3d-scan"
    assert sorted(str(p.relative_to(made)) for p in made.rglob("*") if p.is_file()) == [
        "README.md", "config.yaml", "plugin_3d_scan.py", "tests/test_3d_scan.py"]
    assert "class Plugin3dScan(JobBase):" in (made / "plugin_3d_scan.py").read_text()
    assert "from iochost import JobBase, JobResult" in (made / "plugin_3d_scan.py").read_text()
    assert "`IOCHOST:3D-SCAN:RUNS`" not in (made / "README.md").read_text()  # the table names short PVs
    assert "| `RUNS` | output | int |" in (made / "README.md").read_text()
    assert plugin_names("json").module == "json_plugin"  # not the stdlib's json
    assert plugin_names("true").class_name == "PluginTrue"
    assert plugin_names("beam-shutter").class_name == "BeamShutter"
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exited:
        main(["new", "ok", "--kind", "declarative", str(tmp_path / "empty")])
    assert exited.value.code == 0
    text = (tmp_path / "empty" / "ok.py").read_text()
    assert "from iochost import DeclarativeTask" in text and "class Ok(DeclarativeTask):" in text


@pytest.mark.parametrize("name", ["bad name", "x" * 41, "dot.ted", ""])
def test_bad_name_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["new", name, "--kind", "task", str(tmp_path / "out")])
    assert exited.value.code == 2
    assert f"iochost new: invalid plugin name {name!r}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_non_empty_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mine.py").write_text("keep me\n")
    with pytest.raises(SystemExit) as exited:
        main(["new", "ok", "--kind", "task", str(tmp_path)])
    assert exited.value.code == 2
    assert f"{tmp_path} exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.py"]
    assert (tmp_path / "mine.py").read_text() == "keep me\n"


@pytest.mark.parametrize("kind, plugin_kind, mode", [
    ("task", "task", "continuous"), ("triggered", "task", "triggered"), ("job", "job", None),
    ("declarative", "task", "continuous"),
])
def test_the_readme_names_the_default_pvs_the_worker_creates(tmp_path: Path, kind: str, plugin_kind: Kind,
                                                            mode: str | None) -> None:
    """From the one table (config.pvnames), so a default PV added there is in every README."""
    made = tmp_path / "plugin"
    with pytest.raises(SystemExit) as exited:
        main(["new", "demo", "--kind", kind, str(made)])
    assert exited.value.code == 0
    sentence = next(line for line in (made / "README.md").read_text().splitlines() if "default PVs" in line)
    named = sentence.split("default PVs ", 1)[1].rstrip(".").replace(" and ", ", ").split(", ")
    assert [name.split(" (")[0] for name in named] == default_pv_names(plugin_kind, mode)
