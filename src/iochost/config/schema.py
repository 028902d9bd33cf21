"""The config.yaml schema: parameters and PV definitions, strict so mistakes are errors.

A PV's ``alarm:`` is parsed by its type (LimitAlarm, StateAlarm, or a severity per enum
choice) into the EPICS alarm fields of its record; see worker/records.py and iochost.alarms.

Every model is strict (no "1.0" -> 1.0, no 1 -> True) and forbids unknown keys, because
a misspelt ``unti:`` or a quoted number silently ignored is a PV that looks right in
Phoebus and is not. Limits come from the EPICS records the worker builds: 16 mbbi/mbbo
states of 25 characters, 39-character strings, 40-character DESC, 15-character EGU.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from iochost.alarms import severity_name
from iochost.config.errors import (
    ConfigError,
    SchemaProblems,
    config_issue,
    issues_from_pydantic,
    problems_from_pydantic,
)
from iochost.declarative.expressions import ExpressionError, compile_expression
from iochost.kinds import Kind, Mode
from iochost.record_sizes import STRING_LENGTH
from iochost.record_text import text_bytes
from iochost.sdk.pv_client import DEFAULT_PVA
from iochost.report import Severity as IssueSeverity, ValidationIssue

PVType = Literal["float", "int", "string", "bool", "enum"]
PV_TYPES: tuple[str, ...] = ("float", "int", "string", "bool", "enum")
TYPE_ALIASES = {"str": "string", "boolean": "bool", "double": "float", "integer": "int", "long": "int"}

MAX_CHOICES = 16  # mbbi/mbbo ZRST..FFST
CHOICE_LENGTH = 25  # each state string is char[26]
MAX_STRING_LENGTH = 32767  # lsi/lso SIZV is an epicsUInt16
MAX_WAVEFORM_LENGTH = 1_000_000
DESC_LENGTH = 40  # DESC is char[41]
EGU_LENGTH = 15  # EGU is char[16]
INT32 = (-(2**31), 2**31 - 1)  # longin/longout VAL is an epicsInt32
DEFAULT_PREC = 3
DEFAULT_ZNAM, DEFAULT_ONAM = "Off", "On"
ALARM_ON_HIGH = 100  # iocmng's default high:, the limit alarm_on raises at on a float/int PV without one

Problems = list[tuple[tuple[str, ...], str]]
# A link target: a record name, optionally with a field (``DEV:TEMP.HIGH``).
LINK_NAME_RE = re.compile(r"^[A-Za-z0-9_\-+:\[\]<>;]+(\.[A-Z][A-Z0-9]{0,3})?$")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_int32(value: Any) -> bool:
    return _is_int(value) and INT32[0] <= value <= INT32[1]


def _fits_int32(value: float) -> bool:
    """A whole number an epicsInt32 field holds (the schema's floats arrive as float)."""
    return math.isfinite(value) and float(value).is_integer() and INT32[0] <= value <= INT32[1]


def record_text_problem(text: str, limit: int) -> str | None:
    """Why ``text`` cannot be stored whole in a record's char[] field of ``limit`` bytes, or
    None. EPICS strings are C strings sized in bytes: a NUL ends them early, and
    pythonSoftIOC stores UTF-8 (39 accented letters do not fit a 40-byte field)."""
    if "\x00" in text:
        return "contains a NUL character, which ends an EPICS string"
    size = len(text_bytes(text))  # bytes that are not UTF-8 (surrogate-escaped) count one each
    if size > limit:
        return f"{size} bytes in UTF-8 ({len(text)} characters); the field holds {limit} bytes"
    return None


def _fits(limit: int) -> AfterValidator:
    """A string field that ``record_text_problem`` accepts."""
    def check(text: str) -> str:
        problem = record_text_problem(text, limit)
        if problem is not None:
            raise ValueError(problem)
        return text
    return AfterValidator(check)


def _field_number(number: float) -> float:
    """A number EPICS can parse into a DOUBLE field of a record: its parser (dbPutString,
    as epicsdbbuilder and the IOC's database loader use it) refuses a denormal one with
    "Number too large for field type"."""
    if number != 0 and math.isfinite(number) and abs(number) < sys.float_info.min:
        raise ValueError(f"{number!r} is too close to zero for an EPICS record field (its parser refuses "
                         f"numbers below {sys.float_info.min:.1e} but 0); use 0")
    return number


FieldNumber = Annotated[float, AfterValidator(_field_number)]  # written into a record field as text

Severity = Annotated[str, BeforeValidator(severity_name)]  # NO_ALARM|MINOR|MAJOR|INVALID, any case
LIMITS = ("hihi", "high", "low", "lolo")  # in EPICS field order
LIMIT_SEVERITY = {"hihi": "hhsv", "high": "hsv", "low": "lsv", "lolo": "llsv"}
DEFAULT_LIMIT_SEVERITY = {"hihi": "MAJOR", "lolo": "MAJOR", "high": "MINOR", "low": "MINOR"}


class LimitAlarm(BaseModel):
    """``alarm:`` of a float/int PV: the ai/ao/longin/longout alarm fields, in lower case.
    A limit without its severity gets MAJOR (hihi, lolo) or MINOR (high, low)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    hihi: FieldNumber | None = None
    high: FieldNumber | None = None
    low: FieldNumber | None = None
    lolo: FieldNumber | None = None
    hhsv: Severity | None = None
    hsv: Severity | None = None
    lsv: Severity | None = None
    llsv: Severity | None = None
    hyst: FieldNumber | None = Field(default=None, ge=0, description="alarm deadband (HYST)")

    @model_validator(mode="after")
    def _ordered(self) -> "LimitAlarm":
        problems: Problems = []
        for limit, severity in LIMIT_SEVERITY.items():
            if getattr(self, severity) is not None and getattr(self, limit) is None:
                problems.append(((severity,), f"a severity for {limit}, which is not set"))
            elif getattr(self, limit) is not None and getattr(self, severity) is None:
                setattr(self, severity, DEFAULT_LIMIT_SEVERITY[limit])
        given = [(key, getattr(self, key)) for key in ("lolo", "low", "high", "hihi") if getattr(self, key) is not None]
        for (lower, low_value), (upper, up_value) in zip(given, given[1:]):
            if low_value > up_value:
                problems.append(((lower,), f"{lower} ({low_value:g}) is above {upper} ({up_value:g}); "
                                 "limits go lolo <= low <= high <= hihi"))
        if problems:
            raise SchemaProblems(problems)
        return self


class StateAlarm(BaseModel):
    """``alarm:`` of a bool PV: the severity of the zero and the one state (ZSV, OSV)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    zsv: Severity | None = None
    osv: Severity | None = None


def _nested(model: type[BaseModel], value: Any) -> BaseModel:
    """Validate ``value`` as ``model``; its errors as SchemaProblems at their own sub-paths."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise SchemaProblems(problems_from_pydantic(exc, model)) from None


def _misplaced_alarm_keys(value: dict[Any, Any], kind: str, choices: list[str]) -> Problems:
    """Alarm keys of another PV type (``zsv`` on a float, ``hihi`` on a bool or enum)."""
    owners = {key: "float and int" for key in LimitAlarm.model_fields}
    owners.update({key: "bool" for key in StateAlarm.model_fields})
    mine = set(LimitAlarm.model_fields if kind in ("float", "int") else StateAlarm.model_fields if kind == "bool"
               else choices)
    return [((key,), f"only for {owners[key]} PVs, not {kind}")
            for key in value if key in owners and key not in mine]


def _enum_alarm(value: dict[Any, Any], choices: list[str]) -> dict[str, str]:
    """``alarm:`` of an enum PV: a severity per choice name (the mbbi/mbbo ZRSV..FFSV)."""
    problems: Problems = []
    severities: dict[str, str] = {}
    for name, severity in value.items():
        if name not in choices:
            problems.append(((str(name),), f"{name!r} is not one of the choices {choices}"))
            continue
        try:
            severities[name] = severity_name(severity)
        except ValueError as exc:
            problems.append(((str(name),), str(exc)))
    if problems:
        raise SchemaProblems(problems)
    return severities


class PVDef(BaseModel):
    """One declared PV; the worker turns it into one record (see worker/records.py)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: PVType = Field(default="float", description="iocmng's default: float (with a warning)")
    value: Any = None
    unit: Annotated[str, _fits(EGU_LENGTH)] | None = None
    prec: int | None = Field(default=None, ge=0, le=17)
    low: FieldNumber | None = None
    high: FieldNumber | None = None
    znam: Annotated[str, _fits(CHOICE_LENGTH)] | None = None
    onam: Annotated[str, _fits(CHOICE_LENGTH)] | None = None
    description: Annotated[str, _fits(DESC_LENGTH)] | None = None
    choices: list[str] | None = None
    length: int | None = Field(default=None, ge=1)
    alarm: LimitAlarm | StateAlarm | dict[str, str] | None = None
    alarm_on: Severity | None = Field(default=None, description="iocmng 2.7: osv of a bool PV, hsv of a "
                                      "float/int PV (with high: as the limit, 100 if not set)")
    link: str | None = Field(default=None, description="iocmng 2.7: the external PV this one is wired to")
    link_mode: Literal["monitor", "poll"] = "poll"
    mode: Literal["monitor", "poll"] | None = Field(default=None, exclude=True, description="iocmng: link_mode's "
                                                    "other name (link_mode wins when both are given)")
    poll_rate: float | None = Field(default=None, ge=0, description="seconds between polls; default (or 0): "
                                    "every cycle")
    trigger: bool = Field(default=False, description="a change calls on_input_changed() (always in reactive mode)")
    buffer_size: int | None = Field(default=None, le=100_000, description="ring buffer <name>_buf; 0: none")
    latch: bool = False
    latch_dir: Literal["rise", "fall", "any"] = "rise"
    mdel: FieldNumber | None = Field(default=None, ge=0, description="monitor deadband (MDEL)")
    adel: FieldNumber | None = Field(default=None, ge=0, description="archive deadband (ADEL)")
    autosave: bool = Field(default=True, description="inputs: restore the last value on restart")

    _warnings: Problems = PrivateAttr(default_factory=list)  # keys accepted but ignored, as iocmng ignores them

    @field_validator("alarm", mode="before")
    @classmethod
    def _alarm(cls, value: Any, info: ValidationInfo) -> Any:
        """Parse ``alarm:`` by the PV's type (declared before it, so already validated)."""
        kind = info.data.get("type")
        if value is None or kind is None:
            return None
        if kind == "string":
            raise SchemaProblems([((), "only for float, int, bool and enum PVs, not string")])
        if not isinstance(value, dict):
            raise SchemaProblems([((), f"should be a mapping of alarm fields (e.g. {{high: 5}}), got {value!r}")])
        if kind in ("float", "int") and info.data.get("length") is not None:
            raise SchemaProblems([((), "waveforms have no alarm limits")])
        misplaced = _misplaced_alarm_keys(value, kind, info.data.get("choices") or [])
        if misplaced:
            raise SchemaProblems(misplaced)
        if kind == "enum":
            return _enum_alarm(value, info.data.get("choices") or [])
        if kind == "int":
            wrong = [((key,), f"should be an integer on an int PV, got {item!r}") if isinstance(item, float)
                     else ((key,), f"{item} does not fit a 32-bit integer record")
                     for key, item in value.items() if key in LIMITS + ("hyst",) and _is_number(item)
                     and (isinstance(item, float) or not INT32[0] <= item <= INT32[1])]
            if wrong:
                raise SchemaProblems(wrong)
        return _nested(StateAlarm if kind == "bool" else LimitAlarm, value)

    @field_validator("alarm_on", mode="before")
    @classmethod
    def _no_alarm_on(cls, value: Any) -> Any:
        """``alarm_on: ""`` is iocmng's documented default: no alarm."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("latch_dir", "link_mode", "mode", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        """iocmng accepts any case and ``0->1`` / ``1->0`` for rise / fall."""
        if isinstance(value, str):
            value = value.strip().lower()
            return {"0->1": "rise", "1->0": "fall"}.get(value, value)
        return value

    @field_validator("link")
    @classmethod
    def _link_name(cls, value: str | None) -> str | None:
        if value and not LINK_NAME_RE.fullmatch(value):  # "": no link, as iocmng reads it (see _as_iocmng)
            raise ValueError(f"{value!r} is not a PV name (record name, optionally .FIELD)")
        return value

    @property
    def wired(self) -> bool:
        return self.link is not None

    @field_validator("type", mode="before")
    @classmethod
    def _type_name(cls, value: Any) -> Any:
        valid = ", ".join(PV_TYPES)
        if not isinstance(value, str):
            raise ValueError(f"PV type must be one of {valid}, got {value!r}")
        name = value.strip().lower()
        name = TYPE_ALIASES.get(name, name)
        if name not in PV_TYPES:
            raise ValueError(f"unknown PV type {value!r}; valid types: {valid}")
        return name

    @property
    def is_waveform(self) -> bool:
        return self.type in ("float", "int") and self.length is not None

    @property
    def is_long_string(self) -> bool:
        return self.type == "string" and self.length is not None and self.length > STRING_LENGTH

    @property
    def text_size(self) -> int:
        """The bytes a string PV's value may hold: its ``length`` (a short one is a stringout
        of 39 whose values are kept to it, so what it holds always fits at the next start),
        else a stringin/stringout's 39."""
        return self.length or STRING_LENGTH

    def _ignore(self, key: str, why: str, default: Any = None, *, spelt: str | None = None) -> None:
        """Accept ``key`` (written as ``spelt``) where iocmng ignores it: a warning, and the
        key back to its default."""
        self._warnings.append(((spelt or key,), f"ignored: {why}"))
        setattr(self, key, default)

    def _as_iocmng(self, given: set[str]) -> None:
        """Forms iocmng 2.7.9 accepts, held as what they mean there (see PvArgumentSpec in
        iocmng's plugin_spec.py); what iocmng silently ignores is dropped with a warning."""
        if "type" not in given:
            self._warnings.append((("type",), "not given: a float PV, as iocmng makes it; give type: to say so"))
        if self.link == "":
            self._ignore("link", "an empty link wires nothing (iocmng reads it as no link)")
        spelt = "link_mode"
        if self.mode is not None:
            if "link_mode" not in given:
                self.link_mode, spelt = self.mode, "mode"
                given.add("link_mode")
            elif self.mode != self.link_mode:
                self._warnings.append((("mode",), f"ignored: link_mode: {self.link_mode} is given too and wins"))
            self.mode = None
        if self.link is None:
            for key, default in (("link_mode", "poll"), ("poll_rate", None), ("trigger", False)):
                if key in given and getattr(self, key) != default:
                    self._ignore(key, "only a wired PV (one with link:) has a link to read", default,
                                 spelt=spelt if key == "link_mode" else key)
        elif self.poll_rate is not None and self.link_mode != "poll":
            self._ignore("poll_rate", "a link_mode: monitor link is updated on every change, not polled")
        if self.poll_rate == 0:  # iocmng: no wait between polls, i.e. every cycle, as without it
            self.poll_rate = None
        if self.buffer_size is not None and self.buffer_size <= 0:  # iocmng: no buffer
            if self.buffer_size < 0:
                self._warnings.append((("buffer_size",), f"{self.buffer_size} keeps no buffer, as 0 does"))
            self.buffer_size = None
        if "latch_dir" in given and not self.latch:
            self._ignore("latch_dir", "only a latch: true output latches", "rise")
        if self.alarm_on is not None and self.type == "string":
            self._ignore("alarm_on", "a string PV has no state to raise an alarm on")
        # keys of iocmng's PV types that its string, bool and int records do not use
        unused = {"string": ("unit", "prec", "low", "high", "znam", "onam"),
                  "bool": ("unit", "prec", "low", "high"), "int": ("prec", "znam", "onam"),
                  "float": ("znam", "onam")}.get(self.type, ())
        for key in unused:
            if key in given and getattr(self, key) is not None and self.length is None:
                self._ignore(key, f"{'an' if self.type == 'int' else 'a'} {self.type} PV has no use for it")

    @model_validator(mode="after")
    def _consistent(self) -> "PVDef":
        problems: Problems = []
        given = set(self.model_fields_set)
        self._as_iocmng(given)
        numeric = self.type in ("float", "int")
        for key in ("unit", "low", "high"):
            if key in given and getattr(self, key) is not None and not numeric:
                problems.append(((key,), f"only for float and int PVs, not {self.type}"))
        if "prec" in given and self.prec is not None and self.type != "float":
            problems.append((("prec",), f"only for float PVs ({self.type} records have no PREC)"))
        for key in ("znam", "onam"):
            if key in given and getattr(self, key) is not None and self.type != "bool":
                problems.append(((key,), f"only for bool PVs, not {self.type}"))
            elif getattr(self, key) == "":  # as an enum's choices: a state with no name shows nothing
                problems.append(((key,), "empty state name"))
        if "choices" in given and self.choices is not None and self.type != "enum":
            problems.append((("choices",), f"only for enum PVs, not {self.type}"))
        for key in ("mdel", "adel"):
            if key in given and getattr(self, key) is not None and (not numeric or self.is_waveform):
                problems.append(((key,), f"only for float and int PVs (not waveforms), not {self.type}"))
        if "alarm_on" in given and self.alarm_on is not None:
            if self.type not in ("bool", "float", "int") or self.is_waveform:
                problems.append((("alarm_on",), f"only for bool, float and int PVs, not {self.type}; use alarm:"))
            elif self.type == "bool" and isinstance(self.alarm, StateAlarm) and self.alarm.osv is not None:
                problems.append((("alarm_on",), "give alarm_on: or alarm.osv, not both"))
            elif self.type != "bool" and isinstance(self.alarm, LimitAlarm) and self.alarm.high is not None:
                problems.append((("alarm_on",), "give alarm_on: or alarm.high, not both"))
        if self.buffer_size is not None and self.is_waveform:  # iocmng buffers any scalar, a number if it is one
            problems.append((("buffer_size",), "only for scalar PVs, not waveforms"))
        # longin/longout's LOPR HOPR DRVL DRVH MDEL ADEL are epicsInt32; so are the limits a CA
        # client reads of an int waveform (DBR_CTRL_LONG), although its record holds doubles
        for key in ("low", "high", "mdel", "adel"):
            number = getattr(self, key)
            if self.type == "int" and number is not None and not _fits_int32(number):
                problems.append(((key,), f"should be a 32-bit integer on an int PV, got {number!r}"))
        if self.low is not None and self.high is not None and self.low > self.high:
            problems.append((("low",), f"low ({self.low:g}) is above high ({self.high:g})"))
        problems += self._check_length()
        if self.type == "enum":
            problems += self._check_choices()
        if not problems:
            problems += self._check_value()
        if problems:
            raise SchemaProblems(problems)
        if self.type == "float" and self.prec is None:
            self.prec = DEFAULT_PREC
        if self.type == "bool":
            self.znam = DEFAULT_ZNAM if self.znam is None else self.znam
            self.onam = DEFAULT_ONAM if self.onam is None else self.onam
            if self.alarm_on is not None:  # folded into alarm.osv: the model holds it once
                zsv = self.alarm.zsv if isinstance(self.alarm, StateAlarm) else None
                self.alarm, self.alarm_on = StateAlarm(zsv=zsv, osv=self.alarm_on), None
        elif self.alarm_on is not None:  # iocmng: HIGH=high, HSV=alarm_on
            high = self.high
            if high is None:
                high = ALARM_ON_HIGH
                self._warnings.append((("alarm_on",), f"without high: it alarms at {high} and above (iocmng's "
                                       "default high); give high: to choose the limit"))
            limits = self.alarm.model_dump(exclude_none=True) if isinstance(self.alarm, LimitAlarm) else {}
            try:
                self.alarm = LimitAlarm(**limits, high=high, hsv=self.alarm_on)
            except ValidationError as exc:  # each problem at the key written: high: (alarm_on:
                problems = []              # when it is iocmng's default) or alarm.<limit>
                for path, message in problems_from_pydantic(exc, LimitAlarm):
                    if path != ("high",):
                        path = ("alarm",) + path
                    elif self.high is None:
                        path = ("alarm_on",)
                    if self.high is None:
                        message = message.replace(f"high ({high:g})", f"alarm_on's high ({high:g}, iocmng's "
                                                  "default without high:)")
                    problems.append((path, message))
                raise SchemaProblems(problems) from None
            self.alarm_on = None
        return self

    def _check_length(self) -> Problems:
        if self.length is None:
            return []
        if self.type in ("bool", "enum"):
            return [(("length",), f"only for float/int waveforms and strings, not {self.type}")]
        limit = MAX_STRING_LENGTH if self.type == "string" else MAX_WAVEFORM_LENGTH
        if self.length > limit:
            return [(("length",), f"{self.length} is above the maximum of {limit}")]
        return []

    def _check_choices(self) -> Problems:
        choices = self.choices or []
        if not choices:
            return [(("choices",), f"an enum needs 1 to {MAX_CHOICES} choices")]
        problems: Problems = []
        if len(choices) > MAX_CHOICES:
            problems.append((("choices",), f"{len(choices)} choices; an enum (mbbi/mbbo) holds at most {MAX_CHOICES}"))
        seen: set[str] = set()
        for index, choice in enumerate(choices):
            where = ("choices", str(index))
            if not choice:
                problems.append((where, "empty choice"))
            elif record_text_problem(choice, CHOICE_LENGTH):
                problems.append((where, f"{choice!r}: {record_text_problem(choice, CHOICE_LENGTH)} (a state name)"))
            if choice in seen:
                problems.append((where, f"{choice!r} appears twice"))
            seen.add(choice)
        return problems

    def _check_value(self) -> Problems:
        value = self.value
        if value is None:
            return []
        where = ("value",)
        if self.is_waveform:
            return self._check_waveform_value(value)
        if self.type == "float":
            if not _is_number(value):
                return [(where, f"should be a number, got {value!r}")]
            return self._check_range(value)
        if self.type == "int":
            if not _is_int(value):
                return [(where, f"should be an integer, got {value!r}")]
            if not INT32[0] <= value <= INT32[1]:
                return [(where, f"{value} does not fit a 32-bit integer record")]
            return self._check_range(value)
        if self.type == "string":
            if not isinstance(value, str):
                return [(where, f"should be a string, got {value!r} (quote it)")]
            limit = self.text_size
            problem = record_text_problem(value, limit)
            if problem is not None:
                hint = "" if self.length or "\x00" in value else "; set length: N for a longer string"
                return [(where, f"{problem}{hint}")]
            return []
        if self.type == "bool":
            if isinstance(value, bool) or _is_int(value) and value in (0, 1) or value in (self.znam, self.onam):
                return []
            names = [n for n in (self.znam, self.onam) if n is not None]
            extra = f", or {' / '.join(repr(n) for n in names)}" if names else ""
            return [(where, f"should be true/false or 0/1{extra}, got {value!r}")]
        choices = self.choices or []
        if isinstance(value, str):
            if value not in choices:
                return [(where, f"{value!r} is not one of the choices {choices}")]
        elif not _is_int(value) or not 0 <= value < len(choices):
            return [(where, f"should be one of the choices or an index 0..{len(choices) - 1}, got {value!r}")]
        return []

    def _check_waveform_value(self, value: Any) -> Problems:
        assert self.length is not None
        check = _is_number if self.type == "float" else _is_int32  # an int waveform's elements are epicsInt32
        noun = "numbers" if self.type == "float" else "32-bit integers"
        if check(value):  # one number fills the whole waveform
            return []
        if not isinstance(value, list):
            return [(("value",), f"a waveform value is a list of {noun} (or one number to fill it)")]
        if len(value) > self.length:
            return [(("value",), f"{len(value)} elements, more than length {self.length}")]
        return [(("value", str(i)), f"should be one of the {noun}, got {item!r}")
                for i, item in enumerate(value) if not check(item)]

    def _check_range(self, value: float) -> Problems:
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            return [(("value",), f"{value:g} is outside low..high ({self.low}..{self.high})")]
        return []

    def initial_value(self) -> Any:
        """The value in the form the record builder takes (enum index, 0/1, padded list)."""
        value = self.value
        if self.is_waveform:
            assert self.length is not None
            cast = float if self.type == "float" else int
            if value is None or not isinstance(value, list):
                return [cast(value or 0)] * self.length
            return [cast(item) for item in value] + [cast(0)] * (self.length - len(value))
        if self.type == "float":
            return float(value or 0.0)
        if self.type == "int":
            return int(value or 0)
        if self.type == "string":
            return value or ""
        if self.type == "bool":
            if isinstance(value, str):
                return int(value == self.onam)
            return int(bool(value))
        choices = self.choices or []
        if isinstance(value, str):
            return choices.index(value)
        return int(value or 0)


