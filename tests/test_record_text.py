"""Strings are the bytes their record holds, and autosave never stops a plugin (issue 29,
items 1, 2, 3 and 5): the pure rules (``iochost.record_text``, the autosave file's form)
with hypothesis, then real workers and a real daemon written over CA (caproto, cothread)
and PVA (p4p), restarted; a table of corrupt autosave files; a full disk (a small tmpfs)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Processes, wait_for
from daemon_harness import Daemon, add, wait_until
from gitrepos import plugin_repo
from iochost.config import PVDef, PVGroup
from iochost.contract import messages
from iochost.record_text import fit_bytes, fit_text, held_text, is_utf8, readable, text_bytes
from iochost.worker import autosave
from sample_plugins import make_plugin
from small_disk import fill, small_disk  # noqa: F401 - small_disk: a fixture
from test_autosave_e2e import _running
from worker_harness import StandaloneWorker

# -- the pure rules ----------------------------------------------------------------------------


def test_what_records_keep_of_over_long_and_non_utf8_writes() -> None:
    assert text_bytes(held_text(b"caf\xe9")) == b"caf\xe9"  # Latin-1 from a CA client, kept
    assert readable(held_text(b"caf\xe9")) == "caf\ufffd"  # ... shown as softioc shows it
    assert fit_text("é" * 20, 39) == "é" * 19  # 40 bytes: the 20th é does not fit whole
    assert fit_bytes(b"\xc3\xa9" * 19 + b"\xc3", 39) == b"\xc3\xa9" * 19  # what EPICS kept of that PVA put
    assert fit_bytes(b"\xe9" * 45, 39) == b"\xe9" * 39  # not UTF-8: EPICS's byte prefix
    assert fit_bytes(b"ab\0cd", 39) == b"ab"  # a C string ends at its NUL
    assert text_bytes("a\ud800b") == "a\ufffdb".encode()  # a surrogate that stands for no byte


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_any_bytes_round_trip_through_text(data: bytes) -> None:
    data = data.replace(b"\0", b"")
    text = held_text(data)
    assert text_bytes(text) == data
    assert is_utf8(text) == _valid_utf8(data)
    assert readable(text) == data.decode("utf-8", "replace")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.binary(max_size=60).map(held_text)), st.integers(1, 50))
def test_any_text_fits_its_record_as_its_longest_prefix_cut_between_characters(text: str, size: int) -> None:
    whole = text_bytes(text).split(b"\0", 1)[0]
    fitted = text_bytes(fit_text(text, size))
    assert len(fitted) <= size and whole.startswith(fitted)
    if len(whole) < size:
        assert fitted == whole
    elif _valid_utf8(whole[:size + 3]) or _valid_utf8(whole):  # UTF-8 text: never half a character
        assert _valid_utf8(fitted) and len(fitted) >= size - 3
    if not _valid_utf8(whole[:size]) and not _valid_utf8(fitted):  # bytes: EPICS's prefix
        assert fitted == whole[:size]


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


STRING = PVDef(type="string")
LONG = PVDef(type="string", length=60)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60))
def test_any_string_saved_and_read_back_is_the_same_bytes(data: bytes) -> None:
    pv = STRING if len(data.replace(b"\0", b"")) <= 39 else LONG
    text = held_text(data.replace(b"\0", b""))
    file = autosave.encode({"S": autosave.to_saved(pv, text)}, None)
    saved = autosave.parse(file).values["S"]
    assert isinstance(saved, str) == _valid_utf8(text_bytes(text))  # UTF-8 is a plain JSON string
    pvs = PVGroup.model_validate({"inputs": {"S": pv.model_dump(exclude_unset=True)}})
    restored, kept = autosave.apply({"S": saved}, pvs)
    assert text_bytes(restored.inputs["S"].initial_value()) == text_bytes(text)
    assert kept == {"S": saved}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parse_of_any_bytes_is_a_file_or_a_reason(data: bytes) -> None:
    try:
        saved = autosave.parse(data)
    except autosave.AutosaveFileError:
        return
    assert isinstance(saved.values, dict)


def test_a_number_beyond_a_floats_range_is_refused_not_made_infinity(caplog: Any) -> None:
    saved = autosave.parse(b'{"version": 1, "values": {"F": 1e400, "G": -Infinity, "S": -1e999}}')
    pvs = PVGroup.model_validate({"inputs": {"F": {"type": "float", "value": 1.5},
                                             "G": {"type": "float", "value": 1.5},
                                             "S": {"type": "string", "value": "s"}}})
    applied, kept = autosave.apply(saved.values, pvs)
    assert kept == {"G": float("-inf"), "S": "-1e999"}  # what the writer saves as -Infinity is that
    assert applied.inputs["F"].value == 1.5
    assert ("saved value '1e400' of F no longer fits it (cannot convert '1e400' (str) to float: out of the "
            "range of a float)") in caplog.text


def test_a_file_that_cannot_be_read_is_set_aside_with_the_reason(tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "p.json"
    path.mkdir()  # IsADirectoryError: an OSError of reading, not of parsing
    assert autosave.load(path) == autosave.Saved()
    assert not path.exists() and (tmp_path / "p.json.bad").is_dir()
    assert "is unusable: IsADirectoryError" in caplog.text and "moved to" in caplog.text


# -- a real daemon: every write path, then restarts ---------------------------------------------

TEXTS = """
    from iochost import TaskBase

    class Texts(TaskBase):
        def initialize(self):
            pass

        def execute(self):
            self.set_pv("MINE", "ü" * 30)  # 60 bytes into a 39-byte string: cut, never a crash
            self.set_pv("RAW", b"\\xff\\xfe ok")  # bytes, kept as they are
            self.set_alarm("T", "MINOR")  # rewrites T's 39 Latin-1 bytes as they are

        def cleanup(self):
            pass

        def on_input(self, name, value):
            self.logger.info("on_input %s %r", name, value)
