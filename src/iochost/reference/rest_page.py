"""docs/reference/rest.md, from the app's OpenAPI document (``create_app``): every route with
its method, path, summary, parameters, body and answers, grouped by tag, and the token it
needs, read from the route's own dependencies (``api.auth``, ``api.ratelimit``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from iochost.api.app import API_PREFIX, included_routers
from iochost.api.auth import may_read, require_admin, require_read
from iochost.api.bodies import ERROR_RESPONSES, ErrorBody
from iochost.api.ratelimit import limit_expensive
from iochost.errors import ErrorCode
from iochost.reference.application import app
from iochost.reference.errors_page import codes_by_status
from iochost.reference.markdown import anchor, cell, code, heading, table, text

Operation = dict[str, Any]
# The role a route's dependency asks of the caller's token, as the page names it.
ROLES: dict[Callable[..., Any], str] = {require_admin: "admin", require_read: "read",
                                        may_read: "none (a reader is told more)"}
ERROR_SCHEMA = f"#/components/schemas/{ErrorBody.__name__}"
_CODE_WORD = re.compile(r"\b[A-Z][A-Z_]+[A-Z]\b")


def _calls(dependant: Dependant) -> list[Callable[..., Any]]:
    """Every dependency a route runs, nested ones included."""
    found: list[Callable[..., Any]] = []
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            found.append(dependency.call)
        found += _calls(dependency)
    return found


def guards() -> dict[tuple[str, str], list[Callable[..., Any]]]:
    """(METHOD, path as OpenAPI writes it) -> the dependencies of the route that serves it,
    from the routers the app includes (``included_routers``)."""
    found: dict[tuple[str, str], list[Callable[..., Any]]] = {}
    for prefix, router in included_routers():
        for route in router.routes:
            if isinstance(route, APIRoute):
                for method in route.methods or ():
                    found[(method, prefix + route.path_format)] = _calls(route.dependant)
    return found


def role(calls: list[Callable[..., Any]]) -> str:
    """The strongest role a route's dependencies ask for; none when it checks no token."""
    for check, name in ROLES.items():
        if check in calls:
            return name
    return "none"


def common_errors() -> list[int]:
    """The error statuses the app declares for every route (``FastAPI(responses=ERROR_RESPONSES)``)."""
    return sorted(int(status) for status in ERROR_RESPONSES)


def _is_error(answer: dict[str, Any]) -> bool:
    schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref") == ERROR_SCHEMA)


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], Operation]:
    """(METHOD, path) -> operation, in the document's order."""
    return {(method.upper(), path): operation
            for path, item in document["paths"].items() for method, operation in item.items()}


def _schema_name(schema: dict[str, Any]) -> str:
    """A body or answer schema as its model's name (``PluginRequest``), optional ones marked."""
    if "$ref" in schema:
        return code(schema["$ref"].rsplit("/", 1)[-1])
    members = [member for member in schema.get("anyOf", []) if member.get("type") != "null"]
    if len(members) == 1 and len(schema["anyOf"]) == 2:
        return _schema_name(members[0]) + " or nothing"
    if schema.get("type") == "array" and "items" in schema:
        return "list of " + _schema_name(schema["items"])
    return code(str(schema.get("type", "any")))


def _parameter(parameter: dict[str, Any]) -> list[str]:
    schema = parameter.get("schema", {})
    default = f"`{schema['default']}`" if "default" in schema else ("required" if parameter.get("required")
                                                                     else "none")
    kind = schema.get("type") or " or ".join(m.get("type", "any") for m in schema.get("anyOf", [])) or "any"
    return [code(parameter["name"]), parameter["in"], code(kind), default,
            cell(parameter.get("description") or schema.get("description") or "")]


