"""A member: a child of the template waiting for the one program it will run.

It says hello with its pid (the daemon tracks it before anything else can happen), gives
up real-time privileges (``memlock``), imports softioc and loads QSRV's library if it is
warm (the next worker) or softioc's record builder if it is cold (the next validation
probe), reports ready with its open file descriptors, then waits for its launch: a
``module:function``, its arguments, its environment, its stdio and extra fds at the
numbers the daemon chose. It runs that function as its whole life and exits with its code.
"""

from __future__ import annotations

import fcntl
import gc
import faulthandler
import importlib
import os
import signal
import socket
import sys
from typing import Any, NoReturn

from setproctitle import setproctitle

from iochost.launch import protocol

WARM_IMPORTS = ("cothread", "softioc", "softioc.builder", "softioc.softioc", "iochost.worker.records")
# What a worker does first that does not depend on its plugin: ``module:function``.
WARM_CALLS = ("iochost.worker.pva:load_qsrv_library",)
# A cold member is the next validation probe, whose last step builds the plugin's records.
COLD_IMPORTS = ("softioc.builder", "iochost.worker.records")


def _prepare(warm: bool) -> None:
    """What the member's program would import and load first, paid for before it is taken."""
    for name in WARM_IMPORTS if warm else COLD_IMPORTS:
        importlib.import_module(name)
    for target in WARM_CALLS if warm else ():
        module, function = target.split(":")
        getattr(importlib.import_module(module), function)()


def _place_fds(fds: list[int], stdio: list[int | None], extra: dict[str, int]) -> None:
    """Put received fds at 0, 1, 2 and at the numbers the daemon chose for the others."""
    scratch = max([2, *fds, *map(int, extra)]) + 1  # above every target: no dup2 can hit one of these
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, scratch) for fd in fds]
    for fd in fds:
        os.close(fd)
    devnull = os.open(os.devnull, os.O_RDWR)
    for target, index in enumerate(stdio):
        os.dup2(devnull if index is None else moved[index], target)
    for target, index in extra.items():
        os.dup2(moved[index], int(target))
    for fd in {*moved, devnull} - {0, 1, 2, *map(int, extra)}:
        os.close(fd)


def _run(launch: dict[str, Any], imported_env: dict[str, str]) -> NoReturn:
    os.environ.clear()
    os.environ.update(imported_env)  # what softioc's import set for itself (CATOOLS_LIBCA_PATH)
    os.environ.update(launch["env"])
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    module_name, function_name = launch["target"].split(":")
    args = list(launch["args"])
    sys.argv = [launch["target"], *args]
    setproctitle(launch["title"])  # what ps shows: the program, not the template it was forked from
    faulthandler.enable()  # a crash in C code leaves its Python stack in the log, as with -X faulthandler
    code = 0
    try:
        getattr(importlib.import_module(module_name), function_name)(args)
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
