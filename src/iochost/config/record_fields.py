"""Values as an EPICS record field holds them: the checks every PV field of the schema uses.

EPICS strings are C strings sized in bytes, and its numbers are epicsInt32 or doubles that
the IOC's database parser must accept; the sizes themselves are ``iochost.record_sizes``.
"""

from __future__ import annotations

import math
import sys
from typing import Annotated, Any

from pydantic import AfterValidator

from iochost.record_sizes import INT32
from iochost.record_text import text_bytes


def is_number(value: Any) -> bool:
    """An int or float that is not a bool (YAML's ``true`` is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_int32(value: Any) -> bool:
    """An int an epicsInt32 field holds."""
    return is_int(value) and INT32[0] <= value <= INT32[1]


def fits_int32(value: float) -> bool:
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


def fits(limit: int) -> AfterValidator:
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
