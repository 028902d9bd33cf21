"""The validator: one test per failure class, each asserting stage, file and line.

Plugins are real files in tmp_path; imports run in the real probe subprocess. The command line
(`iochost validate`) is tested in test_validate_cli.py.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from conftest import EXAMPLES
from iochost.report import Stage, render_text
from iochost.validate.pipeline import validate_plugin

TASK = """
from iochost import TaskBase


class Probe(TaskBase):
    def initialize(self):
        pass

    def execute(self):
        pass

    def cleanup(self):
        pass
"""

CONFIG = """
parameters:
  interval: 0.5
pvs:
  inputs:
    GAIN: {type: float, value: 1.0}
  outputs:
    OUT: {type: float}
"""


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def make(tmp_path: Path, files: dict[str, str] | None = None, config: str = CONFIG, name: str = "probe") -> Path:
    plugin_dir = tmp_path / name
    plugin_dir.mkdir()
    for relative, text in {"probe.py": TASK, **(files or {})}.items():
        if text is None:
            continue
        path = plugin_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text))
    if config is not None:
        (plugin_dir / "config.yaml").write_text(dedent(config))
    return plugin_dir


def line_of(plugin: Path, relative: str, snippet: str) -> int:
    lines = (plugin / relative).read_text().splitlines()
    return next(number for number, text in enumerate(lines, 1) if snippet in text)


def only_issue(report, stage: Stage):
    assert not report.ok
    assert [i.stage for i in report.issues] == [stage], render_text(report)
    return report.issues[0]


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent that is not us."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


# -- valid plugins -----------------------------------------------------------------


@pytest.mark.parametrize("example, kind, mode, cls, extra", [
    ("temperature-monitor", "task", "continuous", "TemperatureMonitor", ["SETPOINT", "READING", "ALARM", "HISTORY"]),
    ("beam-shutter", "task", "triggered", "BeamShutter", ["COMMAND", "STATE", "OPERATIONS", "LAST_ACTION"]),
    ("diagnostics", "job", None, "Diagnostics", ["HOSTNAME", "LOAD_1MIN", "DISK_FREE"]),
])
def test_examples_are_valid(example, kind, mode, cls, extra):
    report = validate_plugin(EXAMPLES / example)
    assert report.ok, render_text(report)
    info = report.plugin
    assert (info.kind, info.mode, info.class_name) == (kind, mode, cls)
    assert info.module_file == example.replace("-", "_") + ".py"
    defaults = {
        "continuous": ["ENABLE", "STATUS", "MESSAGE", "CYCLE_COUNT", "VERSION", "CLEAR", "RESET"],
        "triggered": ["ENABLE", "STATUS", "MESSAGE", "CYCLE_COUNT", "VERSION", "RUN", "CLEAR", "RESET"],
        None: ["STATUS", "MESSAGE", "RUN"],
    }[mode]
    prefix = f"IOCHOST:{example.upper()}:"
    assert info.pvs == [prefix + pv for pv in defaults + extra]
    what = f"{mode + ' ' if mode else ''}{kind} ({cls} in {info.module_file})"
    assert render_text(report) == f"OK: {example} is a {what}, {len(info.pvs)} PVs"


def test_iocmng_style_plugin_is_valid(tmp_path):
    plugin = make(tmp_path, {"probe.py": None, "my_diagnostics.py": """
        from iocmng import JobBase
        from iocmng.base.job import JobResult


        class MyDiagnostics(JobBase):
            def initialize(self):
                self.logger.info("Preparing diagnostics")

            def execute(self) -> JobResult:
                return JobResult(success=True, data={}, message="Diagnostics OK")
    """, "legacy_task.py": """
        import iocmng.base.task as base


        class Helper:
            pass
    """}, config="arguments:\n  outputs:\n    SYSTEM_NAME: {type: string}\n")
    report = validate_plugin(plugin, name="my-diag", prefix="BL")
    assert report.ok, render_text(report)
    assert (report.plugin.kind, report.plugin.class_name, report.plugin.module_file) == (
        "job", "MyDiagnostics", "my_diagnostics.py")
    assert report.plugin.pvs[-1] == "BL:MY-DIAG:SYSTEM_NAME"


def test_methods_inherited_from_an_in_plugin_base_in_a_package(tmp_path):
    plugin = make(tmp_path, {"probe.py": None, "pkg/__init__.py": "from .common import Common\n", "pkg/common.py": """
        import iochost


        class Common(iochost.TaskBase):
            def initialize(self):
                pass

            def cleanup(self):
                pass
    """, "pkg/monitor.py": """
        from . import Common


        class Monitor(Common):
            def execute(self):
                pass
    """, "tests/test_monitor.py": """
        from iochost import TaskBase


        class FakeTask(TaskBase):
            def initialize(self): pass
            def execute(self): pass
            def cleanup(self): pass
    """})
    report = validate_plugin(plugin)
    assert report.ok, render_text(report)
    assert (report.plugin.class_name, report.plugin.module_file) == ("Monitor", "pkg/monitor.py")


def test_probe_output_and_imports_stay_clean(tmp_path):
    plugin = make(tmp_path, {"probe.py": TASK + dedent("""
        import sys
        print("plugin chatter on stdout")
        assert "softioc" not in sys.modules, "the probe imported softioc"
    """)})
    report = validate_plugin(plugin)
    assert report.ok, render_text(report)
    assert not list(plugin.rglob("__pycache__"))  # nothing written into the checkout


def test_parameters_override_changes_mode_and_default_pvs(tmp_path):
    report = validate_plugin(make(tmp_path), parameters={"mode": "triggered"})
    assert report.ok and report.plugin.mode == "triggered"
    assert "IOCHOST:PROBE:RUN" in report.plugin.pvs
    bad = validate_plugin(tmp_path / "probe", parameters={"interval": "fast"})
    issue = only_issue(bad, Stage.CONFIG)
    assert issue.message.startswith("parameters.interval:") and "override" in issue.message


# -- one test per failure class -------------------------------------------------------


def test_config_error(tmp_path):
    plugin = make(tmp_path, config="pvs:\n  outputs:\n    OUT:\n      type: float\n      unti: V\n")
    issue = only_issue(validate_plugin(plugin), Stage.CONFIG)
    assert (issue.file, issue.line) == ("config.yaml", 5)
    assert issue.message.startswith("pvs.outputs.OUT.unti: unknown key; did you mean 'unit'?")


def test_missing_config(tmp_path):
    plugin = make(tmp_path, config=None)
    issue = only_issue(validate_plugin(plugin), Stage.CONFIG)
    assert (issue.file, issue.line) == ("config.yaml", None) and "not found" in issue.message


def test_missing_directory(tmp_path):
    issue = only_issue(validate_plugin(tmp_path / "nowhere"), Stage.CONFIG)
    assert "does not exist" in issue.message


def test_syntax_error(tmp_path):
    plugin = make(tmp_path, {"helpers/util.py": "def f(:\n    pass\n"})
    issue = only_issue(validate_plugin(plugin), Stage.SYNTAX)
    assert (issue.file, issue.line) == ("helpers/util.py", 1)
    assert issue.message.startswith("SyntaxError:")


def test_hidden_and_venv_directories_are_not_plugin_code(tmp_path):
    plugin = make(tmp_path, {".git/hooks/x.py": "def (:\n", "venv/lib/y.py": "def (:\n", "venv/pyvenv.cfg": ""})
    assert validate_plugin(plugin).ok


def test_all_independent_errors_reported_at_once(tmp_path):
    plugin = make(tmp_path, {"broken.py": "x = (\n"}, config="parameters:\n  intervall: 1\n  mode: often\n")
    report = validate_plugin(plugin)
    assert [(i.stage, i.file, i.line) for i in report.issues] == [
        (Stage.CONFIG, "config.yaml", 3),
        (Stage.SYNTAX, "broken.py", 1),
    ]
    text = render_text(report)
    assert text.splitlines()[-1] == "FAILED: probe: 2 errors (config, syntax)"


def test_no_plugin_class(tmp_path):
    plugin = make(tmp_path, {"probe.py": "class NotAPlugin:\n    def execute(self):\n        pass\n"})
    issue = only_issue(validate_plugin(plugin), Stage.DISCOVERY)
    assert (issue.file, issue.line) == ("probe.py", 1)  # the one class found
    assert "no class deriving TaskBase or JobBase" in issue.message
    assert "classes found: NotAPlugin (probe.py:1, bases: none)" in issue.message


def test_several_classes_need_class_name(tmp_path):
    second = TASK.replace("class Probe", "class Other")
    plugin = make(tmp_path, {"other.py": second})
    issue = only_issue(validate_plugin(plugin), Stage.DISCOVERY)
    assert (issue.file, issue.line) == (None, None)
    assert "Other (other.py:4)" in issue.message and "Probe (probe.py:4)" in issue.message
    assert "--class" in issue.message
    report = validate_plugin(plugin, class_name="Other")
    assert report.ok and report.plugin.module_file == "other.py"
    missing = only_issue(validate_plugin(plugin, class_name="Nope"), Stage.DISCOVERY)
    assert "no plugin class named 'Nope'" in missing.message


def test_missing_required_method(tmp_path):
    plugin = make(tmp_path, {"probe.py": TASK.replace("    def cleanup(self):\n        pass\n", "")})
    issue = only_issue(validate_plugin(plugin), Stage.DISCOVERY)
    assert (issue.file, issue.line) == ("probe.py", 4)
    assert issue.message == "Probe is a task but does not define cleanup()"


def test_import_error_points_at_the_import_statement(tmp_path):
    plugin = make(tmp_path, {"probe.py": "import os\nimport numpy_that_is_not_installed\n" + TASK})
    issue = only_issue(validate_plugin(plugin), Stage.IMPORT)
    assert (issue.file, issue.line) == ("probe.py", 2)
    assert issue.message == "ModuleNotFoundError: No module named 'numpy_that_is_not_installed'"


def test_import_error_in_a_helper_module(tmp_path):
    plugin = make(tmp_path, {"probe.py": "import helper\n" + TASK, "helper.py": "X = 1\nfrom os import nothing_here\n"})
    issue = only_issue(validate_plugin(plugin), Stage.IMPORT)
    assert (issue.file, issue.line) == ("helper.py", 2)
    assert issue.message.startswith("ImportError: cannot import name 'nothing_here'")


def test_top_level_exception(tmp_path):
    plugin = make(tmp_path, {"probe.py": TASK + dedent("""

        def load_table():
            return {}["calibration"]


        TABLE = load_table()
    """)})
    issue = only_issue(validate_plugin(plugin), Stage.IMPORT)
    # inside load_table(): the last frame in the plugin, not the call site
    assert (issue.file, issue.line) == ("probe.py", line_of(plugin, "probe.py", '["calibration"]'))
    assert issue.message == "KeyError: 'calibration'"


def test_exit_at_import(tmp_path):
    plugin = make(tmp_path, {"probe.py": "import sys\nsys.exit(3)\n" + TASK})
    issue = only_issue(validate_plugin(plugin), Stage.IMPORT)
    assert (issue.file, issue.line, issue.message) == ("probe.py", 2, "SystemExit: 3")


@pytest.mark.slow
def test_import_hang_is_killed(tmp_path):
    marker = tmp_path / "pids.txt"
    plugin = make(tmp_path, {"probe.py": TASK + dedent(f"""
        import os, subprocess
        child = subprocess.Popen(["sleep", "60"])
        open({str(marker)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        while True:
            pass
    """)})
    started = time.monotonic()
    report = validate_plugin(plugin, import_timeout=2.0)
    assert time.monotonic() - started < 8
    issue = only_issue(report, Stage.IMPORT)
    loop = line_of(plugin, "probe.py", "while True")
    assert issue.file == "probe.py" and issue.line in (loop, loop + 1)  # in the busy loop
    assert issue.message == f"import did not finish within 2 s; it was at probe.py:{issue.line}"
    probe_pid, child_pid = map(int, marker.read_text().split())
    deadline = time.monotonic() + 5
    while (alive(probe_pid) or alive(child_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(probe_pid) and not alive(child_pid)


def test_abstract_method_left(tmp_path):
    plugin = make(tmp_path, {"probe.py": """
        from abc import abstractmethod

        from iochost import TaskBase


        class SensorTask(TaskBase):
            @abstractmethod
            def read(self):
                ...

            def execute(self):
                self.set_pv("OUT", self.read())


        class Probe(SensorTask):
            def initialize(self):
                pass

            def cleanup(self):
                pass
    """})
    issue = only_issue(validate_plugin(plugin), Stage.INHERITANCE)
    assert (issue.file, issue.line) == ("probe.py", line_of(plugin, "probe.py", "class Probe"))
    assert issue.message == "Probe leaves abstract method(s) unimplemented: read()"


def test_illegal_pv_name(tmp_path):
    plugin = make(tmp_path, config="pvs:\n  outputs:\n    OUT: {type: float}\n    BEAM CURRENT: {type: float}\n")
    issue = only_issue(validate_plugin(plugin), Stage.PVS)
    assert (issue.file, issue.line) == ("config.yaml", 4)
    assert issue.message.startswith("pvs.outputs.BEAM CURRENT: 'BEAM CURRENT' is not a legal PV name")


def test_pv_name_too_long(tmp_path):
    long_name = "A" * 50
    plugin = make(tmp_path, config=f"arguments:\n  inputs:\n    {long_name}: {{type: int}}\n")
    issue = only_issue(validate_plugin(plugin, prefix="BL01"), Stage.PVS)
    assert (issue.file, issue.line) == ("config.yaml", 3)
    assert issue.message == f"arguments.inputs.{long_name}: BL01:PROBE:{long_name} is 61 characters, more than 60"
    assert validate_plugin(plugin, prefix="BL").ok  # 59 characters fit


def test_pv_colliding_with_a_default_pv(tmp_path):
    plugin = make(tmp_path, config="pvs:\n  outputs:\n    OUT: {type: float}\n    STATUS: {type: string}\n")
    issue = only_issue(validate_plugin(plugin), Stage.PVS)
    assert (issue.file, issue.line) == ("config.yaml", 4)
    assert issue.message == "pvs.outputs.STATUS: STATUS collides with the default PV STATUS of a continuous task"


def test_duplicate_input_and_output(tmp_path):
    plugin = make(tmp_path, config="pvs:\n  inputs:\n    GAIN: {type: float}\n  outputs:\n    GAIN: {type: float}\n")
    issue = only_issue(validate_plugin(plugin), Stage.CONFIG)
    assert (issue.file, issue.line) == ("config.yaml", 5)
    assert issue.message == "pvs.outputs.GAIN: also declared under inputs"
    plugin = make(tmp_path, config="pvs:\n  inputs:\n    GAIN: {type: float}\n  outputs:\n    Gain: {type: float}\n",
                  name="case")
    issue = only_issue(validate_plugin(plugin), Stage.PVS)
    assert (issue.file, issue.line) == ("config.yaml", 5)
    assert "differs only in case from GAIN" in issue.message


def test_run_import_false_skips_the_subprocess(tmp_path):
    plugin = make(tmp_path, {"probe.py": "import not_installed_anywhere\n" + TASK})
    report = validate_plugin(plugin, run_import=False)
    assert report.ok and report.plugin.kind == "task"

