"""Upgrading a plugin in place: the handlers ``lifecycle.TABLE`` names for the upgrade's
events (plain functions of the lifecycle's state). The ``Upgrade`` a plugin carries while
one runs, and the order of its phases, are in ``lifecycle_state``.
"""

from __future__ import annotations

from typing import Any

from iochost.errors import ErrorCode, IochostError
from iochost.store import DESIRED_RUNNING
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.lifecycle_state import WORKER_PHASES, Intent, Upgrade, UpgradePhase
from iochost.supervisor.plugin_state import PluginState
from iochost.supervisor.states import LIVE, State

S = State
P = UpgradePhase


def short(commit: str | None) -> str:
    return commit[:12] if commit else "the local copy"


# -- the table's handlers ------------------------------------------------------------------------
def requested(lc: PluginState, event: t.UpgradeRequested) -> None:
    lc.upgrade = Upgrade(old_entry=lc.entry, old_pvs=lc.pvs, old_pv_prefix=lc.pv_prefix,
                         old_parameters=lc.parameters)
    lc.upgrade_outcome = None
    lc.emit(t.UpgradeUpdate("started", lc.entry.commit, None), t.PrepareUpgrade())


def prepared(lc: PluginState, event: t.UpgradePrepared) -> None:
    up = lc.upgrade
    if up is None or up.phase is not P.PREPARING:  # deleted or shut down meanwhile
        lc.emit(t.DropStaged())
        return
    if event.prepared is None:  # the shell dropped what it fetched before answering
        if event.entry is None:
            end(lc, "unchanged", None)
            return
        # the same revision from another source: the entry is saved, then the caller answered
        lc.entry = event.entry.model_copy(update={"desired_state": lc.entry.desired_state,
                                                  "updated_at": lc.now.wall})
        up.phase = P.KEEPING
        lc.emit(t.Persist(lc.entry), t.DropStaged())
        return
    up.new, up.phase = event.prepared, P.SWITCHING
    up.resume = lc.entry.desired_state == DESIRED_RUNNING
    commit = event.prepared.entry.commit
    lc.emit(t.UpgradeUpdate("validated", lc.entry.commit, commit))
    if lc.state in LIVE - {S.STOPPING}:
        lc.stop_worker(f"upgrade to {short(commit)}")
    elif lc.state is not S.STOPPING:  # no worker: swap now (a pending restart is stale)
        lc.gen += 1
        lc.emit(t.SwapRevision())


def prepare_failed(lc: PluginState, event: t.UpgradePrepareFailed) -> None:
    if lc.upgrade is not None and lc.upgrade.phase is P.PREPARING:  # nothing is left staged
        end(lc, "failed", event.error)


def swapped(lc: PluginState, event: t.Swapped) -> None:
    up = lc.upgrade
    if up is None:
        return
    if not event.ok:  # the file system refused a rename: the upgrade ends where it stands
        end(lc, "failed", IochostError(ErrorCode.UPGRADE_FAILED,
                                       f"swapping the revisions of {lc.name!r} failed: {event.reason}"))
        return
    desired = lc.entry.desired_state
    if up.phase is P.SWITCHING:
        assert up.new is not None
        lc.entry = up.new.entry.model_copy(update={
            "desired_state": desired, "previous_commit": up.old_entry.commit, "updated_at": lc.now.wall})
        lc.plugin_dir, lc.pvs, lc.parameters = event.plugin_dir, up.new.pvs, up.new.parameters
        lc.learn_pv_prefix(up.new.pv_prefix)
        if up.resume:
            up.phase = P.STARTING
            lc.restarts, lc.backoff = 0, None
            lc.spawn(f"upgrade to {short(lc.entry.commit)}")
        else:
            keep(lc, up)
    elif up.phase is P.ROLLING_BACK:
        lc.entry = up.old_entry.model_copy(update={"desired_state": desired})
        lc.plugin_dir, lc.pvs, lc.parameters = event.plugin_dir, up.old_pvs, up.old_parameters
        lc.learn_pv_prefix(up.old_pv_prefix)
        up.phase = P.RESTARTING_OLD
        lc.restarts, lc.backoff = 0, None
        lc.spawn(f"rolled back to {short(lc.entry.commit)}")


