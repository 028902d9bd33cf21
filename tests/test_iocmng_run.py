"""``iochost run`` with iocmng-run's flags, ``run_ioc`` from a script, and config.yaml's
``prefix:`` outside the daemon: real soft IOCs in their own processes, PVs read over CA.

The expected PV names are facts measured with iocmng 2.7.9 itself: ``iocmng-run`` (from
PyPI, in its own venv) started with the same flags and ``--pvout``, in a directory holding
the module and configs below (2026-12-07). They are kept here as data, not derived by the
code under test. Two things the measurement showed: with ``--prefix`` the prefix is the whole
PV prefix (QUICKSTART's ``caget MY:IOC:MY-TASK:OUTPUT`` names a PV iocmng-run does not
serve: it serves ``MY:IOC:OUTPUT``), and without ``--prefix`` the PVs are
``BEAMLINE:DEFAULT:{config prefix: or the IOC name, upper-cased}:...``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Processes, wait_for
from iochost.contract.exits import WorkerExit

# QUICKSTART "Creating Your First Task": a module my_first_task.py with class MyFirstTask that
# imports TaskBase and pv_client from iocmng, and a config.yaml beside it with parameters
# mode/interval and arguments INPUT (float input), OUTPUT (float) and COUNTER (int outputs).
# The code is ours: it doubles INPUT into OUTPUT and counts cycles while ENABLE is set.
FIRST_TASK = """\
    from iocmng import TaskBase, pv_client


    class MyFirstTask(TaskBase):
        def initialize(self):
            self.cycles = 0
            if "PROVIDER" in self.pv_definitions.get("outputs", {}):
                self.set_pv("PROVIDER", pv_client.get_provider())

        def execute(self):
            if self.get_pv("ENABLE"):
                self.cycles += 1
                self.set_pv("OUTPUT", 2.0 * (self.get_pv("INPUT") or 0.0))
                self.set_pv("COUNTER", self.cycles)

        def cleanup(self):
            pass
"""
FIRST_CONFIG = """\
    parameters:
      mode: continuous
      interval: 0.2
    arguments:
      inputs:
        INPUT: {type: float, value: 0.0}
      outputs:
        OUTPUT: {type: float, value: 0.0}
        COUNTER: {type: int, value: 0}
"""
TASK_PVS = ["CLEAR", "COUNTER", "CYCLE_COUNT", "ENABLE", "INPUT", "MESSAGE", "OUTPUT", "RESET", "STATUS", "VERSION"]

# QUICKSTART step 3's command line
QUICKSTART_FLAGS = ("--module", "my_first_task", "--class-name", "MyFirstTask", "--config", "config.yaml",
                    "--prefix", "MY:IOC", "--name", "my-task")
# iocmng-run 2.7.9 --pvout, flags -> file (the files' lines, in their order)
IOCMNG_PVS = {
    QUICKSTART_FLAGS: [f"MY:IOC:{pv}" for pv in TASK_PVS],
    ("-c", "MyFirstTask", "-m", "my_first_task", "--config", "config.yaml", "--name", "my-task", "--pva", "false"):
        [f"BEAMLINE:DEFAULT:MY-TASK:{pv}" for pv in TASK_PVS],
    ("-m", "my_first_task", "--config", "config.yaml"): [f"BEAMLINE:DEFAULT:MYFIRSTTASK:{pv}" for pv in TASK_PVS],
    # config_seg.yaml: config.yaml with `prefix: SEG` (MANUAL section 21: the plugin's segment)
    ("-m", "my_first_task", "--config", "config_seg.yaml", "--name", "my-task"):
        [f"BEAMLINE:DEFAULT:SEG:{pv}" for pv in TASK_PVS],
    ("-m", "my_first_task", "--config", "config_seg.yaml", "--prefix", "MY:IOC"): [f"MY:IOC:{pv}" for pv in TASK_PVS],
    # the same module in a package beside it, pkg/my_first_task.py
    ("-m", "pkg.my_first_task", "--config", "config_seg.yaml"): [f"BEAMLINE:DEFAULT:SEG:{pv}" for pv in TASK_PVS],
    ("-m", "my_first_task"): [f"BEAMLINE:DEFAULT:MYFIRSTTASK:{pv}" for pv in
                              ("CLEAR", "CYCLE_COUNT", "ENABLE", "MESSAGE", "RESET", "STATUS", "VERSION")],
}


@pytest.fixture
def first_task(tmp_path: Path) -> Path:
    """QUICKSTART's layout: the module and its configs in the directory iochost run starts in."""
    (tmp_path / "my_first_task.py").write_text(textwrap.dedent(FIRST_TASK))
    (tmp_path / "config.yaml").write_text(textwrap.dedent(FIRST_CONFIG))
    (tmp_path / "config_seg.yaml").write_text("prefix: SEG\n" + textwrap.dedent(FIRST_CONFIG))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "my_first_task.py").write_text(textwrap.dedent(FIRST_TASK))
    return tmp_path


