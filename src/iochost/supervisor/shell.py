"""The thin asyncio shell around the lifecycles: it carries out effects and feeds back events.

Every decision is the lifecycle's (``lifecycle.py``); here are only processes, timers,
files and the event stream. Long work (spawning, the add pipeline, the exit watch) runs
as tasks of one ``asyncio.TaskGroup``, which keeps their references and ends them with
the daemon; blocking calls (git, pip, validation, the registry, log files, port probes)
go to threads, so the event loop only ever routes messages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Coroutine

from iochost.config import ConfigError, load_config
from iochost.config.pvnames import plugin_pv_prefix
from iochost.config.limits import DaemonLimits, WorkerLimits, resolve_limits
from iochost.contract import messages
from iochost.contract.worker_spec import WorkerSpec
from iochost.durable import OUT_OF_SPACE, StorageProblem, storage_error, storage_problem
from iochost.environ import python_child_environ
from iochost.errors import ErrorCode, IochostError
from iochost.launch.launcher import Launcher
from iochost.settings import Settings
from iochost.supervisor import lifecycle_types as t
from iochost.store import GitStore, Registry, RegistryEntry
from iochost.store.envs import PluginEnvs
from iochost.store.paths import new_upgrade_op
from iochost.supervisor import logfiles
from iochost.supervisor.containment import Containment
from iochost.supervisor.daemon_ioc import worker_access_security
from iochost.supervisor.epics import EpicsNetwork
from iochost.supervisor.adding import AddRequest, prepare
from iochost.supervisor.lifecycle import PluginLifecycle
from iochost.supervisor.models import RunRecord
from iochost.supervisor.process import WorkerProcess, host_fault, host_shortage, spec_path
from iochost.worker import autosave

log = logging.getLogger("iochost.supervisor")

START_LOG_LINES = 20  # of a worker's log, in the error of an add whose start failed
STACK_DUMP_SECONDS = 0.3  # a hung worker: from the request for its stacks to its SIGKILL


@dataclass
class Services:
    """What the shell works with, made once by ``Supervisor.start``."""

    store: GitStore
    registry: Registry
    envs: PluginEnvs
    containment: Containment
    epics: EpicsNetwork
    launcher: Launcher | None  # the fork server; None: every worker and probe is spawned
    forward_log: Callable[[str, messages.Log], None]
    on_control: Callable[[PluginSlot, messages.ControlRequest], None] | None = None  # whose worker sent it
    on_storage: Callable[[], None] | None = None  # the data dir began or stopped refusing writes
    # PLUGIN_EXISTS naming the other plugin whose PVs a plugin's PV prefix would share, or None
    pv_clash: Callable[[str, str], IochostError | None] | None = None


class PluginSlot:
    """One lifecycle and the live things the shell holds for it."""

    def __init__(self, lifecycle: PluginLifecycle, request: AddRequest | None = None) -> None:
        self.lc = lifecycle
        self.request = request  # the add being carried out, until it ends
        self.upgrade_request: AddRequest | None = None  # the upgrade being carried out, until it ends
        self.upgrade_op: str | None = None  # the id of the lifecycle's latest upgrade: its staging areas' name
        self.worker: WorkerProcess | None = None
        self.worker_gen = 0
        self.run_answers: dict[str, asyncio.Future[RunRecord]] = {}
        self.run_done: dict[str, asyncio.Future[RunRecord]] = {}
        self.io: asyncio.Lock = asyncio.Lock()  # registry and file work of this plugin, in order
        self.unsaved: RegistryEntry | None = None  # a Persist the disk refused: saved again once it has room
        # the daemon's start: its restore claims its PV names once the plugin before it in boot
        # order has (``claim_after``), then says it has (``claimed``); the checkouts run side by side
        self.claim_after: asyncio.Future[None] | None = None
        self.claimed: asyncio.Future[None] | None = None
        self._changed = asyncio.Event()

    @property
    def name(self) -> str:
        return self.lc.name

    def pulse(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def claim_done(self) -> None:
        """Its restore has claimed its PV names, or never will: the next in boot order's turn."""
        if self.claimed is not None and not self.claimed.done():
            self.claimed.set_result(None)

    async def until(self, done: Callable[[PluginLifecycle], bool]) -> PluginLifecycle:
        """Wait until the lifecycle satisfies ``done`` (checked after every event)."""
        while not done(self.lc):
            await self._changed.wait()
        return self.lc


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
        self.daemon_limits = DaemonLimits(grace_period=settings.grace_period,
                                          memory_limit_mb=settings.worker_memory_mb or None,
                                          max_open_files=settings.worker_max_files or None)

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
            except Exception:  # noqa: BLE001 - one plugin's bug must not end the others' tasks
                log.exception("%s failed", name)
        assert self._group is not None, "Shell.start() has not run"
        if self._closed:  # a timer that fired during shutdown: nothing new starts
            work.close()
            return
        self._group.create_task(guarded(), name=name)

    # -- events in, effects out ---------------------------------------------------------------
    def feed(self, slot: PluginSlot, event: t.Event) -> None:
        """Hand one event to the lifecycle and carry out what it answers."""
        try:
            effects = slot.lc.handle(event)
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
        elif isinstance(effect, t.Teardown):
            self.spawn_task(self._teardown(slot), f"iochost-teardown-{name}")
        elif isinstance(effect, t.Forget):
            self._forget(slot)
        elif isinstance(effect, t.Prepare):
            self.spawn_task(self._prepare(slot), f"iochost-add-{name}")
        elif isinstance(effect, t.Restore):
            self.spawn_task(self._restore(slot), f"iochost-restore-{name}")
        elif isinstance(effect, t.Spawn):
            self.spawn_task(self._spawn(slot, effect.gen), f"iochost-spawn-{name}")
        elif isinstance(effect, t.PrepareUpgrade):
            slot.upgrade_op = new_upgrade_op()
            self.spawn_task(self._prepare_upgrade(slot, slot.upgrade_op), f"iochost-upgrade-{name}")
        elif isinstance(effect, t.SwapRevision):
            self.spawn_task(self._swap(slot, effect.back, slot.upgrade_op), f"iochost-swap-{name}")
        elif isinstance(effect, t.DropStaged):
            self.spawn_task(self._drop(slot, slot.upgrade_op), f"iochost-drop-{name}")
        else:  # pragma: no cover - a new effect without its handler here is a bug
            raise TypeError(f"no handler for effect {effect!r}")

    async def _in_order(self, slot: PluginSlot, work: Callable[..., Any], *args: Any) -> Any:
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
    async def _prepare(self, slot: PluginSlot) -> None:
        request = slot.request
        assert request is not None
        loop, svc = asyncio.get_running_loop(), self.services
        try:
            prepared = await asyncio.to_thread(
                prepare, request, slot.lc.entry, svc.store, svc.envs, svc.launcher, self.settings,
                lambda commit: loop.call_soon_threadsafe(self.feed, slot, t.Fetched(commit)),
                lambda: slot.lc.delete_requested,
            )
        except Exception as exc:  # noqa: BLE001 - an unexpected one is INTERNAL_ERROR for the caller
            error = self._preparation_error(slot, "adding", exc)
            self.storage_refused(error)
            self.feed(slot, t.PrepareFailed(error))
        else:
            assert prepared is not None  # None only answers an upgrade
            await asyncio.sleep(0)  # Fetched, posted from the thread, is handled first
            clash = self._pv_clash(slot, prepared.pv_prefix)
            if clash is not None:  # the add's Teardown removes what it fetched
                self.feed(slot, t.PrepareFailed(clash))
                return
            self.feed(slot, t.Prepared(prepared.entry, prepared.plugin_dir, prepared.pvs, prepared.pv_prefix))

    async def _prepare_upgrade(self, slot: PluginSlot, op: str) -> None:
        """Stage and validate the new revision in a thread while the old worker serves.

        What it stages is upgrade ``op``'s alone. An upgrade ended meanwhile (a delete, the
        daemon's shutdown) is over for good: this thread then removes its own areas and
        reports nothing, whoever holds the plugin's name by now."""
        request = slot.upgrade_request
        assert request is not None
        svc, lc = self.services, slot.lc
        options = {key: value for key, value in lc.entry.options.items() if key != "grace_period"}
        if request.grace_period:
            options["grace_period"] = request.grace_period
        base = lc.entry.model_copy(update={"source": request.source, "parameters": request.parameters,
                                           "options": options})

        def ended() -> bool:
            return lc.upgrade is None or slot.upgrade_op != op

        def unchanged(commit: str | None) -> bool:  # what the worker runs would be the same
            entry = lc.entry
            return (commit is not None and commit == entry.commit and request.parameters == entry.parameters
                    and request.class_name in (None, entry.class_name) and base.options == entry.options
                    and base.source.path == entry.source.path)

        try:
            prepared = await asyncio.to_thread(
                prepare, request, base, svc.store, svc.envs, svc.launcher, self.settings,
                lambda commit: None, lambda: lc.delete_requested or lc.closing, upgrade_op=op,
                unchanged=unchanged,
            )
        except Exception as exc:  # noqa: BLE001 - an unexpected one is INTERNAL_ERROR for the caller
            await self._drop_own(slot, op)  # before the caller hears of it
            if not ended():
                error = self._preparation_error(slot, "upgrading", exc)
                self.storage_refused(error)
                self.feed(slot, t.UpgradePrepareFailed(error))
        else:
            clash = None if prepared is None or ended() else self._pv_clash(slot, prepared.pv_prefix)
            if prepared is None or ended() or clash is not None:  # a no-op, the upgrade is over, or refused
                await self._drop_own(slot, op)
            if clash is not None and not ended():
                self.feed(slot, t.UpgradePrepareFailed(clash))
            elif not ended():  # the same revision from another source (a mirror): the entry says so
                relabeled = base if prepared is None and base.source != lc.entry.source else None
                self.feed(slot, t.UpgradePrepared(prepared, relabeled))
        if ended():
            log.info("%s: upgrade %s ended while it was being prepared; its staging areas are removed", slot.name, op)

    async def _drop_own(self, slot: PluginSlot, op: str) -> None:
        """Remove upgrade ``op``'s staging areas; a failure is logged (the next start removes them)."""
        try:
            await self._in_order(slot, self._drop_staged, slot.name, op)
        except OSError as exc:
            log.error("%s: removing the staging areas of upgrade %s failed: %s", slot.name, op, exc)

    def _preparation_error(self, slot: PluginSlot, doing: str, exc: Exception) -> IochostError:
        if isinstance(exc, IochostError):
            return exc
        shortage = host_shortage(exc)
        if shortage is not None and shortage.errno in OUT_OF_SPACE:
            return storage_error(shortage.filename or self.settings.data_dir, shortage, f"{doing} {slot.name!r}")
        if shortage is not None:  # the validation probe could not be started: the host's fault
            log.error("%s %s: cannot start the validation probe: %s", doing, slot.name, exc)
            return IochostError(ErrorCode.LAUNCHER_UNAVAILABLE, f"{doing} {slot.name!r}: the daemon cannot "
                                f"start its validation probe now ({exc}); retry later")
        log.error("%s %s failed", doing, slot.name, exc_info=exc)
        return IochostError(ErrorCode.INTERNAL_ERROR, f"{doing} {slot.name!r} failed unexpectedly")

    async def _swap(self, slot: PluginSlot, back: bool, op: str | None) -> None:
        """Checkout and environment together: the new revision in, or the previous one back."""
        svc = self.services
        assert op is not None, "a SwapRevision without an upgrade"
        steps = (svc.store.swap_back, svc.envs.swap_back) if back else (svc.store.swap_in, svc.envs.swap_in)
        try:
            for step in steps:
                await self._in_order(slot, step, slot.name, op)
            plugin_dir = await asyncio.to_thread(svc.store.plugin_dir, slot.name, slot.lc.entry.source.path)
        except (OSError, IochostError) as exc:
            log.error("%s: swapping revisions failed: %s", slot.name, exc)
            self.feed(slot, t.Swapped(False, reason=str(exc)))
        else:
            self.feed(slot, t.Swapped(True, plugin_dir))

    async def _drop(self, slot: PluginSlot, op: str | None) -> None:
        if op is not None:  # leftovers under tmp go with the next start
            await self._drop_own(slot, op)
        self.feed(slot, t.Dropped())

    def _drop_staged(self, name: str, op: str) -> None:
        self.services.store.drop_staged(name, op)
        self.services.envs.drop_staged(name, op)

    async def _restore(self, slot: PluginSlot) -> None:
        entry, svc = slot.lc.entry, self.services
        try:
            result = await asyncio.to_thread(svc.store.restore, entry.name, entry.source, entry.commit)
            await asyncio.to_thread(svc.envs.ensure, entry.name, result.checkout_dir, result.plugin_dir,
                                    timeout=self.settings.requirements_timeout)
            pv_prefix = await asyncio.to_thread(self.configured_pv_prefix, entry.name, result.plugin_dir)
        except IochostError as exc:
            slot.claim_done()
            self.feed(slot, t.RestoreFailed(exc.message))
            return
        try:
            if slot.claim_after is not None:  # of two that clash, the first in boot order keeps the names
                await slot.claim_after
            clash = self._pv_clash(slot, pv_prefix)
            if clash is not None:
                self.feed(slot, t.RestoreFailed(clash.message))
            else:
                self.feed(slot, t.Restored(result.plugin_dir, pv_prefix))
        finally:
            slot.claim_done()

    def configured_pv_prefix(self, name: str, plugin_dir: Path) -> str | None:
        """The PV prefix a restored checkout's config.yaml gives; None when it does not load
        (its worker then reports why)."""
        try:
            config = load_config(plugin_dir)
        except ConfigError:
            return None
        return plugin_pv_prefix(self.settings.prefix, name, config.prefix)

    def _pv_clash(self, slot: PluginSlot, pv_prefix: str | None) -> IochostError | None:
        """Checked on the event loop right before the lifecycle learns ``pv_prefix``, so two
        adds with the same PV prefix cannot both pass."""
        clash = self.services.pv_clash
        return None if clash is None or pv_prefix is None else clash(slot.name, pv_prefix)

    async def _teardown(self, slot: PluginSlot) -> None:
        """The one teardown: after a failed add and for every delete."""
        name, svc = slot.name, self.services
        async with slot.io:
            for step in (svc.registry.remove, svc.store.remove, svc.envs.remove):
                try:
                    await asyncio.to_thread(step, name)
                except (OSError, IochostError) as exc:  # logged; the delete still ends
                    log.error("%s: teardown step %s failed: %s", name, step.__qualname__, exc)
                    if isinstance(exc, IochostError):
                        self.storage_refused(exc)
            await asyncio.to_thread(logfiles.remove, self.log_path(name))
            await asyncio.to_thread(autosave.remove, autosave.path_for(self.settings.autosave_dir, name))
            await asyncio.to_thread(spec_path(self.settings.run_dir, name).unlink, missing_ok=True)
        svc.epics.forget(name)
        self.feed(slot, t.TornDown())

    async def _spawn(self, slot: PluginSlot, gen: int) -> None:
        try:
            limits, spec, python, env, logfile = await asyncio.to_thread(self._start_inputs, slot)
            worker = await WorkerProcess.spawn(
                spec, run_dir=self.settings.run_dir, logfile=logfile, env=env,
                on_event=lambda message: self._from_worker(slot, gen, message),
                containment=self.services.containment, python=python, launcher=self.services.launcher,
                output_rate=self.settings.log_throttle_mb * 1024**2,
            )
        except Exception as exc:  # noqa: BLE001 - any failure to start is the plugin's FAILED state
            fault = host_fault(exc)  # the host's: retried with backoff, /health names it
            if fault is not None:
                log.error("%s: cannot start its worker: %s; retried with backoff", slot.name, exc)
            self.feed(slot, t.SpawnFailed(gen, str(exc) or type(exc).__name__, fault, time.monotonic()))
            return
        slot.worker, slot.worker_gen = worker, gen
        self.feed(slot, t.Spawned(gen, worker.pid, limits))
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
        self.feed(slot, t.WorkerExited(gen, code, time.monotonic(), tail))

    def _from_worker(self, slot: PluginSlot, gen: int, message: Any) -> None:
        if isinstance(message, messages.Log):
            self.services.forward_log(slot.name, message)
        elif isinstance(message, messages.ControlRequest) and self.services.on_control is not None:
            self.services.on_control(slot, message)  # the supervisor checks who sent it
        else:
            self.feed(slot, t.FromWorker(gen, message, time.monotonic()))

    def _start_inputs(self, slot: PluginSlot) -> tuple[WorkerLimits, WorkerSpec, str | None, dict[str, str],
                                                       logfiles.RotatingFile]:
        """Blocking, in one thread hop: the spec, the environment (probes a port), the log file."""
        limits, spec, python = self._worker_spec(slot)
        env = self._worker_env(slot.name, python)
        logfile = logfiles.RotatingFile(self.log_path(slot.name), self.settings.log_rotate_bytes,
                                        self.settings.log_rotate_files)
        return limits, spec, python, env, logfile

    def _worker_spec(self, slot: PluginSlot) -> tuple[WorkerLimits, WorkerSpec, str | None]:
        """Blocking: reads config.yaml. The limits here time the stop too (one resolution)."""
        lc = slot.lc
        entry = lc.entry
        assert lc.plugin_dir is not None and entry.module_file is not None
        parameters = load_config(lc.plugin_dir).with_parameters(entry.parameters).parameters
        limits = resolve_limits(parameters, self.daemon_limits, entry.options.get("grace_period"))
        env_python = self.services.envs.python(entry.name)
        spec = WorkerSpec(
            name=entry.name, plugin_dir=str(lc.plugin_dir), module_file=entry.module_file,
            class_name=entry.class_name, prefix=self.settings.prefix, parameters=entry.parameters,
            version=entry.options.get("version") or (entry.commit or "local")[:12],
            grace_period=limits.grace_period, heartbeat_interval=self.settings.heartbeat_interval,
            memory_limit_mb=limits.memory_limit_mb, max_open_files=limits.max_open_files,
            forward_log_rate=self.settings.plugin_log_limit, realtime=self.settings.worker_realtime,
            autosave_file=str(autosave.path_for(self.settings.autosave_dir, entry.name)),
            access_security=worker_access_security(self.settings, entry.name),
            beamline_config=self.settings.beamline_values,
        )
        return limits, spec, str(env_python) if env_python else None

    def _worker_env(self, name: str, python: str | None) -> dict[str, str]:
        env = python_child_environ()  # no API token for plugin code
        if python is not None:  # the plugin's own environment: its subprocesses use it too
            venv = Path(python).parent.parent
            env["VIRTUAL_ENV"] = str(venv)
            env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", os.defpath)])
        env.update(self.services.epics.worker_env(name))
        return env

    def log_path(self, name: str) -> Path:
        return self.settings.logs_dir / f"{name}.log"


def _resolve(future: asyncio.Future[Any] | None, value: Any, error: BaseException | None = None) -> None:
    if future is None or future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)

