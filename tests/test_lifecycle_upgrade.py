"""Upgrading in place through the lifecycle: probation, rollback, no-op and relabelled
revisions, a delete or a stopped plugin during an upgrade, the requests an upgrade refuses
(pure: no processes). The helpers that get a lifecycle there are test_lifecycle's."""

from __future__ import annotations

import pytest

from iochost.contract import messages as m
from iochost.errors import ErrorCode, IochostError
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.states import State
from test_lifecycle import (
    LIMITS,
    NEW_COMMIT,
    OLD_COMMIT,
    PLUGIN_DIR,
    TIMINGS,
    exited,
    feed,
    new_revision,
    of,
    reach,
    serving_at_old_commit,
    upgraded_and_started,
    worker,
)

S = State


def test_an_upgrade_is_kept_after_its_probation_and_only_then_persisted() -> None:
    lc = serving_at_old_commit()
    effects = upgraded_and_started(lc)
    assert lc.state == S.RUNNING and lc.upgrade is not None and not of(effects, t.Persist)
    assert of(effects, t.Later)[-1] == t.Later(TIMINGS.probation, t.ProbationOver(lc.gen))
    effects = feed(lc, t.ProbationOver(lc.gen))
    assert [type(e) for e in effects if isinstance(e, (t.DropStaged, t.Persist))] == [t.DropStaged, t.Persist]
    persisted = of(effects, t.Persist)[0].entry
    assert (persisted.commit, persisted.previous_commit, persisted.parameters) == (NEW_COMMIT, OLD_COMMIT, {"gain": 2})
    assert lc.upgrade is not None  # the caller waits until the previous revision is gone
    effects = feed(lc, t.Dropped())
    assert lc.upgrade is None and lc.upgrade_outcome is None
    assert [u.phase for u in of(effects, t.UpgradeUpdate)] == ["succeeded"]
    record = lc.record()
    assert (record.source.commit, record.previous_commit) == (NEW_COMMIT, OLD_COMMIT)


def test_a_new_revision_that_exits_in_probation_is_rolled_back_to_the_old_one() -> None:
    lc = serving_at_old_commit()
    upgraded_and_started(lc)
    assert lc.limits is not None and lc.limits.grace_period == 45.0  # the new revision's parameters
    effects = exited(lc, 1)
    assert lc.state == S.FAILED and of(effects, t.SwapRevision) == [t.SwapRevision(back=True)]
    effects = feed(lc, t.Swapped(True, PLUGIN_DIR))
    assert lc.state == S.STARTING and lc.plugin_dir == PLUGIN_DIR and lc.entry.commit == OLD_COMMIT
    assert of(effects, t.Spawn)[0].limits == LIMITS  # the old revision's again
    feed(lc, t.Spawned(lc.gen, 300))
    worker(lc, m.Ready(pid=300, pvs=["IOCHOST:P:STATUS"]))
    effects = worker(lc, m.Initialized())
    assert lc.state == S.RUNNING and lc.upgrade is None
    assert lc.upgrade_outcome is not None and lc.upgrade_outcome.code == ErrorCode.UPGRADE_FAILED
    assert "rolled back" in lc.upgrade_outcome.message and not of(effects, t.Persist)
    assert lc.record().previous_commit is None


def test_a_new_revision_that_never_starts_is_rolled_back() -> None:
    lc = serving_at_old_commit()
    feed(lc, t.UpgradeRequested())
    feed(lc, t.UpgradePrepared(new_revision(lc)))
    exited(lc, 0)
    feed(lc, t.Swapped(True, PLUGIN_DIR))
    effects = feed(lc, t.SpawnFailed(lc.gen, "no python"))
    assert lc.state == S.FAILED and of(effects, t.SwapRevision) == [t.SwapRevision(back=True)]