def _answers(operation: Operation, common: set[int]) -> list[str]:
    """The answers this operation declares beyond the errors every route shares."""
    found = []
    for status, answer in operation["responses"].items():
        if int(status) in common and _is_error(answer):
            continue
        content = answer.get("content", {})
        if "application/json" in content and content["application/json"].get("schema"):
            body = _schema_name(content["application/json"]["schema"])
        else:
            body = ", ".join(code(media) for media in content) or "no body"
        found.append(f"`{status}` {body}: {text(answer.get('description', ''))}")
    return found


def _named_codes(operation: Operation) -> list[ErrorCode]:
    """The error codes the operation's description names, in the enum's order."""
    words = set(_CODE_WORD.findall(operation.get("description") or ""))
    return [error for error in ErrorCode if error.value in words]


def _anchor(method: str, path: str) -> str:
    """The id MkDocs gives the route's heading (the code span's text counts, its backticks do not)."""
    return anchor(f"{method} {path}")


def _operation_section(method: str, path: str, operation: Operation, calls: list[Callable[..., Any]],
                       common: set[int]) -> list[str]:
    lines = ["", f"### {method} `{path}`", ""]
    lines.append(f"**{text(operation.get('summary', ''))}.**" + (
        f" {text(operation['description'])}" if operation.get("description") else ""))
    guard = f"Token: {role(calls)}"
    if limit_expensive in calls:
        guard += "; counted by the rate limit of expensive operations ([settings](settings.md))"
    lines += ["", f"- {guard}."]
    body = operation.get("requestBody")
    if body is not None:
        schema = body.get("content", {}).get("application/json", {}).get("schema", {})
        lines.append(f"- Body: {_schema_name(schema)}" + (" (required)." if body.get("required") else "."))
    for answer in _answers(operation, common):
        lines.append(f"- Answers {answer}")
    named = _named_codes(operation)
    if named:
        lines.append("- Error codes it names: " + ", ".join(f"[`{error.value}`](errors.md)" for error in named) + ".")
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["", *table(["parameter", "in", "type", "default", "meaning"], map(_parameter, parameters))]
    return lines


def page() -> str:
    """Every route of the REST API, by tag, with a table of all of them first."""
    document = app().openapi()
    operations = _operations(document)
    checks = guards()
    common = common_errors()
    by_tag: dict[str, list[tuple[str, str]]] = {}
    for key, operation in operations.items():
        by_tag.setdefault((operation.get("tags") or ["other"])[0], []).append(key)
    statuses = codes_by_status()
    lines = [
        *heading("REST API", "iochost.api.app.create_app(...).openapi()"),
        f"Every route but `/metrics` is under `{API_PREFIX}`. With tokens configured ([settings](settings.md):",
        "`IOCHOST_READ_TOKEN`, `IOCHOST_ADMIN_TOKEN`), a request carries `Authorization: Bearer TOKEN`;",
        "a route whose token is *read* takes either token, one whose token is *admin* only the admin",
        "token. Without tokens every route is open. The running daemon serves this API's OpenAPI",
        "document at `/openapi.json` and an interactive view of it at `/docs`.",
        "",
        "## Errors",
        "",
        "Any route may answer an error in one shape, `ErrorBody`: the statuses below, each with the",
        "codes that use it ([error codes](errors.md)). A route lists the codes its own description names.",
        "",
        *table(["HTTP", "codes"], ([str(status), ", ".join(f"`{error.value}`" for error in statuses.get(status, []))]
                                   for status in common)),
        "",
        "## Routes",
        "",
        *table(["method", "path", "summary", "token"],
               ([method, f"[`{path}`](#{_anchor(method, path)})", cell(operation.get("summary", "")),
                 role(checks.get((method, path), []))] for (method, path), operation in operations.items())),
    ]
    for tag, keys in by_tag.items():
        lines += ["", f"## {tag[:1].upper() + tag[1:]}"]
        for method, path in keys:
            lines += _operation_section(method, path, operations[(method, path)], checks.get((method, path), []),
                                        set(common))
    return "\n".join(lines) + "\n"