"""

TEXTS_CONFIG = """
    parameters: {mode: triggered}
    pvs:
      inputs:
        S: {type: string, value: s0}
        T: {type: string, value: t0}
        U: {type: string, value: u0}
        V: {type: string, value: v0}
        L: {type: string, length: 60, value: l0}
        M: {type: string, length: 60, value: m0}
        MINE: {type: string, value: mine0}
        RAW: {type: string, value: raw0}
"""

# what each input holds after the writes, byte for byte, and after every restart
HELD = {
    "S": b"caf\xe9",  # caproto, Latin-1
    "T": b"\xe9" * 39,  # caproto, 45 Latin-1 bytes: EPICS keeps 39
    "U": "é".encode() * 19,  # p4p, 20 é (40 bytes): 19 whole ones
    "V": "ü".encode() * 19 + b"!",  # cothread, 39 bytes of UTF-8: the whole field
    "L": "é".encode() * 30,  # p4p, 40 é (80 bytes) into a 60-byte long string
    "M": b"na\xefve\xff",  # caproto, a char array into a long string
    "MINE": "ü".encode() * 19,  # the plugin's set_pv of 30 ü
    "RAW": b"\xff\xfe ok",  # the plugin's set_pv of bytes
}


def _held(name: str) -> bytes:
    """The bytes a PV holds, read by a new caproto connection (no client cache in the way)."""
    from caproto.sync.client import read

    data = read(name, timeout=5, repeater=False).data
    raw = data.tobytes() if isinstance(data, numpy.ndarray) else data[0]  # a char array, or DBR_STRING
    return raw.split(b"\0", 1)[0]


def _all_held(prefix: str) -> dict[str, bytes]:
    return {name: _held(prefix + name) for name in HELD}


@pytest.mark.slow
def test_non_utf8_and_over_long_strings_over_ca_and_pva_come_back_byte_for_byte(tmp_path: Path, repos: Path,
                                                                                ca: Any, pva: Any) -> None:
    from caproto.sync.client import write

    data = tmp_path / "data"
    repo = plugin_repo(repos, "texts", TEXTS, TEXTS_CONFIG)
    pv = "IOCHT:TEXTS:"
    saved = data / "autosave" / "texts.json"

    def file_values() -> dict[str, Any]:
        return autosave.load(saved).values if saved.exists() else {}

    first = Daemon(data, "--backoff-initial", "0.5", "--heartbeat-interval", "0.5")
    with first.serving():
        with first.client() as api:
            add(api, "texts", repo)
            write(pv + "S", [b"caf\xe9"], notify=True, timeout=5, repeater=False)
            write(pv + "T", [b"\xe9" * 45], notify=True, timeout=5, repeater=False)
            pva.put(pv + "U", "é" * 20, timeout=5)
            ca.caput(pv + "V", "ü" * 19 + "!", wait=True, timeout=5)  # libca refuses over 39 bytes itself
            pva.put(pv + "L", "é" * 40, timeout=5)
            write(pv + "M", b"na\xefve\xff\0", notify=True, timeout=5, repeater=False)
            ca.caput(pv + "RUN", 1, wait=True, timeout=5)  # the plugin's own writes
            wait_until(lambda: len(file_values()) == len(HELD), timeout=20, what="every write saved")
            assert _all_held(pv) == HELD
            document = json.loads(saved.read_text())["values"]
            assert document["S"] == {"latin1": "caf\u00e9"} and document["U"] == "é" * 19  # UTF-8 as text
            lines = api.get("/plugins/texts/logs").json()["lines"]
            assert any("on_input S 'caf\ufffd'" in line for line in lines), lines  # shown as UTF-8
            assert any("on_input U '" + "é" * 19 + "'" in line for line in lines), lines
            assert not any("raised" in line for line in lines), lines  # execute()'s writes all held

            pid = _running(api, "texts")["pid"]
            assert api.post("/plugins/texts/restart").status_code == 200  # a worker restart
            _running(api, "texts", not_pid=pid)
            wait_until(lambda: _all_held(pv) == HELD, timeout=30, what="the values after the restart")

    second = Daemon(data, "--backoff-initial", "0.5", "--heartbeat-interval", "0.5")  # a daemon restart
    with second.serving():
        with second.client() as api:
            pid = _running(api, "texts")["pid"]
            wait_until(lambda: _all_held(pv) == HELD, timeout=30, what="the values after the daemon restart")
            lines = api.get("/plugins/texts/logs").json()["lines"]
            assert not any("no longer fits" in line for line in lines), lines
            record = api.get("/plugins/texts").json()
            assert (record["state"], record["pid"]) == ("running", pid)  # the same worker: no crash loop


# -- a worker: corrupt autosave files ----------------------------------------------------------

PLAIN = """
    from iochost import TaskBase

    class Plain(TaskBase):
        def initialize(self):
            pass

        def execute(self):
            pass

        def cleanup(self):
            pass
