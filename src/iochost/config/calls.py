"""Functions that a config's expressions call and the library does not hold (yet).

iocmng lets a plugin register expression functions when its module is imported or from its
``initialize()`` (MANUAL §15). Validation imports the plugin but never runs ``initialize()``,
so there a function still unknown after the import is a warning (``registration_warnings``);
the worker looks again right after ``initialize()`` returns, and a function still unknown
then fails the start (``still_unregistered``), naming the function, its expression and its
config.yaml line.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from iochost.config import PluginConfig
from iochost.config.issues import config_issue
from iochost.report import Severity, ValidationIssue
from iochost.rule_language.expressions import compile_expression


@dataclass(frozen=True)
class UnregisteredCall:
    """One function an expression calls that the library lacks, and where the expression is."""

    path: tuple[str, ...]  # ("transforms", "2", "expression") or ("rules", "0", "condition")
    expression: str
    function: str


class UnregisteredFunctionError(NameError):
    """An expression calls a function nobody registered, neither at import nor in initialize()."""


def unregistered_calls(config: PluginConfig, library: Collection[str]) -> list[UnregisteredCall]:
    """Every (expression, function) of the transforms and rule conditions whose function is not
    in ``library``, in file order."""
    names = config.expression_names()
    located = [(("transforms", str(index), "expression"), transform.expression)
               for index, transform in enumerate(config.transforms)]
    located += [(("rules", str(index), "condition"), rule.condition) for index, rule in enumerate(config.rules)]
    known = set(library)
    found = []
    for path, text in located:
        expression = compile_expression(text, names, check_functions=False)  # the config validated it
        found += [UnregisteredCall(path, expression.text, function)
                  for function in sorted(expression.calls - known)]
    return found


def _issue(config: PluginConfig, call: UnregisteredCall, message: str, severity: Severity) -> ValidationIssue:
    return config_issue(call.path, message, config.key_lines, severity=severity)


def registration_warnings(config: PluginConfig, library: Collection[str]) -> list[ValidationIssue]:
    """A warning per function not registered once the plugin is imported: only its
    ``initialize()`` can still register it, and the worker refuses to start if it does not."""
    return [_issue(config, call, f"{call.expression!r} calls {call.function}(), which importing the plugin does "
                   "not register: its initialize() must register it (register() of iochost or "
                   "iocmng.core.functions), or the start fails", Severity.WARNING)
            for call in unregistered_calls(config, library)]


def still_unregistered(config: PluginConfig, library: Collection[str]) -> UnregisteredFunctionError | None:
    """The error that fails a start whose ``initialize()`` returned without registering every
    function the expressions call; None when all are registered."""
    calls = unregistered_calls(config, library)
    if not calls:
        return None
    where = []
    for call in calls:
        issue = _issue(config, call, f"{call.expression!r} calls {call.function}()", Severity.ERROR)
        where.append(f"{issue.file}:{issue.line}: {issue.message}" if issue.line else f"{issue.file}: {issue.message}")
    functions = ", ".join(dict.fromkeys(f"{call.function}()" for call in calls))
    return UnregisteredFunctionError(
        f"{functions} not registered after initialize() returned ({'; '.join(where)}); register it at import "
        f"or in initialize(); the library has: {', '.join(sorted(library))}")
