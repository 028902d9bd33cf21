"""The alarm a value raises against a PV's ``alarm:`` config, as the record would compute it.

The records compute it themselves whenever they process; but a plugin's write to an
*input* record (an ao/longout/bo/mbbo set without processing, so it never loops back into
``on_input``) skips record processing, so the worker computes it here, the way the
record's ``checkAlarms`` would. Pure: no softioc.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iochost.alarms import HIGH, HIHI, LOLO, LOW, NO_ALARM, STATE, severity_number
from iochost.config import PVDef
from iochost.config.alarm_fields import LimitAlarm, StateAlarm


@dataclass
class LimitState:
    """What a record keeps between checks: LALM, the last value that alarmed (for HYST)."""

    lalm: float | None = None


def _state_alarm(severity: str | None) -> tuple[int, int]:
    sevr = severity_number(severity) if severity else NO_ALARM
    return sevr, (STATE if sevr else NO_ALARM)


def limit_alarm(pv: PVDef, value: Any, state: LimitState | None = None) -> tuple[int, int]:
    """(severity, status) that ``value`` raises against ``pv``'s ``alarm:`` config, as the
    record's own check does: HIHI, LOLO, HIGH, LOW in that order, each held until the value
    is HYST back inside (``state`` carries LALM between calls); bool ZSV/OSV and enum
    state severities with status STATE."""
    alarm = pv.alarm
    if alarm is None or value is None:
        return NO_ALARM, NO_ALARM
    if pv.type == "bool" and isinstance(alarm, StateAlarm):  # the schema gives each type its alarm's form
        return _state_alarm(alarm.osv if int(value) else alarm.zsv)
    if pv.type == "enum" and isinstance(alarm, dict):
        index = int(value)
        choices = pv.choices or []
        return _state_alarm(alarm.get(choices[index]) if 0 <= index < len(choices) else None)
    if pv.type not in ("float", "int") or pv.is_waveform or not isinstance(alarm, LimitAlarm):
        return NO_ALARM, NO_ALARM
    state = state if state is not None else LimitState()
    val, hyst, lalm = float(value), float(alarm.hyst or 0.0), state.lalm
    checks = ((alarm.hihi, alarm.hhsv, HIHI, 1), (alarm.lolo, alarm.llsv, LOLO, -1),
              (alarm.high, alarm.hsv, HIGH, 1), (alarm.low, alarm.lsv, LOW, -1))
    for level, severity, status, sign in checks:
        if level is None or not severity or severity_number(severity) == NO_ALARM:
            continue
        beyond = val >= level if sign > 0 else val <= level
        held = lalm == level and (val >= level - hyst if sign > 0 else val <= level + hyst)
        if beyond or held:
            state.lalm = float(level)
            return severity_number(severity), status
    state.lalm = val
    return NO_ALARM, NO_ALARM
