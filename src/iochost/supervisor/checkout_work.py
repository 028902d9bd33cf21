"""The shell's work behind the effects that bring a plugin's checkout in or take it away:
``Prepare`` (an add: fetch, install, validate), ``Restore`` (the daemon's start) and
``Teardown`` (a failed add, every delete). What to do when is the lifecycle's.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from iochost import autosave_files
from iochost.config import ConfigError, Parameters, load_config
from iochost.durable import storage_error
from iochost.errors import ErrorCode, IochostError
from iochost.proctree import ERRANDS
from iochost.shortages import OUT_OF_SPACE
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor import logfiles
from iochost.supervisor.adding import prepare
from iochost.supervisor.process import host_shortage, spec_path
from iochost.supervisor.slots import PluginSlot, ShellPort

log = logging.getLogger("iochost.supervisor")


async def prepare_add(shell: ShellPort, slot: PluginSlot) -> None:
    """Fetch, install and validate an add's plugin in a thread; answer Fetched, then
    Prepared or PrepareFailed."""
    request = slot.request
    assert request is not None
    loop, svc = asyncio.get_running_loop(), shell.services

    def fetched(commit: str | None) -> None:  # from the preparing thread
        loop.call_soon_threadsafe(shell.feed, slot, t.Fetched(commit))
    try:
        with ERRANDS.owned_by(slot):  # a delete ends its git, pip and probe (EndErrands)
            prepared = await asyncio.to_thread(
                prepare, request, slot.lc.entry, svc.store, svc.envs, svc.launcher, shell.settings,
                fetched, lambda: slot.lc.delete_requested,
            )
    except Exception as exc:  # noqa: BLE001 - an unexpected one is INTERNAL_ERROR for the caller
        error = preparation_error(shell.settings.data_dir, slot, "adding", exc)
        shell.storage_refused(error)
        shell.feed(slot, t.PrepareFailed(error))
    else:
        assert prepared is not None  # None only answers an upgrade
        parameters = await asyncio.to_thread(checkout_parameters, prepared.plugin_dir, prepared.entry.parameters)
        await asyncio.sleep(0)  # Fetched, posted from the thread, is handled first
        clash = shell.pv_clash(slot, prepared.pv_prefix)
        if clash is not None:  # the add's Teardown removes what it fetched
            shell.feed(slot, t.PrepareFailed(clash))
            return
        shell.feed(slot, replace(prepared, parameters=parameters))


def checkout_parameters(plugin_dir: Path, overrides: dict[str, Any]) -> Parameters | None:
    """Blocking: the parameters a checkout's workers run with, config.yaml's with the entry's
    ``overrides`` merged (the lifecycle resolves their limits from them); None when they do
    not load (its worker then says why)."""
    try:
        return load_config(plugin_dir).with_parameters(overrides).parameters
    except ConfigError:
        return None


def preparation_error(data_dir: Path, slot: PluginSlot, doing: str, exc: Exception) -> IochostError:
    """What the caller of an add or upgrade whose preparation raised ``exc`` is told."""
    if isinstance(exc, IochostError):
        return exc
    shortage = host_shortage(exc)
    if shortage is not None and shortage.errno in OUT_OF_SPACE:
        return storage_error(shortage.filename or data_dir, shortage, f"{doing} {slot.name!r}")
    if shortage is not None:  # the validation probe could not be started: the host's fault
        log.error("%s %s: cannot start the validation probe: %s", doing, slot.name, exc)
        return IochostError(ErrorCode.LAUNCHER_UNAVAILABLE, f"{doing} {slot.name!r}: the daemon cannot "
                            f"start its validation probe now ({exc}); retry later")
    log.error("%s %s failed", doing, slot.name, exc_info=exc)
    return IochostError(ErrorCode.INTERNAL_ERROR, f"{doing} {slot.name!r} failed unexpectedly")


async def restore(shell: ShellPort, slot: PluginSlot) -> None:
    """Bring back the registered checkout, offline; answer Restored or RestoreFailed."""
    entry, svc = slot.lc.entry, shell.services
    try:
        result = await asyncio.to_thread(svc.store.restore, entry.name, entry.source, entry.commit)
        await asyncio.to_thread(svc.envs.ensure, entry.name, result.checkout_dir, result.plugin_dir,
                                timeout=shell.settings.requirements_timeout)
        pv_prefix = await asyncio.to_thread(shell.configured_pv_prefix, entry.name, result.plugin_dir)
        parameters = await asyncio.to_thread(checkout_parameters, result.plugin_dir, entry.parameters)
    except IochostError as exc:
        slot.claim_done()
        shell.feed(slot, t.RestoreFailed(exc.message))
        return
    try:
        if slot.claim_after is not None:  # of two that clash, the first in boot order keeps the names
            await slot.claim_after
        clash = shell.pv_clash(slot, pv_prefix)
        if clash is not None:
            shell.feed(slot, t.RestoreFailed(clash.message))
        else:
            shell.feed(slot, t.Restored(result.plugin_dir, pv_prefix, parameters))
    finally:
        slot.claim_done()


async def teardown(shell: ShellPort, slot: PluginSlot) -> None:
    """The one teardown: after a failed add and for every delete."""
    name, svc = slot.name, shell.services
    async with slot.io:
        for step in (svc.registry.remove, svc.store.remove, svc.envs.remove):
            try:
                await asyncio.to_thread(step, name)
            except (OSError, IochostError) as exc:  # logged; the delete still ends
                log.error("%s: teardown step %s failed: %s", name, step.__qualname__, exc)
                if isinstance(exc, IochostError):
                    shell.storage_refused(exc)
        await asyncio.to_thread(logfiles.remove, shell.log_path(name))
        await asyncio.to_thread(autosave_files.remove, autosave_files.path_for(shell.settings.autosave_dir, name))
        await asyncio.to_thread(spec_path(shell.settings.run_dir, name).unlink, missing_ok=True)
    svc.epics.forget(name)
    shell.feed(slot, t.TornDown())
