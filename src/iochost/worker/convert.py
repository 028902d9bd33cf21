"""A value of any type made into the value of a declared PV, the one set of rules for every
way a value reaches a record: a link's value (CA or PVA), an operator's write, the plugin's
``set_pv`` (numpy scalars and arrays included) and an autosaved value.

The rules are EPICS's where EPICS has one (measured on this softioc/EPICS 7, CA and PVA):
a float becomes an int by truncation toward zero (a CA or PVA put of 2.7 to a longout
stores 2, of -2.7 stores -2), a string becomes a number by parsing it (``" 5 "``, ``"0x10"``,
``"1.5e3"``), an enum reads as its index, and as its choice name where a string is wanted;
an array gives a scalar its first element, a scalar is a one-element waveform. Where
EPICS stores garbage, this refuses: a number out of the int32 range, NaN or infinity for
an int, an enum index past the choices, ``"5abc"`` (EPICS parses the 5), an array longer
than the waveform. Numbers become strings as Python writes them: the shortest text that
reads back as the same number (``2.5``, ``1e+20``), which EPICS's ``%f`` does not.

Pure: no softioc, no I/O; the worker's records, links and autosave call ``to_pv``, and a
value it cannot convert is a ``ConversionError`` naming the value, its type and the PV's.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

import numpy

from iochost.config import PVDef
from iochost.record_sizes import INT32  # longin/longout VAL and int waveform elements
from iochost.record_text import held_text

CHAR_DTYPES = (numpy.dtype(numpy.uint8), numpy.dtype(numpy.int8))  # how CA and PVA carry a long string

_short = reprlib.Repr()
_short.maxstring, _short.maxlist, _short.maxother = 60, 6, 60


class ConversionError(ValueError):
    """A value that cannot become a value of the PV's type; the message names both."""


class Choice(int):
    """An enum's value as a link delivers it: its index, with its choice name (``name``) so
    that a string PV reads the name, as EPICS gives a DBR_STRING of an mbbi."""

    name: str

    def __new__(cls, index: int, name: str | None) -> "Choice":
        choice = super().__new__(cls, index)
        choice.name = name or ""
        return choice

    def __repr__(self) -> str:
        return f"{self.name!r} (index {int(self)})" if self.name else f"enum index {int(self)}"


def describe_type(pv: PVDef) -> str:
    """A PV's type as an error names it: ``int``, ``float[4]``, ``enum (a, b, c)``."""
    if pv.is_waveform:
        return f"{pv.type}[{pv.length}]"
    if pv.type == "enum":
        return f"enum ({', '.join(pv.choices or [])})"
    if pv.type == "bool":
        return f"bool ({pv.znam}/{pv.onam})"
    if pv.is_long_string:
        return f"string (length {pv.length})"
    return pv.type


def describe_value(value: Any) -> str:
    """A value and its type, bounded (a waveform of a million points is not logged whole)."""
    if isinstance(value, Choice):
        return f"enum {value!r}"
    if isinstance(value, numpy.ndarray):
        shown = _short.repr(value.ravel()[:_short.maxlist + 1].tolist())  # reprlib's "..." when longer
        return f"{shown} (array of {value.dtype}, {value.size} elements)"
    return f"{_short.repr(value)} ({type(value).__name__})"


def to_pv(pv: PVDef, value: Any) -> Any:
    """``value`` as a value of ``pv``'s type, in the form its record takes: float, int (an
    int, a bool's 0/1, an enum's index), str, or a list for a waveform. A string is returned
    whole (bytes as ``record_text`` keeps them): cutting it to the record is the record's
    business. ConversionError otherwise."""
    try:
        if value is None:
            raise _Refused("there is no value")
        if pv.is_waveform:
            return _to_waveform(pv, value)
        return _SCALAR[pv.type](pv, value)
    except _Refused as refused:
        raise ConversionError(f"cannot convert {describe_value(value)} to {describe_type(pv)}: {refused}") from None


class _Refused(Exception):
    """Why a conversion failed; ``to_pv`` adds what was converted to what."""


