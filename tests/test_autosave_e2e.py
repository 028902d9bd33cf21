"""Values that survive restarts (autosave), end to end: real workers and a real daemon with plugins from file:// git
repositories, written over CA and PVA; snapshot and restore hooks that fail, failed writes retried, `iochost run
--autosave`, values kept across restart, crash and daemon restart, and removed with the plugin.

The pure parts (what is saved and restored, the writer) are in test_autosave.py.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from client_harness import EpicsClient
from conftest import wait_for
from daemon_harness import Daemon, add, wait_until
from gitrepos import plugin_repo
from iochost.contract import messages
from iochost.worker import autosave
from worker_harness import StandaloneWorker

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


@pytest.mark.slow
def test_snapshot_and_restore_hooks_that_fail_are_logged_never_a_crash(processes, tmp_path, ca):
    plugin_dir = tmp_path / "hooks"
    plugin_dir.mkdir()
    (plugin_dir / "hooks.py").write_text(textwrap.dedent(HOOKS))
    (plugin_dir / "config.yaml").write_text(textwrap.dedent(HOOKS_CONFIG))
    save = tmp_path / "autosave" / "hooks.json"
    prefix = "IOCHTAUTO"

    def run(how: str | None, run_number: int) -> tuple[str, int, str]:
        worker = StandaloneWorker(processes, tmp_path / f"run{run_number}", name="hooks",
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


@pytest.mark.slow
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
    worker = StandaloneWorker(processes, tmp_path, name="retry", plugin_dir=str(plugin_dir), module_file="retry.py",
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_failed_add_leaves_no_autosave_file(api, daemon, repos):
    repo = plugin_repo(repos, "keepbad", SAVES_THEN_DIES, KEEPER_CONFIG, module="dies")
    response = api.post("/plugins", json={"name": "keepbad", "git_url": repo.url})
    assert response.status_code == 502 and response.json()["code"] == "WORKER_START_FAILED", response.text
    assert "autosave file present: True" in response.text  # the worker had written it
    wait_until(lambda: api.get("/plugins/keepbad").status_code == 404, timeout=30, what="the failed add gone")
    assert not list((daemon.data_dir / "autosave").glob("keepbad*"))