def start(processes: Processes, cwd: Path, *flags: str) -> subprocess.Popen[bytes]:
    return processes.start([sys.executable, "-m", "iochost", "run", *flags], cwd=cwd,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pv_list(path: Path, proc: subprocess.Popen[bytes]) -> list[str]:
    """The --pvout file once written (the records exist then), the process still serving."""
    wait_for(lambda: path.is_file() and path.read_text().endswith("\n"), timeout=60, what=f"{path} written")
    assert proc.poll() is None
    return path.read_text().splitlines()


def fresh_read(name: str, timeout: float = 2.0) -> object:
    """``name``'s value over CA on a new channel. The cases here serve the same names from one
    IOC after another, and libca searches again for a cached channel whose server went away
    only on its backoff, which grows past any timeout here; caproto's one-shot read searches now."""
    from caproto.sync.client import read

    try:
        data = read(name, timeout=timeout, repeater=False).data
    except TimeoutError:
        return None
    value = data[0] if len(data) == 1 else data
    return value.decode() if isinstance(value, bytes) else value


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT, as an operator's Ctrl-C: the IOC ends cleanly (the next test's IOC takes the port)."""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == WorkerExit.OK


@pytest.mark.slow
def test_quickstart_command_line_serves_iocmng_run_names(processes, first_task, ca):
    proc = start(processes, first_task, *QUICKSTART_FLAGS, "--pvout", "out/pvs.txt")
    assert pv_list(first_task / "out" / "pvs.txt", proc) == IOCMNG_PVS[QUICKSTART_FLAGS]
    ca.caput("MY:IOC:INPUT", 5.0, wait=True, timeout=10)
    wait_for(lambda: ca.caget("MY:IOC:OUTPUT", timeout=2) == 10.0, timeout=20, what="OUTPUT = 2 x INPUT")
    wait_for(lambda: ca.caget("MY:IOC:COUNTER", timeout=2) > 0, timeout=20, what="COUNTER counting")
    assert ca.caget("MY:IOC:CYCLE_COUNT", timeout=5) > 0
    stop(proc)


@pytest.mark.slow
@pytest.mark.parametrize("flags", [flags for flags in IOCMNG_PVS if flags != QUICKSTART_FLAGS])
def test_iocmng_run_flags_give_iocmng_run_names(processes, first_task, flags):
    proc = start(processes, first_task, *flags, "--pvout", "pvs.txt")
    names = pv_list(first_task / "pvs.txt", proc)
    assert names == IOCMNG_PVS[flags]
    status = next(name for name in names if name.endswith(":STATUS"))
    assert fresh_read(status, timeout=30) is not None  # served under that name, over CA
    stop(proc)


@pytest.mark.slow
def test_pva_false_is_the_pva_parameter_pv_client_follows(processes, first_task):
    (first_task / "config.yaml").write_text(textwrap.dedent(FIRST_CONFIG)
                                            + "    PROVIDER: {type: string}\n")
    common = ("-m", "my_first_task", "-c", "MyFirstTask", "--config", "config.yaml", "--name", "my-task")
    for pva_flag, provider in ((("--pva", "false"), "ca"), ((), "pva"), (("-p", "pva=false"), "ca")):
        proc = start(processes, first_task, *common, *pva_flag)
        wait_for(lambda want=provider: fresh_read("BEAMLINE:DEFAULT:MY-TASK:PROVIDER") == want, timeout=60,
                 what=f"pv_client over {provider}")
        stop(proc)


# A plugin whose own __init__ reads self.pv_prefix (iocmng plugins build PV names there):
# it must already be the prefix its records get, config.yaml's segment or --prefix.
PREFIX_IN_INIT = """\
    from iocmng import TaskBase


    class Early(TaskBase):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.seen_in_init = self.pv_prefix

        def initialize(self):
            self.set_pv("SEEN", self.seen_in_init)

        def execute(self):
            pass

        def cleanup(self):
            pass
