"""Values that survive restarts (autosave): the pure parts alone, without processes: what is
restored and what is a misfit, the file's format, the writer's debounce, retries and temp files.
The end-to-end tests (real workers and daemon, restarted every way) are in test_autosave_e2e.py."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_for
from iochost import autosave_files
from iochost.config import PVGroup
from iochost.durable import write_atomically
from iochost.worker import autosave

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
    autosave_files.remove(path)
    assert list(tmp_path.iterdir()) == []

