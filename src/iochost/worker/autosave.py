"""Values that survive restarts: the worker's autosave file, read at start, written on change.

What is saved: every declared *input* (``autosave:`` not false) that an operator (CA/PVA
put) or the plugin itself wrote, plus what the plugin's ``snapshot()`` returned at its last
stop. One JSON file per plugin, ``{"version": 1, "values": {...}, "state": {...}}``, in
``DATA_DIR/autosave/NAME.json``; keyed by name, so a restart, a crash, a daemon restart and
an upgrade all find it, and a delete removes it.

At start, before the records exist, each saved value is checked against the PV as declared
*now* by the config schema itself (``PVDef`` with that value): a PV whose limits, type or
choices changed so that the value no longer fits starts at its config value, with a
warning naming PV, value and reason, and the others are restored. A file that cannot be
read or decoded (whatever the exception: a number of 5000 digits, JSON nested 100 000 deep,
a wrong shape) is a warning, moved aside to ``NAME.json.bad`` for the operator; the plugin
starts at its config values.

Strings are saved as the bytes their record holds (``iochost.record_text``): UTF-8 text as a
JSON string; a value whose bytes are not all UTF-8 (a CA client's Latin-1) as
``{"latin1": TEXT}``, each byte the Latin-1 character of that code, so it comes back byte for
byte.

Writes are atomic (temp file in the same directory, fsync, rename, fsync of the directory)
and debounced: a burst of puts is coalesced into one write per ``delay``, all from one
thread of their own, so neither cothread's dispatcher nor the plugin thread ever waits on
the disk. A write that fails (the disk full, the folder gone) is retried with backoff until
it succeeds or the plugin stops. The writer, at its start, is the one that removes temp
files a killed write left; reading never touches them. Nothing here imports softioc: the
fork server preloads the worker modules.
"""

from __future__ import annotations

import json
import logging
import os
import reprlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from iochost.autosave_files import bad_path
from iochost.config import PVDef, PVGroup
from iochost.config.issues import issues_from_pydantic
from iochost.durable import remove_stale_temps, write_atomically
from iochost.record_text import held_text, is_utf8, text_bytes
from iochost.worker import convert

log = logging.getLogger("iochost.worker")

FORMAT_VERSION = 1
BYTES_KEY = "latin1"  # {"latin1": text}: a string's bytes that are not all UTF-8, one char per byte
DEBOUNCE = 0.3  # seconds writes are coalesced over; a put is on disk this long after it
FLUSH_TIMEOUT = 5.0  # longest the stop waits for the final write
RETRY_FIRST = 0.5  # a failed write is tried again after this, then twice as long each time
RETRY_MAX = 10.0  # ... up to this: a full disk costs one small write attempt per 10 s


@dataclass
class Saved:
    """What an autosave file held: values by short PV name, and the plugin's snapshot."""

    values: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] | None = None


class AutosaveFileError(ValueError):
    """The file is not an autosave file this iochost reads."""


def autosaved_inputs(pvs: PVGroup) -> dict[str, PVDef]:
    """The declared inputs whose values are kept (``autosave:`` defaults to true; a wired input
    takes its link's value, never an old one)."""
    return {name: pv for name, pv in pvs.inputs.items() if pv.autosave and not pv.wired}