def test_an_unchanged_or_invalid_revision_changes_nothing() -> None:
    for answer in (t.UpgradePrepared(None), t.UpgradePrepareFailed(IochostError(ErrorCode.VALIDATION_FAILED, "bad"))):
        lc = serving_at_old_commit()
        pid, gen = lc.pid, lc.gen
        feed(lc, t.UpgradeRequested())
        effects = feed(lc, answer)  # the shell has dropped what it staged before answering
        assert not of(effects, t.StopWorker) and not of(effects, t.SwapRevision)
        assert (lc.state, lc.pid, lc.gen, lc.entry.commit, lc.upgrade) == (S.RUNNING, pid, gen, OLD_COMMIT, None)
        failed = isinstance(answer, t.UpgradePrepareFailed)
        assert (lc.upgrade_outcome is not None) == failed


def test_the_same_revision_from_another_source_only_changes_the_entry() -> None:
    """A mirror's URL (the plugins file): saved, then the caller answered; the worker runs on."""
    lc = serving_at_old_commit()
    pid, gen = lc.pid, lc.gen
    feed(lc, t.UpgradeRequested())
    mirror = lc.entry.model_copy(update={"source": lc.entry.source.model_copy(update={"git_url": "file:///mirror"})})
    effects = feed(lc, t.UpgradePrepared(None, mirror))
    assert [type(e) for e in effects if isinstance(e, (t.DropStaged, t.Persist))] == [t.Persist, t.DropStaged]
    assert of(effects, t.Persist)[0].entry.source.git_url == "file:///mirror" and lc.upgrade is not None
    effects = feed(lc, t.Dropped())
    assert [u.phase for u in of(effects, t.UpgradeUpdate)] == ["unchanged"] and lc.upgrade_outcome is None
    assert (lc.state, lc.pid, lc.gen, lc.entry.commit, lc.upgrade) == (S.RUNNING, pid, gen, OLD_COMMIT, None)
    assert lc.record().source.git_url == "file:///mirror"


def test_a_delete_ends_an_upgrade_and_removes_what_it_kept_once_past_preparing() -> None:
    """Preparing: the shell's thread removes its own staging areas; after that, DropStaged."""
    lc = serving_at_old_commit()
    feed(lc, t.UpgradeRequested())
    effects = feed(lc, t.DeleteRequested())
    assert not of(effects, t.DropStaged) and of(effects, t.EndErrands)  # its clone or probe is not waited out
    lc = serving_at_old_commit()
    upgraded_and_started(lc)  # in probation: the previous revision is kept aside
    effects = feed(lc, t.DeleteRequested())
    assert of(effects, t.DropStaged) and of(effects, t.StopWorker) and lc.upgrade is None
    assert lc.upgrade_outcome is not None and "deleted" in lc.upgrade_outcome.message


def test_a_stopped_plugin_is_upgraded_without_starting_it() -> None:
    lc = reach(S.STOPPED)
    feed(lc, t.UpgradeRequested())
    effects = feed(lc, t.UpgradePrepared(new_revision(lc)))
    assert of(effects, t.SwapRevision) and not of(effects, t.StopWorker)
    effects = feed(lc, t.Swapped(True, PLUGIN_DIR))
    assert lc.state == S.STOPPED and of(effects, t.Persist) and not of(effects, t.Spawn)
    feed(lc, t.Dropped())
    assert lc.upgrade is None and lc.upgrade_outcome is None and lc.entry.commit == NEW_COMMIT


def test_an_upgrade_refuses_start_stop_restart_and_a_second_upgrade_but_not_delete() -> None:
    lc = serving_at_old_commit()
    feed(lc, t.UpgradeRequested())
    for request in (t.StopRequested(), t.RestartRequested(), t.UpgradeRequested()):
        with pytest.raises(IochostError) as raised:
            feed(lc, request)
        assert raised.value.code == ErrorCode.INVALID_STATE and "upgraded" in raised.value.message
    effects = feed(lc, t.DeleteRequested())
    assert lc.state == S.STOPPING and lc.upgrade is None
    assert lc.upgrade_outcome is not None and "deleted" in lc.upgrade_outcome.message
    assert of(feed(lc, t.UpgradePrepared(new_revision(lc))), t.DropStaged)  # the late answer is dropped
    assert of(effects, t.StopWorker)
