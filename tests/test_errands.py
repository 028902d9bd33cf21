"""Errands (``proctree.ERRANDS``): the git, pip and probe processes an add or an upgrade waits
on. A delete ends those of its own plugin at once (the lifecycle's EndErrands), those it
would start next too, and nobody else's; the end-to-end case is
test_lifecycle_e2e.py::test_delete_during_add_cancels_it_and_leaves_nothing."""

from __future__ import annotations

import signal
import subprocess

from iochost.proctree import ERRANDS, kill_group, popen_session, wait_exit


def sleeper() -> subprocess.Popen[bytes]:
    return popen_session(["sleep", "600"], errand=True)


def test_a_delete_ends_its_owners_errands_and_the_ones_it_starts_next_but_no_one_elses() -> None:
    plugin, other_plugin = object(), object()
    started: list[subprocess.Popen[bytes]] = []
    try:
        with ERRANDS.owned_by(other_plugin):
            theirs = sleeper()
            started.append(theirs)
            with ERRANDS.owned_by(plugin):  # a thread of another preparation
                mine = sleeper()
                started.append(mine)
                assert ERRANDS.end_owned_by(plugin) == 1
                assert wait_exit(mine, 10) == -signal.SIGKILL
                late = sleeper()  # the preparation's next step, after the delete: ended as it starts
                started.append(late)
                assert wait_exit(late, 10) == -signal.SIGKILL
            assert theirs.poll() is None
        with ERRANDS.owned_by(plugin):  # a new add under the same owner later: not ended
            again = sleeper()
            started.append(again)
            assert again.poll() is None and ERRANDS.end_owned_by(other_plugin) == 1
            assert wait_exit(theirs, 10) == -signal.SIGKILL and again.poll() is None
        ERRANDS.end_owned_by(plugin)  # outside owned_by: ends what runs, marks nothing
        assert wait_exit(again, 10) == -signal.SIGKILL
        unowned = sleeper()
        started.append(unowned)
        assert unowned.poll() is None
    finally:
        for proc in started:
            kill_group(proc)