def parse(data: bytes) -> Saved:
    """The content of an autosave file; AutosaveFileError says what is wrong with it."""
    try:
        document = json.loads(data, parse_float=_json_float)
    except Exception as exc:  # noqa: BLE001 - JSONDecodeError, ValueError (int digits), RecursionError, ...
        raise AutosaveFileError(f"not JSON ({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(document, dict):
        raise AutosaveFileError(f"a JSON object was expected, found {type(document).__name__}")
    version = document.get("version")
    if type(version) is not int or version != FORMAT_VERSION:  # true == 1 and 1.0 == 1 in Python, not here
        raise AutosaveFileError(f"format version {version!r}, this iochost reads {FORMAT_VERSION}")
    values = document.get("values", {})
    if not isinstance(values, dict):
        raise AutosaveFileError(f"'values' should be an object, found {type(values).__name__}")
    state = document.get("state")
    if state is not None and not isinstance(state, dict):
        raise AutosaveFileError(f"'state' should be an object, found {type(state).__name__}")
    return Saved(values=values, state=state)


def _json_float(text: str) -> float | str:
    """A JSON number with a fraction or exponent: a float, or, when it is beyond a float's
    range (``1e400``, which json makes infinity), its text, which the PV's conversion refuses
    as ``convert`` refuses that text from anyone (the writer saves infinity as ``Infinity``)."""
    number = float(text)
    return number if number not in (float("inf"), float("-inf")) else text


def _first_line(exc: BaseException, limit: int = 500) -> str:
    """An exception's message for a log line: its first line, bounded."""
    lines = str(exc).splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[:limit] + "..."


def load(path: Path) -> Saved:
    """Read ``path``; nothing saved yet is an empty Saved. A file that cannot be read or
    parsed, whatever the exception, is a warning, never an error: it is moved aside to
    NAME.json.bad (the next write would replace it) and nothing is restored. Temp files
    beside it are left alone: a writer may be between its write and its rename (the
    ``Autosaver`` removes stale ones when it starts)."""
    try:
        data = path.read_bytes()
        return parse(data)
    except FileNotFoundError:
        return Saved()
    except Exception as exc:  # noqa: BLE001 - any unusable file is set aside, never a crash
        reason = str(exc) if isinstance(exc, AutosaveFileError) else f"{type(exc).__name__}: {_first_line(exc)}"
        aside = bad_path(path)
        try:
            os.replace(path, aside)
            kept = f"moved to {aside}"
        except OSError as move_error:
            kept = f"could not be moved aside: {move_error.strerror or move_error}"
        log.warning("autosave file %s is unusable: %s; %s; starting from config.yaml values", path, reason, kept)
        return Saved()


def fit(pv: PVDef, value: Any) -> PVDef:
    """``pv`` with ``value`` as its value, checked by the config schema (one source of truth
    for types, limits, lengths and choices); ValueError names the reason it does not fit."""
    data = pv.model_dump(exclude_unset=True)
    data["value"] = value
    try:
        return PVDef.model_validate(data)
    except ValidationError as exc:
        reasons = [issue.message for issue in issues_from_pydantic(exc, PVDef, file=None)]
        raise ValueError("; ".join(reasons)) from None


def apply(values: dict[str, Any], pvs: PVGroup) -> tuple[PVGroup, dict[str, Any]]:
    """``pvs`` with each saved value that still fits as its input's value, and the values
    kept. A value saved while the input had another type (config.yaml changed it) is
    converted to its type now, as a link's value is (``convert.to_pv``). A value of a PV that
    is no longer an autosaved input is dropped quietly; one that does not convert or no
    longer fits its PV is dropped with a warning naming PV, value and reason."""
    inputs = dict(pvs.inputs)
    kept: dict[str, Any] = {}
    wanted = autosaved_inputs(pvs)
    for name, value in values.items():
        pv = wanted.get(name)
        if pv is None:
            log.info("autosave: %s is no longer an autosaved input; its saved value is dropped", name)
            continue
        try:
            converted = convert.to_pv(pv, from_saved(pv, value))
            inputs[name] = fit(pv, converted)
        except Exception as exc:  # noqa: BLE001 - ConversionError, ValueError, anything: this value only
            log.warning("autosave: saved value %s of %s no longer fits it (%s); it starts at its "
                        "config.yaml value", reprlib.repr(value), name, _first_line(exc))
            continue
        restored = to_saved(pv, converted)
        if _numbers_alike(restored) != _numbers_alike(value):
            log.info("autosave: saved value %s of %s converted to %s, its type now (%s)",
                     reprlib.repr(value), name, reprlib.repr(restored), convert.describe_type(pv))
        kept[name] = restored
    if kept:
        log.info("autosave: restored %s", ", ".join(f"{n}={reprlib.repr(v)}" for n, v in kept.items()))
    return pvs.model_copy(update={"inputs": inputs}), kept


def _numbers_alike(value: Any) -> Any:
    """``value`` with every number as a float's text: 3 saved for a float PV is not a change."""
    if isinstance(value, list):
        return [_numbers_alike(item) for item in value]
    if isinstance(value, (int, float)):
        return ("number", repr(float(value)))
    return value


def from_saved(pv: PVDef, value: Any) -> Any:
    """A saved value as the record's: ``{"latin1": text}`` of a string PV is the text of
    those bytes (``record_text.held_text``); anything else is as saved."""
    if pv.type != "string" or not isinstance(value, dict):
        return value
    text = value.get(BYTES_KEY)
    if set(value) != {BYTES_KEY} or not isinstance(text, str):
        raise ValueError(f"a string's bytes are saved as {{{BYTES_KEY!r}: text}}, found {reprlib.repr(value)}")
    try:
        return held_text(text.encode("latin-1"))
    except UnicodeEncodeError as exc:
        raise ValueError(f"{BYTES_KEY!r} text holds {text[exc.start]!r}, which is not one byte") from None


def to_saved(pv: PVDef, value: Any) -> Any:
    """A record's value in the form saved: plain JSON, an enum by its choice name (so a
    reordered choice list keeps the meaning, and a removed choice is a clear misfit), a
    string whose bytes are not all UTF-8 as ``{"latin1": text}``."""
    if hasattr(value, "tolist"):  # a numpy array or scalar
        value = value.tolist()
    if pv.type == "string" and isinstance(value, str) and not is_utf8(value):
        return {BYTES_KEY: text_bytes(value).decode("latin-1")}
    if pv.type == "enum" and isinstance(value, int) and pv.choices and 0 <= value < len(pv.choices):
        return pv.choices[value]
    return value


def encode(values: dict[str, Any], state: dict[str, Any] | None) -> bytes:
    document: dict[str, Any] = {"version": FORMAT_VERSION, "values": dict(sorted(values.items()))}
    if state is not None:
        document["state"] = state
    return json.dumps(document).encode() + b"\n"  # one line: a waveform is not a line per element


def state_problem(state: Any) -> str | None:
    """Why ``state`` (a snapshot() result) cannot be saved; None if it can."""
    if not isinstance(state, dict):
        return f"snapshot() returned {type(state).__name__}, not a dict"
    try:
        json.dumps(state, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"snapshot() returned a dict that is not JSON: {exc}"
    return None


class Autosaver:
    """Debounced writer of one plugin's autosave file, on a thread of its own.

    ``mark(name)`` (any thread, cheap) says an input changed; the thread wakes, waits
    ``delay`` so a burst coalesces, reads the current values through ``read`` and writes the
    file once. There is only ever one write in flight, and ``close()`` writes last. A failed
    write is retried after ``retry_first`` seconds, doubling up to ``retry_max``, with the
    values as they are then; the failure is logged once per streak, and so is the recovery.
    """

    def __init__(self, path: Path, pvs: dict[str, PVDef], values: dict[str, Any] | None = None,
                 state: dict[str, Any] | None = None, delay: float = DEBOUNCE,
                 retry_first: float = RETRY_FIRST, retry_max: float = RETRY_MAX) -> None:
        self.path = path
        self.pvs = pvs  # the autosaved inputs; a mark of any other name is ignored
        self.values: dict[str, Any] = dict(values or {})  # in saved form
        self.state = state
        self.delay = delay
        self.retry_first, self.retry_max = retry_first, retry_max
        self.read: Callable[[str], Any] | None = None
        self.writes = 0  # files written: how well bursts coalesce
        self.failed_writes = 0  # attempts that failed, retries included
        self._streak = 0  # failed attempts since the last good write
        self._streak_began = 0.0  # monotonic
        self._dirty: set[str] = set()
        self._state_changed = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="iochost-autosave", daemon=True)

    def start(self, read: Callable[[str], Any]) -> None:
        """Begin writing; ``read(name)`` is a record's current value (the PV table's get_pv).
        The temp files a killed writer of this file left are removed first: only its writer
        may, since a reader cannot tell them from a write in flight."""
        try:
            removed = remove_stale_temps(self.path)
        except OSError as exc:
            log.warning("autosave: cannot remove the temp files an earlier write of %s left: %s",
                        self.path, exc.strerror or exc)
        else:
            if removed:
                log.info("autosave: removed %d temp file(s) an interrupted write of %s left", removed, self.path)
        self.read = read
        self._thread.start()

    def mark(self, name: str) -> None:
        """Input ``name`` was written (by an operator or the plugin): save it soon."""
        if name not in self.pvs:
            return
        with self._lock:
            self._dirty.add(name)
        self._wake.set()

    def set_state(self, state: dict[str, Any]) -> None:
        """The plugin's snapshot(), saved with the next write (the final one, on stop)."""
        with self._lock:
            self.state = state
            self._state_changed = True
        self._wake.set()

    def close(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Write what is pending, now, and end the thread (waiting at most ``timeout``)."""
        self._closing.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("autosave: the final write to %s did not finish within %.1f s", self.path, timeout)

    def _run(self) -> None:
        retry: float | None = None  # seconds to the next attempt of a failed write
        while not self._closing.is_set():
            if retry is None:
                self._wake.wait()
                self._closing.wait(self.delay)  # coalesce a burst; a close cuts the wait short
            else:
                self._closing.wait(retry)  # a failed write again, with what changed since
            self._wake.clear()
            if self._flush():
                retry = None
            else:
                retry = self.retry_first if retry is None else min(retry * 2, self.retry_max)
        if not self._flush():  # anything marked while the last write ran
            log.error("autosave: the final write to %s failed (the error is logged above); what changed "
                      "since %s is not saved", self.path, "its last good write" if self.writes else "the start")

    def _flush(self) -> bool:
        """Write what changed; False: the write failed and what it held is pending again."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            changed, self._state_changed = self._state_changed, False
            state = self.state
        if not dirty and not changed:
            return True
        assert self.read is not None
        for name in sorted(dirty):
            try:
                self.values[name] = to_saved(self.pvs[name], self.read(name))
            except Exception as exc:  # noqa: BLE001 - one unreadable PV must not stop the others
                log.error("autosave: cannot read %s: %s", name, exc)
        try:
            write_atomically(self.path, encode(self.values, state))
        except Exception as exc:  # noqa: BLE001 - ENOSPC, EIO, ...: retried; the thread never ends on it
            self.failed_writes += 1
            self._streak += 1
            if self._streak == 1:  # once per streak: a retry every few seconds is not news
                self._streak_began = time.monotonic()
                log.error("autosave: cannot write %s: %s: %s; retrying until it succeeds", self.path,
                          type(exc).__name__, exc)
            with self._lock:
                self._dirty |= dirty
                self._state_changed = self._state_changed or changed
            return False
        self.writes += 1
        if self._streak:
            log.info("autosave: %s written again after %d failed attempt(s) over %.1f s", self.path,
                     self._streak, time.monotonic() - self._streak_began)
            self._streak = 0
        return True
