"""The conversion rules alone (``iochost.worker.convert``): a value of every source type
into a PV of every type, then properties that hold for any PV the schema accepts and any
value. The same rules end to end, with real links, puts, set_pv and autosave files, are in
test_value_types.py and test_value_types_links.py."""

from __future__ import annotations

import math
from typing import Any

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iochost.config import PVDef
from iochost.config.pv_fields import PV_TYPES
from iochost.record_sizes import INT32, MAX_CHOICES
from iochost.worker.convert import Choice, ConversionError, describe_type, to_pv

PVS = {
    "float": PVDef(type="float"),
    "int": PVDef(type="int"),
    "string": PVDef(type="string"),
    "long string": PVDef(type="string", length=100),
    "bool": PVDef(type="bool", znam="Closed", onam="Open"),
    "enum": PVDef(type="enum", choices=["a", "b", "c"]),
    "float[4]": PVDef(type="float", length=4),
    "int[4]": PVDef(type="int", length=4),
}


class Refused(str):
    """An expected ConversionError, by the reason it gives."""


CHARS = numpy.frombuffer(b"hi there\0junk", dtype=numpy.uint8)  # a long string as CA and PVA carry it

# source value -> what each PV type holds, or Refused(why): it does not convert
MATRIX: dict[str, tuple[Any, dict[str, Any]]] = {
    "float": (1.7, {"float": 1.7, "int": 1, "string": "1.7", "long string": "1.7", "bool": 1, "enum": 1,
                    "float[4]": [1.7], "int[4]": [1]}),
    "negative float": (-2.7, {"float": -2.7, "int": -2, "string": "-2.7", "bool": 1,
                              "enum": Refused("index -2 is not one of 0..2"), "int[4]": [-2]}),
    "int": (2, {"float": 2.0, "int": 2, "string": "2", "bool": 1, "enum": 2, "float[4]": [2.0], "int[4]": [2]}),
    "number as text": (" 2.5 ", {"float": 2.5, "int": 2, "string": " 2.5 ", "bool": 1, "enum": 2,
                                 "float[4]": [2.5], "int[4]": [2]}),
    "hex as text": ("0x10", {"float": 16.0, "int": 16, "bool": 1, "enum": Refused("index 16 is not one of 0..2"),
                             "int[4]": [16]}),
    "choice as text": ("b", {"float": Refused("not a number"), "int": Refused("not a number"), "string": "b",
                             "bool": Refused("neither 'Closed' nor 'Open', true/false or a number"), "enum": 1,
                             "float[4]": Refused("not a number")}),
    "state name as text": ("Open", {"bool": 1,
                                    "enum": Refused("not one of the choices ['a', 'b', 'c'] nor an index")}),
    "true as text": ("True", {"bool": 1, "string": "True"}),
    "bool": (True, {"float": 1.0, "int": 1, "string": "true", "bool": 1, "enum": 1, "float[4]": [1.0],
                    "int[4]": [1]}),
    "enum": (Choice(2, "z"), {"float": 2.0, "int": 2, "string": "z", "long string": "z", "bool": 1, "enum": 2,
                              "float[4]": [2.0], "int[4]": [2]}),
    "float array": ([1.5, 2.5, 3.5], {"float": 1.5, "int": 1, "string": "1.5", "bool": 1, "enum": 1,
                                      "float[4]": [1.5, 2.5, 3.5], "int[4]": [1, 2, 3]}),
    "int array": (numpy.array([2, 4], dtype=numpy.int32), {"float": 2.0, "int": 2, "string": "2", "bool": 1,
                                                           "enum": 2, "float[4]": [2.0, 4.0], "int[4]": [2, 4]}),
    "char array": (CHARS, {"string": "hi there", "long string": "hi there", "int": 104,
                           "int[4]": Refused("13 elements, more than length 4")}),
    "empty array": ([], {"float": Refused("the array is empty"), "string": Refused("the array is empty"),
                         "float[4]": [], "int[4]": []}),
    "too long": ([0.0] * 5, {"float": 0.0, "float[4]": Refused("5 elements, more than length 4")}),
    "numpy float32": (numpy.float32(0.1), {"float": float(numpy.float32(0.1)), "int": 0, "string": "0.1",
                                           "bool": 1, "enum": 0, "float[4]": [float(numpy.float32(0.1))]}),
    "numpy int64": (numpy.int64(-3), {"float": -3.0, "int": -3, "string": "-3", "bool": 1,
                                      "enum": Refused("index -3 is not one of 0..2"), "int[4]": [-3]}),
    "numpy bool": (numpy.bool_(False), {"float": 0.0, "int": 0, "string": "false", "bool": 0, "enum": 0}),
    "out of int32": (1e10, {"float": 1e10, "int": Refused("10000000000 is out of the range of a 32-bit integer"),
                            "string": "10000000000.0", "bool": 1}),
    "NaN": (math.nan, {"int": Refused("nan is not an integer"), "bool": Refused("NaN is neither 0 nor 1"),
                       "string": "nan"}),
    "garbage": ("5abc", {"float": Refused("not a number"), "int": Refused("not a number"), "string": "5abc"}),
    "underscores": ("1_0", {"float": Refused("not a number")}),
    "None": (None, {pv: Refused("there is no value") for pv in PVS}),
    "dict": ({"a": 1}, {"float": Refused("a dict is not a value a PV holds"),
                        "string": Refused("a dict is not a value a PV holds")}),
}


