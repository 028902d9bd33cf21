"""Messages between the daemon, the template and members: one JSON object per datagram on a
SOCK_SEQPACKET unix socket, with file descriptors passed alongside (SCM_RIGHTS)."""

from __future__ import annotations

import array
import json
import socket
from collections.abc import Sequence
from typing import Any

MAX_MESSAGE = 1024 * 1024  # a launch carries an environment and arguments, nothing large
MAX_FDS = 16

# The programs a member can run, by key: ``launch/targets.py`` maps each to its function.
# The daemon uses these keys and never imports that registry (it imports softioc).
WORKER = "worker"
PROBE = "probe"
TARGET_KEYS = (WORKER, PROBE)


def socketpair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    """One message; ``fds`` are duplicated into the receiver."""
    data = json.dumps(message).encode()
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([data], ancillary)


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """The next message and the fds that came with it; None at end-of-file."""
    data, ancillary, _flags, _addr = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * 4))
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        for fd in fds:
            socket.close(fd)
        return None
    return json.loads(data), list(fds)
