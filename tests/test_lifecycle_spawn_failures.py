"""The plugin lifecycle when a spawn fails, without processes or sockets: a host fault (no memory, no processes, no
files) is retried with backoff like a crash; a fault of the plugin fails it; the errno is found through the
exception's causes.
"""

from __future__ import annotations

from iochost.contract import messages as m
from iochost.errors import ErrorCode
from iochost.supervisor import lifecycle_types as t
from test_lifecycle import (
    LIMITS,
    PLUGIN_DIR,
    S,
    adding,
    entry,
    feed,
    of,
    starting,
    worker,
)


def test_a_spawn_failing_for_want_of_host_resources_is_retried_with_backoff_like_a_crash() -> None:
    lc = starting()
    delays = []
    for _ in range(3):
        effects = feed(lc, t.SpawnFailed(lc.gen, "[Errno 24] Too many open files",
                                         host_fault=ErrorCode.LAUNCHER_UNAVAILABLE), 5.0)
        assert lc.state == S.CRASHED and "Too many open files" in (lc.last_error or "")
        assert lc.trouble in ("crashed", "crash_looping")  # what /health names meanwhile
        (later,) = of(effects, t.Later)
        delays.append(later.delay)
        assert of(feed(lc, later.event), t.Spawn) == [t.Spawn(lc.gen, LIMITS)]
    assert delays == [1.0, 2.0, 4.0]
    feed(lc, t.Spawned(lc.gen, 101))
    worker(lc, m.Initialized(), now=6.0)
    assert lc.state == S.RUNNING


def test_a_spawn_failure_of_the_plugin_fails_it_and_of_the_host_fails_an_add_as_the_daemons() -> None:
    lc = starting()
    feed(lc, t.SpawnFailed(lc.gen, "no python"))
    assert lc.state == S.FAILED
    for fault, code in ((None, ErrorCode.WORKER_START_FAILED), (ErrorCode.LAUNCHER_UNAVAILABLE,) * 2,
                        (ErrorCode.STORAGE_FULL,) * 2):
        lc = adding("validating")
        feed(lc, t.Prepared(entry(), PLUGIN_DIR, []))
        effects = feed(lc, t.SpawnFailed(lc.gen, "[Errno 11] Resource temporarily unavailable", fault), 1.0)
        assert lc.state == S.FAILED and of(effects, t.Teardown) and not of(effects, t.Later)
        assert lc.add_error is not None and lc.add_error.code is code


def test_host_fault_finds_the_errno_through_the_causes() -> None:
    import errno
    import os

    from iochost.launch.launcher import LaunchError
    from iochost.supervisor.process import host_fault

    expected = {errno.EMFILE: ErrorCode.LAUNCHER_UNAVAILABLE, errno.ENFILE: ErrorCode.LAUNCHER_UNAVAILABLE,
                errno.EAGAIN: ErrorCode.LAUNCHER_UNAVAILABLE, errno.ENOMEM: ErrorCode.LAUNCHER_UNAVAILABLE,
                errno.ENOSPC: ErrorCode.STORAGE_FULL, errno.EDQUOT: ErrorCode.STORAGE_FULL}
    for number, code in expected.items():
        try:
            try:
                raise OSError(number, os.strerror(number))
            except OSError as exc:
                raise LaunchError("no member") from exc
        except LaunchError as wrapped:
            assert host_fault(wrapped) is code
    assert host_fault(OSError(errno.ENOENT, "no python")) is None
    assert host_fault(ValueError("bad spec")) is None

