"""Prometheus metrics: one registry per app, the supervisor's state read at scrape time.

``GET /metrics`` (``routes/metrics.py``) serves ``Metrics.registry`` with prometheus_client's
own encoders. It holds:

- ``SupervisorCollector``: plugins per state, plugins in error per reason (what ``/health``
  names), automatic restarts, job runs per outcome and
  each worker's resident memory, read from the plugins' views when Prometheus scrapes, so no
  second copy of the supervisor's state exists to drift from it;
- ``iochost_http_requests_total`` and ``iochost_http_request_duration_seconds``, recorded by
  ``RequestMetrics`` (an ASGI middleware inside the FastAPI app) and by ``ListShortcut`` for the
  list polls it answers itself, labelled by the route's template: the raw path would make a
  series per plugin name and run id, without bound;
- the daemon's own process (CPU, RSS, open fds, start time), Python and GC collectors.

The registry is the app's own, not prometheus_client's global one, so two apps in one
process (tests) do not collide on metric names.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator

from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry, Counter, GCCollector, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iochost import __version__
from iochost.supervisor import Supervisor
from iochost.supervisor.runs import RUN_OUTCOMES
from iochost.supervisor.states import LISTED
from iochost.supervisor.view import TROUBLES

UNMATCHED = "unmatched"  # the route label of a path no route serves (404s of scanners, typos)
OTHER_METHOD = "other"  # the method label of a method no route takes: methods are a bounded label too
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds. The list shortcut answers in ~0.1 ms, an add in ~0.6 s, a waited job run for as long as
# the job runs; /events streams are timed until the client goes.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 300.0)
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes(pid: int) -> int | None:
    """Resident memory of ``pid``: the second field of /proc/PID/statm, in pages. One small
    read per worker and scrape (smaps_rollup's PSS would walk every mapping). None once the
    process is gone, or a zombie waiting to be reaped (no resident pages)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            fields = statm.read().split()
    except OSError:
        return None
    pages = int(fields[1]) if len(fields) > 1 else 0
    return pages * PAGE_SIZE if pages > 0 else None


class SupervisorCollector(Collector):
    """The supervisor's state as metrics, read from the plugins' frozen views at each scrape.

    ``collect`` runs on the event loop (the ``/metrics`` route is ``async``): the lifecycles
    change there, so views taken from a thread could see a plugin half-added. Restarts and
    RSS cover the daemon's own status IOC too (``plugin="iochost"``, a reserved name); the
    state gauge counts exactly what ``GET /api/v1/plugins`` lists.
    """

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def describe(self) -> Iterable[Metric]:
        """The families without samples, so the registry refuses a second metric of one name."""
        return self._families()

    def collect(self) -> Iterable[Metric]:
        plugins, in_error, restarts, runs, rss, ready, build, storage, idle = families = self._families()
        sup = self.supervisor
        counts = dict.fromkeys(LISTED, 0)  # every state a listed plugin can be in, zeros included: no gaps
        troubles = dict.fromkeys(TROUBLES, 0)
        for view in sup.views():
            counts[view.state] += 1
            if view.trouble is not None:
                troubles[view.trouble] += 1
        for state, count in counts.items():
            plugins.add_metric([state.value], count)
        for reason, count in troubles.items():
            in_error.add_metric([reason], count)
        for view in sup.views(include_system=True):
            kind = view.entry.kind
            restarts.add_metric([view.name, kind], view.restarts_total)
            if kind == "job":
                for outcome in RUN_OUTCOMES:
                    runs.add_metric([view.name, outcome], view.runs_finished.get(outcome, 0))
            resident = resident_bytes(view.pid) if view.pid is not None else None
            if resident is not None:
                rss.add_metric([view.name], resident)
        ready.add_metric([], 1 if sup.ready else 0)
        build.add_metric([__version__], 1)
        storage.add_metric([], 1 if sup.storage_problem() is not None else 0)
        if sup.launcher is not None:
            for member_kind, count in sup.launcher.idle_members().items():
                idle.add_metric([member_kind], count)
        return families

    @staticmethod
    def _families() -> list[GaugeMetricFamily | CounterMetricFamily]:
        return [
            GaugeMetricFamily("iochost_plugins", "Plugins in each state, as GET /api/v1/plugins lists them "
                              "(crashed: waiting to be restarted; failed: not restarted)", labels=["state"]),
            GaugeMetricFamily("iochost_plugins_in_error", "Plugins GET /api/v1/health names (it is degraded while "
                              "any is), per reason: failed, crashed, crash_looping, status_error (STATUS ERROR "
                              "or FAILED), not_running (meant to run, starting or stopping)", labels=["reason"]),
            CounterMetricFamily("iochost_plugin_restarts", "Automatic restarts of the plugin's worker after it "
                                "crashed, hung (watchdog) or did not start; an operator's restart is not counted",
                                labels=["plugin", "kind"]),
            CounterMetricFamily("iochost_job_runs", "Runs of the job that ended, per outcome, whoever started "
                                "them (REST or RUN=1)", labels=["plugin", "outcome"]),
            GaugeMetricFamily("iochost_worker_rss_bytes", "Resident memory of the plugin's worker process "
                              "(its soft IOC), from /proc/PID/statm", labels=["plugin"]),
            GaugeMetricFamily("iochost_ready", "1 once the registry's plugins are restored after a daemon start "
                              "(as /api/v1/health/ready), else 0"),
            GaugeMetricFamily("iochost_build_info", "The iochost version running (always 1)", labels=["version"]),
            GaugeMetricFamily("iochost_storage_full", "1 while the data directory refuses writes (full disk, "
                              "inodes or quota: changes answer 507 STORAGE_FULL, /api/v1/health names the "
                              "path), else 0"),
            GaugeMetricFamily("iochost_fork_server_idle_members", "Members of the fork server's pool ready and "
                              "waiting, per kind: warm (the next workers) and cold (the next validation probes); "
                              "absent with --no-fork-server", labels=["kind"]),
        ]


class RouteTemplates:
    """The route template a request path belongs to (``/api/v1/plugins/{name}``), or
    ``UNMATCHED``. Matched here, by path alone, rather than read from what the router left
    in the scope: requests refused before routing (an oversized body) are labelled too,
    and the scope's keys differ between FastAPI versions. A few microseconds a request,
    and only for requests FastAPI serves."""

    def __init__(self, templates: Iterable[str]) -> None:
        self.templates = list(dict.fromkeys(templates))
        self._compiled = [(compile_path(template)[0], template) for template in self.templates]

    def match(self, path: str) -> str:
        for regex, template in self._compiled:
            if regex.match(path):
                return template
        return UNMATCHED


def route_templates(app: FastAPI, routers: Iterable[tuple[str, APIRouter]]) -> Iterator[str]:
    """Every path template ``app`` serves: its own routes (/openapi.json, /docs) and those of
    ``routers``, each included under its prefix."""
    for route in app.routes:
        if isinstance(path := getattr(route, "path_format", None), str):
            yield path
    for prefix, router in routers:
        for route in router.routes:
            if isinstance(path := getattr(route, "path_format", None), str):
                yield prefix + path


class Metrics:
    """The app's registry and the request metrics its middleware and list shortcut record."""

    def __init__(self, supervisor: Supervisor, routes: RouteTemplates) -> None:
        self.routes = routes
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        PlatformCollector(registry=self.registry)  # python_info
        GCCollector(registry=self.registry)  # python_gc_*
        self.registry.register(SupervisorCollector(supervisor))
        self.requests = Counter("iochost_http_requests", "REST requests answered, by method, route template "
                                "and HTTP status", ["method", "route", "status"], registry=self.registry)
        self.duration = Histogram("iochost_http_request_duration_seconds", "Time from a REST request's arrival "
                                  "until its answer was sent, by method and route template", ["method", "route"],
                                  buckets=DURATION_BUCKETS, registry=self.registry)

    def record(self, method: str, path: str, status: int, seconds: float) -> None:
        """One answered request; ``path`` is the raw path, labelled by its route template."""
        method = method if method in METHODS else OTHER_METHOD
        route = self.routes.match(path)
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry encoded as the scraper asked (``Accept``): OpenMetrics for Prometheus,
        else the classic text format; and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class RequestMetrics:
    """ASGI middleware inside the FastAPI app: counts and times every HTTP request it
    answers, errors included (the list shortcut records the polls it answers before them)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before it answered

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.record(scope["method"], scope["path"], status, time.perf_counter() - start)
