"""The REST API's operations on plugins: each request becomes one event to the plugin's
lifecycle (which decides), the shell carries out the effects, and the request waits for
the lifecycle to reach the state that answers it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any, Callable

from iochost.errors import ErrorCode, IochostError
from iochost.kinds import Kind
from iochost.settings import Settings
from iochost.store import DESIRED_RUNNING, DESIRED_STOPPED, RegistryEntry
from iochost.store.policy import check_source_allowed
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.adding import AddRequest, UpgradeChange
from iochost.supervisor.plugin_table import PluginTable
from iochost.supervisor.public import PluginRecord, RunRecord
from iochost.supervisor.pv_claims import PVClaims
from iochost.supervisor.shell import Shell, clock
from iochost.supervisor.slots import PluginSlot
from iochost.supervisor.states import LIVE, SETTLED, State

log = logging.getLogger("iochost.supervisor")

RUN_ANSWER_TIMEOUT = 10.0  # the worker answers a run request at once; silence means it is wedged

NewSlot = Callable[[RegistryEntry, AddRequest], PluginSlot]


class PluginOperations:
    """add, remove, upgrade, start, stop, restart, and a job's runs."""

    def __init__(self, settings: Settings, table: PluginTable, claims: PVClaims, new_slot: NewSlot,
                 shell: Callable[[], Shell]) -> None:
        self.settings = settings
        self.table = table
        self._claims = claims
        self._new_slot = new_slot
        self._shell = shell

    # -- adding and removing ------------------------------------------------------------
    async def add(self, request: AddRequest) -> PluginRecord:
        """Fetch, validate, register and start a plugin; on any failure nothing is left.

        Answers once the plugin runs (``initialize()`` returned) or is stored stopped."""
        if not request.trusted:
            check_source_allowed(request.source, self.settings.allow_source, self.settings.allow_local_sources)
        self._claims.check_name_free(request.name)
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

        A plugin still being added or upgraded is deleted at once: the lifecycle's EndErrands
        ends the git, pip or probe process its preparation waits on."""
        slot = self.table.find(name, kind)
        await self._saved_then_fed(slot, t.DeleteRequested(), None)
        await slot.until(lambda lc: lc.state == State.DELETED)
        log.info("removed %s", name)

    async def upgrade(self, name: str, change: UpgradeChange) -> PluginRecord:
        """Move a plugin to a new revision (and parameters) without dropping its PVs while
        the new revision is fetched and validated; roll back if it does not run.

        Answers the new record; the same record for the same commit and parameters; 422 if
        the new revision fails validation (nothing changed); 409 UPGRADE_FAILED after a
        rollback."""
        slot = self.table.find(name)
        entry = slot.lc.entry
        request = AddRequest(
            name=name, source=change.source_for(entry.source),
            class_name=entry.class_name or None,
            parameters=entry.parameters if change.parameters is None else change.parameters,
            pat=change.pat, grace_period=entry.options.get("grace_period"), kind=entry.kind,
        )
        return await self.upgrade_to(slot, request)

    async def upgrade_to(self, slot: PluginSlot, request: AddRequest) -> PluginRecord:
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
        slot = self.table.find(name)
        entry = slot.lc.with_desired(DESIRED_RUNNING, clock().wall)
        await self._saved_then_fed(slot, t.StartRequested(), entry)
        return await self._until_started(slot)

    async def stop_plugin(self, name: str) -> PluginRecord:
        slot = self.table.find(name)
        entry = slot.lc.with_desired(DESIRED_STOPPED, clock().wall)
        await self._saved_then_fed(slot, t.StopRequested(), entry)
        lc = await slot.until(lambda lc: lc.state not in LIVE)
        return lc.record()

    async def restart_plugin(self, name: str) -> PluginRecord:
        slot = self.table.find(name)
        entry = slot.lc.with_desired(DESIRED_RUNNING, clock().wall)
        await self._saved_then_fed(slot, t.RestartRequested(), entry)
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
        slot = self.table.find(name, "job")
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
        run = self.table.find(name, "job").lc.runs.find(run_id)
        if run is None:
            raise IochostError(ErrorCode.RUN_NOT_FOUND, f"job {name!r} has no run {run_id!r}")
        return run

    def list_runs(self, name: str) -> list[RunRecord]:
        return self.table.find(name, "job").lc.runs.all()

    async def cancel_run(self, name: str, run_id: str) -> RunRecord:
        """Ask the job to stop; if it ignores the request, its worker is restarted."""
        slot = self.table.find(name, "job")
        self._shell().feed(slot, t.CancelRequested(run_id))
        await slot.until(lambda lc: lc.runs.active != run_id)
        return self.get_run(name, run_id)
