"""The supervisor: adds, starts, watches, restarts, stops and removes plugin workers.

It runs on the daemon's asyncio loop and never imports softioc. Blocking work (git,
validation, file I/O of the registry) goes to threads, so the REST API keeps answering
while a plugin is being fetched or started.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

from iochost import __version__
from iochost.budget import LineBudget
from iochost.builtin import DAEMON_STATUS_DIR
from iochost.errors import ErrorCode, IochostError
from iochost.environ import plugin_environ
from iochost.settings import Settings
from iochost.config import load_config
from iochost.config.pvnames import plugin_pv_prefix
from iochost.store import GitStore, PluginSource, Registry, RegistryEntry
from iochost.store.envs import PluginEnvs
from iochost.store.policy import check_source_allowed
from iochost.supervisor import logfiles
from iochost.supervisor.containment import Containment
from iochost.supervisor.epics import EpicsNetwork
from iochost.supervisor.models import (
    Event,
    Health,
    Kind,
    PluginRecord,
    PluginRequest,
    RunRecord,
    Transition,
)
from iochost.supervisor.plugin import ManagedPlugin
from iochost.supervisor.process import WorkerProcess
from iochost.supervisor.states import LIVE, State
from iochost.supervisor.daemon_ioc import (
    MODULE_FILE,
    SYSTEM_NAME,
    daemon_pv_values,
    system_entry,
)
from iochost.validate.pipeline import validate_plugin
from iochost.contract import messages
from iochost.contract.exits import describe_exit
from iochost.contract.worker_spec import WorkerSpec

log = logging.getLogger("iochost.supervisor")

WATCH_PERIOD = 0.5
SWEEP_EVERY = 4  # watch periods between sweeps for orphans of dead workers
MAX_FORWARDED_CHARS = 4000  # of one plugin log record in the daemon's log
MAX_STATUS_CHARS = 1000  # a worker's MESSAGE as the daemon keeps it (the PV holds 39)
EVENT_QUEUE_SIZE = 1000


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.plugins: dict[str, ManagedPlugin] = {}
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._started = time.monotonic()
        self._watch_task: asyncio.Task[None] | None = None
        self._closing = False
        self.store: GitStore | None = None
        self.registry: Registry | None = None
        self.envs: PluginEnvs | None = None  # plugins' own environments for requirements.txt
        self.started_at = _now()
        self.system: ManagedPlugin | None = None  # the daemon's own status IOC
        self._status_push_pending = False
        self.epics = EpicsNetwork(settings)
        self.containment: Containment | None = None
        self._log_budgets: dict[str, LineBudget] = {}  # plugin log lines forwarded into the daemon's log

    # -- daemon lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        """Create the data dir, bring back every registered plugin, then load examples."""
        s = self.settings
        for folder in (s.data_dir, s.logs_dir, s.run_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.store = await asyncio.to_thread(GitStore, s.data_dir)
        self.registry = Registry(s.registry_path)
        await asyncio.to_thread(self.registry.load)
        registered = {entry.name for entry in self.registry.entries()}
        await asyncio.to_thread(self.store.prune, registered)  # checkouts a crash left unregistered
        self.envs = await asyncio.to_thread(PluginEnvs, s.data_dir)
        await asyncio.to_thread(self.envs.prune, registered)
        self.containment = await asyncio.to_thread(Containment, s.worker_cgroups)
        await self.epics.start()
        self._watch_task = asyncio.create_task(self._watch(), name="iochost-watchdog")
        await self._start_system()
        await asyncio.gather(*(self._restore(entry) for entry in self.registry.entries()))
        if s.examples is not None:
            await self._add_examples(s.examples)

    async def shutdown(self) -> None:
        """Stop every worker (SIGTERM, grace, SIGKILL); registry keeps the desired state."""
        self._closing = True
        if self._watch_task is not None:
            self._watch_task.cancel()
        await asyncio.gather(*(self._stop_worker(p, keep_desired=True) for p in self._supervised()))
        if self.containment is not None:
            await asyncio.to_thread(self.containment.close)
        await self.epics.close()

    # -- queries --------------------------------------------------------------------------
    def get(self, name: str) -> PluginRecord:
        return self._plugin(name).record()

    def list(self, kind: Kind | None = None) -> list[PluginRecord]:
        return [p.record() for p in self.plugins.values() if kind is None or p.entry.kind == kind]

    def health(self) -> Health:
        counts: dict[str, int] = {"total": len(self.plugins)}
        for state in State:
            counts[state.value] = 0
        for plugin in self.plugins.values():
            counts[plugin.state.value] += 1
        return Health(status="degraded" if self._degraded() else "ok", version=__version__,
                      uptime=round(time.monotonic() - self._started, 1), plugins=counts)

    def _degraded(self) -> bool:
        """Something the operator asked to run is not running (adds in progress excepted)."""
        return any(
            p.state in (State.FAILED, State.CRASHED)
            or (p.entry.desired_state == "running" and p.state not in (State.RUNNING, State.PAUSED)
                and not p.adding)
            for p in self.plugins.values()
        )

    def logs(self, name: str, lines: int) -> list[str]:
        self._plugin(name)
        return logfiles.tail(self._log_path(name), lines, self.settings.log_rotate_files)

    async def subscribe(self, keepalive: float | None = None) -> AsyncIterator[Event | None]:
        """Every event from now on; ``None`` after ``keepalive`` seconds without one."""
        queue: asyncio.Queue[Event] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._subscribers.add(queue)
        try:
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), keepalive)
                except asyncio.TimeoutError:
                    yield None
        finally:
            self._subscribers.discard(queue)

    # -- adding and removing ------------------------------------------------------------
    async def add(self, request: PluginRequest, *, kind: Kind | None = None, trusted: bool = False) -> PluginRecord:
        """Fetch, validate, register and start a plugin; on any failure leave nothing behind.

        ``trusted`` skips the source policy: only for the examples the operator named at start.
        """
        store, registry = self._stores()
        name = request.name
        source = PluginSource(git_url=request.git_url, local_path=request.local_path,
                              branch=request.branch, commit=request.commit, path=request.path)
        if not trusted:
            check_source_allowed(source, self.settings.allow_source, self.settings.allow_local_sources)
        self._check_name_free(name)
        placeholder = RegistryEntry(
            name=name, kind=kind or "task", class_name=request.class_name or "", source=source,
            commit=None, parameters=request.parameters, desired_state="running" if request.auto_start else "stopped",
            created_at=_now(), updated_at=_now(),
            options={"grace_period": request.grace_period} if request.grace_period else {},
        )
        plugin = ManagedPlugin(placeholder, plugin_pv_prefix(self.settings.prefix, name), None, None,
                               self.settings.runs_kept, self._on_transition)
        plugin.adding = True
        self.plugins[name] = plugin  # reserves the name before the first await
        fetched = registered = False
        try:
            plugin.move(State.FETCHING, source.git_url or source.local_path or "")
            pat = request.pat.get_secret_value() if request.pat else None
            result = await asyncio.to_thread(
                store.fetch, name, source, pat=pat, timeout=self.settings.git_timeout,
                max_bytes=self.settings.max_checkout_bytes,
            )
            fetched = True
            plugin.move(State.VALIDATING, f"commit {result.commit}" if result.commit else "local")
            python = await asyncio.to_thread(  # requirements.txt, if any, into the plugin's own env
                self._plugin_envs().install, name, result.checkout_dir, result.plugin_dir,
                timeout=self.settings.requirements_timeout,
            )
            report = await asyncio.to_thread(
                validate_plugin, result.plugin_dir, name=name, prefix=self.settings.prefix,
                class_name=request.class_name, parameters=request.parameters,
                import_timeout=self.settings.import_timeout, python=str(python) if python else None,
                memory_limit_mb=self.settings.worker_memory_mb or None,
            )
            if not report.ok:
                raise IochostError(
                    ErrorCode.VALIDATION_FAILED,
                    f"plugin {name!r} failed validation with {len(report.issues)} error(s)",
                    errors=[issue.model_dump(mode="json") for issue in report.issues],
                )
            info = report.plugin
            assert info is not None
            if kind is not None and info.kind != kind:
                raise IochostError(ErrorCode.WRONG_KIND, f"{name!r} is a {info.kind}, not a {kind}")
            plugin.entry = placeholder.model_copy(update={
                "kind": info.kind, "class_name": info.class_name, "commit": result.commit,
                "module_file": info.module_file,
            })
            plugin.plugin_dir, plugin.module_file = result.plugin_dir, info.module_file
            plugin.pvs = info.pvs
            await asyncio.to_thread(registry.put, plugin.entry)
            registered = True
            if request.auto_start:
                await self._spawn(plugin)
            else:
                plugin.move(State.STOPPED, "auto_start is false")
            plugin.adding = False
            log.info("added %s %s (%s) at %s", info.kind, name, info.class_name, result.commit or "local")
            return plugin.record()
        except BaseException as exc:
            await self._undo_add(plugin, fetched, registered)
            if isinstance(exc, IochostError):
                raise
            if isinstance(exc, Exception):
                log.exception("adding %s failed", name)
                raise IochostError(ErrorCode.INTERNAL_ERROR, f"adding {name!r} failed unexpectedly") from exc
            raise

    async def _undo_add(self, plugin: ManagedPlugin, fetched: bool, registered: bool) -> None:
        store, registry = self._stores()
        if plugin.worker is not None:
            await plugin.worker.stop(self.settings.grace_period)
            plugin.worker = None
        if registered:
            await asyncio.to_thread(registry.remove, plugin.name)
        if fetched:
            await asyncio.to_thread(store.remove, plugin.name)
            await asyncio.to_thread(self._plugin_envs().remove, plugin.name)
        self.epics.forget(plugin.name)
        self._remove_logs(plugin.name)
        self.plugins.pop(plugin.name, None)
        self._schedule_status_push()

    async def remove(self, name: str, *, kind: Kind | None = None) -> None:
        """Stop the worker (its PVs leave the network), forget it, delete its checkout."""
        store, registry = self._stores()
        plugin = self._plugin(name, kind)
        async with plugin.lock:
            await self._stop_worker(plugin, keep_desired=True)
            await asyncio.to_thread(registry.remove, name)
            await asyncio.to_thread(store.remove, name)
            await asyncio.to_thread(self._plugin_envs().remove, name)
            self.epics.forget(name)
            self._remove_logs(name)
            self.plugins.pop(name, None)
        self._schedule_status_push()
        self._publish(Event(type="transition", plugin=name, at=_now(), data={"to_state": "deleted"}))
        log.info("removed %s", name)

    # -- start / stop / restart --------------------------------------------------------
    async def start_plugin(self, name: str) -> PluginRecord:
        plugin = self._plugin(name)
        async with plugin.lock:
            if plugin.state in LIVE:
                raise IochostError(ErrorCode.INVALID_STATE, f"{name!r} is already {plugin.state.value}")
            self._cancel_restart(plugin)
            await self._set_desired(plugin, "running")
            plugin.restarts, plugin.backoff = 0, None
            await self._spawn(plugin)
        return plugin.record()

    async def stop_plugin(self, name: str) -> PluginRecord:
        plugin = self._plugin(name)
        async with plugin.lock:
            await self._stop_worker(plugin, keep_desired=False)
        return plugin.record()

    async def restart_plugin(self, name: str) -> PluginRecord:
        plugin = self._plugin(name)
        async with plugin.lock:
            await self._stop_worker(plugin, keep_desired=True)
            await self._set_desired(plugin, "running")
            await self._spawn(plugin)
        return plugin.record()

    # -- jobs ----------------------------------------------------------------------------
    async def run_job(self, name: str, parameters: dict[str, Any], *, wait: bool) -> RunRecord:
        plugin = self._plugin(name)
        if plugin.entry.kind != "job":
            raise IochostError(ErrorCode.WRONG_KIND, f"{name!r} is a task; only jobs can be run")
        if plugin.state != State.RUNNING or plugin.worker is None:
            raise IochostError(ErrorCode.INVALID_STATE, f"job {name!r} is {plugin.state.value}, not running")
        run_id = uuid.uuid4().hex
        run = plugin.runs.begin(run_id, parameters, "api")
        plugin.worker.send(messages.RunJob(run_id=run_id, parameters=parameters))
        if not wait:
            return run
        return await plugin.runs.wait(run_id)

    def get_run(self, name: str, run_id: str) -> RunRecord:
        return self._job(name).runs.get(run_id)

    def list_runs(self, name: str) -> list[RunRecord]:
        return self._job(name).runs.all()

    async def cancel_run(self, name: str, run_id: str) -> RunRecord:
        """Ask the job to stop; if it ignores the request, restart its worker."""
        plugin = self._job(name)
        plugin.runs.get(run_id)  # RUN_NOT_FOUND before RUN_ID_MISMATCH
        if plugin.runs.active != run_id:
            raise IochostError(
                ErrorCode.RUN_ID_MISMATCH,
                f"run {run_id} is not the active run of {name!r} (active: {plugin.runs.active})",
                active_run_id=plugin.runs.active,
            )
        plugin.runs.cancel_requested.add(run_id)
        if plugin.worker is not None:
            plugin.worker.send(messages.CancelRun(run_id=run_id))
        try:
            return await asyncio.wait_for(plugin.runs.wait(run_id), self.settings.cancel_grace)
        except asyncio.TimeoutError:
            log.warning("%s: run %s ignored cancel for %.1f s; restarting worker",
                        name, run_id, self.settings.cancel_grace)
            if plugin.worker is not None:
                plugin.kill_reason = f"run {run_id} ignored cancel"
                plugin.worker.kill()
            return await plugin.runs.wait(run_id)

    # -- worker management ---------------------------------------------------------------
    async def _spawn(self, plugin: ManagedPlugin) -> None:
        """Start a worker and wait for READY; raises WORKER_START_FAILED otherwise."""
        assert plugin.plugin_dir is not None and plugin.module_file is not None
        plugin.move(State.STARTING, f"restart #{plugin.restarts}" if plugin.restarts else "")
        plugin.fatal = plugin.kill_reason = None
        plugin.ready = asyncio.get_running_loop().create_future()
        try:
            config = await asyncio.to_thread(load_config, plugin.plugin_dir)
            parameters = config.with_parameters(plugin.entry.parameters).parameters
            plugin.watchdog = parameters.effective_watchdog
            grace = plugin.entry.options.get("grace_period") or parameters.grace_period
            env_python = self._plugin_envs().python(plugin.name) if plugin is not self.system else None
            python = str(env_python) if env_python else None
            spec = WorkerSpec(
                name=plugin.name, plugin_dir=str(plugin.plugin_dir), module_file=plugin.module_file,
                class_name=plugin.entry.class_name, prefix=self.settings.prefix,
                parameters=plugin.entry.parameters,
                version=plugin.entry.options.get("version") or (plugin.entry.commit or "local")[:12],
                grace_period=grace, heartbeat_interval=self.settings.heartbeat_interval,
                memory_limit_mb=parameters.memory_limit_mb or self.settings.worker_memory_mb or None,
                max_open_files=parameters.max_open_files or self.settings.worker_max_files or None,
                forward_log_rate=self.settings.plugin_log_limit,
            )
            logfile = await asyncio.to_thread(logfiles.RotatingFile, self._log_path(plugin.name),
                                              self.settings.log_rotate_bytes, self.settings.log_rotate_files)
            worker = await WorkerProcess.spawn(
                spec, run_dir=self.settings.run_dir, logfile=logfile,
                env=self._worker_env(plugin.name, python), on_event=lambda message: self._on_event(plugin, message),
                containment=self._containment(), python=python,
                output_rate=self.settings.log_throttle_mb * 1024**2,
            )
        except Exception as exc:
            reason = f"cannot start worker: {exc}"
            plugin.move(State.FAILED, reason)
            raise IochostError(ErrorCode.WORKER_START_FAILED, reason) from exc
        plugin.worker = worker
        plugin.last_heartbeat = time.monotonic()
        asyncio.create_task(self._watch_exit(plugin, worker), name=f"iochost-exit-{plugin.name}")
        try:
            await asyncio.wait_for(asyncio.shield(plugin.ready), self.settings.start_timeout)
        except asyncio.TimeoutError:
            plugin.kill_reason = f"no READY within {self.settings.start_timeout:.0f} s"
            worker.kill()
            raise IochostError(ErrorCode.WORKER_START_FAILED, f"{plugin.name!r}: {plugin.kill_reason}") from None

    async def _watch_exit(self, plugin: ManagedPlugin, worker: WorkerProcess) -> None:
        code = await worker.wait()
        if plugin.worker is not worker:
            return
        self.epics.offline(plugin.name)
        plugin.worker = None
        plugin.busy_in = plugin.busy_for = None
        reason = plugin.kill_reason or plugin.fatal or describe_exit(code, worker.spec.memory_limit_mb)
        plugin.runs.abandon(f"worker exited: {reason}")
        if plugin.ready is not None and not plugin.ready.done():
            plugin.ready.set_exception(IochostError(
                ErrorCode.WORKER_START_FAILED, f"{plugin.name!r} did not start: {reason}",
                log_tail=self.logs(plugin.name, 20) if plugin.name in self.plugins else [],
            ))
            plugin.ready.exception()  # retrieved here; waiters re-raise it
        if plugin.state == State.STOPPING or plugin.adding or self._closing:
            return
        if plugin.fatal is not None:
            plugin.move(State.FAILED, plugin.fatal)  # a plugin that cannot load won't load next time
            return
        if plugin.state in (State.STARTING, State.RUNNING, State.PAUSED):
            plugin.move(State.CRASHED, reason)
            log.error("%s crashed: %s", plugin.name, reason)
            self._schedule_restart(plugin)

    def _schedule_restart(self, plugin: ManagedPlugin) -> None:
        s = self.settings
        uptime = time.monotonic() - (plugin.started_mono or time.monotonic())
        if plugin.backoff is None or uptime >= s.backoff_reset:
            plugin.backoff = s.backoff_initial
        delay = plugin.backoff
        plugin.backoff = min(plugin.backoff * 2, s.backoff_max)
        plugin.restarts += 1

        async def restart_later() -> None:
            await asyncio.sleep(delay)
            async with plugin.lock:
                if plugin.state != State.CRASHED or self._closing:
                    return
                plugin.restart_task = None
                try:
                    await self._spawn(plugin)
                except IochostError as exc:
                    log.error("%s: restart failed: %s", plugin.name, exc.message)

        log.info("%s: restart #%d in %.1f s", plugin.name, plugin.restarts, delay)
        plugin.restart_task = asyncio.create_task(restart_later(), name=f"iochost-restart-{plugin.name}")

    def _cancel_restart(self, plugin: ManagedPlugin) -> None:
        if plugin.restart_task is not None:
            plugin.restart_task.cancel()
            plugin.restart_task = None

    async def _stop_worker(self, plugin: ManagedPlugin, *, keep_desired: bool) -> None:
        self._cancel_restart(plugin)
        if not keep_desired:
            await self._set_desired(plugin, "stopped")
        worker = plugin.worker
        if worker is not None and plugin.state in LIVE:
            plugin.move(State.STOPPING, "stop requested")
            self.epics.offline(plugin.name)  # no client is sent to a worker on its way out
            grace = plugin.entry.options.get("grace_period") or self.settings.grace_period
            worker.send(messages.Stop(grace=grace))
            code = await worker.stop(grace)
            plugin.worker = None
            plugin.move(State.STOPPED, f"exit code {code}")
        elif plugin.state in (State.CRASHED, State.FAILED, State.PENDING):
            plugin.move(State.STOPPED, "stop requested")

    async def _set_desired(self, plugin: ManagedPlugin, desired: str) -> None:
        if plugin.entry.desired_state != desired:
            plugin.entry = plugin.entry.model_copy(update={"desired_state": desired, "updated_at": _now()})
            await asyncio.to_thread(self._stores()[1].put, plugin.entry)

    def _on_event(self, plugin: ManagedPlugin, message: Any) -> None:
        if isinstance(message, messages.Heartbeat):
            plugin.last_heartbeat = time.monotonic()
            plugin.busy_in, plugin.busy_for = message.busy_in, message.busy_for
        elif isinstance(message, messages.Ready):
            plugin.pvs = message.pvs
            self.epics.online(plugin.name, message.pvs)
            plugin.started_at, plugin.started_mono = _now(), time.monotonic()
            plugin.last_heartbeat = time.monotonic()
            plugin.move(State.RUNNING, f"pid {message.pid}, {len(message.pvs)} PVs")
            if plugin.ready is not None and not plugin.ready.done():
                plugin.ready.set_result(None)
        elif isinstance(message, messages.StatusChanged):
            plugin.status, plugin.message = message.status[:MAX_STATUS_CHARS], message.message[:MAX_STATUS_CHARS]
            if message.status == "PAUSED" and plugin.state == State.RUNNING:
                plugin.move(State.PAUSED, "ENABLE=0")
            elif message.status != "PAUSED" and plugin.state == State.PAUSED:
                plugin.move(State.RUNNING, "ENABLE=1")
            self._publish(Event(type="status", plugin=plugin.name, at=_now(),
                                data={"status": plugin.status, "message": plugin.message}))
        elif isinstance(message, messages.Log):
            self._forward_log(plugin.name, message)
        elif isinstance(message, messages.RunStarted):
            run = plugin.runs.begin(message.run_id, {}, message.origin) if message.origin == "epics" else None
            self._publish_run(plugin, run or plugin.runs.get(message.run_id))
        elif isinstance(message, messages.RunFinished):
            run = plugin.runs.finish(message.run_id, message.outcome, message.result)
            if run is not None:
                self._publish_run(plugin, run)
        elif isinstance(message, messages.RunRejected):
            plugin.runs.reject(message.run_id, message.active_run_id)
        elif isinstance(message, messages.Fatal):
            plugin.fatal = message.message
            log.error("%s: %s", plugin.name, message.message)

    def _forward_log(self, name: str, message: messages.Log) -> None:
        """A plugin's log record into the daemon's log, within the plugin's line budget.

        The worker already holds to ``plugin_log_rate``; this enforces it (with room for the
        worker's own "not forwarded" notes) against a plugin that writes to the pipe itself."""
        budget = self._log_budgets.get(name)
        limit = self.settings.plugin_log_limit
        if budget is None and limit is not None:
            budget = self._log_budgets[name] = LineBudget(limit[0] * 2, limit[1])
        if budget is not None and not budget.allow(time.monotonic()):
            return
        level = logging.getLevelName(message.level)
        text = message.message if len(message.message) <= MAX_FORWARDED_CHARS else (
            message.message[:MAX_FORWARDED_CHARS] + f"... [{len(message.message)} characters; all in the plugin's log]")
        logging.getLogger(f"iochost.plugin.{name}").log(level if isinstance(level, int) else logging.INFO, "%s", text)

    def _report_dropped_logs(self, now: float) -> None:
        for name, budget in list(self._log_budgets.items()):
            dropped = budget.summary(now)
            if dropped:
                log.warning("%s: %d log lines from the worker dropped (over plugin_log_rate %s)",
                            name, dropped, self.settings.plugin_log_rate)

    async def _watch(self) -> None:
        """Kill workers whose plugin call outlives its watchdog or that stop heartbeating;
        sweep orphans of dead workers; report log lines dropped."""
        ticks = 0
        while True:
            await asyncio.sleep(WATCH_PERIOD)
            now = time.monotonic()
            ticks += 1
            self._report_dropped_logs(now)
            if ticks % SWEEP_EVERY == 0:
                await asyncio.to_thread(self._containment().sweep)
            for plugin in self._supervised():
                worker = plugin.worker
                if worker is None or plugin.state not in (State.RUNNING, State.PAUSED) or plugin.kill_reason:
                    continue
                busy = plugin.heartbeat_busy_for()
                silent = now - plugin.last_heartbeat
                if busy is not None and busy > plugin.watchdog:
                    plugin.kill_reason = (f"watchdog: {plugin.busy_in}() busy for {busy:.1f} s "
                                          f"(limit {plugin.watchdog:g} s)")
                elif silent > self.settings.heartbeat_timeout:
                    plugin.kill_reason = f"no heartbeat for {silent:.1f} s"
                else:
                    continue
                log.error("%s: %s; killing pid %d", plugin.name, plugin.kill_reason, worker.pid)
                worker.kill()

    # -- restore -------------------------------------------------------------------------------
    async def _restore(self, entry: RegistryEntry) -> None:
        """Bring back one registered plugin from its local checkout: no network needed."""
        store, _ = self._stores()
        plugin = ManagedPlugin(entry, plugin_pv_prefix(self.settings.prefix, entry.name), None,
                               entry.module_file, self.settings.runs_kept, self._on_transition)
        self.plugins[entry.name] = plugin
        async with plugin.lock:
            try:
                result = await asyncio.to_thread(store.restore, entry.name, entry.source, entry.commit)
                plugin.plugin_dir = result.plugin_dir
                await asyncio.to_thread(self._plugin_envs().ensure, entry.name, result.checkout_dir,
                                        result.plugin_dir, timeout=self.settings.requirements_timeout)
            except IochostError as exc:
                plugin.move(State.FAILED, f"cannot restore: {exc.message}")
                return
            if entry.desired_state == "stopped":
                plugin.move(State.STOPPED, "restored; desired state stopped")
                return
            try:
                await self._spawn(plugin)
            except IochostError as exc:
                log.error("%s: %s", entry.name, exc.message)

    async def _add_examples(self, folder: Path) -> None:
        for plugin_dir in sorted(p for p in folder.iterdir() if (p / "config.yaml").is_file()):
            name = plugin_dir.name
            if name in self.plugins:
                continue
            try:
                await self.add(PluginRequest(name=name, local_path=str(plugin_dir.resolve())), trusted=True)
            except IochostError as exc:
                log.error("example %s not loaded: %s %s", name, exc.code.value, exc.message)

    # -- helpers ---------------------------------------------------------------------------------
    def _containment(self) -> Containment:
        if self.containment is None:
            raise RuntimeError("Supervisor.start() has not run")
        return self.containment

    def _remove_logs(self, name: str) -> None:
        logfiles.remove(self._log_path(name))
        self._log_budgets.pop(name, None)

    def _plugin_envs(self) -> PluginEnvs:
        if self.envs is None:
            raise RuntimeError("Supervisor.start() has not run")
        return self.envs

    def _stores(self) -> tuple[GitStore, Registry]:
        if self.store is None or self.registry is None:
            raise RuntimeError("Supervisor.start() has not run")
        return self.store, self.registry

    def _plugin(self, name: str, kind: Kind | None = None) -> ManagedPlugin:
        plugin = self.plugins.get(name)
        if plugin is None or not plugin.visible:
            raise IochostError(ErrorCode.PLUGIN_NOT_FOUND, f"no plugin named {name!r}")
        if kind is not None and plugin.entry.kind != kind:
            raise IochostError(ErrorCode.WRONG_KIND, f"{name!r} is a {plugin.entry.kind}, not a {kind}")
        return plugin

    def _job(self, name: str) -> ManagedPlugin:
        return self._plugin(name, "job")

    def _check_name_free(self, name: str) -> None:
        upper = name.upper()
        if upper == SYSTEM_NAME.upper():
            raise IochostError(ErrorCode.PLUGIN_EXISTS,
                               f"plugin name {name!r} is reserved for the daemon's own PVs")
        for other in self.plugins:
            if other.upper() == upper:
                detail = "" if other == name else f" (same PV names as {other!r})"
                raise IochostError(ErrorCode.PLUGIN_EXISTS, f"plugin {name!r} already exists{detail}")

    def _log_path(self, name: str) -> Path:
        return self.settings.logs_dir / f"{name}.log"

    def _worker_env(self, name: str, python: str | None = None) -> dict[str, str]:
        env = plugin_environ()  # no API token for plugin code
        if python is not None:  # the plugin's own environment: its subprocesses use it too
            venv = Path(python).parent.parent
            env["VIRTUAL_ENV"] = str(venv)
            env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", os.defpath)])
        env["OPENBLAS_NUM_THREADS"] = "1"  # ~35 MB of RSS per IOC otherwise
        env.update(self.epics.worker_env(name))
        return env

    def _on_transition(self, plugin: ManagedPlugin, transition: Transition) -> None:
        self._publish(Event(type="transition", plugin=plugin.name, at=transition.at,
                            data=transition.model_dump(mode="json")))
        if plugin is self.system:
            if transition.to_state == State.RUNNING:
                self._schedule_status_push()
        else:
            self._schedule_status_push()

    # -- the daemon's own status IOC ------------------------------------------------------
    async def _start_system(self) -> None:
        """Start {PREFIX}:IOCHOST:*; a failure is logged, never fatal to the daemon."""
        plugin = ManagedPlugin(system_entry(self.started_at), plugin_pv_prefix(self.settings.prefix, SYSTEM_NAME),
                               DAEMON_STATUS_DIR, MODULE_FILE, self.settings.runs_kept, self._on_transition)
        self.system = plugin
        async with plugin.lock:
            try:
                await self._spawn(plugin)
            except IochostError as exc:
                log.error("daemon status IOC did not start: %s", exc.message)

    def _schedule_status_push(self) -> None:
        """Coalesce bursts of transitions into one set_pvs per loop turn."""
        if self._status_push_pending:
            return
        self._status_push_pending = True
        asyncio.get_running_loop().call_soon(self._push_status)

    def _push_status(self) -> None:
        self._status_push_pending = False
        system = self.system
        if system is None or system.worker is None or system.state != State.RUNNING:
            return
        states = [(p.name, p.state) for p in self.plugins.values() if p.visible]
        system.worker.send(messages.SetPVs(values=daemon_pv_values(states, self._degraded())))

    def _supervised(self) -> list[ManagedPlugin]:
        """Every plugin with a worker to watch and stop: the registered ones and the status IOC."""
        plugins = list(self.plugins.values())
        return plugins + [self.system] if self.system is not None else plugins

    def _publish_run(self, plugin: ManagedPlugin, run: RunRecord) -> None:
        self._publish(Event(type="run", plugin=plugin.name, at=_now(), data=run.model_dump(mode="json")))

    def _publish(self, event: Event) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("event subscriber too slow; dropping it")
                self._subscribers.discard(queue)
