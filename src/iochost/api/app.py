"""The FastAPI application: routers under /api/v1, one error shape, the supervisor's lifespan."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iochost import __version__
from iochost.api.bodies import ERROR_RESPONSES
from iochost.api.error_responses import error_response, install_error_handlers
from iochost.api.listing import RecordCache
from iochost.api.prometheus import Metrics, RequestMetrics, RouteTemplates, route_templates
from iochost.api.ratelimit import create_limiter
from iochost.api.routes import compat, displays, events, health, jobs, metrics, plugin_views, plugins, pvs, ui
from iochost.display.writer import DisplaySync
from iochost.errors import ErrorCode
from iochost.launch.launcher import Launcher
from iochost.pvgateway.client import PVGateway
from iochost.pvgateway.metrics import GatewayCollector
from iochost.pvgateway.watch import Watches
from iochost.settings import Settings
from iochost.supervisor import Supervisor
from iochost.supervisor.adding import Declared

API_PREFIX = "/api/v1"
log = logging.getLogger("iochost.api")


class BodySizeLimit:
    """Refuse bodies over ``limit`` bytes with 413 before they are read into memory."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(ErrorCode.PAYLOAD_TOO_LARGE, f"request body exceeds {self.limit} bytes")
        await response(scope, receive, send)


class _TooLarge(StarletteHTTPException):
    """An HTTPException, so that FastAPI's body parsing re-raises it instead of turning it
    into "400 error parsing the body"; the error handlers render it as PAYLOAD_TOO_LARGE."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body exceeds {limit} bytes")


class ApiCORS(CORSMiddleware):
    """Starlette's CORS, whose refused preflight (a plain-text 400) is answered in the API's
    error shape instead: FORBIDDEN, naming each origin, method or header it does not allow."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        problems = []
        origin, method = request_headers["origin"], request_headers["access-control-request-method"]
        if not self.is_allowed_origin(origin=origin):
            problems.append(f"origin {origin!r} is not one of --cors-origin")
        if method not in self.allow_methods:
            problems.append(f"method {method!r} is not one of {', '.join(self.allow_methods)}")
        requested = [h.strip() for h in request_headers.get("access-control-request-headers", "").lower().split(",")]
        refused = [header for header in requested if header and header not in self.allow_headers]
        if refused:
            problems.append(f"header(s) {', '.join(refused)} not allowed (only {', '.join(self.allow_headers)})")
        if request_headers.get("access-control-request-private-network") is not None:
            problems.append("private network access is not allowed")
        error = error_response(ErrorCode.FORBIDDEN, "cross-origin request refused: " + "; ".join(problems),
                               problems=problems)
        for name, value in response.headers.items():  # Vary and the allowed lists, as Starlette gave them
            if name not in ("content-length", "content-type"):
                error.headers[name] = value
        return error


def included_routers() -> list[tuple[str, APIRouter]]:
    """Every router the app includes, with the prefix it is included under: /metrics at the
    root, where Prometheus looks by default; everything else under /api/v1."""
    routers = [(API_PREFIX, module.router)
               for module in (plugins, plugin_views, jobs, compat, health, events, displays, pvs)]
    return routers + [(API_PREFIX, ui.api_router), ("", metrics.router), ("", ui.router)]


def create_app(settings: Settings, supervisor: Supervisor | None = None,
               launcher: Launcher | None = None, declared: Declared | None = None) -> FastAPI:
    """Build the app; the supervisor starts with the app and stops every worker with it
    (``launcher``: the started fork server it uses; ``declared``: the plugins file, read and
    checked; see ``Supervisor``)."""
    sup = supervisor or Supervisor(settings, launcher, declared)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await sup.start()
        display_files = DisplaySync(sup)  # DATA_DIR/displays/ follows adds, upgrades, deletes
        try:
            await display_files.start()
            yield
        finally:
            await pv_gateway.close()  # its child's process group ends here
            await display_files.stop()
            await sup.shutdown()

    app = FastAPI(
        title="iochost",
        version=__version__,
        summary="Hosts EPICS soft-IOC plugins: one soft IOC process per plugin, managed over REST.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.settings = settings
    app.state.supervisor = sup
    app.state.rate_limiter = create_limiter(settings.add_rate_limit)
    app.state.record_cache = RecordCache()
    app.state.pv_gateway = pv_gateway = PVGateway(settings)  # its process starts on the first /pvs request
    app.state.pv_watches = Watches(pv_gateway)  # the gateway's monitors that open web pages share
    app.state.stopping = asyncio.Event()  # set by begin_stop: the event streams end

    async def begin_stop() -> None:
        """The server begins to stop (``iochost.server`` calls this before uvicorn waits for
        open responses): event streams end and PV gateway requests are answered now, instead
        of being cancelled once uvicorn's graceful wait runs out."""
        app.state.stopping.set()
        await pv_gateway.close()

    app.state.begin_stop = begin_stop
    install_error_handlers(app)
    routers = included_routers()
    for prefix, router in routers:
        app.include_router(router, prefix=prefix)
    app.state.metrics = Metrics(sup, RouteTemplates(route_templates(app, routers)))
    app.state.metrics.registry.register(GatewayCollector(pv_gateway))
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)  # outermost: it sees the 413s too
    if settings.cors_origin:  # around everything, so refusals (401, 413, ...) carry its headers too
        app.add_middleware(ApiCORS, allow_origins=settings.cors_origin, allow_credentials=False,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"])
    return app