def _empty_to_dict(value: Any) -> Any:
    return {} if value is None else value


def _named_list(value: Any) -> Any:
    """PVs as a list of mappings each with its ``name:`` (the form iocmng's MANUAL section 11
    shows) as the mapping by name the schema takes."""
    if not isinstance(value, list):
        return value
    named: dict[Any, Any] = {}
    problems: Problems = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            problems.append(((str(index),), f"a PV in a list is a mapping with its name: (e.g. {{name: X, "
                                              f"type: float}}), got {item!r}"))
        elif item["name"] in named:
            problems.append(((str(index), "name"), f"{item['name']!r} appears twice"))
        else:
            named[item["name"]] = {key: spec for key, spec in item.items() if key != "name"}
    if problems:
        raise SchemaProblems(problems)
    return named


class PVGroup(BaseModel):
    """``inputs`` are writable by operators, ``outputs`` are published by the plugin."""

    model_config = ConfigDict(extra="forbid", strict=True)

    inputs: dict[str, PVDef] = Field(default_factory=dict)
    outputs: dict[str, PVDef] = Field(default_factory=dict)

    @field_validator("inputs", "outputs", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return _named_list(_empty_to_dict(value))

    @model_validator(mode="after")
    def _disjoint(self) -> "PVGroup":
        problems: Problems = [(("outputs", name), "also declared under inputs")
                              for name in self.outputs if name in self.inputs]
        problems += [(("outputs", name, "autosave"), "only for inputs (the plugin sets its outputs)")
                     for name, pv in self.outputs.items() if "autosave" in pv.model_fields_set]
        if problems:
            raise SchemaProblems(problems)
        for pv in self.inputs.values():
            if pv.latch:
                pv._ignore("latch", "only outputs latch (a rule latches the outputs it sets)", False)
        return self


class Parameters(BaseModel):
    """Well-known parameters typed; any other key is kept for the plugin's ``self.parameters``."""

    model_config = ConfigDict(extra="allow", strict=True)

    mode: Mode = "continuous"
    interval: float = Field(default=1.0, gt=0, description="seconds between execute() calls")
    retry_on_error: bool = False
    watchdog: float | None = Field(default=None, gt=0, description="longest a plugin call may take")
    grace_period: float | None = Field(default=None, gt=0,
                                       description="time cleanup() gets on stop; default: the daemon's")
    memory_limit_mb: int | None = Field(default=None, ge=64, le=1024 * 1024,
                                        description="the worker's memory limit; default: the daemon's")
    max_open_files: int | None = Field(default=None, ge=32, le=1024 * 1024,
                                       description="the worker's open-file limit; default: the daemon's")
    pva: bool = Field(default=DEFAULT_PVA,
                      description="links and pv_client use PV Access (p4p); false: Channel Access")
    timeout: float = Field(default=5.0, gt=0, description="seconds a link read or write may take")

    @model_validator(mode="before")
    @classmethod
    def _mode(cls, data: Any) -> Any:
        """``mode`` is case-insensitive; iocmng's ``triggered: true`` means triggered mode."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("mode"), str):
            data["mode"] = data["mode"].strip().lower()
        triggered = data.get("triggered")
        if "triggered" in data and not isinstance(triggered, bool):
            raise SchemaProblems([(("triggered",), f"should be true or false, got {triggered!r}")])
        if triggered is not None and "mode" not in data:
            data["mode"] = "triggered" if triggered else "continuous"
        elif triggered is not None and (data["mode"] == "triggered") != triggered:
            raise SchemaProblems([(("triggered",), f"contradicts mode: {data['mode']}")])
        return data


class Transform(BaseModel):
    """iocmng 2.7: an output computed from an expression, each cycle."""

    model_config = ConfigDict(extra="forbid", strict=True)

    output: str
    expression: str


class Rule(BaseModel):
    """iocmng 2.7: when ``condition`` holds, set ``outputs``, put ``actuators`` (wired PVs)
    and show ``message`` (on MESSAGE, and timestamped on ``message_pv`` if given)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = ""
    condition: str
    message: str = ""
    message_pv: str | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    actuators: dict[str, Any] = Field(default_factory=dict)


def plugin_mode(kind: Kind | None, parameters: Parameters) -> Mode | None:
    """The mode a plugin of ``kind`` runs in: a task's configured mode; None for a job (or
    a kind not known yet). The validator and the worker both derive it here."""
    return parameters.mode if kind == "task" else None


# config.yaml's ``prefix:``: one or more parts of letters, digits, '_' and '-', joined by ':'.
SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]+(?::[A-Za-z0-9_-]+)*")


