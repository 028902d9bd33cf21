"""Bearer-token dependencies: a read token for GETs, an admin token for everything.

With no token configured the API is open, which ``Settings`` only permits on a loopback
address. Tokens are compared in constant time and never logged.

The dependencies are ``async def`` although they never await: FastAPI runs a plain ``def``
dependency in its thread pool, a thread hop per dependency per request that cost more
than everything else a ``GET /plugins`` does. They read the settings from the request
rather than through a sub-dependency: each dependency FastAPI solves costs every request.
"""

from __future__ import annotations

import hmac
from typing import Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from iochost.errors import ErrorCode, IochostError
from iochost.settings import Settings

Role = Literal["admin", "read"]  # what a token may do: act, or only look

# The one bearer scheme: the token checks here and the rate limiter (per token) read it.
bearer = HTTPBearer(auto_error=False, description="IOCHOST_READ_TOKEN or IOCHOST_ADMIN_TOKEN")


def _matches(given: str, expected: object) -> bool:
    secret = getattr(expected, "get_secret_value", None)
    if secret is None:
        return False
    return hmac.compare_digest(given.encode(), secret().encode())


def _role(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> str:
    if not settings.auth_enabled:
        return "admin"
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise IochostError(ErrorCode.UNAUTHORIZED, "missing bearer token (Authorization: Bearer <token>)")
    role = token_role(settings, credentials.credentials)
    if role is None:
        raise IochostError(ErrorCode.UNAUTHORIZED, "bearer token not recognised")
    return role


def token_role(settings: Settings, token: str) -> Role | None:
    """"admin" or "read" for a configured token, None for any other (auth enabled)."""
    if _matches(token, settings.admin_token):
        return "admin"
    if _matches(token, settings.read_token):
        return "read"
    return None


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def require_read(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> str:
    """Any valid token (or none needed): may look, not touch."""
    return _role(request.app.state.settings, credentials)


def caller_role(request: Request) -> Role | None:
    """The role of the request's bearer token, "admin" or "read" ("admin" when no token is
    configured); None for a missing or unknown one; never refuses (``GET /access``, ``may_read``)."""
    settings: Settings = request.app.state.settings
    if not settings.auth_enabled:
        return "admin"
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token_role(settings, token.strip()) if scheme.lower() == "bearer" else None


async def may_read(request: Request) -> bool:
    """Whether the caller holds a valid token (or none is needed), for a route that answers
    everyone but tells more to readers; never refuses. It reads the header itself, not
    through ``bearer``: the API description keeps the route one that needs no token."""
    return caller_role(request) is not None


async def require_admin(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> str:
    """The admin token: may add, remove, start, stop plugins and run jobs."""
    role = _role(request.app.state.settings, credentials)
    if role != "admin":
        raise IochostError(ErrorCode.FORBIDDEN, "this operation needs the admin token")
    return role