"""

PLAIN_CONFIG = """
    parameters: {interval: 3600}
    pvs:
      inputs:
        A: {type: int, value: 1}
        F: {type: float, value: 1.5}
        S: {type: string, value: cfg}
        E: {type: enum, choices: [x, y], value: x}
"""
CONFIG_VALUES = {"A": 1, "F": 1.5, "S": "cfg", "E": 0}


def _file(values: str) -> bytes:
    return b'{"version": 1, "values": {' + values.encode() + b"}}"


GOOD = _file('"A": 5, "F": 2.5')
# content -> (set aside?, what the log says)
CORRUPT = {
    "empty": (b"", True, "not JSON"),
    "truncated": (GOOD[:-7], True, "not JSON"),
    "binary": (bytes(range(256)) * 4, True, "not JSON"),
    "5000 digits": (_file('"A": ' + "9" * 5000), True, "ValueError: Exceeds the limit"),
    "100000 deep": (_file('"A": ' + "[" * 100000 + "]" * 100000), True, "RecursionError"),
    "values a list": (b'{"version": 1, "values": [1]}', True, "'values' should be an object"),
    "state a number": (b'{"version": 1, "values": {"A": 5}, "state": 3}', True, "'state' should be an object"),
    "no version": (b'{"values": {"A": 5}}', True, "format version None"),
    "version true": (b'{"version": true, "values": {"A": 5}}', True, "format version True"),  # True == 1
    # beyond a float's range: json made it infinity, restored as such; now its text, refused
    "1e400": (_file('"F": 2.5, "A": 1e400'), False, "saved value '1e400' of A no longer fits it (cannot convert "
              "'1e400' (str) to int: out of the range of a float)"),
    # one value the record refuses: dropped with its reason, the others (F) restored
    "too long": (_file('"F": 2.5, "S": "' + "x" * 40 + '"'), False, "saved value 'xxxxxxxxxxxx...xxxxxxxxxxxxx' "
                 "of S no longer fits it (value: 40 bytes in UTF-8 (40 characters); the field holds 39 bytes"),
    "index past choices": (_file('"F": 2.5, "E": 7'), False,
                           "saved value 7 of E no longer fits it (cannot convert 7 (int) to enum (x, y): "
                           "index 7 is not one of 0..1)"),
    "NaN where int": (_file('"F": 2.5, "A": NaN'), False,
                      "saved value nan of A no longer fits it (cannot convert nan (float) to int: "
                      "nan is not an integer)"),
    "bytes not one char per byte": (_file('"F": 2.5, "S": {"latin1": "\\u0101"}'), False,
                                    "saved value {'latin1': 'ā'} of S no longer fits it ('latin1' text holds 'ā', "
                                    "which is not one byte)"),
    "an object where int": (_file('"F": 2.5, "A": {"x": 1}'), False,
                            "saved value {'x': 1} of A no longer fits it (cannot convert {'x': 1} (dict) to int: "
                            "a dict is not a value a PV holds)"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CORRUPT))
def test_a_corrupt_autosave_file_leaves_the_plugin_running_on_config_values(case: str, processes: Processes,
                                                                            tmp_path: Path, ca: Any) -> None:
    content, aside, reason = CORRUPT[case]
    plugin_dir = make_plugin(tmp_path, "plain", PLAIN, PLAIN_CONFIG)
    save = tmp_path / "autosave" / "plain.json"
    save.parent.mkdir(mode=0o700)
    save.write_bytes(content)
    prefix = f"IOCHTBAD{abs(hash(case)) % 10**6}"
    worker = StandaloneWorker(processes, tmp_path, name="plain", plugin_dir=str(plugin_dir), module_file="plain.py",
                           class_name="Plain", prefix=prefix, autosave_file=str(save))
    worker.wait_event(messages.Initialized, timeout=30)
    held = {name: ca.caget(f"{prefix}:PLAIN:{name}", timeout=10) for name in CONFIG_VALUES}
    assert held == (CONFIG_VALUES if aside else {**CONFIG_VALUES, "F": 2.5}), worker.log()
    assert reason in worker.log(), worker.log()
    bad = save.with_name("plain.json.bad")
    if aside:
        assert bad.read_bytes() == content and not save.exists()
        assert f"autosave file {save} is unusable" in worker.log()
    else:
        assert save.read_bytes() == content and not bad.exists()  # the file is fine; one value is not
    assert worker.proc.poll() is None
    assert worker.terminate(timeout=30) == 0


# -- a full disk: a failed write is retried until it lands, and outlives a kill -9 ----------------

FULL_CONFIG = """
    parameters: {interval: 3600}
    pvs:
      inputs:
        NOTE: {type: string, value: none}
        BIG: {type: string, length: 20000, value: small}
