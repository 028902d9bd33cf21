"""Build a plugin's records with pythonSoftIOC's builder, and the PV table over them.

Only the worker process imports this module: importing softioc commits the process to
being one IOC, which is exactly why every plugin gets its own process.
"""

from __future__ import annotations

import logging
import threading
from ctypes import c_uint, c_void_p
from typing import Any, Callable

import numpy
from softioc import builder, imports

from iochost.alarms import plugin_alarm
from iochost.config import PVDef, PVGroup
from iochost.config.alarm_fields import LIMITS, LimitAlarm, StateAlarm
from iochost.config.pvnames import DEFAULT_PV, default_pv_names, wired_ports
from iochost.kinds import Kind
from iochost.record_sizes import DESC_LENGTH, STRING_LENGTH
from iochost.record_text import fit_text, held_text, readable, text_bytes
from iochost.sdk.status import JobStatus, TaskStatus
from iochost.worker.convert import ConversionError, to_pv
from iochost.worker.limit_alarm import LimitState, limit_alarm

log = logging.getLogger("iochost.worker")

OnWrite = Callable[[str, Any], None]
OnStatus = Callable[[str, str], None]
INPUTS_ASG = "IOCHOST_INPUTS"  # access security group of every writable record (see the ACF)
DBE_VALUE, DBE_LOG = 1, 2

_db_post_events = imports.dbCore.db_post_events
_db_post_events.argtypes = (c_void_p, c_void_p, c_uint)
_db_scan_lock = imports.dbCore.dbScanLock
_db_scan_lock.argtypes, _db_scan_lock.restype = (c_void_p,), None
_db_scan_unlock = imports.dbCore.dbScanUnlock
_db_scan_unlock.argtypes, _db_scan_unlock.restype = (c_void_p,), None


def _post_with_alarm(record: Any, severity: int, status: int) -> None:
    """After softioc's unprocessed set of an output record (which only stores VAL): raise the
    pending alarm to ``severity`` if higher, make it current and post the value and alarm to
    CA/PVA monitors, as processing would have (without it no monitor sees the write)."""
    raw = getattr(record, "_record", None)
    if raw is None:  # before iocInit: softioc keeps the value for record initialisation
        return
    _db_scan_lock(raw.record)
    try:
        if severity > raw.NSEV:
            raw.NSEV, raw.NSTA = severity, status
        mask = imports.recGblResetAlarms(raw.record)
        _db_post_events(raw.record, None, mask | DBE_VALUE | DBE_LOG)
    finally:
        _db_scan_unlock(raw.record)


