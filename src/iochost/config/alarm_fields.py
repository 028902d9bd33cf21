"""A PV's ``alarm:``, parsed by its type into the EPICS alarm fields of its record.

A float/int PV has limits (LimitAlarm: HIHI..LOLO, their severities, HYST), a bool PV the
severities of its two states (StateAlarm: ZSV, OSV), an enum PV a severity per choice
(mbbi/mbbo ZRSV..FFSV). The worker writes them into the record (worker/records.py); the
severity names are ``iochost.alarms``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from iochost.alarms import severity_name
from iochost.config.issues import Problems, SchemaProblems, problems_from_pydantic
from iochost.config.record_fields import FieldNumber, is_number
from iochost.record_sizes import INT32

Severity = Annotated[str, BeforeValidator(severity_name)]  # NO_ALARM|MINOR|MAJOR|INVALID, any case
LIMITS = ("hihi", "high", "low", "lolo")  # in EPICS field order
LIMIT_SEVERITY = {"hihi": "hhsv", "high": "hsv", "low": "lsv", "lolo": "llsv"}
DEFAULT_LIMIT_SEVERITY = {"hihi": "MAJOR", "lolo": "MAJOR", "high": "MINOR", "low": "MINOR"}


class LimitAlarm(BaseModel):
    """``alarm:`` of a float/int PV: the ai/ao/longin/longout alarm fields, in lower case.
    A limit without its severity gets MAJOR (hihi, lolo) or MINOR (high, low)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    hihi: FieldNumber | None = Field(default=None, description="alarm at or above this (HIHI), MAJOR by default")
    high: FieldNumber | None = Field(default=None, description="alarm at or above this (HIGH), MINOR by default")
    low: FieldNumber | None = Field(default=None, description="alarm at or below this (LOW), MINOR by default")
    lolo: FieldNumber | None = Field(default=None, description="alarm at or below this (LOLO), MAJOR by default")
    hhsv: Severity | None = Field(default=None, description="severity of hihi (HHSV)")
    hsv: Severity | None = Field(default=None, description="severity of high (HSV)")
    lsv: Severity | None = Field(default=None, description="severity of low (LSV)")
    llsv: Severity | None = Field(default=None, description="severity of lolo (LLSV)")
    hyst: FieldNumber | None = Field(default=None, ge=0, description="alarm deadband (HYST)")

    @model_validator(mode="after")
    def _ordered(self) -> LimitAlarm:
        problems: Problems = []
        for limit, severity in LIMIT_SEVERITY.items():
            if getattr(self, severity) is not None and getattr(self, limit) is None:
                problems.append(((severity,), f"a severity for {limit}, which is not set"))
            elif getattr(self, limit) is not None and getattr(self, severity) is None:
                setattr(self, severity, DEFAULT_LIMIT_SEVERITY[limit])
        given = [(key, getattr(self, key)) for key in ("lolo", "low", "high", "hihi") if getattr(self, key) is not None]
        for (lower, low_value), (upper, up_value) in zip(given, given[1:], strict=False):
            if low_value > up_value:
                problems.append(((lower,), f"{lower} ({low_value:g}) is above {upper} ({up_value:g}); "
                                 "limits go lolo <= low <= high <= hihi"))
        if problems:
            raise SchemaProblems(problems)
        return self


class StateAlarm(BaseModel):
    """``alarm:`` of a bool PV: the severity of the zero and the one state (ZSV, OSV)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    zsv: Severity | None = Field(default=None, description="severity while the PV is 0 (ZSV)")
    osv: Severity | None = Field(default=None, description="severity while the PV is 1 (OSV)")


def parse_alarm(value: Any, kind: str, *, waveform: bool, choices: list[str]) -> Any:
    """``alarm:`` of a PV of type ``kind`` as its model (an enum's: a severity per choice);
    every problem as SchemaProblems at its own key."""
    if kind == "string":
        raise SchemaProblems([((), "only for float, int, bool and enum PVs, not string")])
    if not isinstance(value, dict):
        raise SchemaProblems([((), f"should be a mapping of alarm fields (e.g. {{high: 5}}), got {value!r}")])
    if kind in ("float", "int") and waveform:
        raise SchemaProblems([((), "waveforms have no alarm limits")])
    misplaced = _misplaced_alarm_keys(value, kind, choices)
    if misplaced:
        raise SchemaProblems(misplaced)
    if kind == "enum":
        return _enum_alarm(value, choices)
    if kind == "int":
        wrong = [((key,), f"should be an integer on an int PV, got {item!r}") if isinstance(item, float)
                 else ((key,), f"{item} does not fit a 32-bit integer record")
                 for key, item in value.items() if key in LIMITS + ("hyst",) and is_number(item)
                 and (isinstance(item, float) or not INT32[0] <= item <= INT32[1])]
        if wrong:
            raise SchemaProblems(wrong)
    return _nested(StateAlarm if kind == "bool" else LimitAlarm, value)


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
