"""The promise of docs/how-to/writing-plugins.md, "validates => starts", tried with configs nobody wrote by hand.

Configs are generated from the one config schema (``iochost.config``): every field
of ``PVDef``, with values drawn from its type annotation (so every JSON/YAML type, NaN and
infinities, non-ASCII and control characters, huge and negative numbers); the schema alone
decides which fields a PV keeps. Each generated config that the schema accepts is added to
a real daemon by ``local_path`` (its validation probe builds the records as the worker
will), must answer 201 ``running``, and every declared PV must answer a real CA read with
its declared value, limits, units, precision, states and description.

The examples are derandomized so CI runs the same ones every time; set
``IOCHOST_PROPERTY_EXAMPLES`` to run more (and ``IOCHOST_PROPERTY_RANDOM=1`` for new ones).
The ``@example`` cases are configs that broke a release: keep them. Hand-written plugins
(registered functions, import errors) are in test_validates_starts_written.py.
"""

from __future__ import annotations

import itertools
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Union, get_args, get_origin

import httpx
import numpy
import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from iochost.alarms import SEVERITIES
from iochost.config import ConfigError, PVDef, PVGroup, load_config
from iochost.config.alarm_fields import LIMIT_SEVERITY
from iochost.config.pv_fields import PV_TYPES
from iochost.kinds import Mode

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("IOCHOST_PROPERTY_EXAMPLES", "60"))
RANDOM = os.environ.get("IOCHOST_PROPERTY_RANDOM") == "1"
PLUGIN_CODE = {
    "task": "from iochost import TaskBase\n\n\nclass Generated(TaskBase):\n"
            "    def initialize(self):\n        pass\n\n    def execute(self):\n        pass\n\n"
            "    def cleanup(self):\n        pass\n",
    "job": "from iochost import JobBase, JobResult\n\n\nclass Generated(JobBase):\n"
           "    def initialize(self):\n        pass\n\n"
           "    def execute(self):\n        return JobResult(success=True)\n",
}
CA_UNITS_BYTES = 7  # MAX_UNITS_SIZE 8 of db_access.h, the NUL included
NO_PV_DEF_FIELDS = {"type"}  # drawn first: the schema reads every other field by it


# -- strategies from the schema's annotations --------------------------------------------------
def _scalars(pool: list[str]) -> st.SearchStrategy[Any]:
    """Any YAML scalar, with the strings the schema names (severities) and those this PV
    already uses (its choices) among the texts, so keys such as an enum's alarm can match."""
    texts = st.text(max_size=45) | st.sampled_from([*SEVERITIES, *pool] or [""])
    numbers = st.integers() | st.integers(-1000, 1000) | st.floats(allow_nan=True, allow_infinity=True)
    return st.none() | st.booleans() | numbers | texts