class RecordText(str):
    """Text that pythonSoftIOC stores as the exact bytes ``record_text`` gives it: softioc
    calls ``value.encode()``, strict UTF-8, which would refuse the surrogate escapes of bytes
    that are not UTF-8 (a CA client's Latin-1), so they could never be written back."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return text_bytes(self)


def held_bytes(record: Any) -> bytes:
    """The bytes a string record holds now, to the first NUL. softioc keeps the value in its
    EPICS form (``c_char * 40``, or a long string's uint8 array) and decodes it with
    ``errors="replace"`` in ``get()``, which loses bytes that are not UTF-8."""
    held = record._value[0]
    data = held.tobytes() if isinstance(held, numpy.ndarray) else bytes(held.value)
    return data.split(b"\0", 1)[0]


class PVTable:
    """The plugin's records by short name; this is the runtime a plugin's set_pv uses.

    Writes from the plugin to an *input* record do not process it, so they never loop
    back into ``on_input``; their limit alarm is computed here (``iochost.alarms``) instead
    of by the record. STATUS/MESSAGE changes are reported to ``on_status`` so the
    supervisor sees every status change, whoever made it. ``on_input_set`` is told the name
    of each declared input the plugin wrote.
    """

    def __init__(self, pv_prefix: str, status_enum: type[TaskStatus] | type[JobStatus]) -> None:
        self.pv_prefix = pv_prefix
        self.status_enum = status_enum
        self.records: dict[str, Any] = {}
        self.defs: dict[str, PVDef] = {}
        self.writable: set[str] = set()
        self.short_strings: set[str] = set()  # stringin/stringout records: STRING_LENGTH characters
        self.on_status: OnStatus | None = None
        self.message: str | None = None  # the whole text last written to MESSAGE (its record keeps 39 characters)
        self.on_input_set: Callable[[str], None] | None = None
        self._limit_states: dict[str, LimitState] = {}
        self._refused: set[str] = set()  # inputs in INVALID alarm for a value that did not convert
        self._lock = threading.Lock()

    def full_names(self) -> list[str]:
        return [f"{self.pv_prefix}:{name}" for name in self.records]

    def pv_names(self) -> list[str]:
        return list(self.records)

    def _record(self, name: str) -> Any:
        try:
            return self.records[name]
        except KeyError:
            known = ", ".join(self.records)
            raise KeyError(f"no PV named {name!r} in {self.pv_prefix}; known: {known}") from None

    def set_status(self, status: int, message: str) -> None:
        """STATUS and MESSAGE together, reported once: no report pairs the new message with
        the old status (a recovery's "Running (recovered)" with ERROR, taken for an error)."""
        self.set_pv("MESSAGE", message, report=False)
        self.set_pv("STATUS", status)

    def set_pv(self, name: str, value: Any, severity: Any = None, alarm: Any = None, *,
               refused: str = "SOFT", report: bool = True) -> None:
        """Write a PV with an optional alarm; the record's own limits still apply, the
        higher severity wins (EPICS' recGblSetSevr). A value of another type is converted
        (``convert.to_pv``); one that cannot be leaves the value as it was, in INVALID alarm
        with status ``refused`` (SOFT: the plugin's write; the wiring says LINK or CALC), and
        raises ConversionError naming the PV, the value and both types."""
        record = self._record(name)
        given = plugin_alarm(severity, alarm)  # ValueError on a bad name, before anything is written
        whole = str(value) if name == "MESSAGE" else None
        try:
            value = self._to_record_value(name, value)
        except ConversionError as exc:
            self.set_alarm(name, "INVALID", refused)
            self._refused.add(name)
            raise ConversionError(f"{self.pv_prefix}:{name}: {exc}; it keeps its value, "
                                  f"in INVALID/{refused} alarm") from None
        self._refused.discard(name)
        with self._lock:
            if name in self.writable:
                self._set_input(name, record, value, given)
            else:
                record.set(value, severity=given[0], alarm=given[1])
            if whole is not None:
                self.message = whole
        if report and name in ("STATUS", "MESSAGE") and self.on_status is not None:  # report: see set_status
            message = self.message if self.message is not None else str(self.records["MESSAGE"].get())
            self.on_status(self.status_name(), message)
        if name in self.writable and name in self.defs and self.on_input_set is not None:
            self.on_input_set(name)

    def set_alarm(self, name: str, severity: Any, alarm: Any = None) -> None:
        """Change a PV's alarm, keeping its value."""
        record = self._record(name)
        given = plugin_alarm(severity, alarm)
        with self._lock:
            if name in self.writable:
                self._set_input(name, record, self._unchanged(name, record), given)
            else:
                record.set_alarm(*given)

    def _unchanged(self, name: str, record: Any) -> Any:
        """A record's value to write back as it is (softioc's get() of a string replaces
        bytes that are not UTF-8, and 39 of them become 117 bytes, too long to write)."""
        return RecordText(self.held_value(name)) if self._is_string(name) else record.get()

    def _set_input(self, name: str, record: Any, value: Any, given: tuple[int, int]) -> None:
        record.set(value, process=False, severity=given[0], alarm=given[1])
        pv = self.defs.get(name)
        limit = (0, 0)
        if pv is not None and pv.alarm is not None:
            limit = limit_alarm(pv, record.get(), self._limit_states.setdefault(name, LimitState()))
        # raised again under the scan lock: softioc's set() stores NSEV without it, so a record
        # still processing an operator's put (its on_update runs on cothread meanwhile) would
        # reset it, and our alarm would be lost (seen on refused puts)
        _post_with_alarm(record, *(limit if limit[0] > given[0] else given))

    def operator_write(self, name: str, value: Any) -> tuple[bool, Any]:
        """An operator's write (a CA or PVA put) as the plugin is to see it: (accepted, value).

        EPICS has stored it in the record's type, not always in the PV's: a bool (bo) takes
        2 and holds it, here made 1 as any number becomes a bool; an enum (mbbo) takes an
        index past its choices, here refused: INVALID/STATE, logged, the plugin not told. A
        write after a refusal clears the INVALID alarm (softioc would keep it for the record's
        next processing)."""
        pv = self.defs.get(name)
        if pv is None:
            return True, value
        if pv.type in ("bool", "enum"):
            try:
                converted = to_pv(pv, value)
            except ConversionError as exc:
                self.set_alarm(name, "INVALID", "STATE")
                self._refused.add(name)
                log.error("%s:%s: an operator's write is refused: %s; INVALID/STATE until a value "
                          "that fits", self.pv_prefix, name, exc)
                return False, None
            if converted != value or name in self._refused:
                self.set_pv(name, converted)  # stored as converted, the alarm its own again
            return True, converted
        if pv.type == "string":
            return True, self._operator_text(name, pv)
        if name in self._refused:
            self.set_pv(name, value)
        return True, value

    def _operator_text(self, name: str, pv: PVDef) -> str:
        """An operator's string put as the record is to keep it: its bytes as written (CA
        clients write any bytes), within the record's size, cut between characters (EPICS
        keeps the first 39 bytes of a stringout put, which can end inside a character: a PVA
        put of 20 ``é``), rewritten when that changed them; what the plugin is shown."""
        held = held_text(held_bytes(self._record(name)))
        fitted = fit_text(held, pv.text_size)  # a short ``length`` too: its stringout holds 39
        if fitted != held or name in self._refused:
            if fitted != held:
                log.warning("%s:%s: an operator's write of %d bytes is kept as its first %d bytes, "
                            "cut between characters", self.pv_prefix, name, len(text_bytes(held)),
                            len(text_bytes(fitted)))
            self.set_pv(name, fitted)
        return readable(fitted)

    def get_pv(self, name: str) -> Any:
        value = self._record(name).get()
        if isinstance(value, numpy.ndarray):
            return value.tolist()
        return value

    def held_value(self, name: str) -> Any:
        """``get_pv``, but a string as the exact bytes its record holds (``record_text``):
        what autosave keeps and what a rewrite of the record's own value must write."""
        if self._is_string(name):
            return held_text(held_bytes(self._record(name)))
        return self.get_pv(name)

    def _is_string(self, name: str) -> bool:
        """A stringin/stringout or a long string record."""
        pv = self.defs.get(name)
        return name in self.short_strings or pv is not None and pv.is_long_string

    def status_name(self) -> str:
        return self.status_enum(int(self.records["STATUS"].get())).name

    def _to_record_value(self, name: str, value: Any) -> Any:
        """``value`` in the record's type: a declared PV's by ``convert.to_pv`` (ConversionError
        if it cannot be), a string cut to the bytes its record holds."""
        pv = self.defs.get(name)
        if pv is not None:
            value = to_pv(pv, value)
            if pv.type == "string":
                return _cut(name, value, pv.text_size)  # its ``length``, even one its stringout exceeds
        if name in self.short_strings:
            return _cut(name, str(value), STRING_LENGTH)
        if isinstance(value, bool):
            return int(value)
        return value


def _cut(name: str, text: str, size: int) -> RecordText:
    """``text`` in at most ``size`` bytes, cut between characters (``record_text.fit_text``;
    softioc refuses what does not fit its char array), written as its exact bytes."""
    fitted = fit_text(text, size)
    if name != "MESSAGE" and len(text_bytes(fitted)) < len(text_bytes(text)):  # MESSAGE is cut by design
        log.warning("%s: value cut to %d bytes", name, size)
    return RecordText(fitted)


def _limits(pv: PVDef, writable: bool) -> dict[str, Any]:
    """EGU, PREC, the display, drive and alarm limits and deadbands of a float/int record,
    each in the record's own field type: epicsdbbuilder refuses ``LOPR "0.0"`` on a longin,
    whose numeric fields are all integers (the schema has checked they are whole)."""
    cast = int if pv.type == "int" else float
    fields: dict[str, Any] = {}
    if pv.unit is not None:
        fields["EGU"] = pv.unit
    if pv.type == "float":
        fields["PREC"] = pv.prec
    if pv.low is not None:
        fields["LOPR"] = cast(pv.low)
        if writable and not pv.is_waveform:
            fields["DRVL"] = cast(pv.low)
    if pv.high is not None:
        fields["HOPR"] = cast(pv.high)
        if writable and not pv.is_waveform:
            fields["DRVH"] = cast(pv.high)
    alarm = pv.alarm if isinstance(pv.alarm, LimitAlarm) else None
    for key in LimitAlarm.model_fields:
        value = getattr(alarm, key) if alarm is not None else None
        if value is not None:
            fields[key.upper()] = cast(value) if key in LIMITS + ("hyst",) else value
    for key in ("mdel", "adel"):
        if getattr(pv, key) is not None:
            fields[key.upper()] = cast(getattr(pv, key))
    return fields


def _declared_record(name: str, pv: PVDef, writable: bool, on_write: OnWrite) -> Any:
    """One record for one config.yaml PV, in builder style."""
    fields: dict[str, Any] = {}
    if pv.description:
        fields["DESC"] = pv.description
    if writable:
        fields["on_update"] = lambda value, _name=name: on_write(_name, value)
        fields["always_update"] = True
        fields["ASG"] = INPUTS_ASG
    value = pv.initial_value()
    if pv.type in ("float", "int"):
        fields.update(_limits(pv, writable))
        if pv.is_waveform:
            dtype = numpy.float64 if pv.type == "float" else numpy.int32
            make = builder.WaveformOut if writable else builder.WaveformIn
            return make(name, initial_value=numpy.asarray(value, dtype=dtype), length=pv.length, **fields)
        if pv.type == "float":
            make = builder.aOut if writable else builder.aIn
        else:
            make = builder.longOut if writable else builder.longIn
        return make(name, initial_value=value, **fields)
    if pv.type == "string":
        value = RecordText(value)  # an autosaved value's bytes, as they were
        if pv.is_long_string:
            make = builder.longStringOut if writable else builder.longStringIn
            return make(name, initial_value=value, length=(pv.length or 0) + 1, **fields)  # set: a long string
        make = builder.stringOut if writable else builder.stringIn
        return make(name, initial_value=value, **fields)
    if pv.type == "bool":
        if isinstance(pv.alarm, StateAlarm):
            fields.update({key.upper(): getattr(pv.alarm, key) for key in ("zsv", "osv") if getattr(pv.alarm, key)})
        make = builder.boolOut if writable else builder.boolIn
        return make(name, pv.znam, pv.onam, initial_value=value, **fields)
    if pv.type == "enum":
        severities = pv.alarm if isinstance(pv.alarm, dict) else {}
        choices = [(choice, severities[choice]) if choice in severities else choice for choice in pv.choices or []]
        make = builder.mbbOut if writable else builder.mbbIn
        return make(name, *choices, initial_value=value, **fields)
    raise ValueError(f"{name}: unsupported PV type {pv.type!r}")  # the schema rejects these


def _status_record(status_enum: type[TaskStatus] | type[JobStatus]) -> Any:
    # Alarm severities make Phoebus colour the state without extra rules.
    severities = {"PAUSED": "MINOR", "ERROR": "MAJOR", "FAILED": "MAJOR"}
    states = [(member.name, severities.get(member.name, "NO_ALARM")) for member in status_enum]
    return builder.mbbIn("STATUS", *states, initial_value=0, DESC="Plugin state")


def _states(name: str) -> tuple[str, str]:
    """A default bo's ZNAM and ONAM (``config.pvnames``: the dashboard names them the same)."""
    states = DEFAULT_PV[name].states
    assert states is not None, name
    return states


def _default_record(name: str, status_enum: type[TaskStatus] | type[JobStatus], version: str,
                    on_write: OnWrite, pvs: PVGroup) -> Any:
    """The record of one of the default PVs that ``default_pv_names`` lists."""
    control = lambda value: on_write(name, value)  # noqa: E731
    if name in ("CLEAR", "RESET"):
        what = "release latched outputs" if name == "CLEAR" else "clear latches, counts; re-check links"
        return builder.boolOut(name, *_states(name), initial_value=0, on_update=control,
                               always_update=True, DESC=f"1: {what}"[:DESC_LENGTH], ASG=INPUTS_ASG)
    if name.startswith("CONN_"):
        ports = wired_ports(pvs, "inputs" if name.startswith("CONN_INP") else "outputs")
        if name.endswith("_NAMES"):  # iocmng's layout: the names, newline-separated
            return builder.stringIn(name, initial_value="\n".join(ports)[:STRING_LENGTH],
                                    DESC="Wired ports, in CONN order")
        return builder.WaveformIn(name, initial_value=numpy.zeros(len(ports), dtype=numpy.int32),
                                  length=len(ports), DESC="1 = link connected, per port")
    if name == "ENABLE":
        return builder.boolOut("ENABLE", *_states(name), initial_value=1, on_update=control,
                               always_update=True, DESC="0 pauses the task", ASG=INPUTS_ASG)
    if name == "STATUS":
        return _status_record(status_enum)
    if name == "MESSAGE":
        return builder.stringIn("MESSAGE", initial_value="Starting", DESC="Last message")
    if name == "CYCLE_COUNT":
        return builder.longIn("CYCLE_COUNT", initial_value=0, DESC="Completed executions")
    if name == "VERSION":
        return builder.stringIn("VERSION", initial_value=fit_text(version, STRING_LENGTH),
                                DESC="Plugin version")  # bytes: a tag may be UTF-8
    if name == "RUN":
        return builder.boolOut("RUN", *_states(name), initial_value=0, on_update=control,
                               always_update=True, DESC="Write 1 to run once", ASG=INPUTS_ASG)
    raise ValueError(f"no record for the default PV {name!r}")


class RecordError(Exception):
    """A declared PV whose record the builder refused, named by its place in config.yaml."""

    def __init__(self, group: str, name: str, cause: BaseException) -> None:
        self.path = (group, name)
        self.reason = f"the record cannot be built: {type(cause).__name__}: {str(cause).strip()}"
        super().__init__(f"{group}.{name}: {self.reason}")


def build_records(
    pv_prefix: str,
    kind: Kind,
    mode: str | None,
    pvs: PVGroup,
    version: str,
    on_write: OnWrite,
) -> PVTable:
    """Create the default records (``default_pv_names``, in its order), then the declared
    ones; call before iocInit. A declared PV the builder refuses raises ``RecordError``."""
    status_enum = TaskStatus if kind == "task" else JobStatus
    table = PVTable(pv_prefix, status_enum)
    builder.SetDeviceName(pv_prefix)
    records = table.records
    for name in default_pv_names(kind, mode, pvs):
        records[name] = _default_record(name, status_enum, version, on_write, pvs)
        if DEFAULT_PV[name].writable:  # operators write them; the worker acts
            table.writable.add(name)
        if DEFAULT_PV[name].shape == "text":  # stringin records: values are cut to STRING_LENGTH
            table.short_strings.add(name)

    for group_name, group, is_input in (("inputs", pvs.inputs, True), ("outputs", pvs.outputs, False)):
        for name, pv in group.items():
            writable = is_input and not pv.wired  # a wired input shows its link's value
            try:
                records[name] = _declared_record(name, pv, writable, on_write)
            except Exception as exc:  # epicsdbbuilder's AssertionError, ValueError, ...
                raise RecordError(group_name, name, exc) from exc
            table.defs[name] = pv
            if pv.type == "string" and not pv.is_long_string:
                table.short_strings.add(name)
            if writable:
                table.writable.add(name)
    return table
