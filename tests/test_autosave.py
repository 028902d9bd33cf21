"""Values that survive restarts (autosave): the pure parts alone, then a real daemon with a
plugin from a file:// git repository, written over CA and PVA, restarted every way it can be."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_for
from client_harness import EpicsClient
from daemon_harness import Daemon, add, wait_until
from gitrepos import plugin_repo
from iochost.config import PVGroup
from iochost.contract import messages
from iochost.durable import write_atomically
from iochost.worker import autosave
from worker_harness import WorkerProcess

# -- the pure parts ------------------------------------------------------------------------


def group(inputs: dict, outputs: dict | None = None) -> PVGroup:
    return PVGroup.model_validate({"inputs": inputs, "outputs": outputs or {}})


PVS = {
    "SETPOINT": {"type": "float", "value": 1.0, "low": 0.0, "high": 100.0},
    "MODE": {"type": "enum", "choices": ["slow", "fast"], "value": "slow"},
    "ARMED": {"type": "bool", "alarm_on": "MAJOR"},
    "TRACE": {"type": "int", "length": 3},
    "SCRATCH": {"type": "int", "value": 7, "autosave": False},
}


def test_saved_values_that_fit_become_initial_values_misfits_are_dropped_with_the_reason(caplog):
    pvs = group(PVS, {"ECHO": {"type": "float"}})
    saved = {"SETPOINT": 42.5, "MODE": "fast", "ARMED": 1, "TRACE": [1, 2, 3],
             "SCRATCH": 99, "ECHO": 3.0, "GONE": 1}
    restored, kept = autosave.apply(saved, pvs)
    assert kept == {"SETPOINT": 42.5, "MODE": "fast", "ARMED": 1, "TRACE": [1, 2, 3]}
    initial = {name: pv.initial_value() for name, pv in restored.inputs.items()}
    assert initial == {"SETPOINT": 42.5, "MODE": 1, "ARMED": 1, "TRACE": [1, 2, 3], "SCRATCH": 7}
    assert restored.inputs["ARMED"].alarm.osv == "MAJOR"  # the declaration is otherwise unchanged

    caplog.clear()
    misfits = {"SETPOINT": 500.0, "MODE": "medium", "ARMED": "maybe", "TRACE": [1, 2, 3, 4]}
    restored, kept = autosave.apply(misfits, pvs)
    assert kept == {}
    assert restored.inputs == pvs.inputs  # every one starts at its config.yaml value
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 4
    reasons = {"SETPOINT": "outside low..high", "MODE": "not one of the choices", "ARMED": "true/false",
               "TRACE": "more than length 3"}
    for name, reason in reasons.items():
        assert any(f" of {name} " in w and reason in w for w in warnings), (name, warnings)


def test_a_value_saved_under_another_type_is_converted_one_that_cannot_be_is_a_misfit(caplog):
    caplog.set_level("INFO")
    pvs = group({"A": {"type": "int"}, "B": {"type": "float"}, "C": {"type": "string"},
                 "D": {"type": "enum", "choices": ["x", "y"]}, "E": {"type": "int"}})
    restored, kept = autosave.apply({"A": 2.5, "B": 3, "C": 1.5, "D": 1.0, "E": "fast"}, pvs)
    assert kept == {"A": 2, "B": 3.0, "C": "1.5", "D": "y"}  # float -> int truncates, as EPICS does
    assert {name: pv.initial_value() for name, pv in restored.inputs.items()} == \
        {"A": 2, "B": 3.0, "C": "1.5", "D": 1, "E": 0}
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "of E " in warning and "'fast' (str) to int: not a number" in warning
    converted = [r.getMessage() for r in caplog.records if "converted" in r.getMessage()]
    assert len(converted) == 3 and not any(" of B " in m for m in converted)  # 3 for a float is no change


def test_enum_saved_by_choice_name_numpy_as_plain_json():
    import numpy

    pvs = group(PVS)
    assert autosave.to_saved(pvs.inputs["MODE"], 1) == "fast"
    assert autosave.to_saved(pvs.inputs["TRACE"], numpy.array([1, 2, 3], dtype=numpy.int32)) == [1, 2, 3]
    assert type(autosave.to_saved(pvs.inputs["SETPOINT"], numpy.float64(2.5))) is float


@pytest.mark.parametrize("content, reason", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "a JSON object was expected"),
    (b'{"version": 2, "values": {}}', "format version 2"),
    (b'{"version": 1, "values": [1]}', "'values' should be an object"),
    (b'{"version": 1, "values": {}, "state": 3}', "'state' should be an object"),
])
def test_an_unusable_file_is_a_warning_and_moved_aside(tmp_path, caplog, content, reason):
    path = tmp_path / "p.json"
    path.write_bytes(content)
    assert autosave.load(path) == autosave.Saved()
    assert not path.exists() and (tmp_path / "p.json.bad").read_bytes() == content
    assert any(reason in r.getMessage() and r.levelname == "WARNING" for r in caplog.records), caplog.text


def test_reading_leaves_a_writers_temp_file_only_the_writer_removes_stale_ones_at_its_start(tmp_path, caplog):
    """A reader cannot tell a temp file a kill -9 left from a write between its fsync and its
    rename: ``load`` (the test's polls, the worker's start) leaves both; the file's writer
    removes the stale ones when it starts, before its first write."""
    caplog.set_level(logging.INFO, logger="iochost.worker")
    path = tmp_path / "p.json"
    write_atomically(path, autosave.encode({"SETPOINT": 1.0}, None))
    fd, held = tempfile.mkstemp(dir=tmp_path, prefix=f".{path.name}.", suffix=".tmp")  # as the writer names it
    with os.fdopen(fd, "wb") as in_flight:
        in_flight.write(autosave.encode({"SETPOINT": 2.0}, None))
        in_flight.flush()
        assert autosave.load(path).values == {"SETPOINT": 1.0}
        assert Path(held).exists()  # the writer's rename still has its file
    os.replace(held, path)  # ... and does it
    assert autosave.load(path).values == {"SETPOINT": 2.0}

    (tmp_path / ".p.json.abc.tmp").write_bytes(b"{")  # a write a kill -9 cut short
    assert autosave.load(path).values == {"SETPOINT": 2.0} and (tmp_path / ".p.json.abc.tmp").exists()
    saver = autosave.Autosaver(path, autosave.autosaved_inputs(group(PVS)), {"SETPOINT": 2.0})
    saver.start(lambda name: 3.0)
    assert not list(tmp_path.glob("*.tmp"))
    assert "removed 1 temp file(s) an interrupted write" in caplog.text
    saver.close()


def test_a_failed_write_is_retried_with_backoff_logged_once_per_streak(tmp_path, caplog):
    """A real failure root cannot bypass: a file where the autosave folder should be. The
    write is retried (with the values as they are by then) until the folder is back."""
    caplog.set_level(logging.INFO, logger="iochost.worker")
    folder = tmp_path / "autosave"
    path = folder / "p.json"
    folder.write_text("not a folder")
    values = {"SETPOINT": 1.0}
    saver = autosave.Autosaver(path, autosave.autosaved_inputs(group(PVS)), delay=0.01,
                               retry_first=0.01, retry_max=0.04)
    saver.start(values.__getitem__)
    saver.mark("SETPOINT")
    wait_for(lambda: saver.failed_writes >= 5, timeout=10, what="retries", sleep=time.sleep)
    failures = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelname == "ERROR", caplog.text
    assert str(path) in failures[0].getMessage() and "FileExistsError" in failures[0].getMessage()
    values["SETPOINT"] = 7.0  # changed while the writes fail: the retry saves the value of now
    folder.unlink()
    wait_for(lambda: "written again after" in caplog.text, timeout=10, what="the retried write", sleep=time.sleep)
    assert autosave.load(path).values == {"SETPOINT": 7.0} and saver.writes == 1

    shutil.rmtree(folder)  # a second streak: logged again
    folder.write_text("not a folder")
    attempts = saver.failed_writes
    saver.mark("SETPOINT")
    wait_for(lambda: saver.failed_writes >= attempts + 2, timeout=10, what="retries", sleep=time.sleep)
    assert sum("cannot write" in r.getMessage() for r in caplog.records) == 2
    saver.close()  # still failing: the stop says what is lost
    assert "the final write to" in caplog.text and saver.writes == 1


def test_missing_file_is_nothing_saved_and_a_file_reads_back(tmp_path):
    path = tmp_path / "sub" / "p.json"
    assert autosave.load(path) == autosave.Saved()
    write_atomically(path, autosave.encode({"B": 1, "A": "x"}, {"n": 3}))  # as the writer thread does
    assert autosave.load(path) == autosave.Saved(values={"A": "x", "B": 1}, state={"n": 3})
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "state" not in json.loads(autosave.encode({}, None))


def test_snapshot_results_that_cannot_be_saved():
    assert autosave.state_problem({"n": [1, "a", None]}) is None
    assert "not a dict" in autosave.state_problem([1])
    assert "not JSON" in autosave.state_problem({"f": object()})
    assert "not JSON" in autosave.state_problem({"f": float("nan")})


def test_a_burst_of_writes_is_one_write_and_close_flushes_it(tmp_path):
    pvs = group(PVS).inputs
    values = {"SETPOINT": 0.0}
    saver = autosave.Autosaver(tmp_path / "p.json", autosave.autosaved_inputs(group(PVS)), delay=3600)
    saver.start(values.__getitem__)
    for n in range(1000):
        values["SETPOINT"] = float(n)
        saver.mark("SETPOINT")
    saver.mark("SCRATCH")  # autosave: false: never saved
    assert saver.writes == 0  # still coalescing
    saver.close()
    assert saver.writes == 1
    assert autosave.load(tmp_path / "p.json").values == {"SETPOINT": 999.0}
    assert "SCRATCH" in pvs


def test_a_write_lands_after_the_debounce_from_the_writer_thread(tmp_path):
    path = tmp_path / "p.json"
    seen: list[str] = []

    def read(name: str) -> float:
        seen.append(threading.current_thread().name)
        return 5.0

    saver = autosave.Autosaver(path, autosave.autosaved_inputs(group(PVS)), {"MODE": "fast"}, delay=0.05)
    saver.start(read)
    saver.mark("SETPOINT")
    wait_for(path.exists, timeout=10, what="the debounced write", sleep=time.sleep)
    assert autosave.load(path).values == {"MODE": "fast", "SETPOINT": 5.0}
    assert seen == ["iochost-autosave"]
    saver.set_state({"n": 1})
    saver.close()
    assert autosave.load(path).state == {"n": 1}
    autosave.remove(path)
    assert list(tmp_path.iterdir()) == []


# -- a worker: the hooks -------------------------------------------------------------------

HOOKS = """
    from iochost import TaskBase

    class Hooks(TaskBase):
        def restore(self, state):
            self.restored = state
            if state.get("raise_in_restore"):
                raise RuntimeError("restore broke")

        def initialize(self):
            self.set_pv("GOT", str(getattr(self, "restored", None)))

        def execute(self):
            pass

        def cleanup(self):
            pass

        def snapshot(self):
            how = self.get_pv("HOW")
            if how == "raise":
                raise RuntimeError("snapshot broke")
            if how == "nonjson":
                return {"x": object()}
            return {"how": how, "raise_in_restore": how == "ok-then-restore-raises"}
