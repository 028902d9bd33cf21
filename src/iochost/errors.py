"""The one enum of error codes iochost puts in every error body.

Codes are part of the public API: clients branch on them, so a code is never renamed or
reused. Each code carries the HTTP status the REST API answers with.
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
        return _HTTP_STATUS[self]

    @property
    def summary(self) -> str:
        return _SUMMARY[self]


_HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 422,
    ErrorCode.VALIDATION_FAILED: 422,
    ErrorCode.FETCH_FAILED: 502,
    ErrorCode.SOURCE_NOT_ALLOWED: 403,
    ErrorCode.PLUGIN_EXISTS: 409,
    ErrorCode.PLUGIN_NOT_FOUND: 404,
    ErrorCode.ADD_CANCELLED: 409,
    ErrorCode.WRONG_KIND: 422,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.WORKER_START_FAILED: 502,
    ErrorCode.UPGRADE_FAILED: 409,
    ErrorCode.EXECUTION_LOCKED: 409,
    ErrorCode.RUN_NOT_FOUND: 404,
    ErrorCode.RUN_ID_MISMATCH: 409,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.ROUTE_NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.STORAGE_FULL: 507,
    ErrorCode.LAUNCHER_UNAVAILABLE: 503,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.PV_NOT_ALLOWED: 403,
    ErrorCode.PV_MONITOR_NOT_FOUND: 404,
    ErrorCode.PV_GATEWAY_LIMIT: 429,
    ErrorCode.INTERNAL_ERROR: 500,
}

_SUMMARY: dict[ErrorCode, str] = {
    ErrorCode.INVALID_REQUEST: "The request body or query is malformed; `errors` names each field.",
    ErrorCode.VALIDATION_FAILED: "The plugin failed validation; `errors` lists every problem with stage, file and line.",
    ErrorCode.FETCH_FAILED: "The git source could not be fetched: bad URL, missing branch/commit, refused credentials, time or size limit.",
    ErrorCode.SOURCE_NOT_ALLOWED: "The git URL or local path is not permitted by the source policy.",
    ErrorCode.PLUGIN_EXISTS: "A plugin with this name (or the same upper-cased PV name) already exists.",
    ErrorCode.PLUGIN_NOT_FOUND: "No plugin with this name.",
    ErrorCode.ADD_CANCELLED: "The plugin was deleted while it was being added; nothing of it was kept.",
    ErrorCode.WRONG_KIND: "The plugin is a task where a job is required, or the reverse.",
    ErrorCode.INVALID_STATE: "The plugin's current state does not allow this operation.",
    ErrorCode.WORKER_START_FAILED: "The plugin's soft IOC did not start: no READY, or initialize() did not return in time.",
    ErrorCode.UPGRADE_FAILED: "The new revision did not start or exited during its probation; the previous revision was put back and serves again.",
    ErrorCode.EXECUTION_LOCKED: "The job already has an active run; `active_run_id` names it.",
    ErrorCode.RUN_NOT_FOUND: "No run with this id for this job.",
    ErrorCode.RUN_ID_MISMATCH: "The run id does not name the job's active run.",
    ErrorCode.UNAUTHORIZED: "Missing or wrong bearer token.",
    ErrorCode.FORBIDDEN: "The token is valid but does not allow this operation.",
    ErrorCode.PAYLOAD_TOO_LARGE: "The request body exceeds the size limit.",
    ErrorCode.RATE_LIMITED: "Too many expensive operations for this token; retry later.",
    ErrorCode.ROUTE_NOT_FOUND: "No such endpoint; the API lives under /api/v1 (see /docs).",
    ErrorCode.METHOD_NOT_ALLOWED: "The endpoint exists but not with this HTTP method.",
    ErrorCode.STORAGE_FULL: "The daemon's data directory is full (or out of inodes); nothing was changed. Free space and retry.",
    ErrorCode.LAUNCHER_UNAVAILABLE: "The daemon cannot start worker processes right now (its fork server is down or the host is out of processes or files); the plugin is not at fault. Retry later.",
    ErrorCode.SHUTTING_DOWN: "The daemon stopped while the request was in progress; it was not completed. Retry once the daemon is back.",
    ErrorCode.PV_NOT_ALLOWED: "The PV gateway writes only to PVs matching a --pv-gateway-allow pattern (default: this daemon's PREFIX:*); `patterns` lists them.",
    ErrorCode.PV_MONITOR_NOT_FOUND: "No PV gateway monitor with this key (GET /pvs/monitors lists them).",
    ErrorCode.PV_GATEWAY_LIMIT: "The PV gateway is at its cap of monitors (--pv-gateway-max-monitors) or of requests in progress (--pv-gateway-max-pending); stop a monitor or retry later.",
    ErrorCode.INTERNAL_ERROR: "An unexpected error inside iochost; the daemon log has the traceback.",
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