@pytest.mark.parametrize("source, target, expected", [
    (source, target, expected) for source, (_, results) in MATRIX.items() for target, expected in results.items()
], ids=lambda item: item if isinstance(item, str) and len(item) < 20 else "")
def test_each_source_type_into_each_pv_type(source: str, target: str, expected: Any) -> None:
    value, pv = MATRIX[source][0], PVS[target]
    if isinstance(expected, Refused):
        with pytest.raises(ConversionError) as caught:
            to_pv(pv, value)
        assert expected in str(caught.value)
        assert f"to {describe_type(pv)}: " in str(caught.value)  # the PV's type, after the value's
        return
    result = to_pv(pv, value)
    assert result == expected and type(result) is type(expected)
    if isinstance(result, list):
        assert all(type(item) is (float if pv.type == "float" else int) for item in result)


def test_a_float_into_an_int_truncates_toward_zero_as_epics_does() -> None:
    """Measured on this EPICS: a CA put of DBR_DOUBLE 2.7, -2.7, 3.5 to a longout stores 2, -2,
    3 (dbConvert's cast); a PVA put of 2.7 stores 2. Links, set_pv and autosave agree."""
    assert [to_pv(PVS["int"], x) for x in (2.7, -2.7, 3.5, 2.5, -0.5)] == [2, -2, 3, 2, 0]


def test_the_error_names_the_value_its_type_and_the_pvs_type() -> None:
    with pytest.raises(ConversionError) as caught:
        to_pv(PVS["enum"], "maybe")
    assert str(caught.value) == ("cannot convert 'maybe' (str) to enum (a, b, c): not one of the choices "
                                 "['a', 'b', 'c'] nor an index")
    with pytest.raises(ConversionError) as caught:
        to_pv(PVS["int[4]"], numpy.arange(1_000_000, dtype=numpy.float64))
    assert "(array of float64, 1000000 elements) to int[4]" in str(caught.value)
    assert len(str(caught.value)) < 200  # a big value is shown short


# -- properties, for any PV the schema accepts and any value ---------------------------------------
NAMES = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8)


@st.composite
def pvs(draw: st.DrawFn) -> PVDef:
    """A PV as config.yaml declares one: a type the schema knows, with choices, state names or
    a length as that type takes them."""
    kind = draw(st.sampled_from(PV_TYPES))
    data: dict[str, Any] = {"type": kind}
    if kind == "enum":
        data["choices"] = draw(st.lists(NAMES, min_size=1, max_size=MAX_CHOICES, unique=True))
    if kind == "bool":
        data["znam"], data["onam"] = draw(st.lists(NAMES, min_size=2, max_size=2, unique=True))
    if kind in ("float", "int", "string") and draw(st.booleans()):
        data["length"] = draw(st.integers(1, 50 if kind != "string" else 100))
    return PVDef.model_validate(data)


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=50), st.sampled_from(["1", " 2.5", "0x1f", "-7", "inf", "nan", "1e400", "true", "Off"]),
    st.integers(-(2**40), 2**40).map(numpy.int64), st.floats(width=32).map(numpy.float32),
    st.booleans().map(numpy.bool_), st.builds(Choice, st.integers(0, 20), st.one_of(st.none(), NAMES)),
    st.binary(max_size=10), st.dictionaries(NAMES, st.integers(), max_size=2),
)
VALUES = st.one_of(
    SCALARS, st.lists(SCALARS, max_size=8), st.lists(st.floats(), max_size=60).map(numpy.array),
    st.lists(st.integers(-(2**31), 2**31 - 1), max_size=60).map(lambda items: numpy.array(items, dtype=numpy.int32)),
    st.binary(max_size=60).map(lambda data: numpy.frombuffer(data, dtype=numpy.uint8)),
)


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN (a float that is NaN converts to NaN)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b)


def _holds(pv: PVDef, result: Any) -> bool:
    """Whether ``result`` is a value of ``pv``'s type, by the config schema (strings are
    returned whole: cutting them to the record is the record's part)."""
    if pv.type == "string":
        return isinstance(result, str)
    PVDef.model_validate({**pv.model_dump(exclude_unset=True), "value": result})
    return True


