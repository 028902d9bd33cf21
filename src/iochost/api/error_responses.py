"""Every error leaves the API as ``{"code": <ErrorCode>, "message": ..., ...}``.

FastAPI's own errors (body validation, unknown route, wrong method) are rewritten into
the same shape, so clients branch on one field whatever went wrong.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from iochost.errors import ErrorCode, IochostError, error_body

log = logging.getLogger("iochost.api")

_HTTP_CODES = {
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.ROUTE_NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}


def error_response(code: ErrorCode, message: str, **details: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if code is ErrorCode.UNAUTHORIZED else {}
    if "retry_after" in details:
        headers["Retry-After"] = str(details["retry_after"])
    return JSONResponse(error_body(code, message, **details), status_code=code.http_status, headers=headers)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """pydantic's error list, reduced to what a user needs: which field, what is wrong."""
    errors = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] == "body":
            loc = loc[1:]
        errors.append({"field": ".".join(loc) or "body", "message": error.get("msg", "invalid")})
    return errors


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path. Starlette's own 405 names only the methods
    of the first route matching the path, while FastAPI makes one route per method."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(IochostError)
    async def _iochost(_: Request, exc: IochostError) -> JSONResponse:
        return error_response(exc.code, exc.message, **exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc)
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return error_response(ErrorCode.INVALID_REQUEST, f"invalid request: {summary}", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, ErrorCode.INVALID_REQUEST)
        response = error_response(code, str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        if exc.status_code == 405:  # RFC 9110: `Allow` lists every method of the resource
            response.headers["Allow"] = ", ".join(_allowed_methods(request))
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(ErrorCode.INTERNAL_ERROR, "internal error; the daemon log has the traceback")
