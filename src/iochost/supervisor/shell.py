"""The thin asyncio shell around the lifecycles: it carries out effects and feeds back events.

Every decision is the lifecycle's (``lifecycle.py``); here are only processes, timers,
files, the clock and the event stream. Long work (spawning, the add pipeline, the exit
watch) runs as tasks of one ``asyncio.TaskGroup``, which keeps their references and ends
them with the daemon; blocking calls (git, pip, validation, the registry, log files, port
probes) go to threads, so the event loop only ever routes messages. The work behind the
checkout's effects is ``checkout_work.py``, behind an upgrade's ``upgrade_work.py``; what a
worker starts with, ``worker_inputs.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Coroutine

from iochost.config import ConfigError, load_config
from iochost.config.limits import WorkerLimits
from iochost.config.pvnames import plugin_pv_prefix
from iochost.contract import messages
from iochost.durable import StorageProblem, storage_problem
from iochost.errors import ErrorCode, IochostError
from iochost.proctree import ERRANDS
from iochost.settings import Settings, daemon_limits
from iochost.store import RegistryEntry
from iochost.store.paths import new_upgrade_op
from iochost.supervisor import checkout_work, logfiles, upgrade_work
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.process import WorkerProcess, host_fault
from iochost.supervisor.slots import PluginSlot, Services
from iochost.supervisor.worker_inputs import log_path, start_inputs

log = logging.getLogger("iochost.supervisor")

START_LOG_LINES = 20  # of a worker's log, in the error of an add whose start failed
STACK_DUMP_SECONDS = 0.3  # a hung worker: from the request for its stacks to its SIGKILL


class Shell:
    """Carries out the effects of every plugin's lifecycle."""

    def __init__(self, settings: Settings, services: Services, publish: Callable[[PluginSlot, t.Effect], None],
                 forget: Callable[[PluginSlot], None]) -> None:
        self.settings = settings
        self.services = services
        self._publish = publish  # Transitioned, StatusUpdate, RunUpdate: to clients and the status IOC
        self._forget = forget
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closed = False
        self.storage: StorageProblem | None = None  # the last write the data dir refused, until one succeeds
        # the limits of a plugin that sets none: each lifecycle resolves its workers' with them
        self.daemon_limits = daemon_limits(settings)

    # -- the task group ---------------------------------------------------------------------
    async def start(self) -> None:
        self._runner = asyncio.create_task(self._hold_group(), name="iochost-shell")
        await self._ready.wait()

    async def _hold_group(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            self._ready.set()
            await asyncio.Event().wait()  # until close() cancels us; the group then ends its tasks

    async def close(self) -> None:
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)

    def spawn_task(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` in the group; an exception is logged, never allowed to end the group."""
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed", name)
        assert self._group is not None, "Shell.start() has not run"
        if self._closed:  # a timer that fired during shutdown: nothing new starts
            work.close()
            return
        self._group.create_task(guarded(), name=name)

    # -- events in, effects out ---------------------------------------------------------------
    def feed(self, slot: PluginSlot, event: t.Event) -> None:
        """Hand one event to the lifecycle, with the time it is handled at (the one reading
        of the clock the lifecycle gets), and carry out what it answers."""
        try:
            effects = slot.lc.handle(event, clock())
        finally:
            slot.pulse()
        for effect in effects:
            self._apply(slot, effect)

    def later(self, slot: PluginSlot, delay: float, event: t.Event) -> None:
        asyncio.get_running_loop().call_later(delay, self.feed, slot, event)

    def _apply(self, slot: PluginSlot, effect: t.Effect) -> None:
        name, svc = slot.name, self.services
        if isinstance(effect, (t.Transitioned, t.StatusUpdate, t.RunUpdate, t.UpgradeUpdate)):
            if isinstance(effect, t.RunUpdate) and effect.run.state != "running":
                _resolve(slot.run_done.pop(effect.run.run_id, None), effect.run)
            self._publish(slot, effect)
        elif isinstance(effect, t.RunAnswer):
            _resolve(slot.run_answers.pop(effect.run_id, None), effect.run, effect.error)
        elif isinstance(effect, t.Send):
            if slot.worker is not None and slot.worker_gen == effect.gen:
                slot.worker.send(effect.message)
        elif isinstance(effect, t.StopWorker):
            if slot.worker is not None and slot.worker_gen == effect.gen:
                slot.worker.send(messages.Stop(grace=effect.grace))
                slot.worker.terminate()
        elif isinstance(effect, t.Kill):
            if slot.worker is not None and slot.worker_gen == effect.gen:
                slot.worker.dump_stacks()  # where it hung, in its log (and the log tail an add returns)
                asyncio.get_running_loop().call_later(STACK_DUMP_SECONDS, slot.worker.kill)
        elif isinstance(effect, t.Online):
            svc.epics.online(name, effect.pvs)
        elif isinstance(effect, t.Offline):
            svc.epics.offline(name)
        elif isinstance(effect, t.Later):
            self.later(slot, effect.delay, effect.event)
        elif isinstance(effect, t.Persist):
            self.spawn_task(self._persist(slot, effect.entry), f"iochost-persist-{name}")
        elif isinstance(effect, t.EndErrands):
            ended = ERRANDS.end_owned_by(slot)
            if ended:
                log.info("%s: ended %d process(es) its preparation was waiting on", name, ended)
        elif isinstance(effect, t.Teardown):
            self.spawn_task(checkout_work.teardown(self, slot), f"iochost-teardown-{name}")
        elif isinstance(effect, t.Forget):
            self._forget(slot)
        elif isinstance(effect, t.Prepare):
            self.spawn_task(checkout_work.prepare_add(self, slot), f"iochost-add-{name}")
        elif isinstance(effect, t.Restore):
            self.spawn_task(checkout_work.restore(self, slot), f"iochost-restore-{name}")
        elif isinstance(effect, t.Spawn):
            self.spawn_task(self._spawn(slot, effect.gen, effect.limits), f"iochost-spawn-{name}")
        elif isinstance(effect, t.PrepareUpgrade):
            slot.upgrade_op = new_upgrade_op()
            self.spawn_task(upgrade_work.prepare_upgrade(self, slot, slot.upgrade_op), f"iochost-upgrade-{name}")
        elif isinstance(effect, t.SwapRevision):
            self.spawn_task(upgrade_work.swap(self, slot, effect.back, slot.upgrade_op), f"iochost-swap-{name}")
        elif isinstance(effect, t.DropStaged):
            self.spawn_task(upgrade_work.drop(self, slot, slot.upgrade_op), f"iochost-drop-{name}")
        else:  # pragma: no cover - a new effect without its handler here is a bug
            raise TypeError(f"no handler for effect {effect!r}")

    async def in_order(self, slot: PluginSlot, work: Callable[..., Any], *args: Any) -> Any:
        """Run blocking ``work`` in a thread, after the plugin's other file work."""
        async with slot.io:
            return await asyncio.to_thread(work, *args)

    # -- the registry: what is answered is on disk ------------------------------------------------
    async def save(self, slot: PluginSlot, entry: RegistryEntry | None, *, probe: bool = False) -> None:
        """Make ``entry`` (None: the plugin's removal) durable, in order with the plugin's
        other file work. STORAGE_FULL if the disk refuses it: the registry is unchanged.
        ``probe``: write the registry even if it holds ``entry`` already (a restart changes no
        entry, but its worker's spec and log need the room: refused before it stops anything)."""
        registry = self.services.registry
        async with slot.io:
            if entry is not None and slot.lc.delete_requested:  # never bring back what a delete removed
                raise IochostError(ErrorCode.INVALID_STATE, f"{slot.name!r} is being deleted")
            try:
                wrote = await asyncio.to_thread(*((registry.remove, slot.name) if entry is None
                                                  else (registry.put, entry)))
                if probe and not wrote:
                    await asyncio.to_thread(registry.flush)
                    wrote = True
            except IochostError as exc:
                self.storage_refused(exc)
                raise
            slot.unsaved = None
        if wrote:
            self.storage_accepted()

    async def _persist(self, slot: PluginSlot, entry: RegistryEntry) -> None:
        """A save the lifecycle asks for on its own (an add's registration, an upgrade's
        commit point): one the disk refuses is kept and made again once it has room."""
        try:
            await self.save(slot, entry)
        except IochostError as exc:
            if exc.code is ErrorCode.STORAGE_FULL:
                slot.unsaved = entry
                log.error("%s: %s; saved again once space is freed", slot.name, exc.message)

    async def save_again(self, slot: PluginSlot) -> None:
        """Retry the plugin's refused Persist, if any (STORAGE_FULL while the disk is full)."""
        if slot.unsaved is None:
            return
        try:
            await self.save(slot, slot.unsaved)
        except IochostError as exc:
            if exc.code is ErrorCode.STORAGE_FULL:
                raise
            slot.unsaved = None  # being deleted: nothing to keep
        else:
            log.info("%s: its registry entry is saved now", slot.name)

    def storage_refused(self, error: IochostError) -> None:
        """A write to the data dir failed for lack of room: /health and /metrics say so."""
        if error.code is ErrorCode.STORAGE_FULL:
            was, self.storage = self.storage, storage_problem(error)
            if was is None:
                log.error("storage: %s", error.message)
                self._storage_changed()

    def storage_accepted(self) -> None:
        if self.storage is not None:
            log.warning("storage: %s takes writes again", self.settings.data_dir)
            self.storage = None
            self._storage_changed()

    def _storage_changed(self) -> None:
        if self.services.on_storage is not None:
            self.services.on_storage()

    # -- the work behind the effects -------------------------------------------------------------
    def configured_pv_prefix(self, name: str, plugin_dir: Path) -> str | None:
        """The PV prefix a restored checkout's config.yaml gives; None when it does not load
        (its worker then reports why)."""
        try:
            config = load_config(plugin_dir)
        except ConfigError:
            return None
        return plugin_pv_prefix(self.settings.prefix, name, config.prefix)

    def pv_clash(self, slot: PluginSlot, pv_prefix: str | None) -> IochostError | None:
        """Checked on the event loop right before the lifecycle learns ``pv_prefix``, so two
        adds with the same PV prefix cannot both pass."""
        clash = self.services.pv_clash
        return None if clash is None or pv_prefix is None else clash(slot.name, pv_prefix)

    async def _spawn(self, slot: PluginSlot, gen: int, limits: WorkerLimits) -> None:
        try:
            inputs = await asyncio.to_thread(start_inputs, self.settings, self.services, slot.lc, limits)
            if self.services.log_feed is not None:
                inputs.logfile.on_write = self.services.log_feed.publisher(slot.name)
            worker = await WorkerProcess.spawn(
                inputs.spec, run_dir=self.settings.run_dir, logfile=inputs.logfile, env=inputs.env,
                on_event=lambda message: self._from_worker(slot, gen, message),
                containment=self.services.containment, python=inputs.python, launcher=self.services.launcher,
                output_rate=self.settings.log_throttle_mb * 1024**2,
            )
        except Exception as exc:  # noqa: BLE001 - any failure to start is the plugin's FAILED state
            fault = host_fault(exc)  # the host's: retried with backoff, /health names it
            if fault is not None:
                log.error("%s: cannot start its worker: %s; retried with backoff", slot.name, exc)
            self.feed(slot, t.SpawnFailed(gen, str(exc) or type(exc).__name__, fault))
            return
        slot.worker, slot.worker_gen = worker, gen
        self.feed(slot, t.Spawned(gen, worker.pid))
        code = await worker.wait()
        tail: list[str] = []
        lc = slot.lc
        # The caller of an add or upgrade whose start failed gets the log's end; of one whose
        # initialize() raised, the traceback the worker sent instead.
        if (lc.adding or lc.upgrade is not None) and lc.init_failure is None:
            tail = await asyncio.to_thread(logfiles.tail, self.log_path(slot.name), START_LOG_LINES,
                                           self.settings.log_rotate_files)
        if slot.worker is worker:
            slot.worker = None
        self.feed(slot, t.WorkerExited(gen, code, tail))

    def _from_worker(self, slot: PluginSlot, gen: int, message: Any) -> None:
        if isinstance(message, messages.Log):
            self.services.forward_log(slot.name, message)
        elif isinstance(message, messages.ControlRequest) and self.services.on_control is not None:
            self.services.on_control(slot, message)  # the supervisor checks who sent it
        else:
            self.feed(slot, t.FromWorker(gen, message))

    def log_path(self, name: str) -> Path:
        return log_path(self.settings, name)


def clock() -> t.Now:
    """Now, as the lifecycle is told it: wall time (UTC) and monotonic seconds."""
    return t.Now(datetime.now(timezone.utc), time.monotonic())


def _resolve(future: asyncio.Future[Any] | None, value: Any, error: BaseException | None = None) -> None:
    if future is None or future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)