"""


@pytest.mark.slow
def test_pv_prefix_is_right_in_the_plugins_own_init(processes, first_task, ca):
    (first_task / "early.py").write_text(textwrap.dedent(PREFIX_IN_INIT))
    (first_task / "early.yaml").write_text("prefix: EARLYSEG\nparameters: {interval: 0.5}\n"
                                           "arguments: {outputs: {SEEN: {type: string}}}\n")
    for flags, device in ((("--config", "early.yaml"), "BEAMLINE:DEFAULT:EARLYSEG"),
                          (("--config", "early.yaml", "--prefix", "EARLY:IOC"), "EARLY:IOC")):
        proc = start(processes, first_task, "-m", "early", *flags)
        wait_for(lambda pv=f"{device}:SEEN": ca.caget(pv, timeout=2) is not None, timeout=60, what=f"{device} up")
        assert ca.caget(f"{device}:SEEN", timeout=5) == device
        stop(proc)


@pytest.mark.slow
def test_iochost_run_dir_honours_config_prefix_segment(processes, first_task, ca):
    plugin_dir = first_task / "first"
    plugin_dir.mkdir()
    (plugin_dir / "first.py").write_text(textwrap.dedent(FIRST_TASK))
    (plugin_dir / "config.yaml").write_text("prefix: SEG-X\n" + textwrap.dedent(FIRST_CONFIG))
    proc = start(processes, first_task, str(plugin_dir), "--prefix", "IOCHTSEG", "-p", "interval=0.1",
                 "--pvout", "dir.txt")
    assert pv_list(first_task / "dir.txt", proc) == [f"IOCHTSEG:SEG-X:{pv}" for pv in TASK_PVS]
    ca.caput("IOCHTSEG:SEG-X:INPUT", 1.5, wait=True, timeout=10)
    wait_for(lambda: ca.caget("IOCHTSEG:SEG-X:OUTPUT", timeout=2) == 3.0, timeout=20, what="the plugin runs")
    stop(proc)


def run_to_end(cwd: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iochost", "run", *flags], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)


TWO_CLASSES = """\
    from iocmng import JobBase, TaskBase


    class Sampler(TaskBase):
        def initialize(self): pass
        def execute(self): pass
        def cleanup(self): pass


    class Report(JobBase):
        def initialize(self): pass
        def execute(self): return {}
