"""Render the templates for one kind and write the plugin directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

from iochost.config.pvnames import default_pv_names
from iochost.editor_schemas import modeline
from iochost.kinds import Kind, Mode
from iochost.scaffold.code_templates import DECLARATIVE_MODULE, JOB_MODULE, TASK_MODULE, TRIGGERED_MODULE
from iochost.scaffold.config_templates import DECLARATIVE_CONFIG, JOB_CONFIG, TASK_CONFIG, TRIGGERED_CONFIG
from iochost.scaffold.plugin_names import KINDS, PluginNames, ScaffoldError, plugin_names
from iochost.scaffold.readme_template import README
from iochost.scaffold.test_templates import DECLARATIVE_TESTS, JOB_TESTS, TASK_TESTS, TEST_HEADER, TRIGGERED_TESTS
from iochost.sdk.status import JobStatus


@dataclass(frozen=True)
class _Kind:
    module: Template
    config: Template
    tests: str
    run_args: list[str]
    title: str
    summary: str
    plugin_kind: Kind  # and mode: which default PVs it has (config.pvnames)
    mode: Mode | None
    pv_rows: list[tuple[str, str, str, str]]
    try_it: str


_KINDS: dict[str, _Kind] = {
    "task": _Kind(
        TASK_MODULE, TASK_CONFIG, TASK_TESTS, ["--param", "interval=0.1"], "continuous task",
        "Every `interval` seconds it publishes SETPOINT times the `gain` parameter on OUTPUT.",
        "task", "continuous",
        [("SETPOINT", "input", "float (V, 0..100)", "value to scale"),
         ("OUTPUT", "output", "float (V, 0..200)", "SETPOINT times gain; MINOR above 150, MAJOR above 190")],
        "caproto-put --no-repeater IOCHOST:$PVNAME:SETPOINT 30\n"
        "caproto-get --no-repeater IOCHOST:$PVNAME:OUTPUT       # 60 with gain 2",
    ),
    "triggered": _Kind(
        TRIGGERED_MODULE, TRIGGERED_CONFIG, TRIGGERED_TESTS, [], "triggered task",
        "Each time an operator writes 1 to RUN it moves POSITION by STEP and counts the move.",
        "task", "triggered",
        [("STEP", "input", "float (mm, -10..10)", "distance moved per RUN"),
         ("POSITION", "output", "float (mm)", "position after the last move; MINOR beyond +-900"),
         ("MOVES", "output", "int", "moves since start"),
         ("LAST_ACTION", "output", "string", "time and result of the last move")],
        "caproto-put --no-repeater IOCHOST:$PVNAME:STEP 2.5\n"
        "caproto-put --no-repeater IOCHOST:$PVNAME:RUN 1\n"
        "caproto-get --no-repeater IOCHOST:$PVNAME:POSITION     # 2.5",
    ),
    "job": _Kind(
        JOB_MODULE, JOB_CONFIG, JOB_TESTS, [], "job",
        "Each run takes `samples` readings scaled by SCALE, publishes their mean on LAST_MEAN "
        "and returns it (and the readings) as the run's result.",
        "job", None,
        [("SCALE", "input", "float (V, 0..10)", "scale of each reading"),
         ("LAST_MEAN", "output", "float (V)", "mean of the last run"),
         ("RUNS", "output", "int", "runs since start")],
        "caproto-put --no-repeater IOCHOST:$PVNAME:RUN 1\n"
        "caproto-get --no-repeater IOCHOST:$PVNAME:LAST_MEAN IOCHOST:$PVNAME:MESSAGE   # 3, mean 3.00 V\n"
        "# under the daemon: curl -s -X POST localhost:8080/api/v1/jobs/$name/run",
    ),
    "declarative": _Kind(
        DECLARATIVE_MODULE, DECLARATIVE_CONFIG, DECLARATIVE_TESTS, ["--param", "interval=0.1"],
        "declarative task",
        "A declarative task (iocmng 2.7): no Python logic. Every cycle avg_temp is the mean of the "
        "last 10 temps, and the rule OVER_LIMIT latches alarm (MAJOR) while temp is above limit; "
        "write 1 to CLEAR to release it. Uncomment `link:` in config.yaml to wire temp to another IOC's PV.",
        "task", "continuous",
        [("temp", "input", "float (degC)", "temperature; the last 10 are temp_buf"),
         ("limit", "input", "float (degC)", "alarm above this"),
         ("avg_temp", "output", "float (degC)", "mean(temp_buf)"),
         ("alarm", "output", "bool (OK/OVER)", "latched by rule OVER_LIMIT; MAJOR while 1")],
        "caproto-put --no-repeater IOCHOST:$PVNAME:temp 90\n"
        "caproto-get --no-repeater IOCHOST:$PVNAME:alarm        # OVER (latched)\n"
        "caproto-put --no-repeater IOCHOST:$PVNAME:CLEAR 1",
    ),
}
assert tuple(_KINDS) == KINDS


def _default_pvs(spec: _Kind) -> str:
    """The README's list of the default PVs the scaffold has, as written (no wired PVs)."""
    names = [f"STATUS ({' / '.join(status.name for status in JobStatus)})"
             if name == "STATUS" and spec.plugin_kind == "job" else name
             for name in default_pv_names(spec.plugin_kind, spec.mode)]
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _render(kind: str, names: PluginNames) -> dict[str, str]:
    """Every file of the plugin, by path relative to its directory."""
    spec = _KINDS[kind]
    values = {"name": names.name, "Class": names.class_name, "module": names.module,
              "test_module": names.test_module, "PVNAME": names.pv_name, "kind_title": spec.title}
    rows = "".join(f"| `{pv}` | {direction} | {kind_} | {what} |\n" for pv, direction, kind_, what in spec.pv_rows)
    readme = README.substitute(
        values, summary=spec.summary, pv_rows=rows, defaults=_default_pvs(spec),
        kind_word="job" if kind == "job" else "task", try_it=Template(spec.try_it).substitute(values),
    )
    test = TEST_HEADER.substitute(values, run_args=repr(spec.run_args)) + spec.tests
    return {
        f"{names.module}.py": spec.module.substitute(values),
        # the schema line first: editors with the YAML language server complete and check the keys
        "config.yaml": modeline("config") + "\n" + spec.config.substitute(values),
        "README.md": readme,
        f"tests/{names.test_module}.py": test,
    }


def scaffold_plugin(name: str, kind: str, directory: Path) -> list[Path]:
    """Write plugin ``name`` of ``kind`` into ``directory`` (created; must be absent or
    empty, so nothing of the author's is overwritten) and return the files written."""
    if kind not in _KINDS:
        raise ScaffoldError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    names = plugin_names(name)
    if directory.exists() and not directory.is_dir():
        raise ScaffoldError(f"{directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()):
        raise ScaffoldError(f"{directory} exists and is not empty; choose a new or empty directory")
    files = _render(kind, names)
    written = []
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
