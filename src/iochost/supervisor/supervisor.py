"""The supervisor: what the REST API asks of the plugins, as lifecycle events and waits.

Each request becomes one event to the plugin's lifecycle (which decides), the shell
carries out the effects, and the request waits for the lifecycle to reach the state that
answers it. It runs on the daemon's asyncio loop and never imports softioc.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from iochost import __version__
from iochost.budget import LineBudget
from iochost.config.pvnames import nested_segment, plugin_pv_prefix, same_segment
from iochost.contract import messages
from iochost.durable import OUT_OF_SPACE, StorageProblem
from iochost.errors import ErrorCode, IochostError
from iochost.kinds import Kind
from iochost.launch.launcher import Launcher
from iochost.proctree import ERRANDS
from iochost.settings import Settings
from iochost.store import GitStore, PluginSource, Registry, RegistryEntry
from iochost.store.envs import PluginEnvs
from iochost.store.declared import DeclaredNames
from iochost.store.policy import check_source_allowed
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor import logfiles
from iochost.supervisor.adding import AddRequest, Declared, UpgradeChange, boot_order, declared_change
from iochost.supervisor.containment import Containment
from iochost.supervisor.daemon_ioc import (CONTROL_MSG, CONTROL_VERBS, SYSTEM_NAME, RowTable, control_target,
                                           daemon_pv_values, row_values, short_text, system_entry,
                                           write_system_plugin)
from iochost.supervisor.epics import EpicsNetwork
from iochost.supervisor.lifecycle import UP, PluginLifecycle
from iochost.supervisor.models import Event, Health, PluginProblem, PluginRecord, Readiness, RunRecord
from iochost.supervisor.shell import PluginSlot, Services, Shell
from iochost.supervisor.states import LIVE, UNSETTLED, State

log = logging.getLogger("iochost.supervisor")

WATCH_PERIOD = 0.5
SWEEP_EVERY = 4  # watch periods between sweeps for orphans of dead workers
MAX_FORWARDED_CHARS = 4000  # of one plugin log record in the daemon's log
EVENT_QUEUE_SIZE = 1000
RUN_ANSWER_TIMEOUT = 10.0  # the worker answers a run request at once; silence means it is wedged
SETTLED = frozenset({State.RUNNING, State.PAUSED, State.STOPPED, State.CRASHED, State.FAILED, State.DELETED})
SYSTEM_RETRY_MAX = 30.0  # seconds between tries to write the daemon IOC's files on a full disk
STORAGE_RECHECK_EVERY = 4  # watch periods between retries of the registry while the data dir refused a write


def _error_lines(exc: IochostError) -> str:
    """A failed add's validation errors, one ``; file:line message`` each, for the daemon's log."""
    return "".join(f"; {e.get('file') or ''}:{e.get('line') or ''} {e.get('message')}"
                   for e in exc.details.get("errors") or [])


class Supervisor:
    def __init__(self, settings: Settings, launcher: Launcher | None = None,
                 declared: Declared | None = None) -> None:
        """``launcher``: the started fork server (``iochost serve`` starts it before the web
        stack loads), closed with the supervisor; None: every worker and probe is spawned.
        ``declared``: the plugins file, applied once the registry is restored."""
        self.settings = settings
        self.launcher = launcher
        self.declared = declared
        self.plugins: dict[str, PluginSlot] = {}
        self.system: PluginSlot | None = None  # the daemon's own status IOC
        self.started_at = datetime.now(timezone.utc)
        self.epics = EpicsNetwork(settings)
        self.timings = t.Timings(
            start_timeout=settings.start_timeout,
            heartbeat_timeout=settings.heartbeat_timeout, backoff_initial=settings.backoff_initial,
            backoff_max=settings.backoff_max, backoff_reset=settings.backoff_reset,
            cancel_grace=settings.cancel_grace, probation=settings.upgrade_probation,
        )
        self.shell: Shell | None = None
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._started = time.monotonic()
        self._watch_task: asyncio.Task[None] | None = None
        self._bring_back: asyncio.Task[None] | None = None
        self.ready = False  # the registry's plugins are restored and the examples added
        self._ready_event = asyncio.Event()
        self._listening: asyncio.Event | None = None  # set by hold_restore(): restore waits for it
        self._status_push_pending = False
        self._rows = RowTable(settings.epics_table_rows)  # the daemon IOC's plugin table
        self._control_message = ""  # CONTROL_MSG: the outcome of the last control request
        self._pushed: dict[str, Any] = {}  # the values the status IOC has, to send only changes
        self._pushed_to: object | None = None  # ... of that worker process
        self._log_budgets: dict[str, LineBudget] = {}  # plugin log lines forwarded into the daemon's log
        # registered plugins' PV prefixes as their checkouts say at start: an add or upgrade during
        # the restore is checked against them until each restore claims its own (or fails)
        self._boot_claims: dict[str, str] = {}
        self._rechecking_storage = False

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
                            forward_log=self._forward_log, on_control=self._on_control,
                            on_storage=self._schedule_status_push, pv_clash=self._pv_clash)
        self.shell = Shell(s, services, self._on_effect, self._forget)
        await self.shell.start()
        await self.epics.start()
        self._watch_task = asyncio.create_task(self._watch(), name="iochost-watchdog")
        entries = await asyncio.to_thread(self._boot_entries, registry)
        self._boot_claims = await asyncio.to_thread(self._checkout_pv_prefixes, entries)
        slots = [self._new_slot(entry) for entry in entries]  # visible at once, pending
        self._bring_back = asyncio.create_task(self._bring_back_all(slots), name="iochost-restore")

    def _boot_entries(self, registry: Registry) -> list[RegistryEntry]:
        """The registry's entries as this start brings them back: a plugin the plugins file
        declares takes the file's ``auto_start_on_boot`` and ``autostart_order`` (the file is
        read at every start, as iocmng reads it; saved so the record shows them), and one
        added with ``auto_start_on_boot: false`` that the file does not declare comes back
        stopped (iocmng reloads only the plugins persisted for boot)."""
        requests = {request.name: request for request in self.declared.requests} if self.declared else {}
        entries = []
        for entry in registry.entries():
            request = requests.get(entry.name)
            if request is not None:
                boot = {"auto_start_on_boot": request.auto_start_on_boot, "autostart_order": request.autostart_order}
                if (entry.auto_start_on_boot, entry.autostart_order) != tuple(boot.values()):
                    entry = entry.model_copy(update=boot)
                    try:
                        registry.put(entry)
                    except IochostError as exc:  # the file says it again at the next start
                        log.error("plugins file: %s: its start-up fields are not saved: %s", entry.name, exc.message)
            elif entry.auto_start_on_boot is False and entry.desired_state == "running":
                log.info("%s: not started (auto_start_on_boot false); start it over REST", entry.name)
                entry = entry.model_copy(update={"desired_state": "stopped"})
            entries.append(entry)
        return entries

    def _checkout_pv_prefixes(self, entries: list[RegistryEntry]) -> dict[str, str]:
        """Each entry's PV prefix by the config.yaml of its checkout as it is on disk (its restore
        reads it again at the registered commit); none for one without a readable checkout."""
        shell, prefixes = self._shell(), {}
        for entry in entries:
            try:
                pv_prefix = shell.configured_pv_prefix(
                    entry.name, shell.services.store.plugin_dir(entry.name, entry.source.path))
            except (OSError, IochostError):
                continue
            if pv_prefix is not None:
                prefixes[entry.name] = pv_prefix
        return prefixes

    def hold_restore(self) -> Callable[[], None]:
        """Keep the restore (and the daemon's status IOC) waiting until the returned function
        is called: ``iochost serve`` calls it once its socket listens, so forks and iocInits
        of a large registry do not compete with the API's own startup for the CPU."""
        self._listening = asyncio.Event()
        return self._listening.set

    async def _bring_back_all(self, slots: list[PluginSlot]) -> None:
        """Restore the registry's plugins, two per core at a time (half of a start is EPICS
        sleeping 0.5 s inside iocInit, the rest the plugin's import and records: CPU), then
        add the examples; then ``ready``."""
        if self._listening is not None:
            await self._listening.wait()
        self._shell().spawn_task(self._start_system(), "iochost-system")
        gate = asyncio.Semaphore(2 * (os.cpu_count() or 2))

        async def restore(slot: PluginSlot) -> None:
            try:
                async with gate:
                    self._shell().feed(slot, t.RestoreRequested())
                    await slot.until(lambda lc: lc.state not in UNSETTLED)
            finally:  # deleted before its restore ran: the next in boot order does not wait for it
                slot.claim_done()

        async def add_new(request: AddRequest) -> None:
            async with gate:
                try:
                    await self.add(request)
                except IochostError as exc:
                    log.error("plugins file: %s (new) not applied: %s %s%s", request.name, exc.code.value,
                              exc.message, _error_lines(exc))
                else:
                    log.info("plugins file: %s added", request.name)

        # iocmng's start-up order: each autostart_order starts once the lower ones settled
        # (running, stopped or failed), the plugins without one last; within one order the
        # starts run side by side, launched by name. The file's new entries take their place.
        new = [request for request in self.declared.requests if request.name not in self.plugins] \
            if self.declared is not None else []
        # The restores claim their PV names one after the other in that order (``PluginSlot.claim_after``):
        # of two registered plugins whose names clash, the first keeps them, whichever checkout is ready first.
        groups: dict[int | None, list[tuple[tuple[int, int, str], Callable[[], Awaitable[None]]]]] = {}
        previous: PluginSlot | None = None
        for slot in sorted(slots, key=lambda slot: boot_order(slot.lc.entry.autostart_order, slot.name)):
            entry = slot.lc.entry
            slot.claimed = asyncio.get_running_loop().create_future()
            slot.claim_after = previous.claimed if previous is not None else None
            groups.setdefault(entry.autostart_order, []).append(
                (boot_order(entry.autostart_order, entry.name), functools.partial(restore, slot)))
            previous = slot
        for request in new:
            groups.setdefault(request.autostart_order, []).append(
                (boot_order(request.autostart_order, request.name), functools.partial(add_new, request)))
        for order in sorted(groups, key=lambda order: boot_order(order, "")):
            starts = sorted(groups[order], key=lambda item: item[0])
            await asyncio.gather(*(start() for _, start in starts))
        if self.settings.examples is not None:
            await self._add_examples(self.settings.examples)
        if self.declared is not None:
            await self._apply_declared(self.declared, applied={request.name for request in new})
        self.ready = True
        self._ready_event.set()
        log.info("restore finished: %d plugin(s) from the registry", len(slots))
        await asyncio.to_thread(self._shell().services.store.warm_up)

    async def until_ready(self) -> None:
        """Until ``ready``: for work that should not compete with the restore for the CPU."""
        await self._ready_event.wait()

    async def shutdown(self) -> None:
        """Stop every worker (SIGTERM, grace, SIGKILL); the registry keeps the desired state."""
        shell = self._shell()
        if self._watch_task is not None:
            self._watch_task.cancel()
        if self._bring_back is not None:
            self._bring_back.cancel()
        slots = self._supervised()
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
        return self._slot(name).lc.record()

    def lifecycle(self, name: str, kind: Kind | None = None) -> PluginLifecycle:
        """One plugin's lifecycle, for readers of more than its record (displays): PLUGIN_NOT_FOUND;
        with ``kind``, WRONG_KIND for a plugin of the other kind (iocmng's /tasks, /jobs paths)."""
        return self._slot(name, kind).lc

    def list(self, kind: Kind | None = None) -> list[PluginRecord]:
        return [slot.lc.record() for slot in self.plugins.values() if kind is None or slot.lc.entry.kind == kind]

    def lifecycles(self, *, include_system: bool = False) -> list[PluginLifecycle]:
        """The live lifecycles of the listed plugins (with the daemon's status IOC's, if
        asked): for readers that need more than a ``PluginRecord``, the metrics collector.
        Read them on the event loop, where they change, and do not keep them."""
        lifecycles = [slot.lc for slot in self.plugins.values()]
        if include_system and self.system is not None:
            lifecycles.append(self.system.lc)
        return lifecycles

    def health(self, *, named: bool = True) -> Health:
        """Counts per state; ``degraded`` while any plugin has a ``trouble``; ``named``: with
        every such plugin and its last error (else ``problems`` is None)."""
        counts: dict[str, int] = {"total": len(self.plugins)}
        counts.update({state.value: 0 for state in State if state != State.DELETED})
        problems = []
        kinds: dict[str, int] = {"task": 0, "job": 0}
        for slot in self.plugins.values():
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
        restoring = sum(slot.lc.state in UNSETTLED for slot in self.plugins.values())
        return Readiness(ready=self.ready, restoring=restoring)

    def _degraded(self) -> bool:
        return self.storage_problem() is not None or any(slot.lc.degraded for slot in self.plugins.values())

    async def logs(self, name: str, lines: int) -> list[str]:
        self._slot(name)
        return await asyncio.to_thread(logfiles.tail, self._shell().log_path(name), lines,
                                       self.settings.log_rotate_files)

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
    async def add(self, request: AddRequest) -> PluginRecord:
        """Fetch, validate, register and start a plugin; on any failure nothing is left.

        Answers once the plugin runs (``initialize()`` returned) or is stored stopped."""
        if not request.trusted:
            check_source_allowed(request.source, self.settings.allow_source, self.settings.allow_local_sources)
        self._check_name_free(request.name)
        slot = self._new_slot(request.placeholder(), request)
        self._shell().feed(slot, t.AddRequested())
        lc = await slot.until(lambda lc: not lc.adding or lc.state == State.DELETED)
        slot.request = None
        if lc.add_error is not None:
            raise lc.add_error
        try:  # the lifecycle's Persist may have been refused: the add answers only once it is saved
            await self._shell().save(slot, lc.entry)
        except IochostError as exc:
            if lc.state != State.DELETED:  # nothing of the add is left: no worker, checkout or entry
                self._shell().feed(slot, t.DeleteRequested())
                await slot.until(lambda lc: lc.state == State.DELETED)
            raise exc from None
        log.info("added %s %s (%s) at %s", lc.entry.kind, lc.name, lc.entry.class_name, lc.entry.commit or "local")
        return lc.record()

    async def remove(self, name: str, *, kind: Kind | None = None) -> None:
        """Stop the worker (its PVs leave the network), forget it, delete its checkout.

        A plugin still being added is deleted as soon as its current step ends."""
        slot = self._slot(name, kind)
        await self._saved_then_fed(slot, t.DeleteRequested(), None)
        await slot.until(lambda lc: lc.state == State.DELETED)
        log.info("removed %s", name)

    async def upgrade(self, name: str, change: UpgradeChange) -> PluginRecord:
        """Move a plugin to a new revision (and parameters) without dropping its PVs while
        the new revision is fetched and validated; roll back if it does not run.

        Answers the new record; the same record for the same commit and parameters; 422 if
        the new revision fails validation (nothing changed); 409 UPGRADE_FAILED after a
        rollback."""
        slot = self._slot(name)
        entry = slot.lc.entry
        request = AddRequest(
            name=name, source=change.source_for(entry.source),
            class_name=entry.class_name or None,
            parameters=entry.parameters if change.parameters is None else change.parameters,
            pat=change.pat, grace_period=entry.options.get("grace_period"), kind=entry.kind,
        )
        return await self._upgrade(slot, request)

    async def _upgrade(self, slot: PluginSlot, request: AddRequest) -> PluginRecord:
        """Upgrade in place to what ``request`` asks for: source, revision, class, parameters
        and grace period (the REST API's upgrade changes the revision and parameters only)."""
        name = slot.name
        slot.upgrade_request = request
        try:
            self._shell().feed(slot, t.UpgradeRequested())  # INVALID_STATE from the lifecycle
            lc = await slot.until(lambda lc: lc.upgrade is None)
        finally:
            slot.upgrade_request = None
        if lc.upgrade_outcome is not None:
            raise lc.upgrade_outcome
        try:  # the commit point's Persist may have been refused: say so, it is retried
            await self._shell().save(slot, lc.entry)
        except IochostError as exc:
            if exc.code is not ErrorCode.STORAGE_FULL:
                raise
            slot.unsaved = lc.entry
            raise IochostError(ErrorCode.STORAGE_FULL, f"{name!r} runs its new revision "
                               f"{lc.entry.commit or 'local'}, but the registry cannot record it: cannot write "
                               f"{exc.details['path']}: {exc.details['error']}; it is saved once space is freed "
                               "(until then the registry names the previous revision)",
                               **exc.details) from None
        log.info("upgraded %s to %s", name, lc.entry.commit or "local")
        return lc.record()

    # -- start / stop / restart --------------------------------------------------------
    async def start_plugin(self, name: str) -> PluginRecord:
        slot = self._slot(name)
        await self._saved_then_fed(slot, t.StartRequested(), slot.lc.with_desired("running"))
        return await self._until_started(slot)

    async def stop_plugin(self, name: str) -> PluginRecord:
        slot = self._slot(name)
        await self._saved_then_fed(slot, t.StopRequested(), slot.lc.with_desired("stopped"))
        lc = await slot.until(lambda lc: lc.state not in LIVE)
        return lc.record()

    async def restart_plugin(self, name: str) -> PluginRecord:
        slot = self._slot(name)
        await self._saved_then_fed(slot, t.RestartRequested(), slot.lc.with_desired("running"))
        return await self._until_started(slot)

    async def _saved_then_fed(self, slot: PluginSlot, request: t.Event, entry: RegistryEntry | None) -> None:
        """Save what an operator's request changes (``entry``; None: a delete), then hand the
        request to the lifecycle. Saved first: a crash in between leaves the operator's intent,
        which the restore carries out; acting first would let a crash undo an answer not yet
        given, or a full disk leave a change acted on that the next start forgets. A save the
        disk refuses raises STORAGE_FULL before anything happened: the plugin is as it was."""
        shell, lc = self._shell(), slot.lc
        refused = lc.refusal(request)  # INVALID_STATE: refused before anything is saved
        if refused is not None:
            raise refused
        if lc.registered:  # an add in progress saves its entry when it ends
            await shell.save(slot, entry, probe=isinstance(request, (t.StartRequested, t.RestartRequested)))
        try:
            shell.feed(slot, request)
        except IochostError:  # the plugin moved on while we saved (an upgrade began): the registry follows it
            if entry is not None and lc.registered:
                with contextlib.suppress(IochostError):
                    await shell.save(slot, lc.entry)
            raise

    async def _until_started(self, slot: PluginSlot) -> PluginRecord:
        lc = await slot.until(lambda lc: lc.state in SETTLED and not lc.restart_requested)
        if lc.state in (State.CRASHED, State.FAILED):
            raise IochostError(ErrorCode.WORKER_START_FAILED, f"{lc.name!r} did not start: {lc.last_error}")
        if lc.state == State.DELETED:
            raise IochostError(ErrorCode.PLUGIN_NOT_FOUND, f"{lc.name!r} was deleted while starting")
        return lc.record()

    # -- jobs ----------------------------------------------------------------------------
    async def run_job(self, name: str, parameters: dict[str, Any], *, wait: bool) -> RunRecord:
        """Ask the job's worker to run; it answers accepted (the record) or EXECUTION_LOCKED."""
        slot = self._slot(name, "job")
        if slot.lc.state != State.RUNNING:
            raise IochostError(ErrorCode.INVALID_STATE, f"job {name!r} is {slot.lc.state.value}, not running")
        run_id = uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        answer = slot.run_answers[run_id] = loop.create_future()
        done = slot.run_done[run_id] = loop.create_future()
        try:
            self._shell().feed(slot, t.RunRequested(run_id, parameters))
            try:
                run = await asyncio.wait_for(asyncio.shield(answer), RUN_ANSWER_TIMEOUT)
            except asyncio.TimeoutError:
                raise IochostError(ErrorCode.INVALID_STATE, f"job {name!r} did not answer the run request "
                                   f"within {RUN_ANSWER_TIMEOUT:g} s") from None
            return await asyncio.shield(done) if wait else run
        finally:
            slot.run_answers.pop(run_id, None)
            if not wait or done.done():
                slot.run_done.pop(run_id, None)

    def get_run(self, name: str, run_id: str) -> RunRecord:
        run = self._slot(name, "job").lc.runs.find(run_id)
        if run is None:
            raise IochostError(ErrorCode.RUN_NOT_FOUND, f"job {name!r} has no run {run_id!r}")
        return run

    def list_runs(self, name: str) -> list[RunRecord]:
        return self._slot(name, "job").lc.runs.all()

    async def cancel_run(self, name: str, run_id: str) -> RunRecord:
        """Ask the job to stop; if it ignores the request, its worker is restarted."""
        slot = self._slot(name, "job")
        self._shell().feed(slot, t.CancelRequested(run_id))
        await slot.until(lambda lc: lc.runs.active != run_id)
        return self.get_run(name, run_id)

    # -- what the shell reports back ----------------------------------------------------------
    def _on_effect(self, slot: PluginSlot, effect: t.Effect) -> None:
        now = datetime.now(timezone.utc)
        if isinstance(effect, t.Transitioned):
            self._publish(Event(type="transition", plugin=slot.name, at=effect.transition.at,
                                data=effect.transition.model_dump(mode="json")))
            if slot is not self.system or effect.transition.to_state == State.RUNNING:
                self._schedule_status_push()
        elif isinstance(effect, t.StatusUpdate):
            self._publish(Event(type="status", plugin=slot.name, at=now,
                                data={"status": effect.status, "message": effect.message}))
            if effect.trouble_changed and slot is not self.system:
                self._schedule_status_push()  # STATUS ERROR/FAILED came or went: HEALTH follows
        elif isinstance(effect, t.RunUpdate):
            self._publish(Event(type="run", plugin=slot.name, at=now, data=effect.run.model_dump(mode="json")))
        elif isinstance(effect, t.UpgradeUpdate):
            self._publish(Event(type="upgrade", plugin=slot.name, at=now, data={
                "phase": effect.phase, "from_commit": effect.from_commit, "to_commit": effect.to_commit,
                "reason": effect.reason}))

    def _forget(self, slot: PluginSlot) -> None:
        if self.plugins.get(slot.name) is slot:
            del self.plugins[slot.name]
            self._rows.release(slot.name)
        self._log_budgets.pop(slot.name, None)
        self._schedule_status_push()

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
        """Tick every lifecycle (its watchdog); sweep orphans of dead workers; report logs dropped."""
        shell = self._shell()
        ticks = 0
        while True:
            await asyncio.sleep(WATCH_PERIOD)
            now = time.monotonic()
            ticks += 1
            self._report_dropped_logs(now)
            if ticks % SWEEP_EVERY == 0:
                await asyncio.to_thread(shell.services.containment.sweep)
            if ticks % STORAGE_RECHECK_EVERY == 0 and not self._rechecking_storage and (
                    shell.storage is not None or any(slot.unsaved for slot in self.plugins.values())):
                self._rechecking_storage = True
                shell.spawn_task(self._recheck_storage(), "iochost-storage-recheck")
            for slot in self._supervised():
                if slot.lc.state in UP:
                    shell.feed(slot, t.Tick(now))

    async def _recheck_storage(self) -> None:
        """While the data dir refused a write: save the refused Persists again, and write
        the registry, so the daemon sees by itself that space is back (no restart, no request)."""
        shell = self._shell()
        try:
            for slot in list(self.plugins.values()):
                await shell.save_again(slot)
            if shell.storage is not None:
                await asyncio.to_thread(shell.services.registry.flush)
                shell.storage_accepted()
        except IochostError as exc:
            shell.storage_refused(exc)
        finally:
            self._rechecking_storage = False

    # -- helpers ---------------------------------------------------------------------------------
    async def _add_examples(self, folder: Path) -> None:
        async def add(plugin_dir: Path) -> None:
            request = AddRequest(name=plugin_dir.name, source=PluginSource(local_path=str(plugin_dir.resolve())),
                                 trusted=True)
            try:
                await self.add(request)
            except IochostError as exc:
                log.error("example %s not loaded: %s %s", plugin_dir.name, exc.code.value, exc.message)

        await asyncio.gather(*(add(plugin_dir) for plugin_dir in sorted(folder.iterdir())
                               if (plugin_dir / "config.yaml").is_file() and plugin_dir.name not in self.plugins))

    async def _apply_declared(self, declared: Declared, applied: frozenset[str] | set[str] = frozenset()) -> None:
        """The plugins file: add what the registry lacks; upgrade in place every plugin whose
        entry changed, or whose name an operator's plugin has (its autosaved values, keyed by
        name, stay); leave the rest (plugins added over REST, an operator's stop). A plugin
        whose entry left the file since it was last applied is kept or deleted as
        ``plugins_file_removed`` says. Each entry on its own: one failing stops no other.
        ``applied``: the new entries the start-up order added (or tried to) already."""
        names = DeclaredNames(self.settings.declared_path)
        before = await asyncio.to_thread(names.load)

        async def apply(request: AddRequest) -> None:
            if request.name in applied:
                return
            slot = self.plugins.get(request.name)
            change = "new" if slot is None else declared_change(slot.lc.entry, request)
            taken_over = slot is not None and request.name not in before  # added over REST (or released)
            if change is None:
                if taken_over:
                    log.info("plugins file: %s taken over as it is", request.name)
                return
            if taken_over:
                change = f"taken over: {change}"
            try:
                if slot is None:
                    await self.add(request)
                    log.info("plugins file: %s added", request.name)
                    return
                try:
                    await self._upgrade(slot, replace(request, kind=slot.lc.entry.kind))
                except IochostError as exc:
                    if exc.code is not ErrorCode.WRONG_KIND:
                        raise
                    log.warning("plugins file: %s: %s; replacing it (delete, then add)", request.name, exc.message)
                    await self.remove(request.name)
                    await self.add(request)
                    log.info("plugins file: %s replaced (%s)", request.name, change)
                    return
                log.info("plugins file: %s upgraded in place (%s)", request.name, change)
            except IochostError as exc:
                log.error("plugins file: %s (%s) not applied: %s %s%s", request.name, change, exc.code.value,
                          exc.message, _error_lines(exc))

        await asyncio.gather(*(apply(request) for request in declared.requests))
        declared_now = declared.names
        if declared_now is None:
            log.warning("plugins file: an entry without a readable name was left out; no plugin counts as "
                        "having left the file this time")
            await self._save_declared(names, before | {request.name for request in declared.requests})
            return
        kept = set(declared_now)
        for name in sorted(before - declared_now):
            if name not in self.plugins:
                continue
            if self.settings.plugins_file_removed == "keep":
                log.info("plugins file: %s left the file; kept (plugins_file_removed keep): managed over REST "
                         "from now on", name)
                continue
            try:
                await self.remove(name)
            except IochostError as exc:
                kept.add(name)  # still the file's: tried again at the next start
                log.error("plugins file: %s left the file; not deleted: %s %s", name, exc.code.value, exc.message)
            else:
                log.info("plugins file: %s left the file; deleted (plugins_file_removed delete)", name)
        await self._save_declared(names, kept)

    @staticmethod
    async def _save_declared(names: DeclaredNames, declared: set[str]) -> None:
        try:
            await asyncio.to_thread(names.save, declared)
        except OSError as exc:  # the plugins applied stay; which ones left the file is known at the next start
            log.error("plugins file: cannot save the declared names to %s: %s", names.path, exc)

    async def _start_system(self) -> None:
        """Start {PREFIX}:IOCHOST:*, its records generated from the settings; a failure is
        logged, never fatal to the daemon. A data dir with no room for its files (a full
        disk) is retried with backoff until it has: the daemon recovers by itself."""
        delay = 1.0
        while True:
            try:
                plugin_dir = await asyncio.to_thread(write_system_plugin, self.settings)
                break
            except OSError as exc:
                if exc.errno not in OUT_OF_SPACE:
                    raise
                log.error("the daemon's own IOC cannot be written to %s: %s; retried in %g s",
                          self.settings.data_dir / "system", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, SYSTEM_RETRY_MAX)
        lc = PluginLifecycle(system_entry(self.started_at, plugin_dir),
                             plugin_pv_prefix(self.settings.prefix, SYSTEM_NAME), self.timings, self.settings.runs_kept)
        self.system = PluginSlot(lc)
        self._shell().feed(self.system, t.Restored(plugin_dir))

    def _new_slot(self, entry: RegistryEntry, request: AddRequest | None = None) -> PluginSlot:
        lc = PluginLifecycle(entry, plugin_pv_prefix(self.settings.prefix, entry.name), self.timings,
                             self.settings.runs_kept)
        slot = self.plugins[entry.name] = PluginSlot(lc, request)  # reserves the name before any await
        self._rows.appear(entry.name)
        self._schedule_status_push()
        return slot

    def _shell(self) -> Shell:
        if self.shell is None:
            raise RuntimeError("Supervisor.start() has not run")
        return self.shell

    def _slot(self, name: str, kind: Kind | None = None) -> PluginSlot:
        slot = self.plugins.get(name)
        if slot is None:
            raise IochostError(ErrorCode.PLUGIN_NOT_FOUND, f"no plugin named {name!r}")
        if kind is not None and slot.lc.entry.kind != kind and not slot.lc.adding:
            raise IochostError(ErrorCode.WRONG_KIND, f"{name!r} is a {slot.lc.entry.kind}, not a {kind}")
        return slot

    def _check_name_free(self, name: str) -> None:
        upper = name.upper()
        if upper == SYSTEM_NAME.upper():
            raise IochostError(ErrorCode.PLUGIN_EXISTS, f"plugin name {name!r} is reserved for the daemon's own PVs")
        for other in self.plugins:
            if other.upper() == upper:
                detail = "" if other == name else f" (same PV names as {other!r})"
                raise IochostError(ErrorCode.PLUGIN_EXISTS, f"plugin {name!r} already exists{detail}")

    def _pv_clash(self, name: str, pv_prefix: str) -> IochostError | None:
        """PLUGIN_EXISTS when plugin ``name``'s PVs, all under ``pv_prefix`` (its config.yaml's
        ``prefix:`` or its name), would be named like another plugin's or the daemon's own
        (case aside: operators cannot tell those apart), or lie inside theirs or around them
        (``X`` with a PV ``Y:STATUS`` and ``X:Y``'s STATUS are one name). A plugin whose prefix
        is not read yet (still fetching, not restored) is checked when it is."""
        what = f"plugin {name!r}: its PVs would be named {pv_prefix}:..."

        def overlap(owner: str, taken: str) -> str | None:
            if same_segment(pv_prefix, taken):
                return f"as {owner} ({taken}:...)"
            if nested_segment(pv_prefix, taken):
                return f"inside or around {owner} ({taken}:...: a PV of one could be named as one of the other's)"
            return None

        system = plugin_pv_prefix(self.settings.prefix, SYSTEM_NAME)
        clash = overlap("the daemon's own PVs", system)
        if clash is not None:
            return IochostError(ErrorCode.PLUGIN_EXISTS, f"{what}, {clash}; choose another prefix: in config.yaml",
                                plugin=name)
        checked = self.plugins.get(name)
        newcomer = checked is not None and (checked.lc.adding or checked.lc.upgrade is not None)
        for other, slot in self.plugins.items():
            lc = slot.lc
            claimed = [lc.pv_prefix] if lc.pv_prefix_known else []
            if newcomer and not claimed and lc.state is State.PENDING and not lc.adding and other in self._boot_claims:
                claimed.append(self._boot_claims[other])  # registered, its restore not done: it comes first
            if lc.upgrade is not None and lc.upgrade.new is not None and lc.upgrade.new.pv_prefix:
                claimed.append(lc.upgrade.new.pv_prefix)  # an upgrade about to take it
            clash = next((found for taken in claimed if (found := overlap(f"plugin {other!r}'s", taken))), None)
            if other != name and clash is not None:
                return IochostError(ErrorCode.PLUGIN_EXISTS, f"{what}, {clash}; choose another prefix: in "
                                    "config.yaml or another name", plugin=name, other=other)
        return None

    def _schedule_status_push(self) -> None:
        """Coalesce bursts of transitions into one set_pvs per loop turn."""
        if not self._status_push_pending:
            self._status_push_pending = True
            asyncio.get_running_loop().call_soon(self._push_status)

    def _push_status(self) -> None:
        self._status_push_pending = False
        system = self.system
        if system is None or system.worker is None or system.lc.state != State.RUNNING:
            return
        if system.worker is not self._pushed_to:  # a new status IOC starts from config.yaml's values
            self._pushed, self._pushed_to = {}, system.worker
        states = [(slot.name, slot.lc.state) for slot in self.plugins.values()]
        values = daemon_pv_values(states, self._degraded())
        plugins = {slot.name: (slot.lc.entry.kind, slot.lc.state) for slot in self.plugins.values()}
        values.update(row_values(self._rows.rows(), plugins, self._rows.size))
        if self.settings.epics_control:
            values[CONTROL_MSG] = short_text(self._control_message)
        changed = {name: value for name, value in values.items() if self._pushed.get(name, object()) != value}
        if changed:
            system.worker.send(messages.SetPVs(values=changed))
            self._pushed.update(changed)

    def table_rows(self) -> dict[str, int]:
        """Plugin name -> its row n in the daemon IOC's table (``{PREFIX}:IOCHOST:ROWnnn:*``)."""
        return self._rows.rows()

    # -- control from the panel (--epics-control) ------------------------------------------
    def _on_control(self, slot: PluginSlot, request: messages.ControlRequest) -> None:
        """A control request from a worker: only the daemon's own IOC may send one."""
        if slot is not self.system:
            log.warning("%s: control request (%s %r) from a plugin's worker ignored: only the daemon's own "
                        "IOC sends them", slot.name, request.action, request.plugin)
            return
        if not self.settings.epics_control:
            log.warning("control request (%s %r) ignored: --epics-control is off", request.action, request.plugin)
            return
        self._shell().spawn_task(self._control(request), f"iochost-control-{request.action}")

    async def _control(self, request: messages.ControlRequest) -> None:
        """Carry out an operator's START / STOP / RESTART with the REST API's own operations;
        the outcome goes to CONTROL_MSG, the log and the event stream (origin ``epics``)."""
        action = request.action
        try:
            name = control_target(request.plugin)
        except IochostError as exc:  # the whole name or nothing: never a cut or forged one
            log.warning("epics: %s refused: %s %s", action, exc.code.value, exc.message)
            self._report_control(action, request.plugin, "failed", exc.message, exc.code.value)
            return
        operation = {"start": self.start_plugin, "stop": self.stop_plugin, "restart": self.restart_plugin}[action]
        doing, done = CONTROL_VERBS[action]
        log.info("epics: %s %s requested", action, name)
        self._report_control(action, name, "requested", f"{doing} {name}")
        try:
            record = await operation(name)
        except IochostError as exc:
            log.warning("epics: %s %s refused: %s %s", action, name, exc.code.value, exc.message)
            self._report_control(action, name, "failed", exc.message, exc.code.value)
        else:
            log.info("epics: %s %s done: %s", action, name, record.state.value)
            self._report_control(action, name, "done", f"{done} {name}")

    def _report_control(self, action: str, name: str, phase: str, message: str, code: str | None = None) -> None:
        self._control_message = message
        self._schedule_status_push()
        self._publish(Event(type="control", plugin=name, at=datetime.now(timezone.utc), data={
            "action": action, "origin": "epics", "phase": phase, "message": message, "code": code}))

    def _supervised(self) -> list[PluginSlot]:
        """Every plugin with a worker to watch and stop: the registered ones and the status IOC."""
        slots = list(self.plugins.values())
        return slots + [self.system] if self.system is not None else slots

    def _publish(self, event: Event) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("event subscriber too slow; dropping it")
                self._subscribers.discard(queue)