"""


@pytest.mark.slow
def test_module_errors_are_clear_with_the_worker_exit_codes(first_task):
    (first_task / "two.py").write_text(textwrap.dedent(TWO_CLASSES))
    (first_task / "no_plugin.py").write_text("LIMIT = 3\n")
    (first_task / "broken.py").write_text("import os\nraise RuntimeError('no hardware here')\n")
    (first_task / "half.py").write_text(textwrap.dedent(TWO_CLASSES).replace("    def cleanup(self): pass\n", ""))
    (first_task / "no_cleanup.py").write_text(textwrap.dedent(FIRST_TASK).replace(
        "    def cleanup(self):\n        pass\n", ""))
    (first_task / "a_file").write_text("")
    (first_task / "as_dir").mkdir()
    (first_task / "as_dir" / "first.py").write_text(textwrap.dedent(FIRST_TASK))
    (first_task / "as_dir" / "config.yaml").write_text(textwrap.dedent(FIRST_CONFIG))
    cases = {
        ("-m", "not_there"): "module 'not_there' not found",
        ("-m", "two"): "module 'two' has 2 plugin classes (Report, Sampler); choose one with --class-name",
        ("-m", "no_plugin"): "module 'no_plugin' has no TaskBase or JobBase subclass",
        ("-m", "my_first_task", "--class-name", "Other"): "module 'my_first_task' has no class 'Other'; "
                                                          "plugin classes in it: MyFirstTask",
        ("-m", "broken"): "broken.py:2: RuntimeError: no hardware here",
        # a plugin class without cleanup() is abstract: named with what it lacks, not "no subclass"
        ("-m", "half", "-c", "Sampler"): "Sampler is abstract (missing cleanup)",
        ("-m", "no_cleanup"): "module 'no_cleanup' has no complete plugin class: MyFirstTask (missing cleanup)",
        # --pvout is checked before the IOC starts, not once it serves (which ended in a traceback)
        ("-m", "my_first_task", "--pvout", "a_file/pvs.txt"): "--pvout a_file/pvs.txt: cannot write it: a_file "
                                                              "is not a directory",
        ("-m", "my_first_task", "--pvout", "."): "--pvout .: cannot write it: is a directory",
        ("-m", "my_first_task", "--pvout", "/proc/none/pvs.txt"): "--pvout /proc/none/pvs.txt: cannot write it",
        ("as_dir", "--pvout", "a_file/pvs.txt"): "--pvout a_file/pvs.txt: cannot write it",
    }
    for flags, message in cases.items():
        done = run_to_end(first_task, *flags)
        assert done.returncode == WorkerExit.FATAL, (flags, done.stderr)
        assert message in done.stderr, (flags, done.stderr)


@pytest.mark.slow
def test_bad_config_prefix_and_run_prefix_are_refused_naming_the_file(first_task):
    (first_task / "bad.yaml").write_text("parameters: {interval: 1.0}\nprefix: 'MY TASK'\n")
    done = run_to_end(first_task, "-m", "my_first_task", "--config", "bad.yaml")
    assert done.returncode == 1
    assert "[config] bad.yaml:2: prefix: 'MY TASK' is not a legal PV name segment" in done.stderr
    done = run_to_end(first_task, "-m", "my_first_task", "--config", "missing.yaml")
    assert done.returncode == 1 and "missing.yaml not found" in done.stderr
    done = run_to_end(first_task, "-m", "my_first_task", "--prefix", "MY:IOC:")
    assert done.returncode == 1 and "PV prefix 'MY:IOC:'" in done.stderr
    done = run_to_end(first_task, "-m", "my_first_task", "--pva", "maybe")
    assert done.returncode == 2 and "invalid choice: 'maybe'" in done.stderr
    done = run_to_end(first_task, ".", "-m", "my_first_task")
    assert done.returncode == 2 and "not both" in done.stderr


SCRIPT = """\
    import sys

    from iochost import TaskBase, run_ioc
    from iochost.runner import RunFailed


    class Stepper(TaskBase):
        def initialize(self):
            self.steps = 0

        def execute(self):
            self.steps += int(self.parameters["stride"])
            self.set_pv("STEPS", self.steps)

        def cleanup(self):
            pass


    if __name__ == "__main__":
        config = {"parameters": {"interval": 0.1, "stride": 1}, "arguments": {"outputs": {"STEPS": {"type": "int"}}}}
        try:
            run_ioc(Stepper, config=config, parameters={"stride": 5}, prefix=sys.argv[1] or None,
                    name="stepper", pvout=sys.argv[2])
        except RunFailed as exc:
            print(f"run_ioc: {exc}", file=sys.stderr)
            sys.exit(exc.code)