"""

HOOKS_CONFIG = """
    parameters: {mode: triggered}
    pvs:
      inputs:
        HOW: {type: string, value: ok}
      outputs:
        GOT: {type: string, length: 200}
"""


def test_snapshot_and_restore_hooks_that_fail_are_logged_never_a_crash(processes, tmp_path, ca):
    plugin_dir = tmp_path / "hooks"
    plugin_dir.mkdir()
    (plugin_dir / "hooks.py").write_text(textwrap.dedent(HOOKS))
    (plugin_dir / "config.yaml").write_text(textwrap.dedent(HOOKS_CONFIG))
    save = tmp_path / "autosave" / "hooks.json"
    prefix = "IOCHTAUTO"

    def run(how: str | None, run_number: int) -> tuple[str, int, str]:
        worker = WorkerProcess(processes, tmp_path / f"run{run_number}", name="hooks",
                               plugin_dir=str(plugin_dir), module_file="hooks.py", class_name="Hooks",
                               prefix=f"{prefix}{run_number}", autosave_file=str(save))
        worker.wait_event(messages.Initialized)
        got = ca.caget(f"{prefix}{run_number}:HOOKS:GOT", datatype=ca.DBR_CHAR_STR, timeout=5)
        if how is not None:
            ca.caput(f"{prefix}{run_number}:HOOKS:HOW", how, wait=True, timeout=5)
            wait_for(lambda: autosave.load(save).values == {"HOW": how}, timeout=10, what="the put saved")
        code = worker.terminate(timeout=20)
        return got, code, worker.log()

    for number in range(3):
        (tmp_path / f"run{number}").mkdir()
    state = {"how": "ok-then-restore-raises", "raise_in_restore": True}
    got, code, _ = run("ok-then-restore-raises", 0)
    assert (got, code) == ("None", 0)
    assert autosave.load(save).state == state
    # restore() raises: logged, initialize() runs (with what restore set); snapshot() raises at the stop
    got, code, log = run("raise", 1)
    assert (got, code) == (str(state), 0)
    assert "restore() raised" in log and "restore broke" in log
    assert "snapshot() raised" in log and "snapshot broke" in log
    assert autosave.load(save) == autosave.Saved(values={"HOW": "raise"}, state=state)  # the state before
    # snapshot() returns what is not JSON: logged, the state before kept
    got, code, log = run("nonjson", 2)
    assert (got, code) == (str(state), 0)
    assert "snapshot() returned a dict that is not JSON" in log
    assert autosave.load(save) == autosave.Saved(values={"HOW": "nonjson"}, state=state)


def test_a_failed_write_of_a_ca_put_is_retried_until_the_value_lands(processes, tmp_path, ca):
    """The autosave folder is replaced by a file while the worker runs (a failure root cannot
    bypass): the write of an operator's put fails, is logged once, and lands by itself once
    the folder is back, with no further put and before the stop."""
    plugin_dir = tmp_path / "retry"
    plugin_dir.mkdir()
    (plugin_dir / "retry.py").write_text(textwrap.dedent(HOOKS).replace("Hooks", "Retry"))
    (plugin_dir / "config.yaml").write_text(textwrap.dedent(HOOKS_CONFIG))
    folder = tmp_path / "autosave"
    folder.mkdir(mode=0o700)
    save, aside = folder / "retry.json", tmp_path / "autosave-aside"
    worker = WorkerProcess(processes, tmp_path, name="retry", plugin_dir=str(plugin_dir), module_file="retry.py",
                           class_name="Retry", prefix="IOCHTRETRY", autosave_file=str(save))
    worker.wait_event(messages.Initialized)
    folder.rename(aside)
    folder.write_text("not a folder")
    ca.caput("IOCHTRETRY:RETRY:HOW", "kept", wait=True, timeout=5)
    failed = worker.wait_event(messages.Log, lambda m: "autosave: cannot write" in m.message)
    assert str(save) in failed.message and failed.level == "ERROR"
    folder.unlink()
    aside.rename(folder)
    wait_for(lambda: save.exists() and autosave.load(save).values == {"HOW": "kept"}, timeout=30,
             what="the retried write")
    assert worker.proc.poll() is None  # landed while it runs, not by the final write of the stop
    worker.wait_event(messages.Log, lambda m: "written again after" in m.message, timeout=5)
    assert sum("autosave: cannot write" in line for line in worker.log().splitlines()) == 1
    assert worker.terminate(timeout=20) == 0


def test_iochost_run_autosave_flag_keeps_values_across_runs(processes, tmp_path, ca):
    plugin_dir = tmp_path / "plain"
    plugin_dir.mkdir()
    (plugin_dir / "plain.py").write_text(textwrap.dedent(HOOKS).replace("Hooks", "Plain"))
    (plugin_dir / "config.yaml").write_text(textwrap.dedent(HOOKS_CONFIG))
    save = tmp_path / "saved" / "plain.json"

    def run(prefix: str) -> subprocess.Popen:
        return processes.start([sys.executable, "-m", "iochost", "run", str(plugin_dir), "--prefix", prefix,
                                "--autosave", str(save)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    first = run("IOCHTRUN0")
    wait_for(lambda: ca.caget("IOCHTRUN0:PLAIN:HOW", timeout=1) == "ok", timeout=20, what="iochost run serving")
    ca.caput("IOCHTRUN0:PLAIN:HOW", "again", wait=True, timeout=5)
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=15) == 0
    assert autosave.load(save) == autosave.Saved(values={"HOW": "again"},
                                                 state={"how": "again", "raise_in_restore": False})
    second = run("IOCHTRUN1")
    wait_for(lambda: ca.caget("IOCHTRUN1:PLAIN:HOW", timeout=1) == "again", timeout=20, what="the value back")
    second.send_signal(signal.SIGINT)
    assert second.wait(timeout=15) == 0


# -- the daemon: every way of restarting ---------------------------------------------------

KEEPER = """
    from iochost import TaskBase

    class Keeper(TaskBase):
        def restore(self, state):
            self.starts = state["starts"]

        def initialize(self):
            self.starts = getattr(self, "starts", 0) + 1
            self.set_pv("STARTS", self.starts)

        def execute(self):
            pass

        def cleanup(self):
            pass

        def on_input(self, name, value):
            if name == "SETPOINT":
                self.set_pv("ECHO", value)
                self.set_pv("WRITES", self.get_pv("WRITES") + 1)  # an input the plugin writes

        def snapshot(self):
            return {"starts": self.starts}