"""


def _autosaving_worker(processes: Processes, tmp_path: Path, plugin_dir: Path, class_name: str, save: Path,
                       number: int) -> StandaloneWorker:
    """The ``number``-th worker of plugin ``plugin_dir`` (its name is the directory's) with
    autosave file ``save``: a later one restores what an earlier one saved; prefix
    ``IOCHT<NAME><number>``, run directory ``tmp_path/run<number>``; initialized."""
    name = plugin_dir.name
    (tmp_path / f"run{number}").mkdir()
    worker = StandaloneWorker(processes, tmp_path / f"run{number}", name=name, plugin_dir=str(plugin_dir),
                           module_file=f"{name}.py", class_name=class_name,
                           prefix=f"IOCHT{name.upper()}{number}", autosave_file=str(save))
    worker.wait_event(messages.Initialized, timeout=30)
    return worker


@pytest.mark.slow
def test_a_write_on_a_full_disk_is_retried_until_it_lands_and_survives_kill_9(small_disk: Path, processes: Processes,
                                                                              tmp_path: Path, ca: Any) -> None:
    from caproto.sync.client import write

    plugin_dir = make_plugin(tmp_path, "full", PLAIN.replace("Plain", "Full"), FULL_CONFIG)
    save = small_disk / "autosave" / "full.json"

    def start(number: int) -> StandaloneWorker:
        return _autosaving_worker(processes, tmp_path, plugin_dir, "Full", save, number)

    first = start(0)
    pv = "IOCHTFULL0:FULL:"
    ca.caput(pv + "NOTE", "before", wait=True, timeout=5)
    wait_for(lambda: autosave.load(save).values == {"NOTE": "before"}, timeout=15, what="the first write")
    filler = fill(small_disk)  # a tmpfs on tmp_path/"data"
    os.truncate(filler, filler.stat().st_size - 4096)  # room for a page: the 10 kB file is cut off half-written
    # two puts within the debounce: one write, which fails; nothing is put after it
    write(pv + "BIG", b"b" * 10000 + b"\0", notify=True, timeout=5, repeater=False)
    ca.caput(pv + "NOTE", "newest", wait=True, timeout=5)
    failed = first.wait_event(messages.Log, lambda m: "autosave: cannot write" in m.message, timeout=15)
    assert "No space left on device" in failed.message and failed.level == "ERROR", failed.message
    assert autosave.load(save).values == {"NOTE": "before"}  # the file before the disk filled, whole
    filler.unlink()
    # retried within RETRY_MAX (10 s) of the space coming back, with no further put
    wait_for(lambda: autosave.load(save).values.get("NOTE") == "newest", timeout=30, what="the retried write")
    assert autosave.load(save).values == {"NOTE": "newest", "BIG": "b" * 10000}
    assert not list(save.parent.glob("*.tmp"))  # the half-written temp file was removed
    first.wait_event(messages.Log, lambda m: "written again after" in m.message, timeout=10)
    os.killpg(first.proc.pid, signal.SIGKILL)  # no final write: what landed is what comes back
    first.proc.wait(timeout=10)

    start(1)
    assert _held("IOCHTFULL1:FULL:NOTE") == b"newest"
    assert _held("IOCHTFULL1:FULL:BIG") == b"b" * 10000


# -- a string with a short `length`: a stringout of 39 bytes, its values kept to `length` --------

SHORT = """
    from iochost import TaskBase

    class Short(TaskBase):
        def initialize(self):
            pass

        def execute(self):
            self.set_pv("MINE", "ü" * 30)  # 60 bytes into a 10-byte string

        def cleanup(self):
            pass
"""

SHORT_CONFIG = """
    parameters: {mode: triggered}
    pvs:
      inputs:
        CA: {type: string, length: 10, value: ca0}
        PVA: {type: string, length: 10, value: pva0}
        MINE: {type: string, length: 10, value: mine0}
"""
SHORT_HELD = {"CA": b"\xe9" * 10, "PVA": "é".encode() * 5, "MINE": "ü".encode() * 5}


@pytest.mark.slow
def test_a_string_of_a_short_length_holds_no_more_and_keeps_it_across_kill_9(processes: Processes, tmp_path: Path,
                                                                             ca: Any, pva: Any) -> None:
    """``length: 10`` is a stringout of 39 bytes: every write (CA, PVA, set_pv) was kept to
    39, saved, and at the next start refused by the schema (10 bytes) and lost."""
    from caproto.sync.client import write

    plugin_dir = make_plugin(tmp_path, "short", SHORT, SHORT_CONFIG)
    save = tmp_path / "autosave" / "short.json"
    save.parent.mkdir(mode=0o700)

    def start(number: int) -> StandaloneWorker:
        return _autosaving_worker(processes, tmp_path, plugin_dir, "Short", save, number)

    first = start(0)
    pv = "IOCHTSHORT0:SHORT:"
    write(pv + "CA", [b"\xe9" * 20], notify=True, timeout=5, repeater=False)
    pva.put(pv + "PVA", "é" * 8, timeout=5)  # 16 bytes
    ca.caput(pv + "RUN", 1, wait=True, timeout=5)
    held = {name: _held(pv + name) for name in SHORT_HELD}
    wait_for(lambda: len(autosave.load(save).values) == len(SHORT_HELD), timeout=20, what="every write saved")
    assert {name: _held(pv + name) for name in SHORT_HELD} == SHORT_HELD, (held, first.log())
    assert "SHORT:CA: an operator's write of 20 bytes is kept as its first 10 bytes" in first.log()
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)

    second = start(1)
    assert {name: _held(f"IOCHTSHORT1:SHORT:{name}") for name in SHORT_HELD} == SHORT_HELD, second.log()
    assert "no longer fits" not in second.log()
    assert second.terminate(timeout=30) == 0