def segment_problem(segment: str) -> str | None:
    """Why config.yaml's ``prefix:`` cannot be the plugin's part of its PV names, or None."""
    if not SEGMENT_RE.fullmatch(segment):
        return (f"{segment!r} is not a legal PV name segment; use letters, digits, '_' and '-' "
                "(':' between parts; no spaces, no '.', no leading or trailing ':')")
    return None


class PluginConfig(BaseModel):
    """A whole config.yaml. ``arguments:`` (iocmng 2.7) is read as ``pvs:`` (iocmng 2.0)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    parameters: Parameters = Field(default_factory=Parameters)
    pvs: PVGroup = Field(default_factory=PVGroup)
    transforms: list[Transform] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    rule_defaults: dict[str, Any] = Field(default_factory=dict)
    # iocmng's PLUGIN_PREFIX: the plugin's part of its PV names, instead of its name upper-cased
    prefix: str | None = None

    @field_validator("prefix", mode="before")
    @classmethod
    def _segment(cls, value: Any) -> Any:
        """A legal PV name part; empty means none, as iocmng reads it (``prefix or name``)."""
        if value is None or value == "":
            return None
        if isinstance(value, str) and (problem := segment_problem(value)) is not None:
            raise ValueError(problem)
        return value

    _pv_section: str = PrivateAttr(default="pvs")
    _warnings: Problems = PrivateAttr(default_factory=list)  # as PVDef's, at paths from the top
    _key_lines: dict[tuple[str, ...], int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        if data is None:
            return {}
        if not isinstance(data, dict):
            return data
        data = {key: _empty_to_dict(value) if key in ("parameters", "pvs", "arguments", "rule_defaults")
                else [] if key in ("rules", "transforms") and value is None else value
                for key, value in data.items()}
        if "arguments" in data:
            if "pvs" in data:
                raise SchemaProblems([(("arguments",), "give PVs under pvs: or arguments:, not both")])
            data["pvs"] = data.pop("arguments")
        return data

    @model_validator(mode="after")
    def _declarative(self, info: ValidationInfo) -> "PluginConfig":
        """Every expression compiles against the library and the names in scope, and every
        PV a transform or rule names is declared where it must be: here, not at runtime.
        Called functions are checked only with the context ``{"check_functions": True}``
        (see ``load_config``)."""
        problems: Problems = []
        inputs, outputs = self.pvs.inputs, self.pvs.outputs
        names = self.expression_names()
        check_functions = bool((info.context or {}).get("check_functions"))

        def expression(path: tuple[str, ...], text: str) -> None:
            try:
                compile_expression(text, names, check_functions=check_functions)
            except ExpressionError as exc:
                problems.append((path, str(exc)))

        def settable(path: tuple[str, ...], name: str, value: Any) -> None:
            if name not in outputs:
                problems.append((path, f"{name!r} is not a declared output; outputs: {', '.join(outputs) or '(none)'}"))
            elif not isinstance(value, (int, float, str)):  # bool is an int
                problems.append((path, f"should be a number, bool or string, got {value!r}"))

        for index, transform in enumerate(self.transforms):
            where = ("transforms", str(index))
            if transform.output not in outputs:
                problems.append((where + ("output",), f"{transform.output!r} is not a declared output"))
            expression(where + ("expression",), transform.expression)
        for index, rule in enumerate(self.rules):
            where = ("rules", str(index))
            expression(where + ("condition",), rule.condition)
            for name, value in rule.outputs.items():
                settable(where + ("outputs", name), name, value)
            for name in list(rule.actuators):
                pv = inputs.get(name) or outputs.get(name)
                if pv is None:
                    problems.append((where + ("actuators", name), f"{name!r} is not a declared PV; actuators "
                                     "write the link of a wired PV (one with link:)"))
                elif not pv.wired:  # iocmng: its link_put raises, logged each time the rule fires
                    del rule.actuators[name]
                    self._warnings.append((where + ("actuators", name), f"ignored: {name!r} has no link: "
                                           "to write to"))
            if rule.message_pv is not None and (rule.message_pv not in outputs
                                                or outputs[rule.message_pv].type != "string"):
                problems.append((where + ("message_pv",), f"{rule.message_pv!r} is not a declared string output"))
        for name, value in self.rule_defaults.items():
            settable(("rule_defaults", name), name, value)
        if problems:
            raise SchemaProblems(problems)
        return self

    def expression_names(self) -> set[str]:
        """What an expression may read: every input and output, ``<name>_buf`` of each ring
        buffer, and the parameters."""
        pvs = {**self.pvs.inputs, **self.pvs.outputs}
        names = set(pvs) | {f"{name}_buf" for name, pv in pvs.items() if pv.buffer_size}
        return names | set(self.parameters.model_dump())

    @property
    def warnings(self) -> list[ValidationIssue]:
        """What iocmng would silently ignore here: accepted, left out of the model, and
        reported at its line (``iochost validate``, the REST record, the worker's log)."""
        found = [(("pvs", group, name) + path, message)
                 for group, pvs in (("inputs", self.pvs.inputs), ("outputs", self.pvs.outputs))
                 for name, pv in pvs.items() for path, message in pv._warnings] + self._warnings
        return [config_issue(path, message, self.key_lines, severity=IssueSeverity.WARNING,
                             display=(self.pv_section,) + path[1:] if path[0] == "pvs" else path)
                for path, message in found]

    @property
    def wired(self) -> bool:
        """Whether any PV is linked: such a task needs the link engine."""
        return any(pv.wired for group in (self.pvs.inputs, self.pvs.outputs) for pv in group.values())

    @property
    def pv_section(self) -> str:
        """``pvs`` or ``arguments``: the spelling the file used, for messages."""
        return self._pv_section

    @property
    def key_lines(self) -> dict[tuple[str, ...], int]:
        """config.yaml line of each key path (``pvs`` spelling), empty if not from a file."""
        return self._key_lines

    def with_parameters(self, overrides: dict[str, Any]) -> "PluginConfig":
        """A copy with ``overrides`` (REST or ``--param``) merged over the parameters, re-validated."""
        merged = self.parameters.model_dump()
        if "mode" in overrides:
            merged.pop("triggered", None)
        elif "triggered" in overrides:
            merged.pop("mode", None)
        merged.update(overrides)
        try:
            parameters = Parameters.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(
                issues_from_pydantic(exc, Parameters, prefix=("parameters",), file=None, note=" (parameter override)")
            ) from None
        return self.model_copy(update={"parameters": parameters})
