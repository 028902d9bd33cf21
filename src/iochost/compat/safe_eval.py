"""``iocmng.core.safe_eval.safe_eval``: one-shot evaluation with iochost's expression checker.

iocmng plugins call ``safe_eval(expression, variables, extra_functions=None)`` directly
(iocmng's MANUAL, "Python API"). The language, the whitelist and the function library are
iochost's (rule_language.expressions, rule_language.functions); what differs from a config's
expressions is how failures surface, kept as iocmng's callers expect them: text that does not
parse raises ``SyntaxError``, a call of a function the library does not have or any
construct outside the language raises ``ValueError`` (iochost's ``ExpressionError``), and a
name missing from ``variables`` raises ``NameError`` when the expression reads it.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from typing import Any

from iochost.rule_language.expressions import ExpressionError, compile_expression
from iochost.rule_language.functions import get_registry


def safe_eval(expression: str, variables: Mapping[str, Any],
              extra_functions: Mapping[str, Callable[..., Any]] | None = None) -> Any:
    """The value of ``expression`` with ``variables`` and the function library in scope;
    ``extra_functions`` are added to (and override) the library for this call only."""
    if not isinstance(expression, str):
        raise TypeError(f"expression must be a string, got {type(expression).__name__}")
    tree = ast.parse(expression.strip(), mode="eval")  # SyntaxError as iocmng raises it
    functions = get_registry()
    functions.update(extra_functions or {})
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in functions:
            raise ExpressionError(f"Unsafe expression {expression!r}: function {node.func.id!r} is not registered; "
                                  f"the library has: {', '.join(sorted(functions))}")
    # Every name read passes the check: one absent from `variables` is iocmng's NameError at evaluation.
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    try:
        checked = compile_expression(expression, names, functions)
    except ExpressionError as exc:
        raise ExpressionError(f"Unsafe expression: {exc}", exc.column) from None
    return checked.evaluate(variables, functions)
