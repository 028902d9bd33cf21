"""The template process: imports what every worker and probe imports, then forks members.

``python -m iochost.launch.template CONTROL_FD [--realtime]``. It reads fork requests
(``{"warm": bool}`` with one end of a new socket pair) from the daemon on CONTROL_FD and
exits when the daemon closes it. It is single-threaded, never imports softioc or plugin
code, and runs with the workers' environment (no API token), so a fork inherits nothing a
plugin should not have.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys

from iochost.launch import protocol


def _fork_member(request: dict[str, object], member_fd: int, control: socket.socket, realtime: bool) -> None:
    """Fork twice: the member's parent exits at once, so the member re-parents to the
    daemon (a child subreaper), which then waits for it like for any child of its own."""
    middle = os.fork()
    if middle == 0:
        try:
            if os.fork() == 0:
                control.close()
                from iochost.launch.member import serve

                serve(socket.socket(fileno=member_fd), warm=bool(request.get("warm")), realtime=realtime)
        finally:
            os._exit(0)
    os.close(member_fd)
    os.waitpid(middle, 0)


def main(argv: list[str]) -> None:
    control = socket.socket(fileno=int(argv[0]))
    realtime = "--realtime" in argv[1:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the daemon's terminal is the daemon's
    import iochost.launch.preload  # noqa: F401 - what every member shares, imported once here
    assert "softioc" not in sys.modules and "cothread" not in sys.modules, "imported what a fork cannot keep"
    gc.freeze()  # what is imported now is shared: no collection in a fork may write to (and so copy) it
    while True:
        received = protocol.receive(control)
        if received is None:  # the daemon is gone or closed us
            os._exit(0)
        request, fds = received
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue
        _fork_member(request, fds[0], control, realtime)


if __name__ == "__main__":
    main(sys.argv[1:])