def probation_over(lc: PluginState, event: t.ProbationOver) -> None:
    if lc.upgrade is not None and lc.upgrade.phase is P.PROBATION:
        keep(lc, lc.upgrade)


def dropped(lc: PluginState, event: t.Dropped) -> None:
    if lc.upgrade is not None and lc.upgrade.phase is P.KEEPING:
        end(lc, "succeeded" if lc.upgrade.new is not None else "unchanged", None)


# -- what the core handlers ask of an upgrade in progress ------------------------------------------
def worker_stopped(lc: PluginState) -> bool:
    """The old worker stopped for the switch: swap the new revision in. True: handled."""
    if lc.upgrade is not None and lc.upgrade.phase is P.SWITCHING:
        lc.emit(t.SwapRevision())
        return True
    return False


def worker_initialized(lc: PluginState) -> None:
    """A worker of the upgrade is up: the new one's probation begins, or the rollback is done."""
    up = lc.upgrade
    if up is not None and up.phase is P.STARTING:
        up.phase = P.PROBATION
        lc.emit(t.Later(lc.timings.probation, t.ProbationOver(lc.gen)))
    elif up is not None and up.phase is P.RESTARTING_OLD:
        end(lc, "rolled_back", up.error)


def worker_lost(lc: PluginState, reason: str, details: dict[str, Any]) -> bool:
    """The worker of an upgrade is gone unasked: roll back (new revision) or give up
    (the previous one, rolled back to, did not come back either). True: handled.
    ``details`` go into the caller's error: ``log_tail``, and ``exception`` if initialize() raised."""
    up = lc.upgrade
    if up is None or up.phase not in WORKER_PHASES:
        return False
    if up.phase is P.RESTARTING_OLD:
        end(lc, "rolled_back", up.error)
        return False  # and the usual crash handling restarts the previous revision
    when = ("did not start" if up.phase is P.STARTING
            else f"exited within its {lc.timings.probation:g} s probation")
    commit, old = short(lc.entry.commit), short(up.old_entry.commit)
    up.error = IochostError(ErrorCode.UPGRADE_FAILED,
                            f"the new revision {commit} of {lc.name!r} {when}: {reason}; rolled back to {old}",
                            reason=reason, **details)
    up.phase = P.ROLLING_BACK
    lc.move(S.FAILED, f"upgrade to {commit} failed: {reason}")
    lc.emit(t.SwapRevision(back=True))
    return True


def abandon(lc: PluginState, message: str) -> None:
    """A delete (or the daemon's shutdown) ends the upgrade for good; past preparing, its
    staging areas go with it (a preparing one's thread removes its own)."""
    if lc.upgrade is not None and lc.upgrade.phase is not P.PREPARING and lc.intent is Intent.DELETE:
        lc.emit(t.DropStaged())
    end(lc, "failed", IochostError(ErrorCode.UPGRADE_FAILED, message))


def keep(lc: PluginState, up: Upgrade) -> None:
    """The commit point: the previous revision is dropped first, then the registry names
    the new one (a crash between the two restores the new checkout at the old commit).
    The caller is answered once the drop is done: nothing of the old revision is left."""
    up.phase = P.KEEPING
    lc.emit(t.DropStaged(), t.Persist(lc.entry))


def end(lc: PluginState, outcome: str, error: IochostError | None) -> None:
    up, lc.upgrade = lc.upgrade, None
    lc.upgrade_outcome = error
    to = up.new.entry.commit if up is not None and up.new is not None else None
    lc.emit(t.UpgradeUpdate(outcome, up.old_entry.commit if up else None, to, error.message if error else ""))
