"""A member: a child of the template waiting for the one program it will run.

It says hello with its pid (the daemon tracks it before anything else can happen), gives
up real-time privileges (``memlock``), imports the launcher's registry (``targets.py``:
softioc's record builder and every program's code) and, if it is warm (the next worker),
cothread and QSRV's library, reports ready with its open file descriptors, then waits for
its launch: a target key, its arguments, its environment, its stdio and extra fds at the
numbers the daemon chose. It runs that target as its whole life and exits with its code.
"""

from __future__ import annotations

import faulthandler
import fcntl
import gc
import os
import signal
import socket
import sys
from typing import Any, NoReturn

from setproctitle import setproctitle

from iochost.launch import protocol


def _prepare(warm: bool) -> None:
    """What the member's program would import and load first, paid for before it is taken
    (after ``forbid_memory_locking``: EPICS must never lock this process's memory)."""
    from iochost.launch import targets

    if warm:
        targets.prepare_warm()


def _place_fds(fds: list[int], stdio: list[int | None], extra: dict[str, int]) -> None:
    """Put received fds at 0, 1, 2 and at the numbers the daemon chose for the others."""
    scratch = max([2, *fds, *map(int, extra)]) + 1  # above every target: no dup2 can hit one of these
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, scratch) for fd in fds]
    for fd in fds:
        os.close(fd)
    devnull = os.open(os.devnull, os.O_RDWR)
    for number, index in enumerate(stdio):
        os.dup2(devnull if index is None else moved[index], number)
    for name, moved_index in extra.items():
        os.dup2(moved[moved_index], int(name))
    for fd in {*moved, devnull} - {0, 1, 2, *map(int, extra)}:
        os.close(fd)


def _run(launch: dict[str, Any], imported_env: dict[str, str]) -> NoReturn:
    os.environ.clear()
    os.environ.update(imported_env)  # what softioc's import set for itself (CATOOLS_LIBCA_PATH)
    os.environ.update(launch["env"])
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    from iochost.launch.targets import TARGETS  # imported by _prepare already

    target = TARGETS[launch["target"]]
    args = list(launch["args"])
    sys.argv = [f"{target.__module__}:{target.__name__}", *args]
    setproctitle(launch["title"])  # what ps shows: the program, not the template it was forked from
    faulthandler.enable()  # a crash in C code leaves its Python stack in the log, as with -X faulthandler
    code = 0
    try:
        target(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - as the interpreter would: traceback, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve(sock: socket.socket, *, warm: bool, realtime: bool) -> NoReturn:
    """The member's whole life (never returns to the template's code)."""
    os.setsid()  # its own session and group: the daemon's killpg ends it and what it starts
    setproctitle(f"iochost.launch {'warm' if warm else 'cold'} member")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the template ignores it
    try:
        if not realtime:
            from iochost.memlock import forbid_memory_locking

            forbid_memory_locking()
        protocol.send(sock, {"pid": os.getpid()})
        before = dict(os.environ)
        _prepare(warm)
        gc.freeze()  # as the template: the collector must not copy pages the program never changes
        imported_env = {key: value for key, value in os.environ.items() if before.get(key) != value}
        open_fds = sorted(int(name) for name in os.listdir("/proc/self/fd"))
        protocol.send(sock, {"ready": True, "open_fds": open_fds})
        received = protocol.receive(sock)
        if received is None:  # the daemon let go of us: retired from the pool, or gone
            os._exit(0)
        launch, fds = received
        protocol.send(sock, {"started": os.getpid()})  # the daemon waits for this, not for a stopped member
        sock.close()
        _place_fds(fds, launch["stdio"], launch["fds"])
    except BaseException:  # noqa: BLE001 - a member that cannot start says so and exits
        import traceback

        traceback.print_exc()
        os._exit(70)
    _run(launch, imported_env)
