"""The checks of one PV across its fields: keys its type has no use for, its length, its
choices and its value, each problem at the key written (``low`` above ``high`` points at
``low``). PVDef runs them once its fields are parsed (config/pv_definition.py).
"""

from __future__ import annotations

from typing import Any

from iochost.config.alarm_fields import LimitAlarm, StateAlarm
from iochost.config.issues import Problems
from iochost.config.pv_fields import PVFields
from iochost.config.record_fields import fits_int32, is_int, is_int32, is_number, record_text_problem
from iochost.record_sizes import CHOICE_LENGTH, INT32, LONG_STRING_LENGTH, MAX_CHOICES

MAX_WAVEFORM_LENGTH = 1_000_000  # iochost's own cap on a waveform's elements


def pv_problems(pv: PVFields, given: set[str]) -> Problems:
    """Every problem of ``pv`` whose fields ``given`` were written; the value is checked
    only when the rest holds (its check needs the choices, the length, the limits)."""
    problems = _field_problems(pv, given) + _length_problems(pv)
    if pv.type == "enum":
        problems += _choice_problems(pv)
    if not problems:
        problems += _value_problems(pv)
    return problems


def _field_problems(pv: PVFields, given: set[str]) -> Problems:
    """Keys the PV's type has no field for, and numbers its record's fields cannot hold."""
    problems: Problems = []
    numeric = pv.type in ("float", "int")
    for key in ("unit", "low", "high"):
        if key in given and getattr(pv, key) is not None and not numeric:
            problems.append(((key,), f"only for float and int PVs, not {pv.type}"))
    if "prec" in given and pv.prec is not None and pv.type != "float":
        problems.append((("prec",), f"only for float PVs ({pv.type} records have no PREC)"))
    for key in ("znam", "onam"):
        if key in given and getattr(pv, key) is not None and pv.type != "bool":
            problems.append(((key,), f"only for bool PVs, not {pv.type}"))
        elif getattr(pv, key) == "":  # as an enum's choices: a state with no name shows nothing
            problems.append(((key,), "empty state name"))
    if "choices" in given and pv.choices is not None and pv.type != "enum":
        problems.append((("choices",), f"only for enum PVs, not {pv.type}"))
    for key in ("mdel", "adel"):
        if key in given and getattr(pv, key) is not None and (not numeric or pv.is_waveform):
            problems.append(((key,), f"only for float and int PVs (not waveforms), not {pv.type}"))
    if "alarm_on" in given and pv.alarm_on is not None:
        if pv.type not in ("bool", "float", "int") or pv.is_waveform:
            problems.append((("alarm_on",), f"only for bool, float and int PVs, not {pv.type}; use alarm:"))
        elif pv.type == "bool" and isinstance(pv.alarm, StateAlarm) and pv.alarm.osv is not None:
            problems.append((("alarm_on",), "give alarm_on: or alarm.osv, not both"))
        elif pv.type != "bool" and isinstance(pv.alarm, LimitAlarm) and pv.alarm.high is not None:
            problems.append((("alarm_on",), "give alarm_on: or alarm.high, not both"))
    if pv.buffer_size is not None and pv.is_waveform:  # iocmng buffers any scalar, a number if it is one
        problems.append((("buffer_size",), "only for scalar PVs, not waveforms"))
    # longin/longout's LOPR HOPR DRVL DRVH MDEL ADEL are epicsInt32; so are the limits a CA
    # client reads of an int waveform (DBR_CTRL_LONG), although its record holds doubles
    for key in ("low", "high", "mdel", "adel"):
        number = getattr(pv, key)
        if pv.type == "int" and number is not None and not fits_int32(number):
            problems.append(((key,), f"should be a 32-bit integer on an int PV, got {number!r}"))
    if pv.low is not None and pv.high is not None and pv.low > pv.high:
        problems.append((("low",), f"low ({pv.low:g}) is above high ({pv.high:g})"))
    return problems