def from_annotation(annotation: Any, pool: list[str]) -> st.SearchStrategy[Any]:
    """Values of the type a pydantic field declares, as config.yaml could spell them."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any:
        return _scalars(pool) | st.lists(_scalars(pool), max_size=12)
    if origin in (Union, types.UnionType):
        return st.one_of([from_annotation(arg, pool) for arg in args if arg is not type(None)])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is typing.Annotated:
        return from_annotation(args[0], pool)
    if origin is list:
        return st.lists(from_annotation(args[0], pool), max_size=18)
    if origin is dict:
        return st.dictionaries(from_annotation(args[0], pool), from_annotation(args[1], pool), max_size=4)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return st.fixed_dictionaries({}, optional={name: from_annotation(field.annotation, pool)
                                                   for name, field in annotation.model_fields.items()})
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers(-5, 40) | st.integers()
    if annotation is float:
        return st.integers(-1000, 1000) | st.floats(allow_nan=True, allow_infinity=True)
    if annotation is str:
        return st.text(max_size=45) | st.sampled_from([*SEVERITIES, *pool] or [""])
    raise TypeError(f"no strategy for the annotation {annotation!r}")


def _accepts(pv: dict[str, Any]) -> bool:
    try:
        PVDef.model_validate(pv)
    except ValidationError:
        return False
    return True


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a union (None aside), else the annotation itself."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [arg for arg in get_args(annotation) if arg is not type(None)]
    return [annotation]


def _grow(draw: st.DrawFn, pv: dict[str, Any], name: str) -> dict[str, Any]:
    """``pv`` with field ``name`` set to a drawn value the schema accepts, else ``pv`` as it
    was. A nested model, a mapping or a list grows one entry at a time, each kept when the PV
    still validates: drawn whole, an alarm or a list of choices would almost never be."""
    pool = [choice for choice in pv.get("choices") or [] if isinstance(choice, str)]
    kind = draw(st.sampled_from(_members(PVDef.model_fields[name].annotation)))
    entries: list[tuple[Any, st.SearchStrategy[Any]]]
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        keys = draw(st.permutations(list(kind.model_fields)))
        entries = [(key, from_annotation(kind.model_fields[key].annotation, pool)) for key in keys
                   if draw(st.booleans())]
        value: Any = {}
    elif get_origin(kind) is dict:
        key_type, item_type = get_args(kind)
        entries = [(draw(from_annotation(key_type, pool)), from_annotation(item_type, pool))
                   for _ in range(draw(st.integers(0, 4)))]
        value = {}
    elif get_origin(kind) is list:
        entries = [(None, from_annotation(get_args(kind)[0], pool)) for _ in range(draw(st.integers(0, 18)))]
        value = []
    else:
        candidate = {**pv, name: draw(from_annotation(kind, pool))}
        return candidate if _accepts(candidate) else pv
    for key, strategy in entries:
        item = draw(strategy)
        grown = [*value, item] if isinstance(value, list) else {**value, key: item}
        if _accepts({**pv, name: grown}):
            value = grown
    candidate = {**pv, name: value}
    return candidate if _accepts(candidate) else pv


@st.composite
def pv_defs(draw: st.DrawFn) -> dict[str, Any]:
    """One PV: its type, then the other fields of PVDef in a random order, each tried with a
    drawn value and kept when the schema still accepts the PV."""
    pv: dict[str, Any] = {"type": draw(st.sampled_from(PV_TYPES))}
    for name in draw(st.permutations([name for name in PVDef.model_fields if name not in NO_PV_DEF_FIELDS])):
        if draw(st.booleans()):
            pv = _grow(draw, pv, name)
    if pv["type"] == "float" and draw(st.booleans()):  # iocmng's default type, given by leaving it out
        del pv["type"]
    return pv


@st.composite
def configs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A plugin kind and a config.yaml document the schema accepts, with 1..24 PVs (a PV costs
    little, an add a second: many PVs per add cover more of the schema per second)."""
    kind = draw(st.sampled_from(("task", "job")))
    parameters: dict[str, Any] = {"interval": 3600.0}
    if kind == "task":
        parameters["mode"] = draw(st.sampled_from(get_args(Mode)))
    groups: dict[str, dict[str, Any]] = {"inputs": {}, "outputs": {}}
    for index in range(draw(st.integers(1, 24))):
        group = draw(st.sampled_from(("inputs", "outputs")))
        candidate = {**groups, group: {**groups[group], f"V{index}": draw(pv_defs())}}
        try:
            PVGroup.model_validate(candidate)
        except ValidationError:
            continue  # a group rule (autosave on an output): not this PV
        groups = candidate
    # iocmng MANUAL section 11 lists a group's PVs, each with its name:
    listed = {group: [{"name": name, **pv} for name, pv in pvs.items()] if pvs and draw(st.booleans()) else pvs
              for group, pvs in groups.items()}
    config: dict[str, Any] = {"parameters": parameters, "pvs": listed}
    if draw(st.booleans()):  # iocmng's prefix: segment (MANUAL section 21), instead of the name upper-cased;
        # "SEG" first: never the daemon's own IOCHOST nor another plugin's; short enough for every PV name
        part = st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True)
        config["prefix"] = "SEG" + ":".join(draw(st.lists(part, min_size=1, max_size=3)))
    return kind, config


# -- what a CA client must read back -------------------------------------------------------------
def _same(read: Any, declared: Any) -> bool:
    if isinstance(declared, float) and math.isnan(declared):
        return isinstance(read, float) and math.isnan(read)
    return bool(read == declared)


def _expected_value(pv: PVDef) -> Any:
    """The declared value as a CA client sees it, worked out from the config itself."""
    value = pv.value
    if pv.is_waveform:
        assert pv.length is not None
        items = value if isinstance(value, list) else [value or 0] * pv.length
        return [float(item) for item in items] + [0.0] * (pv.length - len(items))
    if pv.type in ("float", "int"):
        return float(value or 0)
    if pv.type == "string":
        return value or ""
    if pv.type == "bool":
        return int(value == pv.onam) if isinstance(value, str) else int(bool(value))
    assert pv.choices is not None
    return pv.choices.index(value) if isinstance(value, str) else int(value or 0)


