"""EPICS alarm severities and statuses by name: one place for config.yaml's
``hhsv: MAJOR``, a plugin's ``set_pv(..., severity="MAJOR", alarm="HIGH")`` and the
worker's own checks (``worker/limit_alarm.py``). Pure: no softioc.
"""

from __future__ import annotations

import difflib
from typing import Any

# menuAlarmSevr, in order: the number is the severity (higher wins)
SEVERITIES: tuple[str, ...] = ("NO_ALARM", "MINOR", "MAJOR", "INVALID")
# menuAlarmStat, in order (EPICS base 7)
STATUSES: tuple[str, ...] = (
    "NO_ALARM", "READ", "WRITE", "HIHI", "HIGH", "LOLO", "LOW", "STATE", "COS", "COMM", "TIMEOUT",
    "HWLIMIT", "CALC", "SCAN", "LINK", "SOFT", "BAD_SUB", "UDF", "DISABLE", "SIMM", "READ_ACCESS",
    "WRITE_ACCESS",
)
NO_ALARM, MINOR, MAJOR, INVALID = range(4)
HIHI, HIGH, LOLO, LOW, STATE, SOFT = (STATUSES.index(n) for n in ("HIHI", "HIGH", "LOLO", "LOW", "STATE", "SOFT"))


def _lookup(kind: str, names: tuple[str, ...], value: Any, numbers: bool = True) -> int:
    if numbers and isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return value
    if isinstance(value, str) and value.strip().upper() in names:
        return names.index(value.strip().upper())
    close = difflib.get_close_matches(str(value).upper(), names, n=1) if isinstance(value, str) else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    also = f", or 0..{len(names) - 1}" if numbers else ""
    raise ValueError(f"unknown alarm {kind} {value!r}{hint} (valid: {', '.join(names)}{also})")


def severity_number(value: Any) -> int:
    """A severity given by name (case-insensitive) or number 0-3; ValueError naming the valid ones."""
    return _lookup("severity", SEVERITIES, value)


def status_number(value: Any) -> int:
    """An alarm status (``HIGH``, ``STATE``, ``COMM``, ``UDF``...) by name or number."""
    return _lookup("status", STATUSES, value)


def severity_name(value: Any) -> str:
    """The canonical name of a severity given by name (``"minor"`` -> ``"MINOR"``): config.yaml
    takes names only."""
    return SEVERITIES[_lookup("severity", SEVERITIES, value, numbers=False)]


def plugin_alarm(severity: Any = None, alarm: Any = None) -> tuple[int, int]:
    """(severity, status) numbers of what a plugin passed to set_pv/set_alarm. No severity is
    NO_ALARM; a severity without a status gets SOFT (raised by software), or NO_ALARM with it."""
    sevr = NO_ALARM if severity is None else severity_number(severity)
    if alarm is not None:
        return sevr, status_number(alarm)
    return sevr, (SOFT if sevr else NO_ALARM)
