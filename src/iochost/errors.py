"""The one enum of error codes iochost puts in every error body.

Codes are part of the public API: clients branch on them, so a code is never renamed or
reused. Each code carries the HTTP status the REST API answers with and its meaning, from
which docs/reference/errors.md is generated (``python -m iochost.reference``).
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorCode(str, Enum):
    """Stable error codes; the value is what clients see, the status is the HTTP status."""

    INVALID_REQUEST = "INVALID_REQUEST"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    FETCH_FAILED = "FETCH_FAILED"
    SOURCE_NOT_ALLOWED = "SOURCE_NOT_ALLOWED"
    PLUGIN_EXISTS = "PLUGIN_EXISTS"
    PLUGIN_NOT_FOUND = "PLUGIN_NOT_FOUND"
    ADD_CANCELLED = "ADD_CANCELLED"
    WRONG_KIND = "WRONG_KIND"
    INVALID_STATE = "INVALID_STATE"
    WORKER_START_FAILED = "WORKER_START_FAILED"
    UPGRADE_FAILED = "UPGRADE_FAILED"
    EXECUTION_LOCKED = "EXECUTION_LOCKED"
    RUN_NOT_FOUND = "RUN_NOT_FOUND"
    RUN_ID_MISMATCH = "RUN_ID_MISMATCH"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    RATE_LIMITED = "RATE_LIMITED"
    ROUTE_NOT_FOUND = "ROUTE_NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    STORAGE_FULL = "STORAGE_FULL"
    LAUNCHER_UNAVAILABLE = "LAUNCHER_UNAVAILABLE"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    PV_NOT_ALLOWED = "PV_NOT_ALLOWED"
    PV_MONITOR_NOT_FOUND = "PV_MONITOR_NOT_FOUND"
    PV_GATEWAY_LIMIT = "PV_GATEWAY_LIMIT"
    INTERNAL_ERROR = "INTERNAL_ERROR"

    @property
    def http_status(self) -> int:
        """The HTTP status the REST API answers with."""
        return _ABOUT[self][0]

    @property
    def meaning(self) -> str:
        """What the code tells a client, as docs/reference/errors.md lists it."""
        return _ABOUT[self][1]


# Each code's HTTP status and meaning: the one table docs/reference/errors.md is generated from
# (python -m iochost.reference).
_ABOUT: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.INVALID_REQUEST: (422, "malformed body or query; `errors` names each field"),
    ErrorCode.VALIDATION_FAILED: (422,
        "the plugin failed validation; `errors` lists every problem with stage, file and line"),
    ErrorCode.FETCH_FAILED: (502,
        "git could not fetch: bad URL, missing branch/commit, refused credentials, time or size limit"),
    ErrorCode.SOURCE_NOT_ALLOWED: (403, "the git URL or local path is not permitted by the source policy"),
    ErrorCode.PLUGIN_EXISTS: (409,
        "the name (or its upper-cased PV name) is taken, or its PV prefix is another plugin's or the "
        "daemon's, or lies inside or around one"),
    ErrorCode.PLUGIN_NOT_FOUND: (404, "no plugin with this name"),
    ErrorCode.ADD_CANCELLED: (409, "the plugin was deleted while it was being added; nothing of it was kept"),
    ErrorCode.WRONG_KIND: (422, "a task where a job is required, or the reverse"),
    ErrorCode.INVALID_STATE: (409, "the plugin's state does not allow this (e.g. running a stopped job)"),
    ErrorCode.WORKER_START_FAILED: (502,
        "the plugin's soft IOC did not start: no READY, `initialize()` raised (`exception: {type, "
        "message}`, `log_tail`: the plugin's frames of the traceback) or did not return within "
        "`--start-timeout` (`log_tail`: the end of its log)"),
    ErrorCode.UPGRADE_FAILED: (409,
        "the new revision did not start or exited during its probation; the previous one was put back"
        " and serves again (`reason`, `log_tail`, and `exception` when `initialize()` raised)"),
    ErrorCode.EXECUTION_LOCKED: (409, "the job already has an active run; `active_run_id` names it"),
    ErrorCode.RUN_NOT_FOUND: (404, "no such run of this job"),
    ErrorCode.RUN_ID_MISMATCH: (409, "the run id is not the job's active run"),
    ErrorCode.UNAUTHORIZED: (401, "missing or wrong bearer token"),
    ErrorCode.FORBIDDEN: (403,
        "the token does not allow this operation (read token on a write); or a browser's cross-origin"
        " preflight asks for an origin, method or header the API does not allow (`--cors-origin`)"),
    ErrorCode.PAYLOAD_TOO_LARGE: (413, "the request body exceeds the limit"),
    ErrorCode.RATE_LIMITED: (429, "too many expensive operations; retry later"),
    ErrorCode.ROUTE_NOT_FOUND: (404, "no such endpoint"),
    ErrorCode.METHOD_NOT_ALLOWED: (405, "the endpoint does not take this method"),
    ErrorCode.STORAGE_FULL: (507,
        "the data directory is full (space or inodes); nothing was changed; retry once space is freed"),
    ErrorCode.LAUNCHER_UNAVAILABLE: (503,
        "the daemon cannot start worker processes now (fork server down, no processes or files left);"
        " not the plugin's fault"),
    ErrorCode.SHUTTING_DOWN: (503,
        "the daemon stopped (SIGTERM) while the request was in progress; the operation was not "
        "completed; retry once it is back"),
    ErrorCode.PV_NOT_ALLOWED: (403,
        "the PV gateway writes only to PVs matching `--pv-gateway-allow` (default this daemon's "
        "`PREFIX:*`); `patterns` lists them"),
    ErrorCode.PV_MONITOR_NOT_FOUND: (404, "no PV gateway monitor with this key"),
    ErrorCode.PV_GATEWAY_LIMIT: (429,
        "the PV gateway is at its cap of monitors or of requests in progress (`limit`); stop a "
        "monitor, or retry"),
    ErrorCode.INTERNAL_ERROR: (500, "a bug in iochost; the daemon log has the traceback"),
}


def error_body(code: ErrorCode, message: str, **details: Any) -> dict[str, Any]:
    """Every error answer's JSON, whichever layer answers (the app, or uvicorn's protocol
    below it): ``ok`` false, as iocmng's scripts test ``resp.json()["ok"]`` whatever the
    status, the stable ``code``, the ``message``, and the details of this error."""
    return {"ok": False, "code": code.value, "message": message, **details}


class IochostError(Exception):
    """An error with a stable code, raised anywhere and rendered by the API as its body."""

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

