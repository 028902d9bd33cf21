"""How schema problems become ValidationIssues: one per problem, each with key path and line.

Pydantic reports field errors with a location; cross-field checks raise ``SchemaProblems``
carrying *their own* sub-paths, so "low is above high" points at ``low``, not at the PV.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from iochost.config.yaml_lines import KeyPath
from iochost.report import Severity, Stage, ValidationIssue

CONFIG_FILE = "config.yaml"
LineMap = Mapping[KeyPath, int]
Problems = list[tuple[KeyPath, str]]  # what a validator found: each problem at its key path


class SchemaProblems(ValueError):
    """Raised by validators: several problems, each at a path relative to the model."""

    def __init__(self, problems: Sequence[tuple[KeyPath, str]]) -> None:
        super().__init__("; ".join(f"{'.'.join(p) or '(top level)'}: {m}" for p, m in problems))
        self.problems = list(problems)


class ConfigError(Exception):
    """config.yaml (or a parameter override) is invalid; ``issues`` lists every problem."""

    def __init__(self, issues: list[ValidationIssue]) -> None:
        super().__init__("\n".join(str(issue) for issue in issues))
        self.issues = issues


def dotted(path: Iterable[Any]) -> str:
    """``rules[2].condition``: list positions in brackets, keys joined by dots."""
    text = ""
    for part in path:
        part = str(part)
        text += f"[{part}]" if part.isdigit() and text else f".{part}" if text else part
    return text or "(top level)"


def line_of(path: Sequence[Any], lines: LineMap | None) -> int | None:
    """The line of the deepest key of ``path`` present in the file (a missing key: its parent)."""
    if not lines:
        return None
    parts = tuple(str(part) for part in path)
    for end in range(len(parts), 0, -1):
        if parts[:end] in lines:
            return lines[parts[:end]]
    return None


def config_issue(path: Sequence[Any], message: str, lines: LineMap | None = None, *,
                 display: Sequence[Any] | None = None, file: str | None = CONFIG_FILE,
                 severity: Severity = Severity.ERROR) -> ValidationIssue:
    """One config-stage issue; ``display`` is the path as the user wrote it (e.g. ``arguments``)."""
    return ValidationIssue(
        stage=Stage.CONFIG, file=file, line=line_of(path, lines),
        message=f"{dotted(display if display is not None else path)}: {message}", severity=severity,
    )


def _unwrap_optional(annotation: Any) -> Any:
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    if len(args) == 1 and type(None) in getattr(annotation, "__args__", ()):
        return args[0]
    return annotation


def _allowed_keys(model: Any, loc: Sequence[Any]) -> list[str]:
    """Walk the schema along ``loc`` to the model that rejected an unknown key."""
    from pydantic import BaseModel

    def is_model(obj: Any) -> bool:
        return isinstance(obj, type) and issubclass(obj, BaseModel)

    current: Any = model
    for part in loc:
        current = _unwrap_optional(current)
        if is_model(current):
            field = current.model_fields.get(str(part))
            current = field.annotation if field is not None else None
        elif getattr(current, "__origin__", None) is dict:
            current = current.__args__[-1]
        else:
            return []
    current = _unwrap_optional(current)
    if is_model(current):
        return [name for name, field in current.model_fields.items() if not field.exclude]
    return []


def _describe(error: Mapping[str, Any], model: Any) -> str:
    kind, message, value = error["type"], str(error["msg"]), error.get("input")
    loc = tuple(error["loc"])
    if kind == "extra_forbidden":
        valid = _allowed_keys(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key{hint} (valid keys: {', '.join(valid)})" if valid else f"unknown key{hint}"
    if kind == "missing":
        return "required key is missing"
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if message.startswith("Input should be "):
        message = "should be " + message[len("Input should be "):]
    if not isinstance(value, (dict, list)) and kind not in ("value_error", "assertion_error"):
        message += f", got {value!r}"
        if isinstance(value, bool) and kind.startswith("string"):
            message += " (YAML reads yes/no/on/off/true/false as booleans: quote the text)"
        elif isinstance(value, str) and kind.startswith(("float", "int", "bool")):
            message += " (a quoted string)"
    return message


def _describe_key(key: Any) -> str:
    hint = ""
    if isinstance(key, bool):
        hint = "; YAML reads yes/no/on/off/true/false as booleans: quote the name"
    elif isinstance(key, (int, float)):
        hint = "; quote the name"
    return f"key {key!r} should be text{hint}"


def issues_from_pydantic(
    exc: ValidationError,
    model: Any,
    *,
    lines: LineMap | None = None,
    prefix: KeyPath = (),
    rename: Mapping[str, str] | None = None,
    file: str | None = CONFIG_FILE,
    note: str = "",
) -> list[ValidationIssue]:
    """Every error of ``exc`` as a config issue. ``rename`` maps canonical top-level keys
    back to the spelling used in the file (``pvs`` -> ``arguments``)."""
    issues: list[ValidationIssue] = []
    for path, text in problems_from_pydantic(exc, model, prefix):
        shown = path
        if rename and path and path[0] in rename:
            shown = (rename[path[0]],) + path[1:]
        issues.append(config_issue(path, text + note, lines, display=shown, file=file))
    return issues


def problems_from_pydantic(exc: ValidationError, model: Any, prefix: KeyPath = ()) -> list[tuple[KeyPath, str]]:
    """Every error of ``exc`` as (key path, message): a SchemaProblems raised inside a
    validator at its own sub-paths, a key that is not text at its mapping."""
    problems: list[tuple[KeyPath, str]] = []
    for error in exc.errors():
        loc = prefix + tuple(str(part) for part in error["loc"])
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, SchemaProblems):
            problems += [(loc + sub, text) for sub, text in cause.problems]
        elif loc and loc[-1] == "[key]":  # a mapping key that is not text: report at the mapping
            problems.append((loc[:-2], _describe_key(error["input"])))
        else:
            problems.append((loc, _describe(error, model)))
    return problems
