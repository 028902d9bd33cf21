"""The PV gateway's child process as a process: started in a session of its own and known
to the orphan sweep, its replies read and decoded, its stderr logged under a line budget,
its exit reaped, its process group killed.

``client.PVGateway`` decides when a child starts, is presumed hung, or starts again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping

from iochost.budget import LineBudget
from iochost.proctree import OWN_CHILDREN
from iochost.pvgateway import protocol as p

log = logging.getLogger("iochost.pvgateway")

STDERR_LINES = (50, 10.0)  # the child's stderr lines logged per period, the rest counted

Process = asyncio.subprocess.Process


async def spawn(provider: str, threads: int, env: Mapping[str, str]) -> Process:
    """``python -m iochost.pvgateway.child`` with ``threads`` request threads on ``provider``."""
    argv = [sys.executable, "-m", "iochost.pvgateway.child", "--threads", str(threads)]
    if provider == "ca":
        argv.append("--ca")
    with OWN_CHILDREN.spawning():
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=dict(env), start_new_session=True)
        OWN_CHILDREN.track(proc.pid)
    return proc


async def read_replies(proc: Process, ready: asyncio.Future[None],
                       on_reply: Callable[[p.Answer | p.Update], None]) -> None:
    """Until the child's stdout closes: its hello sets ``ready``, every answer and update
    goes to ``on_reply``; lines that are not replies are logged as errors."""
    assert proc.stdout is not None
    decoder = p.reply_decoder(lambda problem: log.error("from the PV gateway process: %s", problem))
    while data := await proc.stdout.read(65536):
        for reply in decoder.feed(data):
            if isinstance(reply, (p.Answer, p.Update)):
                on_reply(reply)
            elif isinstance(reply, p.Hello) and not ready.done():
                ready.set_result(None)


async def log_stderr(proc: Process) -> None:
    """The child's own log and whatever its libraries print, into the daemon's log."""
    assert proc.stderr is not None
    budget, partial = LineBudget(*STDERR_LINES), b""
    while data := await proc.stderr.read(65536):
        *lines, partial = (partial + data).split(b"\n")
        if len(partial) > 65536:  # no newline in sight: logged in pieces
            lines.append(partial)
            partial = b""
        for line in lines:
            now = time.monotonic()
            if budget.allow(now):
                log.info("pv gateway: %s", line.decode(errors="replace").rstrip())
            elif (dropped := budget.summary(now)) is not None:
                log.info("pv gateway: %d more lines not logged", dropped)


async def reap(proc: Process) -> str:
    """Wait for the child's exit, kill what it left in its group; why it ended, in words."""
    code = await proc.wait()
    OWN_CHILDREN.untrack(proc.pid)
    kill(proc)  # anything it left in its group
    return f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


async def end(proc: Process) -> None:
    """At shutdown: the child's group killed and its exit awaited."""
    if proc.returncode is None:
        kill(proc)
        await proc.wait()
        OWN_CHILDREN.untrack(proc.pid)


def kill(proc: Process) -> None:
    """SIGKILL the child's whole process group (gone already: nothing to do)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
