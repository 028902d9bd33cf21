"""The shell's work behind an upgrade's effects: stage and validate the new revision
(``PrepareUpgrade``), swap the revisions (``SwapRevision``), drop what was staged or kept
aside (``DropStaged``). What to do when is the lifecycle's (``upgrade.py``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from iochost.errors import IochostError
from iochost.proctree import ERRANDS
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.adding import prepare
from iochost.supervisor.checkout_work import checkout_parameters, preparation_error
from iochost.supervisor.slots import PluginSlot, ShellPort

log = logging.getLogger("iochost.supervisor")


async def prepare_upgrade(shell: ShellPort, slot: PluginSlot, op: str) -> None:
    """Stage and validate the new revision in a thread while the old worker serves.

    What it stages is upgrade ``op``'s alone. An upgrade ended meanwhile (a delete, the
    daemon's shutdown) is over for good: this thread then removes its own areas and
    reports nothing, whoever holds the plugin's name by now."""
    request = slot.upgrade_request
    assert request is not None
    svc, lc = shell.services, slot.lc
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
        with ERRANDS.owned_by(slot):  # a delete ends its git, pip and probe (EndErrands)
            prepared = await asyncio.to_thread(
                prepare, request, base, svc.store, svc.envs, svc.launcher, shell.settings,
                lambda commit: None, lambda: lc.delete_requested or lc.closing, upgrade_op=op,
                unchanged=unchanged,
            )
    except Exception as exc:  # noqa: BLE001 - an unexpected one is INTERNAL_ERROR for the caller
        await drop_own(shell, slot, op)  # before the caller hears of it
        if not ended():
            error = preparation_error(shell.settings.data_dir, slot, "upgrading", exc)
            shell.storage_refused(error)
            shell.feed(slot, t.UpgradePrepareFailed(error))
    else:
        if prepared is not None:  # the new revision's parameters: its workers' limits
            parameters = await asyncio.to_thread(checkout_parameters, prepared.plugin_dir, prepared.entry.parameters)
            prepared = replace(prepared, parameters=parameters)
        clash = None if prepared is None or ended() else shell.pv_clash(slot, prepared.pv_prefix)
        if prepared is None or ended() or clash is not None:  # a no-op, the upgrade is over, or refused
            await drop_own(shell, slot, op)
        if clash is not None and not ended():
            shell.feed(slot, t.UpgradePrepareFailed(clash))
        elif not ended():  # the same revision from another source (a mirror): the entry says so
            relabeled = base if prepared is None and base.source != lc.entry.source else None
            shell.feed(slot, t.UpgradePrepared(prepared, relabeled))
    if ended():
        log.info("%s: upgrade %s ended while it was being prepared; its staging areas are removed", slot.name, op)


async def swap(shell: ShellPort, slot: PluginSlot, back: bool, op: str | None) -> None:
    """Checkout and environment together: the new revision in, or the previous one back."""
    svc = shell.services
    assert op is not None, "a SwapRevision without an upgrade"
    steps = (svc.store.swap_back, svc.envs.swap_back) if back else (svc.store.swap_in, svc.envs.swap_in)
    try:
        for step in steps:
            await shell.in_order(slot, step, slot.name, op)
        plugin_dir = await asyncio.to_thread(svc.store.plugin_dir, slot.name, slot.lc.entry.source.path)
    except (OSError, IochostError) as exc:
        log.error("%s: swapping revisions failed: %s", slot.name, exc)
        shell.feed(slot, t.Swapped(False, reason=str(exc)))
    else:
        shell.feed(slot, t.Swapped(True, plugin_dir))


async def drop(shell: ShellPort, slot: PluginSlot, op: str | None) -> None:
    if op is not None:  # leftovers under tmp go with the next start
        await drop_own(shell, slot, op)
    shell.feed(slot, t.Dropped())


async def drop_own(shell: ShellPort, slot: PluginSlot, op: str) -> None:
    """Remove upgrade ``op``'s staging areas; a failure is logged (the next start removes them)."""
    svc = shell.services

    def drop_staged(name: str, op: str) -> None:
        svc.store.drop_staged(name, op)
        svc.envs.drop_staged(name, op)
    try:
        await shell.in_order(slot, drop_staged, slot.name, op)
    except OSError as exc:
        log.error("%s: removing the staging areas of upgrade %s failed: %s", slot.name, op, exc)