@settings(max_examples=1500, deadline=None)
@given(pvs(), VALUES)
def test_any_value_converts_to_a_value_of_the_pvs_type_or_is_refused_by_name(pv: PVDef, value: Any) -> None:
    try:
        result = to_pv(pv, value)
    except ConversionError as exc:  # never another exception: a link's value never kills a plugin
        assert f" to {describe_type(pv)}: " in str(exc)
        return
    assert _holds(pv, result)
    assert _same(to_pv(pv, result), result)  # converting again changes nothing


@st.composite
def pv_and_its_value(draw: st.DrawFn) -> tuple[PVDef, Any]:
    """A PV and a value already of its type, in the form its record holds it."""
    pv = draw(pvs())
    element = {"float": st.floats(), "int": st.integers(*INT32)}
    if pv.is_waveform:
        assert pv.length is not None
        return pv, draw(st.lists(element[pv.type], max_size=pv.length))
    if pv.type == "string":
        return pv, draw(st.text())
    if pv.type == "bool":
        return pv, draw(st.integers(0, 1))
    if pv.type == "enum":
        return pv, draw(st.integers(0, len(pv.choices or []) - 1))
    return pv, draw(element[pv.type])


@settings(max_examples=500, deadline=None)
@given(pv_and_its_value())
def test_a_value_of_the_pvs_type_is_kept_as_it_is(case: tuple[PVDef, Any]) -> None:
    pv, value = case
    assert _same(to_pv(pv, value), value)


@settings(max_examples=500, deadline=None)
@given(st.integers(*INT32), st.floats(allow_nan=False), st.floats(width=32, allow_nan=False))
def test_numbers_written_as_text_read_back_the_same(number: int, real: float, single: float) -> None:
    text = to_pv(PVS["string"], number)
    assert to_pv(PVS["int"], text) == number
    assert to_pv(PVS["float"], to_pv(PVS["string"], real)) == real
    assert numpy.float32(to_pv(PVS["float"], to_pv(PVS["string"], numpy.float32(single)))) == numpy.float32(single)


@settings(max_examples=500, deadline=None)
@given(pvs(), st.one_of(st.integers(-(2**40), 2**40), st.booleans(), st.floats(allow_nan=False),
                        st.lists(st.floats(allow_nan=False), max_size=6)))
def test_numpy_values_convert_as_their_python_values(pv: PVDef, value: Any) -> None:
    """set_pv with numpy.int64/bool_/float64 scalars and arrays: as with int, bool, float, list."""
    as_numpy = numpy.array(value) if isinstance(value, list) else numpy.asarray(value)[()]
    outcomes = []
    for candidate in (value, as_numpy):
        try:
            outcomes.append(to_pv(pv, candidate))
        except ConversionError as exc:
            outcomes.append(str(exc).partition(": ")[2])  # the reason; the value's repr differs
    assert _same(outcomes[0], outcomes[1]) or isinstance(outcomes[0], str) and outcomes[0] == outcomes[1]


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=INT32[0], max_value=INT32[1]))
def test_any_float_in_range_truncates_into_an_int(real: float) -> None:
    assert to_pv(PVS["int"], real) == int(real) == math.trunc(real)


@settings(max_examples=300, deadline=None)
@given(st.lists(NAMES, min_size=1, max_size=MAX_CHOICES, unique=True), st.data())
def test_an_enum_read_as_text_reads_back_as_the_same_choice(choices: list[str], data: st.DataObject) -> None:
    pv = PVDef(type="enum", choices=choices)
    index = data.draw(st.integers(0, len(choices) - 1))
    name = to_pv(PVS["string"], Choice(index, choices[index]))
    assert name == choices[index] and to_pv(pv, name) in (index, choices.index(name))


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["float", "int"]), st.one_of(
    st.lists(st.floats(), max_size=8).map(numpy.array),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8).map(lambda items: numpy.array(items, dtype=numpy.int64)),
    st.lists(st.booleans(), max_size=8).map(numpy.array)))
def test_a_waveform_of_numbers_converts_as_each_element_would(kind: str, array: numpy.ndarray) -> None:
    """Numbers are converted all at once (numpy); the result is the scalar rules' for each."""
    waveform, scalar = PVDef(type=kind, length=8), PVS[kind]
    try:
        expected: Any = [to_pv(scalar, item) for item in array]
    except ConversionError as exc:
        expected = str(exc).partition(": ")[2]  # the reason
    try:
        result: Any = to_pv(waveform, array)
    except ConversionError as exc:
        result = str(exc).partition(": ")[2].partition(": ")[2]  # the reason after "element N: "
    assert _same(result, expected) or result == expected
