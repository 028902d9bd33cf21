"""``iochost serve``: the daemon process. uvicorn serves the API; the app's lifespan runs
the supervisor, so SIGTERM stops every worker (SIGTERM, grace, SIGKILL) before exit 0."""

from __future__ import annotations

import importlib.util
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from iochost import __version__
from iochost.api import create_app
from iochost.api.list_shortcut import ListShortcut
from iochost.event_loop import DaemonEventLoop
from iochost.http_guard import AnswerCutRequests, guarded_protocol
from iochost.launch.launcher import Launcher
from iochost.logs import setup_logging
from iochost.plugins_file import PluginsFile
from iochost.settings import Settings

log = logging.getLogger("iochost")


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The C HTTP parser when installed (a dependency; h11 is the fallback), and access lines
    formatted only when they are logged at all (``uvicorn.access`` is at WARNING unless
    --log-level debug). The event loop stays asyncio's (the supervisor's pipe protocols and
    pidfd readers are written against it), as ``event_loop.DaemonEventLoop``: one retry a
    second, not thousands, while the open files run out. The protocol closes connections
    without a request in progress after ``http_timeout`` and any over ``http_connection_cap``
    (``http_guard``)."""
    protocol = import_from_string(HTTP_PROTOCOLS["httptools" if _available("httptools") else "h11"])
    return {
        "loop": f"{DaemonEventLoop.__module__}:{DaemonEventLoop.__qualname__}",  # uvicorn >= 0.36: a factory by name
        "http": guarded_protocol(protocol, settings.http_timeout, settings.http_connection_cap),
        "timeout_keep_alive": settings.http_timeout,
        "access_log": settings.log_level == "debug",
    }


class _Server(uvicorn.Server):
    """Calls ``on_listening`` once the socket accepts connections, and ``on_stopping`` when
    shutdown begins, before uvicorn waits for the open responses (event streams) to end."""

    def __init__(self, config: uvicorn.Config, on_listening: Callable[[], None],
                 on_stopping: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._on_listening = on_listening
        self._on_stopping = on_stopping

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_listening()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await self._on_stopping()
        except Exception:  # a bug: the shutdown goes on
            log.exception("ending the open event streams at shutdown")
        await super().shutdown(sockets)


def serve(settings: Settings, launcher: Launcher | None = None, declared: PluginsFile | None = None) -> int:
    """Run the daemon until SIGTERM; ``launcher``: the fork server, already started;
    ``declared``: the plugins file, read and checked."""
    setup_logging(settings.log_level, settings.log_format, settings.log_file,
                  settings.log_rotate_bytes, settings.log_rotate_files)
    log.info("iochost %s: API http://%s:%d/api/v1, PV prefix %s, data %s", __version__,
             settings.host, settings.port, settings.prefix, settings.data_dir)
    log.info("API connections: at most %d open; closed after %g s without a request in progress",
             settings.http_connection_cap, settings.http_timeout)
    if not settings.auth_enabled:
        log.warning("no API token configured: the API is open to every local user; "
                    "listening on loopback %s only", settings.host)
    if declared is not None:
        for line in declared.warnings:
            log.warning("%s", line)
        for line in declared.problems:
            log.error("%s; entry left out", line)
        log.info("plugins file %s: %d plugin(s) declared", declared.path, len(declared.requests))
    app = create_app(settings, launcher=launcher, declared=declared.declared() if declared is not None else None)
    listening = app.state.supervisor.hold_restore()  # the API answers first, however large the registry
    config = uvicorn.Config(AnswerCutRequests(ListShortcut(app)),  # the list polls skip FastAPI's request machinery
                            host=settings.host, port=settings.port, log_config=None,
                            lifespan="on", timeout_graceful_shutdown=5, **uvicorn_options(settings))
    server = _Server(config, on_listening=listening, on_stopping=app.state.begin_stop)
    # uvicorn re-raises the SIGTERM/SIGINT it handled once shutdown is done, so the
    # process would die by the signal; a stop we completed cleanly should exit 0.
    stop_signals: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: stop_signals.append(received))
    server.run()
    if not server.started:
        log.error("iochost did not start (see the error above)")
        return 1
    log.info("iochost stopped")
    return 0
