"""Failures a user can see (issue 28), without a daemon: the contract carries an exception's whole text up to its
bound, the lifecycle fails an add, retries a restart and rolls an upgrade back with the exception and its frames, a
status error is a trouble until it clears, and a traceback shows the plugin's frames only.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from iochost.contract import messages as m
from iochost.contract.exits import WorkerExit
from iochost.errors import ErrorCode
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.states import State as S
from iochost.worker.plugin_traceback import plugin_traceback
from test_failures import frames
from test_lifecycle import (
    PLUGIN_DIR,
    exited,
    feed,
    fresh,
    new_revision,
    of,
    running,
    serving_at_old_commit,
    starting,
    worker,
)

# -- the pure parts: the contract's bounds, the lifecycle's decisions, the traceback filter ----------

RAISED = m.Initialized(ok=False, exception="KeyError", message="'scal'",
                       traceback='Traceback (most recent call last):\n  File "/p/scaler.py", line 9, in initialize\n'
                                 "    self.gain = gain(self.parameters)\nKeyError: 'scal'\n")


def test_the_contract_carries_the_whole_text_up_to_its_bound() -> None:
    """A MESSAGE of any length up to MAX_MESSAGE_CHARS travels whole; a longer one (from any
    peer: the supervisor decodes with the same models) is cut, saying so; a traceback keeps
    its end, where the exception is."""
    whole = "RuntimeError: " + "x" * (m.MAX_MESSAGE_CHARS - 14)
    decoder = m.event_decoder()
    assert decoder.feed(m.encode(m.StatusChanged(status="ERROR", message=whole)))[0].message == whole
    line = json.dumps({"type": "status", "status": "ERROR", "message": whole + "yyy"}).encode() + b"\n"
    [cut] = decoder.feed(line)  # as a worker that bypasses the models would send it
    assert len(cut.message) == m.MAX_MESSAGE_CHARS and cut.message.startswith("RuntimeError: xxx")
    assert cut.message.endswith(f"[{len(whole) + 3} characters, the rest left out]")
    long_traceback = "frame\n" * 5000 + "KeyError: 'scal'"
    sent = m.Initialized(ok=False, exception="KeyError", message="'scal'", traceback=long_traceback)
    assert len(sent.traceback) == m.MAX_TRACEBACK_CHARS and sent.traceback.endswith("KeyError: 'scal'")


def test_an_add_whose_initialize_raises_fails_with_the_exception_and_its_frames() -> None:
    lc = fresh()
    feed(lc, t.AddRequested())
    feed(lc, t.Prepared(lc.entry, PLUGIN_DIR, ["IOCHOST:P:STATUS"]))
    feed(lc, t.Spawned(lc.gen, 100))
    worker(lc, m.Ready(pid=100, pvs=["IOCHOST:P:STATUS"]))
    worker(lc, m.StatusChanged(status="ERROR", message="KeyError: 'scal'"))
    assert worker(lc, RAISED) == [] and lc.state == S.STARTING and lc.adding  # never "running"
    assert lc.trouble is None  # an add in progress: its caller hears how it ends
    effects = exited(lc, WorkerExit.INIT_FAILED)
    error = lc.add_error
    assert error is not None and error.code == ErrorCode.WORKER_START_FAILED
    assert error.message == "'p' did not start: initialize() raised KeyError: 'scal'"
    assert error.details == {"exception": {"type": "KeyError", "message": "'scal'"},
                             "log_tail": RAISED.traceback.splitlines()}
    assert lc.state == S.FAILED and of(effects, t.Teardown)


def test_a_restart_whose_initialize_raises_is_retried_with_backoff() -> None:
    """A restored plugin (or any start but an add's or an upgrade's) stays, crashed, with the
    error; each retry that fails again backs off longer and turns it crash_looping."""
    lc = starting()
    feed(lc, t.Spawned(lc.gen, 100))
    worker(lc, RAISED)
    effects = exited(lc, WorkerExit.INIT_FAILED, now=5.0)
    assert lc.state == S.CRASHED and lc.last_error == "start failed: initialize() raised KeyError: 'scal'"
    assert of(effects, t.Later) == [t.Later(1.0, t.RestartDue(lc.gen))] and not of(effects, t.Teardown)
    assert lc.trouble == "crashed" and lc.registered
    feed(lc, t.RestartDue(lc.gen))
    assert lc.state == S.STARTING and lc.trouble == "crashed" and lc.init_failure is None
    feed(lc, t.Spawned(lc.gen, 101))
    worker(lc, RAISED)
    effects = exited(lc, WorkerExit.INIT_FAILED, now=7.0)
    assert of(effects, t.Later) == [t.Later(2.0, t.RestartDue(lc.gen))]
    assert lc.trouble == "crash_looping" and lc.restarts == 2


def test_an_upgrade_whose_initialize_raises_rolls_back_with_the_exception_and_its_frames() -> None:
    lc = serving_at_old_commit()
    feed(lc, t.UpgradeRequested())
    feed(lc, t.UpgradePrepared(new_revision(lc)))
    exited(lc, 0)
    feed(lc, t.Swapped(True, PLUGIN_DIR))
    feed(lc, t.Spawned(lc.gen, 200))
    worker(lc, m.Ready(pid=200, pvs=new_revision(lc).pvs))
    assert not of(worker(lc, RAISED), t.Kill)  # it exits by itself: no stack dump, no SIGKILL
    effects = exited(lc, WorkerExit.INIT_FAILED)
    assert of(effects, t.SwapRevision) == [t.SwapRevision(back=True)]
    error = lc.upgrade.error if lc.upgrade is not None else None
    assert error is not None and error.code == ErrorCode.UPGRADE_FAILED
    assert "did not start: initialize() raised KeyError: 'scal'; rolled back to aaaaaaaaaaaa" in error.message
    assert error.details["exception"] == {"type": "KeyError", "message": "'scal'"}
    assert error.details["log_tail"] == RAISED.traceback.splitlines()


def test_status_error_is_a_trouble_with_the_whole_message_until_it_clears() -> None:
    lc = running()
    whole = "RuntimeError: " + "the beam current monitor " * 10
    worker(lc, m.StatusChanged(status="ERROR", message=whole))
    assert (lc.state, lc.trouble, lc.last_error, lc.message) == (S.RUNNING, "status_error", whole, whole)
    assert lc.degraded
    worker(lc, m.StatusChanged(status="RUN", message="Running (recovered)"))
    assert (lc.trouble, lc.last_error) == (None, whole)  # the last error stays on the record
    job = running("job")
    worker(job, m.StatusChanged(status="FAILED", message=""))
    assert (job.trouble, job.last_error) == ("status_error", "STATUS FAILED")


def test_the_traceback_shows_the_plugins_frames_only(tmp_path: Path) -> None:
    """Library frames (json's) and the caller's are left out, for a chained exception too;
    the exception lines stay."""
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    (plugin_dir / "reader.py").write_text(textwrap.dedent("""
        import json

        def read(text):
            try:
                return json.loads(text)
            except ValueError as exc:
                raise RuntimeError("config unreadable") from exc
    """))
    import importlib.util

    spec = importlib.util.spec_from_file_location("reader_under_test", plugin_dir / "reader.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(RuntimeError) as raised:
        module.read("{")
    lines = plugin_traceback(raised.value, plugin_dir).splitlines()
    assert frames(lines) == [("reader.py", 6, "read"), ("reader.py", 8, "read")], lines
    assert lines[-1] == "RuntimeError: config unreadable"
    assert any(line.startswith("json.decoder.JSONDecodeError: Expecting property name") for line in lines), lines
    everything = plugin_traceback(raised.value, None).splitlines()
    assert {"decoder.py", "__init__.py", "test_failures_in_lifecycle.py"} <= {name for name, _, _ in frames(everything)}

