"""The supervisor: the daemon's plugins as one whole, what the REST API talks to.

It composes the parts, each with one job: ``operations`` (requests as lifecycle events and
waits), ``boot`` (the restore at start), ``event_bus`` (``GET /events``),
``daemon_ioc_sync`` (the daemon's own IOC), ``epics_control`` (its control PVs),
``log_forwarding``, ``pv_claims`` and ``watch``; the ``Shell`` carries out the lifecycles'
effects. It runs on the daemon's asyncio loop and never imports softioc.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any, AsyncGenerator, Callable

from iochost import __version__
from iochost.config.pvnames import plugin_pv_prefix
from iochost.durable import StorageProblem
from iochost.kinds import Kind
from iochost.launch.launcher import Launcher
from iochost.proctree import ERRANDS
from iochost.settings import Settings
from iochost.store import GitStore, Registry, RegistryEntry
from iochost.store.envs import PluginEnvs
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor import logfiles
from iochost.supervisor.adding import AddRequest, Declared, UpgradeChange
from iochost.supervisor.boot import Boot
from iochost.supervisor.containment import Containment
from iochost.supervisor.daemon_ioc_sync import DaemonIOCSync
from iochost.supervisor.epics import EpicsNetwork
from iochost.supervisor.epics_control import EpicsControl
from iochost.supervisor.event_bus import EventBus, stream_event
from iochost.supervisor.lifecycle import PluginLifecycle
from iochost.supervisor.log_feed import LogFeed
from iochost.supervisor.log_forwarding import LogForwarding
from iochost.supervisor.operations import PluginOperations
from iochost.supervisor.plugin_table import PluginTable
from iochost.supervisor.public import Health, PluginProblem, PluginRecord, Readiness, RunRecord, StreamEvent
from iochost.supervisor.pv_claims import PVClaims, checkout_pv_prefixes
from iochost.supervisor.shell import Shell, clock
from iochost.supervisor.slots import PluginSlot, Services
from iochost.supervisor.states import LISTED, LIVE, UNSETTLED, State
from iochost.supervisor.view import PluginView
from iochost.supervisor.watch import Watch

log = logging.getLogger("iochost.supervisor")


class Supervisor:
    """The one object the API holds: its methods are what the routes call."""

    def __init__(self, settings: Settings, launcher: Launcher | None = None,
                 declared: Declared | None = None) -> None:
        """``launcher``: the started fork server (``iochost serve`` starts it before the web
        stack loads), closed with the supervisor; None: every worker and probe is spawned.
        ``declared``: the plugins file, applied once the registry is restored."""
        self.settings = settings
        self.launcher = launcher
        self.table = PluginTable()
        self.started_at = datetime.now(timezone.utc)
        self.epics = EpicsNetwork(settings)
        self.timings = t.Timings.from_settings(settings)
        self.shell: Shell | None = None
        self._started = time.monotonic()
        self._watch_task: asyncio.Task[None] | None = None
        self._bring_back: asyncio.Task[None] | None = None
        self.bus = EventBus()
        self.log_forwarding = LogForwarding(settings)
        self.log_feed = LogFeed()  # each plugin's log writes, to the streams that follow them
        self.claims = PVClaims(settings, self.table)
        self.daemon_ioc = DaemonIOCSync(settings, self.table, self._degraded)
        self.operations = PluginOperations(settings, self.table, self.claims, self._new_slot, self._shell)
        self.boot = Boot(settings, self.table, self.operations, declared)
        ops = self.operations
        self.epics_control = EpicsControl(settings, self.table, self._shell, {
            "start": ops.start_plugin, "stop": ops.stop_plugin, "restart": ops.restart_plugin,
        }, self.daemon_ioc, self.bus)

    # -- daemon lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        """Create the data dir, bring back every registered plugin, then load examples."""
        s = self.settings
        for folder in (s.data_dir, s.logs_dir, s.run_dir):
            folder.mkdir(parents=True, exist_ok=True)
        s.autosave_dir.mkdir(mode=0o700, exist_ok=True)  # saved PV values: the daemon's user only
        s.run_dir.chmod(0o700)  # worker specs hold parameters (made 0755 by earlier versions)
        store = await asyncio.to_thread(GitStore, s.data_dir)
        registry = Registry(s.registry_path)
        await asyncio.to_thread(registry.load)
        registered = {entry.name for entry in registry.entries()}
        await asyncio.to_thread(store.prune, registered)  # checkouts a crash left unregistered
        envs = await asyncio.to_thread(PluginEnvs, s.data_dir)
        await asyncio.to_thread(envs.prune, registered)
        containment = await asyncio.to_thread(Containment, s.worker_cgroups)
        if self.launcher is not None:  # pooled warm members wait in the cgroup they will run in
            self.launcher.on_warm_member = containment.place_member
        services = Services(store=store, registry=registry, envs=envs, containment=containment,
                            epics=self.epics, launcher=self.launcher,
                            forward_log=self.log_forwarding.forward, on_control=self.epics_control.on_control,
                            on_storage=self.daemon_ioc.schedule_push, pv_clash=self.claims.clash,
                            log_feed=self.log_feed)
        shell = self.shell = Shell(s, services, self._on_effect, self._forget)
        await shell.start()
        await self.epics.start()
        self._watch_task = asyncio.create_task(Watch(shell, self.table, self.log_forwarding).run(),
                                               name="iochost-watchdog")
        entries = await asyncio.to_thread(self.boot.entries, registry)
        self.claims.boot_claims = await asyncio.to_thread(checkout_pv_prefixes, shell, entries)
        slots = [self._new_slot(entry) for entry in entries]  # visible at once, pending

        async def start_system() -> None:
            await self.daemon_ioc.start(shell, self.started_at, self.timings)

        self._bring_back = asyncio.create_task(self.boot.bring_back_all(shell, slots, start_system),
                                               name="iochost-restore")

    @property
    def ready(self) -> bool:
        """The registry's plugins are restored and the examples added."""
        return self.boot.ready

    def hold_restore(self) -> Callable[[], None]:
        """Keep the restore waiting until the returned function is called (``Boot.hold_restore``)."""
        return self.boot.hold_restore()

    async def until_ready(self) -> None:
        """Until ``ready``: for work that should not compete with the restore for the CPU."""
        await self.boot.until_ready()

    async def shutdown(self) -> None:
        """Stop every worker (SIGTERM, grace, SIGKILL); the registry keeps the desired state."""
        shell = self._shell()
        if self._watch_task is not None:
            self._watch_task.cancel()
        if self._bring_back is not None:
            self._bring_back.cancel()
        slots = self.table.supervised()
        for slot in slots:
            shell.feed(slot, t.Closing())
            shell.feed(slot, t.StopRequested(keep_desired=True))
        ended = ERRANDS.end_all()  # git, pip, probes of adds and upgrades: over, not waited out
        if ended:
            log.info("shutdown: ended %d git, pip or validation process(es) of unfinished requests", ended)
        await asyncio.gather(*(slot.until(lambda lc: lc.state not in LIVE) for slot in slots))
        await shell.close()
        if shell.services.launcher is not None:  # first: its idle members sit in cgroups of the tree
            await asyncio.to_thread(shell.services.launcher.close)
        await asyncio.to_thread(shell.services.containment.close)
        await self.epics.close()

    # -- queries --------------------------------------------------------------------------
    def get(self, name: str) -> PluginRecord:
        return self.table.find(name).lc.record()

    def view(self, name: str, kind: Kind | None = None) -> PluginView:
        """One plugin, frozen, for readers of more than its record (displays, iocmng's startup
        info): PLUGIN_NOT_FOUND; with ``kind``, WRONG_KIND for a plugin of the other kind
        (iocmng's /tasks, /jobs paths)."""
        return self.table.find(name, kind).lc.view()

    def views(self, *, include_system: bool = False) -> list[PluginView]:
        """The listed plugins, frozen (with the daemon's status IOC, if asked): for readers
        that need more than a ``PluginRecord``, the metrics collector and the displays."""
        views = [slot.lc.view() for slot in self.table.slots.values()]
        if include_system and self.table.system is not None:
            views.append(self.table.system.lc.view())
        return views

    def health(self, *, named: bool = True) -> Health:
        """Counts per state; ``degraded`` while any plugin has a ``trouble``; ``named``: with
        every such plugin and its last error (else ``problems`` is None)."""
        counts: dict[str, int] = {"total": len(self.table.slots)}
        counts.update({state.value: 0 for state in LISTED})
        problems = []
        kinds: dict[str, int] = {"task": 0, "job": 0}
        for slot in self.table.slots.values():
            lc = slot.lc
            counts[lc.state.value] += 1
            kinds[lc.entry.kind] += 1
            trouble = lc.trouble
            if trouble is not None:
                problems.append(PluginProblem(name=lc.name, kind=lc.entry.kind, reason=trouble, state=lc.state,
                                              status=lc.status, restarts=lc.restarts, last_error=lc.last_error))
        storage = self.storage_problem()
        launcher = self.launcher.problem if self.launcher is not None else None
        return Health(status="degraded" if problems or storage or launcher else "ok", version=__version__,
                      uptime=round(time.monotonic() - self._started, 1), ready=self.ready, plugins=counts,
                      tasks_count=kinds["task"], jobs_count=kinds["job"],
                      problems=problems if named else None, storage=storage, launcher=launcher)

    def storage_problem(self) -> StorageProblem | None:
        """The write the data dir refused last, while no write since succeeded (full disk)."""
        return self.shell.storage if self.shell is not None else None

    def readiness(self) -> Readiness:
        restoring = sum(slot.lc.state in UNSETTLED for slot in self.table.slots.values())
        return Readiness(ready=self.ready, restoring=restoring)

    def table_rows(self) -> dict[str, int]:
        """Plugin name -> its row n in the daemon IOC's table (``{PREFIX}:IOCHOST:ROWnnn:*``)."""
        return self.daemon_ioc.table_rows()

    async def logs(self, name: str, lines: int) -> list[str]:
        self.table.find(name)
        return await asyncio.to_thread(logfiles.tail, self._shell().log_path(name), lines,
                                       self.settings.log_rotate_files)

    def follow_log(self, name: str, lines: int, keepalive: float
                   ) -> tuple[list[str], AsyncGenerator[list[str] | int | None, None]]:
        """The log's last ``lines`` and, from right after them, each new line (``LogFeed.follow``):
        both happen on the event loop, where the log is written, so no line falls between
        the two or comes twice (the tail reads at most ``TAIL_READ_BYTES`` of a local file)."""
        self.table.find(name)
        follower = self.log_feed.follow(name, keepalive)
        return logfiles.tail(self._shell().log_path(name), lines, self.settings.log_rotate_files), follower

    def subscribe(self, keepalive: float | None = None) -> AsyncGenerator[StreamEvent | None, None]:
        """Every event from now on; ``None`` after ``keepalive`` seconds without one."""
        return self.bus.subscribe(keepalive)

    # -- the operations (``PluginOperations``) ------------------------------------------------
    async def add(self, request: AddRequest) -> PluginRecord:
        return await self.operations.add(request)

    async def remove(self, name: str, *, kind: Kind | None = None) -> None:
        await self.operations.remove(name, kind=kind)

    async def upgrade(self, name: str, change: UpgradeChange) -> PluginRecord:
        return await self.operations.upgrade(name, change)

    async def start_plugin(self, name: str) -> PluginRecord:
        return await self.operations.start_plugin(name)

    async def stop_plugin(self, name: str) -> PluginRecord:
        return await self.operations.stop_plugin(name)

    async def restart_plugin(self, name: str) -> PluginRecord:
        return await self.operations.restart_plugin(name)

    async def run_job(self, name: str, parameters: dict[str, Any], *, wait: bool) -> RunRecord:
        return await self.operations.run_job(name, parameters, wait=wait)

    def get_run(self, name: str, run_id: str) -> RunRecord:
        return self.operations.get_run(name, run_id)

    def list_runs(self, name: str) -> list[RunRecord]:
        return self.operations.list_runs(name)

    async def cancel_run(self, name: str, run_id: str) -> RunRecord:
        return await self.operations.cancel_run(name, run_id)

    # -- the plugin table, and what the shell reports back ------------------------------------
    def _new_slot(self, entry: RegistryEntry, request: AddRequest | None = None) -> PluginSlot:
        lc = PluginLifecycle(entry, plugin_pv_prefix(self.settings.prefix, entry.name), self.timings,
                             self.settings.runs_kept, clock(), self._shell().daemon_limits)
        slot = self.table.slots[entry.name] = PluginSlot(lc, request)  # reserves the name before any await
        self.daemon_ioc.appear(entry.name)
        self.daemon_ioc.schedule_push()
        return slot

    def _forget(self, slot: PluginSlot) -> None:
        if self.table.slots.get(slot.name) is slot:
            del self.table.slots[slot.name]
            self.daemon_ioc.release(slot.name)
        self.log_forwarding.forget(slot.name)
        self.daemon_ioc.schedule_push()

    def _on_effect(self, slot: PluginSlot, effect: t.Effect) -> None:
        event = stream_event(slot.name, effect)
        if event is not None:
            self.bus.publish(event)
        is_system = slot is self.table.system
        if isinstance(effect, t.Transitioned):
            if not is_system or effect.transition.to_state == State.RUNNING:
                self.daemon_ioc.schedule_push()
        elif isinstance(effect, t.StatusUpdate):
            if effect.trouble_changed and not is_system:
                self.daemon_ioc.schedule_push()  # STATUS ERROR/FAILED came or went: HEALTH follows

    def _degraded(self) -> bool:
        return self.storage_problem() is not None or any(slot.lc.degraded for slot in self.table.slots.values())

    def _shell(self) -> Shell:
        if self.shell is None:
            raise RuntimeError("Supervisor.start() has not run")
        return self.shell

    def list(self, kind: Kind | None = None) -> list[PluginRecord]:  # last: it shadows ``list`` in the class
        return [slot.lc.record() for slot in self.table.slots.values()
                if kind is None or slot.lc.entry.kind == kind]
