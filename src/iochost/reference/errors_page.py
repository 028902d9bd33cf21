"""docs/reference/errors.md, from ``iochost.errors.ErrorCode``: the codes clients branch on."""

from __future__ import annotations

from iochost.errors import ErrorCode
from iochost.reference.markdown import cell, heading, table


def page() -> str:
    """Every ErrorCode with its HTTP status and meaning, in the enum's order."""
    lines = [
        *heading("Error codes", "iochost.errors"),
        'Every error body is `{"ok": false, "code": ..., "message": ...}` plus the details of the',
        "error; codes are never renamed or reused. What to do about each:",
        "[Troubleshooting](../how-to/troubleshooting.md).",
        "",
        *table(["code", "HTTP", "meaning"],
               ([f"`{code.value}`", str(code.http_status), cell(code.meaning)] for code in ErrorCode)),
    ]
    return "\n".join(lines) + "\n"


def codes_by_status() -> dict[int, list[ErrorCode]]:
    """The codes answered with each HTTP status, statuses in ascending order (rest.md's key)."""
    statuses: dict[int, list[ErrorCode]] = {}
    for code in sorted(ErrorCode, key=lambda code: code.http_status):
        statuses.setdefault(code.http_status, []).append(code)
    return statuses