def _check_pv(ca: Any, full: str, pv: PVDef, writable: bool) -> list[str]:
    """What differs between the declared PV and what CA reads: an empty list when none."""
    problems: list[str] = []
    if pv.type == "string":
        datatype = ca.DBR_CHAR_STR if pv.is_long_string else ca.DBR_STRING
        read = ca.caget(full, datatype=datatype, timeout=5)
        if read != _expected_value(pv):
            problems.append(f"value {read!r} != {_expected_value(pv)!r}")
    else:
        read = ca.caget(full, format=ca.FORMAT_CTRL, timeout=5)
        # a waveform of one element reads as a scalar
        value = [float(x) for x in numpy.atleast_1d(read)] if pv.is_waveform else float(read)
        expected = _expected_value(pv)
        if not (all(map(_same, value, expected)) and len(value) == len(expected) if pv.is_waveform
                else _same(value, expected)):
            problems.append(f"value {value!r} != {expected!r}")
        if pv.type in ("float", "int"):
            problems += _check_limits(read, pv, writable)
        elif pv.type == "bool" and list(read.enums) != [pv.znam, pv.onam]:
            problems.append(f"states {read.enums!r} != {[pv.znam, pv.onam]!r}")
        elif pv.type == "enum" and list(read.enums) != pv.choices:
            problems.append(f"states {read.enums!r} != {pv.choices!r}")
    if pv.description is not None and ca.caget(full + ".DESC", timeout=5) != pv.description:
        problems.append(f"DESC {ca.caget(full + '.DESC', timeout=5)!r} != {pv.description!r}")
    return problems


def _check_limits(read: Any, pv: PVDef, writable: bool) -> list[str]:
    cast = int if pv.type == "int" else float
    # DBR_CTRL's units field is char[8] in the CA protocol: CA clients see 7 bytes of EGU's 15
    units = (pv.unit or "").encode()[:CA_UNITS_BYTES].decode(errors="ignore")
    declared = {"units": units, "lower_disp_limit": pv.low, "upper_disp_limit": pv.high}
    if pv.type == "float" and not pv.is_waveform:
        declared["precision"] = pv.prec
    if writable and not pv.is_waveform:
        declared.update(lower_ctrl_limit=pv.low, upper_ctrl_limit=pv.high)
    alarm = pv.alarm.model_dump() if isinstance(pv.alarm, BaseModel) else {}
    for key, field in (("hihi", "upper_alarm_limit"), ("high", "upper_warning_limit"),
                       ("low", "lower_warning_limit"), ("lolo", "lower_alarm_limit")):
        # EPICS reports a limit whose severity is NO_ALARM as NaN (it raises no alarm), which
        # an integer record's DBR_CTRL_LONG carries as 0
        silent = math.nan if pv.type == "float" else 0
        declared[field] = silent if alarm.get(LIMIT_SEVERITY[key]) == "NO_ALARM" else alarm.get(key)
    problems = []
    for field, value in declared.items():
        if value is None:
            continue  # not declared: the record's default
        want = cast(value) if isinstance(value, float) and math.isfinite(value) else value
        got = getattr(read, field)
        if field == "units":  # a multi-byte character cut in two decodes as U+FFFD, or not at all
            got = got.rstrip("\ufffd")
        if not _same(got, want):
            problems.append(f"{field} {got!r} != {want!r}")
    return problems