class UnreadableText:
    """A link's text its client could not decode (p4p reads a PVA string as strict UTF-8, and
    a CA client may have written any bytes): not a value; ``to_pv`` refuses it with ``reason``,
    so the input keeps its value, in INVALID/LINK alarm, and the link lives on."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return "text that is not UTF-8"


# -- what a value is ----------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """numpy scalars as Python's, subclasses (p4p's ntfloat, cothread's ca_str) as their base
    type, bytes as text; arrays, lists and Choice as they are."""
    if isinstance(value, Choice):
        return value
    if isinstance(value, UnreadableText):
        raise _Refused(value.reason)
    if isinstance(value, (bytes, bytearray, numpy.bytes_)):
        return _c_string(bytes(value))
    if isinstance(value, numpy.generic):
        value = value.item()
    return base_value(value)


def base_value(value: Any) -> Any:
    """A bool, int, float or str subclass (p4p's ntfloat, cothread's ca_str) as its base type,
    by the base type's own method: p4p's ``str(ntstr)`` prefixes the timestamp."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind.__str__(value) if kind is str else kind(value)
    return value


def _c_string(data: bytes) -> str:
    """A char array's text: up to its first NUL, its bytes kept (``record_text.held_text``:
    UTF-8, a byte that is not as its surrogate escape), so a record written with it holds
    the same bytes."""
    return held_text(data)


def _is_array(value: Any) -> bool:
    return isinstance(value, (list, tuple, numpy.ndarray))


def _first(value: Any) -> Any:
    """An array's first element: what EPICS gives a scalar read of a waveform."""
    if len(value) == 0:
        raise _Refused("the array is empty")
    return value[0]


def _not_a_value(value: Any) -> _Refused:
    return _Refused(f"a {type(value).__name__} is not a value a PV holds")


# -- numbers --------------------------------------------------------------------------------
def _parse(text: str) -> int | float:
    """A number written as text: decimal, ``0x``/``0o``/``0b`` integers, floats, ``inf``/``nan``."""
    stripped = text.strip()
    if not stripped or "_" in stripped:  # Python reads "1_0" as 10; EPICS does not, nor do we
        raise _Refused("not a number")
    for base in (0, 10):  # 0: "0x10" -> 16; 10: "010" -> 10 (base 0 refuses leading zeros)
        try:
            return int(stripped, base)
        except ValueError:
            pass
    try:
        number = float(stripped)
    except ValueError:
        raise _Refused("not a number") from None
    if math.isinf(number) and "inf" not in stripped.lower():
        raise _Refused("out of the range of a float")  # "1e400"
    return number


def _number(value: Any) -> int | float:
    """A scalar as a number: a bool as 0/1, an enum as its index, a string parsed, an array
    as its first element."""
    value = _plain(value)
    if _is_array(value):
        return _number(_first(value))
    if isinstance(value, (bool, int)):
        return int(value)
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        return _parse(value)
    raise _not_a_value(value)


def _to_float(pv: PVDef, value: Any) -> float:
    try:
        return float(_number(value))
    except OverflowError:
        raise _Refused("out of the range of a float") from None


def _to_int(pv: PVDef, value: Any) -> int:
    """Truncation toward zero, as EPICS converts a double into a long; in range or refused."""
    number = _number(value)
    if isinstance(number, float):
        if not math.isfinite(number):
            raise _Refused(f"{number} is not an integer")
        number = math.trunc(number)
    if not INT32[0] <= number <= INT32[1]:
        raise _Refused(f"{number} is out of the range of a 32-bit integer")
    return number


# -- strings --------------------------------------------------------------------------------
def _to_string(pv: PVDef, value: Any) -> str:
    """Text as it is, a number written out, an enum by its choice name, a long string's chars."""
    if isinstance(value, numpy.ndarray) and value.dtype in CHAR_DTYPES:
        return _c_string(value.tobytes())  # a long string: chars, NUL-terminated
    if isinstance(value, numpy.floating):
        return str(value)  # its own shortest text: float32 0.1 is "0.1", not 0.10000000149011612
    value = _plain(value)
    if _is_array(value):
        return _to_string(pv, _first(value))
    if isinstance(value, Choice):
        return value.name or str(int(value))
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"  # as pvxs writes a boolean into a string field
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same number
    raise _not_a_value(value)