"""

KEEPER_CONFIG = """
    parameters: {mode: triggered}
    pvs:
      inputs:
        SETPOINT: {type: float, value: 1.0, low: 0, high: 100}
        MODE: {type: enum, choices: [slow, fast], value: slow}
        NOTE: {type: string, value: none}
        WRITES: {type: int, value: 0}
        SCRATCH: {type: int, value: 7, autosave: false}
      outputs:
        ECHO: {type: float}
        STARTS: {type: int}
"""


def _saved(data_dir: Path) -> dict:
    try:
        return json.loads((data_dir / "autosave" / "keeper.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _running(api, name: str, not_pid: int | None = None) -> dict:
    def check():
        record = api.get(f"/plugins/{name}").json()
        return record if record["state"] == "running" and record["pid"] not in (None, not_pid) else None
    return wait_until(check, timeout=60, what=f"{name} running (not pid {not_pid})")


def test_values_survive_restart_crash_daemon_restart_and_go_with_delete(tmp_path, repos, ca, pva, processes):
    data = tmp_path / "data"
    repo = plugin_repo(repos, "keeper", KEEPER, KEEPER_CONFIG)
    args = ("--backoff-initial", "0.5", "--heartbeat-interval", "0.5")
    pv = "IOCHT:KEEPER:"
    names = ["SETPOINT", "MODE", "NOTE", "WRITES", "SCRATCH", "STARTS"]

    def read(starts: int) -> dict:
        """The PVs over CA once the worker that started ``starts`` times serves them, read by
        a new client process: this one's libca would wait out its reconnect backoff."""
        client = EpicsClient(processes, tmp_path, dict(os.environ))
        try:
            client_read = lambda: {n[len(pv):]: v for n, v in client.get([pv + n for n in names]).items()}  # noqa: E731
            wait_until(lambda: client_read()["STARTS"] == starts, timeout=30, what=f"STARTS={starts}")
            return client_read()
        finally:
            client.close()

    def values_back(starts: int) -> None:
        assert read(starts) == {"SETPOINT": 42.5, "MODE": 1, "NOTE": "kept", "WRITES": 1, "SCRATCH": 7,
                                "STARTS": starts}

    first = Daemon(data, *args)
    with first.serving():
        with first.client() as api:
            add(api, "keeper", repo)
            assert stat.S_IMODE((data / "autosave").stat().st_mode) == 0o700
            ca.caput(pv + "SETPOINT", 42.5, wait=True, timeout=5)
            ca.caput(pv + "MODE", 1, wait=True, timeout=5)
            ca.caput(pv + "SCRATCH", 99, wait=True, timeout=5)
            pva.put(pv + "NOTE", "kept", timeout=5)
            wait_until(lambda: _saved(data).get("values") == {"SETPOINT": 42.5, "MODE": "fast", "NOTE": "kept",
                                                              "WRITES": 1},
                       timeout=15, what="the writes in the autosave file")

            # (a) a REST restart: values back, the snapshot handed to restore()
            assert api.post("/plugins/keeper/restart").status_code == 200
            values_back(starts=2)
            assert _saved(data)["state"] == {"starts": 1}  # saved by the stop

            # (b) kill -9 of the worker: no snapshot at its end, the values written before are back
            pid = _running(api, "keeper")["pid"]
            os.kill(pid, signal.SIGKILL)
            _running(api, "keeper", not_pid=pid)
            values_back(starts=2)  # the state of the last clean stop (1) + 1: the crash saved none
            assert _saved(data)["state"] == {"starts": 1}

    # (c) a daemon restart on the same data dir: the SIGTERM stop saved values and snapshot
    assert _saved(data)["state"] == {"starts": 2}
    second = Daemon(data, *args)
    with second.serving():
        with second.client() as api:
            _running(api, "keeper")
            values_back(starts=3)

            # a saved value that no longer fits is dropped with a warning, and the worker runs
            assert api.post("/plugins/keeper/stop").status_code == 200
            saved = _saved(data)
            saved["values"]["SETPOINT"] = 500.0
            (data / "autosave" / "keeper.json").write_text(json.dumps(saved))
            assert api.post("/plugins/keeper/start").status_code == 200
            _running(api, "keeper")
            values = read(starts=4)
            assert (values["SETPOINT"], values["MODE"], values["WRITES"]) == (1.0, 1, 1)  # the others kept
            lines = api.get("/plugins/keeper/logs").json()["lines"]
            assert any("SETPOINT" in line and "outside low..high" in line for line in lines), lines

            # a corrupt file: a warning, kept aside as .bad, config values, the worker runs
            assert api.post("/plugins/keeper/stop").status_code == 200
            (data / "autosave" / "keeper.json").write_text("{torn")
            assert api.post("/plugins/keeper/start").status_code == 200
            _running(api, "keeper")
            assert read(starts=1) == {"SETPOINT": 1.0, "MODE": 0, "NOTE": "none", "WRITES": 0, "SCRATCH": 7,
                                      "STARTS": 1}
            assert (data / "autosave" / "keeper.json.bad").read_text() == "{torn"
            lines = api.get("/plugins/keeper/logs").json()["lines"]
            assert any("is unusable" in line and "not JSON" in line for line in lines), lines

            # DELETE takes the file (and the .bad copy) with the plugin
            client = EpicsClient(processes, tmp_path, dict(os.environ))
            assert client.put({pv + "SETPOINT": 3.0}, timeout=10) == {pv + "SETPOINT": True}
            client.close()
            wait_until(lambda: (data / "autosave" / "keeper.json").exists(), timeout=15, what="a new file")
            assert api.delete("/plugins/keeper").status_code == 200
            assert list((data / "autosave").iterdir()) == []


SAVES_THEN_DIES = """
    import os, time
    from pathlib import Path
    from iochost import TaskBase

    class Dies(TaskBase):
        def initialize(self):
            self.set_pv("WRITES", 5)  # saved by the worker within its debounce
            data_dir = next(p for p in Path(__file__).resolve().parents if (p / "autosave").is_dir())
            saved = data_dir / "autosave" / "keepbad.json"
            deadline = time.monotonic() + 10
            while not saved.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            print("autosave file present:", saved.exists(), flush=True)
            os._exit(3)

        def execute(self):
            pass

        def cleanup(self):
            pass
"""


def test_a_failed_add_leaves_no_autosave_file(api, daemon, repos):
    repo = plugin_repo(repos, "keepbad", SAVES_THEN_DIES, KEEPER_CONFIG, module="dies")
    response = api.post("/plugins", json={"name": "keepbad", "git_url": repo.url})
    assert response.status_code == 502 and response.json()["code"] == "WORKER_START_FAILED", response.text
    assert "autosave file present: True" in response.text  # the worker had written it
    wait_until(lambda: api.get("/plugins/keepbad").status_code == 404, timeout=30, what="the failed add gone")
    assert not list((daemon.data_dir / "autosave").glob("keepbad*"))