# -- the property --------------------------------------------------------------------------------
_counter = itertools.count()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A daemon of this module's own: a property test adds a plugin a second, more than the
    default --add-rate lets a client do."""
    from daemon_harness import Daemon

    root = tmp_path_factory.mktemp("daemon")
    with Daemon(root / "data", "--add-rate", "off").serving() as d:
        yield d


@pytest.fixture(scope="module")
def generated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generated")


def _write_plugin(root: Path, kind: str, config: dict[str, Any]) -> Path:
    plugin = root / f"p{next(_counter)}"
    plugin.mkdir()
    if "prefix" in config:  # PV names no earlier example served: CA clients cache channels by name
        config = {**config, "prefix": f"{config['prefix']}_{plugin.name}"}
    (plugin / "generated.py").write_text(PLUGIN_CODE[kind])
    (plugin / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=False, sort_keys=False))
    return plugin


def _starts(api: httpx.Client, ca: Any, plugin: Path, kind: str) -> None:
    """The plugin validates, starts, and every declared PV reads back as declared."""
    try:
        config = load_config(plugin)
    except ConfigError as exc:  # the generator only makes what the schema accepts
        raise AssertionError(f"schema refused a generated config: {exc.issues}") from None
    name = plugin.name
    response = api.post("/plugins", json={"name": name, "local_path": str(plugin)})
    try:
        assert response.status_code == 201, f"{response.status_code} {response.text}\n" \
                                            f"{(plugin / 'config.yaml').read_text()}"
        record = response.json()
        assert record["state"] == "running" and record["kind"] == kind, record
        prefix = f"IOCHT:{config.prefix or name.upper()}"
        problems = []
        for group, pvs in (("inputs", config.pvs.inputs), ("outputs", config.pvs.outputs)):
            for short, pv in pvs.items():
                problems += [f"{group}.{short}: {p}" for p in _check_pv(ca, f"{prefix}:{short}", pv,
                                                                      group == "inputs" and not pv.wired)]
        assert not problems, "\n".join(problems) + "\n" + (plugin / "config.yaml").read_text()
    finally:
        if response.status_code == 201:
            assert api.delete(f"/plugins/{name}").status_code == 200


# Every field of every PV type and every alarm key, in one config: the generated examples
# reach most type x field pairs (82 of the 94 in the 60 derandomized examples, counted when
# this was written) but few full sets of alarm limits, whose order the schema checks. Links
# lead nowhere: the wired inputs keep their value.
SEVERITY_LIMITS = {"lolo": -8, "low": -5, "high": 5, "hihi": 8, "llsv": "MAJOR", "lsv": "MINOR", "hsv": "MINOR",
                   "hhsv": "INVALID", "hyst": 1}
EVERY_FIELD: dict[str, Any] = {"parameters": {"interval": 3600.0, "mode": "continuous"}, "pvs": {
    "inputs": {
        "F": {"type": "float", "value": 2.5, "unit": "mA", "prec": 2, "low": -10, "high": 10, "description": "beam",
              "alarm": SEVERITY_LIMITS, "mdel": 0.1, "adel": 0.2, "autosave": True, "buffer_size": 4},
        "IW": {"type": "int", "length": 5, "value": [1, 2, 3], "low": 0, "high": 10, "unit": "V", "description": "w"},
        "SL": {"type": "string", "length": 100, "value": "é" * 45, "description": "long"},
        "B": {"type": "bool", "value": True, "znam": "Closed", "onam": "Open",
              "alarm": {"zsv": "MAJOR", "osv": "NO_ALARM"}},
        "E": {"type": "enum", "choices": ["A", "B", "C"], "value": "B", "alarm": {"C": "MAJOR"}, "description": "e"},
        "WF": {"type": "float", "value": 1.0, "link": "NOWHERE:F", "link_mode": "monitor", "trigger": True},
        "WI": {"type": "int", "link": "NOWHERE:I", "link_mode": "poll", "poll_rate": 2},
        "WE": {"type": "enum", "choices": ["X", "Y"], "value": 1, "link": "NOWHERE:E.VAL"},
    },
    "outputs": {
        "I": {"type": "int", "value": 7, "unit": "counts", "low": -10, "high": 100, "alarm": SEVERITY_LIMITS,
              "mdel": 1, "adel": 2, "latch": True, "latch_dir": "fall", "buffer_size": 3},
        "BL": {"type": "bool", "alarm_on": "MINOR", "latch": True, "latch_dir": "any", "description": "latched"},
        "EL": {"type": "enum", "choices": ["OK", "BAD"], "latch": True, "latch_dir": "rise"},
        "FW": {"type": "float", "length": 4, "value": 1.5, "prec": 1, "low": -1, "high": 2, "unit": "A"},
        "FO": {"type": "float", "high": 3, "alarm_on": "MAJOR", "value": 1},
        "S": {"type": "string", "value": "héllo", "description": "text", "link": "NOWHERE:S"},
    }}}

# No shrinking: each example is a real add (a second or so), and the failure message already
# holds the whole config.yaml that failed.
PROPERTY_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
                             phases=[Phase.explicit, Phase.generate],
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                    HealthCheck.function_scoped_fixture])


# Each example is a real add: longer than the suite's 180 s per test. (When pytest-timeout
# fires, its stack dump of cothread's threads crashes Python 3.11: keep well clear of it.)
@pytest.mark.timeout(max(600, 10 * EXAMPLES))
@PROPERTY_SETTINGS
@given(case=configs())
@example(case=("task", {"parameters": {"interval": 3600.0, "mode": "continuous"},  # 0.0 into a longin's LOPR
                        "pvs": {"inputs": {"V0": {"type": "int", "low": 0, "high": 10}}, "outputs": {}}}))
@example(case=("task", {"parameters": {"interval": 3600.0, "mode": "continuous"},
                        "pvs": {"inputs": {}, "outputs": {"V0": {"type": "int", "low": -3, "high": 7,
                                                                 "alarm": {"high": 5, "hihi": 6}}}}}))
@example(case=("job", {"parameters": {"interval": 3600.0},  # NO_ALARM limits read as NaN / 0; units cut by CA
                       "pvs": {"inputs": {"V0": {"type": "float", "unit": "NO_ALARM",
                                                 "alarm": {"high": 0, "hsv": "NO_ALARM"}}},
                               "outputs": {"V1": {"type": "int", "high": 346, "alarm_on": "NO_ALARM"},
                                           "V2": {"type": "int", "length": 1, "value": 7}}}}))
@example(case=("task", EVERY_FIELD))
def test_every_config_the_schema_accepts_validates_and_starts(
        case: tuple[str, dict[str, Any]], daemon: Any, api: httpx.Client, ca: Any, generated_dir: Path) -> None:
    kind, config = case
    _starts(api, ca, _write_plugin(generated_dir, kind, config), kind)

