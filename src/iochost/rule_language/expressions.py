"""Safe expressions: a small AST whitelist, checked once when the config is validated.

Why not a library: simpleeval and asteval are the maintained candidates; both allow
attribute access or subscripts by default and would need the same whitelist on top,
and neither reports *which* name is unknown before evaluation. iocmng 2.7's language is
small (comparisons, boolean logic, arithmetic, the conditional expression, literal
lists/tuples, calls of library functions), so the whitelist *is* the language: anything
else (attributes, subscripts, lambdas, comprehensions, walrus, f-strings, starred
arguments) is refused with the construct's name. Evaluation runs the compiled code with
no builtins and only the checked names in scope.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import CodeType
from typing import Any

from iochost.rule_language.functions import LIBRARY

_ALLOWED = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
    ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.Constant, ast.Name, ast.Load, ast.IfExp, ast.Call, ast.keyword, ast.Tuple, ast.List,
)
_CONSTANTS = {"True", "False", "None"}  # ast.Constant already; kept for old-style names


class ExpressionError(ValueError):
    """Why an expression is refused; ``column`` is 1-based within the expression, if known."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.column = column


@dataclass(frozen=True)
class Expression:
    """A checked expression: its text, compiled code, the names it reads and the functions
    it calls (``calls``: a plugin may register those after the check, in ``initialize()``)."""

    text: str
    code: CodeType
    names: frozenset[str]
    calls: frozenset[str]

    def evaluate(self, variables: Mapping[str, Any], functions: Mapping[str, Any] | None = None) -> Any:
        scope = dict(LIBRARY if functions is None else functions)
        scope.update(variables)
        return eval(self.code, {"__builtins__": {}}, scope)  # noqa: S307 - checked by compile_expression


def _describe(node: ast.AST) -> str:
    names = {ast.Attribute: "attribute access", ast.Subscript: "subscript", ast.Lambda: "lambda",
             ast.NamedExpr: "assignment (:=)", ast.Starred: "starred argument", ast.JoinedStr: "f-string",
             ast.Dict: "dict literal", ast.Set: "set literal", ast.ListComp: "comprehension",
             ast.GeneratorExp: "generator", ast.SetComp: "comprehension", ast.DictComp: "comprehension",
             ast.Await: "await", ast.Yield: "yield"}
    return names.get(type(node), type(node).__name__)


def compile_expression(text: Any, known_names: Collection[str],
                       functions: Collection[str] | None = None, check_functions: bool = True) -> Expression:
    """Check ``text`` against the whitelist, the library and ``known_names``; ExpressionError
    says what is wrong (syntax, construct, unknown name or function). ``check_functions=False``
    leaves the names of called functions unchecked: where the plugin's module is not imported,
    the functions it registers are not known yet."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f"should be an expression (a non-empty string), got {text!r}")
    library = set(LIBRARY if functions is None else functions)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error in {text!r}: {exc.msg}", exc.offset) from None
    names: set[str] = set()
    calls: set[str] = set()
    for node in ast.walk(tree):
        column = getattr(node, "col_offset", None)
        column = None if column is None else column + 1
        if not isinstance(node, _ALLOWED):
            raise ExpressionError(f"{_describe(node)} is not allowed in {text!r}", column)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise ExpressionError(f"only library functions may be called in {text!r}", column)
            calls.add(node.func.id)
            if check_functions and node.func.id not in library:
                raise ExpressionError(f"unknown function {node.func.id!r} in {text!r}; the library has: "
                                      f"{', '.join(sorted(library))}", column)
        elif isinstance(node, ast.Name) and node.id not in _CONSTANTS:
            called = any(isinstance(parent, ast.Call) and parent.func is node for parent in ast.walk(tree))
            if not called:
                if node.id not in known_names:
                    raise ExpressionError(f"unknown name {node.id!r} in {text!r}; known: "
                                          f"{', '.join(sorted(known_names)) or '(none)'}", column)
                names.add(node.id)
    return Expression(text.strip(), compile(tree, "<expression>", "eval"), frozenset(names), frozenset(calls))
