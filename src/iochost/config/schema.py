"""The config.yaml schema's root: PluginConfig and its sections (a PV is config/pv_definition.py,
``parameters:`` config/parameters.py).

Every model is strict (no "1.0" -> 1.0, no 1 -> True) and forbids unknown keys, because
a misspelt ``unti:`` or a quoted number silently ignored is a PV that looks right in
Phoebus and is not. The expressions of ``transforms:`` and ``rules:`` are compiled here,
against the names the config declares, so a config that validates runs.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from iochost.config.issues import ConfigError, Problems, SchemaProblems, config_issue, issues_from_pydantic
from iochost.config.parameters import Parameters
from iochost.config.pv_definition import PVDef
from iochost.config.pvnames import segment_problem
from iochost.report import Severity as IssueSeverity
from iochost.report import ValidationIssue
from iochost.rule_language.expressions import ExpressionError, compile_expression


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
    def _disjoint(self) -> PVGroup:
        problems: Problems = [(("outputs", name), "also declared under inputs")
                              for name in self.outputs if name in self.inputs]
        problems += [(("outputs", name, "autosave"), "only for inputs (the plugin sets its outputs)")
                     for name, pv in self.outputs.items() if "autosave" in pv.model_fields_set]
        if problems:
            raise SchemaProblems(problems)
        for pv in self.inputs.values():
            if pv.latch:
                pv.ignore("latch", "only outputs latch (a rule latches the outputs it sets)", False)
        return self


class Transform(BaseModel):
    """iocmng 2.7: an output computed from an expression, each cycle."""

    model_config = ConfigDict(extra="forbid", strict=True)

    output: str = Field(description="the output PV the result is written to")
    expression: str = Field(description="an expression over the PVs' values (the rule language)")


class Rule(BaseModel):
    """iocmng 2.7: when ``condition`` holds, set ``outputs``, put ``actuators`` (wired PVs)
    and show ``message`` (on MESSAGE, and timestamped on ``message_pv`` if given)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(default="", description="the rule's name, in messages and the log")
    condition: str = Field(description="an expression over the PVs' values; the rule fires while it is true")
    message: str = Field(default="", description="shown on MESSAGE while the rule fires")
    message_pv: str | None = Field(default=None, description="a string output that also gets the message, "
                                   "timestamped")
    outputs: dict[str, Any] = Field(default_factory=dict, description="output PV name: the value it takes "
                                    "while the rule fires")
    actuators: dict[str, Any] = Field(default_factory=dict, description="wired PV name: the value put to its "
                                      "external PV when the rule fires")


class PluginConfig(BaseModel):
    """A whole config.yaml. ``arguments:`` (iocmng 2.7) is read as ``pvs:`` (iocmng 2.0)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    parameters: Parameters = Field(default_factory=Parameters)
    pvs: PVGroup = Field(default_factory=PVGroup)
    transforms: list[Transform] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    rule_defaults: dict[str, Any] = Field(default_factory=dict, description="output PV name: its value "
                                          "while no rule sets it (a latched output keeps its own)")
    # iocmng's PLUGIN_PREFIX: the plugin's part of its PV names, instead of its name upper-cased
    prefix: str | None = Field(default=None, description="the plugin's part of its PV names "
                               "(PREFIX:THIS:PV), instead of its name upper-cased")

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
    def _declarative(self, info: ValidationInfo) -> PluginConfig:
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
                 for name, pv in pvs.items() for path, message in pv.key_warnings] + self._warnings
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

    def with_parameters(self, overrides: dict[str, Any]) -> PluginConfig:
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
