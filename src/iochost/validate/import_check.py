"""Stages 2-5 from the caller's side: run the probe in its own process group, with a deadline.

Parsing and importing user code can do anything: exhaust memory, hang, exit, crash the
interpreter, spawn children, print without end. None of it may reach the daemon, so it
happens in a short-lived, memory-limited subprocess whose whole process group is killed
when the deadline passes, with its output in files of which only the tail is read. Before
killing, SIGUSR1 makes the probe dump its stacks, so a hang is reported at the plugin
line it was stuck on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from iochost.environ import python_child_environ
from iochost.launch import protocol
from iochost.launch.launcher import Child, Launcher, LaunchError
from iochost.plugin_source.code import CodeFindings
from iochost.proctree import ERRANDS, kill_group, popen_session, wait_exit
from iochost.report import Stage, ValidationIssue
from iochost.untrusted import read_tail

DUMP_WAIT = 0.5  # time the probe gets to write its stack dump before SIGKILL
_FRAME = re.compile(r'^\s*File "(?P<file>.+)", line (?P<line>\d+)')
_PROBE_FILE = "iochost/worker/probe.py"
log = logging.getLogger("iochost.validate")
MAX_RESULT_BYTES = 4 * 1024 * 1024  # the probe's JSON answer; anything longer is not one


def _probe_env() -> dict[str, str]:
    env = python_child_environ()  # the probe runs plugin code: no API token
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave no __pycache__ in the checkout
    return env


def _dumped_location(stderr: str, root: Path) -> tuple[str, int] | None:
    """The innermost plugin frame of the main thread in a faulthandler dump."""
    blocks: list[list[tuple[str, int]]] = [[]]
    for text in stderr.splitlines():
        match = _FRAME.match(text)
        if match:
            blocks[-1].append((match["file"], int(match["line"])))
        elif text.strip():
            blocks.append([])
    main = [b for b in blocks if any(f.replace(os.sep, "/").endswith(_PROBE_FILE) for f, _ in b)]
    for block in main + blocks:
        for filename, line in block:  # most recent call first
            try:
                return Path(os.path.realpath(filename)).relative_to(root).as_posix(), line
            except ValueError:
                continue
    return None


def _tail(stderr: str, lines: int = 3) -> str:
    kept = [line for line in stderr.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(line.strip() for line in kept)


def _start_probe(request: str, out: int, err: int, python: str | None,
                 launcher: Launcher | None) -> subprocess.Popen[bytes] | Child:
    """A running probe, Popen-like; output to files, so a plugin printing gigabytes costs us
    nothing. ``request``: the path of its request file (it holds the plugin's parameters,
    which must not show on a command line that every local user can read)."""
    env = _probe_env()
    if launcher is not None and python is None:
        try:
            child = launcher.acquire(warm=False).start(protocol.PROBE, [request], env,
                                                       (None, out, err), title="iochost.worker.probe (forked)")
            ERRANDS.started(child.pid)
            return child
        except LaunchError as exc:
            log.warning("validation probe: %s; spawning it instead", exc)
    return popen_session([python or sys.executable, "-m", "iochost.worker.probe", request], errand=True,
                         stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)


@dataclass(frozen=True)
class RecordCheck:
    """What the probe needs to build the plugin's records as its worker will: the names the
    records get and the parameter overrides (they can change the mode, and so the PVs)."""

    prefix: str
    name: str
    parameters: dict[str, Any]


def probe_plugin(
    plugin_dir: Path, class_name: str | None, timeout: float, python: str | None = None,
    memory_limit_mb: int | None = None, launcher: Launcher | None = None, records: RecordCheck | None = None,
) -> CodeFindings:
    """Parse, discover, import and inspect the plugin in a subprocess (run by ``python``,
    default this interpreter) limited to ``memory_limit_mb`` and ``timeout`` seconds; with
    ``records`` (given once config.yaml has passed the daemon's own checks), also re-check
    its expressions with the functions the plugin registers and build its records.
    With a ``launcher`` and this interpreter, the subprocess is forked from its template
    (milliseconds instead of a fresh interpreter's imports)."""
    root = Path(os.path.realpath(plugin_dir))
    check = {"check_config": True, **asdict(records)} if records is not None else {}
    request = json.dumps({"plugin_dir": str(root), "class_name": class_name, "memory_limit_mb": memory_limit_mb,
                          **check})
    with tempfile.TemporaryDirectory(prefix="iochost-probe-") as scratch:  # 0700: the daemon's user only
        out_path, err_path, request_path = Path(scratch, "out"), Path(scratch, "err"), Path(scratch, "request.json")
        request_path.write_text(request)
        with open(out_path, "wb") as out_file, open(err_path, "wb") as err_file:
            proc = _start_probe(str(request_path), out_file.fileno(), err_file.fileno(), python, launcher)
        timed_out = False
        try:
            wait_exit(proc, timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.kill(proc.pid, signal.SIGUSR1)
                wait_exit(proc, DUMP_WAIT)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        finally:
            kill_group(proc)  # children the plugin started at import time go too
        out = read_tail(out_path, MAX_RESULT_BYTES)
        stderr = read_tail(err_path)

    if timed_out:
        where = _dumped_location(stderr, root)
        at = f"; it was at {where[0]}:{where[1]}" if where else ""
        file, line = where if where else (None, None)
        return CodeFindings(issues=[ValidationIssue(stage=Stage.IMPORT, file=file, line=line,
                                                    message=f"import did not finish within {timeout:g} s{at}")])
    try:
        result = json.loads(out)
        issues = [ValidationIssue.model_validate(issue) for issue in result["issues"]]
    except (ValueError, KeyError, TypeError):
        where = _dumped_location(stderr, root)
        file, line = where if where else (None, None)
        code = proc.returncode or 0  # the probe has ended: wait_exit returned or kill_group reaped it
        cause = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return CodeFindings(issues=[ValidationIssue(stage=Stage.IMPORT, file=file, line=line,
                                                    message=f"import ended the process ({cause}): {_tail(stderr)}")])
    return CodeFindings(kind=result.get("kind"), class_name=result.get("class_name"),
                        module_file=result.get("module_file"), issues=issues)