# -- states -----------------------------------------------------------------------------------
def _to_bool(pv: PVDef, value: Any) -> int:
    """0 or 1: a state name (znam/onam), true/false, or a number (anything but 0 is 1)."""
    value = _plain(value)
    if _is_array(value):
        return _to_bool(pv, _first(value))
    if isinstance(value, str):
        text = value.strip()
        if text in (pv.znam, pv.onam):
            return int(text == pv.onam)
        if text.lower() in ("true", "false"):
            return int(text.lower() == "true")
        try:
            number = _parse(text)
        except _Refused:
            raise _Refused(f"neither {pv.znam!r} nor {pv.onam!r}, true/false or a number") from None
    else:
        number = _number(value)
    if isinstance(number, float) and math.isnan(number):
        raise _Refused("NaN is neither 0 nor 1")
    return int(number != 0)


def _to_enum(pv: PVDef, value: Any) -> int:
    """An index into the choices: a choice name, or a number (a float truncated)."""
    choices = pv.choices or []
    value = _plain(value)
    if _is_array(value):
        return _to_enum(pv, _first(value))
    if isinstance(value, str) and value.strip() in choices:
        return choices.index(value.strip())
    try:
        index = _to_int(pv, value)
    except _Refused:
        if isinstance(value, str):
            raise _Refused(f"not one of the choices {choices} nor an index") from None
        raise
    if not 0 <= index < len(choices):
        raise _Refused(f"index {index} is not one of 0..{len(choices) - 1}")
    return index


# -- waveforms --------------------------------------------------------------------------------
def _to_waveform(pv: PVDef, value: Any) -> list[Any]:
    """Each element converted as a scalar of the waveform's type (numbers all at once: a
    waveform of a million points is one numpy conversion, not a million calls)."""
    assert pv.length is not None
    element = _to_float if pv.type == "float" else _to_int
    if isinstance(value, numpy.ndarray) and value.ndim > 1:
        raise _Refused(f"a {value.ndim}-dimensional array; a waveform has one dimension")
    if not _is_array(value):
        return [element(pv, value)]  # a scalar (or a number as text): a one-element waveform
    if len(value) > pv.length:
        raise _Refused(f"{len(value)} elements, more than length {pv.length}")
    numbers = _numbers(value)
    if numbers is not None:
        return _number_array(pv, numbers)
    converted = []
    for index, item in enumerate(value):
        if _is_array(item):
            raise _Refused(f"element {index} is itself an array")
        try:
            converted.append(element(pv, item))
        except _Refused as refused:
            raise _Refused(f"element {index}: {refused}") from None
    return converted


def _numbers(value: Any) -> numpy.ndarray | None:
    """``value`` as a one-dimensional numpy array of numbers (bools, ints, floats), or None
    when it holds anything else (text, None, Python ints past 64 bits, nested lists)."""
    try:
        array = value if isinstance(value, numpy.ndarray) else numpy.asarray(value)
    except (ValueError, TypeError):  # a ragged list
        return None
    return array if array.ndim == 1 and array.dtype.kind in "biuf" else None


def _number_array(pv: PVDef, array: numpy.ndarray) -> list[Any]:
    """The scalar rules (``_to_float``, ``_to_int``) applied to a whole array of numbers."""
    if pv.type == "float":
        return array.astype(numpy.float64).tolist()
    whole, wrong = array, numpy.zeros(len(array), dtype=bool)
    if array.dtype.kind == "f":
        wrong = ~numpy.isfinite(array)
        whole = numpy.trunc(numpy.where(wrong, 0.0, array))
    wrong |= (whole < INT32[0]) | (whole > INT32[1])
    for index in numpy.flatnonzero(wrong)[:1]:  # the first, refused by the scalar rule's words
        try:
            _to_int(pv, array[index])
        except _Refused as refused:
            raise _Refused(f"element {index}: {refused}") from None
    return whole.astype(numpy.int64).tolist()


_SCALAR = {"float": _to_float, "int": _to_int, "string": _to_string, "bool": _to_bool, "enum": _to_enum}
