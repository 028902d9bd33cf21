"""Bodies and responses that exist only at the HTTP edge; the plugin and run records
themselves are ``iochost.supervisor.models``, shared with the supervisor."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from iochost.errors import ErrorCode


class ErrorBody(BaseModel):
    """Every non-2xx response. ``errors`` lists validation problems when there are several."""

    code: ErrorCode
    message: str
    errors: list[dict[str, Any]] | None = None


class RunRequest(BaseModel):
    """Body of ``POST /jobs/{name}/run``; optional, as iocmng clients send none."""

    model_config = {"extra": "forbid"}

    parameters: dict[str, Any] = Field(default_factory=dict, description="override parameters for this run")


class RunAccepted(BaseModel):
    run_id: str
    state: str


class Deleted(BaseModel):
    name: str
    deleted: bool = True


class LogTail(BaseModel):
    name: str
    lines: list[str]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody}
    for status in sorted({code.http_status for code in ErrorCode})
}