"""


@pytest.mark.slow
def test_run_ioc_from_a_script(processes, tmp_path, ca):
    script = tmp_path / "stepper_app.py"
    script.write_text(textwrap.dedent(SCRIPT))
    proc = processes.start([sys.executable, str(script), "SCRIPT:IOC", "pvs.txt"], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    names = ("CLEAR", "CYCLE_COUNT", "ENABLE", "MESSAGE", "RESET", "STATUS", "STEPS", "VERSION")
    assert pv_list(tmp_path / "pvs.txt", proc) == [f"SCRIPT:IOC:{pv}" for pv in names]
    wait_for(lambda: ca.caget("SCRIPT:IOC:STEPS", timeout=2) >= 10, timeout=20, what="steps of 5 (the override)")
    assert ca.caget("SCRIPT:IOC:STEPS", timeout=5) % 5 == 0
    stop(proc)
    # no prefix: iocmng-run's BEAMLINE:DEFAULT and the name given
    proc = processes.start([sys.executable, str(script), "", "pvs2.txt"], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert "BEAMLINE:DEFAULT:STEPPER:STEPS" in pv_list(tmp_path / "pvs2.txt", proc)
    stop(proc)


def test_run_ioc_refuses_a_bad_config_with_the_exit_code(tmp_path):
    script = tmp_path / "stepper_app.py"
    script.write_text(textwrap.dedent(SCRIPT).replace('"STEPS": {"type": "int"}', '"STEPS": {"type": "integr"}'))
    done = subprocess.run([sys.executable, str(script), "SCRIPT:BAD", "x.txt"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert "arguments.outputs.STEPS.type" in done.stderr and not (tmp_path / "x.txt").exists()


MISUSED = """\
    import os, signal, sys, threading, time
    from pathlib import Path

    from iochost import TaskBase, run_ioc
    from iochost.runner import RunFailed


    class Idle(TaskBase):
        def initialize(self): pass
        def execute(self): pass
        def cleanup(self): pass


    def attempt(prefix):
        try:
            run_ioc(Idle, prefix=prefix, pvout="pvs.txt")
        except RunFailed as exc:
            print(f"RunFailed {exc.code}: {exc}", flush=True)
        else:
            print("returned", flush=True)


    def interrupt_once_serving():  # the first IOC serves (its PV list is written): Ctrl-C it
        while not Path("pvs.txt").is_file():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)


    if sys.argv[1] == "thread":
        runner = threading.Thread(target=attempt, args=("MISUSE:THREAD",))
        runner.start()
        runner.join()
    else:
        threading.Thread(target=interrupt_once_serving, daemon=True).start()
        attempt("MISUSE:FIRST")
        attempt("MISUSE:SECOND")
"""


@pytest.mark.parametrize("how, outcome", [
    ("thread", "RunFailed 2: run_ioc must be called from the main thread"),
    ("twice", "returned\nRunFailed 2: this process already started a soft IOC"),
])
def test_run_ioc_misused_fails_clearly_before_any_ioc(tmp_path, how, outcome):
    """From a thread (the stop signals cannot be handled there; it was a ValueError once the
    IOC served) and a second time in one process (it was softioc's AssertionError)."""
    script = tmp_path / "misused.py"
    script.write_text(textwrap.dedent(MISUSED))
    done = subprocess.run([sys.executable, str(script), how], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(("RunFailed", "returned"))]
    assert "\n".join(lines).startswith(outcome), done.stdout + done.stderr
    assert done.stdout.count("iocInit") == (0 if how == "thread" else 1), done.stdout  # the first run's only


def test_run_ioc_is_iocmngs_name_too():
    import iochost
    from iochost.compat import install_iocmng_alias

    install_iocmng_alias()
    import iocmng
    from iocmng.runner import run_ioc

    assert iocmng.run_ioc is run_ioc is iochost.run_ioc


# -- the segment's rule, as a property ------------------------------------------------------------
@given(st.text(alphabet="AZaz09_-:.+[ \n", min_size=1, max_size=12))
def test_a_segment_is_accepted_exactly_when_it_makes_legal_record_names(segment):
    """Legal: the record names it makes are legal, and it has no empty ':' part (and no
    '+[]<>;', legal in record names but not in a segment, which operators type)."""
    from iochost.config.pvnames import RECORD_NAME_RE, plugin_pv_prefix, segment_problem

    full = f"{plugin_pv_prefix('IOCHOST', 'name', segment)}:STATUS"
    legal = (RECORD_NAME_RE.fullmatch(full) is not None and "::" not in full and not segment.startswith(":")
             and not segment.endswith(":") and not set(segment) & set("+[]<>;"))
    assert (segment_problem(segment) is None) == legal


@given(st.from_regex(r"[A-Za-z0-9_-]{1,8}(:[A-Za-z0-9_-]{1,8}){0,2}", fullmatch=True))
def test_a_legal_segment_replaces_the_name(segment):
    from iochost.config.pvnames import plugin_pv_prefix, segment_problem

    assert segment_problem(segment) is None
    assert plugin_pv_prefix("BL", "some-name", segment) == f"BL:{segment}"
    assert plugin_pv_prefix("BL", "some-name", None) == "BL:SOME-NAME"