def _length_problems(pv: PVFields) -> Problems:
    if pv.length is None:
        return []
    if pv.type in ("bool", "enum"):
        return [(("length",), f"only for float/int waveforms and strings, not {pv.type}")]
    limit = LONG_STRING_LENGTH if pv.type == "string" else MAX_WAVEFORM_LENGTH
    if pv.length > limit:
        return [(("length",), f"{pv.length} is above the maximum of {limit}")]
    return []


def _choice_problems(pv: PVFields) -> Problems:
    choices = pv.choices or []
    if not choices:
        return [(("choices",), f"an enum needs 1 to {MAX_CHOICES} choices")]
    problems: Problems = []
    if len(choices) > MAX_CHOICES:
        problems.append((("choices",), f"{len(choices)} choices; an enum (mbbi/mbbo) holds at most {MAX_CHOICES}"))
    seen: set[str] = set()
    for index, choice in enumerate(choices):
        where = ("choices", str(index))
        problem = record_text_problem(choice, CHOICE_LENGTH)
        if not choice:
            problems.append((where, "empty choice"))
        elif problem:
            problems.append((where, f"{choice!r}: {problem} (a state name)"))
        if choice in seen:
            problems.append((where, f"{choice!r} appears twice"))
        seen.add(choice)
    return problems


def _value_problems(pv: PVFields) -> Problems:
    value = pv.value
    if value is None:
        return []
    where = ("value",)
    if pv.is_waveform:
        return _waveform_value_problems(pv, value)
    if pv.type == "float":
        if not is_number(value):
            return [(where, f"should be a number, got {value!r}")]
        return _range_problems(pv, value)
    if pv.type == "int":
        if not is_int(value):
            return [(where, f"should be an integer, got {value!r}")]
        if not INT32[0] <= value <= INT32[1]:
            return [(where, f"{value} does not fit a 32-bit integer record")]
        return _range_problems(pv, value)
    if pv.type == "string":
        if not isinstance(value, str):
            return [(where, f"should be a string, got {value!r} (quote it)")]
        problem = record_text_problem(value, pv.text_size)
        if problem is not None:
            hint = "" if pv.length or "\x00" in value else "; set length: N for a longer string"
            return [(where, f"{problem}{hint}")]
        return []
    if pv.type == "bool":
        if isinstance(value, bool) or is_int(value) and value in (0, 1) or value in (pv.znam, pv.onam):
            return []
        names = [n for n in (pv.znam, pv.onam) if n is not None]
        extra = f", or {' / '.join(repr(n) for n in names)}" if names else ""
        return [(where, f"should be true/false or 0/1{extra}, got {value!r}")]
    choices = pv.choices or []
    if isinstance(value, str):
        if value not in choices:
            return [(where, f"{value!r} is not one of the choices {choices}")]
    elif not is_int(value) or not 0 <= value < len(choices):
        return [(where, f"should be one of the choices or an index 0..{len(choices) - 1}, got {value!r}")]
    return []


def _waveform_value_problems(pv: PVFields, value: Any) -> Problems:
    assert pv.length is not None
    check = is_number if pv.type == "float" else is_int32  # an int waveform's elements are epicsInt32
    noun = "numbers" if pv.type == "float" else "32-bit integers"
    if check(value):  # one number fills the whole waveform
        return []
    if not isinstance(value, list):
        return [(("value",), f"a waveform value is a list of {noun} (or one number to fill it)")]
    if len(value) > pv.length:
        return [(("value",), f"{len(value)} elements, more than length {pv.length}")]
    return [(("value", str(i)), f"should be one of the {noun}, got {item!r}")
            for i, item in enumerate(value) if not check(item)]


def _range_problems(pv: PVFields, value: float) -> Problems:
    if pv.low is not None and value < pv.low or pv.high is not None and value > pv.high:
        return [(("value",), f"{value:g} is outside low..high ({pv.low}..{pv.high})")]
    return []
