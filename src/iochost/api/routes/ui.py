"""``/ui/``: the web dashboard, and ``/api/v1/access``, which tells it what a token may do.

The page itself holds no plugin data: it is the same shell for everyone, and its script
reads everything through the REST API with the token the operator typed (kept in the
browser's session storage only). The files are served from the package with a strict
Content-Security-Policy: nothing but this origin, no inline script or style.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from iochost.api.auth import caller_role
from iochost.errors import ErrorCode, IochostError

router = APIRouter(tags=["dashboard"])
api_router = APIRouter(tags=["dashboard"])

STATIC = files("iochost.ui") / "static"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css", "icon.svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}


class Access(BaseModel):
    """What the caller's bearer token allows: the dashboard shows actions only to an admin."""

    role: Literal["admin", "read", "none"] = Field(description="none: no token, or one not recognised")
    tokens_required: bool = Field(description="tokens are configured: without one, nothing is shown")


@api_router.get("/access", response_model=Access)
async def access(request: Request) -> Access:
    """Never refuses: a missing or unknown token is role ``none``."""
    role = caller_role(request)
    return Access(role=role or "none", tokens_required=request.app.state.settings.auth_enabled)


def _file(name: str, media_type: str) -> Response:
    return Response((STATIC / name).read_bytes(), media_type=media_type, headers=HEADERS)


@router.get("/ui", include_in_schema=False)
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=308)


@router.get("/ui/", include_in_schema=False)
async def overview() -> Response:
    """Every plugin, live."""
    return _file("index.html", "text/html; charset=utf-8")


@router.get("/ui/plugins/{name}", include_in_schema=False)
async def plugin_page(name: str) -> Response:
    """One plugin (the same page: its script reads the name from the address)."""
    return _file("index.html", "text/html; charset=utf-8")


@router.get("/ui/assets/{asset}", include_in_schema=False)
async def asset(asset: str) -> Response:
    if asset not in ASSETS:
        raise IochostError(ErrorCode.ROUTE_NOT_FOUND, f"no dashboard asset {asset!r}")
    return _file(asset, ASSETS[asset])
